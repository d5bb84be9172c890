//! Detection latency of the poll schedule under DonationAlerts' real budget (60 requests a
//! minute for the whole application), on a virtual clock: the real [`Schedule`] and the
//! real GCRA arithmetic decide who is polled each second, against a plain round robin fed
//! the same donations. Latency is the time from a donation's creation to the poll that
//! finds it (the event follows in the same write).

use std::time::Duration;

use shared::coordination::{RateLimit, gcra};
use shared::poll::schedule::{PollOutcome, Schedule, SchedulePolicy};
use tokio::time::Instant;

use crate::Row;

/// Two virtual hours.
const SIMULATED: Duration = Duration::from_secs(2 * 3600);
/// A live streamer gets a donation every 2 minutes on average, the others every 30.
const LIVE_MEAN_GAP: f64 = 120.0;
const IDLE_MEAN_GAP: f64 = 1800.0;

/// A small deterministic generator, so both policies see the same donations every run.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }

    /// An exponential gap with the given mean (Poisson arrivals).
    pub(crate) fn gap(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// Donation times (seconds) per streamer; streamers `0..live` are live.
fn donations(streamers: usize, live: usize) -> Vec<Vec<f64>> {
    donations_until(streamers, live, SIMULATED.as_secs_f64())
}

/// [`donations`] over `horizon` seconds.
pub(crate) fn donations_until(streamers: usize, live: usize, horizon: f64) -> Vec<Vec<f64>> {
    let mut rng = Lcg(0x5eed);
    (0..streamers)
        .map(|i| {
            let mean = if i < live {
                LIVE_MEAN_GAP
            } else {
                IDLE_MEAN_GAP
            };
            let mut times = Vec::new();
            let mut t = rng.gap(mean);
            while t < horizon {
                times.push(t);
                t += rng.gap(mean);
            }
            times
        })
        .collect()
}

/// Latencies (seconds) of live and other streamers' donations when polled in this order.
pub(crate) struct Latencies {
    pub(crate) live: Vec<f64>,
    pub(crate) all: Vec<f64>,
}

pub(crate) fn p95(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)]
}

/// Runs one policy: every virtual second the limiter may grant one poll; `pick` chooses the
/// streamer (or none). Returns the latencies of every donation found.
fn simulate(
    streamers: usize,
    live: usize,
    mut pick: impl FnMut(Instant, f64) -> Option<usize>,
    mut polled: impl FnMut(usize, usize, Instant),
) -> Latencies {
    let donations = donations(streamers, live);
    let mut seen = vec![0usize; streamers];
    let limit = RateLimit::per_minute(60);
    let mut tat = 0u64;
    let start = Instant::now();
    let mut latencies = Latencies {
        live: Vec::new(),
        all: Vec::new(),
    };
    // Steps of 100 ms: the limiter, not the step, sets the pace.
    let steps = SIMULATED.as_millis() as u64 / 100;
    for step in 0..steps {
        let now_s = step as f64 / 10.0;
        let now = start + Duration::from_millis(step * 100);
        let (decision, next_tat) = gcra::decide(&limit, tat, step * 100_000);
        if !decision.allowed {
            continue;
        }
        let Some(streamer) = pick(now, now_s) else {
            continue;
        };
        tat = next_tat;
        let mut found = 0;
        for &t in donations[streamer][seen[streamer]..]
            .iter()
            .take_while(|&&t| t <= now_s)
        {
            let latency = now_s - t;
            if streamer < live {
                latencies.live.push(latency);
            }
            latencies.all.push(latency);
            found += 1;
        }
        seen[streamer] += found;
        polled(streamer, found, now);
    }
    latencies
}

pub(crate) fn weighted(streamers: usize, live: usize) -> Latencies {
    let policy = SchedulePolicy::for_budget(60, 0.1, Duration::from_secs(5));
    let schedule = std::cell::RefCell::new(Schedule::new(policy));
    let start = Instant::now();
    schedule.borrow_mut().sync(0..streamers, start);
    schedule.borrow_mut().set_live(0..live, start);
    schedule.borrow_mut().refresh_intervals(start);
    let mut last_refresh = start;
    simulate(
        streamers,
        live,
        |now, _| {
            let mut schedule = schedule.borrow_mut();
            if now.duration_since(last_refresh) >= Duration::from_secs(1) {
                schedule.refresh_intervals(now);
                last_refresh = now;
            }
            schedule.due(now, 1).pop()
        },
        |streamer, found, now| {
            schedule.borrow_mut().record(
                &streamer,
                PollOutcome::Polled {
                    new_donations: found,
                },
                now,
            );
        },
    )
}

fn round_robin(streamers: usize, live: usize) -> Latencies {
    let mut next = 0;
    simulate(
        streamers,
        live,
        |_, _| {
            let streamer = next;
            next = (next + 1) % streamers;
            Some(streamer)
        },
        |_, _, _| {},
    )
}

/// The weighted schedule's detection p95 (seconds) for live and for all streamers, with
/// `live` of `streamers` live (the figures [`rows`] prints, for other groups' baselines), then
/// how many donations the simulation found and how many were made (those not found by its
/// end count in no latency).
pub(crate) fn weighted_p95(streamers: usize, live: usize) -> (f64, f64, usize, usize) {
    let mut schedule = weighted(streamers, live);
    let made = donations(streamers, live).iter().map(Vec::len).sum();
    (
        p95(&mut schedule.live),
        p95(&mut schedule.all),
        schedule.all.len(),
        made,
    )
}

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (streamers, live) in [(50, 5), (500, 50)] {
        let mut schedule = weighted(streamers, live);
        let mut baseline = round_robin(streamers, live);
        let detail = format!(
            "{streamers} streamers, {live} live, 60 requests/min, 2 virtual hours, {} donations \
             (targets at 50: live ≤ 15 s, all ≤ 120 s)",
            schedule.all.len()
        );
        rows.push(Row {
            name: format!("detection p95, weighted schedule, {streamers} streamers"),
            figure: format!(
                "live {:.1} s, all {:.1} s",
                p95(&mut schedule.live),
                p95(&mut schedule.all)
            ),
            detail: detail.clone(),
        });
        rows.push(Row {
            name: format!("detection p95, round robin, {streamers} streamers"),
            figure: format!(
                "live {:.1} s, all {:.1} s",
                p95(&mut baseline.live),
                p95(&mut baseline.all)
            ),
            detail,
        });
    }
    rows
}
