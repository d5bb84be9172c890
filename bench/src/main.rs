//! `avatar-bench`: every benchmark, printed as a Markdown table (copy it into BENCHMARKS.md).
//!
//! 1. Writer group commit vs one transaction per write: 10,000 donation rows with
//!    `synchronous=FULL`, in WAL and in rollback-journal (`delete`) mode.
//! 2. Lock acquire+release vs two PINGs against a private loopback redis-server, through the
//!    same connection type: the lock should cost no extra round trips.
//! 3. Server-side time of `GET /auth/twitch` and of the callback (the provider round trips to
//!    the local fake Twitch measured and subtracted), single-instance and with Redis.
//! 4. Throughput of `GET /auth/twitch` on a release `avatar-local --demo` under `wrk` with 64
//!    connections (skipped with a note when wrk is not installed).

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
    // `avatar-bench [writer] [locks] [login] [http]`: the named groups; all without arguments.
    let groups: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |group: &str| groups.is_empty() || groups.iter().any(|g| g == group);
    let mut rows = Vec::new();
    if wanted("writer") {
        rows.extend(writer_rows().await);
    }
    if wanted("locks") {
        rows.extend(lock_round_trips().await);
    }
    if wanted("login") {
        rows.extend(login_server_time().await);
    }
    if wanted("http") {
        rows.extend(auth_start_throughput().await);
    }

    println!("| benchmark | result | detail |");
    println!("|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.name, row.figure, row.detail);
    }
}

/// One transaction per write against group commit at several concurrencies.
async fn writer_rows() -> Vec<Row> {
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
    rows
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

const AUTH_START_ROUNDS: usize = 2_000;
const CALLBACK_ROUNDS: usize = 300;

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// p50/p99 of the server's own time for auth-start and the callback.
async fn login_server_time() -> Vec<Row> {
    use tower::ServiceExt as _;
    let redis = RedisServer::start();
    let mut rows = Vec::new();
    for (mode, extra) in [
        ("single-instance", vec![]),
        ("Redis", vec![("REDIS_URL", redis.url())]),
    ] {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let app = avatar_tests::TestApp::spawn(&extra).await;
        let router = shared::http::router(app.app.clone());

        let mut starts = Vec::with_capacity(AUTH_START_ROUNDS);
        for round in 0..100 + AUTH_START_ROUNDS {
            let request = axum::http::Request::get("/auth/twitch")
                .body(axum::body::Body::empty())
                .expect("request");
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.expect("response");
            let elapsed = started.elapsed();
            assert_eq!(response.status(), 302);
            if round >= 100 {
                starts.push(elapsed);
            }
        }
        starts.sort();
        rows.push(Row {
            name: format!("auth-start server time ({mode})"),
            figure: format!("p99 {}", micros(percentile(&starts, 0.99))),
            detail: format!(
                "p50 {}, {AUTH_START_ROUNDS} requests in-process (target: p99 under 1 ms)",
                micros(percentile(&starts, 0.5))
            ),
        });

        let mut callbacks = Vec::with_capacity(CALLBACK_ROUNDS);
        let mut provider = Vec::with_capacity(CALLBACK_ROUNDS);
        for _ in 0..CALLBACK_ROUNDS {
            let browser = app.browser();
            let page = browser.start_login().await;
            let callback = browser.decide(&page, "authorize").await;
            let query = callback.split_once('?').map(|(_, q)| q.to_owned());
            let binding = shared::web::oauth_state::TWITCH_LOGIN.cookie_value(
                &app.app,
                &page.params["state"],
                shared::store::now_ms() + 300_000,
            );
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                "cookie",
                format!("avatar_oauth_twitch={binding}")
                    .parse()
                    .expect("cookie"),
            );
            let (response, timings) =
                shared::web::auth::complete_twitch_login(&app.app, query.as_deref(), &headers)
                    .await;
            assert_eq!(response.status(), 302);
            callbacks.push(timings.total.saturating_sub(timings.provider));
            provider.push(timings.provider);
        }
        callbacks.sort();
        provider.sort();
        rows.push(Row {
            name: format!("callback server time ({mode})"),
            figure: format!("p99 {}", micros(percentile(&callbacks, 0.99))),
            detail: format!(
                "p50 {}; provider round trips (3, to the local fake) p50 {} excluded; {CALLBACK_ROUNDS} logins (target: p99 under 3 ms)",
                micros(percentile(&callbacks, 0.5)),
                micros(percentile(&provider, 0.5))
            ),
        });
    }
    rows
}

/// `wrk -t2 -c64 -d10s` against a release avatar-local --demo.
async fn auth_start_throughput() -> Vec<Row> {
    let wrk_missing = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err();
    if wrk_missing {
        return vec![Row {
            name: "GET /auth/twitch throughput".into(),
            figure: "skipped".into(),
            detail: "wrk is not installed (scripts/bench.sh installs it)".into(),
        }];
    }
    let redis = RedisServer::start();
    let mut rows = Vec::new();
    for (mode, redis_url) in [("single-instance", None), ("Redis", Some(redis.url()))] {
        let binary = std::env::current_exe()
            .expect("current exe")
            .with_file_name("avatar-local");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = avatar_tests::free_port();
        let mut command = std::process::Command::new(&binary);
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(["--demo", "--port", &port.to_string(), "--demo-ports"])
            .arg(format!(
                "{},{}",
                avatar_tests::free_port(),
                avatar_tests::free_port()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(url) = &redis_url {
            command.env("REDIS_URL", url);
        }
        let mut server = command
            .spawn()
            .expect("release avatar-local (scripts/bench.sh builds it)");
        let url = format!("http://127.0.0.1:{port}/auth/twitch");
        let ready = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < ready, "avatar-local did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let output = std::process::Command::new("wrk")
            .args(["-t2", "-c64", "-d10s", "--latency", &url])
            .output()
            .expect("wrk runs");
        let _ = server.kill();
        let _ = server.wait();
        let text = String::from_utf8_lossy(&output.stdout);
        let rate = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned();
        let p99 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("99%"))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned();
        let non_2xx = text
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();
        rows.push(Row {
            name: format!("GET /auth/twitch throughput, avatar-local ({mode})"),
            figure: format!("{rate} req/s"),
            detail: format!("wrk -t2 -c64 -d10s, latency p99 {p99}, every answer a 302{non_2xx}"),
        });
    }
    rows
}
