//! One function's outcomes as the engine sees them: the store's rows, the
//! engine-wide cache of hot ones, and the writes still on their way to the
//! store.
//!
//! Internal: the store is the source of truth, but the background writer
//! commits a moment after a call records, so an outcome recorded, seen
//! again or deleted stays here ("in flight") until its write is
//! acknowledged. Every read looks here first, so a replay right after a
//! recording sees it. What is in flight is bounded by the writer's queue
//! plus the repeats counted since the last stats flush.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cacheow_storage::{
    CallKey, FunctionId, KeyedOutcome, Outcome, OutcomeId, ReadError, Store, WriteError,
};

use crate::outcome::StoredOutcome;

/// What the hot cache holds, per function and the function's generation
/// (bumped when a rebuild re-reads it, which retires its entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HotKey {
    /// One outcome.
    Outcome(FunctionId, u64, OutcomeId),
    /// The key index's entries for one call, as the store has them.
    Call(FunctionId, u64, CallKey),
}

/// A cached outcome, or a call's entries of the key index.
#[derive(Clone)]
pub(crate) enum Hot {
    Outcome(Arc<StoredOutcome>),
    Call(Arc<[KeyedOutcome]>),
}

/// The engine's bounded cache of hot outcomes and of the key index entries
/// of hot calls, weighted by their estimated size in memory.
pub(crate) type HotCache = quick_cache::sync::Cache<HotKey, Hot, ByWeight>;

/// Weighs a cache entry by its estimated memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByWeight;

impl quick_cache::Weighter<HotKey, Hot> for ByWeight {
    fn weight(&self, _: &HotKey, hot: &Hot) -> u64 {
        match hot {
            Hot::Outcome(outcome) => outcome.weight(),
            Hot::Call(entries) => 128 + 32 * entries.len() as u64,
        }
    }
}

/// A cache of `bytes` (estimated memory of the outcomes it holds).
pub(crate) fn hot_cache(bytes: u64) -> HotCache {
    // Internal: the item estimate only sizes the hash tables; 8 KiB is a
    // typical HTTP outcome in memory.
    let items = usize::try_from(bytes / 8192).unwrap_or(usize::MAX).max(16);
    HotCache::with_weighter(items, bytes.max(1), ByWeight)
}

/// Random probes a uniform mock choice makes before it scans.
const PROBES: usize = 32;
/// Positions a uniform mock choice scans, from a random one, when its
/// probes found nothing the call accepts. A function with at most this many
/// outcomes is scanned whole, so a choice is then exact.
const SCAN_LIMIT: u64 = 4096;

enum Change {
    /// Recorded or seen again; `new` when the store did not have it.
    Live {
        outcome: Arc<StoredOutcome>,
        new: bool,
        /// Seen again since its last write was sent.
        dirty: bool,
    },
    Deleted {
        call_key: Option<CallKey>,
    },
}

struct Pending {
    change: Change,
    /// Which write settles it: a later change replaces the entry, and the
    /// earlier write's acknowledgement must not remove it.
    generation: u64,
    /// Order of changes, to rank outcomes seen in the same millisecond.
    touched: u64,
}

#[derive(Default)]
struct InFlight {
    by_id: HashMap<OutcomeId, Pending>,
    by_key: HashMap<CallKey, Vec<OutcomeId>>,
    next: u64,
}

