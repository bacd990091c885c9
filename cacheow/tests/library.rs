//! `#[cacheow]` end to end in a real process: each case runs in a child
//! process of this test binary, because cacheow reads `CACHEOW_ENABLE` and
//! opens its data dir once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheow::{FunctionId, MockEntry, Mode, NewOutcome, cacheow, function_id};
use futures_util::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Set in the child: the case to run.
const CASE: &str = "CACHEOW_TEST_CASE";

/// Runs `case` in a child process with cacheow enabled on a fresh data dir
/// (`env` adds or overrides variables). In the parent it returns the data
/// dir for checks on disk once the child has exited; in the child, `None`.
fn in_child(case: &str, env: &[(&str, &str)], body: impl FnOnce()) -> Option<PathBuf> {
    if std::env::var(CASE).as_deref() == Ok(case) {
        body();
        return None;
    }
    let dir = tempfile::tempdir().unwrap().keep();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env("CACHEOW_ENABLE", "1")
        .env("CACHEOW_DATA_DIR", &dir)
        .env("CACHEOW_START_SERVER", "0");
    for (key, value) in env {
        child.env(key, value);
    }
    let output = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "case {case} failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Internal: a case name that matches no test would run nothing and
    // pass; the child must have run exactly this one.
    assert!(
        stdout.contains("test result: ok. 1 passed;"),
        "case {case} did not run exactly one test in the child:\n{stdout}"
    );
    Some(dir)
}

fn function_dir(dir: &Path, id: FunctionId) -> PathBuf {
    dir.join("functions").join(id.to_string())
}

/// The outcome files of a function, oldest first.
fn outcome_files(dir: &Path, id: FunctionId) -> Vec<(PathBuf, Value)> {
    let outcomes = function_dir(dir, id).join("outcomes");
    let mut files: Vec<_> = std::fs::read_dir(&outcomes)
        .unwrap_or_else(|e| panic!("{}: {e}", outcomes.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (path, value)
        })
        .collect();
    files.sort_by_key(|(_, file)| file["created_at"].to_string());
    files
}

