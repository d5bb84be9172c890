//! `GET /health`: a superset of the Node sources's report.
//!
//! Redis (PING, heartbeat count) and SQLite (a read) are measured by one probe that every
//! request made within `HEALTH_MAX_AGE_MS` reuses; requests that find the probe stale share
//! the one new probe being taken (single flight), so /health cannot multiply load on Redis
//! or SQLite. The writer's own counters (queue depth, last commit) are read live. A report
//! built from a probe is kept as serialized JSON and served again while those counters have
//! not moved, so a request answered from the cache does no I/O and no serialization.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::app::App;
use crate::coordination::{CoordinationError, Coordinator, Mode, Reports, fresh_figures};
use crate::metrics::{PollFigures, RealtimeFigures};
use crate::store::Store;
use crate::telemetry::error_chain;

/// How long the store may take to answer the health read before it counts as down.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthReport {
    pub ok: bool,
    pub status: Status,
    pub version: &'static str,
    /// When Redis and SQLite were measured (the probe this report reuses).
    pub checked_at: String,
    pub redis: RedisReport,
    pub sqlite: SqliteReport,
    pub polling: PollingReport,
    pub scalability: ScalabilityReport,
    /// The realtime bridges; absent while none runs on this Redis (none reported lately).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeReport>,
}

/// The DonationAlerts pollers of every instance, summed (counters since each poller
/// started; instances that stopped reporting a while ago are left out).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PollingReport {
    /// Pollers that reported within the last [`POLLER_REPORT_WINDOW`].
    pub pollers: usize,
    pub streamer_count: usize,
    /// Streamers live on Twitch (polled most often).
    pub live: usize,
    pub concurrency: usize,
    /// The idle poll interval in ms (live streamers and recent donors are polled faster).
    pub interval: Option<u64>,
    pub queue_size: usize,
    /// Streamer records held in the pollers' caches (summed).
    pub cached_streamers: usize,
    pub pending: usize,
    /// Streamers waiting out a backoff after failed polls (429, 5xx, garbage, timeouts).
    pub backing_off: usize,
    /// RFC 3339 UTC of the latest loop round of any poller.
    pub last_run_at: Option<String>,
    pub last_run_duration_ms: Option<u64>,
    pub polled: u64,
    pub skipped_locked: u64,
    pub donations_found: u64,
    pub errors: u64,
    pub rate_limit: RateLimitReport,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateLimitReport {
    /// The sources-wide DonationAlerts budget (`DA_RATE_LIMIT_PER_MIN`).
    pub per_minute: u32,
    /// Grants left at the latest decision any poller saw.
    pub remaining: Option<u32>,
    /// Times a poller waited for a grant.
    pub waits: u64,
}

/// A poller whose last report is older than this no longer counts.
pub(crate) const POLLER_REPORT_WINDOW: Duration = Duration::from_secs(30);

impl PollingReport {
    /// Sums the latest figures of every poller, given as stored JSON; returns the report
    /// and the instances whose figures are too old (to be forgotten).
    pub(crate) fn from_figures(
        per_minute: u32,
        stored: &[(String, String)],
        now_ms: i64,
    ) -> (Self, Vec<String>) {
        let mut report = Self {
            rate_limit: RateLimitReport {
                per_minute,
                ..RateLimitReport::default()
            },
            ..Self::default()
        };
        let (fresh, stale) =
            fresh_figures(stored, now_ms, POLLER_REPORT_WINDOW, |f: &PollFigures| {
                f.reported_at
            });
        let mut latest_run: Option<(i64, u64)> = None;
        let mut latest_report = i64::MIN;
        for figures in fresh {
            report.pollers += 1;
            // Every poller schedules every streamer: the count is the same, not a sum.
            report.streamer_count = report.streamer_count.max(figures.streamer_count);
            report.live = report.live.max(figures.live);
            report.concurrency += figures.concurrency;
            report.interval = Some(
                report
                    .interval
                    .map_or(figures.interval, |i| i.min(figures.interval)),
            );
            report.queue_size += figures.queue_size;
            report.cached_streamers += figures.cached;
            report.pending += figures.pending;
            report.backing_off = report.backing_off.max(figures.backing_off);
            report.polled += figures.polled;
            report.skipped_locked += figures.skipped_locked;
            report.donations_found += figures.donations_found;
            report.errors += figures.errors;
            report.rate_limit.waits += figures.budget_waits;
            if figures.reported_at > latest_report {
                latest_report = figures.reported_at;
                report.rate_limit.remaining = Some(figures.rate_limit_remaining);
            }
            if figures.last_run_at > 0 && latest_run.is_none_or(|(at, _)| figures.last_run_at > at)
            {
                latest_run = Some((figures.last_run_at, figures.last_run_duration_ms));
            }
        }
        if let Some((at, duration)) = latest_run {
            report.last_run_at =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
                    .ok()
                    .map(timestamp);
            report.last_run_duration_ms = Some(duration);
        }
        (report, stale)
    }
}

