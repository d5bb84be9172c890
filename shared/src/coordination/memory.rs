//! In-process coordination for single-instance mode (no `REDIS_URL`): the same semantics as
//! the Redis adapter, held in one mutex. Time is tokio's clock, so tests can pause it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::gcra::{self, RateDecision, RateLimit};
use super::{Lock, Published, Reports, clock_drift};
use crate::domain::event::{BusEvent, STREAM_MAXLEN};
use crate::secret::random_hex;

/// Limiter decisions between two sweeps of the limiters that caught up with the clock.
const LIMITER_SWEEP_EVERY: usize = 1024;

#[derive(Clone)]
pub struct InProcessCoordinator {
    inner: Arc<Mutex<State>>,
    broadcast: broadcast::Sender<String>,
    /// Reference point turning tokio instants into the limiter's microsecond clock.
    epoch: Instant,
}

#[derive(Default)]
struct State {
    locks: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
    once: HashMap<String, (String, Instant)>,
    limiters: HashMap<String, u64>,
    /// Per prioritized limiter, when each class's waiting mark expires.
    waiting: HashMap<String, [Option<Instant>; gcra::Priority::ALL.len()]>,
    /// Limiter decisions since limiters that caught up with the clock were last swept.
    limits_since_sweep: usize,
    figures: HashMap<Reports, HashMap<String, String>>,
    /// Live subscriptions: streamer → (subscribed at, Unix ms; advertised until).
    subscriptions: HashMap<String, (i64, Instant)>,
    /// Puts since expired one-time states were last swept.
    puts_since_sweep: usize,
    stream: VecDeque<BusEvent>,
    seen_events: HashSet<String>,
}

impl Default for InProcessCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessCoordinator {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            broadcast: broadcast::channel(1024).0,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn report_figures(&self, reports: Reports, instance_id: &str, figures: &str) {
        self.state()
            .figures
            .entry(reports)
            .or_default()
            .insert(instance_id.to_owned(), figures.to_owned());
    }

    pub(crate) fn figures(&self, reports: Reports) -> Vec<(String, String)> {
        self.state()
            .figures
            .get(&reports)
            .map(|all| all.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn forget_figures(&self, reports: Reports, instance_ids: &[String]) {
        let mut state = self.state();
        if let Some(all) = state.figures.get_mut(&reports) {
            for id in instance_ids {
                all.remove(id);
            }
        }
    }

    pub(crate) fn advertise_subscriptions(&self, subscribed: &[(String, i64)], ttl: Duration) {
        let until = Instant::now() + ttl;
        let mut state = self.state();
        for (streamer, since) in subscribed {
            state
                .subscriptions
                .insert(streamer.clone(), (*since, until));
        }
    }

    pub(crate) fn withdraw_subscriptions(&self, streamers: &[String]) {
        let mut state = self.state();
        for streamer in streamers {
            state.subscriptions.remove(streamer);
        }
    }

    pub(crate) fn subscriptions(&self, streamers: &[String]) -> Vec<Option<i64>> {
        let now = Instant::now();
        let state = self.state();
        streamers
            .iter()
            .map(|s| {
                state
                    .subscriptions
                    .get(s)
                    .filter(|(_, until)| *until > now)
                    .map(|(since, _)| *since)
            })
            .collect()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain maps behind, still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn try_lock(&self, resource: &str, ttl: Duration) -> Option<Lock> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some((_, expires)) = state.locks.get(resource)
            && *expires > now
        {
            return None;
        }
        let value = random_hex(16);
        state
            .locks
            .insert(resource.to_owned(), (value.clone(), now + ttl));
        let fence = state.fences.entry(resource.to_owned()).or_insert(0);
        *fence += 1;
        Some(Lock {
            resource: resource.to_owned(),
            value,
            fence: *fence,
            valid_until: now + ttl.saturating_sub(clock_drift(ttl)),
        })
    }

    fn holds(state: &State, lock: &Lock, now: Instant) -> bool {
        matches!(state.locks.get(&lock.resource), Some((value, expires)) if *value == lock.value && *expires > now)
    }

    pub fn extend(&self, lock: &Lock, ttl: Duration) -> Option<Lock> {
        let now = Instant::now();
        let mut state = self.state();
        if !Self::holds(&state, lock, now) {
            return None;
        }
        state
            .locks
            .insert(lock.resource.clone(), (lock.value.clone(), now + ttl));
        Some(Lock {
            valid_until: now + ttl.saturating_sub(clock_drift(ttl)),
            ..lock.clone()
        })
    }

    pub fn release(&self, lock: &Lock) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let held = Self::holds(&state, lock, now);
        if held {
            state.locks.remove(&lock.resource);
        }
        held
    }

    pub(crate) fn raise_fence(&self, resource: &str, at_least: u64) {
        let mut state = self.state();
        let fence = state.fences.entry(resource.to_owned()).or_insert(0);
        *fence = (*fence).max(at_least);
    }

    pub fn put_once(&self, key: &str, value: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        // Sweep expired states now and then (not on every put: that would be O(n) each).
        state.puts_since_sweep += 1;
        if state.puts_since_sweep >= 1024 {
            state.puts_since_sweep = 0;
            state.once.retain(|_, (_, expires)| *expires > now);
        }
        if state
            .once
            .get(key)
            .is_some_and(|(_, expires)| *expires > now)
        {
            return false;
        }
        state
            .once
            .insert(key.to_owned(), (value.to_owned(), now + ttl));
        true
    }

    pub fn take_once(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let mut state = self.state();
        match state.once.remove(key) {
            Some((value, expires)) if expires > now => Some(value),
            _ => None,
        }
    }

    pub fn rate_limit(&self, key: &str, limit: &RateLimit) -> RateDecision {
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        let mut state = self.state();
        // Per-session limiters come and go. One whose arrival time the clock has passed
        // decides exactly as a missing one does: drop those now and then (as Redis expires
        // them), so the map does not grow with every session ever seen.
        state.limits_since_sweep += 1;
        if state.limits_since_sweep >= LIMITER_SWEEP_EVERY {
            state.limits_since_sweep = 0;
            state.limiters.retain(|_, tat| *tat > now);
        }
        let tat = state.limiters.get(key).copied().unwrap_or(0);
        let (decision, new_tat) = gcra::decide(limit, tat, now);
        state.limiters.insert(key.to_owned(), new_tat);
        decision
    }

    /// [`Self::rate_limit`] for a caller of `priority` (see [`gcra::Priority`]).
    pub fn rate_limit_prioritized(
        &self,
        key: &str,
        limit: &RateLimit,
        priority: gcra::Priority,
    ) -> RateDecision {
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        let at = Instant::now();
        let mut state = self.state();
        let marks = state.waiting.entry(key.to_owned()).or_default();
        let more_urgent_waiting = marks[..priority.index()]
            .iter()
            .any(|mark| mark.is_some_and(|until| until > at));
        let tat = state.limiters.get(key).copied().unwrap_or(0);
        let (decision, new_tat) = gcra::decide_prioritized(limit, tat, now, more_urgent_waiting);
        if !decision.allowed {
            let until = at + gcra::waiting_mark_ttl(decision.retry_after);
            let mark = &mut state.waiting.entry(key.to_owned()).or_default()[priority.index()];
            *mark = Some(mark.map_or(until, |old| old.max(until)));
        }
        state.limiters.insert(key.to_owned(), new_tat);
        decision
    }

    pub fn publish(&self, event: &BusEvent) -> Published {
        let mut state = self.state();
        if !state.seen_events.insert(event.event_id.clone()) {
            return Published::Duplicate;
        }
        state.stream.push_back(event.clone());
        if state.stream.len() as u64 > STREAM_MAXLEN {
            state.stream.pop_front();
        }
        // No subscriber is fine: nobody is listening in-process yet.
        let _ = self.broadcast.send(event.envelope.clone());
        Published::Appended
    }

    /// The in-process event stream, oldest first.
    pub fn stream(&self) -> Vec<BusEvent> {
        self.state().stream.iter().cloned().collect()
    }

    /// Envelopes as they are published (the in-process stand-in for the pub/sub channel).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.broadcast.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lock_excludes_others_until_it_expires() {
        let c = InProcessCoordinator::new();
        let first = c.try_lock("locks:x", Duration::from_secs(2)).unwrap();
        assert_eq!(first.value.len(), 32);
        assert!(c.try_lock("locks:x", Duration::from_secs(2)).is_none());
        tokio::time::advance(Duration::from_millis(2001)).await;
        let second = c.try_lock("locks:x", Duration::from_secs(2)).unwrap();
        assert!(second.fence > first.fence);
        assert!(
            !c.release(&first),
            "an expired holder cannot release the new lock"
        );
        assert!(c.extend(&first, Duration::from_secs(2)).is_none());
        assert!(c.release(&second));
    }

