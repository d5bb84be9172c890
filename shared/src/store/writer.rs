//! The queue-serialized writer: one thread owns the only write connection.
//!
//! Callers send a write (a closure) over a channel with a reply channel. The thread takes
//! everything queued, runs it as one transaction (each write inside its own SAVEPOINT, so a
//! failing write is rolled back alone), commits once (group commit), and only then answers
//! every caller. A caller's `Ok` therefore means "durably committed".
//!
//! Across instances the thread holds the Redis lease `locks:sqlite:writer` around batches and
//! checks the lease's fencing token inside the transaction against the highest one the
//! database has accepted: a writer paused past its lease cannot commit over a newer one.
//! SQLite's own file locking (`BEGIN IMMEDIATE`, `busy_timeout`) is the second barrier.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::schema::MIGRATIONS;
use super::{LeaseFailure, PanicMessage, StoreError};
use crate::config::JournalMode;
use crate::coordination::{Lock, Locks};
use crate::telemetry::error_chain;

/// The lock resource (and fencing key suffix) shared by every instance's writer.
pub const WRITER_LEASE: &str = "locks:sqlite:writer";
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Below this much remaining validity the lease is extended before a batch.
const LEASE_MARGIN: Duration = Duration::from_millis(1500);
/// How long a batch waits for another instance to hand the lease over.
const LEASE_WAIT: Duration = Duration::from_secs(10);
/// Writes queued beyond this make callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 8192;
/// Upper bound on one group commit.
const MAX_BATCH: usize = 2000;
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// `BEGIN IMMEDIATE`/`COMMIT` attempts, each waiting up to `BUSY_TIMEOUT`.
const BUSY_ATTEMPTS: u32 = 3;

/// A queued write. `run` executes it inside the batch transaction and says whether it
/// succeeded; the returned `Reply` answers the caller once the batch's fate is known.
/// `fail` answers without running it (the batch could not start).
trait QueuedWrite: Send {
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply);
    fn fail(self: Box<Self>, failure: BatchFailure);
}

type Job = Box<dyn QueuedWrite>;
type Reply = Box<dyn FnOnce(Result<(), BatchFailure>) + Send>;

struct Write<F, T> {
    write: F,
    reply_to: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> QueuedWrite for Write<F, T>
where
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply) {
        let Write { write, reply_to } = *self;
        let outcome = match catch_unwind(AssertUnwindSafe(|| write(conn))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Write(e)),
            Err(panic) => Err(StoreError::Panicked(PanicMessage(panic_message(&panic)))),
        };
        let succeeded = outcome.is_ok();
        let reply: Reply = Box::new(move |batch| {
            let result = match (outcome, batch) {
                (Ok(value), Ok(())) => Ok(value),
                (Err(own), _) => Err(own),
                (Ok(_), Err(failure)) => Err(failure.into()),
            };
            // The caller may have gone away; the write stands either way.
            let _ = reply_to.send(result);
        });
        (succeeded, reply)
    }

    fn fail(self: Box<Self>, failure: BatchFailure) {
        let _ = self.reply_to.send(Err(failure.into()));
    }
}

/// Why a whole batch failed; every caller in it gets this.
#[derive(Debug, Clone)]
pub(crate) enum BatchFailure {
    Commit(Arc<rusqlite::Error>),
    Busy,
    Lease(LeaseFailure),
}

impl From<BatchFailure> for StoreError {
    fn from(failure: BatchFailure) -> Self {
        match failure {
            BatchFailure::Commit(e) => StoreError::Commit(e),
            BatchFailure::Busy => StoreError::Busy,
            BatchFailure::Lease(why) => StoreError::Lease(why),
        }
    }
}

/// Live figures for `/health`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub queue_depth: AtomicUsize,
    /// Duration of the last successful commit, in microseconds.
    pub last_commit_us: AtomicU64,
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub alive: AtomicBool,
    /// Batches the fencing check refused because another writer had taken the lease with a
    /// newer token meanwhile (this process was paused past its lease); each was retried
    /// under a fresh lease.
    pub stale_leases: AtomicU64,
    /// Told each committed batch's size and commit time (the metrics' histograms).
    pub observer: Option<Arc<dyn CommitObserver>>,
}