/// The realtime bridges of every process, summed (counters since each bridge started;
/// bridges that stopped reporting a while ago are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RealtimeReport {
    /// Bridges that reported within the last [`BRIDGE_REPORT_WINDOW`].
    pub bridges: usize,
    pub shards_held: usize,
    pub connected: usize,
    pub subscribed: usize,
    pub reconnects: u64,
    pub pushes: u64,
    /// RFC 3339 UTC of the latest push any bridge received.
    pub last_push_at: Option<String>,
    /// The worst bridge's p95 of push → stream entry, in ms.
    #[serde(rename = "pushToEventMsP95")]
    pub push_to_event_ms_p95: Option<f64>,
}

/// A bridge whose last report is older than this no longer counts (bridges report every
/// few seconds, as pollers do every second: the same window).
pub(crate) const BRIDGE_REPORT_WINDOW: Duration = POLLER_REPORT_WINDOW;

impl RealtimeReport {
    /// Sums the latest figures of every bridge, given as stored JSON: `None` when no bridge
    /// reported within the window. Also returns the instances whose figures are too old or
    /// unreadable (to be forgotten).
    pub(crate) fn from_figures(
        stored: &[(String, String)],
        now_ms: i64,
    ) -> (Option<Self>, Vec<String>) {
        let mut report = Self::default();
        let (fresh, stale) = fresh_figures(
            stored,
            now_ms,
            BRIDGE_REPORT_WINDOW,
            |f: &RealtimeFigures| f.reported_at,
        );
        let mut latest_push: Option<(i64, String)> = None;
        for figures in fresh {
            report.bridges += 1;
            report.shards_held += figures.shards_held;
            report.connected += figures.connected;
            report.subscribed += figures.subscribed;
            report.reconnects += figures.reconnects;
            report.pushes += figures.pushes;
            if let Some(at) = figures.last_push_at
                && let Some(ms) = crate::domain::clock::rfc3339_ms(&at)
                && latest_push.as_ref().is_none_or(|(latest, _)| ms > *latest)
            {
                latest_push = Some((ms, at));
            }
            if let Some(p95) = figures.push_to_event_ms_p95 {
                report.push_to_event_ms_p95 = Some(
                    report
                        .push_to_event_ms_p95
                        .map_or(p95, |worst| worst.max(p95)),
                );
            }
        }
        report.last_push_at = latest_push.map(|(_, at)| at);
        ((report.bridges > 0).then_some(report), stale)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedisReport {
    /// `enabled` | `disabled` | `down`.
    pub status: &'static str,
    pub is_required: bool,
    pub latency_ms: Option<f64>,
    pub last_health_check: Option<LastCheck>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LastCheck {
    pub success: bool,
    pub timestamp: String,
    /// What failed, never where (no host or port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SqliteReport {
    /// `ok` | `down`.
    pub status: &'static str,
    /// As the database reported it at the probe (`PRAGMA journal_mode`).
    pub journal_mode: Option<String>,
    pub writer_queue_depth: usize,
    pub last_commit_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScalabilityReport {
    pub can_scale_horizontally: bool,
    pub mode: &'static str,
    /// Live instances (heartbeats within the last minute), this one included.
    pub instances: Option<u64>,
    /// Writes are queued to the single writer, off the request path.
    pub async_db_enabled: bool,
    /// Poll interval and concurrency adapt to the streamer count (the poller).
    pub dynamic_polling_enabled: bool,
    pub lazy_cache_enabled: bool,
}

/// A report ready to send: the status decides 200 (ok, degraded) or 503 (down).
#[derive(Debug, Clone)]
pub struct HealthResponse {
    pub status: Status,
    /// The report as JSON.
    pub body: Bytes,
}

/// One measurement of Redis and SQLite.
#[derive(Debug)]
struct Probe {
    taken: Instant,
    at: time::OffsetDateTime,
    /// `None` in single-instance mode.
    redis: Option<RedisCheck>,
    instances: Option<u64>,
    journal_mode: Option<String>,
    sqlite_error: Option<String>,
    polling: PollingReport,
    realtime: Option<RealtimeReport>,
}

#[derive(Debug, Clone)]
struct RedisCheck {
    latency: Option<Duration>,
    /// What failed (never where); `None` on success.
    error: Option<String>,
}

/// The writer's live counters a report includes; a cached body is valid while they match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriterFigures {
    queue_depth: usize,
    last_commit_us: u64,
    commits: u64,
    alive: bool,
}

type ProbeInFlight = Shared<BoxFuture<'static, Arc<Probe>>>;

#[derive(Default)]
struct ProbeState {
    latest: Option<Arc<Probe>>,
    /// The body last rendered from `latest`, with the writer figures it shows.
    rendered: Option<(WriterFigures, HealthResponse)>,
    in_flight: Option<ProbeInFlight>,
}

/// What `/health` looks at: the coordinator (PING, heartbeats, the pollers' figures), the
/// store's writer, and the settings that decide what counts as down.
#[derive(Clone)]
pub struct HealthSources {
    pub coordinator: Coordinator,
    pub store: Store,
    /// This process, in `avatar:instances`.
    pub instance_id: Arc<str>,
    /// `REDIS_REQUIRED`: without Redis the service is down rather than degraded.
    pub redis_required: bool,
    /// The DonationAlerts budget a minute, reported beside the pollers' figures.
    pub rate_limit_per_minute: u32,
}

impl HealthSources {
    pub fn of(app: &App) -> Self {
        Self {
            coordinator: app.coordinator.clone(),
            store: app.store.clone(),
            instance_id: app.instance_id.clone(),
            redis_required: app.config.redis.required,
            rate_limit_per_minute: app.config.polling.rate_limit_per_minute,
        }
    }
}

/// The report `GET /health` would give now, from a probe of its own (tools and tests; the
/// route reuses its router's [`HealthProbes`]).
pub async fn respond(app: &App) -> HealthResponse {
    HealthProbes::new(Duration::ZERO)
        .respond(&HealthSources::of(app))
        .await
}

/// The shared, reused health probe (one per router, so one per process): a probe at most
/// `HEALTH_MAX_AGE_MS` old answers.
pub struct HealthProbes {
    max_age: Duration,
    /// Shared with the task taking a probe, which stores it when done.
    state: Arc<Mutex<ProbeState>>,
}

impl HealthProbes {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_fresh(&self, probe: &Probe) -> bool {
        probe.taken.elapsed() <= self.max_age
    }

    pub async fn respond(&self, sources: &HealthSources) -> HealthResponse {
        let figures = WriterFigures::read(sources);
        let cached = {
            let state = self.state();
            match &state.latest {
                Some(probe) if self.is_fresh(probe) => {
                    if let Some((shown, response)) = &state.rendered
                        && *shown == figures
                    {
                        return response.clone();
                    }
                    Some(probe.clone())
                }
                _ => None,
            }
        };
        let probe = match cached {
            Some(probe) => probe,
            None => self.probe(sources).await,
        };
        let response = render(sources, &probe, figures);
        let mut state = self.state();
        if state
            .latest
            .as_ref()
            .is_some_and(|latest| Arc::ptr_eq(latest, &probe))
        {
            state.rendered = Some((figures, response.clone()));
        }
        response
    }

    /// A fresh probe: the one being taken if any, else a new one. The probe runs as its own
    /// task, so a client that goes away does not abandon it half-way for the others.
    async fn probe(&self, sources: &HealthSources) -> Arc<Probe> {
        let in_flight = {
            let mut state = self.state();
            if let Some(probe) = state.latest.as_ref().filter(|p| self.is_fresh(p)) {
                return probe.clone();
            }
            match &state.in_flight {
                Some(in_flight) => in_flight.clone(),
                None => {
                    let sources = sources.clone();
                    let shared_state = self.state.clone();
                    let distributed = sources.coordinator.mode() == Mode::Distributed;
                    let task = tokio::spawn(async move {
                        let probe = AssertUnwindSafe(measure(&sources))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Probe::interrupted(distributed));
                        let probe = Arc::new(probe);
                        let mut state = shared_state.lock().unwrap_or_else(|p| p.into_inner());
                        state.latest = Some(probe.clone());
                        state.rendered = None;
                        state.in_flight = None;
                        probe
                    });
                    let in_flight = async move {
                        task.await
                            .unwrap_or_else(|_| Arc::new(Probe::interrupted(distributed)))
                    }
                    .boxed()
                    .shared();
                    state.in_flight = Some(in_flight.clone());
                    in_flight
                }
            }
        };
        in_flight.await
    }
}

impl WriterFigures {
    fn read(sources: &HealthSources) -> Self {
        let stats = sources.store.writer_stats();
        Self {
            queue_depth: stats.queue_depth.load(Ordering::Relaxed),
            last_commit_us: stats.last_commit_us.load(Ordering::Relaxed),
            commits: stats.commits.load(Ordering::Relaxed),
            alive: stats.alive.load(Ordering::Relaxed),
        }
    }
}

impl Probe {
    /// Stands in for a probe that panicked or was cancelled: nothing measured, so down.
    fn interrupted(distributed: bool) -> Self {
        let error = Some("the health probe was interrupted".to_owned());
        Self {
            taken: Instant::now(),
            at: time::OffsetDateTime::now_utc(),
            redis: distributed.then(|| RedisCheck {
                latency: None,
                error: error.clone(),
            }),
            instances: None,
            journal_mode: None,
            sqlite_error: error,
            polling: PollingReport::default(),
            realtime: None,
        }
    }
}

/// Measures Redis (PING, then the heartbeat count) and SQLite (a read) concurrently.
async fn measure(sources: &HealthSources) -> Probe {
    let at = time::OffsetDateTime::now_utc();
    let taken = Instant::now();
    let redis_and_instances = async {
        let redis = check_redis(sources).await;
        let instances = match &redis {
            Some(check) if check.error.is_some() => None,
            _ => match sources
                .coordinator
                .presence()
                .heartbeat(&sources.instance_id)
                .await
            {
                Ok(count) => Some(count),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "health: counting live instances failed");
                    None
                }
            },
        };
        (redis, instances)
    };
    let ((redis, instances), (journal_mode, sqlite_error)) =
        tokio::join!(redis_and_instances, check_sqlite(sources));
    let redis_up = redis.as_ref().is_none_or(|c| c.error.is_none());
    let (polling, realtime) = if redis_up {
        tokio::join!(polling_report(sources), realtime_report(sources))
    } else {
        (PollingReport::default(), None)
    };
    Probe {
        taken,
        at,
        redis,
        instances,
        journal_mode,
        sqlite_error,
        polling,
        realtime,
    }
}

