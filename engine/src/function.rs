//! One function in memory: its settings, outcomes, counters and recent calls,
//! and the verbs that read and change them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cacheow_storage::{
    CallKey, Function, FunctionId, MockEntry, Mode, Outcome, OutcomeId, Stats, Timestamp, Write,
    WriteError, Writer,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::codec::{CodecError, OutcomeCodec, Preview};
use crate::counters::Counters;
use crate::decide::{
    self, AnyOutcome, Decision, Guard, Guards, Inspection, Overrides, Refusal, ReplayFilter, Source,
};
use crate::engine::Shared;
use crate::error::EngineError;
use crate::flights::Flights;
use crate::limits::{Breaker, Spending};
use crate::outcome::{NewOutcome, StoredOutcome};
use crate::outcomes::{Outcomes, Recorded, Ticket};
use crate::park::park_until;
use crate::policy::Policy;

/// How many recent calls each function remembers.
const RECENT_CALLS: usize = 50;

/// One call as shown in the panel.
#[derive(Debug, Clone, Serialize)]
pub struct RecentCall {
    /// When it started.
    pub at: Timestamp,
    /// Its call key.
    pub call_key: Option<CallKey>,
    /// Where the reply came from.
    pub source: Source,
    /// The outcome served or recorded, if any.
    pub outcome_id: Option<OutcomeId>,
    /// How long it took, latency included.
    pub duration_ms: f64,
    /// A numeric result code (for HTTP: the status).
    pub status: Option<u16>,
    /// The error kind, when the call failed.
    pub error: Option<String>,
    /// Why nothing was recorded, for a real call that left no outcome.
    pub unrecorded: Option<Unrecorded>,
}

/// Why a real call left no recorded outcome. Each reason is counted in the
/// function's `stats.unrecorded`, shown in its recent calls and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unrecorded {
    /// The caller went away before the result was complete, and the rest
    /// of it could not be read in time.
    ClientGone,
    /// The result was over the size cap; it was passed on, not kept.
    Oversize,
    /// The arguments (request body) were over the size cap, so the call has
    /// no key to record it under.
    RequestOversize,
    /// The result could not be serialized.
    NotSerializable,
    /// The upstream led back to cacheow itself, which refused the request
    /// as a loop; the refusal was passed on, not kept.
    Loop,
    /// The caller asked for nothing to be kept (`Cache-Control: no-store`).
    NoStore,
    /// The caller asked to go straight through (`x-cacheow-mode: bypass`).
    Bypass,
    /// A refresh of a stale outcome failed; the stale outcome stays the
    /// answer rather than the failure.
    RefreshFailed,
}

impl Unrecorded {
    /// Every reason.
    pub const ALL: [Unrecorded; 8] = [
        Unrecorded::ClientGone,
        Unrecorded::Oversize,
        Unrecorded::RequestOversize,
        Unrecorded::NotSerializable,
        Unrecorded::Loop,
        Unrecorded::NoStore,
        Unrecorded::Bypass,
        Unrecorded::RefreshFailed,
    ];

    /// The name used in stats, recent calls and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unrecorded::ClientGone => "client_gone",
            Unrecorded::Oversize => "oversize",
            Unrecorded::RequestOversize => "request_oversize",
            Unrecorded::NotSerializable => "not_serializable",
            Unrecorded::Loop => "loop",
            Unrecorded::NoStore => "no_store",
            Unrecorded::Bypass => "bypass",
            Unrecorded::RefreshFailed => "refresh_failed",
        }
    }
}

pub(crate) struct FunctionState {
    meta: RwLock<Function>,
    /// The cache policy read from `meta.config`; `None` until first asked
    /// for after a change.
    policy: RwLock<Option<Arc<Policy>>>,
    outcomes: Outcomes,
    counters: Counters,
    stats_dirty: AtomicBool,
    recent: Mutex<VecDeque<RecentCall>>,
    flights: Arc<Flights>,
    spending: Spending,
    breaker: Breaker,
}

