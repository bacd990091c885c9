//! A function's counters: atomics bumped once per finished call, in one
//! place, and read as a `Stats` snapshot for the API and the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheow_storage::{Stats, Timestamp};

use crate::decide::{Guard, Source};
use crate::function::{Finished, Unrecorded};

#[derive(Default)]
pub(crate) struct Counters {
    total_calls: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    mock_calls: AtomicU64,
    exceptions: AtomicU64,
    upstream_calls: AtomicU64,
    persist_failures: AtomicU64,
    stale_served: AtomicU64,
    refreshed: AtomicU64,
    coalesced: AtomicU64,
    budget_rejected: AtomicU64,
    circuit_open: AtomicU64,
    total_duration_us: AtomicU64,
    /// Milliseconds since the epoch; 0 for never.
    last_called_ms: AtomicU64,
    unrecorded: [AtomicU64; Unrecorded::ALL.len()],
    /// Reasons a newer cacheow wrote that this one does not know, kept.
    unrecorded_other: BTreeMap<String, u64>,
}

impl Counters {
    pub(crate) fn from_stats(stats: Stats) -> Counters {
        let mut counters = Counters {
            total_calls: stats.total_calls.into(),
            cache_hits: stats.cache_hits.into(),
            cache_misses: stats.cache_misses.into(),
            mock_calls: stats.mock_calls.into(),
            exceptions: stats.exceptions.into(),
            upstream_calls: stats.upstream_calls.into(),
            persist_failures: stats.persist_failures.into(),
            stale_served: stats.stale_served.into(),
            refreshed: stats.refreshed.into(),
            coalesced: stats.coalesced.into(),
            budget_rejected: stats.budget_rejected.into(),
            circuit_open: stats.circuit_open.into(),
            total_duration_us: ((stats.total_duration_ms.max(0.0) * 1000.0) as u64).into(),
            last_called_ms: stats
                .last_called_at
                .map_or(0, Timestamp::unix_millis)
                .into(),
            ..Counters::default()
        };
        for (reason, count) in stats.unrecorded {
            match Unrecorded::ALL.iter().position(|r| r.as_str() == reason) {
                Some(i) => counters.unrecorded[i] = count.into(),
                None => {
                    counters.unrecorded_other.insert(reason, count);
                }
            }
        }
        counters
    }

    /// Counts one finished call: its source, whether it was a cache miss,
    /// its error and duration, and why it left no outcome.
    pub(crate) fn count(&self, call: &Finished) {
        let bump = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        if call.refresh {
            // Internal: a background refresh is an upstream call nobody
            // waited for; callers' calls and durations stay theirs.
            bump(&self.refreshed);
            bump(&self.upstream_calls);
            if call.error.is_some() {
                bump(&self.exceptions);
            }
            return;
        }
        bump(&self.total_calls);
        self.last_called_ms
            .store(Timestamp::now().unix_millis(), Ordering::Relaxed);
        self.total_duration_us
            .fetch_add(call.elapsed.as_micros() as u64, Ordering::Relaxed);
        match call.source {
            // Internal: a cache-mode call refused for having nothing fresh
            // (only-if-cached) is a miss, not a hit.
            Source::Cache if call.cache_miss => 0,
            Source::Cache => bump(&self.cache_hits),
            Source::Mock => bump(&self.mock_calls),
            Source::Upstream if call.guard.is_none() => bump(&self.upstream_calls),
            Source::Upstream => 0,
            Source::Stale => bump(&self.stale_served),
            Source::Coalesced => bump(&self.coalesced),
        };
        if call.upstream_failed {
            bump(&self.upstream_calls);
        }
        match call.guard {
            Some(Guard::BudgetExceeded) => bump(&self.budget_rejected),
            Some(Guard::CircuitOpen) => bump(&self.circuit_open),
            None => 0,
        };
        if call.cache_miss {
            bump(&self.cache_misses);
        }
        if call.error.is_some() {
            bump(&self.exceptions);
        }
        if let Some(reason) = call.unrecorded {
            let slot = Unrecorded::ALL.iter().position(|r| *r == reason);
            if let Some(slot) = slot {
                bump(&self.unrecorded[slot]);
            }
        }
    }

    pub(crate) fn persist_failed(&self) {
        self.persist_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut unrecorded = self.unrecorded_other.clone();
        for (reason, counter) in Unrecorded::ALL.iter().zip(&self.unrecorded) {
            let count = get(counter);
            if count > 0 {
                unrecorded.insert(reason.as_str().to_owned(), count);
            }
        }
        let last_called_ms = get(&self.last_called_ms);
        Stats {
            total_calls: get(&self.total_calls),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            mock_calls: get(&self.mock_calls),
            exceptions: get(&self.exceptions),
            upstream_calls: get(&self.upstream_calls),
            total_duration_ms: get(&self.total_duration_us) as f64 / 1000.0,
            last_called_at: (last_called_ms > 0)
                .then(|| Timestamp::from_unix_millis(last_called_ms)),
            unrecorded,
            persist_failures: get(&self.persist_failures),
            stale_served: get(&self.stale_served),
            refreshed: get(&self.refreshed),
            coalesced: get(&self.coalesced),
            budget_rejected: get(&self.budget_rejected),
            circuit_open: get(&self.circuit_open),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn finished(source: Source) -> Finished {
        Finished::of(None, source, Duration::from_millis(2))
    }

    #[test]
    fn each_call_is_counted_once_by_its_source_error_and_reason() {
        let counters = Counters::default();
        counters.count(&Finished {
            error: Some("no_mock_outcome".into()),
            ..finished(Source::Mock)
        });
        assert_eq!(
            (
                counters.snapshot().mock_calls,
                counters.snapshot().exceptions
            ),
            (1, 1),
            "no_mock_outcome counts one exception"
        );
        counters.count(&Finished {
            cache_miss: true,
            unrecorded: Some(Unrecorded::RequestOversize),
            ..finished(Source::Upstream)
        });
        counters.count(&finished(Source::Cache));
        counters.count(&Finished {
            cache_miss: true,
            error: Some("not_cached".into()),
            ..finished(Source::Cache)
        });
        counters.count(&Finished {
            upstream_failed: true,
            error: Some("status_503".into()),
            ..finished(Source::Stale)
        });
        let stats = counters.snapshot();
        assert_eq!(stats.total_calls, 5);
        assert_eq!(
            (stats.cache_hits, stats.cache_misses),
            (1, 2),
            "a not_cached refusal is a miss"
        );
        assert_eq!(
            (stats.stale_served, stats.upstream_calls, stats.exceptions),
            (1, 2, 3),
            "a stale answer for a failed upstream counts the call and its failure"
        );
        assert_eq!(stats.unrecorded["request_oversize"], 1);
        assert!((stats.total_duration_ms - 10.0).abs() < 1e-9);
        assert!(stats.last_called_at.is_some());
    }

    #[test]
    fn a_snapshot_survives_a_round_trip_with_unknown_reasons_kept() {
        let counters = Counters::default();
        counters.count(&Finished {
            unrecorded: Some(Unrecorded::Loop),
            ..finished(Source::Upstream)
        });
        let mut stats = counters.snapshot();
        stats.unrecorded.insert("from_the_future".into(), 4);
        let again = Counters::from_stats(stats.clone()).snapshot();
        assert_eq!(again, stats);
    }
}
