//! Counters and latency histograms of the request path, and their Prometheus text
//! exposition on a listener of their own (`server.metrics_addr`).
//!
//! Every update is a relaxed atomic add on a slot fixed at compile time: no lock, no
//! allocation and no label map on the request path. Labels are closed enums, so a
//! client cannot create series (no path or host in a label).
//!
//! The per-request counters are kept in `SHARDS` copies, each on cache lines of its
//! own, and a thread adds to its own copy: with a single copy, the connection workers
//! (one per core) would pass the same lines back and forth between their cores on
//! every request. A scrape adds the copies up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What kind of request a measurement belongs to: the app's traffic or one of
/// portcullis' own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forwarded to the upstream, or refused on its way there (401, redirect to login, 403, 502).
    App,
    Login,
    Callback,
    Logout,
    Me,
    /// `healthz` and `readyz`.
    Health,
    /// Unknown paths under the reserved prefix.
    Other,
}

impl RouteKind {
    const ALL: [RouteKind; 7] = [
        RouteKind::App,
        RouteKind::Login,
        RouteKind::Callback,
        RouteKind::Logout,
        RouteKind::Me,
        RouteKind::Health,
        RouteKind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            RouteKind::App => "app",
            RouteKind::Login => "login",
            RouteKind::Callback => "callback",
            RouteKind::Logout => "logout",
            RouteKind::Me => "me",
            RouteKind::Health => "health",
            RouteKind::Other => "other",
        }
    }
}

/// Outcome of a token refresh at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    /// The provider refused: the session ended.
    Refused,
    /// The provider could not be reached: the session was kept.
    Unreachable,
}

/// What became of refreshed tokens the session store could not take (see
/// [`crate::rescue`]): counted once as `Kept` when the store fails, then once as whatever
/// ends their rescue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescueOutcome {
    /// The store failed to take a refresh's result; this replica keeps it.
    Kept,
    /// Stored later (by the rescue task, or a request of the session on this replica).
    Stored,
    /// Dropped: the store held newer tokens, stored by another replica.
    Superseded,
    /// Revoked: the session ended (a logout) before the store took them.
    Ended,
    /// Revoked: the session reached its absolute end while the store was still failing.
    Expired,
}

/// Outcome of a login callback. `Completed` and `Failed` end the sign-in; `Unreachable`
/// leaves it open, so one sign-in that meets an outage is counted once per attempt as
/// `Unreachable` and then once as whatever ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Signed in: a session was created.
    Completed,
    /// The sign-in is over without a session (refused, expired, invalid, or a failure
    /// on our side); its pending login was cleared.
    Failed,
    /// The provider was out of service as the sign-in was being finished (the errors
    /// `AppError::is_provider_outage` names): the pending login is kept and a reload
    /// tries again. Labelled as [`RefreshOutcome::Unreachable`], the same condition at a
    /// refresh, so one selector (`result="unreachable"`) finds the provider's outages
    /// in both series.
    Unreachable,
}

/// Which login rate limit refused a login start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginLimit {
    /// The client's own share (`oidc.login_rate_per_client_*`).
    Client,
    /// The global cap (`oidc.login_rate_per_second`, `oidc.login_rate_burst`).
    Global,
}

/// Upper bounds of the latency buckets, in microseconds (0.5 ms to 10 s).
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
const STATUS_CLASSES: usize = 5;

/// A fixed-bucket histogram of durations.
#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// How many copies of the per-request counters there are. Threads beyond this many
/// share copies (still correct, only slower).
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The copy this thread adds to: threads take the next one in turn.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// One copy of the per-request counters. Aligned so that no two copies share a cache
/// line (nor the pair of lines this CPU family prefetches together).
#[derive(Default)]
#[repr(align(128))]
struct RequestCounters {
    requests: [[AtomicU64; STATUS_CLASSES]; RouteKind::ALL.len()],
    durations: [Histogram; RouteKind::ALL.len()],
}

