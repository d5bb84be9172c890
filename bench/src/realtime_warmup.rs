//! The realtime bridge's warm-up and a mass reconnect under DonationAlerts' real budget (60
//! requests a minute for the whole application), on a virtual clock.
//!
//! The pure pieces are the real ones: [`gcra::decide_prioritized`] with the waiting marks of
//! the in-process limiter for the one shared 60/min limiter, for the realtime share
//! ([`REALTIME_BUDGET_SHARE`] of it, taken by the bridges and the reconciliation polls) and for
//! the bridges' part of that share (two thirds of it, `ratelimit:donationalerts:bridge`), the
//! real [`Schedule`] for the poller (with `set_subscribed`, so reconciliation's interval
//! stretches to keep within its quarter of the budget), and the real [`Ask`] ordering for the
//! bridge's grant queue. Around them a model of the processes:
//!
//! - the bridge's dispatcher (as `realtime::grants`): the most urgent waiting request asks the
//!   bridges' part, then the realtime share, then the shared limiter, in turn, with its
//!   priority (a limiter passed is kept until the last grants); refused, it sleeps
//!   `retry_after` but wakes for any new request; every session spawned at once asks for its
//!   first grant; a
//!   (re)subscription takes 2 grants (`GET /user/oauth`, then after the socket connects
//!   `POST /centrifuge/subscribe`), each call [`CALL`] long; each request carries its
//!   session's place (the order the sessions started, here a random one), so the second goes
//!   right after the session's first, ahead of the rest of its class;
//! - the subscription is advertised at once and renewed every third of the shard TTL; the
//!   poller reads the claims every 2 s into `set_subscribed`, so each (re)subscribed streamer
//!   is due at once for its reconciliation poll (priority `Reconcile`), then every
//!   `Intervals::reconcile` (`DA_RECONCILE_INTERVAL_MS`, or longer beyond a quarter of the
//!   budget); a dropped socket's claim lapses one TTL after its last renewal, and the
//!   streamer is back on routine polling (priority `Poll`);
//! - the poller (as `poll::Poller`): the most overdue streamers start, up to its concurrency
//!   (Little's law on the mean poll time, doubled, 4 to 50), reconciliation polls in at most
//!   half of those slots (at least 1), picked by the real [`Schedule::pick_due`] as the
//!   poller calls it: it walks every due streamer, passing over reconciliation polls beyond
//!   their slots however many are due, so routine polls go on while reconciliation polls
//!   wait long on the realtime share; each takes its lock for 4.5 s and asks (`take_budget`;
//!   a reconciliation poll first the realtime share, then the shared limiter) until granted,
//!   or gives up (`NoBudget`, still due: it keeps its place in line) when the next grant
//!   would come too close to the lock's end; a poll is one page.
//!
//! A donation is detected at once when its streamer's socket is subscribed when it happens,
//! else by the next poll of that streamer granted after it (routine, or the reconciliation
//! after a subscribe). Donations follow the poll schedule benchmark's model (live streamers
//! one every 2 minutes on average, the others one every 30).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use shared::coordination::gcra::{self, Priority, RateLimit};
use shared::poll::schedule::{PollOutcome, Schedule, SchedulePolicy};
use shared::poll::streamer::REALTIME_BUDGET_SHARE;
use shared::realtime::grants::{Ask, Urgency};
use tokio::time::Instant;

use crate::Row;
use crate::poll_schedule::{self, Lcg, p95};

