//! Errors, typed per operation. Messages say what to do.

use std::path::{Path, PathBuf};

/// What to do with a damaged index; every `Damaged` error says it.
fn damaged_advice(index: &Path) -> String {
    let data_dir = index.parent().unwrap_or(Path::new("."));
    format!(
        "move it away (mv {} {}.damaged) and cacheow rebuilds it from the JSON files, or run `cacheow rebuild-index --data-dir {}`",
        index.display(),
        index.display(),
        data_dir.display()
    )
}

/// Opening a data dir failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process holds the redb lock.
    #[error(
        "data dir `{}` is in use by another cacheow process; stop that process or pass a different --data-dir",
        data_dir.display()
    )]
    Locked {
        /// The data dir in use.
        data_dir: PathBuf,
    },
    /// The store was written by a newer cacheow.
    #[error(
        "data dir `{}` has schema version {found}, but this cacheow understands up to {supported}; upgrade cacheow or use another --data-dir",
        data_dir.display()
    )]
    NewerSchema {
        /// The data dir.
        data_dir: PathBuf,
        /// Version found in the store.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The schema marker is not a number we can read.
    #[error(
        "data dir `{}` has an unreadable schema version `{found}`; run `cacheow rebuild-index --data-dir {}` after moving cacheow.redb away",
        data_dir.display(), data_dir.display()
    )]
    BadSchema {
        /// The data dir.
        data_dir: PathBuf,
        /// What was stored.
        found: String,
    },
    /// Creating the data dir failed.
    #[error("cannot create data dir `{}`: {source}", path.display())]
    CreateDir {
        /// The dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// redb refused the file.
    #[error("cannot open the index `{}`: {source}. If it is damaged, move it away and run `cacheow rebuild-index` to rebuild it from the JSON files", path.display())]
    Database {
        /// The redb file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// The index file is damaged (empty, not a redb file, or corrupt pages)
    /// and there is no JSON mirror to rebuild it from here.
    #[error("the index `{}` is damaged ({reason}); {}", path.display(), damaged_advice(path))]
    Damaged {
        /// The redb file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A damaged index could not be moved aside.
    #[error("cannot move the damaged index `{}` aside: {source}; move it away by hand", path.display())]
    MoveAside {
        /// The redb file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Rebuilding a missing index from the mirror failed.
    #[error("rebuilding the index from the JSON files failed: {0}")]
    Rebuild(#[from] RebuildError),
}

impl OpenError {
    /// True when another process owns the data dir.
    pub fn is_locked(&self) -> bool {
        matches!(self, OpenError::Locked { .. })
    }

    /// True when the index file is damaged.
    pub fn is_damaged(&self) -> bool {
        matches!(self, OpenError::Damaged { .. })
    }
}

/// Persisting a batch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The redb transaction failed.
    #[error("index write failed: {0}")]
    Database(Box<redb::Error>),
    /// A mirror file could not be written or removed.
    #[error("cannot write `{}`: {source}", path.display())]
    Mirror {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The write is committed to the index, but its JSON file could not be
    /// written yet; the mirror catches up once the cause clears.
    #[error("committed to the index, but its JSON file lags: {reason}")]
    MirrorLagging {
        /// Why the file could not be written.
        reason: String,
    },
    /// Another write in the same transaction failed, so this one was lost too.
    #[error("index write failed with its batch: {reason}")]
    BatchRejected {
        /// The batch's error.
        reason: String,
    },
    /// The background writer has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
    /// The index failed earlier (disk full, read-only) and could not be
    /// reopened yet; cacheow retries every second.
    #[error(
        "the index is unavailable ({reason}); cacheow retries every second: free disk space or make the data dir writable"
    )]
    Unavailable {
        /// The last error.
        reason: String,
    },
    /// The index file is damaged.
    #[error("the index `{}` is damaged ({reason}); {}", path.display(), damaged_advice(path))]
    Damaged {
        /// The redb file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl<E: Into<redb::Error>> From<E> for WriteError {
    fn from(e: E) -> Self {
        WriteError::Database(Box::new(e.into()))
    }
}

/// Reading the index failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The redb read failed.
    #[error("index read failed: {0}")]
    Database(Box<redb::Error>),
    /// A stored record does not parse; the index is damaged.
    #[error(
        "index record `{key}` is unreadable ({source}); run `cacheow rebuild-index` to rebuild the index from the JSON files"
    )]
    Corrupt {
        /// The record's key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The index failed earlier and could not be reopened yet.
    #[error(
        "the index is unavailable ({reason}); cacheow retries every second: free disk space or make the data dir writable"
    )]
    Unavailable {
        /// The last error.
        reason: String,
    },
    /// The index file is damaged.
    #[error("the index `{}` is damaged ({reason}); {}", path.display(), damaged_advice(path))]
    Damaged {
        /// The redb file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        ReadError::Database(Box::new(e.into()))
    }
}

/// Rebuilding the index from the mirror failed as a whole. (Single
/// unreadable files are not errors: they are listed in the report.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The index could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The mirror directory could not be listed.
    #[error("cannot list `{}`: {source}", path.display())]
    List {
        /// The dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The background writer has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
}
