//! The realtime bridge's figures: counted by the bridge, read by `/health` (summed across
//! bridge processes through Redis) and by the metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::domain::now_ms;

/// How many recent push → stream-entry latencies the p95 is taken over.
const LATENCY_SAMPLES: usize = 1024;

/// What one bridge process has done. Counters only grow.
#[derive(Debug, Default)]
pub struct RealtimeStats {
    /// Shards this process holds the lease of.
    pub shards_held: AtomicUsize,
    /// Sockets open (connected, subscribed or not yet).
    pub connected: AtomicUsize,
    /// Sockets subscribed to their streamer's donation channel.
    pub subscribed: AtomicUsize,
    /// Sockets opened again after a drop.
    pub reconnects: AtomicU64,
    /// Donations pushed to this process.
    pub pushes: AtomicU64,
    /// Unix ms of the last push; 0 before the first.
    pub last_push_at: AtomicI64,
    /// Pushes whose write the fence refused (the shard had moved on).
    pub stale_fences: AtomicU64,
    /// The latest push → stream entry latencies, in µs.
    latencies_us: Mutex<VecDeque<u64>>,
    /// The counters the previous EMF record was made from: records carry differences.
    emf_emitted: Mutex<RealtimeCounts>,
}

/// The realtime counters an EMF record carries as differences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RealtimeCounts {
    pub reconnects: u64,
    pub pushes: u64,
    pub stale_fences: u64,
}

/// What one bridge reports for `/health` (stored in Redis, summed across bridges).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeFigures {
    /// Unix ms of this report.
    pub reported_at: i64,
    pub shards_held: usize,
    pub connected: usize,
    pub subscribed: usize,
    pub reconnects: u64,
    pub pushes: u64,
    /// RFC 3339 UTC of the last push, if any.
    pub last_push_at: Option<String>,
    /// p95 of the latest push → stream entry latencies, in ms (`None` before any).
    #[serde(rename = "pushToEventMsP95")]
    pub push_to_event_ms_p95: Option<f64>,
}

impl RealtimeStats {
    pub(crate) fn count_push(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.last_push_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Notes how long a pushed donation took to reach the event stream.
    pub(crate) fn note_push_to_event(&self, took: Duration) {
        let mut samples = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == LATENCY_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took.as_micros() as u64);
    }

    /// p95 of the latest push → stream entry latencies, in ms.
    pub fn push_to_event_p95_ms(&self) -> Option<f64> {
        let samples = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        if samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<u64> = samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
    }

    /// What the counters grew by since the previous call (the first: since the start).
    pub(crate) fn counts_since_last_record(&self) -> RealtimeCounts {
        let mut emitted = self.emf_emitted.lock().unwrap_or_else(|p| p.into_inner());
        let now = RealtimeCounts {
            reconnects: self.reconnects.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            stale_fences: self.stale_fences.load(Ordering::Relaxed),
        };
        let delta = RealtimeCounts {
            reconnects: now.reconnects.saturating_sub(emitted.reconnects),
            pushes: now.pushes.saturating_sub(emitted.pushes),
            stale_fences: now.stale_fences.saturating_sub(emitted.stale_fences),
        };
        *emitted = now;
        delta
    }

    /// This bridge's figures now.
    pub fn figures(&self) -> RealtimeFigures {
        let last = self.last_push_at.load(Ordering::Relaxed);
        RealtimeFigures {
            reported_at: now_ms(),
            shards_held: self.shards_held.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            last_push_at: (last > 0).then(|| crate::domain::rfc3339_utc(last)),
            push_to_event_ms_p95: self.push_to_event_p95_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p95_is_taken_over_the_latest_samples() {
        let stats = RealtimeStats::default();
        assert_eq!(stats.push_to_event_p95_ms(), None);
        for ms in 1..=100 {
            stats.note_push_to_event(Duration::from_millis(ms));
        }
        assert_eq!(stats.push_to_event_p95_ms(), Some(95.0));
        for _ in 0..LATENCY_SAMPLES {
            stats.note_push_to_event(Duration::from_millis(2));
        }
        assert_eq!(stats.push_to_event_p95_ms(), Some(2.0));
    }
}
