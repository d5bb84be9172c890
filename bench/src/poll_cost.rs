//! The poller's own cost, and the donation path's throughput.
//!
//! 1. Cost per streamer-poll with the budget lifted, at 100, 1,000 and 10,000 streamers,
//!    against the fake DonationAlerts answering after 50 ms: CPU time of this process per
//!    poll (the fake runs on a thread of its own, whose CPU is subtracted) and peak RSS.
//! 2. Donations per second through the writer and the outbox to the event stream
//!    (`delete` journal, a private Redis), against one commit and one publish per donation.

use std::time::{Duration, Instant};

use avatar_tests::streamers::link_streamer;
use avatar_tests::{RedisServer, base_vars, redis_coordinator};
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig};
use shared::app::App;
use shared::config::{Config, JournalMode, SqliteConfig};
use shared::domain::event::ReceivedDonation;
use shared::domain::{DaUserId, Donation, TwitchUserId};
use shared::outbox::relay_pending;
use shared::store::Store;
use shared::store::donationalerts::{DonationAlertsConnection, PollResult};

use crate::Row;

/// How long each poller run lasts.
const RUN: Duration = Duration::from_secs(10);

fn cpu_of(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct we pass for this process or this thread.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A memory figure of this process's `/proc/self/status` (`VmHWM:`, `VmRSS:`), in MiB.
pub(crate) fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
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

/// The fake on a current-thread runtime of its own thread; returns its address and a way
/// to stop it that reports the thread's CPU time.
fn fake_on_own_thread(
    fake: FakeDonationAlerts,
) -> (
    std::net::SocketAddr,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<Duration>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (addr, server) = fake.spawn(0).await.expect("fake");
            addr_tx.send(addr).expect("address");
            tokio::task::spawn_blocking(move || stop_rx.recv())
                .await
                .ok();
            server.abort();
        });
        let _ = cpu_tx.send(cpu_of(libc::RUSAGE_THREAD));
    });
    (addr_rx.recv().expect("fake address"), stop_tx, cpu_rx)
}

async fn cost_at(streamers: usize) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start();
    let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "http://localhost:3000/auth/donationalerts/callback",
    ));
    fake.set_latency(Duration::from_millis(50));
    let (address, stop_fake, fake_cpu) = fake_on_own_thread(fake.clone());
    let mut vars = base_vars(dir.path());
    for (k, v) in [
        ("REDIS_URL", redis.url()),
        ("DA_RATE_LIMIT_PER_MIN", "100000".to_owned()),
        ("DA_POLL_INTERVAL_MS", "1000".to_owned()),
        ("DA_POLL_CONCURRENCY", "50".to_owned()),
        ("PROVIDER_TIMEOUT_MS", "1000".to_owned()),
        ("DA_POLL_LOCK_TTL_MS", "1000".to_owned()),
        ("SQLITE_JOURNAL_MODE", "delete".to_owned()),
        ("RUST_LOG", "error".to_owned()),
    ] {
        vars.insert(k.into(), v);
    }
    vars.extend(fake.app_variables(address));
    let app = App::build(Config::from_vars(&vars).expect("config"))
        .await
        .expect("app");
    for i in 0..streamers {
        link_streamer(&app, &fake, &(100_000 + i).to_string(), 500_000 + i as i64).await;
    }
    let poller = app.poller().expect("poller");
    let cpu_before = cpu_of(libc::RUSAGE_SELF);
    let polls_before = app.poll_stats.snapshot().polled;
    let started = Instant::now();
    poller
        // The loop stops starting polls one provider timeout plus one lock TTL (2 s here)
        // before the end it is given.
        .run_until(tokio::time::Instant::now() + RUN + Duration::from_secs(2))
        .await;
    let elapsed = started.elapsed();
    let polls = app.poll_stats.snapshot().polled - polls_before;
    let _ = stop_fake.send(());
    let fake_cpu = fake_cpu.recv().unwrap_or_default();
    let cpu = cpu_of(libc::RUSAGE_SELF)
        .saturating_sub(cpu_before)
        .saturating_sub(fake_cpu);
    let per_poll = cpu.as_secs_f64() * 1e6 / polls.max(1) as f64;
    Row {
        name: format!("poller cost, {streamers} streamers, budget lifted"),
        figure: format!(
            "{per_poll:.0} µs CPU per poll, peak RSS {:.0} MiB",
            peak_rss_mib()
        ),
        detail: format!(
            "{polls} polls in {elapsed:.1?} against the fake answering after 50 ms (its own \
             thread's CPU subtracted); concurrency up to 50 (targets: per-poll CPU at 10,000 \
             at most 1.5x that at 100, RSS under 64 MB at 10,000)"
        ),
    }
}

pub async fn cost_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for streamers in [100, 1_000, 10_000] {
        rows.push(cost_at(streamers).await);
    }
    rows
}

