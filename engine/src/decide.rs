//! The mode decision: the one place that matches on `Mode`.

use std::sync::Arc;
use std::time::Duration;

use cacheow_storage::{CallKey, FunctionId, MockEntry, Mode};
use serde::Serialize;

use crate::error::NoMockOutcome;
use crate::outcome::{OutcomeIndex, StoredOutcome};

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
    pub(crate) index: &'a OutcomeIndex,
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
                call.index
                    .for_key_newest_first(key)
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

/// Weighted choice among eligible entries. With no entries configured:
/// uniform among the outcomes recorded for this very call, and only for a
/// call never seen, uniform among all outcomes.
fn choose_mock(call: &Call<'_>) -> Option<Arc<StoredOutcome>> {
    let accepted = |o: &&Arc<StoredOutcome>| call.filter.accepts(o, Source::Mock);
    if call.mock_entries.is_empty() {
        let key = call.key?;
        let same_call: Vec<_> = call
            .index
            .for_key_newest_first(key)
            .filter(accepted)
            .collect();
        if !same_call.is_empty() {
            return Some(same_call[fastrand::usize(..same_call.len())].clone());
        }
        let all: Vec<_> = call.index.all().filter(accepted).collect();
        return (!all.is_empty()).then(|| all[fastrand::usize(..all.len())].clone());
    }
    let eligible: Vec<(&Arc<StoredOutcome>, f64)> = call
        .mock_entries
        .iter()
        .filter(|e| e.enabled && e.weight > 0.0 && e.weight.is_finite())
        .filter_map(|e| call.index.get(&e.outcome_id).map(|o| (o, e)))
        .filter(|(o, e)| {
            e.ignore_args || (call.key.is_some() && o.outcome().call_key.as_ref() == call.key)
        })
        .map(|(o, e)| (o, e.weight))
        .collect();
    let total: f64 = eligible.iter().map(|(_, w)| w).sum();
    if eligible.is_empty() || total <= 0.0 {
        return None;
    }
    let mut point = fastrand::f64() * total;
    for (outcome, weight) in &eligible {
        if point < *weight {
            return Some((*outcome).clone());
        }
        point -= weight;
    }
    eligible.last().map(|(o, _)| (*o).clone())
}