/// Every metric portcullis keeps. One per process, shared.
#[derive(Default)]
pub struct Metrics {
    shards: [RequestCounters; SHARDS],
    refreshes: [AtomicU64; 3],
    rescues: [AtomicU64; 5],
    logins_started: AtomicU64,
    logins: [AtomicU64; 3],
    logins_rate_limited: [AtomicU64; 2],
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    /// Not sharded: counted only when a response is cut off.
    upstream_body_idle_timeouts: AtomicU64,
    /// Not sharded: counted only when a request is cut off.
    client_body_idle_timeouts: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// One answered request: its route kind, status and time to the response head.
    pub fn request(&self, kind: RouteKind, status: StatusCode, elapsed: Duration) {
        let k = kind as usize;
        let class = usize::from(status.as_u16() / 100).clamp(1, STATUS_CLASSES) - 1;
        let shard = &self.shards[SHARD.with(|shard| *shard)];
        shard.requests[k][class].fetch_add(1, Ordering::Relaxed);
        shard.durations[k].observe(elapsed);
    }

    /// The sum over all shards of the counter `pick` chooses.
    fn total(&self, pick: impl Fn(&RequestCounters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| pick(shard).load(Ordering::Relaxed))
            .sum()
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.refreshes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rescue(&self, outcome: RescueOutcome) {
        self.rescues[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_started(&self) {
        self.logins_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_rate_limited(&self, limit: LoginLimit) {
        self.logins_rate_limited[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// An upstream response body sent nothing for `upstream.body_idle_timeout` and was cut off.
    pub fn upstream_body_idle_timeout(&self) {
        self.upstream_body_idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's request body sent nothing for `server.body_idle_timeout` and was cut off.
    pub fn client_body_idle_timeout(&self) {
        self.client_body_idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4). `gauges` adds values read at
    /// scrape time (sessions held, provider readiness).
    pub fn render(&self, gauges: &ScrapeGauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "portcullis_requests_total",
            "counter",
            "Requests answered, by route kind and status class.",
        );
        for kind in RouteKind::ALL {
            for class in 0..STATUS_CLASSES {
                let _ = writeln!(
                    out,
                    "portcullis_requests_total{{route=\"{}\",status=\"{}xx\"}} {}",
                    kind.label(),
                    class + 1,
                    self.total(|shard| &shard.requests[kind as usize][class])
                );
            }
        }

        header(
            &mut out,
            "portcullis_request_duration_seconds",
            "histogram",
            "Time from the request head to the response head, by route kind.",
        );
        for kind in RouteKind::ALL {
            let k = kind as usize;
            let mut cumulative = 0;
            for (slot, bound) in BUCKETS_US.iter().enumerate() {
                cumulative += self.total(|shard| &shard.durations[k].buckets[slot]);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "portcullis_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    kind.label()
                );
            }
            cumulative += self.total(|shard| &shard.durations[k].buckets[BUCKETS_US.len()]);
            let label = kind.label();
            let sum = self.total(|shard| &shard.durations[k].sum_us) as f64 / 1e6;
            let _ = writeln!(
                out,
                "portcullis_request_duration_seconds_bucket{{route=\"{label}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "portcullis_request_duration_seconds_sum{{route=\"{label}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "portcullis_request_duration_seconds_count{{route=\"{label}\"}} {cumulative}"
            );
        }

        header(
            &mut out,
            "portcullis_logins_started_total",
            "counter",
            "Logins sent to the identity provider.",
        );
        let _ = writeln!(out, "portcullis_logins_started_total {}", get(&self.logins_started));
        header(
            &mut out,
            "portcullis_logins_total",
            "counter",
            "Login callbacks, by result: completed (signed in), failed (the sign-in is over without a session), unreachable (the provider was out of service; the sign-in is kept for a reload, counted again when it ends).",
        );
        // In `LoginOutcome`'s order (its discriminants index `logins`).
        for (result, count) in ["completed", "failed", "unreachable"].iter().zip(&self.logins) {
            let _ = writeln!(out, "portcullis_logins_total{{result=\"{result}\"}} {}", get(count));
        }
        header(
            &mut out,
            "portcullis_logins_rate_limited_total",
            "counter",
            "Login starts refused before reaching the provider, by the limit that refused them: the client's own share, or the global cap.",
        );
        for (limit, count) in ["client", "global"].iter().zip(&self.logins_rate_limited) {
            let _ = writeln!(
                out,
                "portcullis_logins_rate_limited_total{{limit=\"{limit}\"}} {}",
                get(count)
            );
        }
        header(
            &mut out,
            "portcullis_token_refreshes_total",
            "counter",
            "Token refreshes at the provider, by result.",
        );
        for (result, count) in ["refreshed", "refused", "unreachable"].iter().zip(&self.refreshes) {
            let _ = writeln!(
                out,
                "portcullis_token_refreshes_total{{result=\"{result}\"}} {}",
                get(count)
            );
        }
        header(
            &mut out,
            "portcullis_refresh_rescues_total",
            "counter",
            "Refreshed tokens the session store could not take (kept), and what became of them.",
        );
        let rescue_results = ["kept", "stored", "superseded", "ended", "expired"];
        for (result, count) in rescue_results.iter().zip(&self.rescues) {
            let _ = writeln!(
                out,
                "portcullis_refresh_rescues_total{{result=\"{result}\"}} {}",
                get(count)
            );
        }

        header(
            &mut out,
            "portcullis_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(
            out,
            "portcullis_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "portcullis_connections_total",
            "counter",
            "Client connections accepted.",
        );
        let _ = writeln!(out, "portcullis_connections_total {}", get(&self.connections_total));
        header(
            &mut out,
            "portcullis_connections_refused_total",
            "counter",
            "Client connections refused at the connection limit.",
        );
        let _ = writeln!(
            out,
            "portcullis_connections_refused_total {}",
            get(&self.connections_refused)
        );

        header(
            &mut out,
            "portcullis_upstream_body_idle_timeouts_total",
            "counter",
            "Upstream responses cut off because their body sent nothing for upstream.body_idle_timeout.",
        );
        let _ = writeln!(
            out,
            "portcullis_upstream_body_idle_timeouts_total {}",
            get(&self.upstream_body_idle_timeouts)
        );

        header(
            &mut out,
            "portcullis_client_body_idle_timeouts_total",
            "counter",
            "Requests cut off because the client's body sent nothing for server.body_idle_timeout.",
        );
        let _ = writeln!(
            out,
            "portcullis_client_body_idle_timeouts_total {}",
            get(&self.client_body_idle_timeouts)
        );

        header(
            &mut out,
            "portcullis_sessions",
            "gauge",
            "Sessions held by the in-memory store (approximate).",
        );
        match gauges.sessions {
            Some(sessions) => {
                let _ = writeln!(out, "portcullis_sessions {sessions}");
            }
            None => {
                let _ = writeln!(out, "portcullis_sessions NaN");
            }
        }
        header(
            &mut out,
            "portcullis_ready",
            "gauge",
            "1 when the provider's metadata is loaded.",
        );
        let _ = writeln!(out, "portcullis_ready {}", u8::from(gauges.ready));
        header(
            &mut out,
            "portcullis_uptime_seconds",
            "gauge",
            "Seconds since the process started.",
        );
        let _ = writeln!(out, "portcullis_uptime_seconds {}", gauges.uptime.as_secs());
        out
    }
}

/// Values the scrape reads from elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeGauges {
    /// Sessions held, when the store can count them cheaply.
    pub sessions: Option<u64>,
    pub ready: bool,
    pub uptime: Duration,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// What [`serve`] calls at every scrape for the [`ScrapeGauges`].
pub type GaugesFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ScrapeGauges> + Send>>;

/// Serves `GET /metrics` on `listener` until `stopped` turns true. `gauges` is called
/// at every scrape.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    gauges: Arc<dyn Fn() -> GaugesFuture + Send + Sync>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::server::stop_requested(&mut stopped) => return,
        };
        let metrics = metrics.clone();
        let gauges = gauges.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let metrics = metrics.clone();
            let gauges = gauges();
            async move { Ok::<_, std::convert::Infallible>(scrape_response(&request, &metrics, &gauges.await)) }
        });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn scrape_response(request: &Request<Incoming>, metrics: &Metrics, gauges: &ScrapeGauges) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(gauges),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> ScrapeGauges {
        ScrapeGauges {
            sessions: Some(3),
            ready: true,
            uptime: Duration::from_secs(42),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn requests_counted_on_many_threads_are_added_up() {
        let metrics = Metrics::default();
        // More threads than shards: some share one, and nothing may be lost either way.
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        metrics.request(RouteKind::App, StatusCode::OK, Duration::from_millis(2));
                    }
                });
            }
        });
        let text = metrics.render(&gauges());
        let total = 100 * (SHARDS + 3);
        assert!(text.contains(&format!(
            "portcullis_requests_total{{route=\"app\",status=\"2xx\"}} {total}\n"
        )));
        assert!(text.contains("portcullis_request_duration_seconds_bucket{route=\"app\",le=\"0.001\"} 0\n"));
        assert!(text.contains(&format!(
            "portcullis_request_duration_seconds_bucket{{route=\"app\",le=\"0.0025\"}} {total}\n"
        )));
        assert!(text.contains(&format!(
            "portcullis_request_duration_seconds_count{{route=\"app\"}} {total}\n"
        )));
        let sum = (total * 2_000) as f64 / 1e6;
        assert!(text.contains(&format!(
            "portcullis_request_duration_seconds_sum{{route=\"app\"}} {sum}\n"
        )));
    }

    #[test]
    fn requests_are_counted_by_route_and_status_class() {
        let metrics = Metrics::default();
        metrics.request(RouteKind::App, StatusCode::OK, Duration::from_micros(300));
        metrics.request(RouteKind::App, StatusCode::NO_CONTENT, Duration::from_micros(300));
        metrics.request(RouteKind::App, StatusCode::BAD_GATEWAY, Duration::from_millis(3));
        metrics.request(RouteKind::Callback, StatusCode::FOUND, Duration::from_millis(30));
        let text = metrics.render(&gauges());
        assert_eq!(
            line(&text, "portcullis_requests_total{route=\"app\",status=\"2xx\"}"),
            "portcullis_requests_total{route=\"app\",status=\"2xx\"} 2"
        );
        assert!(text.contains("portcullis_requests_total{route=\"app\",status=\"5xx\"} 1\n"));
        assert!(text.contains("portcullis_requests_total{route=\"callback\",status=\"3xx\"} 1\n"));
        assert!(text.contains("portcullis_requests_total{route=\"login\",status=\"2xx\"} 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let metrics = Metrics::default();
        for us in [100, 500, 501, 2_000, 20_000_000] {
            metrics.request(RouteKind::App, StatusCode::OK, Duration::from_micros(us));
        }
        let text = metrics.render(&gauges());
        let bucket = |le: &str| {
            let prefix = format!("portcullis_request_duration_seconds_bucket{{route=\"app\",le=\"{le}\"}} ");
            line(&text, &prefix)[prefix.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(bucket("0.0005"), 2, "a bucket's bound is inclusive");
        assert_eq!(bucket("0.001"), 3);
        assert_eq!(bucket("0.0025"), 4);
        assert_eq!(bucket("10"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert!(text.contains("portcullis_request_duration_seconds_count{route=\"app\"} 5\n"));
        assert!(text.contains("portcullis_request_duration_seconds_sum{route=\"app\"} 20.003101\n"));
    }

    #[test]
    fn every_series_has_help_and_type_and_gauges_come_from_the_scrape() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.connection_refused();
        metrics.refresh(RefreshOutcome::Refused);
        metrics.rescue(RescueOutcome::Kept);
        metrics.rescue(RescueOutcome::Stored);
        metrics.login_started();
        metrics.login(LoginOutcome::Completed);
        metrics.login_rate_limited(LoginLimit::Client);
        metrics.login_rate_limited(LoginLimit::Client);
        metrics.login_rate_limited(LoginLimit::Global);
        metrics.upstream_body_idle_timeout();
        metrics.client_body_idle_timeout();
        metrics.client_body_idle_timeout();
        let text = metrics.render(&gauges());
        for name in [
            "portcullis_requests_total",
            "portcullis_request_duration_seconds",
            "portcullis_logins_started_total",
            "portcullis_logins_total",
            "portcullis_logins_rate_limited_total",
            "portcullis_token_refreshes_total",
            "portcullis_refresh_rescues_total",
            "portcullis_connections_open",
            "portcullis_connections_total",
            "portcullis_connections_refused_total",
            "portcullis_upstream_body_idle_timeouts_total",
            "portcullis_client_body_idle_timeouts_total",
            "portcullis_sessions",
            "portcullis_ready",
            "portcullis_uptime_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(text.contains("portcullis_connections_open 1\n"));
        assert!(text.contains("portcullis_connections_total 2\n"));
        assert!(text.contains("portcullis_connections_refused_total 1\n"));
        assert!(text.contains("portcullis_upstream_body_idle_timeouts_total 1\n"));
        assert!(text.contains("portcullis_client_body_idle_timeouts_total 2\n"));
        assert!(text.contains("portcullis_token_refreshes_total{result=\"refused\"} 1\n"));
        assert!(text.contains("portcullis_refresh_rescues_total{result=\"kept\"} 1\n"));
        assert!(text.contains("portcullis_refresh_rescues_total{result=\"stored\"} 1\n"));
        assert!(text.contains("portcullis_refresh_rescues_total{result=\"expired\"} 0\n"));
        assert!(text.contains("portcullis_logins_total{result=\"completed\"} 1\n"));
        assert!(text.contains("portcullis_logins_started_total 1\n"));
        assert!(text.contains("portcullis_logins_rate_limited_total{limit=\"client\"} 2\n"));
        assert!(text.contains("portcullis_logins_rate_limited_total{limit=\"global\"} 1\n"));
        assert!(text.contains("portcullis_sessions 3\n"));
        assert!(text.contains("portcullis_ready 1\n"));
        assert!(text.contains("portcullis_uptime_seconds 42\n"));
    }

    #[test]
    fn each_login_outcome_has_a_series_of_its_own() {
        let metrics = Metrics::default();
        metrics.login(LoginOutcome::Unreachable);
        metrics.login(LoginOutcome::Unreachable);
        metrics.login(LoginOutcome::Completed);
        let text = metrics.render(&gauges());
        assert!(
            text.contains("portcullis_logins_total{result=\"completed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_logins_total{result=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_logins_total{result=\"unreachable\"} 2\n"),
            "{text}"
        );
        metrics.login(LoginOutcome::Failed);
        let text = metrics.render(&gauges());
        assert!(
            text.contains("portcullis_logins_total{result=\"failed\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_listener_answers_get_and_head_of_metrics_and_404_for_anything_else_until_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Metrics::new();
        metrics.login_started();
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(serve(
            listener,
            metrics,
            Arc::new(|| -> GaugesFuture { Box::pin(async { gauges() }) }),
            stopped,
        ));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();

        let scrape = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(scrape.status(), 200);
        assert_eq!(
            scrape.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = scrape.text().await.unwrap();
        assert!(text.contains("portcullis_logins_started_total 1\n"), "{text}");
        assert!(text.contains("portcullis_sessions 3\n"), "{text}");
        let head = client.head(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(head.status(), 200);

        for (method, path) in [
            (Method::POST, "/metrics"),
            (Method::GET, "/"),
            (Method::GET, "/metrics/"),
            (Method::GET, "/.auth/me"),
        ] {
            let other = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(other.status(), 404, "{method} {path}");
            let text = other.text().await.unwrap();
            assert!(!text.contains("portcullis_"), "{method} {path}: {text}");
        }

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the listener stops when asked")
            .unwrap();
    }
}
