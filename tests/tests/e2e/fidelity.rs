//! Replays stay faithful to what real clients send and expect (issue 10):
//! clients that hang up after the last event, `Upgrade: h2c` offers,
//! Range, conditional and `Vary`-dependent requests, multipart and form
//! bodies, HEAD, oversize bodies in mock mode, mock's preference for the
//! same call, connect failures in cache mode, recorded durations and
//! `proxy-connection`. Each test drives the real binary with curl, reqwest
//! or raw bytes on a socket, as the client in question would.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::{
    Cacheow, Upstream, channel_body, closed_port, eventually, json_reply, outcome_files, raw,
};
use http::Response;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `curl` through cacheow as HTTP_PROXY; returns stdout. Run off the test's
/// runtime, which also serves the upstream.
async fn curl(cacheow: &Cacheow, args: &[&str]) -> String {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--proxy", &cacheow.url()])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn sse_events(count: usize) -> Vec<String> {
    let mut events: Vec<String> = (0..count)
        .map(|i| format!("data: {{\"delta\":\"part {i}\"}}\n\n"))
        .collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// An SSE upstream that sends `events` 20 ms apart, then holds the body
/// open for `tail` before ending it, as servers that flush a terminator
/// late do.
async fn sse_upstream(events: Vec<String>, tail: Duration) -> Upstream {
    Upstream::streaming(Arc::new(move |_, _| {
        let (tx, body) = channel_body();
        let events = events.clone();
        tokio::spawn(async move {
            for event in events {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if tx.send(Ok(Bytes::from(event))).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(tail).await;
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    }))
    .await
}

/// Reads an SSE response through the proxy on a raw socket until
/// `data: [DONE]`, then hangs up at once, as openai-python does.
async fn read_until_done_and_hang_up(cacheow: &Cacheow, url: &str) -> String {
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nhost: {}\r\n\r\n", &url[7..]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: [DONE]") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("events within 10 s")
            .unwrap();
        assert!(n > 0, "closed before [DONE]");
        seen.extend_from_slice(&buffer[..n]);
    }
    drop(stream);
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_stream_the_client_leaves_after_its_last_event_is_recorded_whole() {
    let upstream = sse_upstream(sse_events(3), Duration::from_millis(50)).await;
    let cacheow = Cacheow::start(&[]);
    let url = format!("{}/v1/chat/completions", upstream.url());
    for _ in 0..5 {
        read_until_done_and_hang_up(&cacheow, &url).await;
    }
    eventually("the stream recorded although the client left", || async {
        let function = cacheow.function("/v1/chat/completions").await;
        function["outcomes"].as_array().unwrap().len() == 1 && function["outcomes"][0]["count"] == 5
    })
    .await;
    let function = cacheow.function("/v1/chat/completions").await;
    let id = function["id"].as_str().unwrap();
    assert!(
        function["stats"]["unrecorded"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    cacheow.set_mode(id, "cache").await;
    upstream.stop();
    let replay = curl(&cacheow, &["-N", &url]).await;
    assert_eq!(
        replay,
        sse_events(3).concat(),
        "replayed as the upstream sent it"
    );
}

#[tokio::test]
async fn a_call_whose_rest_never_arrives_after_the_client_left_says_why() {
    let upstream = sse_upstream(sse_events(2), Duration::from_secs(30)).await;
    let cacheow = Cacheow::start(&["--upstream-timeout", "1"]);
    let url = format!("{}/v1/slow", upstream.url());
    read_until_done_and_hang_up(&cacheow, &url).await;
    eventually("client_gone counted", || async {
        let function = cacheow.function("/v1/slow").await;
        function["stats"]["unrecorded"]["client_gone"] == 1
    })
    .await;
    let function = cacheow.function("/v1/slow").await;
    assert!(function["outcomes"].as_array().unwrap().is_empty());
    assert_eq!(function["recent_calls"][0]["unrecorded"], "client_gone");
    let logs = cacheow.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("not recorded") && l.contains("client_gone")),
        "{logs}"
    );
}

/// Answers with the request's headers, so tests see what was forwarded.
async fn header_echo() -> Upstream {
    Upstream::start(Arc::new(|parts, _| {
        let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        json_reply(&json!({ "path": parts.uri.path(), "headers": names }))
    }))
    .await
}

#[tokio::test]
async fn an_h2c_upgrade_offer_is_served_and_recorded_like_any_request() {
    let upstream = header_echo().await;
    let cacheow = Cacheow::start(&[]);
    let request = format!(
        "GET {}/java HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade, HTTP2-Settings\r\n\
         upgrade: h2c\r\nhttp2-settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n\r\n",
        upstream.url(),
        upstream.addr
    );
    let send = || raw::exchange_keepalive(cacheow.addr, &request);
    let first = send().await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(raw::header(&first, "x-cacheow-source"), Some("upstream"));
    let body = first.split("\r\n\r\n").nth(1).unwrap();
    let forwarded: Value = serde_json::from_str(body).unwrap();
    for hop in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !forwarded["headers"]
                .as_array()
                .unwrap()
                .contains(&json!(hop)),
            "{hop} must not reach the upstream: {forwarded}"
        );
    }
    let function = cacheow.function("/java").await;
    cacheow
        .set_mode(function["id"].as_str().unwrap(), "cache")
        .await;
    let second = send().await;
    assert_eq!(raw::header(&second, "x-cacheow-source"), Some("cache"));
    assert_eq!(upstream.hits(), 1);
}

/// Serves a 1000-byte resource with ETag `"v1"`, Range requests and
/// `If-None-Match` revalidation.
async fn range_upstream() -> Upstream {
    let resource: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    Upstream::start(Arc::new(move |parts, _| {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if header("if-none-match") == Some("\"v1\"") {
            return Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        if let Some(range) = header("range").and_then(|r| r.strip_prefix("bytes=")) {
            let (from, to) = range.split_once('-').unwrap();
            let (from, to): (usize, usize) = (from.parse().unwrap(), to.parse().unwrap());
            return Response::builder()
                .status(206)
                .header("etag", "\"v1\"")
                .header("content-range", format!("bytes {from}-{to}/1000"))
                .body(Full::new(Bytes::copy_from_slice(&resource[from..=to])))
                .unwrap();
        }
        Response::builder()
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from(resource.clone())))
            .unwrap()
    }))
    .await
}