/// Every poller's latest figures, summed; figures of pollers gone quiet are dropped.
async fn polling_report(sources: &HealthSources) -> PollingReport {
    let per_minute = sources.rate_limit_per_minute;
    let stored = match sources.coordinator.presence().figures(Reports::Poll).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %what_failed(&e), "health: reading the pollers' figures failed");
            return PollingReport::from_figures(per_minute, &[], 0).0;
        }
    };
    let (report, stale) = PollingReport::from_figures(per_minute, &stored, crate::domain::now_ms());
    if let Err(e) = sources
        .coordinator
        .presence()
        .forget_figures(Reports::Poll, &stale)
        .await
    {
        tracing::debug!(error = %what_failed(&e), "health: stale poller figures stay");
    }
    report
}

/// Every bridge's latest figures, summed (`None` when no bridge reported lately); figures of
/// bridges gone quiet are dropped.
async fn realtime_report(sources: &HealthSources) -> Option<RealtimeReport> {
    let presence = sources.coordinator.presence();
    let stored = match presence.figures(Reports::Realtime).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %what_failed(&e), "health: reading the bridges' figures failed");
            return None;
        }
    };
    let (report, stale) = RealtimeReport::from_figures(&stored, crate::domain::now_ms());
    if let Err(e) = presence.forget_figures(Reports::Realtime, &stale).await {
        tracing::debug!(error = %what_failed(&e), "health: stale bridge figures stay");
    }
    report
}

