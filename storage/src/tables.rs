//! Every redb table. Table names and key layouts are part of the format.
//!
//! Schema 2 keeps each outcome once, compressed (`ROWS`), and three small
//! indexes over it, so that no read walks a function's outcomes:
//! `BY_KEY` answers cache lookups, `BY_SEQ` a uniform random choice and the
//! outcome count, `BY_TIME` the newest-first pages of the API. Ids are
//! stored as their raw bytes (a function id and an outcome id are 8 bytes,
//! a call key 32), big-endian numbers, so byte order is the order we want.

use redb::TableDefinition;

use crate::ids::{CallKey, FunctionId, OutcomeId};

/// `"schema_version"` → decimal string; `"mirror_dirty"` → `"1"` while
/// committed writes may be missing from the JSON files.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Set in the transaction of each batch, cleared once it is mirrored.
pub(crate) const MIRROR_DIRTY_KEY: &str = "mirror_dirty";
/// function id (hex) → `Function` as JSON.
pub(crate) const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// function id (hex) → `Stats` as JSON.
pub(crate) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");

/// Schema 1's outcome table: `"<function id>:<outcome id>"` → `Outcome` as
/// JSON. Read once by the migration to schema 2, then deleted.
pub(crate) const V1_OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");

/// function id ‖ outcome id → a row (`crate::row`): a small fixed header
/// and the outcome as zstd-compressed JSON.
pub(crate) const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outcome_rows");
/// function id ‖ call key ‖ outcome id → (last seen, unix ms; commit
/// order), so the newest outcome of a call is found without reading rows.
pub(crate) const BY_KEY: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("by_key");
/// function id ‖ position → outcome id. Positions are dense (0..count): a
/// delete moves the last outcome into the hole.
pub(crate) const BY_SEQ: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_seq");
/// function id ‖ last seen (unix ms) ‖ outcome id → nothing: lists, newest
/// first.
pub(crate) const BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("by_time");

pub(crate) const ROW_KEY: usize = 16;
pub(crate) const CALL_KEY_KEY: usize = 48;
pub(crate) const SEQ_KEY: usize = 16;
pub(crate) const TIME_KEY: usize = 24;

pub(crate) fn row_key(function: &FunctionId, outcome: &OutcomeId) -> [u8; ROW_KEY] {
    let mut key = [0; ROW_KEY];
    key[..8].copy_from_slice(function.as_bytes());
    key[8..].copy_from_slice(outcome.as_bytes());
    key
}

pub(crate) fn call_key_key(
    function: &FunctionId,
    call_key: &CallKey,
    outcome: &OutcomeId,
) -> [u8; CALL_KEY_KEY] {
    let mut key = [0; CALL_KEY_KEY];
    key[..8].copy_from_slice(function.as_bytes());
    key[8..40].copy_from_slice(call_key.as_bytes());
    key[40..].copy_from_slice(outcome.as_bytes());
    key
}

pub(crate) fn seq_key(function: &FunctionId, seq: u64) -> [u8; SEQ_KEY] {
    let mut key = [0; SEQ_KEY];
    key[..8].copy_from_slice(function.as_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn time_key(function: &FunctionId, millis: u64, outcome: &OutcomeId) -> [u8; TIME_KEY] {
    let mut key = [0; TIME_KEY];
    key[..8].copy_from_slice(function.as_bytes());
    key[8..16].copy_from_slice(&millis.to_be_bytes());
    key[16..].copy_from_slice(outcome.as_bytes());
    key
}

/// The keys of `table` that start with `prefix`, as an inclusive range of
/// `N`-byte keys.
pub(crate) fn prefix_range<const N: usize>(prefix: &[u8]) -> ([u8; N], [u8; N]) {
    let (mut start, mut end) = ([0u8; N], [0xffu8; N]);
    start[..prefix.len()].copy_from_slice(prefix);
    end[..prefix.len()].copy_from_slice(prefix);
    (start, end)
}

/// The outcome id at the end of a key.
pub(crate) fn trailing_outcome(key: &[u8]) -> OutcomeId {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&key[key.len() - 8..]);
    OutcomeId::from_bytes(bytes)
}

/// The function id at the start of a key.
pub(crate) fn leading_function(key: &[u8]) -> FunctionId {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&key[..8]);
    FunctionId::from_bytes(bytes)
}
