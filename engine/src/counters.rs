//! A function's counters: atomics bumped once per finished call, in one
//! place, and read as a `Stats` snapshot for the API and the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheow_storage::{Stats, Timestamp};

use crate::decide::Source;
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
        bump(&self.total_calls);
        self.last_called_ms
            .store(Timestamp::now().unix_millis(), Ordering::Relaxed);
        self.total_duration_us
            .fetch_add(call.elapsed.as_micros() as u64, Ordering::Relaxed);
        match call.source {
            Source::Cache => bump(&self.cache_hits),
            Source::Mock => bump(&self.mock_calls),
            Source::Upstream => bump(&self.upstream_calls),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn finished(source: Source) -> Finished {
        Finished {
            call_key: None,
            source,
            cache_miss: false,
            outcome_id: None,
            elapsed: Duration::from_millis(2),
            status: None,
            error: None,
            unrecorded: None,
        }
    }

    #[test]
    fn each_call_is_counted_once_by_its_source_error_and_reason() {
        let counters = Counters::default();
        counters.count(&Finished {
            error: Some("no_mock_outcome".into()),
            ..finished(Source::Mock)
        });
        counters.count(&Finished {
            cache_miss: true,
            unrecorded: Some(Unrecorded::RequestOversize),
            ..finished(Source::Upstream)
        });
        counters.count(&finished(Source::Cache));
        let stats = counters.snapshot();
        assert_eq!(stats.total_calls, 3);
        assert_eq!(
            (stats.mock_calls, stats.exceptions),
            (1, 1),
            "no_mock_outcome counts one exception"
        );
        assert_eq!(
            (stats.upstream_calls, stats.cache_misses, stats.cache_hits),
            (1, 1, 1)
        );
        assert_eq!(stats.unrecorded["request_oversize"], 1);
        assert!((stats.total_duration_ms - 6.0).abs() < 1e-9);
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
