//! A second (third, …) process for the multi-process tests: writes through the store,
//! takes locks, publishes events or asks the rate limiter, and reports on stdout one line
//! per result so the test can check every acknowledged outcome.

use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shared::config::{JournalMode, SqliteConfig};
use shared::coordination::memory::InProcessCoordinator;
use shared::coordination::{Coordinator, Published, RateLimit};
use shared::domain::event::BusEvent;
use shared::store::Store;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Writes donation rows `start..start+count` for `streamer`; prints `ok ID` once each is
    /// committed, `err ID MESSAGE` on failure.
    Write {
        #[arg(long)]
        db: std::path::PathBuf,
        #[arg(long)]
        redis: Option<String>,
        #[arg(long, default_value = "wal")]
        journal: String,
        #[arg(long)]
        streamer: String,
        #[arg(long, default_value_t = 0)]
        start: i64,
        #[arg(long)]
        count: i64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Once this many writes are acknowledged, the next time the writer holds the lease
        /// for a batch (before the batch begins), print `stopped-holding-lease FENCE` and
        /// stop this process (SIGSTOP) until the test resumes it; afterwards print
        /// `fenced-out N` whenever the writer's count of batches refused by the fencing
        /// check rises.
        #[arg(long)]
        stop_holding_lease_after: Option<u64>,
    },
    /// Takes `resource` `rounds` times; inside each hold, reads and rewrites a counter with a
    /// plain GET then SET (a lost update would show a broken mutual exclusion) and prints
    /// `held FENCE COUNTER_BEFORE`.
    Lock {
        #[arg(long, num_args = 1.., required = true)]
        redis: Vec<String>,
        #[arg(long)]
        resource: String,
        #[arg(long)]
        rounds: u32,
    },
    /// Publishes donation events with ids `from..to`; prints `appended ID` or `duplicate ID`.
    Publish {
        #[arg(long)]
        redis: String,
        #[arg(long)]
        from: i64,
        #[arg(long)]
        to: i64,
    },
    /// Asks the limiter as fast as it can for `duration_ms`; prints `grant MICROS` (Redis
    /// server time) for each grant.
    Limit {
        #[arg(long)]
        redis: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        limit: u32,
        #[arg(long)]
        period_ms: u64,
        #[arg(long, default_value_t = 1)]
        burst: u32,
        #[arg(long)]
        duration_ms: u64,
    },
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let failed = match Cli::parse().command {
        Task::Write {
            db,
            redis,
            journal,
            streamer,
            start,
            count,
            concurrency,
            stop_holding_lease_after,
        } => {
            if let Some(after) = stop_holding_lease_after {
                stop_at_lease::arm(after);
            }
            write(db, redis, &journal, streamer, start, count, concurrency).await
        }
        Task::Lock {
            redis,
            resource,
            rounds,
        } => lock(redis, resource, rounds).await,
        Task::Publish { redis, from, to } => publish(redis, from, to).await,
        Task::Limit {
            redis,
            key,
            limit,
            period_ms,
            burst,
            duration_ms,
        } => {
            let limit = RateLimit {
                limit,
                period: Duration::from_millis(period_ms),
                burst,
            };
            rate_limit(redis, key, limit, Duration::from_millis(duration_ms)).await
        }
    };
    std::process::exit(if failed { 3 } else { 0 });
}

async fn write(
    db: std::path::PathBuf,
    redis: Option<String>,
    journal: &str,
    streamer: String,
    start: i64,
    count: i64,
    concurrency: usize,
) -> bool {
    let coordinator = match redis {
        Some(url) => avatar_tests::redis_coordinator(&[url]),
        None => Coordinator::InProcess(InProcessCoordinator::new()),
    };
    let config = SqliteConfig {
        path: db,
        journal_mode: if journal == "delete" {
            JournalMode::Delete
        } else {
            JournalMode::Wal
        },
        read_connections: 1,
    };
    let store = match Store::open(&config, &coordinator).await {
        Ok(store) => store,
        Err(e) => {
            say(format!("open-failed {e}"));
            return true;
        }
    };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(start));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let store = store.clone();
        let next = next.clone();
        let streamer = streamer.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = false;
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= start + count {
                    return failed;
                }
                let s = streamer.clone();
                match store
                    .write(move |conn| avatar_tests::insert_test_donation(conn, &s, id))
                    .await
                {
                    Ok(()) => {
                        say(format!("ok {id}"));
                        stop_at_lease::acknowledged(store.writer_stats());
                    }
                    Err(e) => {
                        failed = true;
                        say(format!("err {id} {e}"));
                    }
                }
            }
        }));
    }
    let mut failed = false;
    for task in tasks {
        failed |= task.await.unwrap_or(true);
    }
    failed
}

