//! What a disk can do to the store (issue 11): run out of space and come
//! back, hold a damaged or empty index, odd files in the mirror, a typo in
//! an outcome file; and who may read the files. Disk-full tests mount a
//! small tmpfs of their own (they need root, as CI has).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheow_tests::{Cacheow, Upstream, eventually, json_reply, outcome_files};
use serde_json::json;

/// A tmpfs of `size` mounted on a temp dir; unmounted on drop.
struct Tmpfs {
    mount: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let mount = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root to fill a disk of its own"
        );
        Tmpfs { mount }
    }

    fn data_dir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.mount.path()).unwrap()
    }

    /// Fills the disk to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.write_all(&[0u8]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

fn counting_upstream_handler() -> cacheow_tests::Handler {
    let counter = Arc::new(AtomicUsize::new(0));
    Arc::new(move |_, _| json_reply(&json!({"n": counter.fetch_add(1, Ordering::SeqCst)})))
}

#[tokio::test]
async fn after_a_full_disk_new_outcomes_persist_again_without_a_restart() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let disk = Tmpfs::mount("24m");
    let mut cacheow = Cacheow::start_on(disk.data_dir(), &[]);
    let client = cacheow.proxied_client();
    let call = |path: String| {
        let client = client.clone();
        async move { client.get(path).send().await.unwrap().status() }
    };
    assert_eq!(call(format!("{}/before", upstream.url())).await, 200);
    cacheow.get("/api/functions").await;

    let filler = disk.fill();
    for n in 0..5 {
        let status = call(format!("{}/full?n={n}", upstream.url())).await;
        assert_eq!(status, 200, "a full disk never breaks a default-mode reply");
    }
    let full = cacheow.function("/full").await;
    let full_id = full["id"].as_str().unwrap().to_owned();
    eventually("persist failures are counted", || async {
        cacheow.get(&format!("/api/functions/{full_id}")).await["stats"]["persist_failures"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;

    std::fs::remove_file(filler).unwrap();
    for n in 0..5 {
        assert_eq!(call(format!("{}/after?n={n}", upstream.url())).await, 200);
    }
    let after = cacheow.function("/after").await;
    let after_id = after["id"].as_str().unwrap().to_owned();
    let data_dir = cacheow.data_dir().to_owned();
    eventually(
        "outcomes recorded after the disk freed up reach the files",
        || {
            let files = outcome_files(&data_dir, &after_id).len();
            async move { files == 5 }
        },
    )
    .await;
    let logs = cacheow.logs();
    let errors = logs.matches("failed; responses are still served").count();
    assert!(
        (1..=2).contains(&errors),
        "the failure episode (index, files) is logged once, not per write: {errors} lines"
    );
    assert!(
        logs.contains("resumed after"),
        "and its end is logged: {logs}"
    );

    cacheow.kill();
    let cacheow = cacheow.restart();
    let after = cacheow.function("/after").await;
    assert_eq!(
        after["outcome_count"], 5,
        "they are committed to the index too"
    );
}

#[tokio::test]
async fn durable_mode_on_a_full_disk_never_answers_2xx_for_an_unstored_outcome() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let disk = Tmpfs::mount("24m");
    let cacheow = Cacheow::start_on(disk.data_dir(), &["--durable"]);
    let client = cacheow.proxied_client();
    let reply = client
        .get(format!("{}/warm", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let filler = disk.fill();
    let mut refused = 0;
    for n in 0..5 {
        let reply = client
            .get(format!("{}/durable?n={n}", upstream.url()))
            .send()
            .await
            .unwrap();
        assert!(
            !reply.status().is_success(),
            "call {n} answered {}",
            reply.status()
        );
        assert_eq!(reply.status(), 507);
        assert_eq!(reply.headers()["x-cacheow-error"], "persist_failed");
        refused += 1;
    }
    assert_eq!(refused, 5);
    let warm = cacheow.function("/warm").await;
    let id = warm["id"].as_str().unwrap().to_owned();
    let (status, reply) = cacheow
        .api(
            http::Method::POST,
            &format!("/api/functions/{id}/outcomes/manual"),
            Some(json!({"outcome_type": "return", "value": {"status": 201, "headers": {}, "body": "manual"}})),
        )
        .await;
    assert_eq!(
        status, 507,
        "no API ok for a manual outcome that was not stored: {reply}"
    );
    let outcomes = cacheow.get(&format!("/api/functions/{id}")).await["outcomes"].clone();
    assert_eq!(
        outcomes.as_array().unwrap().len(),
        1,
        "and it is not kept in memory: {outcomes}"
    );

    std::fs::remove_file(filler).unwrap();
    let reply = client
        .get(format!("{}/durable?n=after", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        200,
        "space is back, so durable replies are too"
    );
}

/// Records a function in cache mode with a latency, and `extra` distinct
/// outcomes; stops cacheow gracefully.
async fn recorded_store(upstream: &Upstream, extra: usize) -> (Cacheow, String) {
    let mut cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/kept", upstream.url()))
        .send()
        .await
        .unwrap();
    for n in 0..extra {
        client
            .get(format!("{}/many?n={n}", upstream.url()))
            .send()
            .await
            .unwrap();
    }
    let kept = cacheow.function("/kept").await;
    let id = kept["id"].as_str().unwrap().to_owned();
    cacheow.set_mode(&id, "cache").await;
    cacheow
        .post(
            &format!("/api/functions/{id}/latency"),
            json!({"latency_ms": 7}),
        )
        .await;
    cacheow.stop();
    (cacheow, id)
}

/// `cacheow serve` on a data dir, expected to exit (or be stopped) within
/// 10 s; returns (exit code, stderr).
fn serve_briefly(data_dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(cacheow_tests::cacheow_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_empty_index_is_rebuilt_from_the_files_and_settings_survive() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let (cacheow, id) = recorded_store(&upstream, 3).await;
    let index = cacheow.data_dir().join("cacheow.redb");
    std::fs::write(&index, b"").unwrap();
    let function_file = cacheow
        .data_dir()
        .join("functions")
        .join(&id)
        .join("function.json");
    let before = std::fs::read(&function_file).unwrap();

    let cacheow = cacheow.restart();
    let kept = cacheow.function("/kept").await;
    assert_eq!(
        kept["mode"], "cache",
        "the mode came back from function.json"
    );
    assert_eq!(kept["latency_ms"], 7);
    assert_eq!(cacheow.function("/many").await["outcome_count"], 3);
    let hits = upstream.hits();
    let reply = cacheow
        .proxied_client()
        .get(format!("{}/kept", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["x-cacheow-source"], "cache");
    assert_eq!(upstream.hits(), hits);
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&function_file).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(after["mode"], before["mode"]);
    assert_eq!(after["latency_ms"], before["latency_ms"]);
    assert!(
        cacheow.logs().contains("damaged"),
        "the move is logged: {}",
        cacheow.logs()
    );
}

#[tokio::test]
async fn a_damaged_index_never_panics_and_rebuild_index_restores_it() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let (cacheow, _) = recorded_store(&upstream, 200).await;
    let index = cacheow.data_dir().join("cacheow.redb");
    let mut bytes = std::fs::read(&index).unwrap();
    let middle = bytes.len() / 2;
    let end = (middle + 4096).min(bytes.len());
    bytes[middle..end].fill(0xAB);
    std::fs::write(&index, &bytes).unwrap();

    let (code, stderr) = serve_briefly(cacheow.data_dir());
    assert!(!stderr.contains("panicked at"), "serve panicked: {stderr}");
    if code != Some(0) {
        assert!(
            stderr.contains("rebuild-index"),
            "the error says what to do: {stderr}"
        );
    }
    let rebuild = Command::new(cacheow_tests::cacheow_bin())
        .args(["rebuild-index", "--data-dir"])
        .arg(cacheow.data_dir())
        .output()
        .unwrap();
    let rebuild_err = String::from_utf8_lossy(&rebuild.stderr);
    assert!(
        !rebuild_err.contains("panicked at"),
        "rebuild-index panicked: {rebuild_err}"
    );
    assert!(rebuild.status.success(), "{rebuild_err}");
    let cacheow = cacheow.restart();
    assert_eq!(cacheow.function("/many").await["outcome_count"], 200);
    assert_eq!(cacheow.function("/kept").await["mode"], "cache");
}

#[tokio::test]
async fn a_typo_in_an_outcome_file_keeps_its_indexed_copy() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let (cacheow, id) = recorded_store(&upstream, 0).await;
    let cacheow = cacheow.restart();
    let file = outcome_files(cacheow.data_dir(), &id).remove(0);
    std::fs::write(&file, b"{ \"id\": oops").unwrap();
    let (status, report) = cacheow
        .api(
            http::Method::POST,
            &format!("/api/functions/{id}/rebuild-index"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["path"]
            .as_str()
            .unwrap()
            .ends_with(file.file_name().unwrap().to_str().unwrap())),
        "{report}"
    );
    assert_eq!(
        cacheow.function("/kept").await["outcome_count"],
        1,
        "the index copy is kept"
    );
    let reply = cacheow
        .proxied_client()
        .get(format!("{}/kept", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["x-cacheow-source"], "cache");
}

#[tokio::test]
async fn fifos_and_device_links_in_the_mirror_are_skipped_and_reported() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let (cacheow, id) = recorded_store(&upstream, 0).await;
    let outcomes = cacheow
        .data_dir()
        .join("functions")
        .join(&id)
        .join("outcomes");
    let fifo = outcomes.join("00000000000000f1.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let zero = outcomes.join("00000000000000f2.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();

    let mut child = Command::new(cacheow_tests::cacheow_bin())
        .args(["rebuild-index", "--data-dir"])
        .arg(cacheow.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rebuild-index hung on a FIFO or /dev/zero");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("00000000000000f1.json"), "{stderr}");
    assert!(stderr.contains("00000000000000f2.json"), "{stderr}");
    let cacheow = cacheow.restart();
    assert_eq!(cacheow.function("/kept").await["outcome_count"], 1);
}

#[tokio::test]
async fn only_the_owner_can_read_the_data_dir() {
    let upstream = Upstream::start(counting_upstream_handler()).await;
    let (cacheow, _) = recorded_store(&upstream, 1).await;
    let fresh = cacheow.data_dir().join("nested-store");
    let (_, _) = serve_briefly(&fresh);
    // The test's own temp dir was made by the test; what cacheow creates is
    // private: a new data dir, and everything in one.
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", fresh.display());
    let mut stack = vec![cacheow.data_dir().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if path.is_dir() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "cacheow-ca.pem") {
                assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
            }
        }
    }
}
