//! The application's figures, counted once where things happen and read two ways:
//! `avatar-local`'s `GET /metrics` (Prometheus text format, from the Prometheus project's
//! own client) and the Lambda functions' CloudWatch Embedded Metric Format lines ([`emf`]).
//!
//! - Polls: [`PollStats`], the poller's own counters (also behind `/health`), read at
//!   encoding time rather than counted a second time.
//! - The realtime bridge: [`RealtimeStats`] of this process (shards, sockets, pushes, the
//!   push → stream entry p95), read likewise; a bridge's EMF line is [`emf::realtime_record`].
//! - Tokens: refreshes (per provider), validation outcomes and connections ended
//!   (`need_reauth`), counted here by `tokens`.
//! - The writer: each group commit's size and commit time ([`WriterBatches`], fed by the
//!   writer thread).
//!
//! No figure carries a streamer id, a token or any other value taken from a request: labels
//! are fixed sets (provider, validation outcome).

pub mod emf;
mod poll;
mod realtime;

pub use poll::{PollCounts, PollFigures, PollStats};
pub use realtime::{RealtimeFigures, RealtimeStats};

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::Provider;
use crate::store::CommitObserver;

/// The `Content-Type` of `GET /metrics`: the Prometheus text format, version 0.0.4.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Writer samples kept for the next EMF record at most; beyond, a sample still counts in the
/// histograms but not in that record (a process that never emits EMF keeps this bound).
const MAX_PENDING_WRITER_SAMPLES: usize = 1000;

type ProviderLabel = [(&'static str, &'static str); 1];

/// Every figure of one process (one per [`crate::app::App`]).
pub struct Metrics {
    registry: Registry,
    poll: Arc<PollStats>,
    pub tokens: TokenMetrics,
    writer: WriterBatches,
    /// The counts the previous EMF record was made from: records carry differences.
    emitted: Mutex<Counts>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers the poller's and the realtime bridge's figures, the token counters and the
    /// writer's histograms.
    pub fn new(poll: Arc<PollStats>, realtime: Arc<RealtimeStats>, writer: &WriterBatches) -> Self {
        let tokens = TokenMetrics::default();
        // Every label value from the start: a scrape shows zeros rather than nothing.
        for provider in PROVIDERS {
            let _ = tokens.refreshes.get_or_create(&provider_label(provider));
            let _ = tokens.need_reauth.get_or_create(&provider_label(provider));
        }
        for outcome in ValidationOutcome::ALL {
            tokens.validation_count(outcome);
        }
        let writer = writer.clone();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PollCollector(poll.clone())));
        registry.register_collector(Box::new(RealtimeCollector(realtime)));
        registry.register(
            "avatar_token_refreshes",
            "Provider tokens replaced by a refresh, by provider",
            tokens.refreshes.clone(),
        );
        registry.register(
            "avatar_token_validations",
            "Stored Twitch tokens checked by the hourly validation, by outcome \
             (valid, refreshed, revoked, error)",
            tokens.validations.clone(),
        );
        registry.register(
            "avatar_need_reauth",
            "Connections ended because the provider refused their tokens (need_reauth), by \
             provider",
            tokens.need_reauth.clone(),
        );
        registry.register(
            "avatar_writer_batch_size",
            "Writes committed together by one group commit of the SQLite writer",
            writer.size.clone(),
        );
        registry.register_with_unit(
            "avatar_writer_commit",
            "Time of one group commit of the SQLite writer",
            Unit::Seconds,
            writer.commit_seconds.clone(),
        );
        Self {
            registry,
            poll,
            tokens,
            writer,
            emitted: Mutex::new(Counts::default()),
        }
    }

    /// Every figure in the Prometheus text format (version 0.0.4).
    pub(crate) fn prometheus_text(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder reports only writer errors.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The counters now.
    fn counts(&self) -> Counts {
        let poll = self.poll.snapshot();
        Counts {
            polls: poll.polled,
            polls_skipped_locked: poll.skipped_locked,
            donations: poll.donations_found,
            poll_errors: poll.errors,
            provider_errors: poll.provider_errors,
            rate_limit_waits: poll.budget_waits,
            token_refreshes: self.tokens.refreshes_total(),
            token_validations: self.tokens.validations_total(),
            tokens_revoked: self.tokens.validation_count(ValidationOutcome::Revoked),
            need_reauth: self.tokens.need_reauth_total(),
        }
    }

    /// The EMF record(s) of what happened since the previous one (see [`emf`]), or none when
    /// nothing did and `always` is false. More than one line only when the writer committed
    /// more batches than one record can carry samples of.
    pub fn emf_lines(&self, context: &emf::EmfContext<'_>, always: bool) -> Vec<String> {
        let (delta, samples) = {
            let mut emitted = self.emitted.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.counts();
            let delta = now.since(&emitted);
            let samples = self.writer.take_samples();
            if !always && delta == Counts::default() && samples.is_empty() {
                return Vec::new();
            }
            *emitted = now;
            (delta, samples)
        };
        emf::records(context, &delta, &samples)
    }
}

