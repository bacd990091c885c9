//! The background writer: back-pressure at its bound, and recovery after
//! disk errors without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cacheow_storage::test_support::{sample_function, sample_outcome, temp_data_dir};
use cacheow_storage::{Function, Store, Write, Writer, WriterOptions};

/// Holds the writer thread inside a rebuild ack until the returned sender
/// sends or drops: a store that is as slow as we like.
fn stall(writer: &Writer) -> mpsc::Sender<()> {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    writer.rebuild(None, move |_| {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    started_rx.recv().unwrap();
    release_tx
}

fn outcome_write(function: &Function, i: usize) -> Write {
    Write::PutOutcome(sample_outcome(function, &format!("k{i}"), &format!("b{i}")))
}

/// Polls `done` for up to 5 s.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn submit_blocks_at_the_queue_bound_and_loses_nothing() {
    let dir = temp_data_dir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let options = WriterOptions { queue: 8 };
    let writer = Arc::new(Writer::spawn_with(store.clone(), options, |_, _| {}));
    assert_eq!(writer.loss_window(), 8 + Writer::MAX_BATCH);
    let function = sample_function("a");
    writer.submit(Write::PutFunction(function.clone()));
    writer.flush();

    let release = stall(&writer);
    let accepted = Arc::new(AtomicUsize::new(0));
    let submitter = thread::spawn({
        let (writer, accepted, function) = (writer.clone(), accepted.clone(), function.clone());
        move || {
            for i in 0..20 {
                writer.submit(outcome_write(&function, i));
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    eventually("the queue to fill", || accepted.load(Ordering::SeqCst) == 8);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        8,
        "submit must block once `queue` writes wait"
    );
    assert!(!submitter.is_finished());

    release.send(()).unwrap();
    submitter.join().unwrap();
    writer.flush();
    assert_eq!(store.load().unwrap()[0].outcomes.len(), 20);
}

#[test]
fn a_full_queue_on_a_tokio_worker_leaves_the_other_tasks_running() {
    let dir = temp_data_dir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let writer = Arc::new(Writer::spawn_with(
        store.clone(),
        WriterOptions { queue: 2 },
        |_, _| {},
    ));
    let function = sample_function("a");
    writer.submit(Write::PutFunction(function.clone()));
    let release = stall(&writer);
    // Internal: if the blocked submit held the only worker, `ticked` would
    // run only after this release, when the submitter is done too.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let late_release = thread::spawn({
        let release = release.clone();
        move || {
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
            let _ = release.send(());
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let accepted = Arc::new(AtomicUsize::new(0));
        let submitter = tokio::spawn({
            let (writer, function, accepted) = (writer.clone(), function.clone(), accepted.clone());
            async move {
                for i in 0..5 {
                    writer.submit(outcome_write(&function, i));
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        eventually("the queue to fill", || accepted.load(Ordering::SeqCst) == 2);
        let ticked = tokio::spawn(async { 42 });
        assert_eq!(ticked.await.unwrap(), 42);
        assert!(
            !submitter.is_finished(),
            "the other task ran only after the submitter unblocked"
        );
        release.send(()).unwrap();
        submitter.await.unwrap();
    });
    writer.flush();
    assert_eq!(store.load().unwrap()[0].outcomes.len(), 5);
    drop(done_tx);
    late_release.join().unwrap();
}
