//! The seed's mode semantics, checked against the engine directly.

use cacheow_engine::{
    CallKey, CallKeyExt, CallReason, Decision, Engine, EngineOptions, Finished, FunctionHandle,
    FunctionKind, FunctionSpec, MockEntry, Mode, NewOutcome, Source,
};
use cacheow_storage::test_support::{TempDataDir, temp_data_dir};
use serde_json::json;

fn engine() -> (TempDataDir, Engine) {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    (dir, engine)
}

fn function(engine: &Engine) -> FunctionHandle {
    engine.ensure_function(FunctionSpec::new("tests::f", FunctionKind::Sync))
}

fn replayed_value(decision: Decision) -> serde_json::Value {
    match decision {
        Decision::Replay { outcome, .. } => outcome.outcome().value.clone(),
        other => panic!("expected a replay, got {other:?}"),
    }
}

#[test]
fn default_mode_always_calls_and_identical_outcomes_share_a_count() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    let key = CallKey::of_bytes(b"a");
    for _ in 0..3 {
        assert!(matches!(f.decide(&key).unwrap(), Decision::Call { .. }));
        f.record(Some(key), NewOutcome::returned(json!("same")));
    }
    assert_eq!(f.outcome_count(), 1);
    assert_eq!(f.outcomes_page(None, 10).unwrap().unwrap()[0].count(), 3);
}

#[test]
fn cache_mode_replays_on_key_match_and_skips_mock_only() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    f.set_mode(Mode::Cache);
    let key = CallKey::of_bytes(b"a");
    let mut mock_only = NewOutcome::returned(json!("mock only"));
    mock_only.is_mock_only = true;
    f.add_manual(Some(key), mock_only)
        .expect("any value passes the plain JSON codec");
    let miss = f.decide(&key).unwrap();
    assert!(matches!(
        miss,
        Decision::Call {
            reason: CallReason::CacheMiss,
            ..
        }
    ));
    f.record(Some(key), NewOutcome::returned(json!(1)));
    f.finish(finished(Source::Upstream, true));
    assert_eq!(replayed_value(f.decide(&key).unwrap()), json!(1));
    f.finish(finished(Source::Cache, false));
    let stats = f.stats();
    assert_eq!((stats.cache_hits, stats.cache_misses), (1, 1));
    assert_eq!((stats.total_calls, stats.upstream_calls), (2, 1));
}

/// What a caller reports once a call is over; calls are counted there.
fn finished(source: Source, cache_miss: bool) -> Finished {
    Finished {
        cache_miss,
        ..Finished::of(None, source, std::time::Duration::from_millis(1))
    }
}

#[test]
fn mock_weights_enabled_and_ignore_args() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    let (ka, kb) = (CallKey::of_bytes(b"a"), CallKey::of_bytes(b"b"));
    let a = f
        .record(Some(ka), NewOutcome::returned(json!("a")))
        .outcome_id;
    let b = f
        .record(Some(kb), NewOutcome::returned(json!("b")))
        .outcome_id;
    f.set_mode(Mode::Mock);
    let entry = |id, weight, enabled, ignore_args| MockEntry {
        outcome_id: id,
        weight,
        enabled,
        ignore_args,
    };

    f.set_mock_entries(vec![entry(a, 3.0, true, true), entry(b, 1.0, true, true)])
        .unwrap();
    let unseen = CallKey::of_bytes(b"never seen");
    let a_count = (0..4000)
        .filter(|_| replayed_value(f.decide(&unseen).unwrap()) == json!("a"))
        .count();
    assert!((2800..=3200).contains(&a_count), "{a_count} of 4000");

    f.set_mock_entries(vec![entry(a, 3.0, false, true), entry(b, 1.0, true, true)])
        .unwrap();
    assert!((0..200).all(|_| replayed_value(f.decide(&unseen).unwrap()) == json!("b")));

    f.set_mock_entries(vec![entry(a, 1.0, true, false)])
        .unwrap();
    assert_eq!(replayed_value(f.decide(&ka).unwrap()), json!("a"));
    let err = f.decide(&kb).unwrap_err();
    assert!(err.to_string().contains("no eligible outcome"), "{err}");
}

#[test]
fn mock_without_entries_is_uniform_and_empty_is_an_error() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    f.set_mode(Mode::Mock);
    assert!(f.decide(&CallKey::of_bytes(b"x")).is_err());
    for n in 0..3 {
        f.record(
            Some(CallKey::of_bytes(&[n])),
            NewOutcome::returned(json!(n)),
        );
    }
    // A call never seen picks uniformly among all outcomes: 600 picks of 3,
    // each 200 ± 60 (over five standard deviations).
    let mut picks = [0usize; 3];
    for _ in 0..600 {
        match f.decide(&CallKey::of_bytes(b"unseen")).unwrap() {
            Decision::Replay {
                source, outcome, ..
            } => {
                assert_eq!(source, Source::Mock);
                picks[outcome.outcome().value.as_u64().unwrap() as usize] += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for count in picks {
        assert!((140..=260).contains(&count), "not uniform: {picks:?}");
    }
}

#[test]
fn settings_and_outcomes_survive_a_reopen() {
    let dir = temp_data_dir();
    let key = CallKey::of_bytes(b"a");
    let id = {
        let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        let f = function(&engine);
        let outcome = f
            .record(Some(key), NewOutcome::returned(json!("kept")))
            .outcome_id;
        f.set_mode(Mode::Mock);
        f.set_latency(300, 0);
        f.set_mock_entries(vec![MockEntry {
            outcome_id: outcome,
            weight: 2.0,
            enabled: true,
            ignore_args: true,
        }])
        .unwrap();
        f.id()
    };
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let f = engine.function(&id).unwrap();
    let snapshot = f.snapshot();
    assert_eq!(
        (
            snapshot.mode,
            snapshot.latency_ms,
            snapshot.mock_entries.len()
        ),
        (Mode::Mock, 300, 1)
    );
    assert_eq!(replayed_value(f.decide(&key).unwrap()), json!("kept"));
}

#[test]
fn mock_entries_must_name_outcomes_and_carry_valid_weights() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    let id = f.record(None, NewOutcome::returned(json!(1))).outcome_id;
    let bad = MockEntry {
        outcome_id: id,
        weight: -1.0,
        enabled: true,
        ignore_args: true,
    };
    let err = f.set_mock_entries(vec![bad]).unwrap_err();
    assert!(err.to_string().contains("entries[0].weight"), "{err}");
    assert!(f.snapshot().mock_entries.is_empty());
}

/// A sync function called from async code waits for its recording without
/// the panic tokio's `blocking_recv` raises inside a runtime; an async one
/// awaits it.
#[test]
fn a_recording_can_be_waited_on_inside_a_runtime_blocking_or_awaiting() {
    let (_dir, engine) = engine();
    let f = function(&engine);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let blocking = f.record_awaitable(
            Some(CallKey::of_bytes(b"sync")),
            NewOutcome::returned(json!(1)),
        );
        blocking.persisted_blocking().unwrap();
        let awaited = f.record_awaitable(
            Some(CallKey::of_bytes(b"async")),
            NewOutcome::returned(json!(2)),
        );
        awaited.persisted().await.unwrap();
    });
    let files = std::fs::read_dir(
        engine
            .data_dir()
            .join("functions")
            .join(f.id().to_string())
            .join("outcomes"),
    )
    .unwrap()
    .count();
    assert_eq!(files, 2, "both outcomes are on disk when the waits return");
}