fn manager() -> &'static cacheow::Manager {
    cacheow::get_manager().expect("CACHEOW_ENABLE=1 in the child")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// === sync ===

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
fn slow_square(x: u64) -> u64 {
    SQUARES.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[test]
fn sync_records_replays_from_cache_and_mocks_unseen_arguments() {
    let case = "sync_records_replays_from_cache_and_mocks_unseen_arguments";
    let Some(dir) = in_child(case, &[], || {
        let id = function_id!(slow_square);
        assert_eq!((slow_square(3), slow_square(3)), (9, 9));
        assert_eq!(
            SQUARES.load(Ordering::SeqCst),
            2,
            "default mode always runs"
        );

        manager().set_mode(id, Mode::Cache);
        assert_eq!(slow_square(3), 9);
        assert_eq!(
            SQUARES.load(Ordering::SeqCst),
            2,
            "a cache hit runs nothing"
        );
        assert_eq!(slow_square(4), 16);
        assert_eq!(SQUARES.load(Ordering::SeqCst), 3, "a miss runs and records");

        manager().set_mode(id, Mode::Mock);
        manager().set_latency(id, 150);
        let started = Instant::now();
        let mocked = slow_square(1_000);
        assert!(
            mocked == 9 || mocked == 16,
            "a recorded outcome, got {mocked}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "latency in mock mode"
        );
        assert_eq!(
            SQUARES.load(Ordering::SeqCst),
            3,
            "mock never runs the body"
        );

        manager().set_mode(id, Mode::Cache);
        let started = Instant::now();
        assert_eq!(slow_square(4), 16);
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "latency in cache mode"
        );
        let stats = manager().function(id).unwrap().stats();
        assert_eq!((stats.cache_hits, stats.mock_calls), (2, 1));
    }) else {
        return;
    };
    let id = function_id!(slow_square);
    let files = outcome_files(&dir, id);
    let values: Vec<_> = files.iter().map(|(_, f)| f["value"].clone()).collect();
    assert_eq!(values, [json!(9), json!(16)]);
    assert_eq!(
        files[0].1["count"], 2,
        "the repeat is counted, not stored twice"
    );
    assert_eq!(
        files[0].1["request"],
        json!({"args": [3]}),
        "the arguments, for people"
    );
    let function: Value = serde_json::from_slice(
        &std::fs::read(function_dir(&dir, id).join("function.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(function["kind"], "sync");
    assert_eq!(function["name"], "library::slow_square");
    assert_eq!(function["mode"], "cache");
}

// === async, Result ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LookupError {
    NotFound(String),
    Timeout,
}

static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
async fn lookup(name: String) -> Result<u32, LookupError> {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    match name.as_str() {
        "ada" => Ok(36),
        _ => Err(LookupError::NotFound(name)),
    }
}

#[test]
fn async_results_record_err_as_exceptions_and_replay_the_same_err() {
    let case = "async_results_record_err_as_exceptions_and_replay_the_same_err";
    let Some(dir) = in_child(case, &[], || {
        runtime().block_on(async {
            let id = function_id!(lookup);
            manager().set_mode(id, Mode::Cache);
            assert_eq!(lookup("ada".into()).await, Ok(36));
            let missing = Err(LookupError::NotFound("bob".into()));
            assert_eq!(lookup("bob".into()).await, missing);
            assert_eq!(lookup("ada".into()).await, Ok(36));
            assert_eq!(lookup("bob".into()).await, missing);
            assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2, "both replayed");

            // A manual exception (as the panel adds) that `LookupError` can
            // be built from replays as that `Err`.
            let function = manager().function(id).unwrap();
            let manual = function
                .add_manual(None, NewOutcome::exception("Timeout", "upstream too slow"))
                .expect("LookupError has a Timeout variant")
                .outcome_id;
            manager()
                .set_mock_entries(
                    id,
                    vec![MockEntry {
                        outcome_id: manual,
                        weight: 1.0,
                        enabled: true,
                        ignore_args: true,
                    }],
                )
                .unwrap();
            manager().set_mode(id, Mode::Mock);
            assert_eq!(lookup("zed".into()).await, Err(LookupError::Timeout));
            assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2);
        });
    }) else {
        return;
    };
    let files = outcome_files(&dir, function_id!(lookup));
    let (_, err) = files
        .iter()
        .find(|(_, f)| f["outcome_type"] == "exception" && f["is_manual"] == false)
        .expect("the Err is on disk");
    assert_eq!(err["exception_type"], "LookupError");
    assert_eq!(err["value"], json!({"NotFound": "bob"}));
    let function: Value = serde_json::from_slice(
        &std::fs::read(function_dir(&dir, function_id!(lookup)).join("function.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(function["kind"], "async");
}

// === streams ===

static STREAMS: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
fn tokens(prompt: String) -> impl Stream<Item = Result<String, String>> {
    STREAMS.fetch_add(1, Ordering::SeqCst);
    let mut items: Vec<Result<String, String>> =
        prompt.split(' ').map(|word| Ok(word.to_owned())).collect();
    if prompt.contains("fail") {
        items.push(Err("quota exceeded".into()));
    }
    stream::iter(items)
}

#[test]
fn streams_record_items_and_a_terminal_error_and_replay_them() {
    let case = "streams_record_items_and_a_terminal_error_and_replay_them";
    let Some(dir) = in_child(case, &[], || {
        runtime().block_on(async {
            let id = function_id!(tokens);
            manager().set_mode(id, Mode::Cache);
            let ok: Vec<_> = tokens("hello there".into()).collect().await;
            let failing: Vec<_> = tokens("this will fail".into()).collect().await;
            assert_eq!(failing.last(), Some(&Err("quota exceeded".to_owned())));
            // Dropped half way: counted, not recorded.
            let first = tokens("never finished".into()).next().await;
            assert_eq!(first, Some(Ok("never".to_owned())));
            assert_eq!(STREAMS.load(Ordering::SeqCst), 3);

            assert_eq!(tokens("hello there".into()).collect::<Vec<_>>().await, ok);
            assert_eq!(
                tokens("this will fail".into()).collect::<Vec<_>>().await,
                failing
            );
            assert_eq!(STREAMS.load(Ordering::SeqCst), 3, "replays run nothing");
            assert_eq!(manager().function(id).unwrap().outcome_count(), 2);
        });
    }) else {
        return;
    };
    let files = outcome_files(&dir, function_id!(tokens));
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|(_, f)| f["outcome_type"] == "stream"));
    let (_, failing) = files
        .iter()
        .find(|(_, f)| f["exception_type"].is_string())
        .unwrap();
    assert_eq!(failing["value"]["items"], json!(["this", "will", "fail"]));
    assert_eq!(failing["value"]["error"], "quota exceeded");
}

// === methods, ignore, name ===

struct Client {
    calls: AtomicUsize,
}

impl Client {
    #[cacheow(ignore = "trace_id")]
    fn complete(&self, prompt: &str, trace_id: u64) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        format!("echo {prompt} ({trace_id})")
    }

    #[cacheow(name = "pinned::name")]
    fn pinned(&self) -> u8 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        7
    }
}

