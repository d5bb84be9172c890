//! The poller's figures: counted by the poll loop and every poll, read by `/health` (summed
//! across instances through Redis) and by the metrics.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::domain::now_ms;

/// What the poller has done, for `/health` and the metrics. Counters only grow.
#[derive(Debug, Default)]
pub struct PollStats {
    pub polled: AtomicU64,
    pub skipped_locked: AtomicU64,
    pub donations_found: AtomicU64,
    pub errors: AtomicU64,
    /// Failed polls whose cause was DonationAlerts (an error answer, garbage, no answer in
    /// time); also counted in `errors`.
    pub provider_errors: AtomicU64,
    pub budget_waits: AtomicU64,
    /// Polls whose record a newer lock holder had overtaken (refused by the fencing check).
    pub stale_fences: AtomicU64,
    /// Grants left in the shared budget at the last decision.
    pub budget_remaining: AtomicU32,
    pub streamer_count: AtomicUsize,
    /// Streamers live on Twitch at the last check.
    pub live: AtomicUsize,
    /// Streamers with a live realtime subscription (polled only to reconcile).
    pub subscribed: AtomicUsize,
    pub concurrency: AtomicUsize,
    /// The current idle interval in ms.
    pub interval_ms: AtomicU64,
    /// Streamers due now and not yet being polled.
    pub queue_size: AtomicUsize,
    /// Entries in the streamer cache.
    pub cached: AtomicUsize,
    /// Polls in flight.
    pub pending: AtomicUsize,
    pub backing_off: AtomicUsize,
    /// Unix ms of the last completed loop round; 0 before the first.
    pub last_run_at: AtomicI64,
    pub last_run_duration_ms: AtomicU64,
}

/// What one poller reports for `/health` (stored in Redis, summed across instances).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollFigures {
    /// Unix ms of this report.
    pub reported_at: i64,
    pub streamer_count: usize,
    #[serde(default)]
    pub live: usize,
    pub concurrency: usize,
    /// The idle poll interval in ms (live streamers and recent donors are polled faster).
    pub interval: u64,
    pub queue_size: usize,
    #[serde(default)]
    pub cached: usize,
    pub pending: usize,
    pub backing_off: usize,
    pub last_run_at: i64,
    pub last_run_duration_ms: u64,
    pub polled: u64,
    pub skipped_locked: u64,
    pub donations_found: u64,
    pub errors: u64,
    pub budget_waits: u64,
    pub rate_limit_remaining: u32,
}

impl PollStats {
    /// This poller's figures now.
    pub fn figures(&self) -> PollFigures {
        let counts = self.snapshot();
        PollFigures {
            reported_at: now_ms(),
            streamer_count: self.streamer_count.load(Ordering::Relaxed),
            live: self.live.load(Ordering::Relaxed),
            concurrency: self.concurrency.load(Ordering::Relaxed),
            interval: self.interval_ms.load(Ordering::Relaxed),
            queue_size: self.queue_size.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            backing_off: self.backing_off.load(Ordering::Relaxed),
            last_run_at: self.last_run_at.load(Ordering::Relaxed),
            last_run_duration_ms: self.last_run_duration_ms.load(Ordering::Relaxed),
            polled: counts.polled,
            skipped_locked: counts.skipped_locked,
            donations_found: counts.donations_found,
            errors: counts.errors,
            budget_waits: counts.budget_waits,
            rate_limit_remaining: self.budget_remaining.load(Ordering::Relaxed),
        }
    }
}

/// The counters of [`PollStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCounts {
    pub polled: u64,
    pub skipped_locked: u64,
    pub donations_found: u64,
    pub errors: u64,
    pub provider_errors: u64,
    pub budget_waits: u64,
}

impl PollStats {
    pub fn snapshot(&self) -> PollCounts {
        PollCounts {
            polled: self.polled.load(Ordering::Relaxed),
            skipped_locked: self.skipped_locked.load(Ordering::Relaxed),
            donations_found: self.donations_found.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            provider_errors: self.provider_errors.load(Ordering::Relaxed),
            budget_waits: self.budget_waits.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_polled(&self, new_donations: usize) {
        self.polled.fetch_add(1, Ordering::Relaxed);
        self.donations_found
            .fetch_add(new_donations as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_skipped_locked(&self) {
        self.skipped_locked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_provider_error(&self) {
        self.provider_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_stale_fence(&self) {
        self.stale_fences.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_budget_wait(&self) {
        self.budget_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_budget(&self, remaining: u32) {
        self.budget_remaining.store(remaining, Ordering::Relaxed);
    }
}
