//! The mode decision: the one place that matches on `Mode`.

use std::sync::Arc;
use std::time::Duration;

use cacheow_storage::{CallKey, FunctionId, MockEntry, Mode, OutcomeId};
use serde::Serialize;

use crate::codec::OutcomeCodec;
use crate::error::NoMockOutcome;
use crate::flights::{Flights, Follow, Joined, Lead};
use crate::function::Unrecorded;
use crate::limits::{Breaker, Spending};
use crate::outcome::StoredOutcome;
use crate::outcomes::Outcomes;
use crate::policy::{Budget, Freshness, Policy};

/// Where a reply came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The real upstream (or function body).
    Upstream,
    /// A recorded outcome with the same call key.
    Cache,
    /// A mock choice.
    Mock,
    /// A recorded outcome past its ttl: served while it is refreshed, or
    /// because the upstream failed.
    Stale,
    /// The outcome an identical call in flight recorded.
    Coalesced,
}

impl Source {
    /// The lowercase name used in headers and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Cache => "cache",
            Source::Mock => "mock",
            Source::Stale => "stale",
            Source::Coalesced => "coalesced",
        }
    }
}

/// Why the real thing is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallReason {
    /// Default mode always calls.
    Default,
    /// Cache mode had nothing for this key.
    CacheMiss,
    /// Cache mode had only outcomes past their ttl.
    Expired,
    /// The caller asked for a fresh answer (`Cache-Control: no-cache`).
    Refresh,
    /// The caller asked to go straight through (`x-cacheow-mode: bypass`).
    Bypass,
}

impl CallReason {
    /// True when cache mode looked for an outcome and had none to replay.
    pub fn is_cache_miss(self) -> bool {
        matches!(self, CallReason::CacheMiss | CallReason::Expired)
    }
}

/// A guard in front of the upstream that stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// The function's (or the global) `max_upstream_calls` is spent.
    BudgetExceeded,
    /// The circuit breaker is open.
    CircuitOpen,
}

impl Guard {
    /// The error code clients read.
    pub fn code(self) -> &'static str {
        match self {
            Guard::BudgetExceeded => "budget_exceeded",
            Guard::CircuitOpen => "circuit_open",
        }
    }
}

/// What a caller asked of one call, beyond its arguments (HTTP: request
/// headers; the library: a scope).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Serve this call in this mode instead of the function's.
    pub mode: Option<Mode>,
    /// Straight through: call, record nothing, replay nothing.
    pub bypass: bool,
    /// Call even when a fresh outcome is stored, and record the answer.
    pub refresh: bool,
    /// Record nothing this call produces.
    pub no_store: bool,
    /// Replay or refuse; never call.
    pub only_if_cached: bool,
    /// Do not wait for an identical call in flight (set when a wait gave up).
    pub alone: bool,
}

/// What to do with one call.
#[derive(Debug)]
pub enum Decision {
    /// Call the real thing, then `record` what it produced.
    Call {
        /// Why.
        reason: CallReason,
        /// Why nothing this call produces is to be recorded (the caller
        /// asked: no-store, bypass); `None` records it.
        unrecorded: Option<Unrecorded>,
        /// A stored outcome that may answer instead if the call fails
        /// (`stale_if_error`).
        fallback: Option<Arc<StoredOutcome>>,
        /// Identical calls wait for this one: land it once recorded.
        lead: Option<Lead>,
    },
    /// Serve a stored outcome after waiting `delay`.
    Replay {
        /// The outcome.
        outcome: Arc<StoredOutcome>,
        /// Cache, mock or stale.
        source: Source,
        /// The function's latency.
        delay: Duration,
        /// Since the outcome was last recorded.
        age: Duration,
        /// A stale replay's refresh, for the caller to make in the
        /// background (`stale_while_revalidate`); at most one per key.
        refresh: Option<Lead>,
        /// The guard a stale replay stands in for.
        guard: Option<Guard>,
    },
    /// An identical call is on its way upstream: wait for it, then replay
    /// what it recorded (or call alone if it recorded nothing).
    Follow {
        /// The flight to wait for.
        flight: Follow,
        /// What may answer if the flight's outcome is a failure.
        fallback: Option<Arc<StoredOutcome>>,
    },
}

/// What a call would get now, found without making it: no flight joined,
/// no budget spent, nothing counted (`POST /api/lookup`).
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The mode the call would be served in.
    pub mode: Mode,
    /// `replay`, `replay_stale` (within stale_while_revalidate), `call`
    /// (upstream), `mock` or `refuse` (mock mode with nothing to replay).
    pub would: &'static str,
    /// The newest outcome cache mode could replay for this call, if any.
    pub outcome_id: Option<OutcomeId>,
    /// Since that outcome was last recorded, in milliseconds.
    pub age_ms: Option<u64>,
    /// `fresh`, `revalidate` or `stale` (past its ttl, or invalidated).
    pub freshness: Option<&'static str>,
}

