//! The queue-serialized writer: group commit, failure isolation, crash safety, and two
//! processes sharing one database file through the Redis writer lease.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use avatar_tests::{
    ChildProcess, RedisServer, insert_test_donation, redis_coordinator, wait_until,
};
use shared::config::{JournalMode, SqliteConfig};
use shared::coordination::Coordinator;
use shared::coordination::memory::InProcessCoordinator;
use shared::store::{Store, StoreError, WRITER_LEASE};

async fn open_store(dir: &std::path::Path, journal_mode: JournalMode) -> Store {
    let config = SqliteConfig {
        path: dir.join("data.sqlite"),
        journal_mode,
        read_connections: 2,
    };
    Store::open(
        &config,
        &Coordinator::InProcess(InProcessCoordinator::new()),
    )
    .await
    .expect("store opens")
}

fn count_rows(path: &std::path::Path, streamer: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT count(*) FROM donations WHERE streamer_twitch_id = ?1",
        [streamer],
        |r| r.get(0),
    )
    .unwrap()
}

fn integrity(path: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Occupies the writer thread until the returned sender is dropped or sent to, so that the
/// writes queued meanwhile are committed together in the next batch.
async fn hold_the_writer(
    store: &Store,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let store = store.clone();
    let holder = tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = started_tx.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    tokio::time::timeout(Duration::from_secs(30), started_rx)
        .await
        .expect("the writer took the held write within 30 s")
        .unwrap();
    (release, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_of_a_thousand_writes_each_all_land_exactly_once() {
    for mode in [JournalMode::Wal, JournalMode::Delete] {
        // Arrange
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), mode).await;

        // Act
        let mut tasks = Vec::new();
        for task in 0..8i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..1000i64 {
                    let id = task * 1000 + i;
                    store
                        .write(move |conn| insert_test_donation(conn, "s", id))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }

        // Assert
        let ids: Vec<i64> = store
            .read(|conn| {
                let mut stmt =
                    conn.prepare("SELECT da_donation_id FROM donations ORDER BY da_donation_id")?;
                stmt.query_map([], |r| r.get(0))?.collect()
            })
            .await
            .unwrap();
        assert_eq!(ids, (0..8000).collect::<Vec<_>>(), "{mode:?}");
        let stats = store.writer_stats();
        assert_eq!(stats.writes.load(Ordering::Relaxed), 8000);
        assert_eq!(stats.queue_depth.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_error_fails_only_its_own_write_in_a_shared_batch() {
    // Arrange: one row exists; the writer is held while 50 writes queue up behind it.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), JournalMode::Wal).await;
    store
        .write(|conn| insert_test_donation(conn, "s", 25))
        .await
        .unwrap();
    let commits_before = store.writer_stats().commits.load(Ordering::Relaxed);
    let (release, holder) = hold_the_writer(&store).await;
    let mut writes = Vec::new();
    for id in 0..50i64 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            store
                .write(move |conn| insert_test_donation(conn, "s", id))
                .await
        }));
    }
    wait_until("50 writes queued", Duration::from_secs(10), || async {
        store.writer_stats().queue_depth.load(Ordering::Relaxed) == 50
    })
    .await;

    // Act
    release.send(()).unwrap();
    holder.await.unwrap();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.unwrap());
    }

    // Assert: id 25 collided and failed alone; the 49 others were committed in one batch.
    for (id, result) in results.iter().enumerate() {
        if id == 25 {
            let error = result.as_ref().unwrap_err();
            assert!(matches!(error, StoreError::Write(_)), "{error}");
            let chain = shared::telemetry::error_chain(error);
            assert!(chain.contains("UNIQUE"), "{chain}");
        } else {
            assert!(result.is_ok(), "write {id}: {result:?}");
        }
    }
    assert_eq!(count_rows(&dir.path().join("data.sqlite"), "s"), 50);
    assert_eq!(
        store.writer_stats().commits.load(Ordering::Relaxed),
        commits_before + 2,
        "the held write and then one batch of 50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_affected_writes_and_the_writer_recovers() {
    // Arrange: cap the database at its current size (SQLITE_FULL, as a full disk).
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), JournalMode::Delete).await;
    store
        .write(|conn| {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        })
        .await
        .unwrap();

    // Act: a large row needs new pages; a panicking write fails too.
    let big = "x".repeat(200_000);
    let full = store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO event_outbox (event_id, streamer_twitch_id, kind, payload, created_at)
                 VALUES ('big', 's', 'donation', ?1, 0)",
                [&big],
            )
            .map(|_| ())
        })
        .await;
    let panicked = store
        .write(|_| -> rusqlite::Result<()> { panic!("a bug in one write") })
        .await;

    // Assert: both failed with an error, nothing of them was written, and the writer goes on.
    let full = full.unwrap_err();
    let chain = shared::telemetry::error_chain(&full);
    assert!(chain.contains("full"), "{chain}");
    assert!(matches!(panicked, Err(StoreError::Panicked(ref m)) if m.0.contains("a bug")));
    store
        .write(|conn| conn.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(())))
        .await
        .unwrap();
    store
        .write(|conn| insert_test_donation(conn, "s", 1))
        .await
        .unwrap();
    let outbox: i64 = store
        .read(|conn| conn.query_row("SELECT count(*) FROM event_outbox", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(outbox, 0);
    assert_eq!(integrity(&dir.path().join("data.sqlite")), "ok");
}

/// The file's permission bits in octal (`"600"`), `None` when it does not exist.
fn mode_of(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| format!("{:o}", m.permissions().mode() & 0o777))
}