/// DonationAlerts' budget for the whole application.
const BUDGET_PER_MINUTE: u32 = 60;
/// `DA_RECONCILE_INTERVAL_MS`.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// `DA_POLL_INTERVAL_MS`.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The poller's share of the budget kept for follow-up pages and refreshes.
const HEADROOM: f64 = 0.1;
/// `DA_POLL_CONCURRENCY` and the poller's most polls in flight.
const CONCURRENCY: (usize, usize) = (4, 50);
/// `DA_POLL_LOCK_TTL_MS` and `PROVIDER_TIMEOUT_MS`, seconds.
const LOCK_TTL: f64 = 4.5;
const PROVIDER_TIMEOUT: f64 = 10.0;
/// One DonationAlerts call, or one socket connect (seconds).
const CALL: f64 = 0.3;
/// How often the poller reads the subscriptions, and the shard TTL the claims live for.
const SUBSCRIPTIONS_REFRESH: f64 = 2.0;
const SHARD_TTL: f64 = 15.0;
/// Virtual time step: the limiter's emission interval is 20 of them.
const STEP: f64 = 0.05;
/// Before the bridge starts (warm-up) or the sockets drop (reconnect), the poller runs this
/// long, so the window does not start from a cold schedule.
const BEFORE: f64 = 600.0;
/// The longest a scenario may take before it is reported as unfinished.
const HORIZON: f64 = 8.0 * 3600.0;
/// After the window, donations still undetected get this long to be found.
const TAIL: f64 = 900.0;
/// Of the streamers: live on Twitch, and recent donors (the bridge's second class).
const LIVE_SHARE: f64 = 0.05;
const RECENT_SHARE: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    /// No socket; the bridge starts after [`BEFORE`].
    Warmup,
    /// Every streamer subscribed; at [`BEFORE`] every socket drops at once.
    Reconnect,
    /// No bridge at all: the same window polled only.
    PollingOnly { window: f64 },
}

/// The in-process limiter's prioritized step (`InProcessCoordinator::rate_limit_prioritized`):
/// the real GCRA and waiting marks, on the virtual clock.
struct Limiter {
    limit: RateLimit,
    tat: u64,
    /// Per priority, until when its waiting mark lives (seconds).
    marks: [f64; 5],
}

impl Limiter {
    fn per_minute(per_minute: u32) -> Self {
        Self {
            limit: RateLimit::per_minute(per_minute),
            tat: 0,
            marks: [f64::NEG_INFINITY; 5],
        }
    }

    /// `Ok` when granted, else `Err(retry_after)` in seconds.
    fn ask(&mut self, priority: Priority, now: f64) -> Result<(), f64> {
        let more_urgent_waiting = self.marks[..priority.index()]
            .iter()
            .any(|&until| until > now);
        let (decision, tat) =
            gcra::decide_prioritized(&self.limit, self.tat, micros(now), more_urgent_waiting);
        self.tat = tat;
        if decision.allowed {
            return Ok(());
        }
        let until = now + gcra::waiting_mark_ttl(decision.retry_after).as_secs_f64();
        let mark = &mut self.marks[priority.index()];
        *mark = mark.max(until);
        Err(decision.retry_after.as_secs_f64().max(0.001))
    }
}

/// The limiters' clock (µs, never 0) at virtual time `t` seconds.
fn micros(t: f64) -> u64 {
    (t * 1e6).round() as u64 + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The session asks for its first grant (`GET /user/oauth`).
    AskFirst,
    /// The socket is connected: it asks for the second (`POST /centrifuge/subscribe`).
    AskSecond,
    /// The channel is subscribed.
    Subscribed,
}

struct Poll {
    streamer: usize,
    priority: Priority,
    /// Granted by the realtime share (a routine poll never asks it).
    share_granted: bool,
    started: f64,
    lock_until: f64,
    next_ask: f64,
    /// When the page comes back, and how many donations it found.
    done: Option<(f64, usize)>,
}

/// What one run measured.
struct Outcome {
    window: (f64, f64),
    /// Seconds from the window's start until every live streamer, and every streamer, was
    /// subscribed (`None`: not within [`HORIZON`]).
    live_after: Option<f64>,
    all_after: Option<f64>,
    subscribed_at_end: usize,
    /// Between two periodic reconciliations of a subscribed streamer, at the end.
    reconcile_at_end: Duration,
    /// Detection latencies of the window's donations (undetected ones count until the end).
    live: Vec<f64>,
    all: Vec<f64>,
    undetected: usize,
    /// Grants a minute in the window per priority, and the fewest routine polls granted in
    /// any whole minute of it.
    per_minute: [f64; 5],
    routine_min: usize,
    /// The most grants of the shared limiter in any 60 s, over the whole run.
    max_in_60s: usize,
}

