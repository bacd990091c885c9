//! The mode decision: the one place that matches on `Mode`.

use std::sync::Arc;
use std::time::Duration;

use cacheow_storage::{CallKey, FunctionId, MockEntry, Mode};
use serde::Serialize;

use crate::error::NoMockOutcome;
use crate::outcome::StoredOutcome;
use crate::outcomes::Outcomes;

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
}

impl Source {
    /// The lowercase name used in headers and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Cache => "cache",
            Source::Mock => "mock",
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
}

/// What to do with one call.
#[derive(Debug)]
pub enum Decision {
    /// Call the real thing, then `record` what it produced.
    Call {
        /// Why.
        reason: CallReason,
    },
    /// Serve a stored outcome after waiting `delay`.
    Replay {
        /// The outcome.
        outcome: Arc<StoredOutcome>,
        /// Cache or mock.
        source: Source,
        /// The function's latency.
        delay: Duration,
    },
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
}

pub(crate) fn decide(call: Call<'_>) -> Result<Decision, NoMockOutcome> {
    let (fixed_ms, jitter_ms) = call.latency;
    let jitter = if jitter_ms == 0 {
        0
    } else {
        fastrand::u64(0..=jitter_ms)
    };
    let delay = Duration::from_millis(fixed_ms.saturating_add(jitter));
    match call.mode {
        Mode::Default => Ok(Decision::Call {
            reason: CallReason::Default,
        }),
        Mode::Cache => {
            let hit = call.key.and_then(|key| {
                readable(call.function, call.outcomes.for_key_newest_first(key))?
                    .filter_map(|read| readable(call.function, read))
                    .find(|o| !o.outcome().is_mock_only && call.filter.accepts(o, Source::Cache))
            });
            Ok(match hit {
                Some(outcome) => Decision::Replay {
                    outcome: outcome.clone(),
                    source: Source::Cache,
                    delay,
                },
                None => Decision::Call {
                    reason: CallReason::CacheMiss,
                },
            })
        }
        Mode::Mock => choose_mock(&call)
            .map(|outcome| Decision::Replay {
                outcome,
                source: Source::Mock,
                delay,
            })
            .ok_or(NoMockOutcome {
                function: call.function,
                keyless: call.key.is_none(),
            }),
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