/// Why a call is neither served nor made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Mock mode has nothing to replay.
    #[error(transparent)]
    NoMockOutcome(#[from] NoMockOutcome),
    /// `only-if-cached`, and nothing fresh is stored.
    #[error(
        "function {function} has no fresh outcome for this call, and the request asked for a stored one only (Cache-Control: only-if-cached); record it first"
    )]
    NotCached {
        /// The function.
        function: FunctionId,
    },
    /// A guard stopped the call before the upstream.
    #[error("{}", guard_message(*function, *guard, *retry_after))]
    Guarded {
        /// The function.
        function: FunctionId,
        /// Which guard.
        guard: Guard,
        /// When the call could go through again.
        retry_after: Duration,
    },
}

impl Refusal {
    /// The error code clients read.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoMockOutcome(_) => "no_mock_outcome",
            Refusal::NotCached { .. } => "not_cached",
            Refusal::Guarded { guard, .. } => guard.code(),
        }
    }

    /// The source a refused call is counted under.
    pub fn source(&self) -> Source {
        match self {
            Refusal::NoMockOutcome(_) => Source::Mock,
            Refusal::NotCached { .. } => Source::Cache,
            Refusal::Guarded { .. } => Source::Upstream,
        }
    }

    /// The guard that refused, if one did.
    pub fn guard(&self) -> Option<Guard> {
        match self {
            Refusal::Guarded { guard, .. } => Some(*guard),
            _ => None,
        }
    }
}

fn guard_message(function: FunctionId, guard: Guard, retry_after: Duration) -> String {
    let seconds = retry_after.as_secs().max(1);
    match guard {
        Guard::BudgetExceeded => format!(
            "function {function} has spent its upstream budget (max_upstream_calls); this call was not sent upstream. Calls free up in {seconds} s; raise the budget or replay in cache mode"
        ),
        Guard::CircuitOpen => format!(
            "the circuit breaker of function {function} is open after repeated upstream failures; this call was not sent upstream. It closes in {seconds} s"
        ),
    }
}

/// Which stored outcomes one call may be served, beyond its call key. The
/// layer that knows the kind of call says: HTTP checks `Vary`, conditional
/// requests and connect failures; plain functions accept everything.
pub trait ReplayFilter {
    /// True if `outcome` may answer this call as a `source` (cache or mock)
    /// replay.
    fn accepts(&self, outcome: &StoredOutcome, source: Source) -> bool;
}

/// Accepts every outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyOutcome;

impl ReplayFilter for AnyOutcome {
    fn accepts(&self, _: &StoredOutcome, _: Source) -> bool {
        true
    }
}

/// The guards in front of a function's upstream.
pub(crate) struct Guards<'a> {
    pub(crate) flights: &'a Arc<Flights>,
    pub(crate) spending: &'a Spending,
    pub(crate) breaker: &'a Breaker,
    /// The engine-wide budget, if one is set.
    pub(crate) global: Option<(&'a Spending, &'a Budget)>,
}

/// The inputs of one decision.
pub(crate) struct Call<'a> {
    pub(crate) function: FunctionId,
    pub(crate) mode: Mode,
    pub(crate) latency: (u64, u64),
    pub(crate) mock_entries: &'a [MockEntry],
    pub(crate) outcomes: &'a Outcomes,
    /// `None` when the call has no key (its arguments were too large to
    /// read): only mock entries that ignore arguments can answer it.
    pub(crate) key: Option<&'a CallKey>,
    pub(crate) filter: &'a dyn ReplayFilter,
    pub(crate) policy: &'a Policy,
    pub(crate) codec: &'a dyn OutcomeCodec,
    pub(crate) guards: Guards<'a>,
    pub(crate) overrides: Overrides,
}

