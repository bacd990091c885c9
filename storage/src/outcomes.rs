//! Outcome rows and their indexes: the writes that keep them in step, and
//! the reads the engine makes on demand. Every read here touches a bounded
//! number of index entries, however many outcomes a function has.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use crate::error::ReadError;
use crate::ids::{CallKey, FunctionId, OutcomeId};
use crate::model::{Function, Outcome, Stats};
use crate::row;
use crate::store::{Store, decode, stats_in};
use crate::tables::{
    BY_KEY, BY_SEQ, BY_TIME, CALL_KEY_KEY, FUNCTIONS, ROWS, SEQ_KEY, STATS, TIME_KEY, call_key_key,
    prefix_range, row_key, seq_key, time_key, trailing_outcome,
};

/// A function with its counters and how many outcomes it has; what start-up
/// reads.
#[derive(Debug, Clone)]
pub struct FunctionRecord {
    /// The function.
    pub function: Function,
    /// Its counters.
    pub stats: Stats,
    /// How many outcomes are stored for it.
    pub outcome_count: u64,
}

/// One outcome recorded for a call key, as the key index has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedOutcome {
    /// The outcome.
    pub id: OutcomeId,
    /// When it was last recorded (unix ms).
    pub last_seen: u64,
    /// Commit order among outcomes last seen in the same millisecond.
    pub order: u64,
}

/// The outcome tables of one write transaction.
pub(crate) struct OutcomeTables<'txn> {
    rows: Table<'txn, &'static [u8], &'static [u8]>,
    by_key: Table<'txn, &'static [u8], (u64, u64)>,
    by_seq: Table<'txn, &'static [u8], &'static [u8]>,
    by_time: Table<'txn, &'static [u8], ()>,
}

impl<'txn> OutcomeTables<'txn> {
    pub(crate) fn open(tx: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(OutcomeTables {
            rows: tx.open_table(ROWS)?,
            by_key: tx.open_table(BY_KEY)?,
            by_seq: tx.open_table(BY_SEQ)?,
            by_time: tx.open_table(BY_TIME)?,
        })
    }

    /// Inserts or replaces an outcome; `order` breaks ties between outcomes
    /// of one call last seen in the same millisecond.
    pub(crate) fn put(&mut self, outcome: &Outcome, order: u64) -> Result<(), redb::Error> {
        let (function, id) = (&outcome.function_id, &outcome.id);
        let key = row_key(function, id);
        let old = match self.rows.get(key.as_slice())? {
            Some(value) => Some(header_of(function, id, value.value())?),
            None => None,
        };
        let seq = match old {
            Some(old) => {
                self.by_time
                    .remove(time_key(function, old.last_seen, id).as_slice())?;
                if let Some(call_key) = &old.call_key {
                    self.by_key
                        .remove(call_key_key(function, call_key, id).as_slice())?;
                }
                old.seq
            }
            None => {
                let seq = count_in(&self.by_seq, function)?;
                self.by_seq
                    .insert(seq_key(function, seq).as_slice(), id.as_bytes().as_slice())?;
                seq
            }
        };
        let last_seen = outcome.last_seen_at.unix_millis();
        self.rows
            .insert(key.as_slice(), row::encode(seq, outcome).as_slice())?;
        self.by_time
            .insert(time_key(function, last_seen, id).as_slice(), ())?;
        if let Some(call_key) = &outcome.call_key {
            self.by_key.insert(
                call_key_key(function, call_key, id).as_slice(),
                (last_seen, order),
            )?;
        }
        Ok(())
    }

