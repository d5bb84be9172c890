//! Coordination between instances: locks with fencing tokens, one-time state, the app-wide
//! rate limiter, the event bus and instance heartbeats.
//!
//! [`Coordinator`] is the one interface; it is backed by Redis when `REDIS_URL` is set
//! ([`redis::RedisCoordinator`], shared by every instance and by the Node app during a
//! migration) and in-process otherwise ([`memory::InProcessCoordinator`], single-instance
//! mode). Both behave the same way as far as a caller can tell; the tests run both.
//!
//! Locks are node-redlock compatible on the wire: key = the resource name as given, value =
//! 16 random bytes as 32 lowercase hex characters, set with `NX PX ttl`; release and extend
//! compare the value first. A lock is an efficiency device: a holder paused past its TTL may
//! still act, so work it protects also carries the lock's fencing token (`fence:{resource}`,
//! incremented on every acquisition) and the store refuses a token older than the last one
//! it accepted.

pub mod gcra;
pub mod memory;
pub mod redis;

use std::time::Duration;

use tokio::time::Instant;

pub use gcra::{Priority, RateDecision, RateLimit};

use crate::domain::event::BusEvent;

/// Sorted set of instance heartbeats (`/health` counts live instances from it).
pub(crate) const INSTANCES_KEY: &str = "avatar:instances";
/// An instance counts as live for this long after its last heartbeat.
pub(crate) const HEARTBEAT_WINDOW: Duration = Duration::from_secs(60);
/// How long the bus remembers an eventId, so a re-publish (a retry, a restart, a second
/// poller) is not appended twice.
pub(crate) const EVENT_DEDUPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hash of every poller's latest figures (field: instance id, value: JSON with a
/// `reportedAt` in Unix ms), summed by `/health` across instances.
pub(crate) const POLL_REPORTS_KEY: &str = "avatar:poll:reports";
/// Hash of each realtime bridge's latest figures (JSON), for `/health`.
pub(crate) const REALTIME_REPORTS_KEY: &str = "avatar:realtime:reports";

/// Where a streamer's live realtime subscription is advertised.
pub(crate) fn subscription_key(streamer: &str) -> String {
    format!("realtime:subscribed:{streamer}")
}

/// Key of the fencing counter for a lock resource.
pub(crate) fn fence_key(resource: &str) -> String {
    format!("fence:{resource}")
}

/// The mark a refused caller of `priority` leaves on the limiter `key` (see
/// [`gcra::Priority`]).
pub(crate) fn waiting_mark_key(key: &str, priority: Priority) -> String {
    format!("{key}:waiting:{}", priority.index())
}

/// Key of the dedupe marker for an eventId.
pub(crate) fn event_dedupe_key(event_id: &str) -> String {
    format!("avatar:events:dedupe:{event_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("redis at {server} did not answer")]
    Redis {
        server: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis at {server} timed out after {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("redis at {server} gave an unexpected answer: {detail}")]
    UnexpectedReply { server: String, detail: String },
    #[error("could not reach a quorum of lock servers ({reached} of {needed} needed answered)")]
    NoQuorum { reached: usize, needed: usize },
}

/// A held lock. Dropping it does not release it: call [`Locks::release`] (a lock that is
/// not released simply expires after its TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The key, exactly as node-redlock names it.
    pub resource: String,
    /// 32 lowercase hex characters, unique to this acquisition.
    pub value: String,
    /// Strictly increasing across successive holders of the same resource.
    pub fence: u64,
    /// Conservative end of validity: TTL minus the time acquisition took minus clock drift.
    pub valid_until: Instant,
}

impl Lock {
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }
}

/// node-redlock's drift allowance: 1 % of the TTL plus 2 ms.
pub(crate) fn clock_drift(ttl: Duration) -> Duration {
    Duration::from_millis((ttl.as_millis() as f64 * 0.01).round() as u64 + 2)
}