pub(crate) fn decide(call: Call<'_>) -> Result<Decision, Refusal> {
    let (fixed_ms, jitter_ms) = call.latency;
    let jitter = if jitter_ms == 0 {
        0
    } else {
        fastrand::u64(0..=jitter_ms)
    };
    let delay = Duration::from_millis(fixed_ms.saturating_add(jitter));
    let overrides = call.overrides;
    if overrides.bypass {
        return call.upstream(CallReason::Bypass, None, false);
    }
    let mode = overrides.mode.unwrap_or(call.mode);
    match mode {
        Mode::Mock => choose_mock(&call)
            .map(|outcome| Decision::Replay {
                age: outcome.age(),
                outcome,
                source: Source::Mock,
                delay,
                refresh: None,
                guard: None,
            })
            .ok_or_else(|| {
                Refusal::NoMockOutcome(NoMockOutcome {
                    function: call.function,
                    keyless: call.key.is_none(),
                })
            }),
        Mode::Default if !overrides.only_if_cached => {
            let fallback = match call.policy.stale_if_error {
                Some(_) => call
                    .newest(true)
                    .filter(|o| call.policy.serves_stale_on_error(o.age())),
                None => None,
            };
            call.upstream(CallReason::Default, fallback, false)
        }
        Mode::Default | Mode::Cache => {
            // Internal: with stale_if_error the user has said which answers
            // are failures to hide; one recorded while hiding it must not
            // come back as a fresh replay.
            let newest = call.newest(call.policy.stale_if_error.is_some());
            let Some(outcome) = newest else {
                if overrides.only_if_cached {
                    return Err(Refusal::NotCached {
                        function: call.function,
                    });
                }
                let reason = if overrides.refresh {
                    CallReason::Refresh
                } else {
                    CallReason::CacheMiss
                };
                return call.upstream(reason, None, !overrides.refresh);
            };
            let age = outcome.age();
            let fallback = call
                .policy
                .serves_stale_on_error(age)
                .then(|| outcome.clone());
            if overrides.refresh && !overrides.only_if_cached {
                return call.upstream(CallReason::Refresh, fallback, false);
            }
            let invalidated = call
                .policy
                .invalidated(call.key, outcome.last_seen_at().unix_millis());
            let freshness = if invalidated {
                Freshness::Stale
            } else {
                call.policy.freshness(age)
            };
            let (source, refresh) = match freshness {
                Freshness::Fresh => (Source::Cache, None),
                Freshness::Revalidate => (Source::Stale, call.claim_refresh()),
                Freshness::Stale if overrides.only_if_cached => {
                    return Err(Refusal::NotCached {
                        function: call.function,
                    });
                }
                Freshness::Stale => return call.upstream(CallReason::Expired, fallback, true),
            };
            Ok(Decision::Replay {
                outcome,
                source,
                delay,
                age,
                refresh,
                guard: None,
            })
        }
    }
}

impl Call<'_> {
    /// What this call would get (see [`Inspection`]).
    pub(crate) fn inspect(&self) -> Inspection {
        let mode = self.overrides.mode.unwrap_or(self.mode);
        let newest = self.newest(self.policy.stale_if_error.is_some());
        let freshness = newest.as_ref().map(|o| {
            let invalidated = self
                .policy
                .invalidated(self.key, o.last_seen_at().unix_millis());
            if invalidated {
                Freshness::Stale
            } else {
                self.policy.freshness(o.age())
            }
        });
        let would = match (mode, freshness) {
            (Mode::Mock, _) if choose_mock(self).is_some() => "mock",
            (Mode::Mock, _) => "refuse",
            (Mode::Cache, Some(Freshness::Fresh)) => "replay",
            (Mode::Cache, Some(Freshness::Revalidate)) => "replay_stale",
            _ => "call",
        };
        Inspection {
            mode,
            would,
            outcome_id: newest.as_ref().map(|o| o.id()),
            age_ms: newest
                .as_ref()
                .map(|o| u64::try_from(o.age().as_millis()).unwrap_or(u64::MAX)),
            freshness: freshness.map(|f| match f {
                Freshness::Fresh => "fresh",
                Freshness::Revalidate => "revalidate",
                Freshness::Stale => "stale",
            }),
        }
    }

    /// The newest outcome cache mode may replay for this call, fresh or
    /// not; with `good_only`, the newest that is no upstream failure (by
    /// `error_statuses`) too.
    fn newest(&self, good_only: bool) -> Option<Arc<StoredOutcome>> {
        let key = self.key?;
        readable(self.function, self.outcomes.for_key_newest_first(key))?
            .filter_map(|read| readable(self.function, read))
            .find(|o| {
                let outcome = o.outcome();
                let failed = self.codec.failed(outcome);
                // Internal: the status is read out of the stored value only
                // when a setting asks for it, keeping the default replay
                // path free of JSON work.
                let status = (good_only || self.policy.cache_if.reads_status())
                    .then(|| self.codec.status(outcome))
                    .flatten();
                let bad = failed || status.is_some_and(|s| self.policy.error_statuses.contains(s));
                let unwanted = outcome.is_mock_only || (good_only && bad);
                !unwanted
                    && self.policy.cache_if.accepts(failed, status)
                    && self.filter.accepts(o, Source::Cache)
            })
    }

    /// A call going upstream: joins an identical call in flight when
    /// `coalesce` allows, else passes the guards.
    fn upstream(
        &self,
        reason: CallReason,
        fallback: Option<Arc<StoredOutcome>>,
        coalesce: bool,
    ) -> Result<Decision, Refusal> {
        let unrecorded = if reason == CallReason::Bypass {
            Some(Unrecorded::Bypass)
        } else {
            self.overrides.no_store.then_some(Unrecorded::NoStore)
        };
        let mut lead = None;
        if coalesce
            && self.policy.coalesce
            && !self.overrides.alone
            && let Some(key) = self.key
        {
            match self.guards.flights.join(*key) {
                Joined::Follow(flight) => return Ok(Decision::Follow { flight, fallback }),
                Joined::Lead(joined) => lead = Some(joined),
            }
        }
        if let Err(refusal) = self.pass_guards() {
            return match fallback {
                Some(outcome) if refusal.guard() == Some(Guard::CircuitOpen) => {
                    Ok(Decision::Replay {
                        age: outcome.age(),
                        outcome,
                        source: Source::Stale,
                        delay: Duration::ZERO,
                        refresh: None,
                        guard: Some(Guard::CircuitOpen),
                    })
                }
                _ => Err(refusal),
            };
        }
        Ok(Decision::Call {
            reason,
            unrecorded,
            fallback,
            lead,
        })
    }

    /// A stale replay's background refresh, when nobody is refreshing this
    /// key and the guards let it through.
    fn claim_refresh(&self) -> Option<Lead> {
        // Internal: a caller that forbids calling or keeping (only-if-cached,
        // no-store) is served stale without starting one.
        if self.overrides.only_if_cached || self.overrides.no_store {
            return None;
        }
        let lead = self.guards.flights.lead(*self.key?)?;
        self.pass_guards().ok()?;
        Some(lead)
    }

    /// The breaker, then the budgets; spends one call of each budget.
    fn pass_guards(&self) -> Result<(), Refusal> {
        let refuse = |guard, retry_after| Refusal::Guarded {
            function: self.function,
            guard,
            retry_after,
        };
        if self.policy.circuit_breaker.is_some()
            && let Some(open_for) = self.guards.breaker.open_for()
        {
            return Err(refuse(Guard::CircuitOpen, open_for));
        }
        let local = self
            .policy
            .max_upstream_calls
            .as_ref()
            .map(|budget| (self.guards.spending, budget));
        Spending::take_all([local, self.guards.global])
            .map_err(|retry_after| refuse(Guard::BudgetExceeded, retry_after))
    }
}

