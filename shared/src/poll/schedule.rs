//! Which streamer to poll next, under an app-wide request budget.
//!
//! A plain round robin visits each of N streamers every N/B seconds (B requests a second):
//! with 50 streamers and DonationAlerts' 1 request a second, everyone waits about 50 s for a
//! donation to show. Most of those streamers are offline and nobody is watching their
//! overlay, so the budget is shared out by weight instead:
//!
//! - a streamer live on Twitch weighs [`LIVE_WEIGHT`], one who received a donation within
//!   [`SchedulePolicy::recent_window`] weighs [`RECENT_WEIGHT`], everyone else 1;
//! - with the weights summing to W and a budget of B polls a second, a streamer of weight w
//!   is due every W / (B·w) seconds: the budget is spent exactly, and the live streamers get
//!   the lion's share;
//! - no interval is shorter than the base interval (`DA_POLL_INTERVAL_MS`) nor longer than
//!   [`SchedulePolicy::max_interval`]; beyond what the budget allows, the limiter makes
//!   everyone wait and the earliest due goes first, so nobody starves;
//! - a streamer with a live realtime subscription is polled only to reconcile: right after
//!   each (re)subscribe, then every `DA_RECONCILE_INTERVAL_MS`, or less often when that would
//!   take more than [`RECONCILE_SHARE`] of the budget; the others share the rest;
//! - a streamer whose polls fail backs off (1 s doubling to 60 s, or longer when the
//!   provider says Retry-After), without slowing anyone else.
//!
//! Everything here is pure arithmetic over a clock passed in, so it is unit-tested with
//! made-up instants and benchmarked on a virtual clock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// Weight of a streamer who is live on Twitch now.
pub const LIVE_WEIGHT: f64 = 10.0;
/// Weight of a streamer who received a donation recently (and is not live).
pub const RECENT_WEIGHT: f64 = 2.0;
/// Weight of everyone else.
pub(crate) const IDLE_WEIGHT: f64 = 1.0;

/// First backoff after a failed poll; it doubles with each further failure.
pub(crate) const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest backoff the doubling reaches.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest Retry-After honoured (a provider asking for more is waited on for this long).
pub(crate) const RETRY_AFTER_MAX: Duration = Duration::from_secs(15 * 60);

/// How a streamer's polling is currently weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    Live,
    RecentDonations,
    Idle,
}

impl Activity {
    pub fn weight(self) -> f64 {
        match self {
            Self::Live => LIVE_WEIGHT,
            Self::RecentDonations => RECENT_WEIGHT,
            Self::Idle => IDLE_WEIGHT,
        }
    }
}

/// The knobs of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulePolicy {
    /// Polls a second the whole application may make (the budget, less headroom for
    /// follow-up pages and token refreshes).
    pub polls_per_second: f64,
    /// No streamer is polled more often than this (`DA_POLL_INTERVAL_MS`).
    pub min_interval: Duration,
    /// No streamer waits longer than this between polls while the budget allows.
    pub max_interval: Duration,
    /// A donation this recent makes a streamer [`Activity::RecentDonations`].
    pub recent_window: Duration,
    /// How often a streamer with a live realtime subscription is polled to reconcile
    /// (`DA_RECONCILE_INTERVAL_MS`).
    pub reconcile_interval: Duration,
}

impl SchedulePolicy {
    /// The policy for a budget of `per_minute` requests, keeping `headroom` (0..1) of it for
    /// follow-up pages and refreshes.
    pub fn for_budget(per_minute: u32, headroom: f64, min_interval: Duration) -> Self {
        Self {
            polls_per_second: f64::from(per_minute) / 60.0 * (1.0 - headroom.clamp(0.0, 0.9)),
            min_interval,
            max_interval: Duration::from_secs(10 * 60),
            recent_window: Duration::from_secs(10 * 60),
            reconcile_interval: Duration::from_secs(10 * 60),
        }
    }
}

