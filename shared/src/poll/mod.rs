//! The DonationAlerts poller: every linked streamer's new donations recorded once and
//! published once, under the app-wide request budget that every instance shares.
//!
//! - [`schedule`]: which streamer is due when (live streamers and recent donors more often,
//!   idle ones less, failing ones backing off alone, nobody starving).
//! - [`streamer`]: one poll of one streamer (lock, budget, pages, fenced record).
//! - [`cache`]: the bounded, lazily filled cache of the streamers' opened tokens.
//! - [`Poller`]: the loop that keeps up to a few polls in flight, earliest due first, and
//!   relays the outbox; the `da-poll` function runs it until shortly before its deadline,
//!   `avatar-local` for as long as it runs. When it stops, the polls in flight stop too
//!   ([`StopSignal`]): each records what it read and releases its lock within moments,
//!   whatever DonationAlerts does.

pub mod cache;
pub mod schedule;
pub mod streamer;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::PollingConfig;
use crate::coordination::{Budget, EventBus, Locks, Presence, Reports, Subscriptions};
use crate::domain::{TwitchUserId, now_ms};
use crate::jobs::ScheduledJob;
use crate::metrics::PollStats;
use crate::outbox;
use crate::providers::donationalerts::DonationAlertsClient;
use crate::providers::twitch::TwitchClient;
use crate::store::Store;
use crate::telemetry::error_chain;
use crate::tokens::TokenKeeper;
use schedule::{PollOutcome, Schedule, SchedulePolicy};

/// How often the list of linked streamers is read again from the store.
const TARGETS_REFRESH: Duration = Duration::from_secs(10);
/// How often the poller reads which streamers have a live realtime subscription: a streamer
/// (re)subscribed is reconciled within this much, one whose subscription lapsed is back on
/// routine polling within this much.
const SUBSCRIPTIONS_REFRESH: Duration = Duration::from_secs(2);
/// How often who is live on Twitch is asked again (Helix `GET /streams`).
const LIVE_REFRESH: Duration = Duration::from_secs(60);
/// The loop looks at the schedule at least this often.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);
/// Share of the budget kept for follow-up pages and token refreshes.
const BUDGET_HEADROOM: f64 = 0.1;
/// Most polls in flight at once, whatever the budget.
const MAX_CONCURRENCY: usize = 50;

/// Tells polls in flight to stop: the run's stop time (a Lambda invocation's deadline) has
/// come, or the process is shutting down. A poll looks at it between pages and while it
/// waits for the budget or for a page; a stopped poll records what it read and releases its
/// lock. The default never stops.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    at: Option<Instant>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl StopSignal {
    /// Whether polls must stop now.
    pub(crate) fn is_set(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
            || self.shutdown.as_ref().is_some_and(|flag| *flag.borrow())
    }

    /// Resolves once polls must stop.
    pub async fn wait(&self) {
        let deadline = async {
            match self.at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let shutdown = async {
            let Some(flag) = &self.shutdown else {
                return std::future::pending().await;
            };
            // Its sender gone, the run is over: nobody is left to say stop.
            if flag.clone().wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = deadline => {}
            _ = shutdown => {}
        }
    }
}

/// The polling loop of one process.
pub struct Poller {
    parts: Arc<PollParts>,
    schedule: Mutex<Schedule<TwitchUserId>>,
    cache: Arc<cache::StreamerCache>,
    /// Mean poll duration (ms), for sizing concurrency.
    mean_poll_ms: Mutex<f64>,
}

/// What the poller works with, built once per process (by `App`).
pub struct PollParts {
    pub store: Store,
    /// The streamers' poll locks.
    pub locks: Locks,
    /// The app-wide DonationAlerts budget.
    pub budget: Budget,
    /// Where the outbox relay publishes.
    pub bus: EventBus,
    /// Where this process's figures are reported.
    pub presence: Presence,
    /// Which streamers the realtime bridge holds a live subscription for.
    pub subscriptions: Subscriptions,
    pub tokens: TokenKeeper,
    pub client: Arc<DonationAlertsClient>,
    /// Asks Helix who is live (`None` without Twitch credentials: nobody counts as live).
    pub twitch: Option<Arc<TwitchClient>>,
    pub polling: PollingConfig,
    /// Longest a call to DonationAlerts may take (`PROVIDER_TIMEOUT_MS`).
    pub provider_timeout: Duration,
    /// Names this process's figures in Redis (`/health` sums them).
    pub instance_id: Arc<str>,
    /// Counted into by every poll (also read by `/health` and the metrics).
    pub stats: Arc<PollStats>,
}