const PRIVATE: Option<&str> = Some("600");

fn companion(db: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_files_are_readable_by_their_owner_only() {
    // WAL: the main file, -wal and -shm all exist once a write is committed.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let store = open_store(dir.path(), JournalMode::Wal).await;
    store
        .write(|conn| insert_test_donation(conn, "s", 1))
        .await
        .unwrap();
    for file in [db.clone(), companion(&db, "-wal"), companion(&db, "-shm")] {
        assert_eq!(mode_of(&file).as_deref(), PRIVATE, "{}", file.display());
    }

    // Delete mode: the -journal exists while a write transaction has changed a page, so the
    // write itself looks at it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let store = open_store(dir.path(), JournalMode::Delete).await;
    let journal = companion(&db, "-journal");
    let journal_mode = store
        .write(move |conn| {
            insert_test_donation(conn, "s", 1)?;
            Ok(mode_of(&journal))
        })
        .await
        .unwrap();
    assert_eq!(mode_of(&db).as_deref(), PRIVATE);
    assert_eq!(
        journal_mode.as_deref(),
        PRIVATE,
        "the -journal during a write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_files_left_readable_by_others_are_made_private_at_open() {
    use std::os::unix::fs::PermissionsExt as _;
    // Arrange: a database (and its WAL files) created before, readable by everyone, still
    // open so that -wal and -shm exist.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let earlier = rusqlite::Connection::open(&db).unwrap();
    earlier.pragma_update(None, "journal_mode", "wal").unwrap();
    earlier.execute_batch("CREATE TABLE earlier (x)").unwrap();
    let files = [db.clone(), companion(&db, "-wal"), companion(&db, "-shm")];
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // Act
    let _store = open_store(dir.path(), JournalMode::Wal).await;

    // Assert
    for file in &files {
        assert_eq!(mode_of(file).as_deref(), PRIVATE, "{}", file.display());
    }
}

/// Acknowledged ids from a writer child's stdout.
fn acknowledged(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ok "))
        .map(|id| id.parse().unwrap())
        .collect()
}

fn writer_child(db: &std::path::Path, journal: &str, streamer: &str, start: i64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coord-child"));
    command
        .arg("write")
        .args(["--db", db.to_str().unwrap()])
        .args(["--journal", journal, "--streamer", streamer])
        .args(["--start", &start.to_string(), "--count", "1000000"]);
    command
}

fn random_below(n: u64) -> u64 {
    let bytes = shared::secret::random_bytes(8);
    u64::from_le_bytes(bytes.try_into().unwrap()) % n
}

#[test]
fn a_writer_killed_at_random_moments_keeps_every_acknowledged_write() {
    for journal in ["wal", "delete"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let mut acked = Vec::new();
        for round in 0..12i64 {
            // Arrange: a child writing as fast as it can, 8 writes in flight.
            let child =
                ChildProcess::spawn(&mut writer_child(&db, journal, "s", round * 10_000_000));
            // Act: SIGKILL after a random number of acknowledgements (at least one).
            let kill_after = 1 + random_below(400) as usize;
            let mut lines = Vec::new();
            child.read_until(
                &mut lines,
                &format!("{kill_after} acknowledgements"),
                Duration::from_secs(60),
                |lines| !failures(lines).is_empty() || acknowledged(lines).len() >= kill_after,
            );
            assert!(failures(&lines).is_empty(), "{:?}", failures(&lines));
            avatar_tests::signal(child.child.id(), libc::SIGKILL);
            lines.extend(child.remaining_lines(Duration::from_secs(10)));
            acked.extend(acknowledged(&lines));
            drop(child);

            // Assert: the file is sound and holds every acknowledged write.
            assert_eq!(integrity(&db), "ok", "{journal} round {round}");
            let conn = rusqlite::Connection::open(&db).unwrap();
            let present: HashSet<i64> = conn
                .prepare("SELECT da_donation_id FROM donations")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let missing: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
            assert!(
                missing.is_empty(),
                "{journal} round {round}: lost {missing:?}"
            );
        }
        assert!(acked.len() >= 12, "every round acknowledged something");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_database_through_the_writer_lease() {
    // Arrange
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let spawn = |streamer: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coord-child"));
        command
            .arg("write")
            .args(["--db", db.to_str().unwrap(), "--redis", &redis.url()])
            .args(["--journal", "delete", "--streamer", streamer])
            .args(["--count", "1500", "--concurrency", "8"]);
        ChildProcess::spawn(&mut command)
    };

    // Act
    let mut first = spawn("a");
    let mut second = spawn("b");
    let first_lines = first.remaining_lines(Duration::from_secs(120));
    let second_lines = second.remaining_lines(Duration::from_secs(120));

    // Assert: every write acknowledged, none failed (no SQLITE_BUSY reached a caller).
    for lines in [&first_lines, &second_lines] {
        let failures: Vec<_> = lines.iter().filter(|l| !l.starts_with("ok ")).collect();
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(acknowledged(lines).len(), 1500);
    }
    assert_eq!(first.wait(Duration::from_secs(10)), Some(0));
    assert_eq!(second.wait(Duration::from_secs(10)), Some(0));
    assert_eq!(count_rows(&db, "a"), 1500);
    assert_eq!(count_rows(&db, "b"), 1500);
    assert_eq!(integrity(&db), "ok");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored_fence: i64 = conn
        .query_row(
            "SELECT token FROM fencing WHERE resource = ?1",
            [WRITER_LEASE],
            |r| r.get(0),
        )
        .unwrap();
    let mut redis_conn = redis.connection().await;
    let counter: i64 = redis::cmd("GET")
        .arg(format!("fence:{WRITER_LEASE}"))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(
        stored_fence >= 2 && stored_fence <= counter,
        "{stored_fence} vs {counter}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_token_is_refused_and_the_writer_recovers_with_a_newer_one() {
    // Arrange: the database has accepted token 1000, as if Redis had since lost its counter.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig {
        path: dir.path().join("data.sqlite"),
        journal_mode: JournalMode::Delete,
        read_connections: 1,
    };
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = Store::open(&config, &coordinator).await.unwrap();
    store
        .write(|conn| {
            conn.execute(
                "UPDATE fencing SET token = 1000 WHERE resource = ?1",
                [WRITER_LEASE],
            )
            .map(|_| ())
        })
        .await
        .unwrap();

    // Act
    let result = store.write(|conn| insert_test_donation(conn, "s", 1)).await;

    // Assert: the writer refused its stale token, raised the counter and wrote with a newer one.
    result.unwrap();
    let stored: i64 = store
        .read(|conn| {
            conn.query_row(
                "SELECT token FROM fencing WHERE resource = ?1",
                [WRITER_LEASE],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert!(stored > 1000, "{stored}");
    assert_eq!(count_rows(&config.path, "s"), 1);
}

/// The writer lease's token the database has accepted (0 before the first fenced batch).
fn stored_fence(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT token FROM fencing WHERE resource = ?1",
        [WRITER_LEASE],
        |r| r.get(0),
    )
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(0),
        other => Err(other),
    })
    .unwrap()
}

/// Whether the process is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "T")
        })
        .unwrap_or(false)
}