#[test]
fn methods_leave_self_and_ignored_arguments_out_of_the_key() {
    let case = "methods_leave_self_and_ignored_arguments_out_of_the_key";
    in_child(case, &[], || {
        let client = Client {
            calls: AtomicUsize::new(0),
        };
        let id = function_id!(Client::complete);
        manager().set_mode(id, Mode::Cache);
        assert_eq!(client.complete("hi", 1), "echo hi (1)");
        assert_eq!(
            client.complete("hi", 2),
            "echo hi (1)",
            "trace_id is not in the key"
        );
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
        let function = manager()
            .function(id)
            .expect("the method's id is what function_id! says");
        assert_eq!(function.snapshot().name, "library::Client::complete");

        assert_eq!(client.pinned(), 7);
        let pinned = manager()
            .function(FunctionId::for_identity("pinned::name"))
            .expect("a pinned name is the identity");
        assert_eq!(pinned.outcome_count(), 1);
    });
}

// === off ===

static OFF_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
fn counted() -> usize {
    OFF_CALLS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn disabled_functions_run_their_body_and_touch_no_disk() {
    let case = "disabled_functions_run_their_body_and_touch_no_disk";
    let Some(dir) = in_child(case, &[("CACHEOW_ENABLE", "0")], || {
        assert!(cacheow::get_manager().is_none());
        assert!(cacheow::init_error().is_none());
        assert_eq!((counted(), counted()), (1, 2));
    }) else {
        return;
    };
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing written"
    );
}

// === bad outcomes ===

#[test]
fn a_cached_outcome_that_no_longer_fits_the_type_falls_back_to_the_body() {
    let case = "a_cached_outcome_that_no_longer_fits_the_type_falls_back_to_the_body";
    in_child(case, &[], || {
        let id = function_id!(slow_square);
        assert_eq!(slow_square(5), 25);
        // A hand edit gone wrong, then rebuild-index.
        let dir = manager().data_dir();
        let (path, mut file) = outcome_files(&dir, id).remove(0);
        file["value"] = json!("twenty-five");
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        runtime()
            .block_on(manager().engine().rebuild_index(Some(id)))
            .unwrap();

        manager().set_mode(id, Mode::Cache);
        assert_eq!(slow_square(5), 25);
        assert_eq!(SQUARES.load(Ordering::SeqCst), 2, "fell back to the body");
    });
}

#[cacheow]
fn never_recorded(x: u8) -> u8 {
    x
}

#[test]
fn mock_mode_with_nothing_to_replay_panics_with_what_to_do() {
    let case = "mock_mode_with_nothing_to_replay_panics_with_what_to_do";
    in_child(case, &[], || {
        manager().set_mode(function_id!(never_recorded), Mode::Mock);
        let panic = std::panic::catch_unwind(|| never_recorded(1)).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("library::never_recorded"), "{message}");
        assert!(message.contains("mock mode"), "{message}");
        assert!(message.contains("add a manual outcome"), "{message}");
    });
}

#[test]
fn a_failing_disk_never_changes_a_result() {
    let case = "a_failing_disk_never_changes_a_result";
    in_child(case, &[], || {
        let dir = manager().data_dir();
        // A file where the mirror's directory must go makes every mirror
        // write fail, even for root.
        std::fs::write(dir.join("functions"), "in the way").unwrap();
        for x in 0..3 {
            assert_eq!(slow_square(x), x * x);
        }
        let id = function_id!(slow_square);
        manager().set_mode(id, Mode::Cache);
        assert_eq!(slow_square(2), 4, "recorded in memory, replayed");
        assert_eq!(SQUARES.load(Ordering::SeqCst), 3);
        let stats = manager().function(id).unwrap().stats();
        assert!(stats.persist_failures >= 1, "{stats:?}");
    });
}

