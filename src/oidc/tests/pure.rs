//! Pure parts: callback parameters and checks, Basic auth, PAR responses, discovery metadata,
//! error chains, provider text and token responses.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::config::ParMode;
use crate::oidc::authorize::{authorize_url, par_endpoint, par_response, provider_refuses_unpushed_logins};
use crate::oidc::callback::check_callback;
use crate::oidc::discovery::{Metadata, Provider};
use crate::oidc::http::{basic_auth, Reply};
use crate::oidc::test_provider::authelia_discovery;
use crate::oidc::{CallbackParams, OidcError};

const ISS: &str = "https://auth.example.com";
const STATE: &str = "s3cr3t-state-value-long-enough";

fn cb(query: &str) -> CallbackParams {
    CallbackParams::from_query(query)
}

#[test]
fn callback_params_parse_known_fields_decoded_and_keep_the_first_repeat() {
    let p = cb("code=abc&state=x%20y&iss=https%3A%2F%2Fauth.example.com&error_description=a+b&code=evil&other=1");
    assert_eq!(p.code.as_deref(), Some("abc"));
    assert_eq!(p.state.as_deref(), Some("x y"));
    assert_eq!(p.iss.as_deref(), Some(ISS));
    assert_eq!(p.error, None);
    assert_eq!(p.error_description.as_deref(), Some("a b"));
}

#[test]
fn callback_with_matching_state_and_iss_yields_the_code() {
    let p = cb(&format!("code=abc&state={STATE}&iss={ISS}"));
    assert_eq!(check_callback(&p, STATE, ISS, true).expect("ok"), "abc");
}

#[test]
fn callback_state_is_checked_before_anything_else() {
    for q in [
        "code=abc",
        "code=abc&state=other-state-xyz",
        "error=access_denied&iss=https://evil",
        "state=",
    ] {
        assert!(
            matches!(check_callback(&cb(q), STATE, ISS, true), Err(OidcError::StateMismatch)),
            "{q}"
        );
    }
}

#[test]
fn callback_short_or_empty_pending_state_never_matches() {
    assert!(matches!(
        check_callback(&cb("state=&code=c"), "", ISS, false),
        Err(OidcError::StateMismatch)
    ));
    assert!(matches!(
        check_callback(&cb("state=abc&code=c"), "abc", ISS, false),
        Err(OidcError::StateMismatch)
    ));
}

#[test]
fn callback_iss_is_required_when_advertised_and_exact_when_present() {
    let missing = cb(&format!("code=abc&state={STATE}"));
    assert!(matches!(
        check_callback(&missing, STATE, ISS, true),
        Err(OidcError::MissingIssuer)
    ));
    assert!(check_callback(&missing, STATE, ISS, false).is_ok());
    for iss in [
        "https://auth.example.com/",
        "https://AUTH.example.com",
        "https://evil.example",
    ] {
        let q = cb(&format!("code=abc&state={STATE}&iss={}", urlencode(iss)));
        assert!(
            matches!(check_callback(&q, STATE, ISS, true), Err(OidcError::IssuerMismatch)),
            "{iss}"
        );
        assert!(
            matches!(check_callback(&q, STATE, ISS, false), Err(OidcError::IssuerMismatch)),
            "{iss}"
        );
    }
}

#[test]
fn callback_error_from_another_issuer_is_a_mix_up_not_a_denial() {
    let p = cb(&format!("error=access_denied&state={STATE}&iss=https://evil.example"));
    assert!(matches!(
        check_callback(&p, STATE, ISS, true),
        Err(OidcError::IssuerMismatch)
    ));
}