struct Sim {
    live: usize,
    /// Each session's place in the grant queue (`Ask::place`).
    place: Vec<u64>,
    urgency: Vec<Urgency>,
    base: Instant,
    schedule: Schedule<usize>,
    main: Limiter,
    /// The realtime share, for the bridge's calls and the reconciliation polls.
    cap: Limiter,
    /// The bridges' part of the realtime share, for their own calls only.
    bridge_cap: Limiter,
    /// Every grant of the shared limiter: when (its clock, µs) and to whom.
    grants: Vec<(u64, Priority)>,
    // The bridge.
    queue: BinaryHeap<Reverse<(Ask, u64, usize)>>,
    seq: u64,
    bridge_at: f64,
    /// How many of the bridge's limiters (its part, the share, the shared one) the head
    /// request has passed.
    passed: usize,
    timers: BinaryHeap<Reverse<(u64, usize, Stage)>>,
    priority: Vec<Priority>,
    first_grant_done: Vec<bool>,
    /// Since when each socket is subscribed.
    up: Vec<Option<f64>>,
    /// Each advertised claim: since (ms) and until when it lives.
    claims: Vec<Option<(i64, f64)>>,
    read_claims: Vec<(usize, i64)>,
    // The poller.
    polls: Vec<Poll>,
    polling_now: HashSet<usize>,
    mean_poll: f64,
    pending: Vec<Vec<f64>>,
    /// (donation time, latency, streamer)
    detected: Vec<(f64, f64, usize)>,
    /// Subscriptions completed in this scenario (live streamers', everyone's).
    completed: (usize, usize),
    /// Polls that gave up waiting for a grant (`NoBudget`).
    gave_up: usize,
}

impl Sim {
    fn new(streamers: usize) -> Self {
        let live = (streamers as f64 * LIVE_SHARE).round() as usize;
        let recent = (streamers as f64 * RECENT_SHARE).round() as usize;
        let urgency = (0..streamers)
            .map(|i| {
                if i < live {
                    Urgency::Live
                } else if i < live + recent {
                    Urgency::RecentDonor
                } else {
                    Urgency::Other
                }
            })
            .collect();
        let policy = SchedulePolicy {
            reconcile_interval: RECONCILE_INTERVAL,
            ..SchedulePolicy::for_budget(BUDGET_PER_MINUTE, HEADROOM, POLL_INTERVAL)
        };
        // `realtime_share` (crate-private in `shared`).
        let share = ((f64::from(BUDGET_PER_MINUTE) * REALTIME_BUDGET_SHARE).floor() as u32).max(1);
        // `bridge_share` (crate-private in `shared`).
        let bridge_share = ((f64::from(BUDGET_PER_MINUTE) * REALTIME_BUDGET_SHARE * 2.0 / 3.0)
            .floor() as u32)
            .max(1);
        // The bridge starts its sessions in no particular order.
        let mut place: Vec<u64> = (0..streamers as u64).collect();
        let mut rng = Lcg(0x91ace);
        for i in (1..streamers).rev() {
            let j = ((rng.unit() * (i + 1) as f64) as usize).min(i);
            place.swap(i, j);
        }
        Self {
            live,
            place,
            urgency,
            base: Instant::now(),
            schedule: Schedule::new(policy),
            main: Limiter::per_minute(BUDGET_PER_MINUTE),
            cap: Limiter::per_minute(share),
            bridge_cap: Limiter::per_minute(bridge_share),
            grants: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            bridge_at: 0.0,
            passed: 0,
            timers: BinaryHeap::new(),
            priority: vec![Priority::Subscribe; streamers],
            first_grant_done: vec![false; streamers],
            up: vec![None; streamers],
            claims: vec![None; streamers],
            read_claims: Vec::new(),
            polls: Vec::new(),
            polling_now: HashSet::new(),
            mean_poll: 0.2,
            pending: vec![Vec::new(); streamers],
            detected: Vec::new(),
            completed: (0, 0),
            gave_up: 0,
        }
    }

