//! The binary under test, configured through the environment only (design.md §1).

use std::time::Duration;

use tokio::process::Command;
use url::Url;

use super::process::{eventually, free_port, ChildProcess, READY_TIMEOUT};

/// The address portcullis will listen on, chosen before anything starts because
/// the provider must know the redirect URI up front.
#[derive(Debug, Clone)]
pub struct AppAddr {
    pub port: u16,
    /// `http://localhost:<port>`: `localhost` for the app and `127.0.0.1` for the
    /// provider, so the two never share cookies even in a host-only jar.
    pub base_url: String,
}

impl AppAddr {
    pub fn reserve() -> AppAddr {
        let port = free_port();
        AppAddr {
            port,
            base_url: format!("http://localhost:{port}"),
        }
    }

    /// The redirect URI portcullis derives from its base URL.
    /// Like [`reserve`](Self::reserve) with an `https://localhost:<port>` base URL
    /// (portcullis then needs the TLS certificate variables).
    pub fn reserve_https() -> AppAddr {
        let port = free_port();
        AppAddr {
            port,
            base_url: format!("https://localhost:{port}"),
        }
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/callback", self.base_url)
    }

    /// `path` (with its query) on the app.
    pub fn url(&self, path_and_query: &str) -> String {
        assert!(
            path_and_query.starts_with('/'),
            "app paths start with /: {path_and_query}"
        );
        format!("{}{path_and_query}", self.base_url)
    }
}

/// Settings for one portcullis process. Defaults make a working proxy in front of
/// `upstream` logging in at `issuer`; `env` adds or overrides variables.
pub struct PortcullisBuilder {
    app: AppAddr,
    env: Vec<(String, String)>,
}

impl PortcullisBuilder {
    pub fn new(app: AppAddr, issuer: &str, upstream: &str) -> PortcullisBuilder {
        let secret = format!("e2e-{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        let env = [
            ("APP_BASE_URL", app.base_url.clone()),
            ("LISTEN_ADDR", format!("127.0.0.1:{}", app.port)),
            ("OIDC_ISSUER", issuer.to_owned()),
            ("OIDC_CLIENT_ID", "Express.js".to_owned()),
            ("OIDC_CLIENT_SECRET", "insecure_secret".to_owned()),
            ("SESSION_ENCRYPTION_SECRET", secret),
            ("UPSTREAM_URL", upstream.to_owned()),
            // Refresh only expired tokens, so short-lived tokens behave predictably.
            ("PORTCULLIS_SESSION_REFRESH_BEFORE_EXPIRY", "0s".to_owned()),
            // A provider that comes up late is noticed within about a second.
            ("PORTCULLIS_OIDC_DISCOVERY_RETRY_MAX", "1s".to_owned()),
            ("RUST_LOG", "portcullis=debug,info".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        PortcullisBuilder { app, env }
    }

    /// Sets (or overrides) one environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Starts portcullis and waits until `/.auth/readyz` answers 200.
    pub async fn start(self) -> Portcullis {
        let mut p = self.spawn();
        p.wait_for("/.auth/readyz", "ready (readyz 200)").await;
        p
    }

    /// Starts portcullis and waits only until it answers `/.auth/healthz`: for
    /// tests where the provider is down at start.
    pub async fn start_unready(self) -> Portcullis {
        let mut p = self.spawn();
        p.wait_for("/.auth/healthz", "alive (healthz 200)").await;
        p
    }

    fn spawn(self) -> Portcullis {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        // Nothing from the developer's own environment may leak into the test.
        for (key, _) in std::env::vars() {
            if [
                "OIDC_",
                "PORTCULLIS_",
                "SESSION_",
                "UPSTREAM_",
                "APP_BASE_URL",
                "LISTEN_ADDR",
            ]
            .iter()
            .any(|p| key.starts_with(p))
            {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let proc = ChildProcess::spawn("portcullis", cmd);
        Portcullis { app: self.app, proc }
    }
}

/// The `tracing` target of the access log.
pub const ACCESS_LOG_TARGET: &str = "portcullis::access";

/// The value of field `name` in an access-log line of the text format (`name=value`).
pub fn access_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

/// A running portcullis.
pub struct Portcullis {
    pub app: AppAddr,
    proc: ChildProcess,
}

impl Portcullis {
    pub fn builder(app: AppAddr, issuer: &str, upstream: &str) -> PortcullisBuilder {
        PortcullisBuilder::new(app, issuer, upstream)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        self.app.url(path_and_query)
    }

    pub fn base_url(&self) -> Url {
        Url::parse(&self.app.base_url).expect("base URL is a URL")
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends signal `name` (`TERM`, `HUP`, `INT`) to the process.
    pub fn signal(&self, name: &str) {
        self.proc.signal(name)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    /// `Some(exit status)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        self.proc.exited()
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// True when a log line other than the access log carries `status=<code>` (text or
    /// JSON format): the line that explains the status, not the one that records it.
    pub fn logged_status(&self, code: u16) -> bool {
        self.log_text()
            .lines()
            .filter(|l| !l.contains(ACCESS_LOG_TARGET))
            .any(|l| l.contains(&format!("status={code}")) || l.contains(&format!("\"status\":{code}")))
    }

    /// The access-log lines so far.
    pub fn access_log(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(ACCESS_LOG_TARGET))
            .map(str::to_owned)
            .collect()
    }

    /// The access-log lines of requests to `path` (text `path=… ` or JSON `"path":"…"`),
    /// once there are `count` of them: each is written when its response is over, which
    /// may come after the client has seen the end.
    pub async fn access_lines(&self, path: &str, count: usize) -> Vec<String> {
        let (text, json) = (format!(" path={path} "), format!("\"path\":\"{path}\""));
        let what = format!("{count} access-log lines of {path}");
        eventually(&what, Duration::from_secs(10), || {
            let lines: Vec<String> = self
                .access_log()
                .into_iter()
                .filter(|l| l.contains(&text) || l.contains(&json))
                .collect();
            async move { (lines.len() >= count).then_some(lines) }
        })
        .await
    }

    /// Resident memory (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Polls `path` until it answers 200; fails early if the process exits.
    async fn wait_for(&mut self, path: &str, what: &str) {
        // Readiness only: over TLS any certificate will do here.
        let http = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .expect("build readiness client");
        let url = self.url(path);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if self.proc.exited().is_some() {
                self.proc.fail(&format!("exited before it was {what}"));
            }
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(2), http.get(&url).send()).await,
                Ok(Ok(resp)) if resp.status() == 200
            );
            if ok {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                self.proc.fail(&format!("was not {what} within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/.auth/readyz` answers 200 (after the provider came up).
    pub async fn wait_ready(&mut self) {
        self.wait_for("/.auth/readyz", "ready (readyz 200)").await;
    }
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