/// The `da-poll` function's job could not be built.
#[derive(Debug, thiserror::Error)]
#[error("DA_CLIENT_ID and DA_CLIENT_SECRET must be set for the DonationAlerts poll")]
pub struct PollerNotConfigured;

impl ScheduledJob for Poller {
    async fn run(&self, stop_at: Instant) -> serde_json::Value {
        let before = self.stats().snapshot();
        self.run_until(stop_at).await;
        let after = self.stats().snapshot();
        serde_json::json!({
            "polled": after.polled - before.polled,
            "donationsFound": after.donations_found - before.donations_found,
            "skippedLocked": after.skipped_locked - before.skipped_locked,
            "errors": after.errors - before.errors,
            "streamers": self.stats().streamer_count.load(Ordering::Relaxed),
        })
    }
}

impl Poller {
    /// The poller over `parts`; it counts into `parts.stats`.
    pub fn new(parts: PollParts) -> Self {
        let polling = &parts.polling;
        let policy = SchedulePolicy {
            reconcile_interval: polling.reconcile_interval,
            ..SchedulePolicy::for_budget(
                polling.rate_limit_per_minute,
                BUDGET_HEADROOM,
                polling.interval,
            )
        };
        Self {
            schedule: Mutex::new(Schedule::new(policy)),
            parts: Arc::new(parts),
            cache: Arc::default(),
            mean_poll_ms: Mutex::new(200.0),
        }
    }

