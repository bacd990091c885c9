//! The schema version and the migration chain.
//!
//! Version 1 is the first format, so the chain is empty. A change to a table
//! layout or a field name bumps `SCHEMA_VERSION` and adds one
//! `migrate_vN_to_vN1` step here, with a fixture store of version N under
//! `fixtures/` opened by a test.

use std::path::Path;

use redb::ReadableDatabase;

use crate::error::OpenError;
use crate::tables::{FUNCTIONS, META, OUTCOMES, STATS};

/// The format version this build writes, in redb and in every JSON file.
pub const SCHEMA_VERSION: u32 = 1;

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
                write
                    .open_table(OUTCOMES)
                    .map_err(|e| db_err(data_dir, e))?;
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
            // Older versions would be migrated here, one step at a time.
            Ok(())
        }
    }
}

/// Checks the `schema_version` field of a mirror file.
pub(crate) fn check_file_version(value: &serde_json::Value) -> Result<(), String> {
    if !value.is_object() {
        return Err("invalid record: expected a JSON object".into());
    }
    match value.get(VERSION_KEY) {
        None => Err(format!("missing `{VERSION_KEY}`")),
        Some(v) => match v.as_u64() {
            Some(n) if n == u64::from(SCHEMA_VERSION) => Ok(()),
            Some(n) if n > u64::from(SCHEMA_VERSION) => Err(format!(
                "written by a newer cacheow (schema version {n}, this one reads {SCHEMA_VERSION})"
            )),
            _ => Err(format!("unsupported `{VERSION_KEY}` {v}")),
        },
    }
}

/// Adds `schema_version` first in a record about to be written to a file.
pub(crate) fn stamp(value: serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert(VERSION_KEY.into(), SCHEMA_VERSION.into());
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
        assert!(check_file_version(&stamped(SCHEMA_VERSION.into())).is_ok());
        // Internal: 2^32 + 1 truncated to 32 bits would read as version 1.
        let wrapped = u64::from(u32::MAX) + 1 + u64::from(SCHEMA_VERSION);
        let err = check_file_version(&stamped(wrapped.into())).unwrap_err();
        assert!(err.contains("newer cacheow"), "{err}");
        assert!(check_file_version(&stamped("1".into())).is_err());
        assert!(check_file_version(&serde_json::json!({})).is_err());
    }
}
