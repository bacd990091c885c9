//! Upstream transport failures: recorded as error outcomes and replayed as
//! DESIGN §3 says. Also the size cap and hop-by-hop headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::{Cacheow, Upstream, closed_port};
use http_body_util::Full;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

async fn failure_outcome(cacheow: &Cacheow, needle: &str) -> Value {
    let function = cacheow.function(needle).await;
    assert_eq!(
        function["outcomes"].as_array().unwrap().len(),
        1,
        "{function:#}"
    );
    function
}

#[tokio::test]
async fn refused_connections_are_recorded_and_replayed_as_502() {
    let port = closed_port();
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("http://127.0.0.1:{port}/down");
    // Cache mode tries a refused upstream again each time (issue 10); the
    // recorded failure replays in mock mode.
    for expected_source in ["upstream", "upstream", "mock"] {
        if expected_source == "mock" {
            let id = cacheow.function("/down").await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            cacheow.set_mode(&id, "mock").await;
        }
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["x-cacheow-error"], "connection_refused");
        assert_eq!(response.headers()["x-cacheow-source"], expected_source);
    }
    let function = failure_outcome(&cacheow, "/down").await;
    assert_eq!(function["outcomes"][0]["count"], 2);
    assert_eq!(function["outcomes"][0]["outcome_type"], "exception");
    assert_eq!(
        function["outcomes"][0]["exception_type"],
        "connection_refused"
    );
    assert_eq!(function["stats"]["exceptions"], 3);
    // Worded as the pooled client (https) words it, so one failure is one
    // outcome whichever connection it happened on.
    let message = recorded_message(&cacheow, &function).await;
    assert!(
        message.starts_with("client error (Connect): tcp connect error"),
        "{message}"
    );
}

/// Lets cache mode replay recorded transport failures (`cache_if = "any"`;
/// by default it calls the upstream again).
async fn replay_failures_in_cache_mode(cacheow: &Cacheow, function: &Value) {
    let id = function["id"].as_str().unwrap();
    cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            serde_json::json!({"cache_if": "any"}),
        )
        .await;
}

/// The `exception_message` of a function's first outcome.
async fn recorded_message(cacheow: &Cacheow, function: &Value) -> String {
    let id = function["id"].as_str().unwrap();
    let outcome_id = function["outcomes"][0]["id"].as_str().unwrap();
    let full = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome_id}"))
        .await;
    full["exception_message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn resets_are_recorded_and_replayed_as_a_broken_connection() {
    // An upstream that reads the request, then closes without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            drop(stream);
            served += 1;
        }
        served
    });
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("http://{addr}/flaky");
    let live = client.get(&url).send().await.unwrap_err();
    assert!(live.is_request(), "{live:?}");
    let function = failure_outcome(&cacheow, "/flaky").await;
    assert_eq!(
        function["outcomes"][0]["exception_type"],
        "connection_reset"
    );
    let message = recorded_message(&cacheow, &function).await;
    assert!(
        message.starts_with("client error (SendRequest): "),
        "{message}"
    );
    replay_failures_in_cache_mode(&cacheow, &function).await;
    let replayed = client.get(&url).send().await.unwrap_err();
    assert!(replayed.is_request(), "{replayed:?}");
    let detail = cacheow.function("/flaky").await;
    assert_eq!(detail["stats"]["cache_hits"], 1);
    accepted.abort();
}

#[tokio::test]
async fn timeouts_are_recorded_with_their_duration_and_replayed_as_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let cacheow = Cacheow::start(&["--default-mode", "cache", "--upstream-timeout", "0.4"]);
    let client = cacheow.proxied_client();
    let url = format!("http://{addr}/slow");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-cacheow-error"], "timeout");
    let function = failure_outcome(&cacheow, "/slow").await;
    let id = function["id"].as_str().unwrap();
    let outcome_id = function["outcomes"][0]["id"].as_str().unwrap();
    let full = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome_id}"))
        .await;
    let recorded = full["duration_ms"].as_f64().unwrap();
    assert!(recorded >= 400.0, "recorded duration {recorded}");
    replay_failures_in_cache_mode(&cacheow, &function).await;
    let started = Instant::now();
    let replay = client.get(&url).send().await.unwrap();
    assert_eq!(
        (
            replay.status().as_u16(),
            replay.headers()["x-cacheow-source"].to_str().unwrap()
        ),
        (504, "cache")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "replay held {:?}",
        started.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn bodies_above_the_cap_pass_through_unrecorded_and_are_counted() {
    let big = Bytes::from(vec![b'x'; 5000]);
    let upstream = Upstream::start(Arc::new(move |_, _| {
        http::Response::new(Full::new(big.clone()))
    }))
    .await;
    let cacheow = Cacheow::start(&["--max-body-bytes", "1000"]);
    let response = cacheow
        .proxied_client()
        .get(format!("{}/big", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 5000);
    cacheow_tests::eventually("oversize counted", || async {
        let function = cacheow.function("/big").await;
        function["stats"]["unrecorded"]["oversize"] == 1
            && function["outcomes"].as_array().unwrap().is_empty()
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_neither_forwarded_nor_stored() {
    let upstream = Upstream::start(Arc::new(|parts, _| {
        let seen: Vec<String> = parts.headers.keys().map(|k| k.to_string()).collect();
        http::Response::builder()
            .header("connection", "x-hop")
            .header("x-hop", "drop me")
            .header("x-kept", "yes")
            .body(Full::new(Bytes::from(seen.join(","))))
            .unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let response = cacheow
        .proxied_client()
        .get(format!("{}/hops", upstream.url()))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("x-hop").is_none());
    assert_eq!(response.headers()["x-kept"], "yes");
    let text = response.text().await.unwrap();
    let seen: Vec<&str> = text.split(',').collect();
    for hop in ["x-private", "te", "connection", "proxy-connection"] {
        assert!(!seen.contains(&hop), "{hop} reached the upstream: {seen:?}");
    }
    assert!(
        seen.contains(&"host"),
        "the list is the upstream's: {seen:?}"
    );
    let function = cacheow.function("/hops").await;
    let id = function["id"].as_str().unwrap();
    let outcome = function["outcomes"][0]["id"].as_str().unwrap();
    let full = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome}"))
        .await;
    let stored = full["value"]["headers"].to_string();
    assert!(
        stored.contains("x-kept") && !stored.contains("x-hop") && !stored.contains("connection"),
        "{stored}"
    );
}