    /// Removes an outcome; the last position's outcome moves into its place
    /// so positions stay dense.
    pub(crate) fn delete(
        &mut self,
        function: &FunctionId,
        id: &OutcomeId,
    ) -> Result<(), redb::Error> {
        let old = match self.rows.get(row_key(function, id).as_slice())? {
            Some(value) => header_of(function, id, value.value())?,
            None => return Ok(()),
        };
        self.rows.remove(row_key(function, id).as_slice())?;
        self.by_time
            .remove(time_key(function, old.last_seen, id).as_slice())?;
        if let Some(call_key) = &old.call_key {
            self.by_key
                .remove(call_key_key(function, call_key, id).as_slice())?;
        }
        let last = count_in(&self.by_seq, function)?.saturating_sub(1);
        let moved = self
            .by_seq
            .remove(seq_key(function, last).as_slice())?
            .map(|v| trailing_outcome(v.value()));
        if let Some(moved) = moved
            && moved != *id
        {
            self.by_seq.insert(
                seq_key(function, old.seq).as_slice(),
                moved.as_bytes().as_slice(),
            )?;
            let moved_key = row_key(function, &moved);
            let patched = self
                .rows
                .get(moved_key.as_slice())?
                .map(|v| row::with_seq(v.value(), old.seq));
            if let Some(patched) = patched {
                self.rows.insert(moved_key.as_slice(), patched.as_slice())?;
            }
        }
        Ok(())
    }
}

/// The header of a stored row. Internal: a row too short to have one is
/// refused rather than rewritten, since its index entries cannot be found
/// and the positions would drift; rebuild-index replaces a damaged index.
fn header_of(
    function: &FunctionId,
    id: &OutcomeId,
    row: &[u8],
) -> Result<row::RowHeader, redb::Error> {
    row::header(row).ok_or_else(|| {
        redb::Error::Corrupted(format!(
            "the row of outcome {function}:{id} is {} bytes, too short for its header",
            row.len()
        ))
    })
}

/// How many outcomes `function` has: one past its last position.
fn count_in(
    by_seq: &impl ReadableTable<&'static [u8], &'static [u8]>,
    function: &FunctionId,
) -> Result<u64, redb::Error> {
    let (start, end) = prefix_range::<SEQ_KEY>(function.as_bytes());
    let last = by_seq.range(start.as_slice()..=end.as_slice())?.next_back();
    Ok(match last {
        Some(entry) => {
            let (key, _) = entry?;
            let mut seq = [0; 8];
            seq.copy_from_slice(&key.value()[8..]);
            u64::from_be_bytes(seq) + 1
        }
        None => 0,
    })
}

fn row_name(function: &FunctionId, id: &OutcomeId) -> String {
    format!("{function}:{id}")
}

fn read_row(
    tx: &ReadTransaction,
    function: &FunctionId,
    id: &OutcomeId,
) -> Result<Option<(Outcome, usize)>, ReadError> {
    let rows = tx.open_table(ROWS)?;
    match rows.get(row_key(function, id).as_slice())? {
        Some(value) => row::decode_sized(&row_name(function, id), value.value()).map(Some),
        None => Ok(None),
    }
}

// === impl Store: reads ===

