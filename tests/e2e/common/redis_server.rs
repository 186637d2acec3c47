//! A real `redis-server` per test (Debian's, installed by tests/setup.sh) and two
//! portcullis replicas sharing it, as behind a load balancer.
//!
//! The server listens on a [`free_port`] of 127.0.0.1, keeps nothing on disk unless told
//! to (`--save '' --appendonly no`), and runs in a temp dir of its own, so
//! [`Redis::save`] + [`Redis::stop`] + [`Redis::restart`] brings the same data back on
//! the same port. [`Redis::client`] is a plain redis-rs connection for looking at what
//! portcullis stored.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::process::Command;

use super::client::Browserless;
use super::peers::{Echo, Idp, IdpOptions};
use super::process::{eventually, free_port, ChildProcess, READY_TIMEOUT};
use super::proxy::{AppAddr, Portcullis, PortcullisBuilder};
use super::SESSION_COOKIE;

/// A running (or stopped) redis-server.
pub struct Redis {
    pub port: u16,
    password: Option<String>,
    /// A TLS port beside the plain one, with this certificate (cert.pem, key.pem, CA).
    tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
    dir: tempfile::TempDir,
    proc: Option<ChildProcess>,
}

impl Redis {
    /// A server that requires `AUTH <password>`.
    pub async fn start_with_password(password: &str) -> Redis {
        Redis::start_on(free_port(), Some(password.to_owned())).await
    }

    /// A server on `port` (e.g. one a portcullis was already told about).
    pub async fn start_on(port: u16, password: Option<String>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-e2e-redis-")
            .tempdir()
            .expect("create temp dir for redis");
        let mut redis = Redis {
            port,
            password,
            tls: None,
            dir,
            proc: None,
        };
        redis.restart().await;
        redis
    }

    /// A server that also speaks TLS on another port, with the certificate that `pki`
    /// has installed (for `localhost`); the plain port stays for the test's own checks.
    pub async fn start_tls(pki: &super::tls::TestPki) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-e2e-redis-")
            .tempdir()
            .expect("create temp dir for redis");
        let mut redis = Redis {
            port: free_port(),
            password: None,
            tls: Some((free_port(), pki.cert_path(), pki.key_path())),
            dir,
            proc: None,
        };
        redis.restart().await;
        redis
    }

    /// `rediss://localhost:<tls port>` of [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        let (port, _, _) = self.tls.as_ref().expect("a server started with start_tls");
        format!("rediss://localhost:{port}")
    }

    /// `redis://127.0.0.1:<port>` (no password: give that separately).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory; a `dump.rdb` left
    /// there by [`save`](Self::save) is loaded.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server is already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "warning"]);
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        if let Some((port, cert, key)) = &self.tls {
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        self.proc = Some(ChildProcess::spawn("redis", cmd));
        let client = self.client_unchecked();
        eventually("redis-server answers PING", READY_TIMEOUT, || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await;
    }

    /// Kills the server (SIGKILL: nothing is saved on the way out).
    pub async fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await;
        }
    }

    fn client_unchecked(&self) -> redis::Client {
        let mut url = self.url();
        if let Some(password) = &self.password {
            url = format!("redis://:{password}@127.0.0.1:{}", self.port);
        }
        redis::Client::open(url).expect("redis URL")
    }

    /// A connection for the test itself.
    pub async fn client(&self) -> MultiplexedConnection {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.client_unchecked().get_multiplexed_async_connection(),
        )
        .await
        .expect("connect to redis in time")
        .expect("connect to redis")
    }

    /// Writes the data to `dump.rdb` in the server's directory (restored by `restart`).
    pub async fn save(&self) {
        let mut conn = self.client().await;
        let reply: String = redis::cmd("SAVE").query_async(&mut conn).await.expect("SAVE");
        assert_eq!(reply, "OK");
    }

    /// Every key (the test's server holds only what portcullis wrote).
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.client().await;
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.expect("KEYS");
        keys.sort();
        keys
    }

    /// The keys that hold sessions (not refresh locks).
    pub async fn session_keys(&self, prefix: &str) -> Vec<String> {
        self.keys()
            .await
            .into_iter()
            .filter(|k| k.strip_prefix(prefix).is_some_and(|rest| !rest.contains(':')))
            .collect()
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.client().await;
        redis::cmd("GET").arg(key).query_async(&mut conn).await.expect("GET")
    }

    /// Overwrites `key`, keeping its TTL.
    pub async fn set_keep_ttl(&self, key: &str, value: &[u8]) {
        let mut conn = self.client().await;
        let _: String = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await
            .expect("SET");
    }

    /// Milliseconds to live of `key`: -2 when it does not exist, -1 without expiry.
    pub async fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.client().await;
        redis::cmd("PTTL").arg(key).query_async(&mut conn).await.expect("PTTL")
    }
}

