//! `Store`: the redb index and the JSON mirror behind a few verbs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{OpenError, ReadError, WriteError};
use crate::ids::{FunctionId, OutcomeId};
use crate::index::{self, Index};
use crate::layout;
use crate::model::{Function, Outcome, Stats};
use crate::outcomes::OutcomeTables;
use crate::rebuild::RebuildReport;
use crate::row;
use crate::schema;
use crate::tables::{FUNCTIONS, META, MIRROR_DIRTY_KEY, ROW_KEY, ROWS, STATS, prefix_range};

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a function (mirrored to `function.json`).
    PutFunction(Function),
    /// Insert or replace an outcome (mirrored to `outcomes/<id>.json`).
    PutOutcome(Outcome),
    /// Remove an outcome and its file.
    DeleteOutcome {
        /// Its function.
        function: FunctionId,
        /// The outcome.
        outcome: OutcomeId,
    },
    /// Replace a function's counters (index only).
    PutStats(FunctionId, Stats),
}

impl Write {
    /// The function this write belongs to.
    pub fn function_id(&self) -> FunctionId {
        match self {
            Write::PutFunction(f) => f.id,
            Write::PutOutcome(o) => o.function_id,
            Write::DeleteOutcome { function, .. } => *function,
            Write::PutStats(id, _) => *id,
        }
    }
}

/// A function with everything stored for it.
#[derive(Debug, Clone)]
pub struct StoredFunction {
    /// The function.
    pub function: Function,
    /// Its outcomes.
    pub outcomes: Vec<Outcome>,
    /// Its counters.
    pub stats: Stats,
}

/// An open data dir. Only one process (and one `Store`) may hold it.
pub struct Store {
    pub(crate) index: Index,
    pub(crate) data_dir: PathBuf,
    mirror_state: Mutex<MirrorState>,
    /// Orders outcome writes of one call key committed in the same
    /// millisecond. Internal: in memory only; a restart takes longer than
    /// a millisecond.
    commit_order: AtomicU64,
}

/// How far the JSON mirror is behind the index.
///
/// Internal: the index keeps a `mirror_dirty` marker in META from the commit
/// of a batch (same transaction, so it costs nothing) until every committed
/// batch is mirrored; a crash in between leaves it set, and the next `open`
/// rewrites the missing files from the index. Start-up walks the index only
/// then, never on a clean start.
#[derive(Default)]
struct MirrorState {
    /// The marker is set in the index.
    marker: bool,
    /// Batches committed but not mirrored yet.
    unmirrored: usize,
    /// A mirror write failed since the files last agreed with the index.
    failed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the data dir. A missing index next to an existing
    /// JSON mirror is rebuilt from the mirror. So is a damaged one (empty,
    /// not a redb file, corrupt pages met at open), after it is moved aside
    /// to `cacheow.redb.damaged-<unix time>`; with no mirror to rebuild from,
    /// a damaged index is refused with `OpenError::Damaged` rather than
    /// replaced by an empty store that would then overwrite the files.
    pub fn open(data_dir: &Path) -> Result<Store, OpenError> {
        let data_dir = prepare_data_dir(data_dir)?;
        let index = layout::index_file(&data_dir);
        let has_mirror = layout::functions_dir(&data_dir).is_dir();
        let missing = !index.exists();
        let (db, rebuilt_because) = match open_index(&index, &data_dir) {
            Ok(db) => (db, missing.then_some("index was missing")),
            Err(OpenError::Damaged { path, reason }) if has_mirror => {
                let moved = move_aside(&index)?;
                tracing::warn!(
                    index = %path.display(),
                    moved_to = %moved.display(),
                    reason = %reason,
                    "the index is damaged; moved it aside, rebuilding it from the JSON files"
                );
                (open_index(&index, &data_dir)?, Some("index was damaged"))
            }
            Err(e) => return Err(e),
        };
        let marker = mirror_marker(&db);
        let store = Store {
            index: Index::new(index, db),
            data_dir,
            mirror_state: Mutex::new(MirrorState {
                marker,
                ..MirrorState::default()
            }),
            commit_order: AtomicU64::new(0),
        };
        if marker {
            store.catch_up_mirror(
                "the JSON files had fallen behind the index (cacheow stopped before writing them)",
            );
        }
        if let Some(why) = rebuilt_because.filter(|_| has_mirror) {
            let report = store.rebuild_index(None)?;
            tracing::info!(
                indexed = report.indexed,
                failures = report.failures.len(),
                "{why}; rebuilt it from the JSON files"
            );
            for failure in &report.failures {
                tracing::warn!(path = %failure.path.display(), reason = %failure.reason, "skipped unreadable file");
            }
        }
        Ok(store)
    }