/// The counters an EMF record carries as differences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub polls: u64,
    pub polls_skipped_locked: u64,
    pub donations: u64,
    pub poll_errors: u64,
    pub provider_errors: u64,
    pub rate_limit_waits: u64,
    pub token_refreshes: u64,
    pub token_validations: u64,
    pub tokens_revoked: u64,
    pub need_reauth: u64,
}

impl Counts {
    /// What happened between `earlier` and these counts (counters only grow).
    fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            polls: self.polls.saturating_sub(earlier.polls),
            polls_skipped_locked: self
                .polls_skipped_locked
                .saturating_sub(earlier.polls_skipped_locked),
            donations: self.donations.saturating_sub(earlier.donations),
            poll_errors: self.poll_errors.saturating_sub(earlier.poll_errors),
            provider_errors: self.provider_errors.saturating_sub(earlier.provider_errors),
            rate_limit_waits: self
                .rate_limit_waits
                .saturating_sub(earlier.rate_limit_waits),
            token_refreshes: self.token_refreshes.saturating_sub(earlier.token_refreshes),
            token_validations: self
                .token_validations
                .saturating_sub(earlier.token_validations),
            tokens_revoked: self.tokens_revoked.saturating_sub(earlier.tokens_revoked),
            need_reauth: self.need_reauth.saturating_sub(earlier.need_reauth),
        }
    }
}

/// How one stored Twitch token's validation ended (`tokens::validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// Twitch accepted the token.
    Valid,
    /// Twitch refused it and a refresh replaced it.
    Refreshed,
    /// The refresh was refused too: the connection ended.
    Revoked,
    /// Not checked this time (Twitch unreachable, a token that does not open…).
    Error,
}

impl ValidationOutcome {
    const ALL: [ValidationOutcome; 4] = [Self::Valid, Self::Refreshed, Self::Revoked, Self::Error];

    fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Refreshed => "refreshed",
            Self::Revoked => "revoked",
            Self::Error => "error",
        }
    }
}

const PROVIDERS: [Provider; 2] = [Provider::Twitch, Provider::DonationAlerts];

/// Token refreshes, validation outcomes and ended connections.
#[derive(Debug, Default)]
pub struct TokenMetrics {
    refreshes: Family<ProviderLabel, Counter>,
    validations: Family<[(&'static str, &'static str); 1], Counter>,
    need_reauth: Family<ProviderLabel, Counter>,
}

fn provider_label(provider: Provider) -> ProviderLabel {
    [("provider", provider.as_str())]
}

impl TokenMetrics {
    /// A provider's tokens were replaced by a refresh.
    pub fn refreshed(&self, provider: Provider) {
        self.refreshes
            .get_or_create(&provider_label(provider))
            .inc();
    }

