//! The background writer: one std thread that batches writes into redb
//! transactions, and a second that mirrors committed writes to the JSON
//! files, both off the request path.
//!
//! Loss window: a write is durable once the batch holding it commits. A batch
//! is everything queued while the previous one was committing (at most
//! `Writer::MAX_BATCH`); the mirror's file I/O runs on its own thread so it
//! never delays the next commit. Both queues are bounded: a full write queue
//! blocks `submit` (back-pressure, never a drop), and a full mirror queue
//! makes the writer wait for the mirror. So after a hard kill at most
//! `Writer::loss_window` writes are lost: the queued ones and the batch being
//! committed. Callers that cannot accept that wait for the write's `Ack`
//! (durable mode), which fires once the write is committed to the index and
//! its file is written.

use std::sync::Arc;
use std::sync::mpsc::{self, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{RebuildError, WriteError};
use crate::ids::FunctionId;
use crate::rebuild::RebuildReport;
use crate::store::{Store, Write};

/// Called once a write is committed to the index and mirrored to its file
/// (`Err(MirrorLagging)` when committed but not mirrored), or has failed.
pub type Ack = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

type RebuildAck = Box<dyn FnOnce(Result<RebuildReport, RebuildError>) + Send>;
type FailureHook = Arc<dyn Fn(FunctionId, &WriteError) + Send + Sync>;

/// Committed batches waiting for the mirror thread before the writer waits
/// for it, so the mirror lags the index by a bounded amount.
const MIRROR_QUEUE: usize = 4;

/// How long the mirror thread waits, idle, before clearing the index's
/// mirror marker. Internal: clearing is one more commit; waiting for a lull
/// keeps it to one per burst instead of one per batch.
const CLEAN_AFTER: Duration = Duration::from_millis(200);

/// How the background writer is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Writes that may wait for the writer thread; `submit` blocks its caller
    /// while this many are queued. At least 1.
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { queue: 256 }
    }
}

enum Command {
    // Internal: boxed so the small commands do not pay for the largest.
    Write(Box<Write>, Option<Ack>),
    Rebuild(Option<FunctionId>, RebuildAck),
    Flush(mpsc::SyncSender<()>),
}

enum MirrorCommand {
    /// A committed batch, and the acks that wait for its files.
    Files(Vec<Write>, Vec<Ack>),
    Flush(mpsc::SyncSender<()>),
}

/// Handle to the background writer. Dropping it drains the queue and joins
/// the threads.
pub struct Writer {
    tx: Option<mpsc::SyncSender<Command>>,
    thread: Option<JoinHandle<()>>,
    queue: usize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

// === impl Writer ===

impl Writer {
    /// Upper bound on writes per transaction, so one commit stays short.
    pub const MAX_BATCH: usize = 256;

    /// Starts the writer threads with the default options. `on_failure` is
    /// called (on one of them) for every write that could not be persisted,
    /// with the function it was for.
    pub fn spawn(
        store: Arc<Store>,
        on_failure: impl Fn(FunctionId, &WriteError) + Send + Sync + 'static,
    ) -> Writer {
        Writer::spawn_with(store, WriterOptions::default(), on_failure)
    }

    /// Starts the writer threads sized by `options`; see [`Writer::spawn`].
    pub fn spawn_with(
        store: Arc<Store>,
        options: WriterOptions,
        on_failure: impl Fn(FunctionId, &WriteError) + Send + Sync + 'static,
    ) -> Writer {
        let queue = options.queue.max(1);
        let (tx, rx) = mpsc::sync_channel(queue);
        let on_failure: FailureHook = Arc::new(on_failure);
        let thread = std::thread::Builder::new()
            .name("cacheow-writer".into())
            .spawn(move || run(&store, &rx, &on_failure))
            .expect("spawning the writer thread");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
            queue,
        }
    }

    /// How many submitted writes a hard kill can lose at most: the queued
    /// ones and the batch being committed. Writes whose `Ack` fired are safe.
    pub fn loss_window(&self) -> usize {
        self.queue + Writer::MAX_BATCH
    }

    /// Queues a write; failures go to the `on_failure` hook. Blocks while
    /// the queue is full.
    pub fn submit(&self, write: Write) {
        self.send(Command::Write(Box::new(write), None));
    }

    /// Queues a write and calls `ack` once it is committed and mirrored (or
    /// failed).
    /// Blocks while the queue is full.
    pub fn submit_with_ack(&self, write: Write, ack: Ack) {
        if let Some(Command::Write(_, Some(ack))) =
            self.send(Command::Write(Box::new(write), Some(ack)))
        {
            ack(Err(WriteError::WriterGone));
        }
    }

    /// Rebuilds the index from the mirror after every queued write has
    /// landed in the index and the files, then calls `ack` with the report.
    pub fn rebuild(
        &self,
        only: Option<FunctionId>,
        ack: impl FnOnce(Result<RebuildReport, RebuildError>) + Send + 'static,
    ) {
        if let Some(Command::Rebuild(_, ack)) = self.send(Command::Rebuild(only, Box::new(ack))) {
            ack(Err(RebuildError::WriterGone));
        }
    }

    /// Blocks until every write queued before this call is committed and
    /// mirrored.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.send(Command::Flush(done_tx)).is_none() {
            let _ = blocking(|| done_rx.recv());
        }
    }

    /// Sends a command, waiting for room in the queue; gives it back if the
    /// thread is gone.
    fn send(&self, command: Command) -> Option<Command> {
        let Some(tx) = &self.tx else {
            return Some(command);
        };
        match tx.try_send(command) {
            Ok(()) => None,
            Err(TrySendError::Disconnected(command)) => Some(command),
            Err(TrySendError::Full(command)) => blocking(|| tx.send(command).err().map(|e| e.0)),
        }
    }
}