    fn at(&self, t: f64) -> Instant {
        self.base + Duration::from_secs_f64(t)
    }

    fn timer(&mut self, t: f64, streamer: usize, stage: Stage) {
        let us = (t * 1e6).round() as u64;
        self.timers.push(Reverse((us, streamer, stage)));
    }

    fn subscribed(&self) -> usize {
        self.up.iter().filter(|u| u.is_some()).count()
    }

    /// A session's timer went off.
    fn session(&mut self, t: f64, streamer: usize, stage: Stage) {
        match stage {
            Stage::AskFirst | Stage::AskSecond => {
                self.seq += 1;
                let ask = Ask {
                    priority: self.priority[streamer],
                    urgency: self.urgency[streamer],
                    place: self.place[streamer],
                };
                self.queue.push(Reverse((ask, self.seq, streamer)));
                // A new request wakes the dispatcher: it may be more urgent than the head.
                self.bridge_at = self.bridge_at.min(t);
            }
            Stage::Subscribed => {
                self.up[streamer] = Some(t);
                self.completed.1 += 1;
                if streamer < self.live {
                    self.completed.0 += 1;
                }
                // Advertised at once (`mark_subscribed`).
                self.claims[streamer] = Some(((t * 1000.0) as i64, t + SHARD_TTL));
            }
        }
    }

    /// The grant queue's dispatcher (`realtime::grants::dispatch`).
    fn bridge(&mut self, t: f64) {
        while t >= self.bridge_at {
            let Some(Reverse((ask, _, streamer))) = self.queue.peek().copied() else {
                return;
            };
            let mut wait = None;
            while self.passed < 3 {
                let limiter = match self.passed {
                    0 => &mut self.bridge_cap,
                    1 => &mut self.cap,
                    _ => &mut self.main,
                };
                if let Err(retry_after) = limiter.ask(ask.priority, t) {
                    wait = Some(retry_after);
                    break;
                }
                self.passed += 1;
            }
            match wait {
                None => {
                    self.passed = 0;
                    self.grants.push((micros(t), ask.priority));
                    self.queue.pop();
                    if std::mem::replace(&mut self.first_grant_done[streamer], true) {
                        self.first_grant_done[streamer] = false;
                        self.timer(t + CALL, streamer, Stage::Subscribed);
                    } else {
                        // The call, then the socket's connect.
                        self.timer(t + 2.0 * CALL, streamer, Stage::AskSecond);
                    }
                }
                Some(wait) => {
                    self.bridge_at = t + wait;
                    return;
                }
            }
        }
    }