#[tokio::test]
async fn range_requests_replay_the_bytes_they_asked_for() {
    let upstream = range_upstream().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/file.bin", upstream.url());
    let first = curl(&cacheow, &["-r", "0-99", &url]).await;
    let second = curl(&cacheow, &["-r", "100-199", &url]).await;
    assert_eq!(upstream.hits(), 2, "a different range is a different call");
    upstream.stop();
    assert_eq!(curl(&cacheow, &["-r", "0-99", &url]).await, first);
    assert_eq!(curl(&cacheow, &["-r", "100-199", &url]).await, second);
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_304_answers_only_requests_with_the_same_condition() {
    let upstream = range_upstream().await;
    let cacheow = Cacheow::start(&[]);
    let url = format!("{}/page", upstream.url());
    let full = curl(&cacheow, &[&url]).await;
    assert_eq!(full.len(), 1000);
    let revalidated = curl(
        &cacheow,
        &["-H", "if-none-match: \"v1\"", "-w", "%{http_code}", &url],
    )
    .await;
    assert_eq!(revalidated, "304");
    let function = cacheow.function("/page").await;
    cacheow
        .set_mode(function["id"].as_str().unwrap(), "cache")
        .await;
    upstream.stop();
    assert_eq!(
        curl(&cacheow, &["-w", "\n%{http_code}", &url]).await,
        format!("{full}\n200"),
        "an unconditional GET never gets the bodyless 304"
    );
    assert_eq!(
        curl(
            &cacheow,
            &["-H", "if-none-match: \"v1\"", "-w", "%{http_code}", &url]
        )
        .await,
        "304"
    );
}

#[tokio::test]
async fn a_reply_is_replayed_only_to_requests_its_vary_headers_match() {
    let upstream = Upstream::start(Arc::new(|parts, _| {
        let gzip = parts
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"));
        let body = if gzip {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(b"hello, plain text").unwrap();
            encoder.finish().unwrap()
        } else {
            b"hello, plain text".to_vec()
        };
        let mut response = Response::builder().header("vary", "accept-encoding");
        if gzip {
            response = response.header("content-encoding", "gzip");
        }
        response.body(Full::new(Bytes::from(body))).unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/greeting", upstream.url());
    // curl --compressed sends accept-encoding and decodes; plain curl sends none.
    assert_eq!(
        curl(&cacheow, &["--compressed", &url]).await,
        "hello, plain text"
    );
    assert_eq!(curl(&cacheow, &[&url]).await, "hello, plain text");
    assert_eq!(
        upstream.hits(),
        2,
        "a client without accept-encoding must not get the gzip bytes"
    );
    upstream.stop();
    assert_eq!(curl(&cacheow, &[&url]).await, "hello, plain text");
    assert_eq!(
        curl(&cacheow, &["--compressed", &url]).await,
        "hello, plain text"
    );
}

#[tokio::test]
async fn mock_mode_never_sends_an_oversize_request_upstream() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--max-body-bytes", "1000"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/upload", upstream.url());
    client.post(&url).body("small").send().await.unwrap();
    let function = cacheow.function("/upload").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let outcome_id = function["outcomes"][0]["id"].as_str().unwrap().to_owned();
    cacheow.set_mode(&id, "mock").await;
    let big = vec![b'x'; 5000];
    let response = client.post(&url).body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-cacheow-error"], "no_mock_outcome");
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ignore_args"),
        "{error}"
    );
    assert_eq!(upstream.hits(), 1, "mock mode never calls upstream");
    cacheow
        .post(
            &format!("/api/functions/{id}/mock-outcomes"),
            json!({"entries": [{"outcome_id": outcome_id, "weight": 1, "enabled": true, "ignore_args": true}]}),
        )
        .await;
    let response = client.post(&url).body(big).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cacheow-source"], "mock");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn identical_multipart_and_form_uploads_are_cache_hits() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.csv");
    std::fs::write(&file, "a,b\n1,2\n").unwrap();
    let url = format!("{}/upload", upstream.url());
    let form_file = format!("file=@{};type=text/csv", file.display());
    // curl picks a new random boundary for every upload.
    let upload_args = ["-F", "title=q3", "-F", &form_file, &url];
    let upload = || curl(&cacheow, &upload_args);
    let first = upload().await;
    let second = upload().await;
    assert_eq!(first, second);
    assert_eq!(upstream.hits(), 1, "the boundary is not part of the key");
    let other = std::fs::read_to_string(&file).unwrap() + "3,4\n";
    std::fs::write(&file, other).unwrap();
    upload().await;
    assert_eq!(upstream.hits(), 2, "other file bytes are another call");

    let form_url = format!("{}/form", upstream.url());
    curl(&cacheow, &["-d", "b=2", "-d", "a=1", &form_url]).await;
    curl(&cacheow, &["-d", "a=1", "-d", "b=2", &form_url]).await;
    assert_eq!(upstream.hits(), 3, "form pairs in another order are a hit");
}