impl FunctionState {
    pub(crate) fn new(function: Function, stats: Stats, outcomes: Outcomes) -> Self {
        Self {
            meta: RwLock::new(function),
            policy: RwLock::new(None),
            outcomes,
            counters: Counters::from_stats(stats),
            stats_dirty: AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
            flights: Arc::default(),
            spending: Spending::default(),
            breaker: Breaker::default(),
        }
    }

    /// Replaces settings with what the store holds now (after a rebuild)
    /// and forgets the outcomes held in memory; counters and recent calls
    /// stay.
    pub(crate) fn reload(&self, function: Function, outcome_count: u64) {
        *write(&self.meta) = function;
        *write(&self.policy) = None;
        self.outcomes.reload(outcome_count);
    }

    /// Sends the writes that bring the store up to date with counters and
    /// outcome counts changed in memory.
    pub(crate) fn flush_dirty(self: &Arc<Self>, writer: &Writer) {
        if self.stats_dirty.swap(false, Ordering::AcqRel) {
            let id = read(&self.meta).id;
            writer.submit(Write::PutStats(id, self.counters.snapshot()));
        }
        for (outcome, ticket) in self.outcomes.take_dirty() {
            let state = self.clone();
            writer.submit_with_ack(
                Write::PutOutcome(outcome),
                Box::new(move |result| state.outcomes.settle(&ticket, &result)),
            );
        }
    }

    pub(crate) fn note_persist_failure(&self) {
        self.counters.persist_failed();
        self.stats_dirty.store(true, Ordering::Release);
    }
}

// Internal: a poisoned lock only means another call panicked mid-update;
// the data is still the best we have, and a dev proxy must keep serving.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the caller reports once a call is over.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The call key.
    pub call_key: Option<CallKey>,
    /// Where the reply came from.
    pub source: Source,
    /// True when cache mode had nothing for the call (it then went
    /// upstream, or fell back to the real function).
    pub cache_miss: bool,
    /// The outcome served or recorded.
    pub outcome_id: Option<OutcomeId>,
    /// Wall time of the whole call.
    pub elapsed: Duration,
    /// Result code (HTTP status).
    pub status: Option<u16>,
    /// Error kind if the call failed.
    pub error: Option<String>,
    /// Why a real call left no outcome, if it did not.
    pub unrecorded: Option<Unrecorded>,
    /// A guard that stopped the call (or that a stale reply stood in for).
    pub guard: Option<Guard>,
    /// A background refresh (`stale_while_revalidate`), not a caller's call.
    pub refresh: bool,
    /// The upstream was called and failed, and a stale outcome answered
    /// (`stale_if_error`): counted as an upstream call too.
    pub upstream_failed: bool,
}

impl Finished {
    /// A call from `source` with nothing else to say yet.
    pub fn of(call_key: Option<CallKey>, source: Source, elapsed: Duration) -> Self {
        Finished {
            call_key,
            source,
            cache_miss: false,
            outcome_id: None,
            elapsed,
            status: None,
            error: None,
            unrecorded: None,
            guard: None,
            refresh: false,
            upstream_failed: false,
        }
    }
}

/// A recorded outcome on its way to disk.
#[derive(Debug)]
pub struct Recording {
    /// The outcome's id.
    pub outcome_id: OutcomeId,
    /// True when the outcome is new (not a repeat that only counts).
    pub is_new: bool,
    ack: Option<oneshot::Receiver<Result<(), WriteError>>>,
}

impl Recording {
    /// Waits until the outcome is durable when the engine runs in durable
    /// mode; returns at once otherwise.
    pub async fn persisted(self) -> Result<(), WriteError> {
        match self.ack {
            Some(rx) => rx.await.unwrap_or(Err(WriteError::WriterGone)),
            None => Ok(()),
        }
    }

