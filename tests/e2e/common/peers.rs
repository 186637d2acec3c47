//! The node peers: the test provider (tests/idp/server.mjs, oidc-provider set up
//! like Authelia) and the echo upstream (tests/upstream/echo.mjs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::process::{eventually, node, ChildProcess};

/// How a test wants its provider.
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// 0 = any free port (read back from `IDP_READY`).
    pub port: u16,
    /// Exact-match redirect URIs of the `Express.js` client.
    pub redirect_uris: Vec<String>,
    pub access_token_ttl: Option<u64>,
    pub id_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    /// false = Authelia 4.39 (profile claims only from userinfo); true = also in the ID token.
    pub claims_in_id_token: bool,
    pub require_par: bool,
    /// true = a new refresh token at every refresh (Authelia); false = the same one again.
    pub rotate_refresh_token: bool,
    /// Each refresh grant is answered this late: after it was carried out (the old refresh
    /// token already spent), or, with `refresh_delay_before`, before it is looked at.
    pub refresh_delay: Duration,
    pub refresh_delay_before: bool,
    /// Serve https with this certificate and key (PEM files), the issuer then being
    /// `https://127.0.0.1:<port>`; `None` = plain http. Its control endpoints (`stats`…)
    /// are then out of reach of this harness's plain client.
    pub tls_cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            port: 0,
            redirect_uris: Vec::new(),
            access_token_ttl: None,
            id_token_ttl: None,
            refresh_token_ttl: None,
            claims_in_id_token: false,
            require_par: true,
            rotate_refresh_token: true,
            refresh_delay: Duration::ZERO,
            refresh_delay_before: false,
            tls_cert_and_key: None,
        }
    }
}

/// Grant and endpoint counters of the provider (`GET /__test/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct IdpStats {
    pub par: u64,
    pub authorization_code: u64,
    pub refresh_token: u64,
    pub userinfo: u64,
    pub revocation: u64,
}

/// A running test provider.
pub struct Idp {
    /// `http://127.0.0.1:<port>` (`https://` with TLS), exactly as the provider spells its issuer.
    pub issuer: String,
    proc: ChildProcess,
    http: reqwest::Client,
}

impl Idp {
    pub async fn start(opts: IdpOptions) -> Idp {
        assert!(!opts.redirect_uris.is_empty(), "IdpOptions::redirect_uris is required");
        let mut cmd = node("tests/idp/server.mjs");
        cmd.env("IDP_PORT", opts.port.to_string())
            .env("IDP_REDIRECT_URIS", opts.redirect_uris.join(","))
            .env("IDP_CLIENT_ID", "Express.js")
            .env("IDP_CLIENT_SECRET", "insecure_secret")
            .env(
                "IDP_CLAIMS_IN_ID_TOKEN",
                if opts.claims_in_id_token { "1" } else { "0" },
            )
            .env("IDP_REQUIRE_PAR", if opts.require_par { "1" } else { "0" })
            .env(
                "IDP_ROTATE_REFRESH_TOKEN",
                if opts.rotate_refresh_token { "1" } else { "0" },
            )
            .env("IDP_REFRESH_DELAY_MS", opts.refresh_delay.as_millis().to_string())
            .env(
                "IDP_REFRESH_DELAY_WHEN",
                if opts.refresh_delay_before { "before" } else { "after" },
            );
        for (key, ttl) in [
            ("IDP_ACCESS_TOKEN_TTL", opts.access_token_ttl),
            ("IDP_ID_TOKEN_TTL", opts.id_token_ttl),
            ("IDP_REFRESH_TOKEN_TTL", opts.refresh_token_ttl),
        ] {
            match ttl {
                Some(secs) => cmd.env(key, secs.to_string()),
                None => cmd.env_remove(key),
            };
        }
        match &opts.tls_cert_and_key {
            Some((cert, key)) => cmd.env("IDP_TLS_CERT", cert).env("IDP_TLS_KEY", key),
            None => cmd.env_remove("IDP_TLS_CERT").env_remove("IDP_TLS_KEY"),
        };
        let (proc, issuer) = ChildProcess::spawn_announcing("idp", cmd, "IDP_READY").await;
        let port = Url::parse(&issuer)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or_else(|| panic!("IDP_READY printed an issuer without a port: {issuer}"));
        if opts.port != 0 {
            assert_eq!(port, opts.port, "idp listens on another port than asked");
        }
        Idp {
            issuer,
            proc,
            http: plain_client(),
        }
    }

