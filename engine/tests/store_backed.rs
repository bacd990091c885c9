//! Outcomes live in the store and only hot ones in memory: replays, lists,
//! mock choices and deletes stay right whatever the memory cache holds and
//! whether a write has reached the store yet.

use std::collections::HashSet;

use cacheow_engine::{
    CallKey, CallKeyExt, Decision, Engine, EngineOptions, FunctionHandle, FunctionKind,
    FunctionSpec, Mode, NewOutcome, ReplayFilter, Source, StoredOutcome,
};
use cacheow_storage::test_support::temp_data_dir;
use serde_json::json;

fn function(engine: &Engine) -> FunctionHandle {
    engine.ensure_function(FunctionSpec::new("tests::f", FunctionKind::Sync))
}

/// A cache that holds about one outcome.
fn tiny_cache() -> EngineOptions {
    EngineOptions {
        memory_cache_bytes: 2048,
        ..EngineOptions::default()
    }
}

fn key(n: usize) -> CallKey {
    CallKey::of_bytes(format!("call {n}").as_bytes())
}

fn replayed(decision: Decision) -> serde_json::Value {
    match decision {
        Decision::Replay { outcome, .. } => outcome.outcome().value.clone(),
        other => panic!("expected a replay, got {other:?}"),
    }
}

#[test]
fn a_cache_smaller_than_the_store_still_replays_every_outcome_before_and_after_a_restart() {
    let dir = temp_data_dir();
    let id = {
        let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
        let f = function(&engine);
        f.set_mode(Mode::Cache);
        for n in 0..300 {
            f.record(Some(key(n)), NewOutcome::returned(json!({ "n": n })));
            // Replayed at once, whether or not the write has landed.
            assert_eq!(replayed(f.decide(&key(n)).unwrap()), json!({ "n": n }));
        }
        engine.flush();
        for n in 0..300 {
            assert_eq!(replayed(f.decide(&key(n)).unwrap()), json!({ "n": n }));
        }
        f.id()
    };
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = engine.function(&id).unwrap();
    assert_eq!(f.outcome_count(), 300);
    for n in (0..300).rev() {
        assert_eq!(replayed(f.decide(&key(n)).unwrap()), json!({ "n": n }));
    }
}

#[test]
fn the_newest_outcome_of_a_call_wins_in_flight_and_in_the_store() {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = function(&engine);
    f.set_mode(Mode::Cache);
    let call = key(1);
    for version in 0..5 {
        f.record(Some(call), NewOutcome::returned(json!(version)));
        assert_eq!(replayed(f.decide(&call).unwrap()), json!(version));
    }
    engine.flush();
    assert_eq!(replayed(f.decide(&call).unwrap()), json!(4));
    // Recording an older answer again makes it the newest.
    std::thread::sleep(std::time::Duration::from_millis(2));
    f.record(Some(call), NewOutcome::returned(json!(2)));
    assert_eq!(replayed(f.decide(&call).unwrap()), json!(2));
    engine.flush();
    assert_eq!(replayed(f.decide(&call).unwrap()), json!(2));
    assert_eq!(f.outcome_count(), 5);
}

#[test]
fn pages_list_every_outcome_once_newest_first_while_writes_are_in_flight() {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = function(&engine);
    for n in 0..40 {
        if n == 25 {
            engine.flush();
        }
        f.record(Some(key(n)), NewOutcome::returned(json!(n)));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = f.outcomes_page(after.as_ref(), 7).unwrap().unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|o| o.id());
        seen.extend(page);
    }
    let ids: HashSet<_> = seen.iter().map(|o| o.id()).collect();
    assert_eq!(
        (seen.len(), ids.len()),
        (40, 40),
        "each outcome exactly once"
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].last_seen_at() >= w[1].last_seen_at()),
        "newest first"
    );
    let unknown = cacheow_engine::OutcomeId::from_bytes([9; 8]);
    assert!(f.outcomes_page(Some(&unknown), 7).unwrap().is_none());
}

#[test]
fn a_deleted_outcome_is_never_served_again_and_the_count_follows() {
    let dir = temp_data_dir();
    let id = {
        let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
        let f = function(&engine);
        let gone = f
            .record(Some(key(0)), NewOutcome::returned(json!("gone")))
            .outcome_id;
        f.record(Some(key(1)), NewOutcome::returned(json!("kept")));
        f.delete_outcome(&gone).unwrap();
        assert_eq!(f.outcome_count(), 1);
        assert!(f.outcome(&gone).unwrap().is_none());
        f.set_mode(Mode::Mock);
        for _ in 0..20 {
            assert_eq!(replayed(f.decide(&key(7)).unwrap()), json!("kept"));
        }
        f.id()
    };
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = engine.function(&id).unwrap();
    assert_eq!(f.outcome_count(), 1);
    for _ in 0..20 {
        assert_eq!(replayed(f.decide(&key(7)).unwrap()), json!("kept"));
    }
}

/// Accepts one value only.
struct Only(serde_json::Value);

impl ReplayFilter for Only {
    fn accepts(&self, outcome: &StoredOutcome, _: Source) -> bool {
        outcome.outcome().value == self.0
    }
}

#[test]
fn a_uniform_mock_choice_finds_the_only_outcome_a_call_accepts() {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = function(&engine);
    for n in 0..2000 {
        f.record(Some(key(n)), NewOutcome::returned(json!(n)));
    }
    engine.flush();
    f.set_mode(Mode::Mock);
    let unseen = CallKey::of_bytes(b"never recorded");
    for wanted in [0, 1234, 1999] {
        let decision = f
            .decide_with(Some(&unseen), &Only(json!(wanted)), Default::default())
            .unwrap();
        assert_eq!(replayed(decision), json!(wanted));
    }
    assert!(
        f.decide_with(Some(&unseen), &Only(json!("none")), Default::default())
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_keeps_the_count_and_every_outcome_replayable() {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), tiny_cache()).unwrap();
    let f = function(&engine);
    f.set_mode(Mode::Cache);
    for n in 0..3 {
        f.record(Some(key(n)), NewOutcome::returned(json!(n)));
    }
    engine.flush();
    let gone = f
        .record(Some(key(9)), NewOutcome::returned(json!("gone")))
        .outcome_id;
    f.delete_outcome(&gone).unwrap();
    let report = engine.rebuild_index(None).await.unwrap();
    assert_eq!(report.failures, []);
    f.record(Some(key(3)), NewOutcome::returned(json!(3)));
    assert_eq!(f.outcome_count(), 4);
    for n in 0..4 {
        assert_eq!(replayed(f.decide(&key(n)).unwrap()), json!(n));
    }
    assert!(f.outcome(&gone).unwrap().is_none());
    engine.flush();
    assert_eq!(f.outcome_count(), 4);
}