/// Told of every batch the writer commits: how many writes it carried and how long its
/// commit took. The store reports its figures upward through this, knowing nothing of who
/// keeps them.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    fn committed(&self, writes: u64, took: Duration);
}

/// Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    sender: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs `write` in the next batch and returns once that batch is committed.
    pub async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply_to, answer) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(Write { write, reply_to });
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(job).await.is_err() {
            self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::WriterStopped);
        }
        answer.await.unwrap_or(Err(StoreError::WriterStopped))
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// How the writer keeps other instances out.
pub(crate) enum Lease {
    /// Single-instance mode: this process is the only writer.
    Unshared,
    /// Distributed: the fenced Redis lease, taken from the writer thread on `runtime`.
    Fenced {
        locks: Locks,
        runtime: tokio::runtime::Handle,
    },
}

pub(crate) struct WriterOptions {
    pub path: PathBuf,
    pub journal_mode: JournalMode,
    pub lease: Lease,
    pub commits: Option<Arc<dyn CommitObserver>>,
}

/// Starts the writer thread: opens the database, applies migrations, then serves writes.
/// Returns once the database is ready (or could not be made ready).
pub(crate) async fn start(
    options: WriterOptions,
) -> Result<(WriterHandle, JournalMode), StoreError> {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let stats = Arc::new(WriterStats {
        observer: options.commits.clone(),
        ..WriterStats::default()
    });
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_stats = stats.clone();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut writer = match Writer::open(options, thread_stats) {
                Ok(w) => w,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = writer.migrate() {
                writer.release_lease();
                let _ = ready_tx.send(Err(e));
                return;
            }
            writer.release_lease();
            writer.stats.alive.store(true, Ordering::Relaxed);
            let _ = ready_tx.send(Ok(writer.journal_mode));
            writer.serve(receiver);
            writer.stats.alive.store(false, Ordering::Relaxed);
        })
        .map_err(StoreError::Thread)?;
    let journal_mode = ready_rx.await.unwrap_or(Err(StoreError::WriterStopped))?;
    Ok((WriterHandle { sender, stats }, journal_mode))
}

struct Writer {
    conn: Connection,
    journal_mode: JournalMode,
    lease: Lease,
    held: Option<Lock>,
    stats: Arc<WriterStats>,
}

