//! `Store`: the redb index and the JSON mirror behind a few verbs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{OpenError, ReadError, WriteError};
use crate::ids::{FunctionId, OutcomeId};
use crate::index::Index;
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

/// An open data dir. Only one process (and one `Store`) may hold it.
pub struct Store {
    pub(crate) index: Index,
    pub(crate) data_dir: PathBuf,
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
        let store = Store {
            index: Index::new(index, db),
            data_dir,
        };
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
        self.index.with(load)
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
        self.index.with(|db| commit(db, writes))
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

fn commit(db: &Database, writes: &[Write]) -> Result<(), WriteError> {
    let tx = db.begin_write()?;
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

fn load(db: &Database) -> Result<Vec<StoredFunction>, ReadError> {
    let read = db.begin_read()?;
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
