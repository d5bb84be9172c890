//! `avatar-bench`: every benchmark, printed as a Markdown table (copy it into BENCHMARKS.md).
//!
//! 1. Writer group commit vs one transaction per write: 10,000 donation rows with
//!    `synchronous=FULL`, in WAL and in rollback-journal (`delete`) mode.
//! 2. Lock acquire+release vs two PINGs against a private loopback redis-server, through the
//!    same connection type: the lock should cost no extra round trips.
//! 3. Server-side time of `GET /auth/twitch` and of the callback (the provider round trips to
//!    the local fake Twitch measured and subtracted), single-instance and with Redis.
//! 4. Throughput of `GET /health` (with Redis) and `GET /auth/twitch` on a release
//!    `avatar-local --demo` under `wrk` with 64 connections, alone and while a slow client
//!    holds 1,000 half-sent requests open (skipped with a note when wrk is not installed).
//! 5. The DonationAlerts poller: the schedule's detection latency under the real budget on a
//!    virtual clock against round robin (`poll_schedule`); its CPU per poll and peak RSS at
//!    100 to 10,000 streamers, and donations per second through the writer and outbox to the
//!    stream (`poll_cost`).
//!    The realtime bridge's warm-up from cold and a mass reconnect (`warmup`), on the same
//!    virtual clock: time until every live streamer and every streamer is subscribed,
//!    detection p95 meanwhile beside polling only, and the budget's split.
//! 6. The token lifecycle (`tokens`): a validation run's achieved rate against the
//!    configured one and its memory, and the server time of the chat-token API.
//! 7. `sam local start-api` (`sam_local`): first and warm request latency through SAM's
//!    local API Gateway.
//! 8. The functions as Lambda starts and ships them (`coldstart`, `size`): init time, answer
//!    time and peak RSS of each release binary under the Runtime API emulator beside the
//!    smallest `lambda_http` function, also with `SECRETS_ARN`; each zipped `bootstrap`.
//! 9. The realtime bridge (`realtime`): one release `realtime` process holding 5,000
//!    streamers' sockets to the fake Centrifugo: warm-up time, idle CPU with pings, push →
//!    stream entry latency at 100 donations/s, peak RSS; beside the polling schedule's
//!    detection p95 for 500 and 5,000 streamers.

mod coldstart;
mod poll_cost;
mod poll_schedule;
mod realtime;
mod realtime_warmup;
mod sam_local;
mod tokens;

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
    // `avatar-bench [writer] [locks] [login] [http] [poll] [outbox] [pollcost] [validate]
    // [chattoken] [samlocal] [coldstart] [size] [realtime] [warmup]`: the named groups; all
    // without arguments.
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
        rows.extend(http_throughput().await);
    }
    if wanted("poll") {
        rows.extend(poll_schedule::rows());
    }
    if wanted("warmup") {
        rows.extend(realtime_warmup::rows());
    }
    if wanted("outbox") {
        rows.extend(poll_cost::throughput_rows().await);
    }
    if wanted("pollcost") {
        rows.extend(poll_cost::cost_rows().await);
    }
    if wanted("validate") {
        rows.extend(tokens::validation_rows().await);
    }
    if wanted("chattoken") {
        rows.extend(tokens::chat_token_rows().await);
    }
    if wanted("samlocal") {
        rows.extend(sam_local::rows().await);
    }
    if wanted("coldstart") {
        rows.extend(coldstart::coldstart_rows().await);
    }
    if wanted("size") {
        rows.extend(coldstart::size_rows());
    }
    if wanted("realtime") {
        rows.extend(realtime::rows().await);
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
            .locks()
            .try_lock("locks:bench", Duration::from_millis(4500))
            .await
            .expect("lock")
            .expect("free");
        coordinator.locks().release(&lock).await.expect("release");
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

/// A release binary beside this one (`target/release/…`), which scripts/bench.sh builds.
fn release_binary(name: &str) -> std::path::PathBuf {
    let path = std::env::current_exe()
        .expect("current exe")
        .with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/bench.sh, which builds it",
        path.display()
    );
    path
}

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
        let router = shared::web::routes::router(app.app.clone());

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
                shared::domain::now_ms() + 300_000,
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

/// Connections the slow client holds open during the loaded runs.
const IDLE_CONNECTIONS: usize = 1_000;