/// Streamer `i` linked (without tokens) for the throughput benchmark.
async fn link(store: &Store, i: usize) {
    let id = (200_000 + i).to_string();
    let user = id.clone();
    store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO users (twitch_user_id, login, display_name, created_at, updated_at)
                 VALUES (?1, ?1, ?1, 0, 0)",
                [&user],
            )
            .map(|_| ())
        })
        .await
        .expect("user");
    store
        .connect_donationalerts(DonationAlertsConnection {
            streamer_twitch_id: TwitchUserId::parse(&id).expect("an id"),
            da_user_id: DaUserId(600_000 + i as i64),
            da_name: None,
            access_token_sealed: vec![0],
            refresh_token_sealed: None,
            scopes: Vec::new(),
            expires_at: None,
            initial_cursor: Some(0),
        })
        .await
        .expect("link");
}

fn poll(i: usize, fence: u64, ids: std::ops::Range<i64>) -> PollResult {
    let streamer = TwitchUserId::parse(&(200_000 + i).to_string()).expect("an id");
    let da_user = DaUserId(600_000 + i as i64);
    let received_at = "2026-01-01T00:00:01Z";
    PollResult {
        seen_high_water: Some(ids.end - 1),
        donations: ids
            .map(|id| {
                let donation = Donation {
                    id,
                    donor_name: Some("viewer".into()),
                    message: "thanks for the stream".into(),
                    amount: serde_json::Number::from(100),
                    currency: "RUB".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                };
                ReceivedDonation::new(&streamer, da_user, donation, received_at)
            })
            .collect(),
        streamer,
        da_user_id: da_user,
        fence,
        received_at: received_at.into(),
    }
}

const DONATIONS: i64 = 2_000;
const STREAMERS: usize = 50;

async fn open(
    dir: &std::path::Path,
    redis: &RedisServer,
) -> (Store, shared::coordination::Coordinator) {
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = Store::open(
        &SqliteConfig {
            path: dir.join("bench.sqlite"),
            journal_mode: JournalMode::Delete,
            read_connections: 2,
        },
        &coordinator,
    )
    .await
    .expect("store");
    for i in 0..STREAMERS {
        link(&store, i).await;
    }
    (store, coordinator)
}

pub async fn throughput_rows() -> Vec<Row> {
    // Baseline: each donation committed alone and published at once.
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start();
    let (store, coordinator) = open(dir.path(), &redis).await;
    let per_streamer = DONATIONS / STREAMERS as i64;
    let started = Instant::now();
    for k in 0..per_streamer {
        for i in 0..STREAMERS {
            // Donation ids start at 1: the baseline cursor of a new link is 0.
            store
                .record_poll(poll(i, 1, k + 1..k + 2))
                .await
                .expect("record");
            relay_pending(&store, &coordinator.bus())
                .await
                .expect("relay");
        }
    }
    let single = started.elapsed();
    drop((store, redis, dir));

    // The poller's way: one write per poll (a streamer's new donations, 10 at a time here),
    // 16 polls in flight, the relay publishing what has been committed.
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start();
    let (store, coordinator) = open(dir.path(), &redis).await;
    let started = Instant::now();
    let batch = 10;
    let mut writers = Vec::new();
    for task in 0..16 {
        let store = store.clone();
        // Each task owns some streamers and records their polls in order, as one poll at
        // a time per streamer (its lock) would.
        writers.push(tokio::spawn(async move {
            for round in 0..(per_streamer + batch - 1) / batch {
                for streamer in (task..STREAMERS).step_by(16) {
                    let ids = round * batch + 1..(round * batch + batch).min(per_streamer) + 1;
                    store
                        .record_poll(poll(streamer, 1, ids))
                        .await
                        .expect("record");
                }
            }
        }));
    }
    let relay = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut published = 0;
            while published < DONATIONS as usize {
                published += relay_pending(&store, &coordinator.bus())
                    .await
                    .expect("relay")
                    .published();
                if published < DONATIONS as usize {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    relay.await.expect("relay");
    let grouped = started.elapsed();
    let mut conn = redis.connection().await;
    let length: u64 = redis::cmd("XLEN")
        .arg("avatar:events")
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(
        length, DONATIONS as u64,
        "every donation in the stream once"
    );
    vec![
        Row {
            name: "donations to the stream, one commit and one publish each (delete)".into(),
            figure: format!("{:.0} donations/s", DONATIONS as f64 / single.as_secs_f64()),
            detail: format!("{DONATIONS} donations, {STREAMERS} streamers, {single:.2?}"),
        },
        Row {
            name: "donations to the stream, poll batches through the writer and outbox (delete)"
                .into(),
            figure: format!(
                "{:.0} donations/s, {:.1}x",
                DONATIONS as f64 / grouped.as_secs_f64(),
                single.as_secs_f64() / grouped.as_secs_f64()
            ),
            detail: format!(
                "{DONATIONS} donations, {STREAMERS} streamers, 10 a poll, 16 polls in flight, \
                 the relay alongside; {grouped:.2?}, each in the stream once"
            ),
        },
    ]
}