    /// `persisted` for a sync caller, blocking its thread; unlike tokio's
    /// `blocking_recv` this is allowed inside a runtime (a sync function
    /// called from async code blocks its thread anyway).
    pub fn persisted_blocking(self) -> Result<(), WriteError> {
        match self.ack {
            Some(rx) => park_until(rx, None)
                .and_then(Result::ok)
                .unwrap_or(Err(WriteError::WriterGone)),
            None => Ok(()),
        }
    }
}

/// A handle to one function. Cheap to clone.
#[derive(Clone)]
pub struct FunctionHandle {
    pub(crate) state: Arc<FunctionState>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for FunctionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHandle")
            .field("id", &self.id())
            .finish()
    }
}

// === impl FunctionHandle ===

impl FunctionHandle {
    /// The function's id.
    pub fn id(&self) -> FunctionId {
        read(&self.state.meta).id
    }

    /// A copy of the function's settings.
    pub fn snapshot(&self) -> Function {
        read(&self.state.meta).clone()
    }

    /// Runs `f` on the function's settings without copying them (`f` must
    /// not call back into this function's settings).
    pub fn with_settings<R>(&self, f: impl FnOnce(&Function) -> R) -> R {
        f(&read(&self.state.meta))
    }

    /// The function's name.
    pub fn name(&self) -> String {
        read(&self.state.meta).name.clone()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        read(&self.state.meta).mode
    }

    /// Decides how to serve a call with this key (counted once it finishes).
    pub fn decide(&self, key: &CallKey) -> Result<Decision, Refusal> {
        self.decide_with(Some(key), &AnyOutcome, Overrides::default())
    }

    /// `decide` for a call that may have no key (its arguments were over the
    /// size cap), whose layer narrows which outcomes may answer it, and
    /// whose caller asked for `overrides`.
    pub fn decide_with(
        &self,
        key: Option<&CallKey>,
        filter: &dyn ReplayFilter,
        overrides: Overrides,
    ) -> Result<Decision, Refusal> {
        self.with_call(key, filter, overrides, decide::decide)
    }

    /// What a call with this key would get now, without making it: no
    /// flight joined, no budget spent, nothing counted.
    pub fn inspect(&self, key: &CallKey, filter: &dyn ReplayFilter) -> Inspection {
        self.with_call(Some(key), filter, Overrides::default(), |call| {
            call.inspect()
        })
    }

