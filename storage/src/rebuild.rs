//! rebuild-index: re-reading the JSON mirror into the index, and the bounded
//! reader of mirror files.
//!
//! Internal: the index holds committed data and the mirror may lag behind it
//! (it is written after each commit), so a row whose file is missing is never
//! dropped here: the file is rewritten from the row and reported as
//! `restored`. Deleting an outcome goes through the API (`Write::DeleteOutcome`
//! removes the row and the file); an outcome file deleted by hand comes back.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{ReadError, RebuildError, WriteError};
use crate::ids::FunctionId;
use crate::layout;
use crate::model::{Function, Outcome};
use crate::outcomes::OutcomeTables;
use crate::row;
use crate::schema;
use crate::store::{Store, decode, encode, pretty};
use crate::tables::{FUNCTIONS, ROW_KEY, ROWS, leading_function, prefix_range, trailing_outcome};

/// Outcome files indexed per transaction.
const REBUILD_BATCH: usize = 1024;

/// A mirror file that rebuild-index could not read (or restore).
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
    /// Outcomes indexed from their files.
    pub indexed: usize,
    /// Files skipped, each with its reason; the rest were indexed. The index
    /// keeps its own copy of every skipped record it had.
    pub failures: Vec<RebuildFailure>,
    /// Files that were missing and were rewritten from the index, which
    /// keeps those records (the mirror had lagged, or they were deleted by
    /// hand: deletes go through the API).
    pub restored: Vec<PathBuf>,
    /// Where [`Store::rebuild_offline`] moved a damaged index before
    /// building a fresh one.
    pub moved_aside: Option<PathBuf>,
}

/// Mirror files above this size are skipped: a hand-edited record is a few
/// KiB to a few MiB, so anything larger is a mistake (or `/dev/zero`).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// What a function dir's `function.json` held.
enum FunctionFile {
    Read(Function),
    /// No file at all: restored from the index when it has the function.
    Missing,
    /// Reported in the failures; the index keeps what it had.
    Unreadable,
}

// === impl Store ===

