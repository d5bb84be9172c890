//! The durable store: SQLite, written only through the queue-serialized writer
//! ([`writer`]), read through a small pool of read-only connections.
//!
//! On local disk the journal is WAL; on EFS (AWS) it must be `delete`: WAL needs shared
//! memory between processes, which a network filesystem cannot give.

pub mod accounts;
pub mod donationalerts;
pub mod outbox;
pub mod schema;
pub mod tokens;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

pub use writer::{CommitObserver, WRITER_LEASE, WriterStats};

use crate::config::{JournalMode, SqliteConfig};
use crate::coordination::Coordinator;
use writer::{Lease, WriterHandle, WriterOptions};

/// A Twitch user id is written and read as the text Twitch issues; a stored id that is not
/// one fails the read rather than reaching the rest of the program.
impl rusqlite::ToSql for crate::domain::TwitchUserId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
    }
}

impl rusqlite::types::FromSql for crate::domain::TwitchUserId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other("a stored Twitch user id is malformed".into())
        })
    }
}

impl rusqlite::ToSql for crate::domain::DaUserId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.0))
    }
}

impl rusqlite::types::FromSql for crate::domain::DaUserId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value.as_i64().map(Self)
    }
}

/// Why the writer lease could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseFailure {
    #[error("another instance held it for more than {0:?}")]
    HeldElsewhere(std::time::Duration),
    #[error("Redis could not be asked")]
    Coordination(#[source] Arc<crate::coordination::CoordinationError>),
    #[error("the process is shutting down")]
    ShuttingDown,
    #[error("the lease's fencing token stayed below the database's")]
    FenceBehind,
}

/// What a panicking write said.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PanicMessage(pub String);

/// Why a read did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReadInterruption {
    #[error("the read pool is closed")]
    PoolClosed(#[source] tokio::sync::AcquireError),
    #[error("the read panicked")]
    Panicked,
    #[error("the read's thread was lost")]
    Join(#[source] tokio::task::JoinError),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database at {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not create the database file {path}")]
    CreateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the database refused journal_mode={wanted} (it is {got})")]
    JournalMode { wanted: &'static str, got: String },
    #[error("migration {version} failed")]
    Migration {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    /// The caller's own write failed; it was rolled back alone and nothing of it was written.
    #[error("the write was refused by the database")]
    Write(#[source] rusqlite::Error),
    /// The whole batch was rolled back (e.g. the disk is full); nothing of it was written.
    #[error("the write could not be committed")]
    Commit(#[source] Arc<rusqlite::Error>),
    #[error("the database stayed locked by another writer; the write was not applied")]
    Busy,
    #[error("the writer lease locks:sqlite:writer could not be taken")]
    Lease(#[source] LeaseFailure),
    #[error("the writer has stopped")]
    WriterStopped,
    #[error("the write panicked and was rolled back")]
    Panicked(#[source] PanicMessage),
    #[error("could not start the writer thread")]
    Thread(#[source] std::io::Error),
    #[error("the read failed")]
    Read(#[source] rusqlite::Error),
    #[error("the read was interrupted")]
    ReadInterrupted(#[source] ReadInterruption),
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: WriterHandle,
    readers: Arc<ReadPool>,
    journal_mode: JournalMode,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the database, starts the writer and the read
    /// pool. With a Redis coordinator, writes take the fenced lease `locks:sqlite:writer`.
    pub async fn open(
        config: &SqliteConfig,
        coordinator: &Coordinator,
    ) -> Result<Self, StoreError> {
        Self::open_reporting(config, coordinator, None).await
    }

    /// [`Store::open`], telling `commits` of every batch the writer commits.
    pub(crate) async fn open_reporting(
        config: &SqliteConfig,
        coordinator: &Coordinator,
        commits: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        let lease = match coordinator {
            Coordinator::Redis(_) => Lease::Fenced {
                locks: coordinator.locks(),
                runtime: tokio::runtime::Handle::current(),
            },
            Coordinator::InProcess(_) => Lease::Unshared,
        };
        let (writer, journal_mode) = writer::start(WriterOptions {
            path: config.path.clone(),
            journal_mode: config.journal_mode,
            lease,
            commits,
        })
        .await?;
        let readers = ReadPool::new(&config.path, config.read_connections);
        Ok(Self {
            writer,
            readers: Arc::new(readers),
            journal_mode,
            path: config.path.clone(),
        })
    }

    /// Queues `write` for the next group commit and returns once it is durably committed.
    /// `write` runs inside the batch's transaction, in its own savepoint: returning an error
    /// rolls back just this write. It must not COMMIT or BEGIN.
    pub async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(write).await
    }

    /// Runs `read` on a pooled read-only connection, off the async runtime.
    pub async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.readers.clone().read(read).await
    }

    pub fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    /// Reads run so far through the read pool (`/health` shows its probe is shared by them).
    pub fn reads(&self) -> u64 {
        self.readers.reads.load(Ordering::Relaxed)
    }

    pub fn journal_mode(&self) -> JournalMode {
        self.journal_mode
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Up to `DB_CONCURRENCY` read-only connections; a semaphore hands them out. Each is opened
/// when first needed, not at start: a cold start that serves one request opens one (the
/// health function: none before its first probe), and opening on EFS costs round trips.
struct ReadPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    reads: AtomicU64,
}

impl ReadPool {
    fn new(path: &std::path::Path, size: usize) -> Self {
        Self {
            path: path.to_owned(),
            permits: Arc::new(Semaphore::new(size.max(1))),
            idle: Mutex::new(Vec::with_capacity(size)),
            reads: AtomicU64::new(0),
        }
    }

    /// An idle connection, or a new one while fewer than the permits exist.
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| writer::configure(&c).map(|_| c))
        .map_err(|source| StoreError::Open {
            path: self.path.display().to_string(),
            source,
        })
    }

    async fn read<T, F>(self: Arc<Self>, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::ReadInterrupted(ReadInterruption::PoolClosed(e)))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.reads.fetch_add(1, Ordering::Relaxed);
            let conn = pool.take()?;
            let result =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&conn))) {
                    Ok(result) => result.map_err(StoreError::Read),
                    Err(_) => Err(StoreError::ReadInterrupted(ReadInterruption::Panicked)),
                };
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::ReadInterrupted(ReadInterruption::Join(e)))?
    }
}
