//! Every redb table. Table names and key layouts are part of the format.

use redb::TableDefinition;

/// `"schema_version"` → decimal string; `"mirror_dirty"` → `"1"` while
/// committed writes may be missing from the JSON files.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Set in the transaction of each batch, cleared once it is mirrored.
pub(crate) const MIRROR_DIRTY_KEY: &str = "mirror_dirty";
/// function id (hex) → `Function` as JSON.
pub(crate) const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// `"<function id>:<outcome id>"` → `Outcome` as JSON.
pub(crate) const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
/// function id (hex) → `Stats` as JSON.
pub(crate) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");

/// The key of one outcome row.
pub(crate) fn outcome_key(function: &str, outcome: &str) -> String {
    format!("{function}:{outcome}")
}

/// The key range holding every outcome of one function (`;` sorts right
/// after `:`).
pub(crate) fn outcome_range(function: &str) -> (String, String) {
    (format!("{function}:"), format!("{function};"))
}
