//! Checks on the authorization response that reaches the redirect URI, as pure
//! functions, in the order that matters: `state` first (a response we did not ask for is
//! not looked at further), then the RFC 9207 `iss` (mix-up defence: even an error
//! response must come from our issuer), then `error`, then `code`.

use subtle::ConstantTimeEq;

use super::{CallbackParams, OidcError};

/// The shortest `state` we ever generate is far longer; anything shorter in a pending
/// login is corrupt and must not be compared (an empty expected state would match an
/// empty parameter).
const MIN_STATE_LEN: usize = 8;

/// Runs the callback checks and returns the authorization code.
///
/// `iss_required` is the provider's `authorization_response_iss_parameter_supported`.
pub(super) fn check_callback<'a>(
    callback: &'a CallbackParams,
    expected_state: &str,
    issuer: &str,
    iss_required: bool,
) -> Result<&'a str, OidcError> {
    check_state(callback.state.as_deref(), expected_state)?;
    check_issuer(callback.iss.as_deref(), issuer, iss_required)?;
    if let Some(error) = &callback.error {
        return Err(OidcError::AuthorizationDenied {
            error: super::http::sanitize(error, &[]),
            description: callback
                .error_description
                .as_deref()
                .map(|d| super::http::sanitize(d, &[])),
        });
    }
    match callback.code.as_deref() {
        Some(code) if !code.is_empty() => Ok(code),
        _ => Err(OidcError::MissingCode),
    }
}

/// `state` present and equal to the pending one, compared in constant time.
pub(super) fn check_state(found: Option<&str>, expected: &str) -> Result<(), OidcError> {
    match found {
        Some(found) if expected.len() >= MIN_STATE_LEN && bool::from(found.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(())
        }
        _ => Err(OidcError::StateMismatch),
    }
}

/// RFC 9207 §2.4: when the provider advertises `iss` it must be present; when present it
/// must equal the issuer exactly (no normalisation).
pub(super) fn check_issuer(found: Option<&str>, issuer: &str, required: bool) -> Result<(), OidcError> {
    match found {
        None if required => Err(OidcError::MissingIssuer),
        None => Ok(()),
        Some(iss) if iss == issuer => Ok(()),
        Some(_) => Err(OidcError::IssuerMismatch),
    }
}