/// Applies the pragmas every connection to the database shares.
pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// The files SQLite keeps beside the database (WAL mode: `-wal`, `-shm`; rollback modes:
/// `-journal`). SQLite creates each with the main file's permissions.
const COMPANION_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates the database file readable by its owner only (0600, like the key file beside it),
/// before SQLite would create it world-readable; its companions inherit that mode. Files left
/// wider by an earlier version are narrowed, with a warning if that is not permitted.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut files = vec![path.to_path_buf()];
    for suffix in COMPANION_SUFFIXES {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        if metadata.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(
                file = %file.display(),
                error = %error_chain(&e),
                "could not make the database file private (0600)"
            );
        }
    }
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Writer {
    fn open(options: WriterOptions, stats: Arc<WriterStats>) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: options.path.display().to_string(),
            source,
        };
        let file_error = |source| StoreError::CreateFile {
            path: options.path.display().to_string(),
            source,
        };
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(file_error)?;
        }
        create_private(&options.path).map_err(file_error)?;
        let conn = Connection::open_with_flags(
            &options.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        configure(&conn).map_err(open_error)?;
        // FULL: a commit the caller was told about survives power loss, in both journal modes.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        let actual: String = conn
            .pragma_update_and_check(None, "journal_mode", options.journal_mode.as_str(), |r| {
                r.get(0)
            })
            .map_err(open_error)?;
        if !actual.eq_ignore_ascii_case(options.journal_mode.as_str()) {
            return Err(StoreError::JournalMode {
                wanted: options.journal_mode.as_str(),
                got: actual,
            });
        }
        Ok(Self {
            conn,
            journal_mode: options.journal_mode,
            lease: options.lease,
            held: None,
            stats,
        })
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        // Nearly every start finds the schema current: then it needs neither the lease (a
        // Redis round trip each way, on a cold start's path) nor a write transaction.
        // Migrations only move forward, so a current schema stays current.
        let applied: u32 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::Migration { version: 0, source })?;
        if applied as usize >= MIGRATIONS.len() {
            return Ok(());
        }
        if let Err(failure) = self.take_lease() {
            // Migrations are idempotent (user_version is checked inside an IMMEDIATE
            // transaction), so SQLite's own lock is enough to serialize them; starting lets
            // /health report the Redis outage instead of the process failing to boot.
            tracing::warn!(?failure, "migrating without the writer lease");
        }
        self.begin().map_err(StoreError::from)?;
        let result = (|| {
            let applied: u32 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|source| StoreError::Migration { version: 0, source })?;
            for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                let version = index as u32 + 1;
                self.conn
                    .execute_batch(migration)
                    .and_then(|_| self.conn.pragma_update(None, "user_version", version))
                    .map_err(|source| StoreError::Migration { version, source })?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.commit().map_err(StoreError::from),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn serve(&mut self, mut receiver: mpsc::Receiver<Job>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
            // Take what is queued; when the queue runs dry, give the callers just answered one
            // chance to queue their next write (a yield, microseconds) before committing.
            let mut yielded = false;
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) if !yielded => {
                        yielded = true;
                        std::thread::yield_now();
                    }
                    Err(_) => break,
                }
            }
            self.stats
                .queue_depth
                .fetch_sub(batch.len(), Ordering::Relaxed);
            self.run_batch(batch);
            if receiver.is_empty() {
                // Idle: hand the lease to whichever instance needs it next.
                self.release_lease();
            }
        }
        self.release_lease();
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let count = jobs.len() as u64;
        if let Err(failure) = self.begin_fenced() {
            for job in jobs {
                job.fail(failure.clone());
            }
            return;
        }
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push(self.run_in_savepoint(job));
        }
        let started = Instant::now();
        let outcome = self.commit();
        if outcome.is_ok() {
            let took = started.elapsed();
            self.stats
                .last_commit_us
                .store(took.as_micros() as u64, Ordering::Relaxed);
            if let Some(observer) = &self.stats.observer {
                observer.committed(count, took);
            }
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(count, Ordering::Relaxed);
        }
        for reply in replies {
            reply(outcome.clone());
        }
    }

    fn run_in_savepoint(&mut self, job: Job) -> Reply {
        // Cached statements: parsing these twice per write would cost more than the write.
        if let Err(e) = self.execute_cached("SAVEPOINT write") {
            job.fail(BatchFailure::Commit(Arc::new(e)));
            return Box::new(|_| {});
        }
        let (succeeded, reply) = job.run(&self.conn);
        let end = if succeeded {
            self.execute_cached("RELEASE write")
        } else {
            self.execute_cached("ROLLBACK TO write")
                .and_then(|_| self.execute_cached("RELEASE write"))
        };
        if let Err(e) = end {
            let failure = BatchFailure::Commit(Arc::new(e));
            return Box::new(move |_| reply(Err(failure)));
        }
        reply
    }

    fn execute_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    /// `BEGIN IMMEDIATE`, retried while another connection holds the write lock.
    fn begin(&mut self) -> Result<(), BatchFailure> {
        for attempt in 1..=BUSY_ATTEMPTS {
            match self.conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(()),
                Err(e) if is_busy(&e) && attempt < BUSY_ATTEMPTS => continue,
                Err(e) if is_busy(&e) => return Err(BatchFailure::Busy),
                Err(e) => return Err(BatchFailure::Commit(Arc::new(e))),
            }
        }
        Err(BatchFailure::Busy)
    }

    /// Takes the lease, begins the transaction, and checks our fencing token against the
    /// highest the database has accepted. A lower token means another writer took over
    /// while we were paused, or Redis lost its counter: raise the counter past the stored
    /// token, give the lease back and take it again with a fresh token.
    fn begin_fenced(&mut self) -> Result<(), BatchFailure> {
        for _ in 0..2 {
            let fence = self.take_lease()?;
            if let Some(fence) = fence {
                tracing::trace!(fence, "writer lease held; beginning a batch");
            }
            self.begin()?;
            let Some(fence) = fence else {
                return Ok(());
            };
            match self.accept_fence(fence) {
                Ok(None) => return Ok(()),
                Ok(Some(stored)) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.stats.stale_leases.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        fence,
                        stored,
                        "writer lease token is stale; re-taking the lease"
                    );
                    self.raise_fence(stored);
                    self.release_lease();
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(BatchFailure::Commit(Arc::new(e)));
                }
            }
        }
        Err(BatchFailure::Lease(LeaseFailure::FenceBehind))
    }

    /// `Ok(None)` when `fence` is current (and is now recorded), `Ok(Some(stored))` when stale.
    fn accept_fence(&self, fence: u64) -> rusqlite::Result<Option<u64>> {
        let stored: Option<i64> = self
            .conn
            .query_row(
                "SELECT token FROM fencing WHERE resource = ?1",
                [WRITER_LEASE],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })?;
        match stored {
            Some(stored) if stored as u64 > fence => Ok(Some(stored as u64)),
            Some(stored) if stored as u64 == fence => Ok(None),
            _ => {
                self.conn.execute(
                    "INSERT INTO fencing (resource, token) VALUES (?1, ?2)
                     ON CONFLICT (resource) DO UPDATE SET token = excluded.token",
                    rusqlite::params![WRITER_LEASE, fence as i64],
                )?;
                Ok(None)
            }
        }
    }

    fn commit(&mut self) -> Result<(), BatchFailure> {
        for attempt in 1..=BUSY_ATTEMPTS {
            match self.conn.execute_batch("COMMIT") {
                Ok(()) => return Ok(()),
                // The transaction stays open on SQLITE_BUSY, so COMMIT can simply be retried.
                Err(e) if is_busy(&e) && attempt < BUSY_ATTEMPTS => continue,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(if is_busy(&e) {
                        BatchFailure::Busy
                    } else {
                        BatchFailure::Commit(Arc::new(e))
                    });
                }
            }
        }
        Err(BatchFailure::Busy)
    }

    /// Makes sure we hold the lease; returns its fencing token (none when unshared).
    fn take_lease(&mut self) -> Result<Option<u64>, BatchFailure> {
        let Lease::Fenced { locks, runtime } = &self.lease else {
            return Ok(None);
        };
        if let Some(lock) = &self.held {
            if lock.remaining() > LEASE_MARGIN {
                return Ok(Some(lock.fence));
            }
            let (locks_, lock_) = (locks.clone(), lock.clone());
            match on_runtime(
                runtime,
                async move { locks_.extend(&lock_, LEASE_TTL).await },
            ) {
                Some(Ok(Some(extended))) => {
                    let fence = extended.fence;
                    self.held = Some(extended);
                    return Ok(Some(fence));
                }
                _ => self.held = None,
            }
        }
        let locks_ = locks.clone();
        match on_runtime(runtime, async move {
            locks_
                .lock_within(WRITER_LEASE, LEASE_TTL, LEASE_WAIT)
                .await
        }) {
            Some(Ok(Some(lock))) => {
                let fence = lock.fence;
                self.held = Some(lock);
                Ok(Some(fence))
            }
            Some(Ok(None)) => Err(BatchFailure::Lease(LeaseFailure::HeldElsewhere(LEASE_WAIT))),
            Some(Err(e)) => Err(BatchFailure::Lease(LeaseFailure::Coordination(Arc::new(e)))),
            None => Err(BatchFailure::Lease(LeaseFailure::ShuttingDown)),
        }
    }

    fn raise_fence(&self, at_least: u64) {
        if let Lease::Fenced { locks, runtime } = &self.lease
            && let Some(Err(e)) = {
                let locks = locks.clone();
                on_runtime(runtime, async move {
                    locks.raise_fence(WRITER_LEASE, at_least).await
                })
            }
        {
            tracing::warn!(error = %error_chain(&e), "could not raise the writer lease's fencing counter");
        }
    }

    fn release_lease(&mut self) {
        if let (Some(lock), Lease::Fenced { locks, runtime }) = (self.held.take(), &self.lease)
            && let Some(Err(e)) = {
                let locks = locks.clone();
                on_runtime(runtime, async move { locks.release(&lock).await })
            }
        {
            // It expires by itself within LEASE_TTL.
            tracing::warn!(error = %error_chain(&e), "could not release the writer lease");
        }
    }
}

/// Runs `future` on the application's runtime and waits for it on the writer thread; `None`
/// when that runtime is shutting down (the process is ending): the task is dropped unrun
/// and the writer gives up the call instead of panicking inside a dying runtime.
fn on_runtime<F>(runtime: &tokio::runtime::Handle, future: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done.send(future.await);
    });
    result.recv().ok()
}