#[test]
fn callback_error_is_reported_after_state_and_iss_pass() {
    let p = cb(&format!(
        "error=access_denied&error_description=The+user+declined&state={STATE}&iss={ISS}&code=abc"
    ));
    match check_callback(&p, STATE, ISS, true) {
        Err(OidcError::AuthorizationDenied { error, description }) => {
            assert_eq!(error, "access_denied");
            assert_eq!(description.as_deref(), Some("The user declined"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn callback_without_code_is_missing_code() {
    for q in [
        format!("state={STATE}&iss={ISS}"),
        format!("code=&state={STATE}&iss={ISS}"),
    ] {
        assert!(matches!(
            check_callback(&cb(&q), STATE, ISS, true),
            Err(OidcError::MissingCode)
        ));
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn basic_auth_form_urlencodes_id_and_secret_before_base64() {
    let header = basic_auth("my client", "a:b%c+d e/é");
    assert!(header.is_sensitive());
    let value = header.to_str().expect("ascii");
    let encoded = value.strip_prefix("Basic ").expect("Basic scheme");
    let decoded = String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("utf8");
    assert_eq!(decoded, "my+client:a%3Ab%25c%2Bd+e%2F%C3%A9");
    // Exactly one raw ':' separates id and secret, so the provider can split it.
    assert_eq!(decoded.matches(':').count(), 1);
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).expect("status"),
        media_type: Some("application/json".into()),
        body: body.to_string().into_bytes(),
    }
}

#[test]
fn par_201_with_request_uri_is_accepted() {
    let r = reply(
        201,
        json!({"request_uri": "urn:ietf:params:oauth:request_uri:abc", "expires_in": 300}),
    );
    assert_eq!(
        par_response(&r, &[]).expect("ok").request_uri,
        "urn:ietf:params:oauth:request_uri:abc"
    );
}

#[test]
fn par_400_is_a_rejection_with_the_oauth_error() {
    let r = reply(
        400,
        json!({"error": "invalid_request", "error_description": "The state is missing"}),
    );
    match par_response(&r, &[]) {
        Err(OidcError::ProviderRejected {
            endpoint: "pushed authorization",
            error,
            description,
        }) => {
            assert_eq!(error, "invalid_request");
            assert_eq!(description.as_deref(), Some("The state is missing"));
        }
        other => panic!("{:?}", other.map(|p| p.request_uri)),
    }
}

#[test]
fn par_200_is_not_success_even_with_a_request_uri() {
    let r = reply(200, json!({"request_uri": "urn:x", "expires_in": 300}));
    assert!(matches!(
        par_response(&r, &[]),
        Err(OidcError::ProviderRejected { endpoint: "pushed authorization", ref error, .. }) if error == "HTTP 200"
    ));
}

#[test]
fn par_201_without_request_uri_is_an_invalid_response() {
    for body in [
        json!({"expires_in": 300}),
        json!({"request_uri": "", "expires_in": 300}),
    ] {
        assert!(matches!(
            par_response(&reply(201, body), &[]),
            Err(OidcError::InvalidResponse { .. })
        ));
    }
}

#[test]
fn par_503_without_oauth_body_means_unreachable() {
    let r = Reply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        media_type: Some("text/html".into()),
        body: b"<h1>down</h1>".to_vec(),
    };
    assert!(matches!(par_response(&r, &[]), Err(OidcError::ProviderUnreachable(_))));
}

#[test]
fn par_error_echoing_the_client_secret_is_redacted() {
    let r = reply(
        401,
        json!({"error": "invalid_client", "error_description": "bad secret hunter2:x for client"}),
    );
    let e = par_response(&r, &["hunter2:x"]).err().expect("error");
    super::assert_no_secret(&e, &["hunter2:x"]);
}

#[test]
fn par_mode_decides_whether_to_push() {
    let ep = url::Url::parse("https://auth.example.com/api/oidc/pushed-authorization-request").expect("url");
    assert_eq!(par_endpoint(ParMode::Auto, Some(&ep)).expect("ok"), Some(&ep));
    assert_eq!(par_endpoint(ParMode::Auto, None).expect("ok"), None);
    assert_eq!(par_endpoint(ParMode::Always, Some(&ep)).expect("ok"), Some(&ep));
    assert!(matches!(
        par_endpoint(ParMode::Always, None),
        Err(OidcError::ParUnsupported)
    ));
    assert_eq!(par_endpoint(ParMode::Never, Some(&ep)).expect("ok"), None);
}

#[test]
fn only_par_never_against_a_provider_that_requires_par_is_refused_at_every_login() {
    assert!(provider_refuses_unpushed_logins(ParMode::Never, true));
    for (mode, requires) in [
        (ParMode::Never, false),
        (ParMode::Auto, true),
        (ParMode::Auto, false),
        (ParMode::Always, true),
        (ParMode::Always, false),
    ] {
        assert!(!provider_refuses_unpushed_logins(mode, requires), "{mode:?} {requires}");
    }
}

#[test]
fn authorize_url_keeps_the_endpoint_query() {
    let ep = url::Url::parse("https://auth.example.com/authorize?tenant=a").expect("url");
    let url = authorize_url(&ep, [("client_id", "Express.js"), ("request_uri", "urn:x:y")]);
    assert_eq!(
        url.as_str(),
        "https://auth.example.com/authorize?tenant=a&client_id=Express.js&request_uri=urn%3Ax%3Ay"
    );
}

#[test]
fn authelia_discovery_document_parses_with_the_extra_metadata() {
    let metadata: Metadata = serde_json::from_value(authelia_discovery(ISS)).expect("parses");
    let p = Provider::from_metadata(&metadata, ISS).expect("valid");
    let extra = &p.extra;
    assert_eq!(
        extra.pushed_authorization_request_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://auth.example.com/api/oidc/pushed-authorization-request")
    );
    assert!(!extra.require_pushed_authorization_requests);
    assert!(extra.authorization_response_iss_parameter_supported);
    assert_eq!(
        extra.revocation_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://auth.example.com/api/oidc/revocation")
    );
    assert_eq!(
        extra.introspection_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://auth.example.com/api/oidc/introspection")
    );
    assert_eq!(p.token_endpoint.as_str(), "https://auth.example.com/api/oidc/token");
    assert_eq!(
        p.userinfo_endpoint.as_ref().map(|u| u.as_str()),
        Some("https://auth.example.com/api/oidc/userinfo")
    );
    // HS* are advertised but never accepted; ES512 is not in our set.
    let algs: Vec<String> = p
        .id_token_algs
        .iter()
        .map(|a| serde_json::to_value(a).expect("alg").to_string())
        .collect();
    assert_eq!(
        algs,
        [
            "\"RS256\"",
            "\"RS384\"",
            "\"RS512\"",
            "\"PS256\"",
            "\"PS384\"",
            "\"PS512\"",
            "\"ES256\"",
            "\"ES384\""
        ]
    );
}

#[test]
fn discovery_without_the_extra_fields_defaults_to_no_par_no_iss() {
    let mut doc = authelia_discovery(ISS);
    let map = doc.as_object_mut().expect("object");
    for k in [
        "pushed_authorization_request_endpoint",
        "require_pushed_authorization_requests",
        "authorization_response_iss_parameter_supported",
        "revocation_endpoint",
        "introspection_endpoint",
        "id_token_signing_alg_values_supported",
    ] {
        map.remove(k);
    }
    map.insert("id_token_signing_alg_values_supported".into(), json!(["HS256", "none"]));
    let metadata: Metadata = serde_json::from_value(doc).expect("parses");
    let p = Provider::from_metadata(&metadata, ISS).expect("valid");
    assert_eq!(p.extra, Default::default());
    // Only HMAC/none advertised: fall back to RS256, never to what was advertised.
    assert_eq!(
        p.id_token_algs,
        [openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
    );
}

#[test]
fn discovery_refuses_plain_http_endpoints_under_an_https_issuer() {
    let mut doc = authelia_discovery(ISS);
    doc["token_endpoint"] = json!("http://auth.example.com/api/oidc/token");
    let metadata: Metadata = serde_json::from_value(doc).expect("parses");
    assert!(matches!(
        Provider::from_metadata(&metadata, ISS),
        Err(OidcError::InvalidResponse { .. })
    ));
}

#[test]
fn discovery_backoff_doubles_from_one_second_up_to_the_maximum() {
    use crate::oidc::discovery::next_delay;
    use std::time::Duration;
    let max = Duration::from_secs(60);
    let mut d = Duration::from_secs(1);
    let mut seen = vec![d.as_secs()];
    for _ in 0..8 {
        d = next_delay(d, max);
        seen.push(d.as_secs());
    }
    assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

/// An error with a chain of sources, for `error_chain`.
#[derive(Debug)]
struct Layer(&'static str, Option<Box<Layer>>);

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
    }
}

#[test]
fn an_error_chain_is_one_line_without_repeats() {
    let layer = |text, source: Option<Layer>| Layer(text, source.map(Box::new));
    let chain = layer(
        "error sending request",
        Some(layer("connection refused", Some(layer("refused", None)))),
    );
    assert_eq!(
        crate::oidc::discovery::error_chain(&chain),
        "error sending request: connection refused"
    );
    assert_eq!(crate::oidc::discovery::error_chain(&layer("alone", None)), "alone");
}

#[test]
fn provider_text_is_cut_at_300_bytes_on_a_character_boundary() {
    use crate::oidc::http::sanitize;
    let exactly = "a".repeat(300);
    assert_eq!(sanitize(&exactly, &[]), exactly);
    assert_eq!(sanitize(&"a".repeat(301), &[]), format!("{exactly}…"));
    // Byte 300 falls inside the last `é` (bytes 299 and 300): the cut moves back to 299.
    let straddling = format!("a{}", "é".repeat(150));
    assert_eq!(straddling.len(), 301);
    assert_eq!(sanitize(&straddling, &[]), format!("a{}…", "é".repeat(149)));
}

#[test]
fn a_blank_scope_in_a_token_response_stands_for_the_requested_scopes() {
    use crate::oidc::tokens::TokenResponse;
    let response = |scope: Option<&str>| TokenResponse {
        access_token: "at".into(),
        token_type: "bearer".into(),
        expires_in: None,
        refresh_token: None,
        id_token: None,
        scope: scope.map(str::to_owned),
    };
    let requested = ["openid".to_owned(), "email".to_owned()];
    for blank in [None, Some(""), Some(" \t ")] {
        assert_eq!(response(blank).into_token_set(None, &requested).scopes, "openid email");
    }
    assert_eq!(
        response(Some(" openid  groups "))
            .into_token_set(None, &requested)
            .scopes,
        "openid groups"
    );
}
