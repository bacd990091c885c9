//! Cache semantics through the real binary (issue 14): ttl and `Age`,
//! stale-while-revalidate, stale-if-error, coalescing, cache_if, per-request
//! controls, the cost guard and the circuit breaker, each checked against an
//! upstream's hit counter and the files on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::{Cacheow, Upstream, channel_body, closed_port, eventually, outcome_files};
use serde_json::{Value, json};

/// An upstream answering `{"n": hits so far}` with the status in `status`
/// (200 unless a test changes it); the body comes `delay` after the head.
async fn counting_upstream(status: Arc<AtomicU16>, delay: Duration) -> Upstream {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Upstream::streaming(Arc::new(move |_, _| {
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        let body = Bytes::from(json!({ "n": n }).to_string());
        let length = body.len();
        let (tx, channel) = channel_body();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Ok(body)).await;
        });
        http::Response::builder()
            .status(status.load(Ordering::SeqCst))
            .header("content-type", "application/json")
            .header("content-length", length)
            .body(channel)
            .unwrap()
    }))
    .await
}

async fn ok_upstream() -> (Upstream, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    (
        counting_upstream(status.clone(), Duration::ZERO).await,
        status,
    )
}

/// A reply as the client saw it.
#[derive(Debug)]
struct Seen {
    status: u16,
    source: String,
    error: Option<String>,
    age: Option<u64>,
    body: Value,
}