    /// The issuer as a URL (for host/port comparisons).
    pub fn issuer_url(&self) -> Url {
        Url::parse(&self.issuer).expect("issuer is a URL")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub async fn stats(&self) -> IdpStats {
        let resp = self
            .http
            .get(self.url("/__test/stats"))
            .send()
            .await
            .expect("GET /__test/stats");
        assert!(resp.status().is_success(), "/__test/stats answered {}", resp.status());
        resp.json().await.expect("/__test/stats is JSON")
    }

    pub async fn reset_stats(&self) {
        let resp = self
            .http
            .post(self.url("/__test/reset-stats"))
            .send()
            .await
            .expect("POST /__test/reset-stats");
        assert!(
            resp.status().is_success(),
            "/__test/reset-stats answered {}",
            resp.status()
        );
    }

    /// Every refresh token issued so far becomes invalid at the provider.
    pub async fn revoke_refresh_tokens(&self) {
        let resp = self
            .http
            .post(self.url("/__test/revoke-refresh-tokens"))
            .send()
            .await
            .expect("POST /__test/revoke-refresh-tokens");
        assert!(
            resp.status().is_success(),
            "/__test/revoke-refresh-tokens answered {}",
            resp.status()
        );
    }

    /// Changes `user`'s groups at the provider from now on (as an administrator would).
    pub async fn set_groups(&self, user: &str, groups: &[&str]) {
        let resp = self
            .http
            .post(self.url("/__test/set-groups"))
            .query(&[("user", user), ("groups", &groups.join(","))])
            .send()
            .await
            .expect("POST /__test/set-groups");
        assert!(
            resp.status().is_success(),
            "/__test/set-groups answered {}",
            resp.status()
        );
    }

    /// Whether the provider still honours `access_token`: the status of its userinfo
    /// endpoint asked with it (200, or 401 once the token is revoked or expired).
    pub async fn userinfo_status(&self, access_token: &str) -> u16 {
        self.http
            .get(self.url("/api/oidc/userinfo"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET userinfo")
            .status()
            .as_u16()
    }

    /// Stops the provider (its port is free afterwards).
    pub async fn stop(mut self) {
        self.proc.kill().await;
    }
}

/// A running echo upstream.
pub struct Echo {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    proc: ChildProcess,
}

impl Echo {
    pub async fn start() -> Echo {
        let mut cmd = node("tests/upstream/echo.mjs");
        cmd.env("ECHO_PORT", "0");
        let (proc, url) = ChildProcess::spawn_announcing("echo", cmd, "ECHO_READY").await;
        Echo { url, proc }
    }

    /// Every request the echo has answered so far, as `METHOD target` (the target as
    /// received), in the order it logged them; for asserting that nothing (or only
    /// certain requests) reached the upstream.
    ///
    /// Complete up to the moment of the call: the echo logs a request in the same tick
    /// as it ends the response, so once a marker request sent now shows up in the log,
    /// every request answered before it is there too. The marker is left out.
    pub async fn received(&self) -> Vec<String> {
        let marker = format!("/__marker/{:016x}", rand::random::<u64>());
        let resp = plain_client()
            .get(format!("{}{marker}", self.url))
            .send()
            .await
            .expect("marker request to the echo");
        assert!(
            resp.status().is_success(),
            "the echo answered the marker with {}",
            resp.status()
        );
        let log = eventually("the marker request in the echo's log", Duration::from_secs(10), || {
            let log = self.proc.log_text();
            let seen = log.contains(&marker);
            async move { seen.then_some(log) }
        })
        .await;
        log.lines()
            .filter_map(|line| line.strip_prefix("echo: "))
            .map(|line| line.rsplit_once(" -> ").map_or(line, |(request, _)| request).to_owned())
            .filter(|request| !request.contains("/__marker/"))
            .collect()
    }
}

/// What the echo upstream received, as it reports it (JSON when the request did
/// not prefer `text/html`).
#[derive(Debug, Clone, Deserialize)]
pub struct EchoSeen {
    pub method: String,
    /// Path and query as received.
    pub url: String,
    /// Lower-case name → value (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// Every header line as sent on the wire, in order.
    #[serde(rename = "rawHeaders", deserialize_with = "pairs")]
    pub raw_headers: Vec<(String, String)>,
    #[serde(rename = "bodyBytes")]
    pub body_bytes: u64,
}

fn pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let raw: Vec<Vec<String>> = Vec::deserialize(d)?;
    raw.into_iter()
        .map(|p| match <[String; 2]>::try_from(p) {
            Ok([n, v]) => Ok((n, v)),
            Err(p) => Err(serde::de::Error::custom(format!(
                "rawHeaders entry of {} items",
                p.len()
            ))),
        })
        .collect()
}

impl EchoSeen {
    /// Every value of header `name` (case-insensitive, exact spelling otherwise).
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.raw_headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every header line whose name, folded the way CGI/PHP/WSGI fold it
    /// (lower case, `_` → `-`), starts with `remote-`: name folded → values.
    pub fn identity_headers(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &self.raw_headers {
            let folded = name.to_ascii_lowercase().replace('_', "-");
            if folded.starts_with("remote-") {
                out.entry(folded).or_default().push(value.clone());
            }
        }
        out
    }

    /// The cookies the upstream received, in order (from every `Cookie` line).
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.values("cookie")
            .iter()
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| {
                let pair = pair.trim();
                let (n, v) = pair.split_once('=')?;
                Some((n.to_owned(), v.to_owned()))
            })
            .collect()
    }
}

/// A client for test-control calls (no cookies, no redirects, no proxy).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("build reqwest client")
}
