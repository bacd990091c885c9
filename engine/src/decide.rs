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

pub(crate) fn decide(
    function: FunctionId,
    mode: Mode,
    latency: (u64, u64),
    mock_entries: &[MockEntry],
    index: &OutcomeIndex,
    key: &CallKey,
) -> Result<Decision, NoMockOutcome> {
    let (fixed_ms, jitter_ms) = latency;
    let jitter = if jitter_ms == 0 {
        0
    } else {
        fastrand::u64(0..=jitter_ms)
    };
    let delay = Duration::from_millis(fixed_ms.saturating_add(jitter));
    match mode {
        Mode::Default => Ok(Decision::Call {
            reason: CallReason::Default,
        }),
        Mode::Cache => Ok(match index.latest_for_key(key) {
            Some(outcome) => Decision::Replay {
                outcome: outcome.clone(),
                source: Source::Cache,
                delay,
            },
            None => Decision::Call {
                reason: CallReason::CacheMiss,
            },
        }),
        Mode::Mock => choose_mock(mock_entries, index, key)
            .map(|outcome| Decision::Replay {
                outcome,
                source: Source::Mock,
                delay,
            })
            .ok_or(NoMockOutcome { function }),
    }
}

/// Weighted choice among eligible entries; uniform among every outcome when
/// no entry is configured.
fn choose_mock(
    entries: &[MockEntry],
    index: &OutcomeIndex,
    key: &CallKey,
) -> Option<Arc<StoredOutcome>> {
    if entries.is_empty() {
        let all: Vec<_> = index.all().collect();
        return (!all.is_empty()).then(|| all[fastrand::usize(..all.len())].clone());
    }
    let eligible: Vec<(&Arc<StoredOutcome>, f64)> = entries
        .iter()
        .filter(|e| e.enabled && e.weight > 0.0 && e.weight.is_finite())
        .filter_map(|e| index.get(&e.outcome_id).map(|o| (o, e)))
        .filter(|(o, e)| e.ignore_args || o.outcome().call_key.as_ref() == Some(key))
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
