//! A small rogue OpenID provider for unit tests: an HTTP/1 server on `127.0.0.1:0` that
//! serves an Authelia-like discovery document and whatever canned (possibly forged)
//! responses a test sets for JWKS, PAR, token, userinfo and revocation, records every
//! request, and counts JWKS fetches. Also the token-forging helpers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openidconnect::core::{CoreHmacKey, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use openidconnect::{JsonWebKeyId, PrivateSigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const KEY_1_PEM: &str = include_str!("testdata/rsa-key-1.pem");
pub const KEY_2_PEM: &str = include_str!("testdata/rsa-key-2.pem");
pub const CLIENT_ID: &str = "Express.js";

/// A canned answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: Value) -> Self {
        Canned {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }
}

/// One request the provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

impl Recorded {
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }
}

#[derive(Default)]
struct State {
    /// Responses by path; discovery is generated unless overridden here.
    routes: HashMap<String, Canned>,
    /// Fields merged into (or, when `null`, removed from) the generated discovery document.
    discovery_patch: serde_json::Map<String, Value>,
    /// Extra response headers by path (e.g. `Location`).
    headers: HashMap<String, Vec<(String, String)>>,
    jwks: Value,
    jwks_fetches: usize,
    requests: Vec<Recorded>,
}

pub struct TestProvider {
    pub issuer: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProvider {
    /// Binds first, then spawns, so the provider is ready when this returns.
    pub async fn start() -> TestProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let issuer = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            jwks: jwks(&[&key(1)]),
            ..State::default()
        }));
        let (task_state, task_issuer) = (state.clone(), issuer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, issuer) = (task_state.clone(), task_issuer.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone(), issuer.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestProvider { issuer, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
    pub fn set(&self, path: &str, canned: Canned) {
        self.state.lock().expect("lock").routes.insert(path.to_owned(), canned);
    }
    pub fn set_header(&self, path: &str, name: &str, value: &str) {
        let mut state = self.state.lock().expect("lock");
        state
            .headers
            .entry(path.to_owned())
            .or_default()
            .push((name.to_owned(), value.to_owned()));
    }
    pub fn patch_discovery(&self, key: &str, value: Value) {
        self.state
            .lock()
            .expect("lock")
            .discovery_patch
            .insert(key.to_owned(), value);
    }
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().expect("lock").jwks = jwks;
    }
    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().expect("lock").jwks_fetches
    }
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// The Authelia 4.39 discovery document for `issuer` (from the committed fixture).
pub fn authelia_discovery(issuer: &str) -> Value {
    let text = include_str!("testdata/authelia-4.39-discovery.json").replace("https://auth.example.com", issuer);
    serde_json::from_str(&text).expect("fixture is JSON")
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    issuer: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut state = state.lock().expect("lock");
    state.requests.push(Recorded {
        method,
        path: path.clone(),
        authorization,
        body,
    });
    let canned = if let Some(canned) = state.routes.get(&path) {
        canned.clone()
    } else if path == "/.well-known/openid-configuration" {
        let mut doc = authelia_discovery(&issuer);
        if let Value::Object(map) = &mut doc {
            for (k, v) in &state.discovery_patch {
                if v.is_null() {
                    map.remove(k);
                } else {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Canned::json(200, doc)
    } else if path == "/jwks.json" {
        state.jwks_fetches += 1;
        Canned::json(200, state.jwks.clone())
    } else {
        Canned::json(404, json!({"error": "not_found"}))
    };
    let mut response = Response::builder()
        .status(canned.status)
        .header("content-type", canned.content_type);
    for (name, value) in state.headers.get(&path).into_iter().flatten() {
        response = response.header(name, value);
    }
    let response = response
        .body(Full::new(Bytes::from(canned.body)))
        .expect("valid response");
    Ok(response)
}

// ---- forging -------------------------------------------------------------------------

/// Test key `n` (1 or 2) with kid `key-n`.
pub fn key(n: u8) -> CoreRsaPrivateSigningKey {
    let pem = if n == 1 { KEY_1_PEM } else { KEY_2_PEM };
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(format!("key-{n}")))).expect("test key")
}

pub fn jwks(keys: &[&CoreRsaPrivateSigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| serde_json::to_value(k.as_verification_key()).expect("jwk")).collect::<Vec<_>>() })
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Signs `claims` with `key` under RS256 and the given `kid`.
pub fn sign_rs256(claims: &Value, key: &CoreRsaPrivateSigningKey, kid: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
        b64(claims)
    );
    let sig = key
        .sign(&CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, input.as_bytes())
        .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// `alg: none`, empty signature.
pub fn unsigned(claims: &Value) -> String {
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

/// HS256 keyed with `secret` (e.g. the provider's public key bytes: key confusion).
pub fn sign_hs256(claims: &Value, secret: &[u8], kid: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        b64(claims)
    );
    let sig = CoreHmacKey::new(secret.to_vec())
        .sign(&CoreJwsSigningAlgorithm::HmacSha256, input.as_bytes())
        .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// `at_hash` for RS256/HS256: left half of SHA-256, base64url.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Authelia 4.39-shaped ID-token claims (minimal: identity only in userinfo).
pub fn id_claims(issuer: &str, nonce: &str, access_token: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer, "sub": "3b1b2c4e-6f1a-4c7e-9a55-2f1c0d9e8b7a", "aud": [CLIENT_ID],
        "exp": now + 3600, "iat": now, "auth_time": now - 5, "jti": "a-jti",
        "nonce": nonce, "amr": ["pwd", "otp", "mfa"], "azp": CLIENT_ID,
        "at_hash": at_hash(access_token),
    })
}
