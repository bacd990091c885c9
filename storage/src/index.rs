//! The redb handle behind the store, reopened after an I/O error.
//!
//! Internal: after a failed write (disk full, read-only remount) redb latches
//! the failure and answers every later call with `PreviousIo` until the
//! database is closed and opened again. So a failure that poisons the handle
//! marks it, and the next use reopens it, at most once per `RETRY_INTERVAL`
//! so a disk that stays full costs one open (and redb's repair scan) a
//! second, not one per batch. The old handle is kept until then: dropping it
//! at once would release the data dir's lock for the whole episode.
//!
//! redb can panic (`unreachable!`) on corrupt pages rather than return an
//! error, so every call into it here runs under `catch_unwind` and a panic
//! becomes a typed `Damaged` error.

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::Database;

use crate::error::{ReadError, RebuildError, WriteError};

/// redb's page cache. Internal: redb's default is 1 GiB, which a big store
/// fills; the indexes' inner pages fit in far less, and leaf pages are
/// cheap to read again from the OS's page cache, which is not ours to bound.
const PAGE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Opens (or creates) the redb file with cacheow's settings.
pub(crate) fn open_database(path: &std::path::Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
}

/// How often a poisoned index is reopened while it keeps failing.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Index {
    path: PathBuf,
    // Internal: `None` only while a reopen has failed.
    db: RwLock<Option<Database>>,
    broken: Mutex<Option<Broken>>,
}

struct Broken {
    reason: String,
    last_attempt: Option<Instant>,
}

/// A read lock on the open database.
pub(crate) struct Handle<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Deref for Handle<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // Internal: `Index::get` builds a `Handle` only around `Some`, and
        // the read lock keeps it so.
        self.0.as_ref().expect("a Handle holds an open database")
    }
}

/// An error that can say the index was unavailable, and whether it poisons
/// the handle.
pub(crate) trait IndexFailure {
    fn unavailable(reason: String) -> Self;
    fn damaged(path: PathBuf, reason: String) -> Self;
    fn poisons(&self) -> bool;
}

thread_local! {
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread runs redb under `guarded`: a panic hook can then
/// keep quiet about a panic that becomes a typed `Damaged` error.
pub fn panic_is_contained() -> bool {
    GUARDED.with(std::cell::Cell::get)
}

/// Runs `f`, turning a panic inside redb into `Err` with its message.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let outer = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        format!("redb panicked reading it: {message}")
    })
}

/// True for the redb errors that mean the file's bytes are bad.
pub(crate) fn is_damage(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        _ => false,
    }
}

// === impl Index ===

impl Index {
    pub(crate) fn new(path: PathBuf, db: Database) -> Index {
        Index {
            path,
            db: RwLock::new(Some(db)),
            broken: Mutex::new(None),
        }
    }

    /// Runs `f` on the database, reopening it first if an earlier error
    /// poisoned it; an error from `f` that poisons it marks it for reopening.
    pub(crate) fn with<R, E: IndexFailure>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, E>,
    ) -> Result<R, E> {
        let result = {
            let handle = self.get().map_err(E::unavailable)?;
            guarded(|| f(&handle))
                .unwrap_or_else(|reason| Err(E::damaged(self.path.clone(), reason)))
        };
        if let Err(e) = &result
            && e.poisons()
        {
            let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
            broken.get_or_insert(Broken {
                reason: "an earlier I/O error".into(),
                last_attempt: None,
            });
        }
        result
    }

    /// Compacts the file until redb finds nothing left to move, so pages
    /// freed by rewrites (e.g. of redacted outcomes) leave the file.
    pub(crate) fn compact(&self) -> Result<(), WriteError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let Some(db) = db.as_mut() else {
            return Err(WriteError::unavailable(format!(
                "`{}` is closed",
                self.path.display()
            )));
        };
        loop {
            match guarded(|| db.compact()) {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Ok(()),
                Ok(Err(e)) => return Err(WriteError::Database(Box::new(e.into()))),
                Err(panic) => return Err(WriteError::damaged(self.path.clone(), panic)),
            }
        }
    }

    fn get(&self) -> Result<Handle<'_>, String> {
        {
            let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = broken.as_mut() {
                if b.last_attempt.is_some_and(|t| t.elapsed() < RETRY_INTERVAL) {
                    return Err(b.reason.clone());
                }
                b.last_attempt = Some(Instant::now());
                let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
                // Internal: redb refuses a second handle on a file this
                // process holds, so the old one goes first.
                db.take();
                match guarded(|| open_database(&self.path)) {
                    Ok(Ok(reopened)) => {
                        *db = Some(reopened);
                        *broken = None;
                    }
                    Ok(Err(e)) => {
                        b.reason = format!("reopening `{}` failed: {e}", self.path.display());
                        return Err(b.reason.clone());
                    }
                    Err(panic) => {
                        b.reason = format!("reopening `{}` failed: {panic}", self.path.display());
                        return Err(b.reason.clone());
                    }
                }
            }
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match *db {
            Some(_) => Ok(Handle(db)),
            None => Err(format!("`{}` is closed", self.path.display())),
        }
    }
}

/// True for the errors after which redb wants the database reopened.
fn poisons(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::DatabaseClosed
            | redb::Error::LockPoisoned(_)
    )
}

impl IndexFailure for WriteError {
    fn unavailable(reason: String) -> Self {
        WriteError::Unavailable { reason }
    }

    fn damaged(path: PathBuf, reason: String) -> Self {
        WriteError::Damaged { path, reason }
    }

    fn poisons(&self) -> bool {
        match self {
            WriteError::Database(e) => poisons(e),
            WriteError::Damaged { .. } => true,
            _ => false,
        }
    }
}

impl IndexFailure for ReadError {
    fn unavailable(reason: String) -> Self {
        ReadError::Unavailable { reason }
    }

    fn damaged(path: PathBuf, reason: String) -> Self {
        ReadError::Damaged { path, reason }
    }

    fn poisons(&self) -> bool {
        match self {
            ReadError::Database(e) => poisons(e),
            ReadError::Damaged { .. } => true,
            _ => false,
        }
    }
}

impl IndexFailure for RebuildError {
    fn unavailable(reason: String) -> Self {
        RebuildError::Write(WriteError::unavailable(reason))
    }

    fn damaged(path: PathBuf, reason: String) -> Self {
        RebuildError::Write(WriteError::damaged(path, reason))
    }

    fn poisons(&self) -> bool {
        matches!(self, RebuildError::Write(e) if e.poisons())
    }
}