    /// A connection ended: the streamer must connect again.
    pub(crate) fn connection_ended(&self, provider: Provider) {
        self.need_reauth
            .get_or_create(&provider_label(provider))
            .inc();
    }

    /// `count` validations ended with `outcome`.
    pub fn validated(&self, outcome: ValidationOutcome, count: u64) {
        if count > 0 {
            self.validations
                .get_or_create(&[("outcome", outcome.label())])
                .inc_by(count);
        }
    }

    fn validation_count(&self, outcome: ValidationOutcome) -> u64 {
        self.validations
            .get_or_create(&[("outcome", outcome.label())])
            .get()
    }

    fn validations_total(&self) -> u64 {
        ValidationOutcome::ALL
            .iter()
            .map(|outcome| self.validation_count(*outcome))
            .sum()
    }

    fn refreshes_total(&self) -> u64 {
        PROVIDERS
            .iter()
            .map(|p| self.refreshes.get_or_create(&provider_label(*p)).get())
            .sum()
    }

    fn need_reauth_total(&self) -> u64 {
        PROVIDERS
            .iter()
            .map(|p| self.need_reauth.get_or_create(&provider_label(*p)).get())
            .sum()
    }
}

/// The SQLite writer's group commits: how many writes each carried and how long its commit
/// took. Clones share the figures (the writer thread records, the registry reads).
#[derive(Debug, Clone)]
pub struct WriterBatches {
    size: Histogram,
    commit_seconds: Histogram,
    /// (batch size, commit ms) not yet in an EMF record.
    pending: Arc<Mutex<Vec<(u64, f64)>>>,
}

impl Default for WriterBatches {
    fn default() -> Self {
        Self {
            size: Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 2000.0]),
            // 0.1 ms (local disk, WAL) to 2.5 s (EFS under load, a busy retry).
            commit_seconds: Histogram::new([
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            pending: Arc::default(),
        }
    }
}

impl CommitObserver for WriterBatches {
    fn committed(&self, writes: u64, took: Duration) {
        self.record(writes, took);
    }
}

impl WriterBatches {
    /// One committed batch.
    pub fn record(&self, writes: u64, commit: Duration) {
        self.size.observe(writes as f64);
        self.commit_seconds.observe(commit.as_secs_f64());
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < MAX_PENDING_WRITER_SAMPLES {
            pending.push((writes, commit.as_secs_f64() * 1000.0));
        }
    }

