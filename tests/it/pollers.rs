//! Several poller processes at once, as several `da-poll` instances would run, sharing one
//! database, one Redis and one request budget: every donation in SQLite once and in
//! `avatar:events` once, none missing — also with a poller paused past its lock's TTL,
//! pollers killed, Redis killed and restarted, the stream refusing writes, and the provider
//! failing for some streamers.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use avatar_tests::streamers::{DonationAlertsTestbed, link_streamer};
use avatar_tests::{ChildProcess, RedisServer, signal, wait_until};
use fake_providers::donationalerts::{ApiFailure, FakeDonationAlerts, NewDonation};
use shared::app::App;
use shared::config::Config;

use crate::bus::stream_entries;

pub(crate) fn twitch_id(i: usize) -> String {
    (3000 + i).to_string()
}

pub(crate) fn da_id(i: usize) -> i64 {
    8000 + i as i64
}

/// The event id of streamer `i`'s donation `donation_id`.
pub(crate) fn event_id(i: usize, donation_id: i64) -> String {
    format!("da:{}:{}", da_id(i), donation_id)
}

/// A link's poll state: da_user_id, cursor, resume_link, last_polled_at.
type LinkState = (i64, Option<i64>, Option<String>, Option<i64>);

/// A shared database, Redis and fake DonationAlerts with `streamers` linked streamers, and
/// the poller processes (and realtime bridges, see `realtime.rs`) running over them.
pub(crate) struct Fleet {
    pub(crate) vars: HashMap<String, String>,
    pub(crate) fake: FakeDonationAlerts,
    pub(crate) redis: RedisServer,
    pub(crate) app: App,
    pub(crate) pollers: Vec<ChildProcess>,
    /// `realtime` processes; stopped with SIGTERM before the final checks.
    pub(crate) bridges: Vec<ChildProcess>,
    streamers: usize,
    _testbed: DonationAlertsTestbed,
}

impl Fleet {
    pub(crate) async fn start(
        redis: RedisServer,
        streamers: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let testbed = DonationAlertsTestbed::start(&redis.url()).await;
        Self::start_on(testbed, redis, streamers, extra).await
    }

    /// [`Self::start`] over a testbed made by the caller (a fake configured otherwise).
    pub(crate) async fn start_on(
        testbed: DonationAlertsTestbed,
        redis: RedisServer,
        streamers: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut vars = testbed.vars.clone();
        for (k, v) in [
            ("PROVIDER_TIMEOUT_MS", "1000"),
            ("DA_POLL_INTERVAL_MS", "200"),
            ("DA_POLL_LOCK_TTL_MS", "1000"),
            ("DA_RATE_LIMIT_PER_MIN", "6000"),
            ("SQLITE_JOURNAL_MODE", "delete"),
            // For the bridges: a lease lost is a lease taken over within 3 s.
            ("REALTIME_SHARDS", "4"),
            ("REALTIME_SHARD_TTL_MS", "3000"),
        ] {
            vars.insert(k.into(), v.into());
        }
        // The faults below make pollers warn: their warnings are kept (see `spawn_poller`)
        // and shown when a test fails; with TEST_LOG, everything shows as it happens.
        let log = if std::env::var_os("TEST_LOG").is_some() {
            "info"
        } else {
            "warn"
        };
        vars.insert("RUST_LOG".into(), log.into());
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let app = App::build(Config::from_vars(&vars).unwrap()).await.unwrap();
        let fake = testbed.fake.clone();
        for i in 0..streamers {
            link_streamer(&app, &fake, &twitch_id(i), da_id(i)).await;
        }
        Self {
            vars,
            fake,
            redis,
            app,
            pollers: Vec::new(),
            bridges: Vec::new(),
            streamers,
            _testbed: testbed,
        }
    }

    /// Counts `n` more streamers, linked by the caller, in what [`Self::expected`] looks at.
    pub(crate) fn add_streamers(&mut self, n: usize) {
        self.streamers += n;
    }