    /// The poller reads the live claims (`read_subscriptions`).
    fn read_subscriptions(&mut self, t: f64) {
        let claims: Vec<(usize, i64)> = self
            .claims
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.filter(|(_, until)| *until > t)
                    .map(|(since, _)| (i, since))
            })
            .collect();
        let now = self.at(t);
        // The same claims again change nothing; skip rebuilding the map.
        if claims != self.read_claims {
            self.schedule
                .set_subscribed(claims.iter().copied().collect(), now);
            self.read_claims = claims;
        }
        self.schedule.refresh_intervals(now);
    }

    /// Starts the most overdue polls the poller's concurrency allows (`Poller::dispatch`).
    fn dispatch(&mut self, t: f64) {
        let per_second = self.schedule.policy().polls_per_second;
        let concurrency = ((per_second * self.mean_poll * 2.0).ceil() as usize)
            .clamp(CONCURRENCY.0, CONCURRENCY.1);
        let free = concurrency.saturating_sub(self.polls.len());
        if free == 0 {
            return;
        }
        // Reconciliation polls hold half the slots at most, so routine polls go on while
        // they wait on the realtime share; those beyond their slots are passed over, however
        // many are due.
        let max_reconciling = (concurrency / 2).max(1);
        let reconciling = self
            .polling_now
            .iter()
            .filter(|s| self.schedule.subscribed_since(s).is_some())
            .count();
        let starting = self.schedule.pick_due(
            self.at(t),
            free,
            max_reconciling.saturating_sub(reconciling),
            &self.polling_now,
        );
        for streamer in starting {
            self.polling_now.insert(streamer);
            let priority = match self.schedule.subscribed_since(&streamer) {
                Some(_) => Priority::Reconcile,
                None => Priority::Poll,
            };
            self.polls.push(Poll {
                streamer,
                priority,
                share_granted: priority != Priority::Reconcile,
                started: t,
                lock_until: t + LOCK_TTL,
                next_ask: t,
                done: None,
            });
        }
    }

    /// Polls in flight ask the limiter (`take_budget`) or finish. Polls retrying at the
    /// same moment ask oldest first (the kindest order for the schedule).
    fn polls(&mut self, t: f64) {
        self.polls.sort_by(|a, b| a.started.total_cmp(&b.started));
        let mut i = 0;
        while i < self.polls.len() {
            let poll = &mut self.polls[i];
            let finished = match poll.done {
                Some((at, found)) if at <= t => Some(PollOutcome::Polled {
                    new_donations: found,
                }),
                Some(_) => None,
                None if poll.next_ask > t => None,
                None => match if poll.share_granted {
                    self.main.ask(poll.priority, t)
                } else {
                    // A reconciliation poll: the realtime share first, then at once the
                    // shared limiter, each until granted.
                    self.cap.ask(poll.priority, t).and_then(|()| {
                        poll.share_granted = true;
                        self.main.ask(poll.priority, t)
                    })
                } {
                    Ok(()) => {
                        self.grants.push((micros(t), poll.priority));
                        let pending = &mut self.pending[poll.streamer];
                        let found = pending.len();
                        for created in pending.drain(..) {
                            self.detected.push((created, t - created, poll.streamer));
                        }
                        poll.done = Some((t + CALL, found));
                        None
                    }
                    Err(wait) => {
                        let margin = PROVIDER_TIMEOUT.min((poll.lock_until - t) / 2.0);
                        if t + wait + margin >= poll.lock_until {
                            Some(PollOutcome::NoBudget)
                        } else {
                            poll.next_ask = t + wait;
                            None
                        }
                    }
                },
            };
            match finished {
                Some(outcome) => {
                    if outcome == PollOutcome::NoBudget {
                        self.gave_up += 1;
                    }
                    let poll = self.polls.remove(i);
                    if matches!(outcome, PollOutcome::Polled { .. }) {
                        self.mean_poll = self.mean_poll * 0.9 + (t - poll.started) * 0.1;
                    }
                    self.polling_now.remove(&poll.streamer);
                    let now = self.at(t);
                    self.schedule.record(&poll.streamer, outcome, now);
                }
                None => i += 1,
            }
        }
    }
}