#[tokio::test]
async fn mock_prefers_the_outcomes_recorded_for_the_same_call() {
    let upstream = Upstream::start(Arc::new(|_, body| {
        let request: Value = serde_json::from_slice(body).unwrap();
        if request["stream"] == true {
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Full::new(Bytes::from_static(
                    b"data: {}\n\ndata: [DONE]\n\n",
                )))
                .unwrap()
        } else {
            json_reply(&json!({"choices": [{"message": {"content": "hi"}}]}))
        }
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/v1/chat/completions", upstream.url());
    let call = |stream: bool| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(url)
                .json(&json!({"model": "m", "stream": stream}))
                .send()
                .await
                .unwrap();
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    call(false).await;
    call(true).await;
    let function = cacheow.function("/v1/chat/completions").await;
    cacheow
        .set_mode(function["id"].as_str().unwrap(), "mock")
        .await;
    for _ in 0..20 {
        assert_eq!(call(false).await, "application/json");
        assert_eq!(call(true).await, "text/event-stream");
    }
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn cache_mode_tries_the_upstream_again_after_a_connect_failure() {
    let port = closed_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Internal: `connection: close`, so no pooled connection outlives the
    // upstream's stop.
    let upstream = Upstream::start_at(
        addr,
        Arc::new(|_, _| {
            let mut reply = json_reply(&json!({"ok": 1}));
            reply
                .headers_mut()
                .insert("connection", "close".parse().unwrap());
            reply
        }),
    )
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let base = format!("http://{addr}");
    client.get(format!("{base}/users/1")).send().await.unwrap();
    upstream.stop();
    drop(upstream);
    // Internal: the aborted accept task releases the port asynchronously.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = client.get(format!("{base}/users/2")).send().await.unwrap();
    assert_eq!(refused.headers()["x-cacheow-error"], "connection_refused");
    let upstream = Upstream::start_at(addr, Arc::new(|_, _| json_reply(&json!({"ok": 2})))).await;
    let retried = client.get(format!("{base}/users/2")).send().await.unwrap();
    assert_eq!(retried.headers()["x-cacheow-source"], "upstream");
    assert_eq!(retried.json::<Value>().await.unwrap(), json!({"ok": 2}));
    assert_eq!(upstream.hits(), 1);
    let function = cacheow.function("/users/").await;
    let kinds: Vec<&str> = function["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["exception_type"].as_str())
        .collect();
    assert_eq!(kinds, ["connection_refused"], "the failure stays recorded");
}

#[tokio::test]
async fn head_replays_keep_their_content_length() {
    let upstream = Upstream::start(Arc::new(|_, _| {
        Response::builder()
            .header("content-length", "1234")
            .header("content-type", "application/zip")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/archive.zip", upstream.url());
    let head_args = ["-I", url.as_str()];
    let head = || curl(&cacheow, &head_args);
    let live = head().await;
    let replayed = head().await;
    assert_eq!(upstream.hits(), 1);
    for reply in [&live, &replayed] {
        assert!(
            reply.to_ascii_lowercase().contains("content-length: 1234"),
            "{reply}"
        );
    }
    assert!(replayed.contains("x-cacheow-source: cache"), "{replayed}");
}

#[tokio::test]
async fn http2_with_an_oversize_body_and_a_dead_upstream_gets_the_502() {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let cacheow = Cacheow::start(&[
        "--max-body-bytes",
        "1000",
        "--reverse",
        &format!("127.0.0.1:0={dead}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("big.bin");
    std::fs::write(&body, vec![b'x'; 200_000]).unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge", "-i"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{}/upload", cacheow.reverse[0]));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl: {} {stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("HTTP/2 502"), "{stdout}");
    assert!(
        stdout.contains("x-cacheow-error: connection_refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"kind\":\"connection_refused\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn unbracketed_ipv6_targets_are_accepted_and_bad_targets_explained() {
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let upstream = Upstream::start_at(
        addr,
        Arc::new(|parts, _| json_reply(&json!({"path": parts.uri.path()}))),
    )
    .await;
    let cacheow = Cacheow::start(&[]);
    let reply = raw::exchange_until_close(
        cacheow.addr,
        &format!(
            "GET http://::1:{port}/v6 HTTP/1.1\r\nhost: [::1]:{port}\r\nconnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(r#"{"path":"/v6"}"#), "{reply}");
    assert_eq!(upstream.hits(), 1);
    let function = cacheow.function("/v6").await;
    assert_eq!(function["name"], format!("GET http://[::1]:{port}/v6"));

    let reply = raw::exchange_until_close(
        cacheow.addr,
        "GET http://exa mple.test/x HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        raw::header(&reply, "content-type"),
        Some("application/json")
    );
    assert!(reply.contains("request target"), "{reply}");
    assert!(
        cacheow.logs().contains("request target"),
        "{}",
        cacheow.logs()
    );
}

#[tokio::test]
async fn replay_duration_makes_replies_take_their_recorded_time() {
    let upstream = Upstream::start(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(300));
        json_reply(&json!({"slow": true}))
    }))
    .await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let client = cacheow.proxied_client();
    let url = format!("{}/slow", upstream.url());
    client.get(&url).send().await.unwrap();
    let timed = || async {
        let started = Instant::now();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.headers()["x-cacheow-source"], "cache");
        response.bytes().await.unwrap();
        started.elapsed()
    };
    assert!(
        timed().await < Duration::from_millis(150),
        "instant by default"
    );
    let function = cacheow.function("/slow").await;
    let id = function["id"].as_str().unwrap();
    cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            json!({"replay_duration": true}),
        )
        .await;
    assert!(timed().await >= Duration::from_millis(300));
    cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            json!({"replay_speed": 0}),
        )
        .await;
    assert!(
        timed().await < Duration::from_millis(150),
        "scaled by replay_speed"
    );
    let (status, error) = cacheow
        .api(
            http::Method::POST,
            &format!("/api/functions/{id}/config"),
            Some(json!({"replay_duration": "yes"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["field"], "replay_duration");
}

#[tokio::test]
async fn proxy_connection_is_never_forwarded_or_stored() {
    let upstream = header_echo().await;
    let cacheow = Cacheow::start(&[]);
    let reply = raw::exchange_until_close(
        cacheow.addr,
        &format!(
            "GET {}/legacy HTTP/1.1\r\nhost: {}\r\nproxy-connection: keep-alive\r\nconnection: close\r\n\r\n",
            upstream.url(),
            upstream.addr
        ),
    )
    .await;
    assert!(!reply.contains("proxy-connection"), "{reply}");
    let function = cacheow.function("/legacy").await;
    let id = function["id"].as_str().unwrap().to_owned();
    eventually("outcome file", || async {
        outcome_files(cacheow.data_dir(), &id).len() == 1
    })
    .await;
    let file = std::fs::read_to_string(&outcome_files(cacheow.data_dir(), &id)[0]).unwrap();
    assert!(!file.contains("proxy-connection"), "{file}");
}
