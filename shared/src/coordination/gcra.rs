//! GCRA (generic cell rate algorithm): the rate limiter's arithmetic, shared by the Redis
//! script (which runs the same steps on the server's clock) and the in-process limiter.
//!
//! A budget of `limit` grants per `period` with bursts of up to `burst` is turned into an
//! emission interval `T = ceil(period / (limit - burst + 1))` and a tolerance
//! `tau = (burst - 1) * T`. Then any half-open window of length `period` holds at most
//! `ceil((period + tau) / T) = limit` grants: the budget is never exceeded, even by a burst.

use std::time::Duration;

/// An app-wide request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub period: Duration,
    pub burst: u32,
}

impl RateLimit {
    /// `limit` per minute, one at a time (the steady 1 request/second DonationAlerts asks for).
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
            burst: 1,
        }
    }

    /// Emission interval in microseconds (rounded up, so rounding never adds a grant).
    pub(crate) fn interval_us(&self) -> u64 {
        let cells = u64::from(self.limit.saturating_sub(self.burst.max(1)) + 1);
        (self.period.as_micros() as u64).div_ceil(cells)
    }

    /// Burst tolerance in microseconds.
    pub(crate) fn tolerance_us(&self) -> u64 {
        u64::from(self.burst.max(1).min(self.limit) - 1) * self.interval_us()
    }
}

/// Who asks for a grant of a shared budget, most urgent first (SPEC section 9). When grants
/// are scarce, a caller is refused while a more urgent one is waiting for the same budget:
/// each refused caller leaves a "waiting" mark for its class that lasts until its retry (see
/// [`waiting_mark_ttl`]), and a less urgent caller that finds one steps aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A streamer is waiting in the browser (the DonationAlerts connect callback).
    Interactive = 0,
    /// The bridge resubscribing a streamer whose socket dropped.
    Resubscribe = 1,
    /// A poll that reconciles behind a live subscription.
    Reconcile = 2,
    /// The bridge subscribing a streamer for the first time.
    Subscribe = 3,
    /// A routine poll.
    Poll = 4,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Self::Interactive,
        Self::Resubscribe,
        Self::Reconcile,
        Self::Subscribe,
        Self::Poll,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How long a refused caller's "waiting" mark outlives its `retry_after`: long enough for the
/// caller to come back, short enough that a caller that gave up blocks the less urgent ones
/// only briefly.
pub const WAITING_GRACE: Duration = Duration::from_millis(250);

/// The lifetime of the mark a refused caller leaves.
pub fn waiting_mark_ttl(retry_after: Duration) -> Duration {
    retry_after + WAITING_GRACE
}

/// One GCRA step for a caller of `priority` when `more_urgent_waiting` says whether a more
/// urgent caller has a live waiting mark: granted only when the limiter allows it and no more
/// urgent caller waits (that caller is told to come back when the grant is due, so it takes
/// it). A caller stepping aside is told to come back after one emission interval.
pub fn decide_prioritized(
    limit: &RateLimit,
    tat: u64,
    now: u64,
    more_urgent_waiting: bool,
) -> (RateDecision, u64) {
    let (decision, new_tat) = decide(limit, tat, now);
    if decision.allowed && more_urgent_waiting {
        let stepped_aside = RateDecision {
            allowed: false,
            retry_after: Duration::from_micros(limit.interval_us()),
            remaining: 0,
            at_us: now,
        };
        return (stepped_aside, tat);
    }
    (decision, new_tat)
}

/// What the limiter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// How long until a request would be allowed (zero when allowed).
    pub retry_after: Duration,
    /// Requests that would be allowed right now after this one.
    pub remaining: u32,
    /// The limiter's clock at the decision, in microseconds (the Redis server's clock).
    pub at_us: u64,
}