static STAMPS: AtomicUsize = AtomicUsize::new(0);

#[cacheow(ttl = "300ms")]
fn stamped(x: u64) -> usize {
    let _ = x;
    STAMPS.fetch_add(1, Ordering::SeqCst) + 1
}

#[test]
fn ttl_replays_within_it_and_runs_the_body_again_after_it() {
    let case = "ttl_replays_within_it_and_runs_the_body_again_after_it";
    in_child(case, &[], || {
        manager().set_mode(function_id!(stamped), Mode::Cache);
        assert_eq!(stamped(1), 1);
        assert_eq!(stamped(1), 1, "replayed within the ttl");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(stamped(1), 2, "past the ttl the body runs again");
        assert_eq!(stamped(1), 2, "and its new result replays");
        assert_eq!(STAMPS.load(Ordering::SeqCst), 2);
    });
}

static FLAKY_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cacheow(stale_if_error = "forever")]
fn flaky_quote(symbol: String) -> Result<u32, String> {
    let _ = symbol;
    if FLAKY_DOWN.load(Ordering::SeqCst) {
        Err("the quote service is down".into())
    } else {
        Ok(42)
    }
}

#[test]
fn stale_if_error_returns_the_last_good_result_when_the_body_fails() {
    let case = "stale_if_error_returns_the_last_good_result_when_the_body_fails";
    let Some(dir) = in_child(case, &[], || {
        assert_eq!(flaky_quote("X".into()), Ok(42));
        FLAKY_DOWN.store(true, Ordering::SeqCst);
        assert_eq!(flaky_quote("X".into()), Ok(42), "the stale result");
        assert_eq!(
            flaky_quote("Y".into()),
            Err("the quote service is down".into()),
            "nothing good for another call"
        );
        let stats = manager()
            .function(function_id!(flaky_quote))
            .unwrap()
            .stats();
        assert_eq!(stats.stale_served, 1);
        manager().flush();
    }) else {
        return;
    };
    let files = outcome_files(&dir, FunctionId::for_identity("library::flaky_quote"));
    assert_eq!(files.len(), 3, "the failures are recorded too");
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
fn slow_once(x: u64) -> u64 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    x + 1
}

#[cacheow]
async fn slow_once_async(x: u64) -> u64 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    x + 1
}

#[test]
fn identical_concurrent_calls_run_the_body_once() {
    let case = "identical_concurrent_calls_run_the_body_once";
    in_child(case, &[], || {
        manager().set_mode(function_id!(slow_once), Mode::Cache);
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| slow_once(1)))
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), 2);
        }
        assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1, "8 threads, one run");
        let stats = manager().function(function_id!(slow_once)).unwrap().stats();
        assert_eq!(stats.coalesced + stats.cache_hits, 7, "{stats:?}");

        manager().set_mode(function_id!(slow_once_async), Mode::Cache);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results = runtime.block_on(async {
            let calls: Vec<_> = (0..8).map(|_| tokio::spawn(slow_once_async(5))).collect();
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.unwrap());
            }
            results
        });
        assert_eq!(results, vec![6; 8]);
        assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 2, "8 tasks, one more run");
    });
}

static MAYBE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheow(cache_if = "ok")]
fn maybe(x: u32) -> Result<u32, String> {
    if MAYBE_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        Err("first try fails".into())
    } else {
        Ok(x)
    }
}

#[test]
fn cache_if_ok_replays_results_but_not_errors() {
    let case = "cache_if_ok_replays_results_but_not_errors";
    in_child(case, &[], || {
        manager().set_mode(function_id!(maybe), Mode::Cache);
        assert_eq!(maybe(7), Err("first try fails".into()));
        assert_eq!(maybe(7), Ok(7), "the recorded Err is not replayed");
        assert_eq!(maybe(7), Ok(7));
        assert_eq!(MAYBE_RUNS.load(Ordering::SeqCst), 2, "the Ok replays");
    });
}