    pub fn stats(&self) -> &Arc<PollStats> {
        &self.parts.stats
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule<TwitchUserId>> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls until `stop_at`, then waits for the polls in flight (each releases its lock)
    /// and relays what they recorded. No poll starts after `stop_at` minus the time one
    /// usually takes, and one still running at `stop_at` stops there (recording what it
    /// read), so a Lambda invocation ends before its deadline with no lock held.
    #[tracing::instrument(name = "poll.run", skip_all)]
    pub async fn run_until(&self, stop_at: Instant) {
        self.run(Some(stop_at), std::future::pending()).await;
    }

    /// Polls until `shutdown` resolves (or `stop_at`, when given), then finishes the way
    /// [`Self::run_until`] does. The polls in flight stop then too (see [`StopSignal`]).
    pub async fn run(
        &self,
        stop_at: Option<Instant>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let (stop_polls, stopping) = watch::channel(false);
        let stop = StopSignal {
            at: stop_at,
            shutdown: Some(stopping),
        };
        let polling = self.poll_until(stop_at, stop);
        tokio::pin!(polling);
        tokio::select! {
            _ = &mut polling => return,
            _ = shutdown => {
                let _ = stop_polls.send(true);
            }
        }
        polling.await;
    }

    /// The loop of [`Self::run`]: dispatches polls until `stop` says stop (no poll starts
    /// later than one could take before `stop_at`), then waits for those in flight.
    async fn poll_until(&self, stop_at: Option<Instant>, stop: StopSignal) {
        let polling = &self.parts.polling;
        let one_poll = self.parts.provider_timeout + polling.lock_ttl;
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut last_start = stop_at
            .map(|at| at.checked_sub(one_poll).unwrap_or_else(Instant::now))
            .unwrap_or(far);
        let mut in_flight: JoinSet<(TwitchUserId, PollOutcome, Duration)> = JoinSet::new();
        let mut polling_now: HashSet<TwitchUserId> = HashSet::new();
        let mut targets_loaded: Option<Instant> = None;
        let mut live_checked: Option<Instant> = None;
        let mut subscriptions_read: Option<Instant> = None;
        let mut relay_due = Instant::now();
        let mut report_due = Instant::now();
        loop {
            let round = Instant::now();
            if stop.is_set() {
                last_start = last_start.min(round);
            }
            if targets_loaded.is_none_or(|at| round.duration_since(at) >= TARGETS_REFRESH) {
                self.load_targets(round).await;
                targets_loaded = Some(round);
            }
            if subscriptions_read.is_none_or(|at| round.duration_since(at) >= SUBSCRIPTIONS_REFRESH)
            {
                self.read_subscriptions(round).await;
                subscriptions_read = Some(round);
            }
            if round < last_start
                && live_checked.is_none_or(|at| round.duration_since(at) >= LIVE_REFRESH)
            {
                // Twitch answering slowly must not hold up a stop.
                tokio::select! {
                    _ = self.check_live(round) => {}
                    _ = stop.wait() => {}
                }
                live_checked = Some(round);
            }
            if round < last_start {
                self.dispatch(&mut in_flight, &mut polling_now, round, &stop);
            }
            if round >= relay_due {
                self.relay().await;
                relay_due = round + MAX_IDLE_WAIT;
            }
            self.stats()
                .pending
                .store(in_flight.len(), Ordering::Relaxed);
            self.stats()
                .cached
                .store(self.cache.len(), Ordering::Relaxed);
            self.stats().last_run_at.store(now_ms(), Ordering::Relaxed);
            self.stats()
                .last_run_duration_ms
                .store(round.elapsed().as_millis() as u64, Ordering::Relaxed);
            if round >= report_due {
                self.report().await;
                report_due = round + MAX_IDLE_WAIT;
            }
            if round >= last_start && in_flight.is_empty() {
                break;
            }
            let wake = self
                .schedule()
                .next_due()
                .unwrap_or(round + MAX_IDLE_WAIT)
                .clamp(round, round + MAX_IDLE_WAIT)
                .min(last_start.max(round));
            let stopping = round >= last_start;
            tokio::select! {
                Some(done) = in_flight.join_next() => {
                    if let Ok((streamer, outcome, took)) = done {
                        polling_now.remove(&streamer);
                        self.finish(&streamer, outcome, took);
                    }
                }
                _ = tokio::time::sleep_until(wake.max(Instant::now() + Duration::from_millis(1))) => {}
                _ = stop.wait(), if !stopping => {}
            }
        }
        self.relay().await;
        self.stats().pending.store(0, Ordering::Relaxed);
        self.report().await;
    }

    /// Polls one streamer now, outside the schedule and with no minimum gap, as a scheduled
    /// poll does (lock, pages, record); for tests and tools.
    pub async fn poll_now(&self, streamer: &TwitchUserId) -> PollOutcome {
        let cx = self.poll_context(Duration::ZERO, StopSignal::default());
        streamer::poll_streamer(&cx, streamer).await
    }

    fn poll_context(&self, min_gap: Duration, stop: StopSignal) -> streamer::PollContext {
        streamer::PollContext {
            parts: self.parts.clone(),
            cache: self.cache.clone(),
            min_gap,
            stop,
            subscribed_since: None,
        }
    }

    /// Stores this poller's figures where `/health` on any instance finds them.
    async fn report(&self) {
        let figures = self.stats().figures();
        let Ok(json) = serde_json::to_string(&figures) else {
            return;
        };
        if let Err(e) = self
            .parts
            .presence
            .report_figures(Reports::Poll, &self.parts.instance_id, &json)
            .await
        {
            tracing::debug!(error = %error_chain(&e), "poller figures not reported");
        }
    }

    async fn load_targets(&self, now: Instant) {
        match self.parts.store.poll_targets().await {
            Ok(targets) => {
                let wall_now = now_ms();
                let mut schedule = self.schedule();
                let ids: Vec<(TwitchUserId, Option<i64>)> = targets
                    .into_iter()
                    .map(|t| (t.streamer_twitch_id, t.last_donation_at))
                    .collect();
                schedule.sync(ids.iter().map(|(id, _)| id.clone()), now);
                for (id, last) in &ids {
                    if let Some(last) = last {
                        let ago = Duration::from_millis((wall_now - last).max(0) as u64);
                        if let Some(at) = now.checked_sub(ago) {
                            schedule.note_donation(id, at);
                        }
                    }
                }
                let intervals = schedule.refresh_intervals(now);
                self.stats()
                    .streamer_count
                    .store(schedule.len(), Ordering::Relaxed);
                self.stats()
                    .interval_ms
                    .store(intervals.idle.as_millis() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats().count_error();
                tracing::warn!(error = %error_chain(&e), "the streamers to poll could not be read");
            }
        }
    }

    /// Reads which scheduled streamers have a live realtime subscription: they are polled
    /// only to reconcile. Unread (Redis down), the last answer stands until the claims would
    /// have lapsed anyway.
    async fn read_subscriptions(&self, now: Instant) {
        let ids: Vec<TwitchUserId> = self.schedule().streamers().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let keys: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        match self.parts.subscriptions.live_since(&keys).await {
            Ok(since) => {
                let subscribed = ids
                    .into_iter()
                    .zip(since)
                    .filter_map(|(id, since)| Some((id, since?)))
                    .collect();
                let mut schedule = self.schedule();
                schedule.set_subscribed(subscribed, now);
                schedule.refresh_intervals(now);
                self.stats()
                    .subscribed
                    .store(schedule.subscribed_count(), Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "live subscriptions unread; the last answer stands");
            }
        }
    }

    /// Asks Twitch who of the scheduled streamers is live: they are polled most often.
    async fn check_live(&self, now: Instant) {
        let Some(twitch) = self.parts.twitch.clone() else {
            return;
        };
        let ids: Vec<String> = self
            .schedule()
            .streamers()
            .map(|id| id.as_str().to_owned())
            .collect();
        if ids.is_empty() {
            return;
        }
        match twitch.live_user_ids(&ids).await {
            Ok(live) => {
                let live: Vec<TwitchUserId> = live
                    .iter()
                    .filter_map(|id| TwitchUserId::parse(id))
                    .collect();
                self.stats().live.store(live.len(), Ordering::Relaxed);
                let mut schedule = self.schedule();
                schedule.set_live(live, now);
                schedule.refresh_intervals(now);
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "who is live on Twitch is unknown; the schedule keeps the last answer");
            }
        }
    }

    /// Polls in flight at most: enough to spend the budget given how long a poll takes
    /// (Little's law, doubled), at least `DA_POLL_CONCURRENCY`, at most 50.
    fn concurrency(&self) -> usize {
        let polls_per_second = self.schedule().policy().polls_per_second;
        let mean_seconds = *self.mean_poll_ms.lock().unwrap_or_else(|p| p.into_inner()) / 1000.0;
        let needed = (polls_per_second * mean_seconds * 2.0).ceil() as usize;
        needed
            .max(self.parts.polling.concurrency)
            .clamp(1, MAX_CONCURRENCY)
    }

    fn dispatch(
        &self,
        in_flight: &mut JoinSet<(TwitchUserId, PollOutcome, Duration)>,
        polling_now: &mut HashSet<TwitchUserId>,
        now: Instant,
        stop: &StopSignal,
    ) {
        let concurrency = self.concurrency();
        self.stats()
            .concurrency
            .store(concurrency, Ordering::Relaxed);
        let free = concurrency.saturating_sub(in_flight.len());
        // Reconciliation polls may hold half the slots at most: while the realtime share is
        // taken by resubscribes they wait long for a grant, and routine polls must go on.
        let max_reconciling = (concurrency / 2).max(1);
        let starting = {
            let schedule = self.schedule();
            self.stats()
                .backing_off
                .store(schedule.backing_off(now), Ordering::Relaxed);
            let reconciling = polling_now
                .iter()
                .filter(|id| schedule.subscribed_since(id).is_some())
                .count();
            let waiting = schedule
                .due(now, free + polling_now.len())
                .iter()
                .filter(|id| !polling_now.contains(*id))
                .count();
            self.stats()
                .queue_size
                .store(waiting.saturating_sub(free), Ordering::Relaxed);
            schedule.pick_due(
                now,
                free,
                max_reconciling.saturating_sub(reconciling),
                polling_now,
            )
        };
        let min_gap = self.parts.polling.interval / 2;
        for streamer in starting {
            polling_now.insert(streamer.clone());
            let mut cx = self.poll_context(min_gap, stop.clone());
            cx.subscribed_since = self.schedule().subscribed_since(&streamer);
            in_flight.spawn(
                async move {
                    let started = Instant::now();
                    let outcome = streamer::poll_streamer(&cx, &streamer).await;
                    (streamer, outcome, started.elapsed())
                }
                // Its log lines keep the run's span fields (request id, function).
                .in_current_span(),
            );
        }
    }

    fn finish(&self, streamer: &TwitchUserId, outcome: PollOutcome, took: Duration) {
        if matches!(outcome, PollOutcome::Polled { .. }) {
            let mut mean = self.mean_poll_ms.lock().unwrap_or_else(|p| p.into_inner());
            *mean = *mean * 0.9 + took.as_secs_f64() * 1000.0 * 0.1;
        }
        self.schedule().record(streamer, outcome, Instant::now());
    }

    async fn relay(&self) {
        if let Err(e) = outbox::relay_pending(&self.parts.store, &self.parts.bus).await {
            tracing::warn!(error = %error_chain(&e), "events stay in the outbox until the bus takes them");
        }
    }
}
