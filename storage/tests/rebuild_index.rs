//! rebuild-index against a mirror that lags, was hand-edited or holds
//! things that are not JSON files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cacheow_storage::test_support::{sample_function, sample_outcome, temp_data_dir};
use cacheow_storage::{Function, Outcome, RebuildReport, Store, Write};

fn outcomes_dir(data_dir: &Path, function: &Function) -> PathBuf {
    data_dir
        .canonicalize()
        .unwrap()
        .join("functions")
        .join(function.id.to_string())
        .join("outcomes")
}

/// A store holding one function with `n` outcomes, written through the API.
fn store_with_outcomes(data_dir: &Path, n: usize) -> (Store, Function, Vec<Outcome>) {
    let store = Store::open(data_dir).unwrap();
    let function = sample_function("a");
    let outcomes: Vec<Outcome> = (0..n)
        .map(|i| sample_outcome(&function, &format!("k{i}"), &format!("body {i}")))
        .collect();
    let mut writes = vec![Write::PutFunction(function.clone())];
    writes.extend(outcomes.iter().cloned().map(Write::PutOutcome));
    store.apply(&writes).unwrap();
    (store, function, outcomes)
}

/// The report indexed the one good outcome and skipped only `path`.
fn assert_only_failure(report: &RebuildReport, path: &Path, reason: &str) {
    assert_eq!(report.indexed, 1);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].path, path);
    assert!(
        report.failures[0].reason.contains(reason),
        "{:?}",
        report.failures
    );
}

#[test]
fn a_fifo_in_the_mirror_is_skipped_and_reported() {
    let dir = temp_data_dir();
    let (store, function, _) = store_with_outcomes(dir.path(), 1);
    let fifo = outcomes_dir(dir.path(), &function).join("0000000000000000.json");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo failed");

    // Internal: a read that opened the FIFO would block here forever.
    let report = store.rebuild_index(None).unwrap();
    assert_only_failure(&report, &fifo, "a FIFO");
}

#[test]
fn a_symlink_to_dev_zero_is_skipped_and_reported() {
    let dir = temp_data_dir();
    let (store, function, _) = store_with_outcomes(dir.path(), 1);
    let link = outcomes_dir(dir.path(), &function).join("0000000000000000.json");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let function_dir = outcomes_dir(dir.path(), &function)
        .parent()
        .unwrap()
        .to_owned();

    let report = store.rebuild_index(None).unwrap();
    assert_only_failure(&report, &link, "a symlink");

    // The same for the function's own file: the index keeps what it had.
    let function_file = function_dir.join("function.json");
    fs::remove_file(&function_file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &function_file).unwrap();
    let report = store.rebuild_index(None).unwrap();
    assert_eq!(report.failures[0].path, function_file);
    assert_eq!(store.load().unwrap()[0].function, function);
}

#[test]
fn an_oversized_file_is_skipped_without_reading_it() {
    let dir = temp_data_dir();
    let (store, function, _) = store_with_outcomes(dir.path(), 1);
    let big = outcomes_dir(dir.path(), &function).join("0000000000000000.json");
    // Sparse: 65 MiB long, no blocks written.
    fs::File::create(&big)
        .unwrap()
        .set_len(65 * 1024 * 1024)
        .unwrap();

    let report = store.rebuild_index(None).unwrap();
    assert_only_failure(&report, &big, "larger than 64 MiB");
}

#[test]
fn index_rows_without_files_are_restored_reported_and_kept() {
    let dir = temp_data_dir();
    let (store, function, outcomes) = store_with_outcomes(dir.path(), 3);
    let mut lost: Vec<PathBuf> = outcomes[..2]
        .iter()
        .map(|o| outcomes_dir(dir.path(), &function).join(format!("{}.json", o.id)))
        .collect();
    lost.sort();
    for path in &lost {
        fs::remove_file(path).unwrap();
    }

    let report = store.rebuild_index(None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.indexed, 1);
    assert_eq!(report.restored, lost);
    for path in &lost {
        assert!(path.is_file(), "{} was not rewritten", path.display());
    }
    let loaded = store.load().unwrap();
    assert_eq!(loaded[0].outcomes.len(), 3);

    // The rewritten files are the mirror again: a second rebuild reads them.
    let again = store.rebuild_index(None).unwrap();
    assert_eq!(again.indexed, 3);
    assert!(again.restored.is_empty());
}

#[test]
fn a_function_whose_directory_is_gone_is_restored_from_the_index() {
    let dir = temp_data_dir();
    let (store, mut function, outcomes) = store_with_outcomes(dir.path(), 2);
    function.latency_ms = 40;
    store
        .apply(&[Write::PutFunction(function.clone())])
        .unwrap();
    let function_dir = outcomes_dir(dir.path(), &function)
        .parent()
        .unwrap()
        .to_owned();
    fs::remove_dir_all(&function_dir).unwrap();

    for only in [None, Some(function.id)] {
        let report = store.rebuild_index(only).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.restored.len(), 3, "{:?}", report.restored);
        fs::remove_dir_all(&function_dir).unwrap();
    }
    let report = store.rebuild_index(None).unwrap();
    assert_eq!(report.functions, 1);
    let loaded = store.load().unwrap();
    assert_eq!(loaded[0].function, function);
    assert_eq!(loaded[0].outcomes.len(), outcomes.len());
    let text = fs::read_to_string(function_dir.join("function.json")).unwrap();
    assert!(text.contains("\"latency_ms\": 40"), "{text}");
}