    /// Compacts the index file, so the bytes of rewritten records (such as
    /// outcomes redacted after the fact) no longer linger in freed pages.
    pub fn compact(&self) -> Result<(), WriteError> {
        self.index.compact()
    }

    /// rebuild-index for a store that may not open: when the index is
    /// damaged anywhere (open, an integrity check of every page, reading
    /// every row), it is moved aside (`RebuildReport::moved_aside`) and a
    /// fresh one is built from the JSON files. A healthy index gets the
    /// ordinary [`Store::rebuild_index`], which keeps its stats and the
    /// records whose files are missing. Run it with cacheow stopped: it takes
    /// the data dir's lock like `open`.
    pub fn rebuild_offline(data_dir: &Path) -> Result<RebuildReport, OpenError> {
        let data_dir = prepare_data_dir(data_dir)?;
        let index = layout::index_file(&data_dir);
        let healthy = if index.exists() {
            match open_index(&index, &data_dir) {
                Ok(db) => verify(db),
                Err(OpenError::Damaged { .. } | OpenError::BadSchema { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mut moved_aside = None;
        let db = match healthy {
            Some(db) => db,
            None => {
                if index.exists() {
                    let moved = move_aside(&index)?;
                    tracing::warn!(
                        index = %index.display(),
                        moved_to = %moved.display(),
                        "the index is damaged; moved it aside, rebuilding it from the JSON files"
                    );
                    moved_aside = Some(moved);
                }
                open_index(&index, &data_dir)?
            }
        };
        let store = Store {
            index: Index::new(index, db),
            data_dir,
            mirror_state: Mutex::default(),
            commit_order: AtomicU64::new(0),
        };
        let mut report = store.rebuild_index(None)?;
        report.moved_aside = moved_aside;
        Ok(report)
    }

    /// The data dir, canonicalised.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Reads every function with all its outcomes and stats, for tools
    /// that walk a whole store; a running cacheow reads outcomes on demand
    /// (`Store::functions`, `Store::outcome`, ...).
    pub fn load(&self) -> Result<Vec<StoredFunction>, ReadError> {
        self.index.with(load).map_err(|e| self.damage_named(e))
    }

    /// The next commit order number (see `commit_order`).
    pub(crate) fn next_commit_order(&self) -> u64 {
        self.commit_order.fetch_add(1, Ordering::Relaxed)
    }

    /// Names the index file in a read error that means it is damaged.
    pub(crate) fn damage_named(&self, e: ReadError) -> ReadError {
        match e {
            ReadError::Database(e) if index::is_damage(&e) => ReadError::Damaged {
                path: layout::index_file(&self.data_dir),
                reason: e.to_string(),
            },
            e => e,
        }
    }

    /// Applies writes in one index transaction, then mirrors them to files.
    pub fn apply(&self, writes: &[Write]) -> Result<(), WriteError> {
        let mut failures = self.commit_batch(writes);
        if failures.is_empty() {
            failures = self.mirror(writes);
            self.mirrored(failures.is_empty());
            self.mark_mirror_clean();
        }
        match failures.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits writes to the index in one transaction; reports each failure
    /// with the function it hit.
    pub(crate) fn commit_batch(&self, writes: &[Write]) -> Vec<(FunctionId, WriteError)> {
        if let Err(e) = self.commit(writes) {
            // Internal: the whole transaction failed, so every function in
            // the batch lost its write; name each one once.
            let mut seen = HashSet::new();
            let ids: Vec<_> = writes
                .iter()
                .map(Write::function_id)
                .filter(|id| seen.insert(*id))
                .collect();
            let reason = e.to_string();
            let mut failures: Vec<_> = ids
                .iter()
                .skip(1)
                .map(|id| {
                    (
                        *id,
                        WriteError::BatchRejected {
                            reason: reason.clone(),
                        },
                    )
                })
                .collect();
            if let Some(first) = ids.first() {
                failures.insert(0, (*first, e));
            }
            return failures;
        }
        Vec::new()
    }

    fn commit(&self, writes: &[Write]) -> Result<(), WriteError> {
        let touches_mirror = writes.iter().any(|w| !matches!(w, Write::PutStats(..)));
        let set_marker = {
            let mut state = self.mirror_state();
            // Internal: counted before the commit, so the mirror thread
            // never clears the marker while this batch is on its way.
            state.unmirrored += usize::from(touches_mirror);
            touches_mirror && !state.marker
        };
        let result = self
            .index
            .with(|db| commit(db, writes, set_marker, || self.next_commit_order()));
        let mut state = self.mirror_state();
        match result {
            Ok(()) => state.marker |= set_marker,
            Err(_) => state.unmirrored -= usize::from(touches_mirror),
        }
        result
    }

    fn mirror_state(&self) -> std::sync::MutexGuard<'_, MirrorState> {
        self.mirror_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that one committed batch was mirrored, `ok` or not. The first
    /// success after a failure rewrites every file the failures left
    /// missing, from the index.
    pub(crate) fn mirrored(&self, ok: bool) {
        let catch_up = {
            let mut state = self.mirror_state();
            state.unmirrored = state.unmirrored.saturating_sub(1);
            state.failed |= !ok;
            ok && state.failed
        };
        if catch_up {
            self.catch_up_mirror("mirror writes had failed");
        }
    }

    /// Rewrites the mirror files missing relative to the index; a full
    /// success clears the failure (the marker is cleared once idle).
    fn catch_up_mirror(&self, why: &str) {
        match self.restore_mirror() {
            Ok((restored, failures)) => {
                if restored > 0 {
                    tracing::info!(
                        restored,
                        "{why}; rewrote the missing JSON files from the index"
                    );
                }
                for (path, reason) in &failures {
                    tracing::warn!(path = %path.display(), reason = %reason, "cannot rewrite a missing JSON file from the index; rebuild-index retries it");
                }
                let mut state = self.mirror_state();
                state.failed = !failures.is_empty();
            }
            Err(e) => {
                tracing::warn!(error = %e, "{why}; reading the index to rewrite the missing JSON files failed");
                self.mirror_state().failed = true;
            }
        }
        self.mark_mirror_clean();
    }

    /// Clears the index's `mirror_dirty` marker when every committed batch
    /// is mirrored without failure.
    pub(crate) fn mark_mirror_clean(&self) {
        let mut state = self.mirror_state();
        if !state.marker || state.unmirrored > 0 || state.failed {
            return;
        }
        let cleared = self.index.with(|db| -> Result<(), WriteError> {
            let tx = db.begin_write()?;
            tx.open_table(META)?.remove(MIRROR_DIRTY_KEY)?;
            tx.commit()?;
            Ok(())
        });
        match cleared {
            Ok(()) => state.marker = false,
            // Internal: harmless: the marker only makes the next start-up
            // check the files.
            Err(e) => tracing::debug!(error = %e, "clearing the mirror marker failed"),
        }
    }

    /// Writes the JSON files of committed writes.
    pub(crate) fn mirror(&self, writes: &[Write]) -> Vec<(FunctionId, WriteError)> {
        // Internal: only the last write to each file matters; walking the
        // batch backwards lets us skip the earlier ones.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let mut failures = Vec::new();
        for write in writes.iter().rev() {
            let (path, bytes) = match write {
                Write::PutFunction(f) => (
                    layout::function_file(&self.data_dir, &f.id),
                    Some(pretty(f)),
                ),
                Write::PutOutcome(o) => (
                    layout::outcome_file(&self.data_dir, &o.function_id, &o.id),
                    Some(pretty(o)),
                ),
                Write::DeleteOutcome { function, outcome } => (
                    layout::outcome_file(&self.data_dir, function, outcome),
                    None,
                ),
                Write::PutStats(..) => continue,
            };
            if !written.insert(path.clone()) {
                continue;
            }
            let result = match bytes {
                Some(bytes) => atomic::write_file(&path, &bytes),
                None => match fs::remove_file(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
            };
            if let Err(source) = result {
                failures.push((write.function_id(), WriteError::Mirror { path, source }));
            }
        }
        failures
    }
}

fn commit(
    db: &Database,
    writes: &[Write],
    set_marker: bool,
    mut commit_order: impl FnMut() -> u64,
) -> Result<(), WriteError> {
    let tx = db.begin_write()?;
    if set_marker {
        tx.open_table(META)?.insert(MIRROR_DIRTY_KEY, "1")?;
    }
    {
        let mut functions = tx.open_table(FUNCTIONS)?;
        let mut outcomes = OutcomeTables::open(&tx)?;
        let mut stats = tx.open_table(STATS)?;
        for write in writes {
            match write {
                Write::PutFunction(f) => {
                    functions.insert(f.id.to_string().as_str(), encode(f).as_slice())?;
                }
                Write::PutOutcome(o) => {
                    outcomes.put(o, commit_order())?;
                }
                Write::DeleteOutcome { function, outcome } => {
                    outcomes.delete(function, outcome)?;
                }
                Write::PutStats(id, s) => {
                    stats.insert(id.to_string().as_str(), encode(s).as_slice())?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn load(db: &Database) -> Result<Vec<StoredFunction>, ReadError> {
    let read = db.begin_read()?;
    let functions = read.open_table(FUNCTIONS)?;
    let outcomes = read.open_table(ROWS)?;
    let stats = read.open_table(STATS)?;
    let mut out = Vec::new();
    for entry in functions.iter()? {
        let (key, value) = entry?;
        let function: Function = decode(key.value(), value.value())?;
        let id = key.value().to_owned();
        let (start, end) = prefix_range::<ROW_KEY>(function.id.as_bytes());
        let mut list = Vec::new();
        for entry in outcomes.range(start.as_slice()..=end.as_slice())? {
            let (key, value) = entry?;
            let name = format!("{id}:{}", crate::tables::trailing_outcome(key.value()));
            list.push(row::decode(&name, value.value())?);
        }
        let stats = stats_in(&stats, &id)?;
        out.push(StoredFunction {
            function,
            outcomes: list,
            stats,
        });
    }
    Ok(out)
}

fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, OpenError> {
    atomic::create_private_dir(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    data_dir
        .canonicalize()
        .map_err(|source| OpenError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })
}

/// Opens the index and checks its schema, telling damage (`Damaged`) from
/// the other failures.
fn open_index(index: &Path, data_dir: &Path) -> Result<Database, OpenError> {
    let damaged = |reason: String| OpenError::Damaged {
        path: index.to_owned(),
        reason,
    };
    // Internal: redb initialises an empty file as a new database; an empty
    // index next to a mirror is a crash or a truncation, never a new store.
    if fs::metadata(index).is_ok_and(|m| m.is_file() && m.len() == 0) {
        return Err(damaged("the file is empty".into()));
    }
    let db = match index::guarded(|| index::open_database(index)) {
        Err(panic) => return Err(damaged(panic)),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(OpenError::Locked {
                data_dir: data_dir.to_owned(),
            });
        }
        Ok(Err(e)) => {
            let e = redb::Error::from(e);
            return Err(if index::is_damage(&e) {
                damaged(e.to_string())
            } else {
                OpenError::Database {
                    path: index.to_owned(),
                    source: Box::new(e),
                }
            });
        }
        Ok(Ok(db)) => db,
    };
    // Internal: the index holds recorded traffic; redb creates it with the
    // umask's mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(index, fs::Permissions::from_mode(0o600));
    }
    match index::guarded(|| schema::check_or_init(&db, data_dir)) {
        Err(panic) => Err(damaged(panic)),
        Ok(Err(OpenError::Database { source, .. })) if index::is_damage(&source) => {
            Err(damaged(source.to_string()))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(db),
    }
}

/// True when the index says the mirror may lag it. An unreadable marker
/// reads as set: the walk it causes is only slower, never wrong.
fn mirror_marker(db: &Database) -> bool {
    let read = || -> Result<bool, redb::Error> {
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(MIRROR_DIRTY_KEY)?.is_some())
    };
    index::guarded(read).map_or(true, |r| r.unwrap_or(true))
}

/// `Some(db)` when every page checks out and every row reads.
fn verify(mut db: Database) -> Option<Database> {
    let checked = index::guarded(|| db.check_integrity());
    if !matches!(checked, Ok(Ok(_))) {
        return None;
    }
    match index::guarded(|| read_every_row(&db)) {
        Ok(Ok(())) => Some(db),
        _ => None,
    }
}

/// Decodes every record of the index, one at a time, so a store of any size
/// is checked in bounded memory.
fn read_every_row(db: &Database) -> Result<(), ReadError> {
    let read = db.begin_read()?;
    for entry in read.open_table(FUNCTIONS)?.iter()? {
        let (key, value) = entry?;
        decode::<Function>(key.value(), value.value())?;
    }
    for entry in read.open_table(STATS)?.iter()? {
        let (key, value) = entry?;
        decode::<Stats>(key.value(), value.value())?;
    }
    for entry in read.open_table(ROWS)?.iter()? {
        let (key, value) = entry?;
        row::decode(&format!("{:?}", key.value()), value.value())?;
    }
    Ok(())
}

/// Renames a damaged index to `cacheow.redb.damaged-<unix time>` (with a
/// counter if that exists) and returns the new path.
fn move_aside(index: &Path) -> Result<PathBuf, OpenError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = index.file_name().unwrap_or_default().to_string_lossy();
    let mut target = index.with_file_name(format!("{name}.damaged-{now}"));
    let mut n = 1;
    while target.exists() {
        target = index.with_file_name(format!("{name}.damaged-{now}-{n}"));
        n += 1;
    }
    fs::rename(index, &target).map_err(|source| OpenError::MoveAside {
        path: index.to_owned(),
        source,
    })?;
    Ok(target)
}

/// A function's counters (zero when none are stored yet).
pub(crate) fn stats_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    function: &str,
) -> Result<Stats, ReadError> {
    match table.get(function)? {
        Some(v) => decode(function, v.value()),
        None => Ok(Stats::default()),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Internal: the model types hold only strings, numbers and JSON values,
    // so serialising them cannot fail.
    serde_json::to_vec(value).expect("model types always serialise")
}

pub(crate) fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let stamped = schema::stamp(serde_json::to_value(value).expect("model types always serialise"));
    let mut bytes = serde_json::to_vec_pretty(&stamped).expect("JSON values always serialise");
    bytes.push(b'\n');
    bytes
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|source| ReadError::Corrupt {
        key: key.to_owned(),
        source,
    })
}
