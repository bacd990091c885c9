//! A damaged index is moved aside and rebuilt from the JSON files, or
//! refused with a typed error; it is never half-read and never panics.

use std::fs;
use std::io::{Seek, SeekFrom, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use cacheow_storage::test_support::{sample_function, sample_outcome, temp_data_dir};
use cacheow_storage::{Function, Mode, OpenError, Outcome, ReadError, Store, Write};

/// A data dir holding one function (mode and latency set) with `n`
/// outcomes, closed again.
fn written_store(data_dir: &Path, n: usize) -> (Function, Vec<Outcome>) {
    let mut function = sample_function("users/{id}");
    function.mode = Mode::Mock;
    function.latency_ms = 250;
    let outcomes: Vec<Outcome> = (0..n)
        .map(|i| sample_outcome(&function, &format!("k{i}"), &format!("body {i}")))
        .collect();
    let store = Store::open(data_dir).unwrap();
    let mut writes = vec![Write::PutFunction(function.clone())];
    writes.extend(outcomes.iter().cloned().map(Write::PutOutcome));
    store.apply(&writes).unwrap();
    (function, outcomes)
}

fn index(data_dir: &Path) -> PathBuf {
    data_dir.join("cacheow.redb")
}

fn function_json(data_dir: &Path, function: &Function) -> String {
    fs::read_to_string(
        data_dir
            .join("functions")
            .join(function.id.to_string())
            .join("function.json"),
    )
    .unwrap()
}

fn moved_aside(data_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("cacheow.redb.damaged-"))
        .collect()
}

/// Overwrites `len` bytes at `offset` with 0xAB.
fn scribble(path: &Path, offset: u64, len: usize) {
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&vec![0xAB; len]).unwrap();
}

fn assert_all_there(store: &Store, function: &Function, outcomes: &[Outcome]) {
    let loaded = store.load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(&loaded[0].function, function);
    let mut ids: Vec<_> = loaded[0].outcomes.iter().map(|o| o.id).collect();
    let mut want: Vec<_> = outcomes.iter().map(|o| o.id).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn an_empty_index_next_to_a_mirror_is_moved_aside_and_rebuilt() {
    let dir = temp_data_dir();
    let (function, outcomes) = written_store(dir.path(), 3);
    let before = function_json(dir.path(), &function);
    fs::File::create(index(dir.path())).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_all_there(&store, &function, &outcomes);
    assert_eq!(function_json(dir.path(), &function), before);
    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::metadata(&aside[0]).unwrap().len(), 0);
}

#[test]
fn an_index_with_a_bad_header_next_to_a_mirror_is_rebuilt() {
    let dir = temp_data_dir();
    let (function, outcomes) = written_store(dir.path(), 3);
    scribble(&index(dir.path()), 0, 512);

    let store = Store::open(dir.path()).unwrap();
    assert_all_there(&store, &function, &outcomes);
    assert_eq!(moved_aside(dir.path()).len(), 1);
}

#[test]
fn an_empty_index_without_a_mirror_is_refused_and_left_alone() {
    let dir = temp_data_dir();
    fs::File::create(index(dir.path())).unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.is_damaged(), "{err}");
    let message = err.to_string();
    let path = index(&dir.path().canonicalize().unwrap());
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("move it away (mv "), "{message}");
    assert!(message.contains("rebuild-index --data-dir"), "{message}");
    assert_eq!(fs::metadata(index(dir.path())).unwrap().len(), 0);
    assert!(moved_aside(dir.path()).is_empty());
}

/// Garbage over a page of a 200-outcome index, at pages across it: with no
/// mirror, open and load succeed with the data written or fail with a typed
/// error, never panic; next to the mirror, open rebuilds what it finds
/// damaged, and `rebuild_offline` restores everything.
#[test]
fn garbage_in_any_page_never_panics_and_the_mirror_restores_it() {
    let dir = temp_data_dir();
    let (function, outcomes) = written_store(dir.path(), 200);
    let pristine = fs::read(index(dir.path())).unwrap();
    let len = pristine.len() as u64;
    let damage = |data_dir: &Path, offset: u64| {
        for aside in moved_aside(data_dir) {
            fs::remove_file(aside).unwrap();
        }
        fs::write(index(data_dir), &pristine).unwrap();
        scribble(&index(data_dir), offset, 4096);
    };
    let bare = temp_data_dir();
    // Internal: 32 pages spread over the file; every page took 13 s.
    for offset in (1..32).map(|i| len * i / 32 / 4096 * 4096) {
        damage(bare.path(), offset);
        let attempt = catch_unwind(AssertUnwindSafe(|| match Store::open(bare.path()) {
            Ok(store) => match store.load() {
                Ok(loaded) => {
                    for stored in &loaded {
                        assert_eq!(stored.function, function);
                        for outcome in &stored.outcomes {
                            assert!(outcomes.contains(outcome), "a half-read outcome");
                        }
                    }
                    "loaded"
                }
                Err(e @ (ReadError::Damaged { .. } | ReadError::Corrupt { .. })) => {
                    assert!(e.to_string().contains("rebuild-index"), "{e}");
                    "load refused"
                }
                Err(e) => panic!("untyped load error at {offset}: {e}"),
            },
            Err(OpenError::Damaged { .. }) => "open refused",
            Err(e) => panic!("unexpected open error at {offset}: {e}"),
        }));
        let what = attempt.unwrap_or_else(|_| panic!("a panic escaped at offset {offset}"));
        eprintln!("garbage at {offset} of {len}, no mirror: {what}");

        damage(dir.path(), offset);
        let store = Store::open(dir.path()).unwrap();
        if moved_aside(dir.path()).is_empty() {
            // Open found nothing wrong: the page held no live data.
            assert_all_there(&store, &function, &outcomes);
        }
        drop(store);

        damage(dir.path(), offset);
        let report = Store::rebuild_offline(dir.path()).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let store = Store::open(dir.path()).unwrap();
        assert_all_there(&store, &function, &outcomes);
    }
}

#[test]
fn rebuild_offline_on_a_healthy_index_keeps_what_the_mirror_lacks() {
    let dir = temp_data_dir();
    let (function, outcomes) = written_store(dir.path(), 2);
    let lost = dir
        .path()
        .join("functions")
        .join(function.id.to_string())
        .join("outcomes")
        .join(format!("{}.json", outcomes[0].id));
    fs::remove_file(&lost).unwrap();

    let report = Store::rebuild_offline(dir.path()).unwrap();
    assert_eq!(report.moved_aside, None);
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert!(lost.is_file());
    let store = Store::open(dir.path()).unwrap();
    assert_all_there(&store, &function, &outcomes);
}
