//! What lands on disk, what survives, and what a broken disk does.

use std::sync::Arc;

use cacheow_tests::{Cacheow, Upstream, eventually, json_reply, outcome_files};
use serde_json::{Value, json};

#[tokio::test]
async fn hand_edits_and_rebuild_index_change_replay_and_corrupt_files_are_reported() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    for path in ["/docs/1", "/docs/2"] {
        client
            .get(format!("{}{path}", upstream.url()))
            .send()
            .await
            .unwrap();
    }
    let id = cacheow.function("/docs/").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("two outcome files", || async {
        outcome_files(cacheow.data_dir(), &id).len() == 2
    })
    .await;
    let files = outcome_files(cacheow.data_dir(), &id);
    let (mut edited, mut corrupt) = (None, None);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains("/docs/1") {
            let outcome: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(outcome["schema_version"], 1);
            assert_eq!(outcome["value"]["status"], 200);
            let mut changed = outcome.clone();
            changed["value"]["body"] = json!({"edited": "by hand"});
            std::fs::write(file, serde_json::to_string_pretty(&changed).unwrap()).unwrap();
            edited = Some(file.clone());
        } else {
            std::fs::write(file, "{ this is not json").unwrap();
            corrupt = Some(file.clone());
        }
    }
    let (edited, corrupt) = (edited.unwrap(), corrupt.unwrap());

    let report = cacheow
        .post(&format!("/api/functions/{id}/rebuild-index"), json!({}))
        .await;
    assert_eq!(report["indexed"], 1);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report:#}");
    assert_eq!(
        failures[0]["path"],
        corrupt.canonicalize().unwrap().to_str().unwrap()
    );
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{report:#}"
    );

    let response = client
        .get(format!("{}/docs/1", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cacheow-source"], "cache");
    assert_eq!(response.text().await.unwrap(), r#"{"edited":"by hand"}"#);
    assert!(edited.exists());
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn offline_rebuild_index_reports_by_path() {
    let upstream = Upstream::echo().await;
    let mut cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/a", upstream.url()))
        .send()
        .await
        .unwrap();
    let id = cacheow.function("/a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("an outcome file", || async {
        outcome_files(cacheow.data_dir(), &id).len() == 1
    })
    .await;
    assert!(cacheow.stop().success());
    let bad = cacheow
        .data_dir()
        .join("functions")
        .join(&id)
        .join("outcomes")
        .join("0000000000000000.json");
    std::fs::write(&bad, "[]").unwrap();
    let output = std::process::Command::new(cacheow_tests::cacheow_bin())
        .args(["rebuild-index", "--data-dir"])
        .arg(cacheow.data_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("indexed 1 outcomes of 1 functions"),
        "{stdout}"
    );
    assert!(
        stderr.contains("0000000000000000.json") && stderr.contains("invalid record"),
        "{stderr}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "skipped files make the exit code 1"
    );
}

#[tokio::test]
async fn modes_latency_weights_and_outcomes_survive_a_restart() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/keep/1", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/keep/").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let outcome = function["outcomes"][0]["id"].as_str().unwrap().to_owned();
    cacheow.set_mode(&id, "mock").await;
    cacheow
        .post(
            &format!("/api/functions/{id}/latency"),
            json!({"latency_ms": 5}),
        )
        .await;
    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [{"outcome_id": outcome, "weight": 2.5, "enabled": true, "ignore_args": false}]}),
        )
        .await;
    let cacheow = cacheow.restart();
    let after = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(after["mode"], "mock");
    assert_eq!(after["latency_ms"], 5);
    assert_eq!(
        after["mock_outcomes"],
        json!([{"outcome_id": outcome, "weight": 2.5, "enabled": true, "ignore_args": false}])
    );
    assert_eq!(after["outcomes"].as_array().unwrap().len(), 1);
    assert_eq!(
        after["stats"]["upstream_calls"], 1,
        "counters are saved at shutdown"
    );
    upstream.stop();
    let response = cacheow
        .proxied_client()
        .get(format!("{}/keep/1", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cacheow-source"], "mock");
}

#[tokio::test]
async fn the_same_response_fetched_50_times_is_one_outcome_with_count_50() {
    // hyper adds a fresh `date` header to every reply: volatile headers must
    // not make identical responses distinct.
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"status": "ok"})))).await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for _ in 0..50 {
        client
            .get(format!("{}/health", upstream.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let function = cacheow.function("/health").await;
    let outcomes = function["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{function:#}");
    assert_eq!(outcomes[0]["count"], 50);
    let id = function["id"].as_str().unwrap();
    let outcome_id = outcomes[0]["id"].as_str().unwrap().to_owned();
    eventually("the file shows count 50", || async {
        let path = cacheow
            .data_dir()
            .join("functions")
            .join(id)
            .join("outcomes")
            .join(format!("{outcome_id}.json"));
        std::fs::read_to_string(path).is_ok_and(|t| t.contains("\"count\": 50"))
    })
    .await;
}

#[tokio::test]
async fn a_failing_disk_never_breaks_default_mode_responses() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    // A file where the mirror's directory must go makes every mirror write
    // fail, even for root.
    std::fs::write(cacheow.data_dir().join("functions"), "in the way").unwrap();
    let client = cacheow.proxied_client();
    for i in 0..3 {
        let response = client
            .get(format!("{}/x/{i}", upstream.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["path"], format!("/x/{i}"));
    }
    assert_eq!(upstream.hits(), 3);
    eventually("persist failures are counted", || async {
        cacheow.function("/x/").await["stats"]["persist_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    assert!(
        cacheow
            .logs()
            .contains("failed; responses are still served"),
        "{}",
        cacheow.logs()
    );
}

#[tokio::test]
async fn a_second_cacheow_on_the_same_data_dir_exits_with_a_clear_message() {
    let cacheow = Cacheow::start(&[]);
    let output = std::process::Command::new(cacheow_tests::cacheow_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(cacheow.data_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another cacheow process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(cacheow.data_dir().canonicalize().unwrap().to_str().unwrap()),
        "{stderr}"
    );
}
