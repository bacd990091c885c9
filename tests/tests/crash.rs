//! Crashes: what a `kill -9` loses. A binary of its own so the other tests'
//! load does not skew the measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheow_tests::{Cacheow, Upstream, json_reply};
use serde_json::json;

/// Loss window after a hard kill: with --durable every acknowledged outcome
/// survives; without it, the ones lost are the last batch's. Prints the
/// measured loss so the README's figure can be checked.
#[tokio::test]
async fn kill_9_loses_nothing_in_durable_mode_and_reports_the_default_window() {
    let counter = Arc::new(AtomicUsize::new(0));
    let numbered = counter.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| {
        json_reply(&json!({"n": numbered.fetch_add(1, Ordering::SeqCst)}))
    }))
    .await;
    for durable in [true, false] {
        let flags: &[&str] = if durable { &["--durable"] } else { &[] };
        let mut cacheow = Cacheow::start(flags);
        let client = cacheow.proxied_client();
        let calls = 200;
        for _ in 0..calls {
            client
                .get(format!("{}/n", upstream.url()))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        cacheow.kill();
        let cacheow = cacheow.restart();
        let list = cacheow.get("/api/functions").await;
        let kept = list
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["outcome_count"].as_u64().unwrap() as usize)
            .sum::<usize>();
        println!("durable={durable}: {kept} of {calls} outcomes survived kill -9");
        if durable {
            assert_eq!(kept, calls);
        } else {
            // Only the batch being committed at the kill may be lost.
            assert!(kept >= calls * 3 / 4, "lost {} of {calls}", calls - kept);
        }
    }
}

/// Sum of `outcome_count` over every function.
async fn stored_outcomes(cacheow: &Cacheow) -> usize {
    let list = cacheow.get("/api/functions").await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["outcome_count"].as_u64().unwrap() as usize)
        .sum()
}

/// Distinct calls from `clients` concurrent clients until the proxy goes
/// away; counts in `acked` the calls that got their reply (each one an
/// acknowledged outcome).
fn sustained_load(
    cacheow: &Cacheow,
    upstream: &Upstream,
    clients: usize,
    acked: Arc<AtomicUsize>,
    round: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for client_no in 0..clients {
        let client = cacheow.proxied_client();
        let url = upstream.url();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            // Internal: bounded, like every load loop in the tests.
            for n in 0..100_000 {
                let reply = client
                    .get(format!("{url}/load?round={round}&client={client_no}&n={n}"))
                    .send()
                    .await;
                match reply {
                    Ok(reply) if reply.status() == 200 => {
                        if reply.bytes().await.is_ok() {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    tasks
}

/// kill -9 twenty times, each in the middle of sustained distinct load: the
/// outcomes lost per kill stay within the loss window the API reports (the
/// bounded writer queue plus the batch committing), and every store opens.
#[tokio::test]
async fn kill_9_under_sustained_load_loses_at_most_the_documented_window() {
    let counter = Arc::new(AtomicUsize::new(0));
    let numbered = counter.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| {
        json_reply(&json!({"n": numbered.fetch_add(1, Ordering::SeqCst)}))
    }))
    .await;
    let mut cacheow = Cacheow::start(&[]);
    let window = cacheow.get("/api/info").await["loss_window"]
        .as_u64()
        .expect("/api/info names the loss window") as usize;
    let mut stored = 0;
    let mut worst = 0;
    for round in 0..20 {
        let acked = Arc::new(AtomicUsize::new(0));
        let load = sustained_load(&cacheow, &upstream, 8, acked.clone(), round);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        cacheow.kill();
        for task in load {
            let _ = task.await;
        }
        let acked = acked.load(Ordering::SeqCst);
        cacheow = cacheow.restart();
        let now = stored_outcomes(&cacheow).await;
        let lost = (stored + acked).saturating_sub(now);
        worst = worst.max(lost);
        println!("round {round}: {acked} acknowledged, {lost} lost (window {window})");
        assert!(
            lost <= window,
            "round {round}: lost {lost} > window {window}"
        );
        stored = now;
    }
    println!("worst loss per kill: {worst} of a window of {window}");
}

/// A copy of a data dir (`cp -a`), as a new temp dir.
fn copy_of(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// After a kill -9 the mirror may lag the index; rebuild-index (which reads
/// the mirror) must still keep every committed outcome.
#[tokio::test]
async fn rebuild_index_after_kill_9_loses_nothing_committed() {
    let counter = Arc::new(AtomicUsize::new(0));
    let numbered = counter.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| {
        json_reply(&json!({"n": numbered.fetch_add(1, Ordering::SeqCst)}))
    }))
    .await;
    let mut cacheow = Cacheow::start(&[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = sustained_load(&cacheow, &upstream, 8, acked.clone(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    cacheow.kill();
    for task in load {
        let _ = task.await;
    }

    // One copy says what was committed; the other is rebuilt from its mirror first.
    let committed_dir = copy_of(cacheow.data_dir());
    let rebuilt_dir = copy_of(cacheow.data_dir());
    let rebuild = std::process::Command::new(cacheow_tests::cacheow_bin())
        .args(["rebuild-index", "--data-dir"])
        .arg(rebuilt_dir.path())
        .output()
        .unwrap();
    let rebuild_out = String::from_utf8_lossy(&rebuild.stdout).into_owned()
        + &String::from_utf8_lossy(&rebuild.stderr);
    assert!(!rebuild_out.contains("panicked at"), "{rebuild_out}");
    let committed = stored_outcomes(&Cacheow::start_on(committed_dir, &[])).await;
    let after_rebuild = stored_outcomes(&Cacheow::start_on(rebuilt_dir, &[])).await;
    println!(
        "{} acknowledged, {committed} committed, {after_rebuild} after rebuild-index: {rebuild_out}",
        acked.load(Ordering::SeqCst)
    );
    assert!(committed > 0);
    assert!(
        after_rebuild >= committed,
        "rebuild-index dropped {} committed outcomes",
        committed - after_rebuild
    );
}