/// The most of the budget periodic reconciliation of subscribed streamers takes: beyond
/// `DA_RECONCILE_INTERVAL_MS × this share of the budget` subscribed streamers, each is
/// reconciled less often, so that the streamers on routine polling keep the rest.
pub const RECONCILE_SHARE: f64 = 0.25;

/// Poll intervals per activity for the streamers scheduled now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intervals {
    pub live: Duration,
    pub recent: Duration,
    pub idle: Duration,
    /// Between two reconciliation polls of a subscribed streamer.
    pub reconcile: Duration,
}

impl Intervals {
    /// Shares the budget out by weight among the streamers on routine polling (see the
    /// module docs), after what reconciling `subscribed` streamers takes.
    pub(crate) fn for_counts(
        policy: &SchedulePolicy,
        live: usize,
        recent: usize,
        idle: usize,
        subscribed: usize,
    ) -> Self {
        let budget = policy.polls_per_second.max(f64::MIN_POSITIVE);
        let wanted_reconcile_rate =
            subscribed as f64 / policy.reconcile_interval.as_secs_f64().max(1.0);
        let reconcile_rate = wanted_reconcile_rate.min(budget * RECONCILE_SHARE);
        let reconcile = if subscribed == 0 {
            policy.reconcile_interval
        } else {
            Duration::try_from_secs_f64(subscribed as f64 / reconcile_rate)
                .unwrap_or(Duration::MAX)
                .max(policy.reconcile_interval)
        };
        let routine_budget = (budget - reconcile_rate).max(f64::MIN_POSITIVE);
        let total_weight =
            live as f64 * LIVE_WEIGHT + recent as f64 * RECENT_WEIGHT + idle as f64 * IDLE_WEIGHT;
        let interval = |weight: f64| {
            let seconds = total_weight / (routine_budget * weight);
            let wanted = Duration::try_from_secs_f64(seconds).unwrap_or(policy.max_interval);
            wanted.clamp(
                policy.min_interval,
                policy.max_interval.max(policy.min_interval),
            )
        };
        Self {
            live: interval(LIVE_WEIGHT),
            recent: interval(RECENT_WEIGHT),
            idle: interval(IDLE_WEIGHT),
            reconcile,
        }
    }

    pub fn of(&self, activity: Activity) -> Duration {
        match activity {
            Activity::Live => self.live,
            Activity::RecentDonations => self.recent,
            Activity::Idle => self.idle,
        }
    }
}

/// Per-streamer exponential backoff after failed polls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to leave the streamer alone: 1 s doubling to
    /// 60 s, or the provider's Retry-After when that is longer (up to [`RETRY_AFTER_MAX`]).
    pub fn fail(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let exponential = BACKOFF_START
            .saturating_mul(1u32 << doublings)
            .min(BACKOFF_MAX);
        exponential.max(retry_after.unwrap_or_default().min(RETRY_AFTER_MAX))
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
    }
}

/// How one poll of a streamer ended, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Polled; `new_donations` were found.
    Polled { new_donations: usize },
    /// Another instance (or the Node app) holds the streamer's lock: try again soon.
    Locked,
    /// The shared budget had no grant in time: still due, so the streamer keeps its place in
    /// line (an oversubscribed budget must not send the most overdue to the back).
    NoBudget,
    /// Another instance polled the streamer a moment ago: due again one interval from now.
    PolledElsewhere,
    /// 429, 5xx, a malformed answer or a timeout; back off.
    Failed { retry_after: Option<Duration> },
    /// The streamer must reconnect DonationAlerts: no more polling until they do.
    NeedsReauth,
}

#[derive(Debug, Clone)]
struct Entry {
    due: Instant,
    last_donation_at: Option<Instant>,
    backoff: Backoff,
    backing_off_until: Option<Instant>,
}