fn failures(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.starts_with("err") || l.starts_with("open-failed"))
        .collect()
}

fn assert_every_acknowledged_write_is_stored(db: &std::path::Path, writers: &[(&str, &[String])]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for (streamer, lines) in writers {
        for id in acknowledged(lines) {
            let found: i64 = conn
                .query_row(
                    "SELECT count(*) FROM donations WHERE streamer_twitch_id = ?1 AND da_donation_id = ?2",
                    rusqlite::params![streamer, id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(found, 1, "{streamer} {id}");
        }
    }
}

#[test]
fn a_writer_paused_past_its_lease_is_fenced_out_and_loses_nothing() {
    // Arrange: two writer processes on one database through the lease. The first stops
    // itself (SIGSTOP) after 50 writes, at the moment it holds the lease for a batch that has
    // not begun: the one place a paused writer can still believe the lease is its own.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let spawn = |streamer: &str, extra: &[&str]| {
        let mut command = writer_child(&db, "delete", streamer, 0);
        command.args(["--redis", &redis.url(), "--concurrency", "4"]);
        command.args(extra);
        ChildProcess::spawn(&mut command)
    };
    let paused = spawn("paused", &["--stop-holding-lease-after", "50"]);
    let steady = spawn("steady", &[]);
    let mut paused_lines = Vec::new();
    paused.read_until(
        &mut paused_lines,
        "the paused writer to stop holding the lease",
        Duration::from_secs(60),
        |lines| {
            lines
                .iter()
                .any(|l| l.starts_with("stopped-holding-lease "))
        },
    );
    let stale_fence: i64 = paused_lines
        .iter()
        .find_map(|l| l.strip_prefix("stopped-holding-lease "))
        .unwrap()
        .parse()
        .unwrap();
    let paused_pid = paused.child.id();
    let mut steady_lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Its lease expires (5 s TTL); the steady writer takes it and commits a newer token.
    while !is_stopped(paused_pid) || stored_fence(&db) <= stale_fence {
        assert!(
            std::time::Instant::now() < deadline,
            "the steady writer did not commit under a newer lease while the other was stopped"
        );
        steady_lines.extend(steady.next_line(Duration::from_millis(20)));
    }
    assert!(!acknowledged(&paused_lines).is_empty());

    // Act: the paused writer resumes into its batch with the stale token.
    avatar_tests::signal(paused_pid, libc::SIGCONT);
    let resumed_at = acknowledged(&paused_lines).len();
    paused.read_until(
        &mut paused_lines,
        "the resumed writer to be fenced out and to write 50 more",
        Duration::from_secs(60),
        |lines| {
            lines.iter().any(|l| l.starts_with("fenced-out "))
                && acknowledged(lines).len() >= resumed_at + 50
        },
    );
    avatar_tests::signal(paused_pid, libc::SIGKILL);
    avatar_tests::signal(steady.child.id(), libc::SIGKILL);
    paused_lines.extend(paused.remaining_lines(Duration::from_secs(10)));
    steady_lines.extend(steady.remaining_lines(Duration::from_secs(10)));

    // Assert: the fencing check refused the stale batch exactly once; it was retried under a
    // fresh lease, so no write failed; every acknowledged write is there; the file is sound.
    assert!(
        paused_lines.iter().any(|l| l == "fenced-out 1"),
        "{:?}",
        paused_lines
            .iter()
            .filter(|l| !l.starts_with("ok "))
            .collect::<Vec<_>>()
    );
    for lines in [&paused_lines, &steady_lines] {
        assert!(failures(lines).is_empty(), "{:?}", failures(lines));
    }
    assert!(!acknowledged(&steady_lines).is_empty());
    assert!(stored_fence(&db) > stale_fence);
    assert_eq!(integrity(&db), "ok");
    assert_every_acknowledged_write_is_stored(
        &db,
        &[("paused", &paused_lines), ("steady", &steady_lines)],
    );
}

#[test]
fn a_writer_stopped_and_resumed_twenty_times_fails_no_write() {
    // Arrange: two writer processes on one database through the lease.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.sqlite");
    let spawn = |streamer: &str| {
        let mut command = writer_child(&db, "delete", streamer, 0);
        command.args(["--redis", &redis.url(), "--concurrency", "4"]);
        ChildProcess::spawn(&mut command)
    };
    let stopped = spawn("stopped");
    let steady = spawn("steady");
    let mut stopped_lines = Vec::new();
    let mut steady_lines = Vec::new();

    // Act: stop one writer wherever it is, longer than a lease command may take (500 ms),
    // twenty times, each time after it has acknowledged a few more writes.
    for round in 0..20 {
        let before = acknowledged(&stopped_lines).len();
        stopped.read_until(
            &mut stopped_lines,
            &format!("writes before stop {round}"),
            Duration::from_secs(60),
            |lines| acknowledged(lines).len() >= before + 5,
        );
        avatar_tests::signal(stopped.child.id(), libc::SIGSTOP);
        let resume_at = std::time::Instant::now() + Duration::from_millis(600);
        while std::time::Instant::now() < resume_at {
            steady_lines.extend(steady.next_line(Duration::from_millis(20)));
        }
        avatar_tests::signal(stopped.child.id(), libc::SIGCONT);
    }
    let before = acknowledged(&stopped_lines).len();
    stopped.read_until(
        &mut stopped_lines,
        "writes after the last stop",
        Duration::from_secs(60),
        |lines| acknowledged(lines).len() >= before + 20,
    );
    avatar_tests::signal(stopped.child.id(), libc::SIGKILL);
    avatar_tests::signal(steady.child.id(), libc::SIGKILL);
    stopped_lines.extend(stopped.remaining_lines(Duration::from_secs(10)));
    steady_lines.extend(steady.remaining_lines(Duration::from_secs(10)));

    // Assert: a lease command cut short by the stop was retried, not failed to the callers.
    for lines in [&stopped_lines, &steady_lines] {
        assert!(failures(lines).is_empty(), "{:?}", failures(lines));
    }
    assert_eq!(integrity(&db), "ok");
    assert_every_acknowledged_write_is_stored(
        &db,
        &[("stopped", &stopped_lines), ("steady", &steady_lines)],
    );
}

/// Commands the server has run so far, less the INFO that asks.
async fn commands_processed(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}

/// Open descriptors of this process on `path`.
fn open_descriptors(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_finds_the_schema_current_asks_redis_nothing_and_opens_readers_when_needed() {
    // Arrange: a first start creates the schema under the writer lease.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig {
        path: dir.path().join("data.sqlite"),
        journal_mode: JournalMode::Delete,
        read_connections: 4,
    };
    let before_first = commands_processed(&redis).await;
    let first = Store::open(&config, &redis_coordinator(&[redis.url()]))
        .await
        .unwrap();
    drop(first);
    let before_second = commands_processed(&redis).await;

    // Act: a second start (a cold start of a function in AWS).
    let second = Store::open(&config, &redis_coordinator(&[redis.url()]))
        .await
        .unwrap();
    let after_second = commands_processed(&redis).await;
    let descriptors_at_start = open_descriptors(&config.path);
    let users: i64 = second
        .read(|conn| conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))
        .await
        .unwrap();

    // Assert: the first start took and released the lease (so the counts see Redis work);
    // the second sent nothing (the one command counted is the INFO before it) and opened
    // only the writer's connection until a read needed one.
    assert!(
        before_second - before_first > 2,
        "the first start should have used the writer lease"
    );
    assert_eq!(after_second - before_second, 1);
    assert_eq!(descriptors_at_start, 1);
    assert_eq!(users, 0);
    assert_eq!(open_descriptors(&config.path), 2);
}