fn simulate(streamers: usize, scenario: Scenario) -> Outcome {
    let mut sim = Sim::new(streamers);
    let live = sim.live;
    let horizon = BEFORE + HORIZON + TAIL;
    let mut donations: Vec<(f64, usize)> = poll_schedule::donations_until(streamers, live, horizon)
        .into_iter()
        .enumerate()
        .flat_map(|(s, times)| times.into_iter().map(move |t| (t, s)))
        .collect();
    donations.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next_donation = 0;
    let mut rng = Lcg(0x5e55);

    let start = sim.at(0.0);
    sim.schedule.sync(0..streamers, start);
    sim.schedule.set_live(0..live, start);
    if scenario == Scenario::Reconnect {
        for s in 0..streamers {
            sim.up[s] = Some(0.0);
            sim.claims[s] = Some((0, SHARD_TTL));
            sim.priority[s] = Priority::Resubscribe;
        }
    }
    sim.schedule.refresh_intervals(start);

    let window_end_fixed = match scenario {
        Scenario::PollingOnly { window } => Some(BEFORE + window),
        _ => None,
    };
    let mut live_after = None;
    let mut all_after = None;
    let mut next_read = 0.0;
    let mut next_advertise = 0.0;
    let mut step = 0u64;
    let mut t;
    loop {
        t = step as f64 * STEP;
        step += 1;
        if (t - BEFORE).abs() < STEP / 2.0 {
            match scenario {
                Scenario::Warmup => {
                    // Every session spawned at once asks within a moment, in no set order.
                    for s in 0..streamers {
                        let at = t + rng.unit() * 0.5;
                        sim.timer(at, s, Stage::AskFirst);
                    }
                }
                Scenario::Reconnect => {
                    // Every socket drops; each session waits its jittered first backoff
                    // (0.5 to 1 s), then resubscribes.
                    for s in 0..streamers {
                        sim.up[s] = None;
                        let at = t + 0.5 + rng.unit() * 0.5;
                        sim.timer(at, s, Stage::AskFirst);
                    }
                }
                Scenario::PollingOnly { .. } => {}
            }
        }
        while let Some(&(created, s)) = donations.get(next_donation) {
            if created > t {
                break;
            }
            next_donation += 1;
            if sim.up[s].is_some() {
                sim.detected.push((created, 0.0, s));
            } else {
                sim.pending[s].push(created);
            }
        }
        while let Some(&Reverse((us, s, stage))) = sim.timers.peek() {
            if us as f64 / 1e6 > t {
                break;
            }
            sim.timers.pop();
            sim.session(t, s, stage);
        }
        if t >= next_advertise {
            for s in 0..streamers {
                if sim.up[s].is_some()
                    && let Some((_, until)) = &mut sim.claims[s]
                {
                    *until = t + SHARD_TTL;
                }
            }
            next_advertise = t + SHARD_TTL / 3.0;
        }
        if t >= next_read {
            sim.read_subscriptions(t);
            next_read = t + SUBSCRIPTIONS_REFRESH;
        }
        sim.dispatch(t);
        // Bridge and poller race for a grant due now; neither always asks first.
        if step.is_multiple_of(2) {
            sim.bridge(t);
            sim.polls(t);
        } else {
            sim.polls(t);
            sim.bridge(t);
        }

        if t >= BEFORE && window_end_fixed.is_none() {
            if live_after.is_none() && sim.completed.0 == live {
                live_after = Some(t - BEFORE);
            }
            if all_after.is_none() && sim.completed.1 == streamers {
                all_after = Some(t - BEFORE);
            }
        }
        if std::env::var_os("WARMUP_TRACE").is_some() && step.is_multiple_of(36_000) {
            eprintln!(
                "{streamers} {scenario:?} t={:.0} min subscribed={} polls in flight={} (reconcile {}) mean poll={:.2}s gave up={} grants={}",
                t / 60.0,
                sim.subscribed(),
                sim.polls.len(),
                sim.polls
                    .iter()
                    .filter(|p| p.priority == Priority::Reconcile)
                    .count(),
                sim.mean_poll,
                sim.gave_up,
                sim.grants.len()
            );
        }
        let window_end = window_end_fixed
            .or(all_after.map(|a| BEFORE + a))
            .unwrap_or(BEFORE + HORIZON);
        if t >= window_end + TAIL || t >= horizon {
            let window = (BEFORE, window_end.min(t));
            return sim.outcome(scenario, window, t, live_after, all_after);
        }
    }
}