/// The schedule of one poller: when each streamer is next due.
#[derive(Debug, Clone)]
pub struct Schedule<K> {
    policy: SchedulePolicy,
    entries: HashMap<K, Entry>,
    /// The same entries ordered by due time (then key): picking the due ones costs
    /// O(k log n), not a sort of every streamer on every pick.
    by_due: BTreeSet<(Instant, K)>,
    /// Streamers with a backoff set (it may have run out already).
    backing_off: HashSet<K>,
    live: HashSet<K>,
    /// Streamers with a live realtime subscription, and since when (Unix ms): they are
    /// polled only to reconcile, right after each (re)subscribe and then every
    /// [`SchedulePolicy::reconcile_interval`], and take no share of the routine budget.
    subscribed: HashMap<K, i64>,
    /// Recomputed by [`Schedule::refresh_intervals`] (once a tick), not on every poll: it
    /// looks at every streamer.
    intervals: Intervals,
}

impl<K: Clone + Eq + std::hash::Hash + Ord> Schedule<K> {
    pub fn new(policy: SchedulePolicy) -> Self {
        Self {
            intervals: Intervals::for_counts(&policy, 0, 0, 0, 0),
            policy,
            entries: HashMap::new(),
            by_due: BTreeSet::new(),
            backing_off: HashSet::new(),
            live: HashSet::new(),
            subscribed: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &SchedulePolicy {
        &self.policy
    }

    pub fn set_policy(&mut self, policy: SchedulePolicy, now: Instant) {
        self.policy = policy;
        self.refresh_intervals(now);
    }

    /// Makes the schedule hold exactly `streamers`: new ones are due at once, gone ones
    /// are forgotten.
    pub fn sync(&mut self, streamers: impl IntoIterator<Item = K>, now: Instant) {
        let wanted: HashSet<K> = streamers.into_iter().collect();
        let gone: Vec<K> = self
            .entries
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&key);
        }
        for key in wanted {
            if !self.entries.contains_key(&key) {
                self.by_due.insert((now, key.clone()));
                self.entries.insert(
                    key,
                    Entry {
                        due: now,
                        last_donation_at: None,
                        backoff: Backoff::default(),
                        backing_off_until: None,
                    },
                );
            }
        }
    }

    /// Who is live on Twitch now; a streamer going live is due at once.
    pub fn set_live(&mut self, live: impl IntoIterator<Item = K>, now: Instant) {
        let live: HashSet<K> = live
            .into_iter()
            .filter(|k| self.entries.contains_key(k))
            .collect();
        let going_live: Vec<K> = live.difference(&self.live).cloned().collect();
        for key in going_live {
            let not_backing_off = self
                .entries
                .get(&key)
                .is_some_and(|e| e.backing_off_until.is_none_or(|until| until <= now));
            if not_backing_off {
                let earlier = self.entries[&key].due.min(now);
                self.set_due(&key, earlier);
            }
        }
        self.live = live;
    }

    /// Which streamers have a live realtime subscription, and since when (Unix ms). A
    /// streamer newly (re)subscribed is due at once, for the poll that finds what the socket
    /// missed while it was down; one whose subscription lapsed is due at once too, back on
    /// routine polling.
    pub fn set_subscribed(&mut self, subscribed: HashMap<K, i64>, now: Instant) {
        let subscribed: HashMap<K, i64> = subscribed
            .into_iter()
            .filter(|(k, _)| self.entries.contains_key(k))
            .collect();
        let changed: Vec<K> = subscribed
            .iter()
            .filter(|(k, since)| self.subscribed.get(*k) != Some(*since))
            .map(|(k, _)| k.clone())
            .chain(
                self.subscribed
                    .keys()
                    .filter(|k| !subscribed.contains_key(*k))
                    .cloned(),
            )
            .collect();
        self.subscribed = subscribed;
        for key in changed {
            let not_backing_off = self.entries[&key]
                .backing_off_until
                .is_none_or(|until| until <= now);
            if not_backing_off {
                let earlier = self.entries[&key].due.min(now);
                self.set_due(&key, earlier);
            }
        }
    }

    /// Since when (Unix ms) `key` has a live realtime subscription, if it has one.
    pub fn subscribed_since(&self, key: &K) -> Option<i64> {
        self.subscribed.get(key).copied()
    }