    #[tokio::test(start_paused = true)]
    async fn one_time_state_is_taken_once_and_expires() {
        let c = InProcessCoordinator::new();
        assert!(c.put_once("oauth:state:a", "v", Duration::from_secs(300)));
        assert!(!c.put_once("oauth:state:a", "w", Duration::from_secs(300)));
        assert_eq!(c.take_once("oauth:state:a").as_deref(), Some("v"));
        assert_eq!(c.take_once("oauth:state:a"), None);
        assert!(c.put_once("oauth:state:b", "v", Duration::from_secs(300)));
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(c.take_once("oauth:state:b"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_grants_on_the_paused_clock() {
        let c = InProcessCoordinator::new();
        let limit = RateLimit::per_minute(60);
        assert!(c.rate_limit("rl", &limit).allowed);
        let denied = c.rate_limit("rl", &limit);
        assert!(!denied.allowed);
        tokio::time::advance(denied.retry_after).await;
        assert!(c.rate_limit("rl", &limit).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn limiters_that_caught_up_with_the_clock_are_swept_and_still_decide_the_same() {
        let c = InProcessCoordinator::new();
        let limit = RateLimit::per_minute(1);
        assert!(c.rate_limit("ratelimit:connect:kept", &limit).allowed);
        // With the first decision and the one after the clock moved: a sweep's worth.
        for n in 0..LIMITER_SWEEP_EVERY - 2 {
            c.rate_limit(&format!("ratelimit:connect:{n}"), &limit);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.rate_limit("ratelimit:connect:kept", &limit).allowed);
        assert_eq!(
            c.state().limiters.len(),
            1,
            "only the limiter just granted is left"
        );
        assert!(!c.rate_limit("ratelimit:connect:kept", &limit).allowed);
    }

    #[test]
    fn the_bus_appends_an_event_id_once() {
        let c = InProcessCoordinator::new();
        let mut rx = c.subscribe();
        let event = BusEvent {
            event_id: "da:1:2".into(),
            streamer_id: "9".into(),
            kind: "donation".into(),
            data: "{}".into(),
            envelope: "{\"target\":\"streamer\"}".into(),
        };
        assert_eq!(c.publish(&event), Published::Appended);
        assert_eq!(c.publish(&event), Published::Duplicate);
        assert_eq!(c.stream().len(), 1);
        assert_eq!(rx.try_recv().unwrap(), event.envelope);
        assert!(rx.try_recv().is_err());
    }
}
