//! The schema versions and the migration chain.
//!
//! A change to a table layout bumps `SCHEMA_VERSION` and adds one
//! `migrate_vN_to_vN1` step here, with a fixture store of version N under
//! `fixtures/` opened by a test. The JSON files have their own version,
//! `FILE_VERSION`, bumped only when their layout changes.
//!
//! - 1: outcomes as JSON in one table keyed `"<function>:<outcome>"`.
//! - 2: outcomes compressed in `outcome_rows`, with the key, position and
//!   time indexes (`crate::tables`); the files did not change.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::error::OpenError;
use crate::model::Outcome;
use crate::outcomes::OutcomeTables;
use crate::store::decode;
use crate::tables::{FUNCTIONS, META, STATS, V1_OUTCOMES};

/// The format version of the index this build writes.
pub const SCHEMA_VERSION: u32 = 2;

/// The format version of the JSON files this build writes and reads.
pub const FILE_VERSION: u32 = 1;

/// Outcomes moved per transaction while migrating, so memory stays bounded
/// whatever the store holds.
const MIGRATION_BATCH: usize = 1024;

const VERSION_KEY: &str = "schema_version";

fn db_err(data_dir: &Path, e: impl Into<redb::Error>) -> OpenError {
    OpenError::Database {
        path: crate::layout::index_file(data_dir),
        source: Box::new(e.into()),
    }
}

/// Stamps a new index or checks an existing one.
pub(crate) fn check_or_init(db: &redb::Database, data_dir: &Path) -> Result<(), OpenError> {
    let found = {
        let read = db.begin_read().map_err(|e| db_err(data_dir, e))?;
        match read.open_table(META) {
            Ok(table) => table
                .get(VERSION_KEY)
                .map_err(|e| db_err(data_dir, e))?
                .map(|v| v.value().to_owned()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(db_err(data_dir, e)),
        }
    };
    match found {
        None => {
            let write = db.begin_write().map_err(|e| db_err(data_dir, e))?;
            {
                let mut meta = write.open_table(META).map_err(|e| db_err(data_dir, e))?;
                meta.insert(VERSION_KEY, SCHEMA_VERSION.to_string().as_str())
                    .map_err(|e| db_err(data_dir, e))?;
                // Internal: create every table now so readers never meet a
                // missing one.
                write
                    .open_table(FUNCTIONS)
                    .map_err(|e| db_err(data_dir, e))?;
                OutcomeTables::open(&write).map_err(|e| db_err(data_dir, e))?;
                write.open_table(STATS).map_err(|e| db_err(data_dir, e))?;
            }
            write.commit().map_err(|e| db_err(data_dir, e))?;
            Ok(())
        }
        Some(text) => {
            let version: u32 = text.parse().map_err(|_| OpenError::BadSchema {
                data_dir: data_dir.to_owned(),
                found: text.clone(),
            })?;
            if version > SCHEMA_VERSION {
                return Err(OpenError::NewerSchema {
                    data_dir: data_dir.to_owned(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if version == 1 {
                migrate_v1_to_v2(db).map_err(|e| db_err(data_dir, e))?;
            }
            Ok(())
        }
    }
}

/// Moves schema 1's outcome table into the compressed rows and their
/// indexes, a batch per transaction, then drops it and stamps version 2 in
/// one last transaction. Internal: a crash before that stamp leaves version
/// 1, and the next open runs the migration again; writing a row twice is
/// harmless (a put replaces).
fn migrate_v1_to_v2(db: &Database) -> Result<(), redb::Error> {
    let read = db.begin_read()?;
    let old = match read.open_table(V1_OUTCOMES) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut moved = 0usize;
    let mut skipped = 0usize;
    if let Some(old) = old {
        tracing::info!(
            rows = old.len()?,
            "migrating the index from schema 1 to 2 (compressed outcomes with key, position and time indexes)"
        );
        let mut batch: Vec<Outcome> = Vec::with_capacity(MIGRATION_BATCH);
        // Internal: the order of the old table stands in for commit order
        // among outcomes of one call seen in the same millisecond.
        let write_batch = |batch: &mut Vec<Outcome>, first: usize| -> Result<(), redb::Error> {
            let tx = db.begin_write()?;
            {
                let mut tables = OutcomeTables::open(&tx)?;
                for (i, outcome) in batch.iter().enumerate() {
                    tables.put(outcome, (first + i) as u64)?;
                }
            }
            tx.commit()?;
            batch.clear();
            Ok(())
        };
        for entry in old.iter()? {
            let (key, value) = entry?;
            match decode::<Outcome>(key.value(), value.value()) {
                Ok(outcome) => batch.push(outcome),
                Err(e) => {
                    // Internal: its JSON file is untouched; rebuild-index
                    // reads it back.
                    tracing::warn!(row = key.value(), error = %e, "skipped an unreadable outcome row while migrating; `cacheow rebuild-index` restores it from its JSON file");
                    skipped += 1;
                    continue;
                }
            }
            if batch.len() == MIGRATION_BATCH {
                let first = moved;
                moved += batch.len();
                write_batch(&mut batch, first)?;
            }
        }
        let first = moved;
        moved += batch.len();
        write_batch(&mut batch, first)?;
    }
    drop(read);
    let tx = db.begin_write()?;
    {
        OutcomeTables::open(&tx)?;
        tx.delete_table(V1_OUTCOMES)?;
        tx.open_table(META)?
            .insert(VERSION_KEY, SCHEMA_VERSION.to_string().as_str())?;
    }
    tx.commit()?;
    tracing::info!(moved, skipped, "migrated the index to schema 2");
    Ok(())
}

/// Checks the `schema_version` field of a mirror file.
pub(crate) fn check_file_version(value: &serde_json::Value) -> Result<(), String> {
    if !value.is_object() {
        return Err("invalid record: expected a JSON object".into());
    }
    match value.get(VERSION_KEY) {
        None => Err(format!("missing `{VERSION_KEY}`")),
        Some(v) => match v.as_u64() {
            Some(n) if n == u64::from(FILE_VERSION) => Ok(()),
            Some(n) if n > u64::from(FILE_VERSION) => Err(format!(
                "written by a newer cacheow (schema version {n}, this one reads {FILE_VERSION})"
            )),
            _ => Err(format!("unsupported `{VERSION_KEY}` {v}")),
        },
    }
}

/// Adds `schema_version` first in a record about to be written to a file.
pub(crate) fn stamp(value: serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert(VERSION_KEY.into(), FILE_VERSION.into());
    if let serde_json::Value::Object(fields) = value {
        out.extend(fields);
    }
    serde_json::Value::Object(out)
}

/// Removes the stamp before the record is parsed into a model type.
pub(crate) fn unstamp(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = value.as_object_mut() {
        fields.shift_remove(VERSION_KEY);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_versions_are_compared_whole() {
        let stamped = |v: serde_json::Value| serde_json::json!({ VERSION_KEY: v });
        assert!(check_file_version(&stamped(FILE_VERSION.into())).is_ok());
        // Internal: 2^32 + 1 truncated to 32 bits would read as version 1.
        let wrapped = u64::from(u32::MAX) + 1 + u64::from(FILE_VERSION);
        let err = check_file_version(&stamped(wrapped.into())).unwrap_err();
        assert!(err.contains("newer cacheow"), "{err}");
        assert!(check_file_version(&stamped("1".into())).is_err());
        assert!(check_file_version(&serde_json::json!({})).is_err());
    }
}