/// What a store read gave, or `None` after logging why it failed: the
/// call then goes on as if that outcome (or, for a failed index read,
/// anything) were not stored, which the caller reports as a cache miss or
/// no mock outcome.
fn readable<T>(function: FunctionId, read: Result<T, cacheow_storage::ReadError>) -> Option<T> {
    read.map_err(|e| {
        tracing::error!(function = %function, error = %e, "cannot read the store; treating the call as having no stored outcome");
    })
    .ok()
}

/// Weighted choice among eligible entries. With no entries configured:
/// uniform among the outcomes recorded for this very call, and only for a
/// call never seen, uniform among all outcomes. Each step reads a bounded
/// number of outcomes, however many the function has.
fn choose_mock(call: &Call<'_>) -> Option<Arc<StoredOutcome>> {
    let accepts = |o: &StoredOutcome| call.filter.accepts(o, Source::Mock);
    if call.mock_entries.is_empty() {
        let key = call.key?;
        let mut same_call: Vec<_> =
            readable(call.function, call.outcomes.for_key_newest_first(key))?
                .filter_map(|read| readable(call.function, read))
                .filter(|o| accepts(o))
                .collect();
        if !same_call.is_empty() {
            return Some(same_call.swap_remove(fastrand::usize(..same_call.len())));
        }
        return readable(call.function, call.outcomes.pick_uniform(&accepts)).flatten();
    }
    // Internal: weights are drawn before outcomes are read, and an entry
    // whose outcome the call does not take is dropped and the draw made
    // again, so only drawn outcomes are read.
    let mut eligible: Vec<&MockEntry> = call
        .mock_entries
        .iter()
        .filter(|e| e.enabled && e.weight > 0.0 && e.weight.is_finite())
        .collect();
    while !eligible.is_empty() {
        let total: f64 = eligible.iter().map(|e| e.weight).sum();
        if total <= 0.0 {
            return None;
        }
        let mut point = fastrand::f64() * total;
        let mut drawn = eligible.len() - 1;
        for (i, entry) in eligible.iter().enumerate() {
            if point < entry.weight {
                drawn = i;
                break;
            }
            point -= entry.weight;
        }
        let entry = eligible.swap_remove(drawn);
        let Some(outcome) = readable(call.function, call.outcomes.get(&entry.outcome_id)).flatten()
        else {
            continue;
        };
        let key_matches = entry.ignore_args
            || (call.key.is_some() && outcome.outcome().call_key.as_ref() == call.key);
        if key_matches && accepts(&outcome) {
            return Some(outcome);
        }
    }
    None
}