/// Pings Redis; `None` in single-instance mode.
async fn check_redis(sources: &HealthSources) -> Option<RedisCheck> {
    if !matches!(sources.coordinator, Coordinator::Redis(_)) {
        return None;
    }
    Some(match sources.coordinator.ping().await {
        Ok(latency) => RedisCheck {
            latency: Some(latency),
            error: None,
        },
        Err(e) => {
            if sources.redis_required {
                tracing::error!(
                    error = %error_chain(&e),
                    "Redis is down and REDIS_REQUIRED=true: refusing work that needs it (503)"
                );
            } else {
                tracing::warn!(error = %error_chain(&e), "Redis is down: running degraded");
            }
            RedisCheck {
                latency: None,
                error: Some(what_failed(&e)),
            }
        }
    })
}

/// Says what went wrong with a Redis command without saying where: the report is public,
/// and the address of an internal server is not.
fn what_failed(error: &CoordinationError) -> String {
    match error {
        CoordinationError::Timeout { timeout, .. } => {
            format!("Redis did not answer within {timeout:?}")
        }
        CoordinationError::Redis { source, .. } => {
            if source.is_connection_refusal() {
                "the connection to Redis was refused".into()
            } else if source.kind() == redis::ErrorKind::AuthenticationFailed
                || matches!(source.code(), Some("NOAUTH" | "WRONGPASS"))
            {
                "Redis refused the credentials".into()
            } else if source.is_timeout() {
                "the connection to Redis timed out".into()
            } else if source.is_io_error() || source.is_connection_dropped() {
                "the connection to Redis failed".into()
            } else if let Some(code) = source.code() {
                format!("Redis answered with an error ({code})")
            } else {
                format!("the Redis command failed ({:?})", source.kind())
            }
        }
        CoordinationError::UnexpectedReply { .. } => "Redis gave an unexpected answer".into(),
        CoordinationError::NoQuorum { reached, needed } => {
            format!("too few Redis servers answered ({reached} of {needed} needed)")
        }
    }
}