/// `wrk -t2 -c64 -d10s` against a release `avatar-local --demo`: `GET /auth/twitch`
/// single-instance, then `GET /health` and `GET /auth/twitch` with Redis, each again while
/// a slow client holds [`IDLE_CONNECTIONS`] half-sent requests open.
async fn http_throughput() -> Vec<Row> {
    let wrk_missing = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err();
    if wrk_missing {
        return vec![Row {
            name: "HTTP throughput".into(),
            figure: "skipped".into(),
            detail: "wrk is not installed (scripts/bench.sh installs it)".into(),
        }];
    }
    allow_open_files(IDLE_CONNECTIONS as u64 + 1024);
    let redis = RedisServer::start();
    let mut rows = Vec::new();

    let server = ReleaseServer::start(None).await;
    let figures = wrk(&server, "/auth/twitch");
    rows.push(figures.row(
        "GET /auth/twitch throughput, avatar-local (single-instance)",
        302,
    ));
    drop(server);

    let server = ReleaseServer::start(Some(&redis.url())).await;
    for (path, status) in [("/health", 200), ("/auth/twitch", 302)] {
        let quiet = wrk(&server, path);
        rows.push(quiet.row(
            &format!("GET {path} throughput, avatar-local (Redis)"),
            status,
        ));
        let slow_client = SlowClient::start(server.port, IDLE_CONNECTIONS).await;
        let loaded = wrk(&server, path);
        let held = slow_client.stop().await;
        let mut row = loaded.row(
            &format!("GET {path} throughput beside 1,000 idle connections (Redis)"),
            status,
        );
        row.detail.push_str(&format!(
            "; {:.0}% of the figure without them (target: at least 80%); the slow client \
             re-opens what the header timeout closes and held {held} open at the end",
            100.0 * loaded.rate / quiet.rate
        ));
        rows.push(row);
    }
    rows
}

/// Lets this process hold the slow client's sockets.
fn allow_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A release `avatar-local --demo` in a temporary directory; killed on drop.
struct ReleaseServer {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl ReleaseServer {
    async fn start(redis_url: Option<&str>) -> Self {
        let binary = release_binary("avatar-local");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = avatar_tests::free_port();
        let mut command = std::process::Command::new(&binary);
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            // wrk and the slow client both connect from 127.0.0.1: one address stands for
            // every client here, so it may hold as many connections as the server serves.
            .env("HTTP_MAX_CONNECTIONS_PER_IP", "4096")
            .args(["--demo", "--port", &port.to_string(), "--demo-ports"])
            .arg(format!(
                "{},{}",
                avatar_tests::free_port(),
                avatar_tests::free_port()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let child = command
            .spawn()
            .expect("release avatar-local (scripts/bench.sh builds it)");
        let ready = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < ready, "avatar-local did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct WrkFigures {
    rate: f64,
    p99: String,
    /// CPU time (user + system) avatar-local spent per answered request: steadier than
    /// req/s on a machine shared with other work.
    server_cpu_per_request: Duration,
    /// wrk's "Non-2xx or 3xx responses" line, when there is one.
    errors: Option<String>,
}

impl WrkFigures {
    fn row(&self, name: &str, status: u16) -> Row {
        let errors = self
            .errors
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        Row {
            name: name.into(),
            figure: format!("{:.0} req/s", self.rate),
            detail: format!(
                "wrk -t2 -c64 -d10s, latency p99 {}, every answer a {status}{errors}, server \
                 CPU {:.1} µs per request (target: at least 75,000 req/s, p99 at most 5 ms)",
                self.p99,
                self.server_cpu_per_request.as_secs_f64() * 1e6
            ),
        }
    }
}

fn wrk(server: &ReleaseServer, path: &str) -> WrkFigures {
    let url = format!("http://127.0.0.1:{}{path}", server.port);
    let cpu_before = cpu_time(server.child.id());
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d10s", "--latency", &url])
        .output()
        .expect("wrk runs");
    let cpu = cpu_time(server.child.id()).saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&output.stdout);
    let requests: u32 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(|l| l.trim().to_owned());
    WrkFigures {
        rate,
        p99,
        server_cpu_per_request: cpu / requests.max(1),
        errors,
    }
}

/// User + system CPU time of process `pid` so far (`/proc/{pid}/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// Holds connections open the way a slow client does: each sends a request line and then
/// nothing, and is opened again when the server closes it (the header timeout).
struct SlowClient {
    stop: tokio::sync::watch::Sender<bool>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SlowClient {
    async fn start(port: u16, connections: usize) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut stopping = stopping.clone();
            let open = Arc::clone(&open);
            tasks.push(tokio::spawn(async move {
                while !*stopping.borrow() {
                    let connected = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
                    let Ok(mut stream) = connected else {
                        // Out of ports or descriptors for a moment: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if stream.write_all(b"GET /health HTTP/1.1\r\n").await.is_err() {
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let mut byte = [0u8; 1];
                    tokio::select! {
                        _ = stream.read(&mut byte) => {}
                        _ = stopping.changed() => {}
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }));
        }
        let ready = Instant::now() + Duration::from_secs(20);
        while open.load(Ordering::Relaxed) < connections {
            assert!(
                Instant::now() < ready,
                "the slow client could not open its connections"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { stop, open, tasks }
    }

    /// Stops and returns how many connections were open just before.
    async fn stop(self) -> usize {
        let held = self.open.load(std::sync::atomic::Ordering::Relaxed);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        held
    }
}