/// One GCRA step. `tat` is the stored theoretical arrival time (0 when none); returns the
/// decision and the new `tat` to store (unchanged when denied).
pub fn decide(limit: &RateLimit, tat: u64, now: u64) -> (RateDecision, u64) {
    let interval = limit.interval_us();
    let tolerance = limit.tolerance_us();
    let tat = tat.max(now);
    let allow_at = tat.saturating_sub(tolerance);
    if now < allow_at {
        let decision = RateDecision {
            allowed: false,
            retry_after: Duration::from_micros(allow_at - now),
            remaining: 0,
            at_us: now,
        };
        return (decision, tat);
    }
    let new_tat = tat + interval;
    // Grants still allowed at `now`: those whose arrival time fits inside the tolerance.
    let remaining = if now + tolerance >= new_tat {
        (now + tolerance - new_tat) / interval + 1
    } else {
        0
    };
    let decision = RateDecision {
        allowed: true,
        retry_after: Duration::ZERO,
        remaining: remaining as u32,
        at_us: now,
    };
    (decision, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_grants_in_any_window(grants: &[u64], window: u64) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..grants.len() {
            while grants[end] - grants[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// Hammers the limiter with requests at `step_us` spacing for `span` (at most 200,000
    /// requests) and returns grant times.
    fn simulate(limit: &RateLimit, step_us: u64, span_us: u64) -> Vec<u64> {
        let span_us = span_us.min(step_us * 200_000);
        let mut tat = 0;
        let mut grants = Vec::new();
        let mut now = 1_000_000;
        while now < 1_000_000 + span_us {
            let (decision, new_tat) = decide(limit, tat, now);
            tat = new_tat;
            if decision.allowed {
                grants.push(now);
            }
            now += step_us;
        }
        grants
    }

    #[test]
    fn sixty_per_minute_never_exceeds_sixty_in_any_minute() {
        let limit = RateLimit::per_minute(60);
        for step in [1, 997, 10_000, 333_333, 1_000_000, 1_500_001] {
            // Small steps cover fewer minutes; every run spans several windows.
            let grants = simulate(&limit, step, 300_000_000);
            assert!(
                max_grants_in_any_window(&grants, 60_000_000) <= 60,
                "step {step}"
            );
        }
        // And the budget is used: a steady caller gets one per second.
        let grants = simulate(&limit, 1_000, 60_000_000);
        assert_eq!(grants.len(), 60);
    }

    #[test]
    fn bursts_stay_inside_the_budget() {
        for burst in [1, 2, 10, 59, 60] {
            let limit = RateLimit {
                limit: 60,
                period: Duration::from_secs(60),
                burst,
            };
            for step in [1_000, 7_919, 250_000, 999_999] {
                let grants = simulate(&limit, step, 400_000_000);
                assert!(
                    max_grants_in_any_window(&grants, 60_000_000) <= 60,
                    "burst {burst} step {step}"
                );
            }
            let first = simulate(&limit, 1, 1_000);
            assert_eq!(
                first.len(),
                burst as usize,
                "an idle limiter allows one burst"
            );
        }
    }

    #[test]
    fn a_less_urgent_caller_steps_aside_for_a_waiting_one_and_the_budget_holds() {
        let limit = RateLimit::per_minute(60);
        let (granted, tat) = decide_prioritized(&limit, 0, 1_000_000, false);
        assert!(granted.allowed);
        // One second later a grant is due, but a more urgent caller waits for it.
        let (aside, same_tat) = decide_prioritized(&limit, tat, 2_000_000, true);
        assert!(!aside.allowed);
        assert_eq!(same_tat, tat, "stepping aside spends nothing");
        assert_eq!(aside.retry_after, Duration::from_secs(1));
        // The urgent caller comes back and takes it.
        let (urgent, _) = decide_prioritized(&limit, tat, 2_000_000, false);
        assert!(urgent.allowed);
        // A refusal for want of budget is a refusal whatever waits.
        let (early, _) = decide_prioritized(&limit, tat, 1_500_000, false);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Duration::from_millis(500));
    }

    #[test]
    fn priorities_run_most_urgent_first() {
        assert!(Priority::Interactive < Priority::Resubscribe);
        assert!(Priority::Resubscribe < Priority::Reconcile);
        assert!(Priority::Reconcile < Priority::Subscribe);
        assert!(Priority::Subscribe < Priority::Poll);
        for (n, p) in Priority::ALL.iter().enumerate() {
            assert_eq!(p.index(), n);
        }
    }

    #[test]
    fn a_denial_says_when_to_come_back() {
        let limit = RateLimit::per_minute(60);
        let (first, tat) = decide(&limit, 0, 5_000_000);
        assert!(first.allowed);
        let (second, same_tat) = decide(&limit, tat, 5_250_000);
        assert!(!second.allowed);
        assert_eq!(same_tat, tat);
        assert_eq!(second.retry_after, Duration::from_millis(750));
        let burst = RateLimit {
            burst: 5,
            ..RateLimit::per_minute(60)
        };
        assert_eq!(decide(&burst, 0, 5_000_000).0.remaining, 4);
        assert_eq!(first.remaining, 0);
    }
}