    /// Starts `program` with `args` and the fleet's variables (and no others). Its log is
    /// kept to show when a test fails, or with TEST_LOG shown as it happens.
    pub(crate) fn spawn_child(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> ChildProcess {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.vars.iter())
            .args(args);
        if std::env::var_os("TEST_LOG").is_some() {
            ChildProcess::spawn(&mut command)
        } else {
            ChildProcess::spawn_with_log(&mut command)
        }
    }

    /// Starts a poller process (with `args`) and waits until it runs.
    pub(crate) fn spawn_poller(&mut self, args: &[&str]) -> usize {
        let child = self.spawn_child(env!("CARGO_BIN_EXE_poller-child"), args);
        assert_eq!(
            child.next_line(Duration::from_secs(30)).as_deref(),
            Some("ready")
        );
        self.pollers.push(child);
        self.pollers.len() - 1
    }

    pub(crate) fn donate(&self, i: usize, n: usize) {
        for k in 0..n {
            self.fake.donate(NewDonation {
                da_user_id: Some(da_id(i)),
                username: (k % 3 != 0).then(|| format!("viewer {k}")),
                message: format!("message {k} 🎉"),
                amount: serde_json::Number::from(10 + k as i64),
                currency: "RUB".into(),
                created_at: None,
            });
        }
    }

    /// Every donation the fake holds, as event ids.
    pub(crate) fn expected(&self) -> HashSet<String> {
        (0..self.streamers)
            .flat_map(|i| {
                self.fake
                    .donations_of(da_id(i))
                    .into_iter()
                    .map(move |d| event_id(i, d.id))
            })
            .collect()
    }

    pub(crate) async fn stream_ids(&self) -> Vec<String> {
        stream_entries(&self.redis)
            .await
            .into_iter()
            .map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "eventId").unwrap().1)
            .collect()
    }

    /// The poll state of the streamers of these event ids (`da:{daUserId}:{donationId}`).
    fn links_of(&self, event_ids: &[&String]) -> Vec<LinkState> {
        let da_ids: HashSet<i64> = event_ids
            .iter()
            .filter_map(|id| id.split(':').nth(1)?.parse().ok())
            .collect();
        let conn = rusqlite::Connection::open(self.app.store.path()).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT da_user_id, poll_cursor, resume_link, last_polled_at \
                 FROM donationalerts_links",
            )
            .unwrap();
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap);
        rows.filter(|row: &(i64, _, _, _)| da_ids.contains(&row.0))
            .collect()
    }

    /// What the pollers warned about so far: how often each kind of warning came, and the
    /// lines that name the streamers of `event_ids`.
    fn warnings_about(&self, event_ids: &[&String]) -> String {
        let streamers: Vec<String> = event_ids
            .iter()
            .filter_map(|id| id.split(':').nth(1)?.parse::<i64>().ok())
            .map(|da| format!("streamer={}", 3000 + (da - 8000)))
            .collect();
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        let mut naming = Vec::new();
        for (n, poller) in self.pollers.iter().enumerate() {
            while let Some(line) = poller.try_log_line() {
                // The message, without the time, the level and the span.
                let message = line.rsplit(": ").next().unwrap_or(&line);
                let kind: String = message.chars().take(80).collect();
                *kinds.entry(kind).or_default() += 1;
                if streamers.iter().any(|s| line.contains(&format!("{s}}}"))) && naming.len() < 20 {
                    naming.push(format!("poller {n}: {line}"));
                }
            }
        }
        format!("warnings by kind: {kinds:?}; about those streamers: {naming:#?}")
    }

    fn outbox_pending(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.app.store.path()).unwrap();
        conn.query_row(
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Waits until every donation is in the stream, stops every poller, then checks that
    /// each donation is in SQLite once and in the stream once.
    pub(crate) async fn assert_every_donation_once(mut self) {
        let expected = self.expected();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // A read of its own deadline: one started just before the overall deadline must
            // still end in the report below.
            let seen: HashSet<String> =
                tokio::time::timeout(Duration::from_secs(30), self.stream_ids())
                    .await
                    .expect("the stream could be read within 30 s")
                    .into_iter()
                    .collect();
            let missing: Vec<&String> = expected.difference(&seen).collect();
            if missing.is_empty() {
                break;
            }
            // Say what is missing and where its streamers' polls stand, so a failure can be
            // told apart from a slow machine.
            assert!(
                Instant::now() < deadline,
                "after 90 s, {} of {} donations are not in the stream, e.g. {:?}; links \
                 (da_user_id, cursor, resume_link, last_polled_at): {:?}; outbox pending: {}; \
                 now: {}; {}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(5)],
                self.links_of(&missing),
                self.outbox_pending(),
                shared::domain::now_ms(),
                self.warnings_about(&missing),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for bridge in &mut self.bridges {
            signal(bridge.child.id(), libc::SIGTERM);
            assert_eq!(
                bridge.wait(Duration::from_secs(30)),
                Some(0),
                "a bridge did not stop cleanly"
            );
        }
        for poller in &mut self.pollers {
            drop(poller.child.stdin.take());
        }
        for poller in &self.pollers {
            let lines = poller.remaining_lines(Duration::from_secs(30));
            assert!(lines.iter().any(|l| l == "stopped"), "{lines:?}");
        }
        let ids = self.stream_ids().await;
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "an event was appended twice");
        assert_eq!(unique.len(), expected.len());
        let conn = rusqlite::Connection::open(self.app.store.path()).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM donations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows as usize, expected.len());
        let pending: i64 = conn
            .query_row(
                "SELECT count(*) FROM event_outbox WHERE published_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pending, 0);
    }
}

