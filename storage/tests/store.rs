//! The store's promises, checked on real files.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheow_storage::test_support::{sample_function, sample_outcome, temp_data_dir};
use cacheow_storage::{Mode, OpenError, Store, Write, WriteError, Writer};

#[test]
fn roundtrip_through_index_and_mirror() {
    let dir = temp_data_dir();
    let mut function = sample_function("users/{id}");
    function.mode = Mode::Cache;
    function.latency_ms = 250;
    let outcome = sample_outcome(&function, "k1", "hello");
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(&[
                Write::PutFunction(function.clone()),
                Write::PutOutcome(outcome.clone()),
            ])
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].function, function);
    assert_eq!(loaded[0].outcomes, vec![outcome.clone()]);

    let file = dir
        .path()
        .join("functions")
        .join(function.id.to_string())
        .join("outcomes")
        .join(format!("{}.json", outcome.id));
    let text = fs::read_to_string(file).unwrap();
    assert!(
        text.starts_with("{\n  \"schema_version\": 1,\n  \"id\": "),
        "{text}"
    );
    assert!(text.contains("\"body\": \"hello\""), "{text}");
}

#[test]
fn rebuild_reports_corrupt_files_and_keeps_the_rest() {
    let dir = temp_data_dir();
    let function = sample_function("a");
    let good = sample_outcome(&function, "k1", "good");
    let bad = sample_outcome(&function, "k2", "bad");
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(&[
            Write::PutFunction(function.clone()),
            Write::PutOutcome(good.clone()),
            Write::PutOutcome(bad.clone()),
        ])
        .unwrap();
    let outcomes = dir
        .path()
        .join("functions")
        .join(function.id.to_string())
        .join("outcomes");
    let good_path = outcomes.join(format!("{}.json", good.id));
    let edited = fs::read_to_string(&good_path)
        .unwrap()
        .replace("\"good\"", "\"edited\"");
    fs::write(&good_path, edited).unwrap();
    let bad_path = outcomes.join(format!("{}.json", bad.id));
    fs::write(&bad_path, "{ not json").unwrap();

    let report = store.rebuild_index(None).unwrap();
    assert_eq!(report.indexed, 1);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].path, bad_path.canonicalize().unwrap());
    assert!(
        report.failures[0].reason.contains("invalid JSON"),
        "{:?}",
        report.failures
    );

    // The edited file replaced its row; the one with a typo kept its index
    // copy (committed data is never dropped for a typo).
    let loaded = store.load().unwrap();
    assert_eq!(loaded[0].outcomes.len(), 2);
    let body = |id| {
        loaded[0]
            .outcomes
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.value["body"].clone())
    };
    assert_eq!(body(good.id).unwrap(), "edited");
    assert_eq!(body(bad.id).unwrap(), "bad");
    assert!(report.restored.is_empty(), "{:?}", report.restored);
}

#[test]
fn a_missing_index_is_rebuilt_from_the_mirror() {
    let dir = temp_data_dir();
    let function = sample_function("a");
    let outcome = sample_outcome(&function, "k1", "x");
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(&[
                Write::PutFunction(function.clone()),
                Write::PutOutcome(outcome),
            ])
            .unwrap();
    }
    fs::remove_file(dir.path().join("cacheow.redb")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap()[0].outcomes.len(), 1);
}

#[test]
fn a_second_open_names_the_data_dir() {
    let dir = temp_data_dir();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.is_locked());
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().canonicalize().unwrap().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("in use by another cacheow process"),
        "{message}"
    );
}

#[test]
fn a_newer_mirror_file_is_refused_with_a_reason() {
    let dir = temp_data_dir();
    let function = sample_function("a");
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(&[Write::PutFunction(function.clone())])
        .unwrap();
    let path = dir
        .path()
        .join("functions")
        .join(function.id.to_string())
        .join("function.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"schema_version\": 1", "\"schema_version\": 9");
    fs::write(&path, text).unwrap();
    let report = store.rebuild_index(None).unwrap();
    assert!(
        report.failures[0].reason.contains("newer cacheow"),
        "{:?}",
        report.failures
    );
    // The index still holds the function it had.
    assert_eq!(store.load().unwrap().len(), 1);
}

#[test]
fn a_newer_index_is_refused_with_a_message() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schema/v999");
    let dir = temp_data_dir();
    fs::copy(
        fixture.join("cacheow.redb"),
        dir.path().join("cacheow.redb"),
    )
    .unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerSchema { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade cacheow"), "{err}");
}

#[test]
fn the_v1_fixture_store_opens() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schema/v1");
    let dir = temp_data_dir();
    fs::copy(
        fixture.join("cacheow.redb"),
        dir.path().join("cacheow.redb"),
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].function.name, "GET http://api.test/users/{id}");
    assert_eq!(loaded[0].outcomes.len(), 1);

    // Migrated to schema 2: the outcome is reachable through every index.
    let outcome = loaded[0].outcomes[0].clone();
    let function = loaded[0].function.id;
    assert_eq!(store.functions().unwrap()[0].outcome_count, 1);
    assert_eq!(
        store
            .outcome(&function, &outcome.id)
            .unwrap()
            .map(|(o, _)| o),
        Some(outcome.clone())
    );
    let keyed = store
        .outcomes_for_key(&function, outcome.call_key.as_ref().unwrap())
        .unwrap();
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0].id, outcome.id);
    assert_eq!(store.outcome_ids_at(&function, 0, 5).unwrap(), [outcome.id]);
    drop(store);
    // ... and it opens again as a schema 2 store, with nothing lost.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store
            .outcome(&function, &outcome.id)
            .unwrap()
            .map(|(o, _)| o),
        Some(outcome)
    );
}

#[test]
fn writer_acks_commits_and_reports_mirror_failures() {
    let dir = temp_data_dir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let failures = Arc::new(AtomicUsize::new(0));
    let counted = failures.clone();
    let writer = Writer::spawn(store.clone(), move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let function = sample_function("a");
    // A file where the functions dir should be makes every mirror write fail
    // even for root.
    fs::write(dir.path().join("functions"), "in the way").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    writer.submit_with_ack(
        Write::PutFunction(function.clone()),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    assert!(
        matches!(rx.recv().unwrap(), Err(WriteError::MirrorLagging { .. })),
        "the ack says the write is committed but its file lags"
    );
    writer.flush();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        1,
        "the mirror failure is reported"
    );
    assert_eq!(store.load().unwrap().len(), 1);
}
