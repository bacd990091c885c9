//! Streams (SSE, chunked): live pass-through, replay with recorded timing,
//! partial streams, fault mixes and bodies far above the record cap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::{Cacheow, Upstream, channel_body, json_reply};
use serde_json::{Value, json};

/// An SSE upstream: `events` events `gap` apart, then (optionally) a break.
/// Records when it sent each event.
async fn sse_upstream(
    events: usize,
    gap: Duration,
    break_after: bool,
) -> (Upstream, Arc<Mutex<Vec<Instant>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let upstream = Upstream::streaming(Arc::new(move |_, _| {
        let (tx, body) = channel_body();
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..events {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                log.lock().unwrap().push(Instant::now());
                let event = format!("data: {{\"n\":{i}}}\n\n");
                if tx.send(Ok(Bytes::from(event))).await.is_err() {
                    return;
                }
            }
            if break_after {
                // Internal: let the last event leave before the break, or
                // hyper may drop it from its write buffer.
                tokio::time::sleep(gap).await;
                let _ = tx.send(Err(std::io::Error::other("upstream died"))).await;
            }
        });
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    }))
    .await;
    (upstream, sent)
}

/// Reads a streamed response chunk by chunk, noting when each arrived.
async fn read_chunks(
    response: reqwest::Response,
) -> (Vec<(Instant, Bytes)>, Result<(), reqwest::Error>) {
    let mut response = response;
    let mut chunks = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => chunks.push((Instant::now(), chunk)),
            Ok(None) => return (chunks, Ok(())),
            Err(e) => return (chunks, Err(e)),
        }
    }
}

fn concat(chunks: &[(Instant, Bytes)]) -> Vec<u8> {
    chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect()
}

#[tokio::test]
async fn sse_streams_live_records_timing_and_replays_with_it() {
    let (upstream, sent) = sse_upstream(5, Duration::from_millis(200), false).await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/v1/chat/completions", upstream.url());
    let send = async || {
        client
            .post(&url)
            .body(r#"{"stream":true}"#)
            .send()
            .await
            .unwrap()
    };

    let response = send().await;
    assert_eq!(response.headers()["x-cacheow-source"], "upstream");
    let (live, end) = read_chunks(response).await;
    end.unwrap();
    let first_sent = sent.lock().unwrap()[0];
    let first_delay = live[0].0.duration_since(first_sent);
    assert!(
        first_delay < Duration::from_millis(100),
        "first event reached the client after {first_delay:?}"
    );
    let original = concat(&live);
    assert_eq!(
        String::from_utf8_lossy(&original).matches("data: ").count(),
        5
    );

    let function = cacheow.function("/v1/chat/completions").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let outcome_id = function["outcomes"][0]["id"].as_str().unwrap();
    let outcome = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome_id}"))
        .await;
    assert_eq!(outcome["outcome_type"], "stream");
    let offsets: Vec<f64> = outcome["value"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offset_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 5, "{outcome:#}");
    for (i, offset) in offsets.iter().enumerate() {
        let expected = 200.0 * i as f64;
        assert!(
            (offset - expected).abs() <= 50.0,
            "chunk {i} recorded at {offset} ms, expected about {expected}"
        );
    }
    assert_eq!(outcome["value"]["chunks"][0]["data"], "data: {\"n\":0}\n\n");

    cacheow.set_mode(&id, "cache").await;
    let response = send().await;
    assert_eq!(response.headers()["x-cacheow-source"], "cache");
    let (replayed, end) = read_chunks(response).await;
    end.unwrap();
    assert_eq!(
        concat(&replayed),
        original,
        "replay sends the identical bytes"
    );
    assert_eq!(replayed.len(), 5);
    for i in 1..5 {
        let gap = replayed[i]
            .0
            .duration_since(replayed[i - 1].0)
            .as_secs_f64()
            * 1000.0;
        let recorded = offsets[i] - offsets[i - 1];
        assert!(
            (gap - recorded).abs() <= 50.0,
            "gap {i}: replayed {gap:.0} ms, recorded {recorded:.0} ms"
        );
    }

    let reply = cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            json!({"replay_speed": 0}),
        )
        .await;
    assert_eq!(reply["config"]["replay_speed"], 0);
    let started = Instant::now();
    let response = send().await;
    let (fast, end) = read_chunks(response).await;
    end.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "replay_speed 0 took {:?}",
        started.elapsed()
    );
    assert_eq!(concat(&fast), original);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_stream_that_breaks_is_replayed_with_the_same_break() {
    let (upstream, _) = sse_upstream(2, Duration::from_millis(20), true).await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/stream", upstream.url());
    let (live, end) = read_chunks(cacheow.proxied_client().get(&url).send().await.unwrap()).await;
    assert!(end.is_err(), "the live client must see the break");
    assert_eq!(
        String::from_utf8_lossy(&concat(&live))
            .matches("data: ")
            .count(),
        2
    );

    let function = cacheow.function("/stream").await;
    let summary = &function["outcomes"][0];
    assert_eq!(
        (
            summary["outcome_type"].as_str(),
            summary["exception_type"].as_str()
        ),
        (Some("stream"), Some("connection_reset"))
    );
    // Cache mode replays a broken stream only when `cache_if` lets it.
    let id = function["id"].as_str().unwrap();
    cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            json!({"cache_if": "any"}),
        )
        .await;

    let output = std::process::Command::new("curl")
        .args(["-sN", "--proxy", &cacheow.url(), &url])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "curl must exit non-zero on the replayed break"
    );
    let body = String::from_utf8_lossy(&output.stdout);
    assert_eq!(body, "data: {\"n\":0}\n\ndata: {\"n\":1}\n\n");
    assert_eq!(upstream.hits(), 1);
    assert_eq!(cacheow.function("/stream").await["stats"]["cache_hits"], 1);
}