    fn with_call<R>(
        &self,
        key: Option<&CallKey>,
        filter: &dyn ReplayFilter,
        overrides: Overrides,
        f: impl FnOnce(decide::Call<'_>) -> R,
    ) -> R {
        let policy = self.policy();
        let codec = self.codec();
        let global = self.shared.global_budget();
        let meta = read(&self.state.meta);
        f(decide::Call {
            function: meta.id,
            mode: meta.mode,
            latency: (meta.latency_ms, meta.latency_jitter_ms),
            mock_entries: &meta.mock_entries,
            outcomes: &self.state.outcomes,
            key,
            filter,
            policy: &policy,
            codec: &*codec,
            guards: Guards {
                flights: &self.state.flights,
                spending: &self.state.spending,
                breaker: &self.state.breaker,
                global,
            },
            overrides,
        })
    }

    /// The function's cache policy, as its config sets it.
    pub fn policy(&self) -> Arc<Policy> {
        if let Some(policy) = read(&self.state.policy).as_ref() {
            return policy.clone();
        }
        let codec = self.codec();
        // Internal: stored while the settings are read-locked, so a change
        // (which clears the policy under the write lock) cannot be undone
        // by a policy computed from the settings before it.
        let meta = read(&self.state.meta);
        let (policy, invalid) =
            Policy::from_config(&meta.config, Policy::defaults(codec.default_cache_if()));
        for reason in invalid {
            tracing::warn!(function = %meta.id, %reason, "ignoring an invalid setting in the function's config; fix it through the API or in function.json");
        }
        let policy = Arc::new(policy);
        *write(&self.state.policy) = Some(policy.clone());
        policy
    }

    /// Notes whether an upstream call failed (a transport failure, or a
    /// result the policy's `error_statuses` names), for the circuit breaker.
    pub fn note_upstream(&self, failed: bool) {
        if let Some(settings) = &self.policy().circuit_breaker
            && self.state.breaker.note(settings, failed)
        {
            tracing::warn!(function = %self.id(), failures = settings.failures, open_for = ?settings.open_for, "circuit breaker opened: calls will not go upstream for a while");
        }
    }

    /// The guards that would keep a call from the upstream right now: the
    /// function's budget spent, its circuit open (the global budget is the
    /// engine's, not the function's).
    pub fn tripped_guards(&self) -> Vec<Guard> {
        let policy = self.policy();
        let mut tripped = Vec::new();
        if let Some(budget) = &policy.max_upstream_calls
            && !self.state.spending.has_room(budget)
        {
            tripped.push(Guard::BudgetExceeded);
        }
        if policy.circuit_breaker.is_some() && self.state.breaker.open_for().is_some() {
            tripped.push(Guard::CircuitOpen);
        }
        tripped
    }

    /// True when a result with this status counts as an upstream failure.
    pub fn is_error_status(&self, status: u16) -> bool {
        self.policy().error_statuses.contains(status)
    }

    /// Counts a finished call (the only place calls are counted) and
    /// remembers it among the recent ones.
    pub fn finish(&self, call: Finished) {
        self.state.counters.count(&call);
        if let Some(reason) = call.unrecorded {
            if matches!(
                reason,
                Unrecorded::NoStore | Unrecorded::Bypass | Unrecorded::RefreshFailed
            ) {
                tracing::debug!(function = %self.id(), reason = reason.as_str(), "call not recorded, as the caller asked");
            } else {
                tracing::warn!(function = %self.id(), reason = reason.as_str(), "call not recorded");
            }
        }
        self.state.stats_dirty.store(true, Ordering::Release);
        let entry = RecentCall {
            at: Timestamp::now(),
            call_key: call.call_key,
            source: call.source,
            outcome_id: call.outcome_id,
            duration_ms: call.elapsed.as_secs_f64() * 1000.0,
            status: call.status,
            error: call.error,
            unrecorded: call.unrecorded,
        };
        let mut recent = lock(&self.state.recent);
        if recent.len() == RECENT_CALLS {
            recent.pop_back();
        }
        recent.push_front(entry);
    }

    /// Records what the real call produced. Identical outcomes (same key and
    /// fingerprint) are stored once, with a count.
    pub fn record(&self, key: Option<CallKey>, new: NewOutcome) -> Recording {
        let fingerprint = new.fingerprint_bytes();
        self.record_with(key, &fingerprint, move || new)
    }

    /// Like `record`, but the `Recording` can always be waited on until the
    /// outcome (or a repeat's count) is stored, durable mode or not: for a
    /// caller that must not return before its result is on disk, yet must
    /// not block a thread flushing everything (an async function).
    pub fn record_awaitable(&self, key: Option<CallKey>, new: NewOutcome) -> Recording {
        let fingerprint = new.fingerprint_bytes();
        self.record_inner(key, &fingerprint, move || new, true)
    }

    /// Like `record`, but builds the outcome only when it is new: a repeat
    /// of a known outcome just counts, which keeps recording cheap when an
    /// upstream answers the same thing again and again.
    pub fn record_with(
        &self,
        key: Option<CallKey>,
        fingerprint: &[u8],
        build: impl FnOnce() -> NewOutcome,
    ) -> Recording {
        self.record_inner(key, fingerprint, build, false)
    }

    fn record_inner(
        &self,
        key: Option<CallKey>,
        fingerprint: &[u8],
        build: impl FnOnce() -> NewOutcome,
        awaitable: bool,
    ) -> Recording {
        let id = OutcomeId::for_content(key.as_ref(), fingerprint);
        let function_id = self.id();
        let write_now = awaitable || self.shared.options.durable;
        let recorded = self.state.outcomes.record(id, write_now, || {
            let new = build();
            let now = Timestamp::now();
            Outcome {
                id,
                function_id,
                call_key: key,
                outcome_type: new.outcome_type,
                value: new.value,
                exception_type: new.exception_type,
                exception_message: new.exception_message,
                duration_ms: new.duration_ms,
                count: 1,
                is_manual: new.is_manual,
                is_mock_only: new.is_mock_only,
                created_at: now,
                last_seen_at: now,
                request: new.request,
            }
        });
        let (stored, ticket, is_new) = match recorded {
            Ok(Recorded::New(stored, ticket)) => {
                stored.preview(&*self.codec());
                (stored, ticket, true)
            }
            Ok(Recorded::Repeat(stored, ticket)) => (stored, ticket, false),
            Err(e) => {
                tracing::error!(function = %function_id, error = %e, "cannot read the store to record an outcome; it was not recorded");
                self.state.note_persist_failure();
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(WriteError::Unavailable {
                    reason: e.to_string(),
                }));
                return Recording {
                    outcome_id: id,
                    is_new: false,
                    ack: write_now.then_some(rx),
                };
            }
        };
        let ack = if write_now {
            Some(self.persist_settled(Write::PutOutcome(stored.snapshot()), ticket))
        } else {
            if is_new {
                self.submit_settled(Write::PutOutcome(stored.snapshot()), ticket);
            }
            // Internal: a repeat's count is written with the stats, off the
            // request path.
            None
        };
        Recording {
            outcome_id: id,
            is_new,
            ack,
        }
    }