async fn lock(redis: Vec<String>, resource: String, rounds: u32) -> bool {
    let coordinator = avatar_tests::redis_coordinator(&redis);
    let mut counter = redis::Client::open(redis[0].as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let counter_key = format!("{resource}:counter");
    for _ in 0..rounds {
        let lock = match coordinator
            .locks()
            .lock_within(&resource, Duration::from_secs(5), Duration::from_secs(30))
            .await
        {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                say("timeout".into());
                return true;
            }
            Err(e) => {
                say(format!("error {e}"));
                return true;
            }
        };
        let before: i64 = redis::cmd("GET")
            .arg(&counter_key)
            .query_async::<Option<i64>>(&mut counter)
            .await
            .expect("GET")
            .unwrap_or(0);
        // Give another process every chance to interleave if exclusion were broken.
        tokio::task::yield_now().await;
        let _: () = redis::cmd("SET")
            .arg(&counter_key)
            .arg(before + 1)
            .query_async(&mut counter)
            .await
            .expect("SET");
        say(format!("held {} {before}", lock.fence));
        if !coordinator.locks().release(&lock).await.unwrap_or(false) {
            say("release-failed".into());
            return true;
        }
    }
    false
}

async fn publish(redis: String, from: i64, to: i64) -> bool {
    let coordinator = avatar_tests::redis_coordinator(&[redis]);
    for id in from..to {
        let event = sample_event(id);
        match coordinator.bus().publish(&event).await {
            Ok(Published::Appended) => say(format!("appended {id}")),
            Ok(Published::Duplicate) => say(format!("duplicate {id}")),
            Err(e) => {
                say(format!("error {id} {e}"));
                return true;
            }
        }
    }
    false
}

/// The donation event the bus tests publish for `id`.
pub fn sample_event(id: i64) -> BusEvent {
    avatar_tests::sample_donation_event(id)
}

async fn rate_limit(redis: String, key: String, limit: RateLimit, duration: Duration) -> bool {
    let coordinator = avatar_tests::redis_coordinator(&[redis]);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        match coordinator.budget().rate_limit(&key, &limit).await {
            Ok(decision) if decision.allowed => say(format!("grant {}", decision.at_us)),
            Ok(_) => {}
            Err(e) => {
                say(format!("error {e}"));
                return true;
            }
        }
    }
    false
}

/// `write --stop-holding-lease-after`: stops this process at the one moment a writer paused
/// past its lease can still believe it holds it (lease in hand, batch not begun), so the test
/// sees the fencing check, not luck, keep the stale writer out. The writer announces that
/// moment with a TRACE event; this subscriber listens for nothing else.
mod stop_at_lease {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use shared::store::WriterStats;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    static AFTER: AtomicU64 = AtomicU64::new(u64::MAX);
    static ACKNOWLEDGED: AtomicU64 = AtomicU64::new(0);
    static STOPPED: AtomicBool = AtomicBool::new(false);
    static STALE_REPORTED: AtomicU64 = AtomicU64::new(0);

    pub fn arm(after: u64) {
        AFTER.store(after, Ordering::SeqCst);
        tracing::subscriber::set_global_default(StopAtLease).expect("no other subscriber");
    }

    /// Counts an acknowledged write and reports a rise in refused stale batches.
    pub fn acknowledged(stats: &WriterStats) {
        ACKNOWLEDGED.fetch_add(1, Ordering::SeqCst);
        if AFTER.load(Ordering::SeqCst) == u64::MAX {
            return;
        }
        let stale = stats.stale_leases.load(Ordering::SeqCst);
        if STALE_REPORTED.fetch_max(stale, Ordering::SeqCst) < stale {
            super::say(format!("fenced-out {stale}"));
        }
    }

    struct StopAtLease;

    #[derive(Default)]
    struct LeaseEvent {
        fence: Option<u64>,
        beginning_a_batch: bool,
    }

    impl Visit for LeaseEvent {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "fence" {
                self.fence = Some(value);
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.beginning_a_batch = format!("{value:?}").contains("beginning a batch");
            }
        }
    }

    impl Subscriber for StopAtLease {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "shared::store::writer" && *metadata.level() == Level::TRACE
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut seen = LeaseEvent::default();
            event.record(&mut seen);
            let Some(fence) = seen.fence.filter(|_| seen.beginning_a_batch) else {
                return;
            };
            if ACKNOWLEDGED.load(Ordering::SeqCst) < AFTER.load(Ordering::SeqCst)
                || STOPPED.swap(true, Ordering::SeqCst)
            {
                return;
            }
            super::say(format!("stopped-holding-lease {fence}"));
            // SAFETY: raise(3) with a valid signal number; SIGSTOP stops the whole process
            // here, on the writer thread, until the test sends SIGCONT.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}