impl InFlight {
    fn put(&mut self, id: OutcomeId, call_key: Option<CallKey>, change: Change) -> u64 {
        self.next += 1;
        let generation = self.next;
        if let Some(key) = call_key {
            let ids = self.by_key.entry(key).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.by_id.insert(
            id,
            Pending {
                change,
                generation,
                touched: generation,
            },
        );
        generation
    }

    fn remove(&mut self, id: &OutcomeId) -> Option<Pending> {
        let pending = self.by_id.remove(id)?;
        let key = match &pending.change {
            Change::Live { outcome, .. } => outcome.outcome().call_key,
            Change::Deleted { call_key } => *call_key,
        };
        if let Some(key) = key
            && let Some(ids) = self.by_key.get_mut(&key)
        {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
        Some(pending)
    }
}

/// What a lookup of one id found.
enum Found {
    Live(Arc<StoredOutcome>),
    Deleted,
    NotHere,
}

/// One function's outcomes.
pub(crate) struct Outcomes {
    function: FunctionId,
    store: Arc<Store>,
    cache: Arc<HotCache>,
    /// Bumped when a rebuild re-reads the function, retiring its cached
    /// outcomes.
    generation: AtomicU64,
    count: AtomicU64,
    /// Bumped (under the in-flight lock) by every write the store commits,
    /// so a call's index entries read before it are not cached after it.
    committed: AtomicU64,
    in_flight: Mutex<InFlight>,
    /// Serialises the check-then-insert of recording and deleting, so the
    /// count stays exact.
    changing: Mutex<()>,
}

/// An outcome change on its way to the store; `settle` it with the write's
/// result.
pub(crate) struct Ticket {
    pub(crate) id: OutcomeId,
    pub(crate) call_key: Option<CallKey>,
    pub(crate) generation: u64,
    /// The write deletes the outcome (else it puts it).
    pub(crate) deletes: bool,
}

/// What recording an outcome did.
pub(crate) enum Recorded {
    /// A new outcome, to be written.
    New(Arc<StoredOutcome>, Ticket),
    /// A known one, counted once more.
    Repeat(Arc<StoredOutcome>, Ticket),
}

impl Outcomes {
    pub(crate) fn new(
        function: FunctionId,
        count: u64,
        store: Arc<Store>,
        cache: Arc<HotCache>,
    ) -> Self {
        Self {
            function,
            store,
            cache,
            generation: AtomicU64::new(0),
            count: AtomicU64::new(count),
            committed: AtomicU64::new(0),
            in_flight: Mutex::default(),
            changing: Mutex::default(),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_key(&self, id: &OutcomeId) -> HotKey {
        HotKey::Outcome(self.function, self.generation.load(Ordering::Acquire), *id)
    }

    fn call_cache_key(&self, key: &CallKey) -> HotKey {
        HotKey::Call(self.function, self.generation.load(Ordering::Acquire), *key)
    }

    fn cached_outcome(&self, id: &OutcomeId) -> Option<Arc<StoredOutcome>> {
        match self.cache.get(&self.cache_key(id))? {
            Hot::Outcome(outcome) => Some(outcome),
            Hot::Call(_) => None,
        }
    }

    /// The key index's entries for `key`: cached, or read from the store and
    /// cached unless a write committed meanwhile.
    fn keyed(&self, key: &CallKey) -> Result<Arc<[KeyedOutcome]>, ReadError> {
        let cache_key = self.call_cache_key(key);
        if let Some(Hot::Call(entries)) = self.cache.get(&cache_key) {
            return Ok(entries);
        }
        let before = self.committed.load(Ordering::Acquire);
        let entries: Arc<[KeyedOutcome]> = self.store.outcomes_for_key(&self.function, key)?.into();
        let in_flight = self.in_flight();
        if self.committed.load(Ordering::Acquire) == before {
            self.cache.insert(cache_key, Hot::Call(entries.clone()));
        }
        drop(in_flight);
        Ok(entries)
    }

    fn in_flight_lookup(&self, id: &OutcomeId) -> Found {
        match self.in_flight().by_id.get(id).map(|p| &p.change) {
            Some(Change::Live { outcome, .. }) => Found::Live(outcome.clone()),
            Some(Change::Deleted { .. }) => Found::Deleted,
            None => Found::NotHere,
        }
    }

    /// How many outcomes the function has.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// One outcome: in flight, cached, or read from the store (and cached).
    pub(crate) fn get(&self, id: &OutcomeId) -> Result<Option<Arc<StoredOutcome>>, ReadError> {
        let before = self.committed.load(Ordering::Acquire);
        match self.in_flight_lookup(id) {
            Found::Live(outcome) => return Ok(Some(outcome)),
            Found::Deleted => return Ok(None),
            Found::NotHere => {}
        }
        if let Some(outcome) = self.cached_outcome(id) {
            return Ok(Some(outcome));
        }
        let Some((outcome, json_bytes)) = self.store.outcome(&self.function, id)? else {
            return Ok(None);
        };
        let outcome = Arc::new(StoredOutcome::new(outcome, json_bytes));
        // Internal: what was read is cached only if no write committed and
        // none started since: a delete (or a newer copy) racing this read
        // must not be hidden by it.
        let in_flight = self.in_flight();
        if self.committed.load(Ordering::Acquire) == before && !in_flight.by_id.contains_key(id) {
            self.cache
                .insert(self.cache_key(id), Hot::Outcome(outcome.clone()));
        }
        drop(in_flight);
        Ok(Some(outcome))
    }

    /// The outcomes recorded for `key`, the most recently seen first, each
    /// read only when the iteration reaches it (cache mode stops at the
    /// first it can replay). One that cannot be read is an `Err` item, and
    /// the iteration goes on.
    pub(crate) fn for_key_newest_first(
        &self,
        key: &CallKey,
    ) -> Result<impl Iterator<Item = Result<Arc<StoredOutcome>, ReadError>> + '_, ReadError> {
        let stored = self.keyed(key)?;
        // (last seen, rank, order): in flight ranks above the store within
        // one millisecond, since its write is the later one.
        type Rank = (u64, u64, u64);
        let mut ranked: Vec<(Rank, OutcomeId, Option<Arc<StoredOutcome>>)> = Vec::new();
        let mut overridden = HashSet::new();
        {
            let in_flight = self.in_flight();
            for id in in_flight.by_key.get(key).into_iter().flatten() {
                overridden.insert(*id);
                if let Some(Pending {
                    change: Change::Live { outcome, .. },
                    touched,
                    ..
                }) = in_flight.by_id.get(id)
                {
                    let seen = outcome.last_seen_at().unix_millis();
                    ranked.push(((seen, 1, *touched), *id, Some(outcome.clone())));
                }
            }
        }
        for entry in stored.iter() {
            if !overridden.contains(&entry.id) {
                ranked.push(((entry.last_seen, 0, entry.order), entry.id, None));
            }
        }
        ranked.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        Ok(ranked
            .into_iter()
            .filter_map(move |(_, id, outcome)| match outcome {
                Some(outcome) => Some(Ok(outcome)),
                // Internal: `None` when deleted since the index was read.
                None => self.get(&id).transpose(),
            }))
    }

    /// A uniformly random outcome that `accepts` takes: random probes
    /// first, then a scan of up to `SCAN_LIMIT` positions from a random one
    /// (the whole function when it is that small).
    pub(crate) fn pick_uniform(
        &self,
        accepts: &dyn Fn(&StoredOutcome) -> bool,
    ) -> Result<Option<Arc<StoredOutcome>>, ReadError> {
        let (pending, deleted): (Vec<Arc<StoredOutcome>>, HashSet<OutcomeId>) = {
            let in_flight = self.in_flight();
            let mut pending = Vec::new();
            let mut deleted = HashSet::new();
            for (id, entry) in &in_flight.by_id {
                match &entry.change {
                    Change::Live {
                        outcome, new: true, ..
                    } => pending.push(outcome.clone()),
                    Change::Live { .. } => {}
                    Change::Deleted { .. } => {
                        deleted.insert(*id);
                    }
                }
            }
            (pending, deleted)
        };
        let stored = self.store.outcome_count(&self.function)?;
        let total = stored + pending.len() as u64;
        if total == 0 {
            return Ok(None);
        }
        let candidate = |position: u64| -> Result<Option<Arc<StoredOutcome>>, ReadError> {
            if let Some(outcome) = usize::try_from(position).ok().and_then(|p| pending.get(p)) {
                return Ok(Some(outcome.clone()));
            }
            let at = position - pending.len() as u64;
            let Some(id) = self.store.outcome_ids_at(&self.function, at, 1)?.pop() else {
                return Ok(None);
            };
            if deleted.contains(&id) {
                return Ok(None);
            }
            self.get(&id)
        };
        for _ in 0..PROBES.min(total as usize) {
            if let Some(outcome) = candidate(fastrand::u64(..total))?
                && accepts(&outcome)
            {
                return Ok(Some(outcome));
            }
        }
        // Internal: the probes mostly met outcomes the call does not take;
        // collect the ones it does over a bounded window and pick among them.
        let mut accepted: Vec<Arc<StoredOutcome>> =
            pending.iter().filter(|o| accepts(o)).cloned().collect();
        let window = stored.min(SCAN_LIMIT);
        let start = if stored > window {
            fastrand::u64(..stored)
        } else {
            0
        };
        let mut scanned = 0;
        while scanned < window {
            let from = (start + scanned) % stored;
            let chunk = (window - scanned).min(stored - from).min(256) as usize;
            let ids = self.store.outcome_ids_at(&self.function, from, chunk)?;
            if ids.is_empty() {
                break;
            }
            scanned += ids.len() as u64;
            for id in ids {
                if deleted.contains(&id) {
                    continue;
                }
                if let Some(outcome) = self.get(&id)?
                    && accepts(&outcome)
                {
                    accepted.push(outcome);
                }
            }
        }
        if accepted.is_empty() && stored > window {
            tracing::warn!(
                function = %self.function,
                outcomes = stored,
                scanned = window,
                "no outcome this call accepts among those sampled; add mock entries to choose from"
            );
        }
        Ok((!accepted.is_empty()).then(|| accepted.swap_remove(fastrand::usize(..accepted.len()))))
    }

    /// Up to `limit` outcomes, the most recently seen first, after the
    /// outcome `after`; `None` when `after` is not one of them.
    pub(crate) fn page(
        &self,
        after: Option<&OutcomeId>,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredOutcome>>>, ReadError> {
        let cursor = match after {
            None => None,
            Some(id) => match self.get(id)? {
                Some(outcome) => Some((outcome.last_seen_at().unix_millis(), *id)),
                None => return Ok(None),
            },
        };
        // Sorted like the store's time index: (last seen, id), descending.
        let below = |seen: u64, id: &OutcomeId| cursor.is_none_or(|c| (seen, *id) < c);
        let (live, hidden): (Vec<Arc<StoredOutcome>>, HashSet<OutcomeId>) = {
            let in_flight = self.in_flight();
            let mut live = Vec::new();
            let hidden: HashSet<OutcomeId> = in_flight.by_id.keys().copied().collect();
            for entry in in_flight.by_id.values() {
                if let Change::Live { outcome, .. } = &entry.change
                    && below(outcome.last_seen_at().unix_millis(), &outcome.id())
                {
                    live.push(outcome.clone());
                }
            }
            (live, hidden)
        };
        let from_store = match after {
            Some(id) if !hidden.contains(id) => {
                self.store
                    .outcomes_page(&self.function, Some(id), limit + hidden.len())?
            }
            // Internal: a cursor whose newest state is in flight is placed
            // by its in-flight time; the store is read from the top.
            _ => self
                .store
                .outcomes_page(&self.function, None, limit + hidden.len())?,
        };
        let Some(from_store) = from_store else {
            return Ok(None);
        };
        let mut out = live;
        for outcome in from_store {
            let seen = outcome.last_seen_at.unix_millis();
            if hidden.contains(&outcome.id) || !below(seen, &outcome.id) {
                continue;
            }
            let id = outcome.id;
            out.push(match self.cached_outcome(&id) {
                Some(cached) => cached,
                // Internal: listed, not cached, so its weight does not matter.
                None => Arc::new(StoredOutcome::not_sized(outcome)),
            });
        }
        out.sort_by(|a, b| {
            let key = |o: &StoredOutcome| (o.last_seen_at().unix_millis(), o.id());
            key(b).cmp(&key(a))
        });
        out.truncate(limit);
        Ok(Some(out))
    }

    /// Records the outcome `id`: a new one (made by `build`) is kept in
    /// flight until written; a known one is counted once more (`Repeat`),
    /// and written by the next flush unless the caller writes it now
    /// (`write_now`).
    pub(crate) fn record(
        &self,
        id: OutcomeId,
        write_now: bool,
        build: impl FnOnce() -> Outcome,
    ) -> Result<Recorded, ReadError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = self.get(&id)? {
            existing.bump();
            let mut in_flight = self.in_flight();
            let call_key = existing.outcome().call_key;
            let new = matches!(
                in_flight.by_id.get(&id),
                Some(Pending {
                    change: Change::Live { new: true, .. },
                    ..
                })
            );
            let generation = in_flight.put(
                id,
                call_key,
                Change::Live {
                    outcome: existing.clone(),
                    new,
                    dirty: !write_now,
                },
            );
            return Ok(Recorded::Repeat(
                existing,
                Ticket {
                    id,
                    call_key,
                    generation,
                    deletes: false,
                },
            ));
        }
        let outcome = build();
        let call_key = outcome.call_key;
        // Internal: it enters the cache when its write settles (on the
        // writer's side), so recording pays no sizing; until then the
        // in-flight entry serves it.
        let stored = Arc::new(StoredOutcome::not_sized(outcome));
        let generation = self.in_flight().put(
            id,
            call_key,
            Change::Live {
                outcome: stored.clone(),
                new: true,
                dirty: false,
            },
        );
        self.count.fetch_add(1, Ordering::AcqRel);
        Ok(Recorded::New(
            stored,
            Ticket {
                id,
                call_key,
                generation,
                deletes: false,
            },
        ))
    }

    /// Marks an outcome deleted until its delete is written; `None` when
    /// there is no such outcome.
    pub(crate) fn delete(&self, id: &OutcomeId) -> Result<Option<Ticket>, ReadError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(existing) = self.get(id)? else {
            return Ok(None);
        };
        self.cache.remove(&self.cache_key(id));
        let call_key = existing.outcome().call_key;
        let generation = self
            .in_flight()
            .put(*id, call_key, Change::Deleted { call_key });
        self.count.fetch_sub(1, Ordering::AcqRel);
        Ok(Some(Ticket {
            id: *id,
            call_key,
            generation,
            deletes: true,
        }))
    }

    /// The write of `ticket` finished with `result`: the store now answers
    /// for the outcome (or, if the write failed, still has what it had).
    pub(crate) fn settle(&self, ticket: &Ticket, result: &Result<(), WriteError>) {
        // Internal: a lagging mirror still means the index committed.
        let committed = matches!(result, Ok(()) | Err(WriteError::MirrorLagging { .. }));
        let mut in_flight = self.in_flight();
        if committed {
            // Internal: under the in-flight lock, so a reader that read the
            // key index before this commit cannot cache what it read.
            self.committed.fetch_add(1, Ordering::AcqRel);
            if let Some(key) = &ticket.call_key {
                self.cache.remove(&self.call_cache_key(key));
            }
            if ticket.deletes {
                self.cache.remove(&self.cache_key(&ticket.id));
            }
        }
        let current = in_flight
            .by_id
            .get(&ticket.id)
            .is_some_and(|p| p.generation == ticket.generation);
        if !current {
            // Internal: an earlier put of an outcome still in flight has
            // committed: the store has it now, so a later failure of the
            // newer write must not undo it as new.
            if committed
                && !ticket.deletes
                && let Some(Pending {
                    change: Change::Live { new, .. },
                    ..
                }) = in_flight.by_id.get_mut(&ticket.id)
            {
                *new = false;
            }
            return;
        }
        if let Some(Pending {
            change: Change::Live { dirty: true, .. },
            ..
        }) = in_flight.by_id.get(&ticket.id)
        {
            // Seen again while the write was on its way: the next flush
            // writes it, and it stays in flight until then.
            return;
        }
        let Some(pending) = in_flight.remove(&ticket.id) else {
            return;
        };
        drop(in_flight);
        if committed {
            if let Change::Live { outcome, .. } = pending.change {
                // Internal: sized here, before the cache sees it.
                outcome.weight();
                self.cache
                    .insert(self.cache_key(&ticket.id), Hot::Outcome(outcome));
            }
            return;
        }
        match pending.change {
            Change::Live { new: true, .. } => {
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
            Change::Live { .. } => {}
            Change::Deleted { .. } => {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The outcomes seen again since their last write, marked clean, each
    /// with the ticket its write settles.
    pub(crate) fn take_dirty(&self) -> Vec<(Outcome, Ticket)> {
        let mut in_flight = self.in_flight();
        let mut out = Vec::new();
        let InFlight { by_id, next, .. } = &mut *in_flight;
        for (id, pending) in by_id.iter_mut() {
            if let Change::Live { outcome, dirty, .. } = &mut pending.change
                && *dirty
            {
                *dirty = false;
                *next += 1;
                pending.generation = *next;
                out.push((
                    outcome.snapshot(),
                    Ticket {
                        id: *id,
                        call_key: outcome.outcome().call_key,
                        generation: pending.generation,
                        deletes: false,
                    },
                ));
            }
        }
        out
    }

    /// Retires the cached outcomes after a rebuild re-read the function
    /// into the store, which now holds `stored` outcomes. Changes still in
    /// flight stay: their writes come after the rebuild.
    pub(crate) fn reload(&self, stored: u64) {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let in_flight = self.in_flight();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let (mut added, mut removed) = (0u64, 0u64);
        for pending in in_flight.by_id.values() {
            match pending.change {
                Change::Live { new: true, .. } => added += 1,
                Change::Live { .. } => {}
                Change::Deleted { .. } => removed += 1,
            }
        }
        self.count
            .store((stored + added).saturating_sub(removed), Ordering::Release);
    }
}