    fn take_samples(&self) -> Vec<(u64, f64)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The poller's counters and gauges, read from [`PollStats`] on each scrape.
#[derive(Debug)]
struct PollCollector(Arc<PollStats>);

impl Collector for PollCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = &self.0;
        let counts = stats.snapshot();
        let counters: [(&str, &str, u64); 7] = [
            (
                "avatar_polls",
                "DonationAlerts polls completed and recorded",
                counts.polled,
            ),
            (
                "avatar_polls_skipped_locked",
                "Polls skipped because another instance (or the Node app) held the streamer's lock",
                counts.skipped_locked,
            ),
            (
                "avatar_donations",
                "New donations found and recorded",
                counts.donations_found,
            ),
            (
                "avatar_poll_errors",
                "Polls that failed (the provider, the store, coordination, unopenable tokens)",
                counts.errors,
            ),
            (
                "avatar_provider_errors",
                "Polls that failed because DonationAlerts answered an error or garbage, or not in time",
                counts.provider_errors,
            ),
            (
                "avatar_rate_limit_waits",
                "Times a request waited for the app-wide DonationAlerts budget",
                counts.budget_waits,
            ),
            (
                "avatar_poll_stale_fences",
                "Poll records refused because a newer lock holder had recorded meanwhile",
                stats.stale_fences.load(Ordering::Relaxed),
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        let gauges: [(&str, &str, usize); 8] = [
            (
                "avatar_poll_streamers",
                "Streamers with a DonationAlerts connection to poll",
                stats.streamer_count.load(Ordering::Relaxed),
            ),
            (
                "avatar_poll_live_streamers",
                "Streamers live on Twitch at the last check",
                stats.live.load(Ordering::Relaxed),
            ),
            (
                "avatar_poll_concurrency",
                "Polls allowed in flight at once",
                stats.concurrency.load(Ordering::Relaxed),
            ),
            (
                "avatar_polls_in_flight",
                "Polls in flight",
                stats.pending.load(Ordering::Relaxed),
            ),
            (
                "avatar_poll_queue",
                "Streamers due and waiting for a free poll slot",
                stats.queue_size.load(Ordering::Relaxed),
            ),
            (
                "avatar_poll_backing_off",
                "Streamers backing off after failures",
                stats.backing_off.load(Ordering::Relaxed),
            ),
            (
                "avatar_poll_cached_streamers",
                "Streamers whose opened tokens are cached",
                stats.cached.load(Ordering::Relaxed),
            ),
            (
                "avatar_rate_limit_remaining",
                "Grants left in the shared DonationAlerts budget at the last request",
                stats.budget_remaining.load(Ordering::Relaxed) as usize,
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(
                &mut encoder,
                name,
                help,
                i64::try_from(value).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

/// The realtime bridge's figures of this process, read from [`RealtimeStats`] on each
/// scrape (zeros in a process that runs no bridge).
#[derive(Debug)]
struct RealtimeCollector(Arc<RealtimeStats>);

impl Collector for RealtimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = &self.0;
        let counters: [(&str, &str, u64); 3] = [
            (
                "avatar_realtime_reconnects",
                "Realtime sockets opened again after a drop",
                stats.reconnects.load(Ordering::Relaxed),
            ),
            (
                "avatar_realtime_pushes",
                "Donations pushed to this process's realtime sockets",
                stats.pushes.load(Ordering::Relaxed),
            ),
            (
                "avatar_realtime_stale_fences",
                "Pushed donations whose write the shard fence refused (the shard had moved on)",
                stats.stale_fences.load(Ordering::Relaxed),
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        let gauges: [(&str, &str, usize); 3] = [
            (
                "avatar_realtime_shards_held",
                "Realtime shards whose lease this process holds",
                stats.shards_held.load(Ordering::Relaxed),
            ),
            (
                "avatar_realtime_sockets_connected",
                "Realtime sockets open",
                stats.connected.load(Ordering::Relaxed),
            ),
            (
                "avatar_realtime_sockets_subscribed",
                "Realtime sockets subscribed to their streamer's donation channel",
                stats.subscribed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(
                &mut encoder,
                name,
                help,
                i64::try_from(value).unwrap_or(i64::MAX),
            )?;
        }
        let last_push_ms = stats.last_push_at.load(Ordering::Relaxed);
        encode_gauge(
            &mut encoder,
            "avatar_realtime_last_push_timestamp_seconds",
            "Unix time of the latest pushed donation (0 before the first)",
            last_push_ms as f64 / 1000.0,
        )?;
        // No sample before the first push: a latency of zero would be a figure never measured.
        if let Some(ms) = stats.push_to_event_p95_ms() {
            encode_gauge(
                &mut encoder,
                "avatar_realtime_push_to_event_p95_seconds",
                "p95 of the latest push to stream entry latencies",
                ms / 1000.0,
            )?;
        }
        Ok(())
    }
}

/// Counters read at scrape time: name, help, value.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), fmt::Error> {
    for &(name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}

/// One gauge read at scrape time.
fn encode_gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (Metrics, Arc<PollStats>, WriterBatches) {
        let (metrics, poll, _realtime, writer) = metrics_with_realtime();
        (metrics, poll, writer)
    }

    fn metrics_with_realtime() -> (Metrics, Arc<PollStats>, Arc<RealtimeStats>, WriterBatches) {
        let poll = Arc::new(PollStats::default());
        let realtime = Arc::new(RealtimeStats::default());
        let writer = WriterBatches::default();
        (
            Metrics::new(poll.clone(), realtime.clone(), &writer),
            poll,
            realtime,
            writer,
        )
    }

    #[test]
    fn the_realtime_figures_of_this_process_are_in_the_text() {
        let (metrics, _poll, realtime, _writer) = metrics_with_realtime();
        let before = metrics.prometheus_text();
        assert!(
            before
                .lines()
                .any(|l| l == "avatar_realtime_sockets_connected 0"),
            "zeros before the bridge runs:\n{before}"
        );
        assert!(
            !before.contains("avatar_realtime_push_to_event_p95_seconds"),
            "no latency before one was measured:\n{before}"
        );
        realtime.shards_held.store(4, Ordering::Relaxed);
        realtime.connected.store(12, Ordering::Relaxed);
        realtime.subscribed.store(10, Ordering::Relaxed);
        realtime.reconnects.fetch_add(2, Ordering::Relaxed);
        realtime.stale_fences.fetch_add(1, Ordering::Relaxed);
        realtime.count_push();
        realtime.count_push();
        realtime.note_push_to_event(Duration::from_millis(250));

        let text = metrics.prometheus_text();

        for line in [
            "# TYPE avatar_realtime_shards_held gauge",
            "avatar_realtime_shards_held 4",
            "avatar_realtime_sockets_connected 12",
            "avatar_realtime_sockets_subscribed 10",
            "# TYPE avatar_realtime_reconnects_total counter",
            "avatar_realtime_reconnects_total 2",
            "avatar_realtime_pushes_total 2",
            "avatar_realtime_stale_fences_total 1",
            "# TYPE avatar_realtime_push_to_event_p95_seconds gauge",
            "avatar_realtime_push_to_event_p95_seconds 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        let last_push = text
            .lines()
            .find_map(|l| l.strip_prefix("avatar_realtime_last_push_timestamp_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("the last push's time");
        let now = crate::domain::now_ms() as f64 / 1000.0;
        assert!((now - last_push).abs() < 60.0, "{last_push} against {now}");
    }

    #[test]
    fn the_text_names_every_figure_once_with_its_type() {
        let (metrics, poll, writer) = metrics();
        poll.polled.fetch_add(3, Ordering::Relaxed);
        metrics.tokens.refreshed(Provider::DonationAlerts);
        metrics.tokens.validated(ValidationOutcome::Revoked, 2);
        writer.record(4, Duration::from_millis(3));

        let text = metrics.prometheus_text();

        for line in [
            "# TYPE avatar_polls_total counter",
            "avatar_polls_total 3",
            "avatar_token_refreshes_total{provider=\"donationalerts\"} 1",
            "avatar_token_validations_total{outcome=\"revoked\"} 2",
            "# TYPE avatar_writer_batch_size histogram",
            "avatar_writer_batch_size_count 1",
            "avatar_writer_commit_seconds_count 1",
            "# TYPE avatar_poll_streamers gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn emf_records_carry_differences_and_none_when_nothing_happened() {
        let (metrics, poll, _writer) = metrics();
        let context = emf::EmfContext {
            stack: "s",
            function: "f",
            timestamp_ms: 1,
        };
        poll.errors.fetch_add(5, Ordering::Relaxed);
        let first = metrics.emf_lines(&context, false);
        poll.errors.fetch_add(2, Ordering::Relaxed);
        metrics.tokens.connection_ended(Provider::Twitch);
        let second = metrics.emf_lines(&context, false);
        let third = metrics.emf_lines(&context, false);
        let always = metrics.emf_lines(&context, true);

        let value = |lines: &[String], name: &str| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap()[name].clone()
        };
        assert_eq!(value(&first, "PollErrors"), 5);
        assert_eq!(value(&second, "PollErrors"), 2);
        assert_eq!(value(&second, "NeedReauth"), 1);
        assert!(third.is_empty(), "{third:?}");
        assert_eq!(value(&always, "PollErrors"), 0);
    }
}
