//! The cache policy against the engine directly: ttl, stale answers,
//! coalescing, cache_if, per-call overrides, the cost guard and the circuit
//! breaker, each decided as a caller would see it.

use std::time::Duration;

use cacheow_engine::{
    CallKey, CallKeyExt, CallReason, Decision, Engine, EngineOptions, FunctionHandle, FunctionKind,
    FunctionSpec, Guard, Landing, Mode, NewOutcome, Overrides, Refusal, Source, Unrecorded,
};
use cacheow_storage::test_support::{TempDataDir, temp_data_dir};
use serde_json::{Value, json};

fn engine_with(options: EngineOptions) -> (TempDataDir, Engine) {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), options).unwrap();
    (dir, engine)
}

/// A function in `mode` with `settings` in its config.
fn function(engine: &Engine, mode: Mode, settings: Value) -> FunctionHandle {
    let f = engine.ensure_function(FunctionSpec::new("tests::policy", FunctionKind::Sync));
    f.set_mode(mode);
    let Value::Object(settings) = settings else {
        panic!("settings are an object");
    };
    f.merge_config(settings);
    f
}

fn key() -> CallKey {
    CallKey::of_bytes(b"args")
}

fn decide(f: &FunctionHandle, overrides: Overrides) -> Result<Decision, Refusal> {
    f.decide_with(Some(&key()), &cacheow_engine::AnyOutcome, overrides)
}

#[test]
fn a_replay_is_fresh_within_ttl_and_goes_upstream_after_it() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(&engine, Mode::Cache, json!({"ttl": "300ms"}));
    f.record(Some(key()), NewOutcome::returned(json!(1)));
    match f.decide(&key()).unwrap() {
        Decision::Replay { source, age, .. } => {
            assert_eq!(source, Source::Cache);
            assert!(age < Duration::from_millis(300), "{age:?}");
        }
        other => panic!("expected a fresh replay, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(350));
    match f.decide(&key()).unwrap() {
        Decision::Call {
            reason,
            fallback,
            unrecorded,
            ..
        } => {
            assert_eq!(reason, CallReason::Expired);
            assert!(reason.is_cache_miss());
            assert_eq!(unrecorded, None);
            assert!(fallback.is_none(), "no stale_if_error, no fallback");
        }
        other => panic!("expected an upstream call, got {other:?}"),
    }
    // The same answer again makes the outcome fresh again.
    f.record(Some(key()), NewOutcome::returned(json!(1)));
    assert!(matches!(
        f.decide(&key()).unwrap(),
        Decision::Replay {
            source: Source::Cache,
            ..
        }
    ));
}

#[test]
fn stale_while_revalidate_serves_stale_and_hands_out_one_refresh_at_a_time() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(
        &engine,
        Mode::Cache,
        json!({"ttl": "50ms", "stale_while_revalidate": "10s"}),
    );
    f.record(Some(key()), NewOutcome::returned(json!(1)));
    std::thread::sleep(Duration::from_millis(80));
    let Decision::Replay {
        source: Source::Stale,
        refresh: Some(refresh),
        ..
    } = f.decide(&key()).unwrap()
    else {
        panic!("the first stale call refreshes");
    };
    let second = f.decide(&key()).unwrap();
    assert!(
        matches!(
            second,
            Decision::Replay {
                source: Source::Stale,
                refresh: None,
                ..
            }
        ),
        "one refresh per key at a time: {second:?}"
    );
    drop(refresh);
    assert!(matches!(
        f.decide(&key()).unwrap(),
        Decision::Replay {
            refresh: Some(_),
            ..
        }
    ));
}

