//! The guards in front of an upstream: the cost guard (at most N calls per
//! window) and the circuit breaker (after N failures in a window, stop
//! calling for a while). Each remembers only times, at most as many as its
//! setting allows.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::{BreakerSettings, Budget};

/// The upstream calls made in the current window of a budget.
#[derive(Default)]
pub(crate) struct Spending {
    calls: Mutex<VecDeque<Instant>>,
}

impl Spending {
    /// Takes one call from each budget given, or from none of them: `Err`
    /// with the time until the call could go through when any window's
    /// calls are spent, and then the call must not go upstream.
    pub(crate) fn take_all(budgets: [Option<(&Spending, &Budget)>; 2]) -> Result<(), Duration> {
        let now = Instant::now();
        // Internal: always locked in the order given (the function's, then
        // the global one), so two calls cannot wait on each other.
        let mut locked: Vec<_> = budgets
            .into_iter()
            .flatten()
            .map(|(spending, budget)| {
                (
                    spending.calls.lock().unwrap_or_else(|e| e.into_inner()),
                    budget,
                )
            })
            .collect();
        for (calls, budget) in &mut locked {
            room(calls, budget, now)?;
        }
        for (calls, _) in &mut locked {
            calls.push_back(now);
        }
        Ok(())
    }
}

impl Spending {
    /// True when one more call fits `budget` now (nothing is taken).
    pub(crate) fn has_room(&self, budget: &Budget) -> bool {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        room(&mut calls, budget, Instant::now()).is_ok()
    }
}

/// Forgets calls that left `budget`'s window; `Err` with the time until
/// the oldest leaves when the window has no room for one more.
fn room(calls: &mut VecDeque<Instant>, budget: &Budget, now: Instant) -> Result<(), Duration> {
    while calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= budget.per)
    {
        calls.pop_front();
    }
    // Internal: a budget lowered since these calls keeps only the newest it
    // now allows.
    let allowed = usize::try_from(budget.calls).unwrap_or(usize::MAX);
    while calls.len() > allowed {
        calls.pop_front();
    }
    if calls.len() < allowed {
        return Ok(());
    }
    let oldest = calls.front().copied().unwrap_or(now);
    Err(budget.per.saturating_sub(now.duration_since(oldest)))
}

/// A circuit breaker's failures and whether it is open.
#[derive(Default)]
pub(crate) struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
}

impl Breaker {
    /// When the breaker is open, how long it stays so.
    pub(crate) fn open_for(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = state.open_until?;
        let now = Instant::now();
        if now >= until {
            state.open_until = None;
            return None;
        }
        Some(until - now)
    }

    /// Notes how an upstream call ended; true when this failure opened the
    /// breaker.
    pub(crate) fn note(&self, settings: &BreakerSettings, failed: bool) -> bool {
        if !failed {
            return false;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > settings.window)
        {
            state.failures.pop_front();
        }
        state.failures.push_back(now);
        if state.failures.len() < settings.failures as usize {
            return false;
        }
        state.failures.clear();
        state.open_until = Some(now + settings.open_for);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_calls_and_frees_them_with_the_window() {
        let spending = Spending::default();
        let budget = Budget {
            calls: 3,
            per: Duration::from_millis(80),
        };
        let take = || Spending::take_all([Some((&spending, &budget)), None]);
        assert!((0..3).all(|_| take().is_ok()));
        let wait = take().unwrap_err();
        assert!(
            wait <= Duration::from_millis(80) && !wait.is_zero(),
            "{wait:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(take().is_ok());
    }

    #[test]
    fn a_refusal_by_one_budget_spends_nothing_of_the_other() {
        let (function, global) = (Spending::default(), Spending::default());
        let roomy = Budget {
            calls: 2,
            per: Duration::from_secs(60),
        };
        let spent = Budget {
            calls: 0,
            per: Duration::from_secs(60),
        };
        for _ in 0..5 {
            assert!(
                Spending::take_all([Some((&function, &roomy)), Some((&global, &spent))]).is_err()
            );
        }
        assert!(Spending::take_all([Some((&function, &roomy)), None]).is_ok());
        assert!(Spending::take_all([Some((&function, &roomy)), None]).is_ok());
    }

    #[test]
    fn a_breaker_opens_after_its_failures_and_closes_after_open_for() {
        let breaker = Breaker::default();
        let settings = BreakerSettings {
            failures: 2,
            window: Duration::from_secs(30),
            open_for: Duration::from_millis(80),
        };
        assert!(!breaker.note(&settings, false));
        assert!(!breaker.note(&settings, true));
        assert!(breaker.open_for().is_none());
        assert!(breaker.note(&settings, true));
        assert!(breaker.open_for().is_some());
        std::thread::sleep(Duration::from_millis(100));
        assert!(breaker.open_for().is_none());
        assert!(!breaker.note(&settings, true), "the count starts again");
    }
}