/// Runs `wait`, which blocks the thread. Internal: callers may be tokio
/// worker threads (the engine submits from request handlers); on a
/// multi-thread runtime `block_in_place` hands the worker's other tasks to
/// another thread first, so a full queue slows the recording request alone.
/// A current-thread runtime has no other thread to hand them to, so there
/// the wait blocks the runtime as a std call would.
fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Internal: closing the channel lets the threads drain what is queued
        // and exit; joining makes shutdown lose nothing.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One thread's run of failures, logged once: an ERROR with the reason at
/// the first failure, an INFO with the count at the first success after it.
/// Internal: a full disk fails every batch; one line per batch would fill
/// the log (and often the same disk) while telling nothing new.
struct Episode {
    what: &'static str,
    failed: usize,
}

impl Episode {
    fn new(what: &'static str) -> Episode {
        Episode { what, failed: 0 }
    }

    /// Records the outcome of `writes` writes; `on_failure` still hears of
    /// every failed one, by function.
    fn record(
        &mut self,
        writes: usize,
        failures: &[(FunctionId, WriteError)],
        on_failure: &FailureHook,
    ) {
        let Some((function, error)) = failures.first() else {
            if self.failed > 0 {
                tracing::info!(
                    failed_writes = self.failed,
                    "{} resumed after {} failed writes",
                    self.what,
                    self.failed
                );
                self.failed = 0;
            }
            return;
        };
        if self.failed == 0 {
            tracing::error!(
                function = %function,
                error = %error,
                "{} failed; responses are still served, and later writes retry",
                self.what
            );
        }
        self.failed += writes;
        for (function, error) in failures {
            on_failure(*function, error);
        }
    }
}

/// The mirror thread: writes the files of each committed batch, and clears
/// the index's mirror marker once it has been idle for `CLEAN_AFTER`.
fn mirror_files(store: &Store, rx: &mpsc::Receiver<MirrorCommand>, on_failure: &FailureHook) {
    let mut episode = Episode::new("mirroring to the JSON files");
    let mut mirrored_since_clean = false;
    loop {
        let command = if mirrored_since_clean {
            match rx.recv_timeout(CLEAN_AFTER) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    store.mark_mirror_clean();
                    mirrored_since_clean = false;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(command) => command,
                Err(_) => break,
            }
        };
        match command {
            MirrorCommand::Files(writes, acks) => {
                let failures = store.mirror(&writes);
                store.mirrored(failures.is_empty());
                let lag = failures.first().map(|(_, e)| e.to_string());
                for ack in acks {
                    ack(match &lag {
                        None => Ok(()),
                        Some(reason) => Err(WriteError::MirrorLagging {
                            reason: reason.clone(),
                        }),
                    });
                }
                episode.record(failures.len(), &failures, on_failure);
                mirrored_since_clean = true;
            }
            MirrorCommand::Flush(done) => {
                store.mark_mirror_clean();
                mirrored_since_clean = false;
                let _ = done.send(());
            }
        }
    }
    store.mark_mirror_clean();
}

fn run(store: &Arc<Store>, rx: &mpsc::Receiver<Command>, on_failure: &FailureHook) {
    let (mirror_tx, mirror_rx) = mpsc::sync_channel::<MirrorCommand>(MIRROR_QUEUE);
    let mirror = {
        let (store, on_failure) = (store.clone(), on_failure.clone());
        std::thread::Builder::new()
            .name("cacheow-mirror".into())
            .spawn(move || mirror_files(&store, &mirror_rx, &on_failure))
            .expect("spawning the mirror thread")
    };
    let flush_mirror = || {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if mirror_tx.send(MirrorCommand::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    };

    let mut episode = Episode::new("persisting");
    let mut pending: Option<Command> = None;
    loop {
        let first = match pending.take() {
            Some(command) => command,
            None => match rx.recv() {
                Ok(command) => command,
                Err(_) => break,
            },
        };
        match first {
            Command::Flush(done) => {
                flush_mirror();
                let _ = done.send(());
            }
            Command::Rebuild(only, ack) => {
                flush_mirror();
                ack(store.rebuild_index(only));
            }
            Command::Write(write, ack) => {
                let mut writes = vec![*write];
                let mut acks: Vec<Ack> = ack.into_iter().collect();
                while writes.len() < Writer::MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Command::Write(write, ack)) => {
                            writes.push(*write);
                            acks.extend(ack);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let failures = store.commit_batch(&writes);
                episode.record(writes.len(), &failures, on_failure);
                // Internal: a durable ack waits for the files too, so an
                // answer means the outcome is in the index and the mirror.
                match failures.first().map(|(_, e)| e.to_string()) {
                    None => {
                        if let Err(mpsc::SendError(MirrorCommand::Files(_, acks))) =
                            mirror_tx.send(MirrorCommand::Files(writes, acks))
                        {
                            for ack in acks {
                                ack(Err(WriteError::MirrorLagging {
                                    reason: "the mirror thread has stopped".into(),
                                }));
                            }
                        }
                    }
                    Some(reason) => {
                        for ack in acks {
                            ack(Err(WriteError::BatchRejected {
                                reason: reason.clone(),
                            }));
                        }
                    }
                }
            }
        }
    }
    drop(mirror_tx);
    let _ = mirror.join();
}