#[tokio::test]
async fn a_four_to_one_mix_of_responses_and_resets_gives_twenty_percent_resets() {
    let upstream = Upstream::start(Arc::new(|parts, _| {
        json_reply(&json!({"path": parts.uri.path()}))
    }))
    .await;
    let cacheow = Arc::new(Cacheow::start(&["--default-mode", "cache"]));
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/pay/charge", upstream.url()))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/other", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/pay/charge").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let ok = function["outcomes"][0]["id"].as_str().unwrap().to_owned();
    let reset = cacheow
        .post(
            &format!("/api/functions/{id}/outcomes/manual"),
            json!({"outcome_type": "exception", "exception_type": "connection_reset", "is_mock_only": true}),
        )
        .await["outcome_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cacheow.set_mode(&id, "mock").await;
    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [{"outcome_id": ok, "weight": 4}, {"outcome_id": reset, "weight": 1}]}),
        )
        .await;

    // Another client keeps using the proxy meanwhile; it must never fail.
    let bystander = {
        let client = cacheow.proxied_client();
        let url = format!("{}/other", upstream.url());
        tokio::spawn(async move {
            let mut served = 0;
            for _ in 0..200 {
                let response = client.get(&url).send().await.expect("bystander request");
                assert_eq!(response.status(), 200);
                assert_eq!(response.headers()["x-cacheow-source"], "cache");
                served += 1;
            }
            served
        })
    };
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = cacheow.proxied_client();
        let url = format!("{}/pay/charge", upstream.url());
        workers.push(tokio::spawn(async move {
            let mut resets = 0;
            for _ in 0..250 {
                match client.get(&url).send().await {
                    Ok(response) => assert_eq!(response.status(), 200),
                    Err(_) => resets += 1,
                }
            }
            resets
        }));
    }
    let mut resets = 0;
    for worker in workers {
        resets += worker.await.unwrap();
    }
    assert!(
        (160..=240).contains(&resets),
        "{resets} of 1000 calls were reset; expected 20% ± 4%"
    );
    assert_eq!(bystander.await.unwrap(), 200);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_1_gib_response_passes_through_in_bounded_memory() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 1 << 30;
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let upstream = Upstream::streaming(Arc::new(move |_, _| {
        let (tx, body) = channel_body();
        let chunk = chunk.clone();
        tokio::spawn(async move {
            for _ in 0..TOTAL / CHUNK {
                if tx.send(Ok(chunk.clone())).await.is_err() {
                    return;
                }
            }
        });
        http::Response::new(body)
    }))
    .await;
    let cacheow = Cacheow::start(&["--max-body-bytes", "1048576"]);
    let client = cacheow.proxied_client();
    let small = Upstream::echo().await;
    client
        .get(format!("{}/warm", small.url()))
        .send()
        .await
        .unwrap();
    let idle_kib = cacheow.memory_kib("VmRSS");

    let mut response = client
        .get(format!("{}/huge", upstream.url()))
        .send()
        .await
        .unwrap();
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, TOTAL);
    let peak_kib = cacheow.memory_kib("VmHWM");
    let growth_mib = peak_kib.saturating_sub(idle_kib) / 1024;
    println!("idle {idle_kib} KiB, peak {peak_kib} KiB, growth {growth_mib} MiB");
    assert!(growth_mib < 64, "peak memory grew by {growth_mib} MiB");
    cacheow_tests::eventually("the oversize pass-through is counted", || async {
        let function = cacheow.function("/huge").await;
        function["stats"]["unrecorded"]["oversize"] == 1
            && function["outcomes"] == Value::Array(vec![])
    })
    .await;
}

#[tokio::test]
async fn the_recorded_openai_stream_fixture_replays_offline() {
    // The reverse listener names the real API, but mock mode never calls it.
    let cacheow = Cacheow::start_with_fixture(
        "openai-stream",
        &["--reverse", "127.0.0.1:0=https://api.openai.com"],
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("http://{}/v1/chat/completions", cacheow.reverse[0]))
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Something new"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cacheow-source"], "mock");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (chunks, end) = read_chunks(response).await;
    end.unwrap();
    let text = String::from_utf8(concat(&chunks)).unwrap();
    let words: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(words, "Hello! How can I help you today?");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "replayed with the recorded timing"
    );
}
