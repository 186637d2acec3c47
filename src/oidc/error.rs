//! [`OidcError`]: every failure of the relying party, classified so the caller can map
//! it to a response (provider down → 502/503, user/browser mistakes → 400, …).

/// Everything that can go wrong talking to the provider. No variant ever carries a token,
/// a code, the PKCE verifier or the client secret: provider-supplied text is scrubbed of
/// the secrets we sent and shortened.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery has not succeeded yet: answer with 503 and let the user retry.
    #[error("provider metadata not loaded yet")]
    NotReady,
    /// Network failure, timeout, a 5xx or 429, or the OAuth codes `server_error` and
    /// `temporarily_unavailable`. Transient.
    #[error("identity provider unreachable: {0}")]
    ProviderUnreachable(String),
    /// `par = always` but the provider has no PAR endpoint: a configuration problem.
    #[error("configuration requires PAR but the provider advertises no PAR endpoint")]
    ParUnsupported,
    /// The provider answered with an OAuth error (or a non-success 4xx) at `endpoint`.
    #[error("{endpoint} endpoint refused the request: {error}")]
    ProviderRejected {
        endpoint: &'static str,
        error: String,
        description: Option<String>,
    },
    /// The authorization response carried `error` (e.g. `access_denied` when the user
    /// declined consent). The message, logged, carries the provider's (sanitized)
    /// description: for a refused client configuration it says what to fix.
    #[error(
        "provider returned an authorization error: {error}{}",
        .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    AuthorizationDenied { error: String, description: Option<String> },
    /// The callback's `state` is missing or not the pending login's: a stale tab, a
    /// replayed callback or a CSRF attempt.
    #[error("state in the callback does not match the pending login")]
    StateMismatch,
    #[error("authorization response has no iss although the provider advertises RFC 9207")]
    MissingIssuer,
    /// The callback's `iss` names another issuer (mix-up attack or misconfiguration).
    #[error("authorization response iss does not match the issuer")]
    IssuerMismatch,
    #[error("authorization response has no code")]
    MissingCode,
    #[error("ID token invalid: {0}")]
    InvalidIdToken(String),
    /// Userinfo (or a refreshed ID token) is about another user than the session's.
    #[error("userinfo sub does not match the ID token sub")]
    SubjectMismatch,
    /// The provider answered something that is not what the protocol says.
    #[error("invalid response from the {endpoint} endpoint: {detail}")]
    InvalidResponse { endpoint: &'static str, detail: String },
    /// The refresh token is no longer usable (rotated away, revoked, expired): end the
    /// session and send the user through a new login. Carries the OAuth error code.
    #[error("refresh token refused: {0}")]
    RefreshRejected(String),
    /// Added: the HTTP client could not be built (its TLS configuration: the roots,
    /// `oidc.ca_file`); at start-up, from [`OidcClient::new`](super::OidcClient::new).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    /// Added: [`OidcClient::revoke`](super::OidcClient::revoke) was called but the provider has no revocation endpoint.
    #[error("the provider advertises no revocation endpoint")]
    RevocationUnsupported,
}
