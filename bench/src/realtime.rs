//! The realtime bridge at its intended scale: one release `realtime` process holding the
//! sockets of 5,000 streamers against the fake DonationAlerts' Centrifugo (in this process,
//! on the fake's own port), over a private redis-server and a WAL SQLite database.
//!
//! 1. Warm-up: the time until the fake has a subscribed socket for every streamer, with the
//!    budget lifted (`DA_RATE_LIMIT_PER_MIN` at its maximum, 100,000) so that it does not pace the
//!    subscriptions; warm-up under the real budget is the virtual-clock benchmark's job.
//! 2. Idle: the bridge's CPU (`/proc/PID/stat`) as a share of one core over a minute with
//!    nothing but the clients' Centrifugo pings (every 25 s each, answered by the fake) and
//!    the bridge's lease renewals.
//! 3. Load: 100 donations a second to random streamers for a minute; for each, the time from
//!    `donate()` returning (the push is queued to the socket then) to its `avatar:events`
//!    entry (`eventId` `da:{daUserId}:{donationId}`), read by `XREAD BLOCK` on a dedicated
//!    connection; every donation must be there exactly once.
//! 4. The bridge's peak RSS (`VmHWM`) over the whole run, and a clean exit on SIGTERM.
//!
//! Beside them, the baseline: the polling schedule's detection p95 for 500 and 5,000
//! streamers from the virtual-clock simulation of [`crate::poll_schedule`].

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avatar_tests::streamers::link_streamer;
use avatar_tests::{RedisServer, base_vars};
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation};
use shared::app::App;
use shared::config::Config;
use shared::domain::event::EVENT_STREAM;

use crate::{Row, allow_open_files, cpu_time, percentile, poll_schedule, release_binary};

const STREAMERS: usize = 5_000;
/// Donations per second during the load phase, and how long it lasts.
const RATE: u64 = 100;
const LOAD: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(60);
/// Streamers linked at once (the writer commits them in groups).
const LINKING_AT_ONCE: usize = 64;
const WARM_UP_DEADLINE: Duration = Duration::from_secs(600);
/// How long after the last donation the stream may still be catching up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

fn twitch_id(i: usize) -> String {
    (300_000 + i).to_string()
}

fn da_id(i: usize) -> i64 {
    800_000 + i as i64
}

