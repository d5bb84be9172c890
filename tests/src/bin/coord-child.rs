//! A second (third, …) process for the multi-process tests: writes through the store,
//! takes locks, publishes events or asks the rate limiter, and reports on stdout one line
//! per result so the test can check every acknowledged outcome.

use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use shared::config::{JournalMode, SqliteConfig};
use shared::coordination::memory::InProcessCoordinator;
use shared::coordination::{Coordinator, Published, RateLimit};
use shared::events::BusEvent;
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
        } => write(db, redis, &journal, streamer, start, count, concurrency).await,
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
                    Ok(()) => say(format!("ok {id}")),
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
        if !coordinator.release(&lock).await.unwrap_or(false) {
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
        match coordinator.publish(&event).await {
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
        match coordinator.rate_limit(&key, &limit).await {
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
