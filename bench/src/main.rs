//! `avatar-bench`: every benchmark, printed as a Markdown table (copy it into BENCHMARKS.md).
//!
//! 1. Writer group commit vs one transaction per write: 10,000 donation rows with
//!    `synchronous=FULL`, in WAL and in rollback-journal (`delete`) mode.
//! 2. Lock acquire+release vs two PINGs against a private loopback redis-server, through the
//!    same connection type: the lock should cost no extra round trips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use avatar_tests::{RedisServer, insert_test_donation, redis_coordinator};
use shared::config::{JournalMode, SqliteConfig};
use shared::coordination::Coordinator;
use shared::coordination::memory::InProcessCoordinator;
use shared::store::Store;

const ROWS: i64 = 10_000;
/// Concurrent callers feeding the writer (writes in flight at once).
const CALLERS: [i64; 4] = [16, 64, 256, 1024];
const LOCK_ROUNDS: usize = 5_000;

struct Row {
    name: String,
    figure: String,
    detail: String,
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    for mode in [JournalMode::Wal, JournalMode::Delete] {
        let single = transaction_per_write(mode);
        rows.push(Row {
            name: format!("one transaction per write ({})", mode.as_str()),
            figure: format!("{:.0} rows/s", ROWS as f64 / single.as_secs_f64()),
            detail: format!("{ROWS} rows, one connection, {single:.2?}"),
        });
        for callers in CALLERS {
            let (grouped, commits) = group_commit(mode, callers).await;
            rows.push(Row {
                name: format!("writer, group commit ({}), {callers} callers", mode.as_str()),
                figure: format!(
                    "{:.0} rows/s, {:.1}x",
                    ROWS as f64 / grouped.as_secs_f64(),
                    single.as_secs_f64() / grouped.as_secs_f64()
                ),
                detail: format!(
                    "{ROWS} rows in {grouped:.2?}, {commits} commits (target: 20x and 50,000 rows/s)"
                ),
            });
        }
    }
    rows.extend(lock_round_trips().await);

    println!("| benchmark | result | detail |");
    println!("|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.name, row.figure, row.detail);
    }
}

/// Returns the time to write ROWS rows through the writer and the number of commits it made.
async fn group_commit(journal_mode: JournalMode, callers_count: i64) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteConfig {
        path: dir.path().join("bench.sqlite"),
        journal_mode,
        read_connections: 1,
    };
    let store = Store::open(
        &config,
        &Coordinator::InProcess(InProcessCoordinator::new()),
    )
    .await
    .expect("store");
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut callers = Vec::new();
    for _ in 0..callers_count {
        let store = store.clone();
        let next = next.clone();
        callers.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= ROWS {
                    return;
                }
                store
                    .write(move |conn| insert_test_donation(conn, "bench", id))
                    .await
                    .expect("write");
            }
        }));
    }
    for caller in callers {
        caller.await.expect("caller");
    }
    let elapsed = started.elapsed();
    assert_eq!(count(&config.path), ROWS);
    let commits = store
        .writer_stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    (elapsed, commits - 1)
}

fn transaction_per_write(journal_mode: JournalMode) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", journal_mode.as_str())
        .expect("journal mode");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    for migration in shared::store::schema::MIGRATIONS {
        conn.execute_batch(migration).expect("schema");
    }
    let started = Instant::now();
    for id in 0..ROWS {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        insert_test_donation(&conn, "bench", id).expect("insert");
        conn.execute_batch("COMMIT").expect("commit");
    }
    let elapsed = started.elapsed();
    assert_eq!(count(&path), ROWS);
    elapsed
}

fn count(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .and_then(|c| c.query_row("SELECT count(*) FROM donations", [], |r| r.get(0)))
        .expect("count")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn lock_round_trips() -> Vec<Row> {
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let mut locks = Vec::with_capacity(LOCK_ROUNDS);
    let mut pings = Vec::with_capacity(LOCK_ROUNDS);
    // The first 200 rounds warm up (connect, load the scripts) and are not counted. Lock and
    // PING rounds are interleaved, so both see the same machine conditions.
    for round in 0..200 + LOCK_ROUNDS {
        let started = Instant::now();
        coordinator.ping().await.expect("ping");
        coordinator.ping().await.expect("ping");
        let ping_time = started.elapsed();

        let started = Instant::now();
        let lock = coordinator
            .try_lock("locks:bench", Duration::from_millis(4500))
            .await
            .expect("lock")
            .expect("free");
        coordinator.release(&lock).await.expect("release");
        if round >= 200 {
            pings.push(ping_time);
            locks.push(started.elapsed());
        }
    }
    locks.sort();
    pings.sort();
    let median_ratio =
        percentile(&locks, 0.5).as_secs_f64() / percentile(&pings, 0.5).as_secs_f64();
    vec![
        Row {
            name: "lock acquire + release (loopback Redis)".into(),
            figure: format!("p50 {:.1?}", percentile(&locks, 0.5)),
            detail: format!("p99 {:.1?}, {LOCK_ROUNDS} rounds", percentile(&locks, 0.99)),
        },
        Row {
            name: "two PINGs (same connection)".into(),
            figure: format!("p50 {:.1?}", percentile(&pings, 0.5)),
            detail: format!("p99 {:.1?}, {LOCK_ROUNDS} rounds", percentile(&pings, 0.99)),
        },
        Row {
            name: "lock / two PINGs".into(),
            figure: format!("{median_ratio:.2}x"),
            detail: "ratio of medians; target: within 1.5x".into(),
        },
    ]
}