/// Reads the journal mode through the read pool: proves a reader can open the database.
async fn check_sqlite(sources: &HealthSources) -> (Option<String>, Option<String>) {
    let read = sources
        .store
        .read(|conn| conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)));
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, read).await {
        Ok(Ok(mode)) => (Some(mode), None),
        Ok(Err(e)) => (None, Some(error_chain(&e))),
        Err(_) => (
            None,
            Some(format!("no answer within {STORE_CHECK_TIMEOUT:?}")),
        ),
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The report for `probe` with the writer's `figures`, as JSON.
fn render(sources: &HealthSources, probe: &Probe, figures: WriterFigures) -> HealthResponse {
    let report = report(sources, probe, figures);
    let body = serde_json::to_vec(&report)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"ok":false,"status":"down"}"#));
    HealthResponse {
        status: report.status,
        body,
    }
}

fn report(sources: &HealthSources, probe: &Probe, figures: WriterFigures) -> HealthReport {
    let required = sources.redis_required;
    let redis_up = probe.redis.as_ref().is_none_or(|c| c.error.is_none());
    let checked_at = timestamp(probe.at);
    let redis = RedisReport {
        status: match &probe.redis {
            None => "disabled",
            Some(c) if c.error.is_none() => "enabled",
            Some(_) => "down",
        },
        is_required: required,
        latency_ms: probe.redis.as_ref().and_then(|c| c.latency).map(millis),
        last_health_check: probe.redis.as_ref().map(|c| LastCheck {
            success: c.error.is_none(),
            timestamp: checked_at.clone(),
            error: c.error.clone(),
        }),
    };

    let sqlite_error = probe
        .sqlite_error
        .clone()
        .or_else(|| (!figures.alive).then(|| "the writer has stopped".to_owned()));
    let sqlite = SqliteReport {
        status: if sqlite_error.is_none() { "ok" } else { "down" },
        journal_mode: probe.journal_mode.clone(),
        writer_queue_depth: figures.queue_depth,
        last_commit_ms: (figures.commits > 0).then(|| figures.last_commit_us as f64 / 1000.0),
        error: sqlite_error,
    };

    let mode = sources.coordinator.mode();
    let scalability = ScalabilityReport {
        can_scale_horizontally: mode == Mode::Distributed && redis_up,
        mode: mode.as_str(),
        instances: probe.instances,
        async_db_enabled: true,
        // Measured: a poller with an adaptive schedule has reported.
        dynamic_polling_enabled: probe.polling.pollers > 0,
        // Measured: a poller (which keeps the streamer cache) has reported.
        lazy_cache_enabled: probe.polling.pollers > 0,
    };

    let status = if sqlite.status != "ok" || (required && !redis_up) {
        Status::Down
    } else if !redis_up {
        Status::Degraded
    } else {
        Status::Ok
    };
    HealthReport {
        ok: status != Status::Down,
        status,
        version: env!("CARGO_PKG_VERSION"),
        checked_at,
        redis,
        sqlite,
        polling: probe.polling.clone(),
        scalability,
        realtime: probe.realtime.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pollers_figures_are_summed_and_quiet_pollers_left_out() {
        let figures = |reported_at: i64, polled: u64, backing_off: usize| {
            serde_json::to_string(&PollFigures {
                reported_at,
                streamer_count: 50,
                concurrency: 4,
                interval: 75_000,
                polled,
                backing_off,
                last_run_at: reported_at,
                last_run_duration_ms: 3,
                rate_limit_remaining: 7,
                ..PollFigures::default()
            })
            .unwrap()
        };
        let now = 1_000_000;
        let stored = vec![
            ("a".to_owned(), figures(now - 1_000, 10, 2)),
            ("b".to_owned(), figures(now - 2_000, 5, 1)),
            ("gone".to_owned(), figures(now - 31_000, 99, 9)),
            ("garbled".to_owned(), "{".to_owned()),
        ];
        let (report, stale) = PollingReport::from_figures(60, &stored, now);
        assert_eq!(report.pollers, 2);
        assert_eq!(report.polled, 15);
        assert_eq!(report.streamer_count, 50, "the same streamers, not a sum");
        assert_eq!(report.concurrency, 8);
        assert_eq!(report.backing_off, 2);
        assert_eq!(report.rate_limit.per_minute, 60);
        assert_eq!(report.rate_limit.remaining, Some(7));
        assert_eq!(report.last_run_duration_ms, Some(3));
        let mut stale = stale;
        stale.sort();
        assert_eq!(stale, ["garbled", "gone"]);
    }

    use super::*;

    #[test]
    fn bridges_figures_are_summed_and_quiet_bridges_left_out() {
        let figures = |reported_at: i64, pushes: u64, last_push_at: Option<&str>, p95| {
            serde_json::to_string(&RealtimeFigures {
                reported_at,
                shards_held: 8,
                connected: 100,
                subscribed: 90,
                reconnects: 3,
                pushes,
                last_push_at: last_push_at.map(str::to_owned),
                push_to_event_ms_p95: p95,
            })
            .unwrap()
        };
        let now = 1_000_000;
        let stored = vec![
            (
                "a".to_owned(),
                figures(now - 1_000, 10, Some("2026-11-26T12:00:09Z"), Some(12.5)),
            ),
            (
                "b".to_owned(),
                figures(now - 2_000, 5, Some("2026-11-26T12:00:10Z"), Some(40.0)),
            ),
            ("c".to_owned(), figures(now, 0, None, None)),
            (
                "gone".to_owned(),
                figures(now - 31_000, 99, Some("2026-11-26T13:00:00Z"), Some(900.0)),
            ),
            ("garbled".to_owned(), "{".to_owned()),
        ];

        let (report, mut stale) = RealtimeReport::from_figures(&stored, now);

        let report = report.expect("three bridges reported");
        assert_eq!(report.bridges, 3);
        assert_eq!(report.shards_held, 24);
        assert_eq!(report.connected, 300);
        assert_eq!(report.subscribed, 270);
        assert_eq!(report.reconnects, 9);
        assert_eq!(report.pushes, 15);
        assert_eq!(report.last_push_at.as_deref(), Some("2026-11-26T12:00:10Z"));
        assert_eq!(
            report.push_to_event_ms_p95,
            Some(40.0),
            "the worst bridge's"
        );
        stale.sort();
        assert_eq!(stale, ["garbled", "gone"]);

        let only_quiet = &stored[3..];
        let (report, stale) = RealtimeReport::from_figures(only_quiet, now);
        assert_eq!(report, None, "no bridge runs");
        assert_eq!(stale.len(), 2);
    }

    #[test]
    fn a_redis_failure_is_described_without_its_address() {
        let refused = CoordinationError::Redis {
            server: "10.1.2.3:6380".into(),
            source: redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )),
        };
        let timeout = CoordinationError::Timeout {
            server: "10.1.2.3:6380".into(),
            timeout: Duration::from_secs(1),
        };
        let odd = CoordinationError::UnexpectedReply {
            server: "10.1.2.3:6380".into(),
            detail: "PING answered \"10.1.2.3\"".into(),
        };

        for error in [refused, timeout, odd] {
            let described = what_failed(&error);
            assert!(!described.contains("10.1.2.3"), "{described}");
            assert!(!described.contains("6380"), "{described}");
            assert!(described.contains("Redis"), "{described}");
        }
    }
}
