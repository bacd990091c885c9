//! `Store`: the redb index and the JSON mirror behind a few verbs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{OpenError, ReadError, RebuildError, WriteError};
use crate::ids::{FunctionId, OutcomeId};
use crate::layout;
use crate::model::{Function, Outcome, Stats};
use crate::schema;
use crate::tables::{FUNCTIONS, OUTCOMES, STATS, outcome_key, outcome_range};

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

/// A mirror file that rebuild-index could not read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildFailure {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// What rebuild-index did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    /// Functions re-read.
    pub functions: usize,
    /// Outcomes indexed.
    pub indexed: usize,
    /// Files skipped, each with its reason; the rest were indexed.
    pub failures: Vec<RebuildFailure>,
}

/// An open data dir. Only one process (and one `Store`) may hold it.
pub struct Store {
    db: Database,
    data_dir: PathBuf,
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
    /// JSON mirror is rebuilt from the mirror.
    pub fn open(data_dir: &Path) -> Result<Store, OpenError> {
        fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|source| OpenError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let index = layout::index_file(&data_dir);
        let fresh = !index.exists();
        let db = Database::create(&index).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked {
                data_dir: data_dir.clone(),
            },
            other => OpenError::Database {
                path: index.clone(),
                source: Box::new(other.into()),
            },
        })?;
        schema::check_or_init(&db, &data_dir)?;
        let store = Store { db, data_dir };
        if fresh && layout::functions_dir(&store.data_dir).is_dir() {
            let report = store.rebuild_index(None)?;
            tracing::info!(
                indexed = report.indexed,
                failures = report.failures.len(),
                "index was missing; rebuilt it from the JSON files"
            );
            for failure in &report.failures {
                tracing::warn!(path = %failure.path.display(), reason = %failure.reason, "skipped unreadable file");
            }
        }
        Ok(store)
    }

    /// The data dir, canonicalised.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Reads every function with its outcomes and stats.
    pub fn load(&self) -> Result<Vec<StoredFunction>, ReadError> {
        let read = self.db.begin_read()?;
        let functions = read.open_table(FUNCTIONS)?;
        let outcomes = read.open_table(OUTCOMES)?;
        let stats = read.open_table(STATS)?;
        let mut out = Vec::new();
        for row in functions.iter()? {
            let (key, value) = row?;
            let function: Function = decode(key.value(), value.value())?;
            let id = key.value().to_owned();
            let (start, end) = outcome_range(&id);
            let mut list = Vec::new();
            for row in outcomes.range(start.as_str()..end.as_str())? {
                let (key, value) = row?;
                list.push(decode(key.value(), value.value())?);
            }
            let stats = match stats.get(id.as_str())? {
                Some(v) => decode(&id, v.value())?,
                None => Stats::default(),
            };
            out.push(StoredFunction {
                function,
                outcomes: list,
                stats,
            });
        }
        Ok(out)
    }

    /// Applies writes in one index transaction, then mirrors them to files.
    pub fn apply(&self, writes: &[Write]) -> Result<(), WriteError> {
        let mut failures = self.commit_batch(writes);
        if failures.is_empty() {
            failures = self.mirror(writes);
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
        let tx = self.db.begin_write()?;
        {
            let mut functions = tx.open_table(FUNCTIONS)?;
            let mut outcomes = tx.open_table(OUTCOMES)?;
            let mut stats = tx.open_table(STATS)?;
            for write in writes {
                match write {
                    Write::PutFunction(f) => {
                        functions.insert(f.id.to_string().as_str(), encode(f).as_slice())?;
                    }
                    Write::PutOutcome(o) => {
                        let key = outcome_key(&o.function_id.to_string(), &o.id.to_string());
                        outcomes.insert(key.as_str(), encode(o).as_slice())?;
                    }
                    Write::DeleteOutcome { function, outcome } => {
                        let key = outcome_key(&function.to_string(), &outcome.to_string());
                        outcomes.remove(key.as_str())?;
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

    /// Re-reads the JSON mirror into the index: every function, or just one.
    /// Unreadable files are reported with their reason and skipped; whatever
    /// the index held for a skipped `function.json` is kept.
    pub fn rebuild_index(&self, only: Option<FunctionId>) -> Result<RebuildReport, RebuildError> {
        let root = layout::functions_dir(&self.data_dir);
        let mut report = RebuildReport::default();
        let dirs: Vec<PathBuf> = match only {
            Some(id) => vec![layout::function_dir(&self.data_dir, &id)],
            None if !root.exists() => Vec::new(),
            None => {
                let mut dirs = Vec::new();
                let entries = fs::read_dir(&root).map_err(|source| RebuildError::List {
                    path: root.clone(),
                    source,
                })?;
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        dirs.push(entry.path());
                    }
                }
                dirs.sort();
                dirs
            }
        };

        let mut found: HashMap<FunctionId, (Function, Vec<Outcome>)> = HashMap::new();
        let mut unreadable: HashSet<String> = HashSet::new();
        for dir in dirs {
            let Some((function, outcomes)) = read_function_dir(&dir, &mut report.failures)? else {
                unreadable.extend(dir.file_name().map(|n| n.to_string_lossy().into_owned()));
                continue;
            };
            report.indexed += outcomes.len();
            found.insert(function.id, (function, outcomes));
        }
        report.functions = found.len();

        let tx = self.db.begin_write().map_err(WriteError::from)?;
        {
            let mut functions = tx.open_table(FUNCTIONS).map_err(WriteError::from)?;
            let mut outcomes = tx.open_table(OUTCOMES).map_err(WriteError::from)?;
            if only.is_none() {
                let stale: Vec<String> = functions
                    .iter()
                    .map_err(WriteError::from)?
                    .filter_map(|row| row.ok().map(|(k, _)| k.value().to_owned()))
                    .filter(|k| !unreadable.contains(k))
                    .filter(|k| k.parse().map(|id| !found.contains_key(&id)).unwrap_or(true))
                    .collect();
                for key in stale {
                    functions.remove(key.as_str()).map_err(WriteError::from)?;
                    remove_outcome_range(&mut outcomes, &key)?;
                }
            }
            for (id, (function, list)) in &found {
                let key = id.to_string();
                functions
                    .insert(key.as_str(), encode(function).as_slice())
                    .map_err(WriteError::from)?;
                remove_outcome_range(&mut outcomes, &key)?;
                for outcome in list {
                    outcomes
                        .insert(
                            outcome_key(&key, &outcome.id.to_string()).as_str(),
                            encode(outcome).as_slice(),
                        )
                        .map_err(WriteError::from)?;
                }
            }
        }
        tx.commit().map_err(WriteError::from)?;
        Ok(report)
    }
}

fn remove_outcome_range(
    outcomes: &mut redb::Table<'_, &str, &[u8]>,
    function: &str,
) -> Result<(), WriteError> {
    let (start, end) = outcome_range(function);
    let keys: Vec<String> = outcomes
        .range(start.as_str()..end.as_str())?
        .filter_map(|row| row.ok().map(|(k, _)| k.value().to_owned()))
        .collect();
    for key in keys {
        outcomes.remove(key.as_str())?;
    }
    Ok(())
}

/// Reads one `functions/<id>/` dir. `None` when its `function.json` is
/// unreadable (reported in `failures`).
fn read_function_dir(
    dir: &Path,
    failures: &mut Vec<RebuildFailure>,
) -> Result<Option<(Function, Vec<Outcome>)>, RebuildError> {
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let function_path = layout::function_file_in(dir);
    let function: Function = match read_record(&function_path) {
        Ok(f) => f,
        Err(reason) => {
            failures.push(RebuildFailure {
                path: function_path,
                reason,
            });
            return Ok(None);
        }
    };
    if function.id.to_string() != dir_name {
        failures.push(RebuildFailure {
            path: function_path,
            reason: format!(
                "its id {} does not match its directory `{dir_name}`",
                function.id
            ),
        });
        return Ok(None);
    }
    let outcomes_dir = layout::outcomes_dir(dir);
    let mut outcomes = Vec::new();
    if outcomes_dir.exists() {
        let entries = fs::read_dir(&outcomes_dir).map_err(|source| RebuildError::List {
            path: outcomes_dir.clone(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match read_record::<Outcome>(&path) {
                Ok(o) if o.id.to_string() != stem => failures.push(RebuildFailure {
                    path,
                    reason: format!("its id {} does not match its file name", o.id),
                }),
                Ok(o) if o.function_id != function.id => failures.push(RebuildFailure {
                    path,
                    reason: format!(
                        "its function_id {} does not match the function {}",
                        o.function_id, function.id
                    ),
                }),
                Ok(o) => outcomes.push(o),
                Err(reason) => failures.push(RebuildFailure { path, reason }),
            }
        }
    }
    Ok(Some((function, outcomes)))
}

/// Mirror files above this size are skipped: a hand-edited record is a few
/// KiB to a few MiB, so anything larger is a mistake (or `/dev/zero`).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a mirror file: a regular file of at most `MAX_RECORD_BYTES`, JSON,
/// current schema version, then the model type.
fn read_record<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = read_regular_file(path, MAX_RECORD_BYTES)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    schema::check_file_version(&value)?;
    serde_json::from_value(schema::unstamp(value)).map_err(|e| format!("invalid record: {e}"))
}

/// Reads a regular file of at most `cap` bytes. Internal: FIFOs, devices and
/// symlinks are refused from their metadata before `open`, which would block
/// on a FIFO; the opened handle is checked again in case the path was swapped
/// in between, and `take` bounds the read whatever the file grew to.
fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let kind = |t: fs::FileType| {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_symlink() {
            "a symlink"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else {
            "a device"
        }
    };
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (it is {}); replace it with a regular JSON file",
            kind(meta.file_type())
        ));
    }
    let too_large = || format!("larger than {} MiB; cacheow skips it", cap / (1024 * 1024));
    if meta.len() > cap {
        return Err(too_large());
    }
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (it is {})",
            kind(meta.file_type())
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Internal: the model types hold only strings, numbers and JSON values,
    // so serialising them cannot fail.
    serde_json::to_vec(value).expect("model types always serialise")
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let stamped = schema::stamp(serde_json::to_value(value).expect("model types always serialise"));
    let mut bytes = serde_json::to_vec_pretty(&stamped).expect("JSON values always serialise");
    bytes.push(b'\n');
    bytes
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|source| ReadError::Corrupt {
        key: key.to_owned(),
        source,
    })
}