    /// Streamers with a live realtime subscription.
    pub fn subscribed_count(&self) -> usize {
        self.subscribed.len()
    }

    /// Remembers a donation seen at `at` (e.g. loaded from the store at start).
    pub(crate) fn note_donation(&mut self, key: &K, at: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_donation_at = Some(entry.last_donation_at.map_or(at, |t| t.max(at)));
        }
    }

    pub(crate) fn activity(&self, key: &K, now: Instant) -> Activity {
        if self.live.contains(key) {
            return Activity::Live;
        }
        match self.entries.get(key).and_then(|e| e.last_donation_at) {
            Some(at) if now.saturating_duration_since(at) < self.policy.recent_window => {
                Activity::RecentDonations
            }
            _ => Activity::Idle,
        }
    }

    /// The intervals polls are rescheduled with, as of the last [`Self::refresh_intervals`].
    pub fn intervals(&self) -> Intervals {
        self.intervals
    }

    /// Recounts the streamers in each activity and shares the budget out again.
    pub fn refresh_intervals(&mut self, now: Instant) -> Intervals {
        self.intervals = self.count_intervals(now);
        self.intervals
    }

    fn count_intervals(&self, now: Instant) -> Intervals {
        let (mut live, mut recent, mut idle) = (0, 0, 0);
        for key in self.entries.keys() {
            if self.subscribed.contains_key(key) {
                continue;
            }
            match self.activity(key, now) {
                Activity::Live => live += 1,
                Activity::RecentDonations => recent += 1,
                Activity::Idle => idle += 1,
            }
        }
        Intervals::for_counts(&self.policy, live, recent, idle, self.subscribed.len())
    }

    /// Up to `max` streamers due at `now`, most overdue first (ties by key, so every
    /// poller agrees on the order).
    pub fn due(&self, now: Instant, max: usize) -> Vec<K> {
        self.by_due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(max)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Up to `free` streamers due at `now` and not `busy`, most overdue first, of which at
    /// most `reconcile_slots` subscribed ones (reconciliation polls): those beyond it are
    /// passed over, however many, so routine polls still start behind a backlog of them.
    pub fn pick_due(
        &self,
        now: Instant,
        free: usize,
        mut reconcile_slots: usize,
        busy: &HashSet<K>,
    ) -> Vec<K> {
        let mut picked = Vec::with_capacity(free);
        for (_, key) in self.by_due.iter().take_while(|(due, _)| *due <= now) {
            if picked.len() == free {
                break;
            }
            if busy.contains(key) {
                continue;
            }
            if self.subscribed.contains_key(key) {
                if reconcile_slots == 0 {
                    continue;
                }
                reconcile_slots -= 1;
            }
            picked.push(key.clone());
        }
        picked
    }

    /// When the next streamer falls due (`None` with nobody scheduled).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(due, _)| *due)
    }

    /// When `key` is next due.
    pub fn due_at(&self, key: &K) -> Option<Instant> {
        self.entries.get(key).map(|e| e.due)
    }

    /// Streamers backing off now, for /health.
    pub(crate) fn backing_off(&self, now: Instant) -> usize {
        self.backing_off
            .iter()
            .filter_map(|k| self.entries.get(k))
            .filter(|e| e.backing_off_until.is_some_and(|until| until > now))
            .count()
    }

    /// Every scheduled streamer.
    pub fn streamers(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reschedules `key` after a poll that ended at `now`.
    pub fn record(&mut self, key: &K, outcome: PollOutcome, now: Instant) {
        if matches!(outcome, PollOutcome::NeedsReauth) {
            self.forget(key);
            return;
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match outcome {
            PollOutcome::Polled { new_donations } => {
                entry.backoff.succeed();
                entry.backing_off_until = None;
                if new_donations > 0 {
                    entry.last_donation_at = Some(now);
                }
            }
            PollOutcome::Failed { retry_after } => {
                let wait = entry.backoff.fail(retry_after);
                entry.backing_off_until = Some(now + wait);
            }
            PollOutcome::Locked
            | PollOutcome::NoBudget
            | PollOutcome::PolledElsewhere
            | PollOutcome::NeedsReauth => {}
        }
        if entry.backing_off_until.is_some() {
            self.backing_off.insert(key.clone());
        } else {
            self.backing_off.remove(key);
        }
        let next = match outcome {
            // Someone else is polling it now; look again after one base interval.
            PollOutcome::Locked => now + self.policy.min_interval,
            PollOutcome::NoBudget => self.entries[key].due,
            PollOutcome::Failed { .. } => self.entries[key].backing_off_until.unwrap_or(now),
            _ if self.subscribed.contains_key(key) => now + self.intervals.reconcile,
            _ => now + self.intervals.of(self.activity(key, now)),
        };
        self.set_due(key, next);
    }

    /// Moves `key` to a new due time, in the entry and in the index.
    fn set_due(&mut self, key: &K, due: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            self.by_due.remove(&(entry.due, key.clone()));
            entry.due = due;
            self.by_due.insert((due, key.clone()));
        }
    }

    fn forget(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            self.by_due.remove(&(entry.due, key.clone()));
        }
        self.live.remove(key);
        self.subscribed.remove(key);
        self.backing_off.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SchedulePolicy {
        SchedulePolicy {
            polls_per_second: 1.0,
            min_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(600),
            recent_window: Duration::from_secs(900),
            reconcile_interval: Duration::from_secs(600),
        }
    }

    #[test]
    fn the_budget_is_shared_by_weight_and_spent_exactly() {
        // 5 live and 45 idle at one poll a second: W = 5 * 10 + 45 = 95.
        let intervals = Intervals::for_counts(&policy(), 5, 0, 45, 0);
        assert_eq!(intervals.live, Duration::from_secs_f64(9.5));
        assert_eq!(intervals.idle, Duration::from_secs(95));
        let spent = 5.0 / intervals.live.as_secs_f64() + 45.0 / intervals.idle.as_secs_f64();
        assert!((spent - 1.0).abs() < 1e-9, "{spent}");
    }

    #[test]
    fn intervals_stay_between_the_base_interval_and_the_maximum() {
        let few = Intervals::for_counts(&policy(), 1, 0, 1, 0);
        assert_eq!(
            few.live,
            Duration::from_secs(5),
            "never faster than the base"
        );
        let many = Intervals::for_counts(&policy(), 0, 0, 100_000, 0);
        assert_eq!(
            many.idle,
            Duration::from_secs(600),
            "never slower than the maximum"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute_and_honours_retry_after() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.fail(None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        backoff.succeed();
        assert_eq!(backoff.fail(None), Duration::from_secs(1));
        assert_eq!(
            backoff.fail(Some(Duration::from_secs(30))),
            Duration::from_secs(30),
            "Retry-After longer than the doubling wins"
        );
        assert_eq!(
            backoff.fail(Some(Duration::from_secs(86_400))),
            RETRY_AFTER_MAX
        );
    }

    #[test]
    fn the_most_overdue_streamer_goes_first_and_ties_break_by_key() {
        let now = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync([3, 1, 2], now);
        assert_eq!(schedule.due(now, 10), [1, 2, 3]);
        schedule.record(&1, PollOutcome::Polled { new_donations: 0 }, now);
        assert_eq!(schedule.due(now, 10), [2, 3]);
        assert_eq!(schedule.due(now, 1), [2]);
    }

    #[test]
    fn a_failing_streamer_backs_off_without_delaying_the_others() {
        let now = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync([1, 2], now);
        schedule.record(
            &1,
            PollOutcome::Failed {
                retry_after: Some(Duration::from_secs(20)),
            },
            now,
        );
        assert_eq!(schedule.due(now, 10), [2]);
        assert_eq!(schedule.backing_off(now), 1);
        assert_eq!(schedule.due_at(&1), Some(now + Duration::from_secs(20)));
        let later = now + Duration::from_secs(20);
        schedule.record(&1, PollOutcome::Polled { new_donations: 0 }, later);
        assert_eq!(schedule.backing_off(later), 0);
    }

    #[test]
    fn live_and_recent_donors_are_polled_more_often_than_idle_streamers() {
        let now = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync(0..50, now);
        schedule.set_live(0..5, now);
        schedule.refresh_intervals(now);
        schedule.record(&10, PollOutcome::Polled { new_donations: 2 }, now);
        schedule.record(&0, PollOutcome::Polled { new_donations: 0 }, now);
        schedule.record(&20, PollOutcome::Polled { new_donations: 0 }, now);
        assert_eq!(schedule.activity(&0, now), Activity::Live);
        assert_eq!(schedule.activity(&10, now), Activity::RecentDonations);
        assert_eq!(schedule.activity(&20, now), Activity::Idle);
        let live = schedule.due_at(&0).unwrap() - now;
        let recent = schedule.due_at(&10).unwrap() - now;
        let idle = schedule.due_at(&20).unwrap() - now;
        assert!(
            live < recent && recent < idle,
            "{live:?} {recent:?} {idle:?}"
        );
        // A recent donor becomes idle again once the window has passed.
        let much_later = now + Duration::from_secs(901);
        assert_eq!(schedule.activity(&10, much_later), Activity::Idle);
    }

    #[test]
    fn nobody_starves_when_the_schedule_is_oversubscribed() {
        // 1,000 streamers at one poll a second: everyone is due long before the budget can
        // serve them; serving the earliest due first still reaches every streamer.
        let start = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync(0..1_000, start);
        schedule.set_live(0..10, start);
        schedule.refresh_intervals(start);
        let mut polled = std::collections::HashSet::new();
        let mut now = start;
        for _ in 0..1_200 {
            if let Some(key) = schedule.due(now, 1).pop() {
                polled.insert(key);
                schedule.record(&key, PollOutcome::Polled { new_donations: 0 }, now);
            }
            now += Duration::from_secs(1);
        }
        assert_eq!(polled.len(), 1_000);
    }

    #[test]
    fn a_streamer_who_must_reconnect_leaves_the_schedule() {
        let now = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync([1, 2], now);
        schedule.record(&1, PollOutcome::NeedsReauth, now);
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.due(now, 10), [2]);
    }

    #[test]
    fn reconciliation_takes_at_most_its_share_of_the_budget_and_routine_polling_keeps_the_rest() {
        // One poll a second, reconcile every 600 s: 150 subscribed streamers take a quarter.
        let few = Intervals::for_counts(&policy(), 0, 0, 75, 60);
        assert_eq!(few.reconcile, Duration::from_secs(600));
        assert_eq!(few.idle, Duration::from_secs_f64(75.0 / 0.9));
        let many = Intervals::for_counts(&policy(), 0, 0, 75, 5_000);
        assert_eq!(
            many.reconcile,
            Duration::from_secs(20_000),
            "5,000 / 0.25 a second"
        );
        assert_eq!(many.idle, Duration::from_secs(100), "75 / 0.75 a second");
    }

    #[test]
    fn a_subscribed_streamer_is_reconciled_after_each_subscribe_and_then_every_interval() {
        let start = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync(["a", "b"], start);
        let later = start + Duration::from_secs(1);
        schedule.record(&"a", PollOutcome::Polled { new_donations: 0 }, later);
        let routine_due = schedule.due_at(&"a").unwrap();
        assert!(routine_due > later);
        // Subscribed: due at once, for the reconciliation.
        schedule.set_subscribed([("a", 1_000)].into(), later);
        assert_eq!(schedule.due_at(&"a"), Some(later));
        schedule.record(&"a", PollOutcome::Polled { new_donations: 0 }, later);
        assert_eq!(
            schedule.due_at(&"a"),
            Some(later + Duration::from_secs(600))
        );
        // The same subscription advertised again changes nothing.
        schedule.set_subscribed([("a", 1_000)].into(), later);
        assert_eq!(
            schedule.due_at(&"a"),
            Some(later + Duration::from_secs(600))
        );
        // Subscribed: it takes no share of the routine budget.
        assert_eq!(
            schedule.refresh_intervals(later).idle,
            Duration::from_secs(5),
            "only b shares the routine budget"
        );
        // Resubscribed after a drop: due at once again.
        schedule.set_subscribed([("a", 2_000)].into(), later);
        assert_eq!(schedule.due_at(&"a"), Some(later));
        schedule.record(&"a", PollOutcome::Polled { new_donations: 0 }, later);
        // The subscription lapses: back on routine polling, due at once.
        schedule.set_subscribed(HashMap::new(), later);
        assert_eq!(schedule.due_at(&"a"), Some(later));
        assert_eq!(schedule.subscribed_since(&"a"), None);
    }

    #[test]
    fn routine_polls_start_behind_any_backlog_of_reconciliation_polls() {
        let start = Instant::now();
        let mut schedule = Schedule::new(policy());
        let keys: Vec<u64> = (0..100).collect();
        schedule.sync(keys.clone(), start);
        // 99 subscribed streamers are due first, one routine streamer last.
        schedule.set_subscribed(keys[..99].iter().map(|k| (*k, 1)).collect(), start);
        let now = start + Duration::from_secs(1);
        let busy = HashSet::from([0u64]);
        let picked = schedule.pick_due(now, 4, 2, &busy);
        assert_eq!(
            picked,
            vec![1, 2, 99],
            "two reconciliations, then the routine poll"
        );
    }

    #[test]
    fn going_live_makes_a_streamer_due_at_once() {
        let now = Instant::now();
        let mut schedule = Schedule::new(policy());
        schedule.sync([1], now);
        schedule.record(&1, PollOutcome::Polled { new_donations: 0 }, now);
        assert!(schedule.due(now, 1).is_empty());
        let soon = now + Duration::from_secs(1);
        schedule.set_live([1], soon);
        assert_eq!(schedule.due(soon, 1), [1]);
    }

    #[test]
    fn the_due_index_agrees_with_the_entries_through_any_sequence_of_changes() {
        let start = Instant::now();
        let mut schedule = Schedule::new(policy());
        let mut seed: u64 = 42;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            seed >> 33
        };
        for step in 0..2_000u64 {
            let now = start + Duration::from_millis(step * 250);
            match next() % 7 {
                0 => schedule.sync((0..(next() % 40)).collect::<Vec<u64>>(), now),
                1 => schedule.set_live((0..(next() % 5)).collect::<Vec<u64>>(), now),
                2 => {
                    schedule.refresh_intervals(now);
                }
                3 => {
                    let since = (next() % 3) as i64;
                    let subscribed = (0..(next() % 10)).map(|k| (k * 3, since)).collect();
                    schedule.set_subscribed(subscribed, now);
                }
                _ => {
                    let key = next() % 40;
                    let outcome = match next() % 6 {
                        0 => PollOutcome::Failed { retry_after: None },
                        1 => PollOutcome::Locked,
                        2 => PollOutcome::NeedsReauth,
                        3 => PollOutcome::NoBudget,
                        _ => PollOutcome::Polled {
                            new_donations: (next() % 2) as usize,
                        },
                    };
                    schedule.record(&key, outcome, now);
                }
            }
            let mut expected: Vec<(Instant, u64)> = schedule
                .entries
                .iter()
                .filter(|(_, e)| e.due <= now)
                .map(|(k, e)| (e.due, *k))
                .collect();
            expected.sort();
            let expected: Vec<u64> = expected.into_iter().map(|(_, k)| k).collect();
            assert_eq!(schedule.due(now, usize::MAX), expected, "step {step}");
            assert_eq!(schedule.by_due.len(), schedule.entries.len());
        }
    }
}
