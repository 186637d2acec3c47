//! The rogue provider (tests/rogue/server.mjs) as a test peer: started per test in
//! one misbehaving mode, with its test-control endpoints.

use serde::Deserialize;

use crate::common::peers::plain_client;
use crate::common::process::{node, ChildProcess};

/// What the rogue issued last (`GET /__rogue/last`): none of it may ever show up
/// on a page or in a log.
#[derive(Debug, Clone, Default, Deserialize)]
#[allow(dead_code)] // `code` as the rogue reports it, shown only by `Debug`
pub struct Issued {
    pub code: Option<String>,
    pub access_token: Option<String>,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl Issued {
    /// Every value that must stay secret, the ID token also by its parts (a page
    /// quoting the payload or signature alone leaks as much).
    pub fn secrets(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("client secret", "insecure_secret".to_owned())];
        if let Some(at) = &self.access_token {
            out.push(("access token", at.clone()));
        }
        if let Some(rt) = &self.refresh_token {
            out.push(("refresh token", rt.clone()));
        }
        if let Some(id) = &self.id_token {
            out.push(("ID token", id.clone()));
            for (i, part) in id.split('.').enumerate().filter(|(_, p)| p.len() >= 16) {
                out.push((
                    ["ID token header", "ID token payload", "ID token signature"][i.min(2)],
                    part.to_owned(),
                ));
            }
        }
        out
    }
}

/// Requests per endpoint (`GET /__rogue/stats`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[allow(dead_code)] // every count the rogue reports; some are shown only by `Debug`
pub struct RogueStats {
    pub discovery: u64,
    pub jwks: u64,
    pub par: u64,
    pub authorization: u64,
    pub token: u64,
    /// Refresh grants (counted in `token` too).
    pub refresh: u64,
    pub userinfo: u64,
    pub revocation: u64,
}

pub struct Rogue {
    /// `http://127.0.0.1:<port>`, the issuer exactly as it spells it.
    pub issuer: String,
    proc: ChildProcess,
    http: reqwest::Client,
}

impl Rogue {
    /// Starts the rogue in `mode`, accepting only `redirect_uri`.
    pub async fn start(mode: &str, redirect_uri: &str) -> Rogue {
        Self::start_with_access_ttl(mode, redirect_uri, 300).await
    }

    /// As [`Rogue::start`], its access tokens living `access_ttl` seconds.
    pub async fn start_with_access_ttl(mode: &str, redirect_uri: &str, access_ttl: u64) -> Rogue {
        let mut cmd = node("tests/rogue/server.mjs");
        cmd.env("ROGUE_ACCESS_TTL", access_ttl.to_string())
            .env("ROGUE_PORT", "0")
            .env("ROGUE_MODE", mode)
            .env("ROGUE_REDIRECT_URI", redirect_uri);
        let (proc, issuer) = ChildProcess::spawn_announcing("rogue", cmd, "ROGUE_READY").await;
        Rogue {
            issuer,
            proc,
            http: plain_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The authorization endpoint it advertises.
    pub fn authorization_endpoint(&self) -> String {
        self.url("/api/oidc/authorization")
    }

    /// Puts the token endpoint out of service (`reset`: connections dropped unanswered;
    /// `unavailable`: 503 `temporarily_unavailable`) or back (`off`), in any mode.
    pub async fn token_outage(&self, kind: &str) {
        let resp = self
            .http
            .post(self.url(&format!("/__rogue/token-outage?kind={kind}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("token outage {kind} at the rogue: {e}"));
        assert!(
            resp.status().is_success(),
            "rogue token outage {kind} answered {}",
            resp.status()
        );
    }

    pub async fn issued(&self) -> Issued {
        self.get_json("/__rogue/last").await
    }

    pub async fn stats(&self) -> RogueStats {
        self.get_json("/__rogue/stats").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} at the rogue: {e}"));
        assert!(resp.status().is_success(), "rogue {path} answered {}", resp.status());
        resp.json().await.unwrap_or_else(|e| panic!("rogue {path}: {e}"))
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}