impl Sim {
    fn outcome(
        &self,
        scenario: Scenario,
        window: (f64, f64),
        end: f64,
        live_after: Option<f64>,
        all_after: Option<f64>,
    ) -> Outcome {
        let in_window = |created: f64| created >= window.0 && created <= window.1;
        let (mut live, mut all) = (Vec::new(), Vec::new());
        for &(created, latency, s) in &self.detected {
            if in_window(created) {
                if s < self.live {
                    live.push(latency);
                }
                all.push(latency);
            }
        }
        let mut undetected = 0;
        for (s, pending) in self.pending.iter().enumerate() {
            for &created in pending.iter().filter(|c| in_window(**c)) {
                undetected += 1;
                if s < self.live {
                    live.push(end - created);
                }
                all.push(end - created);
            }
        }
        let minutes = ((window.1 - window.0) / 60.0).max(1.0 / 60.0);
        let mut per_minute = [0.0; 5];
        let whole_minutes = ((window.1 - window.0) / 60.0).floor() as usize;
        let mut routine = vec![0usize; whole_minutes];
        for &(at, priority) in &self.grants {
            let at = (at - 1) as f64 / 1e6;
            if at >= window.0 && at < window.1 {
                per_minute[priority.index()] += 1.0 / minutes;
                let minute = ((at - window.0) / 60.0) as usize;
                if priority == Priority::Poll && minute < whole_minutes {
                    routine[minute] += 1;
                }
            }
        }
        let mut max_in_60s = 0;
        let mut first = 0;
        for last in 0..self.grants.len() {
            // Half-open windows of 60 s, as the limiter promises.
            while self.grants[last].0 - self.grants[first].0 >= 60_000_000 {
                first += 1;
            }
            max_in_60s = max_in_60s.max(last - first + 1);
        }
        let subscribed_at_end = match scenario {
            Scenario::PollingOnly { .. } => 0,
            _ => self.subscribed(),
        };
        Outcome {
            window,
            live_after,
            all_after,
            subscribed_at_end,
            reconcile_at_end: self.schedule.intervals().reconcile,
            live,
            all,
            undetected,
            per_minute,
            routine_min: routine.iter().copied().min().unwrap_or(0),
            max_in_60s,
        }
    }
}

fn minutes(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) => format!("{:.1} min", s / 60.0),
        None => format!("not within {:.0} h", HORIZON / 3600.0),
    }
}

