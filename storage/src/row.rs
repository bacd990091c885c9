//! One outcome's row in `ROWS`: a fixed header the indexes are maintained
//! from, then the outcome as zstd-compressed JSON.
//!
//! Internal: the header repeats what the index entries of the row are keyed
//! by (its position, last-seen time and call key), so replacing or deleting
//! a row updates `BY_SEQ`, `BY_TIME` and `BY_KEY` without decompressing it.
//! Compressing is what keeps the store near one copy of each body on disk:
//! the JSON mirror is the readable copy, the row the compact one.

use std::cell::RefCell;

use crate::error::ReadError;
use crate::ids::CallKey;
use crate::model::Outcome;

thread_local! {
    // Internal: a zstd context is a few hundred KiB, above malloc's mmap
    // threshold; making one per row cost an mmap, page faults and an munmap
    // each time (most of a replay from disk), so each thread keeps its own.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Rows never hold more than this much JSON: mirror files are capped at
/// 64 MiB, and a row whose frame claims more is damaged.
const MAX_JSON: usize = 64 * 1024 * 1024;

/// zstd's default level: about 3× on JSON text at a few hundred MB/s.
const LEVEL: i32 = 3;
const HEADER: usize = 8 + 8 + 1 + 32;

/// What the header of a row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowHeader {
    pub(crate) seq: u64,
    pub(crate) last_seen: u64,
    pub(crate) call_key: Option<CallKey>,
}

pub(crate) fn encode(seq: u64, outcome: &Outcome) -> Vec<u8> {
    let json = crate::store::encode(outcome);
    let mut row = Vec::with_capacity(HEADER + json.len() / 2);
    row.extend_from_slice(&seq.to_be_bytes());
    row.extend_from_slice(&outcome.last_seen_at.unix_millis().to_be_bytes());
    match &outcome.call_key {
        Some(key) => {
            row.push(1);
            row.extend_from_slice(key.as_bytes());
        }
        None => row.extend_from_slice(&[0; 33]),
    }
    // Internal: compressing a byte slice into a Vec cannot fail short of
    // running out of memory.
    let compressed = COMPRESSOR
        .with_borrow_mut(|slot| {
            let compressor = match slot {
                Some(compressor) => compressor,
                None => slot.insert(zstd::bulk::Compressor::new(LEVEL)?),
            };
            compressor.compress(&json)
        })
        .expect("zstd compresses into memory");
    row.extend_from_slice(&compressed);
    row
}

/// Inflates one compressed outcome with this thread's decompressor.
fn inflate(frame: &[u8]) -> Result<Vec<u8>, String> {
    let size = zstd::bulk::Decompressor::upper_bound(frame)
        .ok_or("its compressed outcome has no readable size")?;
    if size > MAX_JSON {
        return Err(format!("its compressed outcome claims {size} bytes"));
    }
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?),
        };
        decompressor
            .decompress(frame, size)
            .map_err(|e| format!("its compressed outcome does not decompress: {e}"))
    })
}

/// The header of a row, or `None` when it is too short to have one.
pub(crate) fn header(row: &[u8]) -> Option<RowHeader> {
    if row.len() < HEADER {
        return None;
    }
    let number = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&row[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let call_key = (row[16] == 1).then(|| {
        let mut key = [0; 32];
        key.copy_from_slice(&row[17..HEADER]);
        CallKey::from_bytes(key)
    });
    Some(RowHeader {
        seq: number(0),
        last_seen: number(8),
        call_key,
    })
}

/// The row with its position replaced (a delete moved it into a hole).
pub(crate) fn with_seq(row: &[u8], seq: u64) -> Vec<u8> {
    let mut moved = row.to_vec();
    moved[..8].copy_from_slice(&seq.to_be_bytes());
    moved
}

/// The outcome a row holds; `key` names it in errors.
pub(crate) fn decode(key: &str, row: &[u8]) -> Result<Outcome, ReadError> {
    decode_sized(key, row).map(|(outcome, _)| outcome)
}

/// `decode`, with the size of the outcome as JSON.
pub(crate) fn decode_sized(key: &str, row: &[u8]) -> Result<(Outcome, usize), ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt {
        key: key.to_owned(),
        source: <serde_json::Error as serde::de::Error>::custom(reason),
    };
    if row.len() < HEADER {
        return Err(corrupt(format!(
            "a row of {} bytes has no header",
            row.len()
        )));
    }
    let json = inflate(&row[HEADER..]).map_err(corrupt)?;
    crate::store::decode(key, &json).map(|outcome| (outcome, json.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FunctionId, OutcomeId};
    use crate::model::{OutcomeType, Timestamp};

    #[test]
    fn a_row_round_trips_and_its_header_says_what_the_indexes_need() {
        let now = Timestamp::now();
        let key = CallKey::from_bytes([7; 32]);
        let outcome = Outcome {
            id: OutcomeId::from_bytes([1; 8]),
            function_id: FunctionId::from_bytes([2; 8]),
            call_key: Some(key),
            outcome_type: OutcomeType::Return,
            value: serde_json::json!({"text": "hello ".repeat(200)}),
            exception_type: None,
            exception_message: None,
            duration_ms: 1.5,
            count: 3,
            is_manual: false,
            is_mock_only: false,
            created_at: now,
            last_seen_at: now,
            request: None,
        };
        let row = encode(41, &outcome);
        assert!(
            row.len() < 400,
            "a 1.2 KB repetitive body compresses: {}",
            row.len()
        );
        assert_eq!(
            header(&row),
            Some(RowHeader {
                seq: 41,
                last_seen: now.unix_millis(),
                call_key: Some(key)
            })
        );
        assert_eq!(decode("k", &with_seq(&row, 5)).unwrap(), outcome);
        assert_eq!(header(&with_seq(&row, 5)).unwrap().seq, 5);
        assert!(decode("k", &row[..HEADER + 3]).is_err());
    }
}