/// Whether the bus appended an event or had already seen its eventId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Appended,
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Distributed,
    SingleInstance,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Distributed => "distributed",
            Self::SingleInstance => "single-instance",
        }
    }
}

/// The coordination interface (see the module docs).
#[derive(Clone)]
pub enum Coordinator {
    Redis(redis::RedisCoordinator),
    InProcess(memory::InProcessCoordinator),
}

impl Coordinator {
    pub fn mode(&self) -> Mode {
        match self {
            Self::Redis(_) => Mode::Distributed,
            Self::InProcess(_) => Mode::SingleInstance,
        }
    }

    /// Locks with fencing tokens (node-redlock format).
    pub fn locks(&self) -> Locks {
        Locks(self.clone())
    }

    /// One-time state (OAuth states): put once, taken once.
    pub fn one_time_states(&self) -> OneTimeStates {
        OneTimeStates(self.clone())
    }

    /// The shared rate limiters (GCRA): the DonationAlerts budget, the connect throttle.
    pub fn budget(&self) -> Budget {
        Budget(self.clone())
    }

    /// The event bus: `avatar:events` and `overlay:broadcast:v1`.
    pub fn bus(&self) -> EventBus {
        EventBus(self.clone())
    }

    /// Which streamers have a live realtime subscription.
    pub fn subscriptions(&self) -> Subscriptions {
        Subscriptions(self.clone())
    }

    /// Heartbeats and the pollers' and bridges' figures, for `/health`.
    pub fn presence(&self) -> Presence {
        Presence(self.clone())
    }

    /// Round trip to the coordination backend (PING); zero in-process.
    pub async fn ping(&self) -> Result<Duration, CoordinationError> {
        match self {
            Self::Redis(c) => c.ping().await,
            Self::InProcess(_) => Ok(Duration::ZERO),
        }
    }
}

/// Locks with fencing tokens, in node-redlock's wire format.
#[derive(Clone)]
pub struct Locks(Coordinator);

impl Locks {
    /// One attempt to take `resource`; `None` when someone else holds it.
    pub async fn try_lock(
        &self,
        resource: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.try_lock(resource, ttl).await,
            Coordinator::InProcess(c) => Ok(c.try_lock(resource, ttl)),
        }
    }

    /// Retries [`Self::try_lock`] with jittered pauses until it succeeds or `wait` has passed.
    pub async fn lock_within(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lock>, CoordinationError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(lock) = self.try_lock(resource, ttl).await? {
                return Ok(Some(lock));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // 2–12 ms: short enough for a writer lease handed over between batches, jittered
            // so that waiting instances do not retry in lockstep.
            let pause = Duration::from_micros(2_000 + u64::from(random_u16()) % 10_000);
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
    }

    /// Sets the lock's TTL to `ttl` from now if it is still ours; `Some` with the new validity.
    pub async fn extend(
        &self,
        lock: &Lock,
        ttl: Duration,
    ) -> Result<Option<Lock>, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.extend(lock, ttl).await,
            Coordinator::InProcess(c) => Ok(c.extend(lock, ttl)),
        }
    }

    /// Deletes the lock if it is still ours; `false` when it had expired or was taken over.
    pub async fn release(&self, lock: &Lock) -> Result<bool, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.release(lock).await,
            Coordinator::InProcess(c) => Ok(c.release(lock)),
        }
    }

    /// Raises the fencing counter of `resource` to at least `at_least` (after the store has
    /// seen a higher token than the counter, e.g. when Redis lost its data).
    pub(crate) async fn raise_fence(
        &self,
        resource: &str,
        at_least: u64,
    ) -> Result<(), CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.raise_fence(resource, at_least).await,
            Coordinator::InProcess(c) => {
                c.raise_fence(resource, at_least);
                Ok(())
            }
        }
    }
}

/// One-time state: stored once, taken once (OAuth states).
#[derive(Clone)]
pub struct OneTimeStates(Coordinator);

