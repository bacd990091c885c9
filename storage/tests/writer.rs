//! The background writer: back-pressure at its bound, and recovery after
//! disk errors without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cacheow_storage::test_support::{sample_function, sample_outcome, temp_data_dir};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cacheow_storage::{Function, Store, Write, WriteError, Writer, WriterOptions};

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

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: cacheow_storage::test_support::TempDataDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = temp_data_dir();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
}

/// Submits `write` and waits for its ack.
fn durable(writer: &Writer, write: Write) -> Result<(), WriteError> {
    let (tx, rx) = mpsc::channel();
    writer.submit_with_ack(
        write,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    rx.recv().unwrap()
}

fn outcome_file(store: &Store, function: &Function, write: &Write) -> PathBuf {
    let Write::PutOutcome(outcome) = write else {
        panic!("not an outcome")
    };
    store
        .data_dir()
        .join("functions")
        .join(function.id.to_string())
        .join("outcomes")
        .join(format!("{}.json", outcome.id))
}

#[test]
fn commits_resume_after_the_disk_fills_and_frees_without_a_restart() {
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        return;
    };
    let store = Arc::new(Store::open(&tmpfs.path().join("data")).unwrap());
    let failed_writes = Arc::new(AtomicUsize::new(0));
    let writer = Writer::spawn(store.clone(), {
        let failed_writes = failed_writes.clone();
        move |_, _| {
            failed_writes.fetch_add(1, Ordering::SeqCst);
        }
    });
    let function = sample_function("a");
    durable(&writer, Write::PutFunction(function.clone())).unwrap();

    let filler = tmpfs.path().join("filler");
    fill(&filler);
    let big = |i: usize| {
        Write::PutOutcome(sample_outcome(
            &function,
            &format!("full{i}"),
            &"x".repeat(64 * 1024),
        ))
    };
    let first_error = (0..64)
        .find_map(|i| durable(&writer, big(i)).err())
        .expect("a commit fails once the disk is full");
    eprintln!("the full disk gave: {first_error}");
    // While full, the index stays poisoned or unavailable: still no commit.
    assert!(durable(&writer, big(100)).is_err());

    fs::remove_file(&filler).unwrap();
    // The same Store and Writer: writes commit again (the reopen is retried
    // at most once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let recovered = loop {
        n += 1;
        let write = outcome_write(&function, n);
        match durable(&writer, write.clone()) {
            Ok(()) => break write,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    };
    writer.flush();
    assert!(failed_writes.load(Ordering::SeqCst) >= 2);
    let Write::PutOutcome(outcome) = &recovered else {
        unreachable!()
    };
    let loaded = store.load().unwrap();
    assert!(loaded[0].outcomes.iter().any(|o| o.id == outcome.id));
    assert!(outcome_file(&store, &function, &recovered).is_file());
    // Outcomes committed while the disk was full but never mirrored were
    // rewritten from the index once mirroring worked again.
    for outcome in &loaded[0].outcomes {
        let file = outcome_file(&store, &function, &Write::PutOutcome(outcome.clone()));
        assert!(file.is_file(), "{} is missing", file.display());
    }
    drop(writer);
    drop(store);
}

/// Blocks every mirror write, even for root: a file where the functions dir
/// should be.
fn block_mirror(store: &Store) -> PathBuf {
    let functions = store.data_dir().join("functions");
    fs::write(&functions, "in the way").unwrap();
    functions
}

/// `function.json` and the file of each outcome in `writes` exist.
fn assert_mirrored(store: &Store, function: &Function, writes: &[Write]) {
    let mut files = vec![
        store
            .data_dir()
            .join("functions")
            .join(function.id.to_string())
            .join("function.json"),
    ];
    files.extend(writes.iter().map(|w| outcome_file(store, function, w)));
    for file in files {
        assert!(file.is_file(), "{} is missing", file.display());
    }
}

/// Commits `function` and `writes`, waiting for each ack; a file that
/// lags its commit is what these tests are about.
fn record(writer: &Writer, function: &Function, writes: &[Write]) {
    let committed = |write: Write| match durable(writer, write) {
        Ok(()) | Err(WriteError::MirrorLagging { .. }) => {}
        Err(e) => panic!("not committed: {e}"),
    };
    committed(Write::PutFunction(function.clone()));
    for write in writes {
        committed(write.clone());
    }
}

#[test]
fn the_first_mirror_success_after_failures_rewrites_what_they_missed() {
    let dir = temp_data_dir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let writer = Writer::spawn(store.clone(), |_, _| {});
    let function = sample_function("a");
    let blocked = block_mirror(&store);
    let mut writes = vec![outcome_write(&function, 0), outcome_write(&function, 1)];
    record(&writer, &function, &writes);
    writer.flush();
    fs::remove_file(&blocked).unwrap();

    writes.push(outcome_write(&function, 2));
    durable(&writer, writes[2].clone()).unwrap();
    writer.flush();
    assert_mirrored(&store, &function, &writes);
}

#[test]
fn open_rewrites_files_the_mirror_had_not_written_before_the_stop() {
    let dir = temp_data_dir();
    let function = sample_function("a");
    let writes = vec![outcome_write(&function, 0), outcome_write(&function, 1)];
    let blocked = {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let writer = Writer::spawn(store.clone(), |_, _| {});
        let blocked = block_mirror(&store);
        record(&writer, &function, &writes);
        // Internal: like a kill before the mirror caught up: the index has
        // the writes, the files do not.
        blocked
    };
    fs::remove_file(&blocked).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_mirrored(&store, &function, &writes);
}

#[test]
fn a_clean_stop_leaves_no_walk_for_the_next_open() {
    let dir = temp_data_dir();
    let function = sample_function("a");
    let write = outcome_write(&function, 0);
    {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let writer = Writer::spawn(store.clone(), |_, _| {});
        durable(&writer, Write::PutFunction(function.clone())).unwrap();
        durable(&writer, write.clone()).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let file = outcome_file(&store, &function, &write);
    drop(store);
    fs::remove_file(&file).unwrap();
    // The marker was cleared on the clean stop, so open does not look at the
    // files (rebuild-index is what restores a hand-deleted one).
    let store = Store::open(dir.path()).unwrap();
    assert!(!file.exists());
    assert_eq!(store.load().unwrap()[0].outcomes.len(), 1);
}
