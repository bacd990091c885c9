//! default, cache and mock modes as a user sees them through the proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheow_tests::{Cacheow, Upstream, json_reply, outcome_files};
use serde_json::{Value, json};

#[tokio::test]
async fn default_mode_calls_upstream_every_time_and_templates_ids() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for path in ["/users/1", "/users/2", "/users/1"] {
        let response = client
            .get(format!("{}{path}", upstream.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cacheow-source"], "upstream");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["path"], path);
    }
    assert_eq!(upstream.hits(), 3);
    let function = cacheow.function("/users/").await;
    assert_eq!(
        function["name"],
        format!("GET {}/users/{{id}}", upstream.url())
    );
    assert_eq!(function["mode"], "default");
    assert_eq!(function["stats"]["upstream_calls"], 3);
    let outcomes = function["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{function:#}");
    let id = function["id"].as_str().unwrap();
    cacheow_tests::eventually("outcome files on disk", || async {
        outcome_files(cacheow.data_dir(), id).len() == 2
    })
    .await;
}

#[tokio::test]
async fn cache_mode_replays_hits_and_records_misses() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/v1/chat", upstream.url());
    let send = |body: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let source = response.headers()["x-cacheow-source"]
                .to_str()
                .unwrap()
                .to_owned();
            (source, response.bytes().await.unwrap())
        }
    };
    let (source, first) = send(r#"{"model":"m","messages":[1,2]}"#).await;
    assert_eq!((source.as_str(), upstream.hits()), ("upstream", 1));
    let (source, second) = send("{ \"messages\" : [1, 2],\n \"model\": \"m\" }").await;
    assert_eq!(
        (source.as_str(), upstream.hits()),
        ("cache", 1),
        "key order and whitespace must not matter"
    );
    assert_eq!(first, second, "replayed bytes are the recorded bytes");
    let (source, _) = send(r#"{"model":"other","messages":[1,2]}"#).await;
    assert_eq!(
        (source.as_str(), upstream.hits()),
        ("upstream", 2),
        "a different body is a miss"
    );
    let (source, _) = send(r#"{"model":"other","messages":[1,2]}"#).await;
    assert_eq!((source.as_str(), upstream.hits()), ("cache", 2));
    let function = cacheow.function("/v1/chat").await;
    assert_eq!(function["stats"]["cache_hits"], 2);
    assert_eq!(function["stats"]["cache_misses"], 2);
}

#[tokio::test]
async fn config_rules_ignore_query_params_and_patterns_override_templating() {
    let upstream = Upstream::echo().await;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[[route]]\npattern = \"GET {0}/search\"\nmode = \"cache\"\nignore_query = [\"ts\"]\n\n\
             [[route]]\npattern = \"GET {0}/repos/{{owner}}/{{repo}}\"\n",
            upstream.url()
        ),
    )
    .unwrap();
    let cacheow = Cacheow::start(&["--config", config.path().to_str().unwrap()]);
    let client = cacheow.proxied_client();
    let a = client
        .get(format!("{}/search?q=rust&ts=1", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(a.headers()["x-cacheow-source"], "upstream");
    let b = client
        .get(format!("{}/search?ts=2&q=rust", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        b.headers()["x-cacheow-source"],
        "cache",
        "only the ignored ts differs"
    );
    let c = client
        .get(format!("{}/search?q=go&ts=3", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(c.headers()["x-cacheow-source"], "upstream");
    assert_eq!(upstream.hits(), 2);

    client
        .get(format!("{}/repos/rust-lang/rust", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/repos/").await;
    assert_eq!(
        function["name"],
        format!("GET {}/repos/{{owner}}/{{repo}}", upstream.url())
    );
    let search = cacheow.function("/search").await;
    assert_eq!(search["config"]["ignore_query"], json!(["ts"]));
}

/// Records outcome "a" for /items/1 and "b" for /items/2; returns their ids.
async fn two_outcomes(cacheow: &Cacheow, upstream: &Upstream) -> (String, String, String) {
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/items/1", upstream.url()))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/items/2", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/items/").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let outcome_for = |path: &str| {
        let wanted = format!("\"path\":\"{path}\"");
        function["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["preview"].as_str().unwrap().contains(&wanted))
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    (id, outcome_for("/items/1"), outcome_for("/items/2"))
}

async fn mock_path(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["x-cacheow-source"], "mock");
        let body: Value = response.json().await.unwrap();
        (status, body["path"].as_str().unwrap().to_owned())
    } else {
        (
            status,
            response
                .headers()
                .get("x-cacheow-error")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        )
    }
}

#[tokio::test]
async fn mock_mode_follows_weights_and_never_calls_upstream() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let (id, a, b) = two_outcomes(&cacheow, &upstream).await;
    cacheow.set_mode(&id, "mock").await;
    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [
                {"outcome_id": a, "weight": 3, "enabled": true, "ignore_args": true},
                {"outcome_id": b, "weight": 1, "enabled": true, "ignore_args": true},
            ]}),
        )
        .await;
    let hits_before = upstream.hits();
    let client = cacheow.proxied_client();
    let mut a_count = 0;
    for _ in 0..400 {
        // An argument never seen while recording.
        let (status, path) = mock_path(&client, &format!("{}/items/999", upstream.url())).await;
        assert_eq!(status, 200);
        if path == "/items/1" {
            a_count += 1;
        }
    }
    assert!(
        (272..=328).contains(&a_count),
        "3:1 weights gave {a_count}/400 for the first outcome"
    );
    assert_eq!(
        upstream.hits(),
        hits_before,
        "mock mode never calls upstream"
    );
}

#[tokio::test]
async fn mock_entries_respect_enabled_and_ignore_args_and_empty_is_an_error() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let (id, a, b) = two_outcomes(&cacheow, &upstream).await;
    cacheow.set_mode(&id, "mock").await;
    let client = cacheow.proxied_client();

    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [
                {"outcome_id": a, "weight": 5, "enabled": false, "ignore_args": true},
                {"outcome_id": b, "weight": 1, "enabled": true, "ignore_args": true},
            ]}),
        )
        .await;
    for _ in 0..50 {
        assert_eq!(
            mock_path(&client, &format!("{}/items/7", upstream.url())).await,
            (200, "/items/2".into())
        );
    }

    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [{"outcome_id": a, "weight": 1, "enabled": true, "ignore_args": false}]}),
        )
        .await;
    assert_eq!(
        mock_path(&client, &format!("{}/items/1", upstream.url())).await,
        (200, "/items/1".into())
    );
    let (status, error) = mock_path(&client, &format!("{}/items/2", upstream.url())).await;
    assert_eq!(
        (status, error.as_str()),
        (502, "no_mock_outcome"),
        "ignore_args: false limits the entry to its key"
    );

    let response = client
        .get(format!("{}/items/2", upstream.url()))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no eligible outcome"),
        "{body}"
    );
}