impl OneTimeStates {
    /// Stores one-time state under `key` for `ttl`; `false` if the key already exists.
    pub async fn put_once(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.put_once(key, value, ttl).await,
            Coordinator::InProcess(c) => Ok(c.put_once(key, value, ttl)),
        }
    }

    /// Takes one-time state atomically: the first caller gets the value, every later one `None`.
    pub async fn take_once(&self, key: &str) -> Result<Option<String>, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.take_once(key).await,
            Coordinator::InProcess(c) => Ok(c.take_once(key)),
        }
    }
}

/// The shared rate limiters (GCRA), one per key, across every instance.
#[derive(Clone)]
pub struct Budget(Coordinator);

impl Budget {
    /// Asks the shared limiter `key` for one request under `limit`.
    pub async fn rate_limit(
        &self,
        key: &str,
        limit: &RateLimit,
    ) -> Result<RateDecision, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.rate_limit(key, limit).await,
            Coordinator::InProcess(c) => Ok(c.rate_limit(key, limit)),
        }
    }

    /// Asks the shared limiter `key` for one request under `limit` for a caller of
    /// `priority`: refused while a more urgent caller waits for the same budget.
    pub async fn rate_limit_prioritized(
        &self,
        key: &str,
        limit: &RateLimit,
        priority: Priority,
    ) -> Result<RateDecision, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.rate_limit_prioritized(key, limit, priority).await,
            Coordinator::InProcess(c) => Ok(c.rate_limit_prioritized(key, limit, priority)),
        }
    }

    /// Asks the limiter `key` for a caller of `priority` until it grants a request or its
    /// next grant would come later than `wait` from now; returns the last decision
    /// (`allowed` says which it was).
    pub(crate) async fn rate_limit_within(
        &self,
        key: &str,
        limit: &RateLimit,
        priority: Priority,
        wait: Duration,
    ) -> Result<RateDecision, CoordinationError> {
        let deadline = Instant::now() + wait;
        loop {
            let decision = self.rate_limit_prioritized(key, limit, priority).await?;
            if decision.allowed || Instant::now() + decision.retry_after > deadline {
                return Ok(decision);
            }
            tokio::time::sleep(decision.retry_after).await;
        }
    }
}

/// The event bus: every event appended to `avatar:events` once and published on
/// `overlay:broadcast:v1`.
#[derive(Clone)]
pub struct EventBus(Coordinator);

impl EventBus {
    /// Appends the event to the stream and publishes its envelope, unless its eventId has been
    /// seen before (then nothing happens): safe to call again after any failure.
    pub async fn publish(&self, event: &BusEvent) -> Result<Published, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.publish(event).await,
            Coordinator::InProcess(c) => Ok(c.publish(event)),
        }
    }
}

/// Which instances are alive, and what each poller last reported (for `/health`).
#[derive(Clone)]
pub struct Presence(Coordinator);

impl Presence {
    /// Records that `instance_id` is alive; returns the number of live instances.
    pub async fn heartbeat(&self, instance_id: &str) -> Result<u64, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.heartbeat(instance_id).await,
            Coordinator::InProcess(_) => Ok(1),
        }
    }

    /// Stores this instance's latest figures of one kind (JSON) for `/health` on any
    /// instance.
    pub(crate) async fn report_figures(
        &self,
        reports: Reports,
        instance_id: &str,
        figures: &str,
    ) -> Result<(), CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.report_figures(reports, instance_id, figures).await,
            Coordinator::InProcess(c) => {
                c.report_figures(reports, instance_id, figures);
                Ok(())
            }
        }
    }

    /// Every instance's latest figures of one kind, as stored (stale ones included: the
    /// caller decides what is too old, and may [`Self::forget_figures`] it).
    pub(crate) async fn figures(
        &self,
        reports: Reports,
    ) -> Result<Vec<(String, String)>, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.figures(reports).await,
            Coordinator::InProcess(c) => Ok(c.figures(reports)),
        }
    }

    /// Stores a realtime bridge's latest figures (`Reports::Realtime`, the bridge's
    /// `RealtimeFigures`) for `/health` on any instance: what the bridge reports every few
    /// seconds.
    pub async fn report_realtime(
        &self,
        instance_id: &str,
        figures: &impl serde::Serialize,
    ) -> Result<(), CoordinationError> {
        // Plain numbers and strings: serializing cannot fail.
        let json = serde_json::to_string(figures).unwrap_or_default();
        self.report_figures(Reports::Realtime, instance_id, &json)
            .await
    }

    /// Drops the figures of instances that stopped reporting.
    pub(crate) async fn forget_figures(
        &self,
        reports: Reports,
        instance_ids: &[String],
    ) -> Result<(), CoordinationError> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        match &self.0 {
            Coordinator::Redis(c) => c.forget_figures(reports, instance_ids).await,
            Coordinator::InProcess(c) => {
                c.forget_figures(reports, instance_ids);
                Ok(())
            }
        }
    }
}