impl Store {
    /// Every function with its counters and outcome count; no outcome is read.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, ReadError> {
        self.read(|tx| {
            let functions = tx.open_table(FUNCTIONS)?;
            let stats = tx.open_table(STATS)?;
            let by_seq = tx.open_table(BY_SEQ)?;
            let mut out = Vec::new();
            for entry in functions.iter()? {
                let (key, value) = entry?;
                let function: Function = decode(key.value(), value.value())?;
                let stats = stats_in(&stats, key.value())?;
                let outcome_count = count_in(&by_seq, &function.id)?;
                out.push(FunctionRecord {
                    function,
                    stats,
                    outcome_count,
                });
            }
            Ok(out)
        })
    }

    /// One outcome, read from its row, with its size as JSON.
    pub fn outcome(
        &self,
        function: &FunctionId,
        id: &OutcomeId,
    ) -> Result<Option<(Outcome, usize)>, ReadError> {
        self.read(|tx| read_row(tx, function, id))
    }

    /// The outcomes recorded for one call, from the key index alone.
    pub fn outcomes_for_key(
        &self,
        function: &FunctionId,
        call_key: &CallKey,
    ) -> Result<Vec<KeyedOutcome>, ReadError> {
        self.read(|tx| {
            let by_key = tx.open_table(BY_KEY)?;
            let mut prefix = [0; 40];
            prefix[..8].copy_from_slice(function.as_bytes());
            prefix[8..].copy_from_slice(call_key.as_bytes());
            let (start, end) = prefix_range::<CALL_KEY_KEY>(&prefix);
            let mut out = Vec::new();
            for entry in by_key.range(start.as_slice()..=end.as_slice())? {
                let (key, value) = entry?;
                let (last_seen, order) = value.value();
                out.push(KeyedOutcome {
                    id: trailing_outcome(key.value()),
                    last_seen,
                    order,
                });
            }
            Ok(out)
        })
    }

    /// How many outcomes `function` has.
    pub fn outcome_count(&self, function: &FunctionId) -> Result<u64, ReadError> {
        self.read(|tx| Ok(count_in(&tx.open_table(BY_SEQ)?, function)?))
    }

    /// The ids at positions `from..from + n` of `function`'s outcomes (fewer
    /// past the end). Positions are dense and stable until a delete, so a
    /// uniform choice is a random position.
    pub fn outcome_ids_at(
        &self,
        function: &FunctionId,
        from: u64,
        n: usize,
    ) -> Result<Vec<OutcomeId>, ReadError> {
        self.read(|tx| {
            let by_seq = tx.open_table(BY_SEQ)?;
            let (_, end) = prefix_range::<SEQ_KEY>(function.as_bytes());
            let start = seq_key(function, from);
            let mut out = Vec::with_capacity(n.min(1024));
            for entry in by_seq.range(start.as_slice()..=end.as_slice())?.take(n) {
                let (_, value) = entry?;
                out.push(trailing_outcome(value.value()));
            }
            Ok(out)
        })
    }

    /// Up to `limit` outcomes of `function`, most recently seen first,
    /// starting after the outcome `after` (`Ok(None)` when `after` is not
    /// one of them).
    pub fn outcomes_page(
        &self,
        function: &FunctionId,
        after: Option<&OutcomeId>,
        limit: usize,
    ) -> Result<Option<Vec<Outcome>>, ReadError> {
        self.read(|tx| {
            let rows = tx.open_table(ROWS)?;
            let by_time = tx.open_table(BY_TIME)?;
            let (start, mut end) = prefix_range::<TIME_KEY>(function.as_bytes());
            let mut skip_end = false;
            if let Some(after) = after {
                let Some(header) = rows
                    .get(row_key(function, after).as_slice())?
                    .and_then(|v| row::header(v.value()))
                else {
                    return Ok(None);
                };
                end = time_key(function, header.last_seen, after);
                skip_end = true;
            }
            let mut out = Vec::with_capacity(limit.min(1024));
            let entries = by_time.range(start.as_slice()..=end.as_slice())?.rev();
            for entry in entries.skip(usize::from(skip_end)).take(limit) {
                let (key, _) = entry?;
                let id = trailing_outcome(key.value());
                let row_key = row_key(function, &id);
                if let Some(value) = rows.get(row_key.as_slice())? {
                    out.push(row::decode(&row_name(function, &id), value.value())?);
                }
            }
            Ok(Some(out))
        })
    }

    /// Runs `f` in a read transaction of the index.
    fn read<R>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<R, ReadError>,
    ) -> Result<R, ReadError> {
        self.index
            .with(|db| {
                let tx = db.begin_read()?;
                f(&tx)
            })
            .map_err(|e| self.damage_named(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;
    use crate::{FunctionKind, OutcomeType, Timestamp};

    fn outcome(function: &Function, n: u8, key: u8, millis: u64) -> Outcome {
        let at = Timestamp::from_unix_millis(millis);
        Outcome {
            id: OutcomeId::from_bytes([n; 8]),
            function_id: function.id,
            call_key: Some(CallKey::from_bytes([key; 32])),
            outcome_type: OutcomeType::Return,
            value: serde_json::json!(n),
            exception_type: None,
            exception_message: None,
            duration_ms: 0.0,
            count: 1,
            is_manual: false,
            is_mock_only: false,
            created_at: at,
            last_seen_at: at,
            request: None,
        }
    }

    #[test]
    fn positions_stay_dense_and_every_index_follows_puts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let function = Function::new("f", FunctionKind::Sync);
        let id = function.id;
        let mut writes = vec![Write::PutFunction(function.clone())];
        writes
            .extend((1..=4).map(|n| Write::PutOutcome(outcome(&function, n, n % 2, u64::from(n)))));
        store.apply(&writes).unwrap();
        assert_eq!(store.outcome_count(&id).unwrap(), 4);
        assert_eq!(store.functions().unwrap()[0].outcome_count, 4);

        let keyed = store
            .outcomes_for_key(&id, &CallKey::from_bytes([1; 32]))
            .unwrap();
        let ids: Vec<_> = keyed.iter().map(|k| k.id.as_bytes()[0]).collect();
        assert_eq!(ids, [1, 3]);

        // Seen again later: it moves to the front of the list and its key
        // entry carries the new time.
        store
            .apply(&[Write::PutOutcome(outcome(&function, 1, 1, 10))])
            .unwrap();
        let page = store.outcomes_page(&id, None, 2).unwrap().unwrap();
        let firsts: Vec<_> = page.iter().map(|o| o.id.as_bytes()[0]).collect();
        assert_eq!(firsts, [1, 4]);
        let rest = store
            .outcomes_page(&id, Some(&page[1].id), 10)
            .unwrap()
            .unwrap();
        let rest: Vec<_> = rest.iter().map(|o| o.id.as_bytes()[0]).collect();
        assert_eq!(rest, [3, 2]);
        assert_eq!(
            store.outcome_count(&id).unwrap(),
            4,
            "a replace is not a new outcome"
        );

        store
            .apply(&[Write::DeleteOutcome {
                function: id,
                outcome: OutcomeId::from_bytes([2; 8]),
            }])
            .unwrap();
        assert_eq!(store.outcome_count(&id).unwrap(), 3);
        let mut at: Vec<_> = store
            .outcome_ids_at(&id, 0, 10)
            .unwrap()
            .iter()
            .map(|o| o.as_bytes()[0])
            .collect();
        at.sort_unstable();
        assert_eq!(at, [1, 3, 4], "the last position moved into the hole");
        assert!(
            store
                .outcome(&id, &OutcomeId::from_bytes([2; 8]))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .outcomes_page(&id, Some(&OutcomeId::from_bytes([2; 8])), 1)
                .unwrap()
                .is_none()
        );
        // Every surviving row still knows its position: deleting them all
        // leaves nothing behind.
        for n in [1, 3, 4] {
            store
                .apply(&[Write::DeleteOutcome {
                    function: id,
                    outcome: OutcomeId::from_bytes([n; 8]),
                }])
                .unwrap();
        }
        assert_eq!(store.outcome_count(&id).unwrap(), 0);
        assert!(
            store
                .outcomes_page(&id, None, 10)
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_row_too_short_for_its_header_is_refused_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let function = Function::new("f", FunctionKind::Sync);
        let id = function.id;
        let stored = outcome(&function, 1, 1, 1);
        store
            .apply(&[
                Write::PutFunction(function.clone()),
                Write::PutOutcome(stored.clone()),
            ])
            .unwrap();
        store
            .index
            .with(|db| -> Result<(), crate::WriteError> {
                let tx = db.begin_write()?;
                tx.open_table(ROWS)?
                    .insert(row_key(&id, &stored.id).as_slice(), [1u8, 2, 3].as_slice())?;
                tx.commit()?;
                Ok(())
            })
            .unwrap();
        let put = store.apply(&[Write::PutOutcome(stored.clone())]);
        assert!(put.is_err(), "a put over a damaged row fails: {put:?}");
        let delete = store.apply(&[Write::DeleteOutcome {
            function: id,
            outcome: stored.id,
        }]);
        assert!(delete.is_err(), "so does a delete: {delete:?}");
        assert_eq!(
            store.outcome_count(&id).unwrap(),
            1,
            "no position gained or lost"
        );
    }
}