async fn send(client: &reqwest::Client, request: reqwest::RequestBuilder) -> Seen {
    let _ = client;
    let response = request.send().await.expect("proxied request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status().as_u16();
    let source = header("x-cacheow-source").unwrap_or_default();
    let error = header("x-cacheow-error");
    let age = header("age").map(|a| a.parse().unwrap());
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Seen {
        status,
        source,
        error,
        age,
        body,
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Seen {
    send(client, client.get(url)).await
}

/// Sets a function's config through the API.
async fn configure(cacheow: &Cacheow, needle: &str, settings: Value) -> String {
    let id = cacheow.function(needle).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cacheow
        .post(&format!("/api/functions/{id}/config"), settings)
        .await;
    id
}

#[tokio::test]
async fn ttl_replays_within_it_with_an_age_then_refreshes_and_replays_the_new_outcome() {
    let (upstream, _) = ok_upstream().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/ttl", upstream.url());
    assert_eq!(get(&client, &url).await.body["n"], 1);
    configure(&cacheow, "/ttl", json!({"ttl": "1s"})).await;
    let within = get(&client, &url).await;
    assert_eq!((within.source.as_str(), upstream.hits()), ("cache", 1));
    assert_eq!(within.age, Some(0), "{within:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = get(&client, &url).await;
    assert_eq!(
        (
            after.source.as_str(),
            after.body["n"].as_u64(),
            upstream.hits()
        ),
        ("upstream", Some(2), 2),
        "past ttl the call refreshes"
    );
    let replay = get(&client, &url).await;
    assert_eq!(
        (
            replay.source.as_str(),
            replay.body["n"].as_u64(),
            upstream.hits()
        ),
        ("cache", Some(2), 2),
        "then the new outcome replays"
    );
    let function = cacheow.function("/ttl").await;
    assert_eq!(
        function["outcomes"].as_array().unwrap().len(),
        2,
        "the old outcome stays as history"
    );
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let status = Arc::new(AtomicU16::new(200));
    let upstream = counting_upstream(status, Duration::from_millis(300)).await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/swr", upstream.url());
    get(&client, &url).await;
    configure(
        &cacheow,
        "/swr",
        json!({"ttl": "1s", "stale_while_revalidate": "1m"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let stale = get(&client, &url).await;
        assert_eq!(
            (stale.source.as_str(), stale.body["n"].as_u64()),
            ("stale", Some(1))
        );
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a stale reply does not wait for the upstream's 300 ms: {:?}",
            started.elapsed()
        );
        assert!(stale.age.unwrap() >= 1, "{stale:?}");
    }
    eventually("the background refresh", || async { upstream.hits() == 2 }).await;
    eventually("the refresh recorded", || async {
        cacheow.function("/swr").await["stats"]["refreshed"] == 1
    })
    .await;
    let fresh = get(&client, &url).await;
    assert_eq!(
        (fresh.source.as_str(), fresh.body["n"].as_u64()),
        ("cache", Some(2))
    );
    assert_eq!(
        upstream.hits(),
        2,
        "exactly one refresh for the three stale calls"
    );
    let stats = cacheow.function("/swr").await["stats"].clone();
    assert_eq!(stats["stale_served"], 3, "{stats}");
}

#[tokio::test]
async fn stale_if_error_serves_the_last_good_outcome_when_the_upstream_fails_or_is_gone() {
    let (upstream, status) = ok_upstream().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/sie", upstream.url());
    assert_eq!(get(&client, &url).await.body["n"], 1);
    configure(&cacheow, "/sie", json!({"stale_if_error": "forever"})).await;

    status.store(503, Ordering::SeqCst);
    let during_503 = get(&client, &url).await;
    assert_eq!(during_503.status, 200);
    assert_eq!(during_503.source, "stale");
    assert_eq!(during_503.error.as_deref(), Some("status_503"));
    assert_eq!(during_503.body["n"], 1, "the last good outcome");
    assert_eq!(upstream.hits(), 2, "default mode still called the upstream");

    upstream.stop();
    let gone = get(&client, &url).await;
    assert_eq!((gone.status, gone.source.as_str()), (200, "stale"));
    // Internal: the kept-alive connection may be found closed (reset)
    // before a new one is refused; either names the failure.
    let error = gone.error.as_deref().unwrap_or("");
    assert!(
        ["connection_refused", "connection_reset"].contains(&error),
        "{gone:?}"
    );
    assert_eq!(gone.body["n"], 1);
    let function = cacheow.function("/sie").await;
    let stats = &function["stats"];
    assert_eq!(stats["stale_served"], 2);
    assert_eq!(
        (
            stats["upstream_calls"].as_u64(),
            stats["exceptions"].as_u64()
        ),
        (Some(3), Some(2)),
        "a stale answer still counts the failed upstream call: {stats}"
    );
    let kinds: Vec<&Value> = function["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["status"])
        .collect();
    assert!(
        kinds.contains(&&json!(503)),
        "the 503 is recorded: {function:#}"
    );
}

#[tokio::test]
async fn fifty_identical_misses_make_one_upstream_call_and_get_the_same_reply() {
    let status = Arc::new(AtomicU16::new(200));
    let upstream = counting_upstream(status, Duration::from_millis(400)).await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/coalesce", upstream.url());
    let calls = (0..50).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move { get(&client, &url).await })
    });
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        let seen = call.await.unwrap();
        assert_eq!((seen.status, &seen.body), (200, &json!({"n": 1})));
        *sources.entry(seen.source).or_default() += 1;
    }
    assert_eq!(upstream.hits(), 1, "{sources:?}");
    assert_eq!(sources.get("upstream"), Some(&1), "{sources:?}");
    assert_eq!(
        sources.get("coalesced").copied().unwrap_or(0) + sources.get("cache").copied().unwrap_or(0),
        49,
        "{sources:?}"
    );
    eventually("coalesced calls counted", || async {
        let stats = cacheow.function("/coalesce").await["stats"].clone();
        stats["total_calls"] == 50 && stats["upstream_calls"] == 1
    })
    .await;
}

#[tokio::test]
async fn ten_identical_streaming_misses_share_one_live_stream_chunk_by_chunk() {
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(0usize);
    let upstream = Upstream::streaming(Arc::new(move |_, _| {
        let (tx, body) = channel_body();
        let mut gate = gate_rx.clone();
        tokio::spawn(async move {
            for i in 0..3usize {
                // Internal: each event waits until the test lets it go, so
                // a client can only have it if it was passed on live.
                if gate.wait_for(|open| *open > i).await.is_err() {
                    return;
                }
                let event = format!("data: {i}\n\n");
                if tx.send(Ok(Bytes::from(event))).await.is_err() {
                    return;
                }
            }
        });
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/live", upstream.url());
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for c in 0..10 {
        let client = client.clone();
        let url = url.clone();
        let got = got_tx.clone();
        clients.push(tokio::spawn(async move {
            let mut response = client.get(&url).send().await.unwrap();
            let source = response.headers()["x-cacheow-source"]
                .to_str()
                .unwrap()
                .to_owned();
            let mut text = String::new();
            while let Some(chunk) = response.chunk().await.unwrap() {
                text.push_str(std::str::from_utf8(&chunk).unwrap());
                let events = text.matches("\n\n").count();
                got.send((c, events)).unwrap();
            }
            (source, text)
        }));
        // Internal: all ten join the flight before its first event.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for event in 1..=3 {
        gate_tx.send(event).unwrap();
        let mut reached = std::collections::HashSet::new();
        while reached.len() < 10 {
            let (c, events) = tokio::time::timeout(Duration::from_secs(10), got_rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("event {event} reached only clients {reached:?} while the upstream held the next one")
                })
                .unwrap();
            if events >= event {
                reached.insert(c);
            }
        }
    }
    let mut sources = Vec::new();
    for client in clients {
        let (source, text) = client.await.unwrap();
        assert_eq!(text, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
        sources.push(source);
    }
    assert_eq!(upstream.hits(), 1, "{sources:?}");
    assert_eq!(
        sources.iter().filter(|s| *s == "coalesced").count(),
        9,
        "{sources:?}"
    );
}

#[tokio::test]
async fn cache_if_keeps_errors_and_failures_out_of_cache_replays() {
    let (upstream, status) = ok_upstream().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/flaky500", upstream.url());
    status.store(500, Ordering::SeqCst);
    assert_eq!(get(&client, &url).await.status, 500);
    configure(&cacheow, "/flaky500", json!({"cache_if": "success"})).await;
    status.store(200, Ordering::SeqCst);
    let second = get(&client, &url).await;
    assert_eq!(
        (second.status, second.source.as_str(), upstream.hits()),
        (200, "upstream", 2),
        "a recorded 500 is not replayed under \"success\""
    );
    assert_eq!(get(&client, &url).await.source, "cache");

    // A transport failure is not replayed by cache mode unless cache_if says any.
    let port = closed_port();
    let down = format!("http://127.0.0.1:{port}/down");
    for _ in 0..2 {
        let failed = get(&client, &down).await;
        assert_eq!((failed.status, failed.source.as_str()), (502, "upstream"));
    }
    configure(&cacheow, "/down", json!({"cache_if": "any"})).await;
    let replayed = get(&client, &down).await;
    assert_eq!(
        (
            replayed.status,
            replayed.source.as_str(),
            replayed.error.as_deref()
        ),
        (502, "cache", Some("connection_refused"))
    );
}

#[tokio::test]
async fn per_request_controls_change_one_call_and_never_reach_the_upstream() {
    let seen_mode = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen_mode.clone();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = Upstream::start(Arc::new(move |parts, _| {
        log.lock().unwrap().push(
            parts.headers.contains_key("x-cacheow-mode")
                || parts.headers.contains_key("cache-control"),
        );
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        cacheow_tests::json_reply(&json!({ "n": n }))
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/controls", upstream.url());
    let with = |name: &'static str, value: &'static str| client.get(&url).header(name, value);

    let nothing = send(&client, with("cache-control", "only-if-cached")).await;
    assert_eq!(
        (nothing.status, nothing.error.as_deref(), upstream.hits()),
        (504, Some("not_cached"), 0)
    );
    assert_eq!(get(&client, &url).await.body["n"], 1);
    let id = cacheow.function("/controls").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let files = || outcome_files(cacheow.data_dir(), &id).len();
    eventually("one outcome file", || async { files() == 1 }).await;

    let cached = send(&client, with("x-cacheow-mode", "cache")).await;
    assert_eq!(
        (cached.source.as_str(), cached.body["n"].as_u64()),
        ("cache", Some(1))
    );
    let only = send(&client, with("cache-control", "only-if-cached")).await;
    assert_eq!((only.source.as_str(), upstream.hits()), ("cache", 1));

    let bypass = send(&client, with("x-cacheow-mode", "bypass")).await;
    assert_eq!(
        (bypass.source.as_str(), bypass.body["n"].as_u64()),
        ("upstream", Some(2))
    );
    let no_store = send(&client, with("cache-control", "no-store")).await;
    assert_eq!(no_store.body["n"], 3);
    cacheow
        .post(
            &format!("/api/functions/{id}/mode"),
            json!({"mode": "cache"}),
        )
        .await;
    let refreshed = send(&client, with("cache-control", "no-cache")).await;
    assert_eq!(
        (refreshed.source.as_str(), refreshed.body["n"].as_u64()),
        ("upstream", Some(4))
    );
    let replaced = get(&client, &url).await;
    assert_eq!(
        (replaced.source.as_str(), replaced.body["n"].as_u64()),
        ("cache", Some(4)),
        "no-cache replaced the key's replay"
    );
    eventually(
        "two outcome files: bypass and no-store left none",
        || async { files() == 2 },
    )
    .await;
    let stats = cacheow.function("/controls").await["stats"].clone();
    assert_eq!(stats["unrecorded"]["bypass"], 1, "{stats}");
    assert_eq!(stats["unrecorded"]["no_store"], 1, "{stats}");
    assert!(
        seen_mode.lock().unwrap().iter().all(|seen| !seen),
        "x-cacheow-mode or a Cache-Control directive cacheow acted on reached the upstream"
    );
    let bad = send(&client, with("x-cacheow-mode", "sometimes")).await;
    assert_eq!(
        (bad.status, bad.error.as_deref()),
        (400, Some("bad_control"))
    );
}

#[tokio::test]
async fn the_cost_guard_stops_the_fourth_upstream_call_of_a_3_per_hour_route() {
    let (upstream, _) = ok_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cacheow.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\npattern = \"GET http://{}/paid/{{n}}\"\nmax_upstream_calls = \"3/1h\"\n",
            upstream.addr
        ),
    )
    .unwrap();
    let cacheow = Cacheow::start(&["--config", config.to_str().unwrap()]);
    let client = cacheow.proxied_client();
    for n in 1..=3 {
        let seen = get(&client, &format!("{}/paid/{n}", upstream.url())).await;
        assert_eq!(seen.status, 200);
    }
    let refused = client
        .get(format!("{}/paid/4", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-cacheow-error"], "budget_exceeded");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_upstream_calls"),
        "{body}"
    );
    assert_eq!(upstream.hits(), 3);
    let stats = cacheow.function("/paid/").await["stats"].clone();
    assert_eq!(
        (
            stats["budget_rejected"].as_u64(),
            stats["upstream_calls"].as_u64()
        ),
        (Some(1), Some(3))
    );
}

#[tokio::test]
async fn a_global_budget_covers_every_function() {
    let (upstream, _) = ok_upstream().await;
    let cacheow = Cacheow::start(&["--max-upstream-calls", "2/1h"]);
    let client = cacheow.proxied_client();
    for path in ["/a", "/b"] {
        assert_eq!(
            get(&client, &format!("{}{path}", upstream.url()))
                .await
                .status,
            200
        );
    }
    let third = get(&client, &format!("{}/c", upstream.url())).await;
    assert_eq!(
        (third.status, third.error.as_deref()),
        (429, Some("budget_exceeded"))
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn the_circuit_breaker_opens_after_its_failures_and_closes_after_open_for() {
    let (upstream, status) = ok_upstream().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/breaker", upstream.url());
    get(&client, &url).await;
    configure(
        &cacheow,
        "/breaker",
        json!({"circuit_breaker": {"failures": 2, "window": "30s", "open_for": "1s"}}),
    )
    .await;
    status.store(503, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(get(&client, &url).await.status, 503);
    }
    let open = get(&client, &url).await;
    assert_eq!(
        (open.status, open.error.as_deref()),
        (503, Some("circuit_open"))
    );
    assert_eq!(upstream.hits(), 3, "an open circuit does not call");
    status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let closed = get(&client, &url).await;
    assert_eq!((closed.status, closed.source.as_str()), (200, "upstream"));
    assert_eq!(upstream.hits(), 4);
    let stats = cacheow.function("/breaker").await["stats"].clone();
    assert_eq!(stats["circuit_open"], 1, "{stats}");
}

#[tokio::test]
async fn bad_policy_settings_are_refused_with_the_reason() {
    let (upstream, _) = ok_upstream().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    get(&client, &format!("{}/settings", upstream.url())).await;
    let id = cacheow.function("/settings").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (settings, says) in [
        (json!({"ttl": "soon"}), "`ttl`"),
        (json!({"max_upstream_calls": "3 an hour"}), "\"100/1h\""),
        (json!({"cache_if": "sometimes"}), "\"success\""),
        (json!({"circuit_breaker": {"failures": 0}}), "`failures`"),
    ] {
        let (status, body) = cacheow
            .api(
                http::Method::POST,
                &format!("/api/functions/{id}/config"),
                Some(settings.clone()),
            )
            .await;
        assert_eq!(status, 400, "{settings}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{settings}: {message}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[route]]\npattern = \"http://a/b\"\n\nttl = \"forever\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(cacheow_tests::cacheow_bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 4, key route[0].ttl") && stderr.contains("whole number"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bumping_key_prefix_makes_every_old_outcome_a_miss_without_deleting_it() {
    let (upstream, _) = ok_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cacheow.toml");
    std::fs::write(&config, "key_prefix = \"v1\"\n").unwrap();
    let args = [
        "--default-mode",
        "cache",
        "--config",
        config.to_str().unwrap(),
    ];
    let cacheow = Cacheow::start(&args);
    let url = format!("{}/prefixed", upstream.url());
    for source in ["upstream", "cache"] {
        assert_eq!(get(&cacheow.proxied_client(), &url).await.source, source);
    }
    std::fs::write(&config, "key_prefix = \"v2\"\n").unwrap();
    let cacheow = cacheow.restart();
    let client = cacheow.proxied_client();
    let bumped = get(&client, &url).await;
    assert_eq!(
        (bumped.source.as_str(), bumped.body["n"].as_u64()),
        ("upstream", Some(2))
    );
    assert_eq!(get(&client, &url).await.source, "cache");
    let function = cacheow.function("/prefixed").await;
    assert_eq!(
        function["outcomes"].as_array().unwrap().len(),
        2,
        "the v1 outcome stays"
    );
    assert_eq!(function["config"]["key_prefix"], "v2");
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn invalidating_a_tag_marks_stale_then_deletes_and_the_cli_does_the_same_offline() {
    let (upstream, _) = ok_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cacheow.toml");
    std::fs::write(
        &config,
        format!(
            "[[route]]\npattern = \"GET http://{}/chat/{{id}}\"\ntags = [\"llm\"]\n",
            upstream.addr
        ),
    )
    .unwrap();
    let mut cacheow = Cacheow::start(&[
        "--default-mode",
        "cache",
        "--config",
        config.to_str().unwrap(),
    ]);
    let client = cacheow.proxied_client();
    let chat = format!("{}/chat/1", upstream.url());
    let other = format!("{}/other", upstream.url());
    for url in [&chat, &other, &chat, &other] {
        get(&client, url).await;
    }
    assert_eq!(upstream.hits(), 2);

    let (status, error) = cacheow
        .api(http::Method::POST, "/api/invalidate", Some(json!({})))
        .await;
    assert_eq!(status, 400, "nothing named: {error}");
    let marked = cacheow.post("/api/invalidate", json!({"tag": "llm"})).await;
    assert_eq!(
        (marked["functions"].as_u64(), marked["deleted"].as_u64()),
        (Some(1), Some(0))
    );
    let refreshed = get(&client, &chat).await;
    assert_eq!(
        (refreshed.source.as_str(), upstream.hits()),
        ("upstream", 3),
        "stale, so refreshed"
    );
    assert_eq!(get(&client, &chat).await.source, "cache");
    assert_eq!(
        get(&client, &other).await.source,
        "cache",
        "an untagged function is untouched"
    );

    let chat_id = cacheow.function("/chat/").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("two outcome files", || async {
        outcome_files(cacheow.data_dir(), &chat_id).len() == 2
    })
    .await;
    let deleted = cacheow
        .post(
            "/api/invalidate",
            json!({"tag": "llm", "older_than": "0s", "delete": true}),
        )
        .await;
    assert_eq!(deleted["deleted"], 2);
    eventually("files deleted", || async {
        outcome_files(cacheow.data_dir(), &chat_id).is_empty()
    })
    .await;

    // Offline: the same through the command line on a stopped cacheow.
    get(&client, &other).await;
    let other_id = cacheow.function("/other").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cacheow.stop().success());
    let data_dir = cacheow.data_dir().to_owned();
    let invalidate = |extra: &[&str]| {
        let output = std::process::Command::new(cacheow_tests::cacheow_bin())
            .arg("invalidate")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let (code, text) = invalidate(&["--function", &other_id]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("marked the matching outcomes stale of 1 functions"),
        "{text}"
    );
    let (code, text) = invalidate(&["--older-than", "soon"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--older-than"), "{text}");
    let cacheow = cacheow.restart();
    let client = cacheow.proxied_client();
    let hits = upstream.hits();
    assert_eq!(get(&client, &other).await.source, "upstream");
    assert_eq!(upstream.hits(), hits + 1);
    let mut cacheow = cacheow;
    assert!(cacheow.stop().success());
    let (code, text) = invalidate(&["--function", &other_id, "--delete"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("deleted 2 outcomes"), "{text}");
    assert!(outcome_files(&data_dir, &other_id).is_empty());
}

#[tokio::test]
async fn lookup_says_whether_a_call_would_replay_without_making_it() {
    let (upstream, _) = ok_upstream().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/v1/chat", upstream.url());
    let body = json!({"model": "m", "messages": [1]});
    send(&client, client.post(&url).json(&body)).await;
    let id = configure(&cacheow, "/v1/chat", json!({"ttl": "1s"})).await;
    let lookup = |body: Value| cacheow.post("/api/lookup", body);
    let described = json!({
        "method": "POST",
        "url": url,
        "headers": {"content-type": "application/json"},
        // Same call, keys in another order: the key is canonical.
        "body": {"messages": [1], "model": "m"},
    });
    let found = lookup(described.clone()).await;
    assert_eq!(found["function"], id.as_str());
    assert_eq!(
        (
            found["would"].as_str(),
            found["freshness"].as_str(),
            found["mode"].as_str()
        ),
        (Some("replay"), Some("fresh"), Some("cache")),
        "{found}"
    );
    let outcome = cacheow.function("/v1/chat").await["outcomes"][0]["id"].clone();
    assert_eq!(found["outcome_id"], outcome);
    assert!(found["age_ms"].as_u64().unwrap() < 1000);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = lookup(described).await;
    assert_eq!(
        (stale["would"].as_str(), stale["freshness"].as_str()),
        (Some("call"), Some("stale"))
    );
    let other = lookup(json!({"method": "POST", "url": url, "body": {"model": "other"}})).await;
    assert_eq!(
        (other["would"].as_str(), other["outcome_id"].is_null()),
        (Some("call"), true)
    );
    let unseen = lookup(json!({"url": format!("{}/never", upstream.url())})).await;
    assert_eq!(
        (unseen["function"].is_null(), unseen["would"].as_str()),
        (true, Some("call"))
    );
    let (status, error) = cacheow
        .api(
            http::Method::POST,
            "/api/lookup",
            Some(json!({"url": "/relative"})),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["field"], "url");
    assert_eq!(upstream.hits(), 1, "a lookup never calls the upstream");
    let stats = cacheow.function("/v1/chat").await["stats"].clone();
    assert_eq!(stats["total_calls"], 1, "nor counts as a call");
}

#[tokio::test]
async fn a_waiting_call_is_not_given_a_reply_that_varies_on_a_header_it_sent_differently() {
    let upstream = Upstream::streaming(Arc::new(|parts, _| {
        let seen = parts
            .headers
            .get("accept-encoding")
            .map_or("none", |v| v.to_str().unwrap())
            .to_owned();
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(Ok(Bytes::from(format!("encoding {seen}")))).await;
        });
        http::Response::builder()
            .header("vary", "Accept-Encoding")
            .header("set-cookie", "session=lead")
            .body(body)
            .unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/varies", upstream.url());
    let call = |encoding: &'static str| {
        let request = client.get(&url).header("accept-encoding", encoding);
        async move {
            let response = request.send().await.unwrap();
            let source = response.headers()["x-cacheow-source"]
                .to_str()
                .unwrap()
                .to_owned();
            let cookie = response.headers().get("set-cookie").is_some();
            (source, cookie, response.text().await.unwrap())
        }
    };
    let lead = tokio::spawn(call("gzip"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (same, other) = tokio::join!(call("gzip"), call("identity"));
    let lead = lead.await.unwrap();
    assert_eq!(
        lead,
        ("upstream".to_owned(), true, "encoding gzip".to_owned())
    );
    assert_eq!(
        same,
        ("coalesced".to_owned(), false, "encoding gzip".to_owned()),
        "the same Accept-Encoding follows the live reply, without the lead's session cookie"
    );
    assert_eq!(
        (other.0.as_str(), other.2.as_str()),
        ("upstream", "encoding identity"),
        "another Accept-Encoding goes on its own"
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn offline_replays_what_was_recorded_and_never_opens_an_upstream_connection() {
    let (upstream, _) = ok_upstream().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/offline", upstream.url());
    get(&cacheow.proxied_client(), &url).await;
    let id = cacheow.function("/offline").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let connections = upstream.connections();
    let offline = cacheow.restart_with(&["--offline"]);
    let client = offline.proxied_client();
    let replayed = get(&client, &url).await;
    assert_eq!((replayed.status, replayed.source.as_str()), (200, "cache"));
    let bypass = send(&client, client.get(&url).header("x-cacheow-mode", "bypass")).await;
    assert_eq!(
        (bypass.status, bypass.error.as_deref()),
        (504, Some("offline_miss"))
    );
    let refresh = send(
        &client,
        client.get(&url).header("cache-control", "no-cache"),
    )
    .await;
    assert_eq!(refresh.source, "cache", "no-cache cannot refresh offline");
    let miss = send(&client, client.get(format!("{url}?new=1"))).await;
    assert_eq!(
        (miss.status, miss.error.as_deref()),
        (504, Some("offline_miss"))
    );
    let error = &miss.body["error"];
    assert_eq!(error["function"], id.as_str());
    assert_eq!(error["call_key"].as_str().map(str::len), Some(64));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("without --offline"),
        "{error}"
    );
    let unseen = send(
        &client,
        client.get(format!("{}/never-recorded", upstream.url())),
    )
    .await;
    assert_eq!(
        (unseen.status, unseen.error.as_deref()),
        (504, Some("offline_miss"))
    );
    assert_eq!(
        upstream.connections(),
        connections,
        "--offline opened a connection to the upstream"
    );
    assert_eq!(upstream.hits(), 1);
    let stats = offline.function("/offline").await["stats"].clone();
    assert_eq!(
        stats["upstream_calls"], 1,
        "only the call recorded before: {stats}"
    );
}