/// The figures (stored JSON, per instance) reported within `window` before `now_ms`, read;
/// and the instances whose figures are older or unreadable (to be forgotten).
pub(crate) fn fresh_figures<F: serde::de::DeserializeOwned>(
    stored: &[(String, String)],
    now_ms: i64,
    window: Duration,
    reported_at: impl Fn(&F) -> i64,
) -> (Vec<F>, Vec<String>) {
    let mut fresh = Vec::new();
    let mut stale = Vec::new();
    for (instance, json) in stored {
        match serde_json::from_str::<F>(json) {
            Ok(figures) if now_ms - reported_at(&figures) <= window.as_millis() as i64 => {
                fresh.push(figures);
            }
            _ => stale.push(instance.clone()),
        }
    }
    (fresh, stale)
}

/// Which figures an instance reports for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reports {
    /// A poller's (`avatar:poll:reports`).
    Poll,
    /// A realtime bridge's (`avatar:realtime:reports`).
    Realtime,
}

impl Reports {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Poll => POLL_REPORTS_KEY,
            Self::Realtime => REALTIME_REPORTS_KEY,
        }
    }
}

/// Which streamers have a live realtime subscription, advertised by the bridge holding them
/// with an expiry, so a dead bridge's claims lapse and the poller takes those streamers back.
#[derive(Clone)]
pub struct Subscriptions(Coordinator);

impl Subscriptions {
    /// Advertises (again) each streamer's live subscription, with when it began (Unix ms),
    /// for `ttl`.
    pub async fn advertise(
        &self,
        subscribed: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.advertise_subscriptions(subscribed, ttl).await,
            Coordinator::InProcess(c) => {
                c.advertise_subscriptions(subscribed, ttl);
                Ok(())
            }
        }
    }

    /// Ends the advertisement of these streamers' subscriptions (their sockets closed).
    pub async fn withdraw(&self, streamers: &[String]) -> Result<(), CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.withdraw_subscriptions(streamers).await,
            Coordinator::InProcess(c) => {
                c.withdraw_subscriptions(streamers);
                Ok(())
            }
        }
    }

    /// For each streamer, since when (Unix ms) a live subscription is advertised, if one is.
    pub async fn live_since(
        &self,
        streamers: &[String],
    ) -> Result<Vec<Option<i64>>, CoordinationError> {
        match &self.0 {
            Coordinator::Redis(c) => c.subscriptions(streamers).await,
            Coordinator::InProcess(c) => Ok(c.subscriptions(streamers)),
        }
    }
}

fn random_u16() -> u16 {
    let bytes = crate::secret::random_bytes(2);
    u16::from_le_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_matches_node_redlock() {
        assert_eq!(
            clock_drift(Duration::from_millis(4500)),
            Duration::from_millis(47)
        );
        assert_eq!(
            clock_drift(Duration::from_millis(100)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn key_names_follow_the_contract() {
        assert_eq!(
            fence_key("locks:donationalerts:42"),
            "fence:locks:donationalerts:42"
        );
        assert_eq!(event_dedupe_key("da:1:2"), "avatar:events:dedupe:da:1:2");
    }
}