/// The 1-, 5- and 15-minute load averages, as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A memory figure (`VmHWM:`, `VmRSS:`) of process `pid`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The release bridge, killed on drop (a benchmark that panics leaves nothing running).
struct BridgeProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl BridgeProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics, showing the end of its log, when the process has exited.
    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the bridge exited ({status}) {what}:\n{}", self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// How many lines the bridge logged (warnings and errors only); shown on stderr, beside
    /// the table.
    fn show_log(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in log.lines() {
            eprintln!("realtime: {line}");
        }
        log.lines().count()
    }

    /// SIGTERM, then waits up to `deadline`: the exit code and how long it took.
    fn terminate(&mut self, deadline: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        avatar_tests::signal(self.pid(), libc::SIGTERM);
        while started.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (None, started.elapsed())
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `avatar:events` from the start until `stop`, counting each `eventId` and noting
/// when it first arrived.
async fn read_stream(
    mut conn: redis::aio::MultiplexedConnection,
    arrivals: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    type Reply = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;
    let mut last = "0-0".to_owned();
    while !*stop.borrow() {
        let reply: Reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(EVENT_STREAM)
            .arg(&last)
            .query_async(&mut conn)
            .await
            .expect("XREAD");
        let now = Instant::now();
        let mut arrivals = arrivals.lock().expect("arrivals");
        for (_, entries) in reply.unwrap_or_default() {
            for (id, fields) in entries {
                last = id;
                if let Some((_, event_id)) = fields.into_iter().find(|(k, _)| k == "eventId") {
                    arrivals.entry(event_id).or_insert((now, 0)).1 += 1;
                }
            }
        }
    }
}

/// xorshift64: which streamer each donation goes to, the same every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub async fn rows() -> Vec<Row> {
    // The fake holds one socket per streamer, and the bridge (which inherits the limit) the
    // other end of each.
    allow_open_files(4 * STREAMERS as u64 + 1024);
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start();
    let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "http://localhost:3000/auth/donationalerts/callback",
    ));
    let (address, fake_server) = fake.spawn(0).await.expect("fake DonationAlerts");
    let mut vars = base_vars(dir.path());
    for (k, v) in [
        ("REDIS_URL", redis.url()),
        ("REALTIME_SHARDS", "16".to_owned()),
        ("DA_RATE_LIMIT_PER_MIN", "100000".to_owned()),
        ("SQLITE_JOURNAL_MODE", "wal".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ] {
        vars.insert(k.into(), v);
    }
    vars.extend(fake.app_variables(address));

    // Linked through the same code as the tests (sealed tokens the fake issued, the scope
    // granted), many at once so that the writer commits them in groups.
    let linking_started = Instant::now();
    {
        let app = App::build(Config::from_vars(&vars).expect("config"))
            .await
            .expect("app");
        let mut linking = tokio::task::JoinSet::new();
        for i in 0..STREAMERS {
            if linking.len() >= LINKING_AT_ONCE {
                linking.join_next().await.expect("a link").expect("linked");
            }
            let (app, fake) = (app.clone(), fake.clone());
            linking.spawn(async move { link_streamer(&app, &fake, &twitch_id(i), da_id(i)).await });
        }
        while let Some(linked) = linking.join_next().await {
            linked.expect("linked");
        }
    }
    let linking_took = linking_started.elapsed();

    let log = dir.path().join("realtime.log");
    let child = Command::new(release_binary("realtime"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("release realtime (scripts/bench.sh builds it)");
    let mut bridge = BridgeProcess { child, log };
    let pid = bridge.pid();

    // 1. Warm-up.
    let started = Instant::now();
    loop {
        let subscribed = fake.subscribed_users().len();
        if subscribed >= STREAMERS {
            break;
        }
        bridge.assert_running("while subscribing");
        assert!(
            started.elapsed() < WARM_UP_DEADLINE,
            "only {subscribed} of {STREAMERS} subscribed after {WARM_UP_DEADLINE:?}:\n{}",
            bridge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warm_up = started.elapsed();
    let warm_up_cpu = cpu_time(pid);
    let connects = fake.connect_count();
    let warm_up_load = load_average();
    let rss_after_warm_up = status_mib(pid, "VmRSS:");

    // 2. Idle: pings and lease renewals only. A few seconds first for the last
    //    subscriptions' advertising to pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu_before = cpu_time(pid);
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle_cpu = cpu_time(pid).saturating_sub(cpu_before);
    let idle_wall = idle_started.elapsed();
    let idle_load = load_average();
    let rss_idle = status_mib(pid, "VmRSS:");
    bridge.assert_running("while idle");
    let sockets_after_idle = fake.socket_count();
    let connects_during_idle = fake.connect_count() - connects;

    // 3. Load.
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let (stop_reading, reading) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_stream(
        redis.connection().await,
        Arc::clone(&arrivals),
        reading,
    ));
    let total = (RATE * LOAD.as_secs()) as usize;
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(total);
    let mut seed = 0x5eed_u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
    let cpu_before = cpu_time(pid);
    let load_started = Instant::now();
    for _ in 0..total {
        ticker.tick().await;
        let i = (next(&mut seed) % STREAMERS as u64) as usize;
        let made = fake.donate(NewDonation {
            da_user_id: Some(da_id(i)),
            username: Some("Viewer".into()),
            message: "bench".into(),
            amount: serde_json::Number::from(100),
            currency: "RUB".into(),
            created_at: None,
        });
        sent.push((format!("da:{}:{}", da_id(i), made.id), Instant::now()));
    }
    let load_wall = load_started.elapsed();
    let load_cpu = cpu_time(pid).saturating_sub(cpu_before);
    let load_load = load_average();
    let drain_started = Instant::now();
    loop {
        let arrived = {
            let arrivals = arrivals.lock().expect("arrivals");
            sent.iter()
                .filter(|(id, _)| arrivals.contains_key(id))
                .count()
        };
        if arrived == total || drain_started.elapsed() > DRAIN_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer, so that a duplicate would be seen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_reading.send(true);
    reader.await.expect("stream reader");
    let arrivals = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
    let mut latencies = Vec::with_capacity(total);
    let mut missing = 0;
    for (id, at) in &sent {
        match arrivals.get(id) {
            Some((arrived, _)) => latencies.push(arrived.saturating_duration_since(*at)),
            None => missing += 1,
        }
    }
    let duplicated = arrivals.values().filter(|(_, n)| *n > 1).count();
    let unexpected = arrivals.len() + missing - total;
    latencies.sort();
    let recorded: i64 = rusqlite::Connection::open(dir.path().join("data.sqlite"))
        .and_then(|c| c.query_row("SELECT count(*) FROM donations", [], |r| r.get(0)))
        .expect("donations counted");

    // 4. Peak memory over the run, then a clean stop.
    let peak_rss = status_mib(pid, "VmHWM:");
    let log_lines = bridge.show_log();
    let (exit, stop_took) = bridge.terminate(Duration::from_secs(30));
    fake_server.abort();

    let per_core = |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    let mut rows = vec![
        Row {
            name: format!("realtime bridge warm-up, {STREAMERS} streamers"),
            figure: format!("{:.1} s until all subscribed", warm_up.as_secs_f64()),
            detail: format!(
                "one release `realtime`, REALTIME_SHARDS=16, WAL, with DA_RATE_LIMIT_PER_MIN at \
                 its maximum (100,000; the bridges take 80% of it) so the budget hardly paces it (warm-up under the real 60/min \
                 budget is the other benchmark's); {connects} CONNECTs at the fake for \
                 {STREAMERS} sockets, bridge CPU {:.1} s, RSS then {rss_after_warm_up:.0} MiB; \
                 {STREAMERS} streamers linked in {linking_took:.1?} beforehand; load {warm_up_load}",
                warm_up_cpu.as_secs_f64()
            ),
        },
        Row {
            name: format!("realtime bridge idle CPU, {STREAMERS} sockets"),
            figure: format!("{:.2}% of one core", per_core(idle_cpu, idle_wall)),
            detail: format!(
                "{:.1} s CPU in {idle_wall:.1?} with only the Centrifugo pings (each socket \
                 every 25 s, answered by the in-process fake) and the lease renewals; \
                 {sockets_after_idle} sockets open after, {connects_during_idle} reconnects; \
                 RSS {rss_idle:.0} MiB; load {idle_load} (target: at most 2%)",
                idle_cpu.as_secs_f64()
            ),
        },
        Row {
            name: format!("realtime push → stream entry, {RATE} donations/s"),
            figure: if latencies.is_empty() {
                "nothing arrived".into()
            } else {
                format!(
                    "p95 {}, p99 {}",
                    ms(percentile(&latencies, 0.95)),
                    ms(percentile(&latencies, 0.99))
                )
            },
            detail: format!(
                "p50 {}, max {}; from `donate()` at the fake to the `avatar:events` entry \
                 (XREAD BLOCK); {total} donations to random streamers of {STREAMERS} in \
                 {load_wall:.1?}: {} on the stream, {missing} missing, {duplicated} \
                 duplicated, {unexpected} unexpected, {recorded} rows in SQLite; bridge CPU \
                 {:.1}% of one core meanwhile; load {load_load} (targets: p95 at most \
                 250 ms, p99 at most 1 s)",
                latencies
                    .first()
                    .map_or("-".into(), |_| ms(percentile(&latencies, 0.5))),
                latencies.last().map_or("-".into(), |d| ms(*d)),
                latencies.len(),
                per_core(load_cpu, load_wall),
            ),
        },
        Row {
            name: format!("realtime bridge peak RSS, {STREAMERS} sockets"),
            figure: format!("{peak_rss:.0} MiB ({:.0} MB)", peak_rss * 1.048_576),
            detail: format!(
                "VmHWM over warm-up, idle and load; SIGTERM: exit {} in {stop_took:.1?}; \
                 log lines at warn: {log_lines}, on stderr (target: at most 128 MB)",
                exit.map_or("none (killed)".into(), |c| c.to_string())
            ),
        },
    ];
    // The baseline from the same run: what polling alone detects, under the real budget.
    for (streamers, live) in [(500, 50), (5_000, 500)] {
        let (live_p95, all_p95, found, made) = poll_schedule::weighted_p95(streamers, live);
        rows.push(Row {
            name: format!("baseline: detection p95, weighted poll schedule, {streamers} streamers"),
            figure: format!("live {live_p95:.1} s, all {all_p95:.1} s"),
            detail: format!(
                "polling alone, {live} live, 60 requests/min, 2 virtual hours (the `poll` \
                 group's simulation): {found} of {made} donations found by the end, the \
                 rest not counted (so at 5,000 a floor: the budget polls each streamer less \
                 than once in the two hours); load {}",
                load_average()
            ),
        });
    }
    rows
}