impl Store {
    /// Re-reads the JSON mirror into the index: every function, or just one.
    ///
    /// Readable files replace their index rows. Unreadable files are
    /// reported by path with their reason, and the index keeps its copy of
    /// those records (for a skipped `function.json`, of the whole function).
    /// Index records with no file are kept and their files rewritten from the
    /// index, listed in `restored`: the index is committed data, and a
    /// missing file cannot be told from a mirror that had not caught up, so
    /// removing an outcome by hand does not work; `Write::DeleteOutcome`
    /// does.
    pub fn rebuild_index(&self, only: Option<FunctionId>) -> Result<RebuildReport, RebuildError> {
        let root = layout::functions_dir(&self.data_dir);
        let mut keys: BTreeSet<String> = BTreeSet::new();
        match only {
            Some(id) => {
                keys.insert(id.to_string());
            }
            None if root.exists() => {
                let entries = fs::read_dir(&root).map_err(|source| RebuildError::List {
                    path: root.clone(),
                    source,
                })?;
                keys.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
            None => {}
        }

        let mut report = RebuildReport::default();
        if only.is_none() {
            // Internal: only keys that are ids, so a damaged row never names
            // a path outside the data dir.
            self.index.with(|db| -> Result<(), RebuildError> {
                let tx = db.begin_read().map_err(WriteError::from)?;
                let functions = tx.open_table(FUNCTIONS).map_err(WriteError::from)?;
                for entry in functions.iter().map_err(WriteError::from)? {
                    let (key, _) = entry.map_err(WriteError::from)?;
                    if key.value().parse::<FunctionId>().is_ok() {
                        keys.insert(key.value().to_owned());
                    }
                }
                Ok(())
            })?;
        }
        for key in keys {
            self.rebuild_function(&root.join(&key), &key, &mut report)?;
        }
        report.failures.sort_by(|a, b| a.path.cmp(&b.path));
        report.restored.sort();
        Ok(report)
    }

    /// rebuild-index for one `functions/<id>/` dir: its `function.json`,
    /// then its outcome files a batch per transaction, then the files of
    /// rows the mirror lacks. Memory holds one batch, never the function.
    fn rebuild_function(
        &self,
        dir: &Path,
        key: &str,
        report: &mut RebuildReport,
    ) -> Result<(), RebuildError> {
        let indexed = self.index.with(|db| -> Result<_, WriteError> {
            let tx = db.begin_read()?;
            let functions = tx.open_table(FUNCTIONS)?;
            Ok(functions.get(key)?.map(|v| v.value().to_vec()))
        })?;
        let function = match read_function_file(dir, &mut report.failures) {
            FunctionFile::Read(function) => {
                self.index.with(|db| -> Result<(), WriteError> {
                    let tx = db.begin_write()?;
                    tx.open_table(FUNCTIONS)?
                        .insert(key, encode(&function).as_slice())?;
                    tx.commit()?;
                    Ok(())
                })?;
                function
            }
            FunctionFile::Unreadable => return Ok(()),
            FunctionFile::Missing => {
                let path = layout::function_file_in(dir);
                let Some(bytes) = indexed else {
                    report.failures.push(RebuildFailure {
                        path,
                        reason: "missing; this directory needs a function.json".into(),
                    });
                    return Ok(());
                };
                match decode::<Function>(key, &bytes) {
                    Ok(function) => {
                        restore_file(path, &pretty(&function), report);
                        function
                    }
                    Err(e) => {
                        report.failures.push(RebuildFailure {
                            path,
                            reason: format!("missing, and the index copy is unreadable: {e}"),
                        });
                        return Ok(());
                    }
                }
            }
        };
        report.functions += 1;

        let mut batch = Vec::with_capacity(REBUILD_BATCH);
        let mut indexed = 0;
        for_each_outcome_file(dir, &function, &mut report.failures, |outcome| {
            batch.push(outcome);
            if batch.len() == REBUILD_BATCH {
                indexed += batch.len();
                self.put_outcomes(&mut batch)?;
            }
            Ok(())
        })?;
        indexed += batch.len();
        self.put_outcomes(&mut batch)?;
        report.indexed += indexed;
        self.restore_outcome_files(&function.id, report)?;
        Ok(())
    }

    /// Writes a batch of outcomes read from files to the index and empties it.
    fn put_outcomes(&self, batch: &mut Vec<Outcome>) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.index.with(|db| -> Result<(), WriteError> {
            let tx = db.begin_write()?;
            {
                let mut tables = OutcomeTables::open(&tx)?;
                for outcome in batch.iter() {
                    tables.put(outcome, self.next_commit_order())?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        batch.clear();
        Ok(())
    }

    /// Rewrites the file of every outcome row of `function` whose file is
    /// missing: the index is committed data.
    fn restore_outcome_files(
        &self,
        function: &FunctionId,
        report: &mut RebuildReport,
    ) -> Result<(), RebuildError> {
        self.index.with(|db| -> Result<(), RebuildError> {
            let tx = db.begin_read().map_err(WriteError::from)?;
            let rows = tx.open_table(ROWS).map_err(WriteError::from)?;
            let (start, end) = prefix_range::<ROW_KEY>(function.as_bytes());
            for entry in rows
                .range(start.as_slice()..=end.as_slice())
                .map_err(WriteError::from)?
            {
                let (key, value) = entry.map_err(WriteError::from)?;
                let outcome_id = trailing_outcome(key.value());
                let path = layout::outcome_file(&self.data_dir, function, &outcome_id);
                if !is_missing(&path) {
                    continue;
                }
                match row::decode(&format!("{function}:{outcome_id}"), value.value()) {
                    Ok(outcome) => restore_file(path, &pretty(&outcome), report),
                    Err(e) => report.failures.push(RebuildFailure {
                        path,
                        reason: format!("missing, and the index copy is unreadable: {e}"),
                    }),
                }
            }
            Ok(())
        })
    }
}

/// Rewrites a missing mirror file from the index's copy.
fn restore_file(path: PathBuf, bytes: &[u8], report: &mut RebuildReport) {
    match atomic::write_file(&path, bytes) {
        Ok(()) => report.restored.push(path),
        Err(e) => report.failures.push(RebuildFailure {
            path,
            reason: format!("missing, and rewriting it from the index failed: {e}"),
        }),
    }
}

// === impl Store: mirror catch-up ===

impl Store {
    /// Rewrites, from the index, every mirror file missing relative to it:
    /// one `stat` per index row, and a read of the rows whose file is gone.
    /// Returns how many were rewritten and the ones that could not be.
    pub(crate) fn restore_mirror(&self) -> Result<(usize, Vec<(PathBuf, String)>), ReadError> {
        let mut failures = Vec::new();
        let mut restored = 0;
        self.index.with(|db| -> Result<_, ReadError> {
            let tx = db.begin_read()?;
            // Internal: each missing file is written as the walk finds it,
            // so memory holds one record however many are missing; a row
            // that does not decode cannot be written back, so it is reported
            // and the walk goes on.
            let mut restore = |path: PathBuf, bytes: Result<Vec<u8>, ReadError>| match bytes
                .map(|bytes| atomic::write_file(&path, &bytes))
            {
                Ok(Ok(())) => restored += 1,
                Ok(Err(e)) => failures.push((path, e.to_string())),
                Err(e) => failures.push((path, e.to_string())),
            };
            for entry in tx.open_table(FUNCTIONS)?.iter()? {
                let (key, value) = entry?;
                let Ok(id) = key.value().parse::<FunctionId>() else {
                    continue;
                };
                let path = layout::function_file(&self.data_dir, &id);
                if is_missing(&path) {
                    restore(
                        path,
                        decode::<Function>(key.value(), value.value()).map(|f| pretty(&f)),
                    );
                }
            }
            for entry in tx.open_table(ROWS)?.iter()? {
                let (key, value) = entry?;
                let (function, outcome) =
                    (leading_function(key.value()), trailing_outcome(key.value()));
                let path = layout::outcome_file(&self.data_dir, &function, &outcome);
                if is_missing(&path) {
                    restore(
                        path,
                        row::decode(&format!("{function}:{outcome}"), value.value())
                            .map(|o| pretty(&o)),
                    );
                }
            }
            Ok(())
        })?;
        Ok((restored, failures))
    }
}

/// True when nothing at all is at `path` (not even a broken symlink).
fn is_missing(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Reads the `function.json` of one `functions/<id>/` dir.
fn read_function_file(dir: &Path, failures: &mut Vec<RebuildFailure>) -> FunctionFile {
    let path = layout::function_file_in(dir);
    if is_missing(&path) {
        return FunctionFile::Missing;
    }
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = match read_record::<Function>(&path) {
        Ok(function) if function.id.to_string() == dir_name => return FunctionFile::Read(function),
        Ok(function) => format!(
            "its id {} does not match its directory `{dir_name}`",
            function.id
        ),
        Err(reason) => reason,
    };
    failures.push(RebuildFailure { path, reason });
    FunctionFile::Unreadable
}

/// Reads the outcome files of one function dir, one at a time, handing each
/// readable one to `each`; unreadable ones go to `failures`.
fn for_each_outcome_file(
    dir: &Path,
    function: &Function,
    failures: &mut Vec<RebuildFailure>,
    mut each: impl FnMut(Outcome) -> Result<(), WriteError>,
) -> Result<(), RebuildError> {
    let outcomes_dir = layout::outcomes_dir(dir);
    if !outcomes_dir.exists() {
        return Ok(());
    }
    let entries = fs::read_dir(&outcomes_dir).map_err(|source| RebuildError::List {
        path: outcomes_dir.clone(),
        source,
    })?;
    let paths = entries.flatten().map(|e| e.path()).filter(|p| {
        p.extension().is_some_and(|e| e == "json")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
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
            Ok(o) => each(o)?,
            Err(reason) => failures.push(RebuildFailure { path, reason }),
        }
    }
    Ok(())
}

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