#[test]
fn stale_if_error_offers_the_newest_good_outcome_in_default_and_cache_mode() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(
        &engine,
        Mode::Default,
        json!({"ttl": "1ms", "stale_if_error": "forever", "cache_if": "ok"}),
    );
    f.record(Some(key()), NewOutcome::returned(json!("good")));
    std::thread::sleep(Duration::from_millis(5));
    f.record(Some(key()), NewOutcome::exception("timeout", "slow"));
    for mode in [Mode::Default, Mode::Cache] {
        f.set_mode(mode);
        match decide(&f, Overrides::default()).unwrap() {
            Decision::Call {
                fallback: Some(fallback),
                ..
            } => assert_eq!(fallback.outcome().value, json!("good"), "{mode}"),
            other => panic!("{mode}: expected a call with a fallback, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn identical_misses_follow_one_lead_and_replay_what_it_recorded() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(&engine, Mode::Cache, json!({}));
    let Decision::Call {
        lead: Some(lead), ..
    } = f.decide(&key()).unwrap()
    else {
        panic!("the first miss leads");
    };
    let Decision::Follow { flight, .. } = f.decide(&key()).unwrap() else {
        panic!("the second miss follows");
    };
    let recorded = f.record(Some(key()), NewOutcome::returned(json!(7)));
    lead.land(Some(recorded.outcome_id));
    assert_eq!(
        flight.landed(Duration::from_secs(1)).await,
        Some(Landing::Recorded(recorded.outcome_id))
    );
    let alone = Overrides {
        alone: true,
        ..Overrides::default()
    };
    assert!(matches!(
        decide(&f, alone).unwrap(),
        Decision::Replay { .. }
    ));

    let off = function(&engine, Mode::Cache, json!({"coalesce": false}));
    let other = CallKey::of_bytes(b"other");
    for _ in 0..2 {
        assert!(matches!(
            off.decide(&other).unwrap(),
            Decision::Call { lead: None, .. }
        ));
    }
}

#[test]
fn cache_if_decides_which_outcomes_cache_mode_replays() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(&engine, Mode::Cache, json!({}));
    f.record(Some(key()), NewOutcome::exception("ValueError", "bad"));
    assert!(
        matches!(f.decide(&key()).unwrap(), Decision::Replay { .. }),
        "a library function replays exceptions by default"
    );
    f.merge_config(json!({"cache_if": "ok"}).as_object().unwrap().clone());
    assert!(matches!(
        f.decide(&key()).unwrap(),
        Decision::Call {
            reason: CallReason::CacheMiss,
            ..
        }
    ));
}

#[test]
fn overrides_refresh_skip_recording_refuse_or_bypass() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(&engine, Mode::Cache, json!({}));
    let only_cached = Overrides {
        only_if_cached: true,
        ..Overrides::default()
    };
    let refusal = decide(&f, only_cached).unwrap_err();
    assert_eq!(refusal.code(), "not_cached");
    assert!(refusal.to_string().contains("only-if-cached"), "{refusal}");
    f.record(Some(key()), NewOutcome::returned(json!(1)));
    assert!(matches!(
        decide(&f, only_cached).unwrap(),
        Decision::Replay { .. }
    ));
    let refresh = Overrides {
        refresh: true,
        ..Overrides::default()
    };
    assert!(matches!(
        decide(&f, refresh).unwrap(),
        Decision::Call {
            reason: CallReason::Refresh,
            unrecorded: None,
            lead: None,
            ..
        }
    ));
    let no_store = Overrides {
        no_store: true,
        mode: Some(Mode::Default),
        ..Overrides::default()
    };
    assert!(matches!(
        decide(&f, no_store).unwrap(),
        Decision::Call {
            unrecorded: Some(Unrecorded::NoStore),
            ..
        }
    ));
    f.set_mode(Mode::Mock);
    let bypass = Overrides {
        bypass: true,
        ..Overrides::default()
    };
    assert!(matches!(
        decide(&f, bypass).unwrap(),
        Decision::Call {
            reason: CallReason::Bypass,
            unrecorded: Some(Unrecorded::Bypass),
            ..
        }
    ));
}

#[test]
fn the_cost_guard_refuses_past_the_budget_per_function_and_globally() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(
        &engine,
        Mode::Default,
        json!({"max_upstream_calls": "2/1h"}),
    );
    for _ in 0..2 {
        assert!(matches!(f.decide(&key()).unwrap(), Decision::Call { .. }));
    }
    let refusal = f.decide(&key()).unwrap_err();
    assert_eq!(refusal.guard(), Some(Guard::BudgetExceeded));
    assert_eq!(refusal.code(), "budget_exceeded");

    let global = cacheow_engine::policy::Budget::parse(&json!("1/1h")).unwrap();
    let (_dir, engine) = engine_with(EngineOptions {
        max_upstream_calls: Some(global),
        ..EngineOptions::default()
    });
    let a = engine.ensure_function(FunctionSpec::new("a", FunctionKind::Sync));
    let b = engine.ensure_function(FunctionSpec::new("b", FunctionKind::Sync));
    assert!(a.decide(&key()).is_ok());
    assert_eq!(
        b.decide(&key()).unwrap_err().guard(),
        Some(Guard::BudgetExceeded)
    );
}

#[test]
fn an_open_breaker_refuses_or_serves_stale_and_closes_after_open_for() {
    let (_dir, engine) = engine_with(EngineOptions::default());
    let f = function(
        &engine,
        Mode::Default,
        json!({"circuit_breaker": {"failures": 2, "window": "30s", "open_for": "200ms"}}),
    );
    f.note_upstream(true);
    assert!(f.decide(&key()).is_ok(), "one failure of two");
    f.note_upstream(true);
    let refusal = f.decide(&key()).unwrap_err();
    assert_eq!(refusal.guard(), Some(Guard::CircuitOpen));
    assert!(refusal.to_string().contains("circuit breaker"), "{refusal}");

    f.record(Some(key()), NewOutcome::returned(json!("last good")));
    f.merge_config(json!({"stale_if_error": "1h"}).as_object().unwrap().clone());
    match f.decide(&key()).unwrap() {
        Decision::Replay {
            source: Source::Stale,
            guard: Some(Guard::CircuitOpen),
            outcome,
            ..
        } => assert_eq!(outcome.outcome().value, json!("last good")),
        other => panic!("expected a stale replay, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(250));
    assert!(matches!(f.decide(&key()).unwrap(), Decision::Call { .. }));
}