#[test]
fn scoped_overrides_refresh_skip_recording_and_apply_to_async_calls() {
    let case = "scoped_overrides_refresh_skip_recording_and_apply_to_async_calls";
    let Some(dir) = in_child(case, &[], || {
        let id = function_id!(slow_square);
        manager().set_mode(id, Mode::Cache);
        assert_eq!(slow_square(5), 25);
        let refresh = cacheow::Overrides {
            refresh: true,
            ..Default::default()
        };
        cacheow::with_overrides(refresh, || slow_square(5));
        assert_eq!(SQUARES.load(Ordering::SeqCst), 2, "refresh runs the body");
        let no_store = cacheow::Overrides {
            no_store: true,
            ..Default::default()
        };
        cacheow::with_overrides(no_store, || slow_square(6));
        assert_eq!(slow_square(5), 25);
        assert_eq!(
            SQUARES.load(Ordering::SeqCst),
            3,
            "outside the scope, cache again"
        );
        manager().set_mode(function_id!(lookup), Mode::Cache);
        runtime().block_on(cacheow::with_overrides_async(refresh, async {
            for _ in 0..2 {
                assert!(matches!(lookup("ada".into()).await, Ok(36)));
            }
        }));
        assert_eq!(
            LOOKUPS.load(Ordering::SeqCst),
            2,
            "both scoped async calls ran the body"
        );
        let stats = manager().function(id).unwrap().stats();
        assert_eq!(stats.unrecorded.get("no_store"), Some(&1), "{stats:?}");
        manager().flush();
    }) else {
        return;
    };
    let files = outcome_files(&dir, FunctionId::for_identity("library::slow_square"));
    assert_eq!(
        files.len(),
        1,
        "5 once (refreshed to the same result), 6 never"
    );
}

#[cacheow(ttl = "soon")]
fn badly_configured() -> u8 {
    1
}

#[test]
fn an_invalid_setting_panics_at_the_first_call_saying_why() {
    let case = "an_invalid_setting_panics_at_the_first_call_saying_why";
    in_child(case, &[], || {
        let panic = std::panic::catch_unwind(badly_configured).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("ttl = \"soon\""), "{message}");
        assert!(message.contains("library::badly_configured"), "{message}");
    });
}

static REVALIDATIONS: AtomicUsize = AtomicUsize::new(0);

#[cacheow(ttl = "100ms", stale_while_revalidate = "1m")]
fn revalidated(x: u8) -> usize {
    let _ = x;
    let n = REVALIDATIONS.fetch_add(1, Ordering::SeqCst) + 1;
    std::thread::sleep(Duration::from_millis(200));
    n
}

#[test]
fn stale_while_revalidate_refreshes_in_one_call_while_others_get_the_stale_result() {
    let case = "stale_while_revalidate_refreshes_in_one_call_while_others_get_the_stale_result";
    in_child(case, &[], || {
        manager().set_mode(function_id!(revalidated), Mode::Cache);
        assert_eq!(revalidated(1), 1);
        std::thread::sleep(Duration::from_millis(150));
        let refreshing = std::thread::spawn(|| revalidated(1));
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(revalidated(1), 1, "stale while the refresh runs");
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            refreshing.join().unwrap(),
            2,
            "the refreshing call runs the body"
        );
        assert_eq!(revalidated(1), 2, "then the refreshed result replays");
        assert_eq!(REVALIDATIONS.load(Ordering::SeqCst), 2);

        manager().set_mode(function_id!(flaky_revalidated), Mode::Cache);
        assert_eq!(flaky_revalidated(1), Ok(1));
        std::thread::sleep(Duration::from_millis(150));
        FLAKY_REVALIDATION_DOWN.store(true, Ordering::SeqCst);
        assert_eq!(
            flaky_revalidated(1),
            Ok(1),
            "a failed refresh answers stale"
        );
        assert_eq!(
            flaky_revalidated(1),
            Ok(1),
            "and the failure never replaces it"
        );
        let stats = manager()
            .function(function_id!(flaky_revalidated))
            .unwrap()
            .stats();
        assert_eq!(
            stats.unrecorded.get("refresh_failed"),
            Some(&2),
            "{stats:?}"
        );
    });
}

static FLAKY_REVALIDATION_DOWN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[cacheow(ttl = "100ms", stale_while_revalidate = "1m")]
fn flaky_revalidated(x: u8) -> Result<u8, String> {
    if FLAKY_REVALIDATION_DOWN.load(Ordering::SeqCst) {
        Err("down".into())
    } else {
        Ok(x)
    }
}