#[tokio::test]
async fn manual_return_and_exception_outcomes_replay_as_designed() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/pay", upstream.url()))
        .send()
        .await
        .unwrap();
    let id = cacheow.function("/pay").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = |body: Value| {
        let path = format!("/api/functions/{id}/outcomes/manual");
        let cacheow = &cacheow;
        async move {
            cacheow.post(&path, body).await["outcome_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let created = add(json!({"outcome_type": "return", "value": {"status": 201, "headers": {"x-made": "by hand"}, "body": {"ok": true}}})).await;
    let reset = add(json!({"outcome_type": "exception", "exception_type": "connection_reset", "exception_message": "injected"})).await;
    let refused =
        add(json!({"outcome_type": "exception", "exception_type": "connection_refused"})).await;
    cacheow.set_mode(&id, "mock").await;
    let only = |outcome: &str| json!({"entries": [{"outcome_id": outcome, "weight": 1}]});
    let entries = format!("/api/functions/{id}/mock-outcomes");

    cacheow.post(&entries, only(&created)).await;
    let response = client
        .get(format!("{}/pay", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-made"], "by hand");
    assert_eq!(response.text().await.unwrap(), r#"{"ok":true}"#);

    cacheow.post(&entries, only(&refused)).await;
    let response = client
        .get(format!("{}/pay", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-cacheow-error"], "connection_refused");
    assert_eq!(response.headers()["x-cacheow-function"], id.as_str());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "connection_refused");
    assert_eq!(body["error"]["function"], id.as_str());

    cacheow.post(&entries, only(&reset)).await;
    let error = client
        .get(format!("{}/pay", upstream.url()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_request(), "the connection must break: {error:?}");
    let curl = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--proxy",
            &cacheow.url(),
            &format!("{}/pay", upstream.url()),
        ])
        .status()
        .unwrap();
    assert!(!curl.success(), "curl must see the connection break");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn latency_delays_cache_and_mock_replies() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": 1})))).await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/slow", upstream.url());
    client.get(&url).send().await.unwrap();
    let id = cacheow.function("/slow").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cacheow
        .post(
            &format!("/api/functions/{id}/latency"),
            json!({"latency_ms": 300}),
        )
        .await;
    for mode in ["cache", "mock"] {
        cacheow.set_mode(&id, mode).await;
        let started = Instant::now();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.headers()["x-cacheow-source"], mode);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{mode}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn reverse_listener_maps_to_the_same_function_as_the_forward_proxy() {
    let upstream = Upstream::echo().await;
    let reverse = format!("127.0.0.1:0={}", upstream.url());
    let cacheow = Cacheow::start(&["--reverse", &reverse, "--default-mode", "cache"]);
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = direct
        .get(format!("http://{}/users/5?x=1", cacheow.reverse[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cacheow-source"], "upstream");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["path"].as_str(), body["query"].as_str()),
        (Some("/users/5"), Some("x=1"))
    );
    let through_proxy = cacheow
        .proxied_client()
        .get(format!("{}/users/5?x=1", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        through_proxy.headers()["x-cacheow-source"],
        "cache",
        "same function, same call key"
    );
    assert_eq!(upstream.hits(), 1);
}

/// Each call is counted once, where it finishes: a `no_mock_outcome` call
/// is one mock call and one exception, an oversize pass-through is one
/// upstream call with its reason.
#[tokio::test]
async fn a_no_mock_outcome_call_and_an_oversize_call_are_counted_once() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--max-body-bytes", "100"]);
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/nothing", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/nothing").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    let outcome = detail["outcomes"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = cacheow
        .api(
            http::Method::DELETE,
            &format!("/api/functions/{id}/outcomes/{outcome}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    cacheow.set_mode(&id, "mock").await;
    let reply = client
        .get(format!("{}/nothing", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["x-cacheow-error"], "no_mock_outcome");
    let stats = cacheow.function("/nothing").await["stats"].clone();
    assert_eq!(stats["total_calls"], 2, "{stats}");
    assert_eq!(stats["mock_calls"], 1, "{stats}");
    assert_eq!(stats["upstream_calls"], 1, "{stats}");
    assert_eq!(stats["exceptions"], 1, "one exception, not two: {stats}");

    let reply = client
        .post(format!("{}/big", upstream.url()))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let stats = cacheow.function("/big").await["stats"].clone();
    assert_eq!(stats["total_calls"], 1, "{stats}");
    assert_eq!(stats["upstream_calls"], 1, "{stats}");
    assert_eq!(stats["exceptions"], 0, "{stats}");
    assert_eq!(stats["unrecorded"]["request_oversize"], 1, "{stats}");
}

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Twenty different calls at once through `cacheow`: each reply's
/// `x-cacheow-source` and body, in call order.
async fn twenty_calls(cacheow: &Cacheow, upstream: &Upstream) -> Vec<(String, bytes::Bytes)> {
    let client = cacheow.proxied_client();
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/v1/items/{i}", upstream.url());
            tokio::spawn(async move {
                let response = client.post(url).body(format!("item {i}")).send().await;
                let response = response.unwrap();
                let source = response.headers()["x-cacheow-source"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (source, response.bytes().await.unwrap())
            })
        })
        .collect();
    let mut replies = Vec::new();
    for send in sends {
        replies.push(send.await.unwrap());
    }
    replies
}

#[tokio::test]
async fn on_one_core_cacheow_runs_one_thread_of_requests_and_loses_nothing() {
    let upstream = Upstream::echo().await;
    let mut cacheow = Cacheow::start_under(
        &["taskset", "-c", "0"],
        &["--default-mode", "cache", "--durable"],
    );
    // Internal: tokio names its worker threads `tokio-rt-worker` (older
    // versions `tokio-runtime-worker`); the current-thread runtime serves
    // on the main thread, so none exist before anything asks for a
    // blocking thread.
    let names = thread_names(cacheow.pid());
    assert!(
        !names.iter().any(|n| n.starts_with("tokio-r")),
        "a one-core cacheow should run the current-thread runtime: {names:?}"
    );
    let recorded = twenty_calls(&cacheow, &upstream).await;
    assert!(recorded.iter().all(|(source, _)| source == "upstream"));
    assert_eq!(upstream.hits(), 20);
    let replayed = twenty_calls(&cacheow, &upstream).await;
    assert!(replayed.iter().all(|(source, _)| source == "cache"));
    assert_eq!(upstream.hits(), 20, "every repeat is a replay");
    let bodies = |replies: &[(String, bytes::Bytes)]| -> Vec<bytes::Bytes> {
        replies.iter().map(|(_, body)| body.clone()).collect()
    };
    assert_eq!(
        bodies(&recorded),
        bodies(&replayed),
        "replayed bytes are the recorded bytes"
    );

    assert!(cacheow.stop().success(), "{}", cacheow.logs());
    let cacheow = cacheow.restart();
    let after_restart = twenty_calls(&cacheow, &upstream).await;
    assert!(after_restart.iter().all(|(source, _)| source == "cache"));
    assert_eq!(upstream.hits(), 20, "durable outcomes survive the stop");
    drop(cacheow);
}