fn p95_pair(outcome: &mut Outcome) -> String {
    format!(
        "live {:.1} s, all {:.1} s",
        p95(&mut outcome.live),
        p95(&mut outcome.all)
    )
}

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for streamers in [500, 5_000] {
        let live = (streamers as f64 * LIVE_SHARE).round() as usize;
        let mut schedule_only = poll_schedule::weighted(streamers, live);
        let baseline = format!(
            "poll_schedule alone ({streamers} streamers, {live} live, 2 virtual hours): live {:.1} s, all {:.1} s",
            p95(&mut schedule_only.live),
            p95(&mut schedule_only.all)
        );
        for (scenario, label) in [
            (Scenario::Warmup, "warm-up from cold"),
            (Scenario::Reconnect, "mass reconnect"),
        ] {
            let mut outcome = simulate(streamers, scenario);
            let window = outcome.window.1 - outcome.window.0;
            let mut polling = simulate(streamers, Scenario::PollingOnly { window });
            let setting = format!(
                "{streamers} streamers ({live} live, {} recent donors), 60 requests/min, DA_RECONCILE_INTERVAL_MS 10 min",
                (streamers as f64 * RECENT_SHARE).round()
            );
            rows.push(Row {
                name: format!("realtime {label}, {streamers} streamers: until subscribed"),
                figure: format!(
                    "live {}, all {}",
                    minutes(outcome.live_after),
                    minutes(outcome.all_after)
                ),
                detail: format!(
                    "{setting}; {} of {streamers} subscribed at the end, each then reconciled every {:.1} min (the schedule's, within a quarter of the budget)",
                    outcome.subscribed_at_end,
                    outcome.reconcile_at_end.as_secs_f64() / 60.0
                ),
            });
            rows.push(Row {
                name: format!("realtime {label}, {streamers} streamers: detection p95"),
                figure: p95_pair(&mut outcome),
                detail: format!(
                    "{} donations in the {:.1} min window ({} never detected, counted until the run's end); polling only, same window and donations: {}; {baseline}",
                    outcome.all.len(),
                    window / 60.0,
                    outcome.undetected,
                    p95_pair(&mut polling)
                ),
            });
            let per = outcome.per_minute;
            rows.push(Row {
                name: format!("realtime {label}, {streamers} streamers: grants a minute"),
                figure: format!(
                    "{} {:.1}, reconcile {:.1}, routine polls {:.1} (fewest in a minute: {})",
                    if scenario == Scenario::Warmup {
                        "subscribe"
                    } else {
                        "resubscribe"
                    },
                    per[Priority::Subscribe.index()] + per[Priority::Resubscribe.index()],
                    per[Priority::Reconcile.index()],
                    per[Priority::Poll.index()],
                    outcome.routine_min
                ),
                detail: format!(
                    "most grants in any 60 s of the run: {} (budget 60); polling only: routine {:.1}/min",
                    outcome.max_in_60s,
                    polling.per_minute[Priority::Poll.index()]
                ),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_model_steps_aside_for_a_more_urgent_waiting_caller() {
        let mut limiter = Limiter::per_minute(60);
        assert!(limiter.ask(Priority::Poll, 0.0).is_ok());
        // Refused for want of budget: the resubscribe leaves its mark...
        assert!(limiter.ask(Priority::Resubscribe, 0.5).is_err());
        // ...so the routine poll steps aside when the grant falls due.
        assert!(limiter.ask(Priority::Poll, 1.0).is_err());
        assert!(limiter.ask(Priority::Resubscribe, 1.0).is_ok());
    }

    #[test]
    fn a_small_warm_up_subscribes_live_streamers_first_inside_the_budget() {
        let outcome = simulate(40, Scenario::Warmup);
        let (live, all) = (outcome.live_after.unwrap(), outcome.all_after.unwrap());
        assert!(live < all, "{live} {all}");
        // 2 live streamers, 2 grants each at the bridges' 32/min: about 6 s.
        assert!(live < 15.0, "{live}");
        // 40 streamers, 2 grants each, at most 32 a minute: no faster than 148 s.
        assert!(all >= 140.0, "{all}");
        assert!(outcome.max_in_60s <= 60);
        assert_eq!(outcome.subscribed_at_end, 40);
    }

    #[test]
    fn a_small_mass_reconnect_starves_neither_routine_polls_nor_reconciliation() {
        // Reconciliation polls wait long on the realtime share while resubscribes take the
        // bridges' part of it, but hold at most half the poller's slots: routine polling
        // keeps at least its fifth of the budget, and the resubscribed are reconciled meanwhile.
        let outcome = simulate(100, Scenario::Reconnect);
        let per = outcome.per_minute;
        let routine = per[Priority::Poll.index()];
        assert!(routine >= 11.0, "{routine}");
        assert!(outcome.routine_min >= 10, "{}", outcome.routine_min);
        let reconcile = per[Priority::Reconcile.index()];
        assert!(reconcile >= 5.0, "{reconcile}");
        assert!(outcome.max_in_60s <= 60);
        assert_eq!(outcome.subscribed_at_end, 100);
    }

    #[test]
    fn a_reconciliation_backlog_never_hides_routine_polls() {
        // 500 sockets drop: resubscribes outpace reconciliation, and hundreds of
        // reconciliation polls, more overdue than any routine streamer, wait for the realtime
        // share. The poller passes over those beyond their slots, so routine polls keep about
        // their fifth of the budget in every minute, and everyone is resubscribed.
        let outcome = simulate(500, Scenario::Reconnect);
        assert!(outcome.routine_min >= 10, "{}", outcome.routine_min);
        let per = outcome.per_minute;
        let routine = per[Priority::Poll.index()];
        assert!(routine >= 11.0, "{routine}");
        assert!(per[Priority::Reconcile.index()] > 0.0);
        assert!(outcome.max_in_60s <= 60);
        assert_eq!(outcome.subscribed_at_end, 500);
    }
}
