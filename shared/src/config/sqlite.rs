//! SQLite: the database file, its journal mode and the read pool.

use std::path::PathBuf;

use super::{Deployment, Reader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    Wal,
    Delete,
    Truncate,
    Persist,
}

impl JournalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wal => "wal",
            Self::Delete => "delete",
            Self::Truncate => "truncate",
            Self::Persist => "persist",
        }
    }

    fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "wal" => Ok(Self::Wal),
            "delete" => Ok(Self::Delete),
            "truncate" => Ok(Self::Truncate),
            "persist" => Ok(Self::Persist),
            other => Err(format!(
                "must be one of wal, delete, truncate, persist (got {other:?})"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub journal_mode: JournalMode,
    /// Read-only connections in the read pool.
    pub read_connections: usize,
}

impl Reader<'_> {
    pub(super) fn sqlite(&mut self, deployment: Deployment) -> SqliteConfig {
        let default_path = match deployment {
            Deployment::Local => "data.sqlite",
            Deployment::Aws => "/mnt/data/data.sqlite",
        };
        let path = PathBuf::from(self.get("SQLITE_PATH").unwrap_or(default_path));
        let journal_mode = match self.get("SQLITE_JOURNAL_MODE").map(JournalMode::parse) {
            None => JournalMode::Wal,
            Some(Ok(mode)) => mode,
            Some(Err(problem)) => {
                self.fail("SQLITE_JOURNAL_MODE", problem);
                JournalMode::Wal
            }
        };
        let read_connections = self.number("DB_CONCURRENCY", 4, 1, 64) as usize;
        SqliteConfig {
            path,
            journal_mode,
            read_connections,
        }
    }
}
