//! Unit tests of the OIDC relying party: pure checks (`pure`), ID-token negatives
//! (`id_token`), and whole flows against the rogue provider (`flows`).

mod flows;
mod id_token;
mod pure;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::test_provider::{TestProvider, CLIENT_ID};
use super::{OidcClient, OidcError};
use crate::config::{OidcConfig, ParMode, Secret};

pub const SECRET: &str = "insecure_secret";

pub fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: Url::parse(issuer).expect("issuer"),
        issuer_exact: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(SECRET),
        scopes: ["openid", "profile", "email", "groups"].map(String::from).to_vec(),
        redirect_url: Url::parse("https://express.example.com/callback").expect("url"),
        par: ParMode::Auto,
        allow_insecure_issuer: true,
        ca_file: None,
        http_timeout: Duration::from_secs(2),
        discovery_retry_max: Duration::from_secs(2),
        jwks_refetch_interval: Duration::from_secs(30),
        clock_skew: Duration::from_secs(60),
        revoke_on_logout: true,
        login_rate_per_second: 20,
        login_rate_burst: 100,
        login_rate_per_client_per_minute: 60,
        login_rate_per_client_burst: 30,
    }
}

/// A client whose discovery against `provider` has completed.
pub async fn ready_client(provider: &TestProvider, tweak: impl FnOnce(&mut OidcConfig)) -> OidcClient {
    let mut cfg = config(&provider.issuer);
    tweak(&mut cfg);
    let client = OidcClient::new(Arc::new(cfg)).expect("client");
    tokio::time::timeout(Duration::from_secs(10), client.run_discovery())
        .await
        .expect("discovery finished");
    assert!(client.is_ready());
    client
}

/// Display and Debug of `e` must not contain any of `secrets`.
#[track_caller]
pub fn assert_no_secret(e: &OidcError, secrets: &[&str]) {
    let shown = format!("{e} / {e:?}");
    for s in secrets {
        assert!(!shown.contains(s), "error shows a secret {s:?}: {shown}");
    }
}