/// The key prefix the replicas of a [`Replicas`] use.
pub const PREFIX: &str = "e2e:";

/// The provider, the echo upstream, one Redis and two portcullis replicas (`a`, `b`)
/// with the same session secret in front of them.
pub struct Replicas {
    pub idp: Idp,
    pub echo: Echo,
    pub redis: Redis,
    pub a: Portcullis,
    pub b: Portcullis,
    pub client: Browserless,
}

#[derive(Default)]
pub struct ReplicasBuilder {
    idp: IdpOptions,
    env: Vec<(String, String)>,
    env_a: Vec<(String, String)>,
    env_b: Vec<(String, String)>,
    redis_password: Option<String>,
}

impl ReplicasBuilder {
    pub fn idp(mut self, f: impl FnOnce(&mut IdpOptions)) -> Self {
        f(&mut self.idp);
        self
    }

    /// An environment variable of both replicas.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// An environment variable of replica A only (e.g. its metrics listener).
    pub fn env_a(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env_a.push((key.to_owned(), value.into()));
        self
    }

    /// An environment variable of replica B only (a replica configured differently,
    /// as in a rolling deploy).
    pub fn env_b(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env_b.push((key.to_owned(), value.into()));
        self
    }

    /// Redis requires this password; the replicas get it in `PORTCULLIS_SESSION_REDIS_PASSWORD`.
    pub fn redis_password(mut self, password: &str) -> Self {
        self.redis_password = Some(password.to_owned());
        self
    }

    pub async fn start(self) -> Replicas {
        let (app_a, app_b) = (AppAddr::reserve(), AppAddr::reserve());
        let mut idp_opts = self.idp;
        idp_opts.redirect_uris.push(app_a.redirect_uri());
        idp_opts.redirect_uris.push(app_b.redirect_uri());
        let redis = Redis::start_on(free_port(), self.redis_password.clone());
        let (idp, echo, redis) = tokio::join!(Idp::start(idp_opts), Echo::start(), redis);
        let secret = format!("e2e-shared-{:032x}", rand::random::<u128>());
        let replica = |app: AppAddr, extra: &[(String, String)]| {
            let mut builder = redis_replica(Portcullis::builder(app, &idp.issuer, &echo.url), &redis, &secret);
            if let Some(password) = &self.redis_password {
                builder = builder.env("PORTCULLIS_SESSION_REDIS_PASSWORD", password.clone());
            }
            for (k, v) in self.env.iter().chain(extra) {
                builder = builder.env(k, v.clone());
            }
            builder
        };
        let (a, b) = tokio::join!(replica(app_a, &self.env_a).start(), replica(app_b, &self.env_b).start());
        Replicas {
            idp,
            echo,
            redis,
            a,
            b,
            client: Browserless::new(),
        }
    }
}

/// `builder` configured for the Redis store at `redis` with the session secret `secret`.
pub fn redis_replica(builder: PortcullisBuilder, redis: &Redis, secret: &str) -> PortcullisBuilder {
    builder
        .env("SESSION_ENCRYPTION_SECRET", secret)
        .env("PORTCULLIS_SESSION_STORE", "redis")
        .env("PORTCULLIS_SESSION_REDIS_URL", redis.url())
        .env("PORTCULLIS_SESSION_REDIS_KEY_PREFIX", PREFIX)
        .env("PORTCULLIS_SESSION_REDIS_TIMEOUT", "1s")
}

impl Replicas {
    pub fn builder() -> ReplicasBuilder {
        ReplicasBuilder::default()
    }

    /// Logs `user` in through replica A at `path`, checks it landed there, and returns
    /// the session cookie's value.
    pub async fn login_through_a(&self, user: &str, path: &str) -> String {
        let url = self.a.url(path);
        let trace = self.client.login(&url, user, super::PASSWORD).await;
        let landing = trace.landing();
        assert!(
            landing.status == 200 && landing.url.as_str() == url,
            "login as {user} via A{path} did not land on it:\n{}\n{}",
            trace.describe(),
            landing.body
        );
        self.client
            .cookie(&self.a.base_url(), SESSION_COOKIE)
            .expect("a session cookie after login")
    }

    /// Gives the client's session cookie to replica B as well: what a load balancer in
    /// front of both (one host name) amounts to.
    pub fn share_cookie_with_b(&self, cookie: &str) {
        self.client.put_cookie(&self.b.base_url(), SESSION_COOKIE, cookie);
    }
}