/// A small deterministic generator (no randomness crate needed).
pub(crate) fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pollers_over_two_hundred_streamers_record_and_publish_every_donation_once() {
    // Arrange
    let mut fleet = Fleet::start(RedisServer::start(), 200, &[]).await;
    for _ in 0..4 {
        fleet.spawn_poller(&[]);
    }

    // Act: donations throughout, and bursts of more than a page for single streamers
    let mut seed = 7;
    for round in 0..40 {
        for _ in 0..5 {
            fleet.donate(next(&mut seed) as usize % 200, 1);
        }
        if round == 10 {
            fleet.donate(7, 45);
        }
        if round == 25 {
            fleet.donate(150, 70);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_paused_past_its_lock_ttl_is_fenced_out_and_duplicates_nothing() {
    // Arrange: poller A stops itself right after taking streamer 0's lock. One streamer
    // only: with others, A could be stopped mid-commit of another streamer's poll (holding
    // SQLite's write lock, so B could not start), or resume with other polls in flight that
    // take the next budget grant first (and a poll whose lock has expired gives up rather
    // than wait for one), and never reach its stale record. WAL, so that A stopped in the
    // middle of a read (its shared lock held) does not keep B from committing.
    let mut fleet = Fleet::start(RedisServer::start(), 1, &[("SQLITE_JOURNAL_MODE", "wal")]).await;
    fleet.donate(0, 2);
    let paused = fleet.spawn_poller(&["--stop-holding-lock", &twitch_id(0)]);
    let line = fleet.pollers[paused]
        .next_line(Duration::from_secs(30))
        .expect("A took the lock");
    assert!(line.starts_with("stopped-holding-lock "), "{line}");
    let paused_pid = fleet.pollers[paused].child.id();

    // Act: its lock expires, B polls streamer 0 (a newer fence) and stops; A resumes
    let mut a = fleet.pollers.remove(paused);
    let b = fleet.spawn_poller(&[]);
    fleet.donate(0, 1);
    let expected = fleet.expected();
    wait_until(
        "B published streamer 0's donations",
        Duration::from_secs(30),
        || async {
            let seen: HashSet<String> = fleet.stream_ids().await.into_iter().collect();
            expected.is_subset(&seen)
        },
    )
    .await;
    let mut b = fleet.pollers.remove(b);
    drop(b.child.stdin.take());
    let b_lines = b.remaining_lines(Duration::from_secs(30));
    assert!(b_lines.contains(&"stopped".to_owned()), "{b_lines:?}");
    // Past the gap within which a poll by another instance counts as fresh.
    let db = fleet.app.store.path().to_owned();
    wait_until(
        "B's last poll of streamer 0 is not fresh any more",
        Duration::from_secs(10),
        || {
            let db = db.clone();
            async move {
                let conn = rusqlite::Connection::open(db).unwrap();
                let last: i64 = conn
                .query_row(
                    "SELECT last_polled_at FROM donationalerts_links WHERE streamer_twitch_id = ?1",
                    [twitch_id(0)],
                    |r| r.get(0),
                )
                .unwrap();
                shared::domain::now_ms() - last > 300
            }
        },
    )
    .await;
    signal(paused_pid, libc::SIGCONT);
    // Stopped earlier, A would end its poll before it records.
    let fenced = a.next_line(Duration::from_secs(30));
    drop(a.child.stdin.take());
    let lines = a.remaining_lines(Duration::from_secs(30));

    // Assert: A's record was refused by the fencing check, and nothing repeats
    assert_eq!(fenced.as_deref(), Some("fenced-out"), "{lines:?}");
    assert!(lines.contains(&"stale-fences 1".to_owned()), "{lines:?}");
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_lose_nothing_through_kills_a_redis_restart_a_blocked_stream_and_failing_streamers()
{
    // Arrange: Redis keeps its data across a kill (append-only file)
    let mut fleet = Fleet::start(RedisServer::start_durable(), 30, &[]).await;
    for _ in 0..3 {
        fleet.spawn_poller(&[]);
    }
    let mut seed = 11;
    let mut donate_some = |fleet: &Fleet| {
        for _ in 0..6 {
            fleet.donate(next(&mut seed) as usize % 30, 1);
        }
    };

    // Act
    // The provider fails for some streamers: 429 with and without Retry-After, 500,
    // garbage, and answers slower than PROVIDER_TIMEOUT_MS.
    let failures = [
        ApiFailure::TooManyRequests {
            retry_after_secs: Some(1),
        },
        ApiFailure::TooManyRequests {
            retry_after_secs: None,
        },
        ApiFailure::ServerError,
        ApiFailure::MalformedJson,
        ApiFailure::Slow(Duration::from_millis(1500)),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        fleet.fake.set_failure(Some(da_id(i)), failure);
        fleet.donate(i, 2);
    }
    donate_some(&fleet);
    // A poller killed mid-work, and a new one in its place.
    let victim = fleet.pollers.remove(0);
    signal(victim.child.id(), libc::SIGKILL);
    drop(victim);
    fleet.spawn_poller(&[]);
    donate_some(&fleet);
    // Redis killed and restarted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.redis.kill();
    donate_some(&fleet);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.redis.restart();
    donate_some(&fleet);
    // The stream refuses writes for a while: only the outbox keeps those events.
    let mut conn = fleet.redis.connection().await;
    let block: i64 = redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end \
         redis.call('SET', KEYS[1], 'not a stream') return 1",
    )
    .key("avatar:events")
    .key("avatar:events:aside")
    .invoke_async(&mut conn)
    .await
    .unwrap();
    assert_eq!(block, 1);
    donate_some(&fleet);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let restored: i64 = redis::Script::new(
        "redis.call('DEL', KEYS[1]) \
         if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end \
         return 1",
    )
    .key("avatar:events")
    .key("avatar:events:aside")
    .invoke_async(&mut conn)
    .await
    .unwrap();
    assert_eq!(restored, 1);
    donate_some(&fleet);
    // The provider recovers.
    for i in 0..5 {
        fleet.fake.set_failure(Some(da_id(i)), ApiFailure::None);
    }
    donate_some(&fleet);

    // Assert
    fleet.assert_every_donation_once().await;
}