    /// Adds a manual outcome (from the API or panel), once the kind's
    /// codec has checked it and put it in stored form.
    pub fn add_manual(
        &self,
        key: Option<CallKey>,
        new: NewOutcome,
    ) -> Result<Recording, CodecError> {
        let mut new = self.codec().normalise(&self.snapshot(), new)?;
        new.is_manual = true;
        Ok(self.record(key, new))
    }

    /// The codec of this function's kind.
    pub fn codec(&self) -> Arc<dyn OutcomeCodec> {
        self.shared.codec(read(&self.state.meta).kind)
    }

    /// The list summary of one of this function's outcomes.
    pub fn preview<'a>(&self, outcome: &'a StoredOutcome) -> &'a Preview {
        outcome.preview(&*self.codec())
    }

    /// One stored outcome.
    pub fn outcome(&self, id: &OutcomeId) -> Result<Option<Arc<StoredOutcome>>, EngineError> {
        Ok(self.state.outcomes.get(id)?)
    }

    /// Up to `limit` stored outcomes, the most recently seen first, after
    /// the outcome `after` (from the start when `None`); `None` when
    /// `after` names no outcome of this function.
    pub fn outcomes_page(
        &self,
        after: Option<&OutcomeId>,
        limit: usize,
    ) -> Result<Option<Vec<Arc<StoredOutcome>>>, EngineError> {
        Ok(self.state.outcomes.page(after, limit)?)
    }

    /// How many outcomes are stored.
    pub fn outcome_count(&self) -> usize {
        usize::try_from(self.state.outcomes.count()).unwrap_or(usize::MAX)
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// The recent calls, newest first.
    pub fn recent_calls(&self) -> Vec<RecentCall> {
        lock(&self.state.recent).iter().cloned().collect()
    }

    /// Sets the mode.
    pub fn set_mode(&self, mode: Mode) {
        self.update(|f| f.mode = mode);
    }

    /// Sets the latency added in cache and mock modes: `latency_ms` plus a
    /// uniform random extra of up to `jitter_ms`.
    pub fn set_latency(&self, latency_ms: u64, jitter_ms: u64) {
        self.update(|f| {
            f.latency_ms = latency_ms;
            f.latency_jitter_ms = jitter_ms;
        });
    }

    /// Replaces the mock entries. Every entry must name a stored outcome and
    /// carry a finite weight ≥ 0, and the weights' sum must be finite.
    pub fn set_mock_entries(&self, entries: Vec<MockEntry>) -> Result<(), EngineError> {
        {
            for (i, entry) in entries.iter().enumerate() {
                if !entry.weight.is_finite() || entry.weight < 0.0 {
                    return Err(EngineError::Invalid {
                        field: format!("entries[{i}].weight"),
                        message: format!("must be a number ≥ 0, got {}", entry.weight),
                    });
                }
                if self.state.outcomes.get(&entry.outcome_id)?.is_none() {
                    return Err(EngineError::Invalid {
                        field: format!("entries[{i}].outcome_id"),
                        message: format!(
                            "function {} has no outcome {}",
                            self.id(),
                            entry.outcome_id
                        ),
                    });
                }
            }
        }
        let total: f64 = entries.iter().map(|e| e.weight).sum();
        if !total.is_finite() {
            return Err(EngineError::Invalid {
                field: "entries".into(),
                message: format!(
                    "the weights add up to {total}; use smaller numbers (only their ratios matter)"
                ),
            });
        }
        self.update(|f| f.mock_entries = entries);
        Ok(())
    }

    /// One setting of the function's config.
    pub fn setting(&self, key: &str) -> Option<Value> {
        read(&self.state.meta).config.get(key).cloned()
    }

    /// True if any of `settings` differs from the function's config.
    pub(crate) fn config_differs(&self, settings: &Map<String, Value>) -> bool {
        let meta = read(&self.state.meta);
        settings.iter().any(|(k, v)| meta.config.get(k) != Some(v))
    }

    /// Merges settings into the function's config; a `null` value removes a
    /// key.
    pub fn merge_config(&self, settings: Map<String, Value>) {
        self.update(|f| {
            for (key, value) in settings {
                if value.is_null() {
                    f.config.shift_remove(&key);
                } else {
                    f.config.insert(key, value);
                }
            }
        });
    }

    /// Deletes an outcome and any mock entry that points at it.
    pub fn delete_outcome(&self, id: &OutcomeId) -> Result<(), EngineError> {
        let function = self.id();
        let Some(ticket) = self.state.outcomes.delete(id)? else {
            return Err(EngineError::UnknownOutcome {
                function,
                outcome: *id,
            });
        };
        let delete = Write::DeleteOutcome {
            function,
            outcome: *id,
        };
        if self.shared.options.durable {
            // Internal: the API answers at once; durable mode only makes
            // the write itself wait for the disk.
            drop(self.persist_settled(delete, ticket));
        } else {
            self.submit_settled(delete, ticket);
        }
        let had_entry = read(&self.state.meta)
            .mock_entries
            .iter()
            .any(|e| e.outcome_id == *id);
        if had_entry {
            self.update(|f| f.mock_entries.retain(|e| e.outcome_id != *id));
        }
        Ok(())
    }

    /// Applies a settings change and persists the function.
    fn update(&self, change: impl FnOnce(&mut Function)) {
        let snapshot = {
            let mut meta = write(&self.state.meta);
            change(&mut meta);
            *write(&self.state.policy) = None;
            meta.clone()
        };
        self.shared.writer.submit(Write::PutFunction(snapshot));
    }

    /// Sends an outcome change; its ticket is settled when the write is.
    fn submit_settled(&self, write: Write, ticket: Ticket) {
        let state = self.state.clone();
        self.shared.writer.submit_with_ack(
            write,
            Box::new(move |result| state.outcomes.settle(&ticket, &result)),
        );
    }

    /// `submit_settled`, and a receiver of the write's result.
    fn persist_settled(
        &self,
        write: Write,
        ticket: Ticket,
    ) -> oneshot::Receiver<Result<(), WriteError>> {
        let (tx, rx) = oneshot::channel();
        let state = self.state.clone();
        self.shared.writer.submit_with_ack(
            write,
            Box::new(move |result| {
                state.outcomes.settle(&ticket, &result);
                let _ = tx.send(result);
            }),
        );
        rx
    }
}
