//! Upstream connections (issue 12): the calls of a keep-alive client share
//! one upstream connection, clients that connect per request reuse an idle
//! one, a connection never carries a call to another host, and an upstream
//! that closes its connection costs the client nothing. Asserted on the
//! upstream's own count of accepted connections.

use std::sync::Arc;

use cacheow_tests::{Cacheow, Upstream, json_reply, raw};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// `GET http://UPSTREAM/path`, absolute-form, as an `HTTP_PROXY` client
/// sends it.
fn proxied_get(upstream: &Upstream, path: &str, extra: &str) -> String {
    format!(
        "GET {}{path} HTTP/1.1\r\nhost: {}\r\n{extra}\r\n",
        upstream.url(),
        upstream.addr
    )
}

/// An upstream that answers `{"server": name, "path": …}`.
async fn named(name: &'static str) -> Upstream {
    Upstream::start(Arc::new(move |parts, _| {
        json_reply(&json!({"server": name, "path": parts.uri.path()}))
    }))
    .await
}

fn reply_json(reply: &str) -> Value {
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    serde_json::from_str(raw::body(reply)).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

#[tokio::test]
async fn a_keep_alive_client_calls_over_one_upstream_connection() {
    let upstream = named("a").await;
    let cacheow = Cacheow::start(&[]);
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    for i in 0..20 {
        let path = format!("/items/{i}");
        let reply = raw::exchange(&mut stream, &proxied_get(&upstream, &path, "")).await;
        assert_eq!(raw::header(&reply, "x-cacheow-source"), Some("upstream"));
        assert_eq!(reply_json(&reply)["path"], path.as_str());
    }
    assert_eq!(upstream.hits(), 20);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn clients_that_connect_per_request_reuse_an_idle_upstream_connection() {
    let upstream = named("a").await;
    let cacheow = Cacheow::start(&[]);
    for i in 0..10 {
        let path = format!("/once/{i}");
        let request = proxied_get(&upstream, &path, "connection: close\r\n");
        let reply = raw::exchange_until_close(cacheow.addr, &request).await;
        assert_eq!(reply_json(&reply)["path"], path.as_str());
    }
    assert_eq!(upstream.hits(), 10);
    // Internal: a connection goes back to the idle list as its client's
    // connection ends, a moment after the client reads the close, so a
    // client that reconnects at once may now and then open another one.
    // Without the idle list every client opens one (10).
    let connections = upstream.connections();
    assert!(
        connections <= 3,
        "{connections} upstream connections for 10 calls"
    );
}

#[tokio::test]
async fn one_client_connection_to_two_hosts_sends_each_call_to_its_host() {
    let a = named("a").await;
    let b = named("b").await;
    let cacheow = Cacheow::start(&[]);
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    for (upstream, name) in [(&a, "a"), (&b, "b"), (&a, "a"), (&b, "b"), (&a, "a")] {
        let reply = raw::exchange(&mut stream, &proxied_get(upstream, "/who", "")).await;
        assert_eq!(reply_json(&reply)["server"], name);
    }
    assert_eq!((a.hits(), b.hits()), (3, 2));
    // Internal: the connection to one host waits idle while the client
    // talks to the other, and is taken up again.
    assert_eq!((a.connections(), b.connections()), (1, 1));
}

#[tokio::test]
async fn an_upstream_that_closes_each_connection_is_reconnected_without_an_error() {
    let upstream = Upstream::start(Arc::new(|parts, _| {
        let mut reply = json_reply(&json!({"path": parts.uri.path()}));
        reply
            .headers_mut()
            .insert("connection", http::HeaderValue::from_static("close"));
        reply
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    for i in 0..5 {
        let path = format!("/closing/{i}");
        let reply = raw::exchange(&mut stream, &proxied_get(&upstream, &path, "")).await;
        assert_eq!(reply_json(&reply)["path"], path.as_str());
        assert_eq!(raw::header(&reply, "connection"), None, "{reply}");
    }
    assert_eq!(upstream.hits(), 5);
    assert_eq!(upstream.connections(), 5);
}

#[tokio::test]
async fn a_reverse_listener_keeps_one_upstream_connection_per_client_connection() {
    let upstream = named("a").await;
    let reverse = format!("127.0.0.1:0={}", upstream.url());
    let cacheow = Cacheow::start(&["--reverse", &reverse]);
    let mut first = TcpStream::connect(cacheow.reverse[0]).await.unwrap();
    let mut second = TcpStream::connect(cacheow.reverse[0]).await.unwrap();
    for i in 0..4 {
        for stream in [&mut first, &mut second] {
            let request = format!("GET /r/{i} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
            let reply = raw::exchange(stream, &request).await;
            assert_eq!(reply_json(&reply)["path"], format!("/r/{i}"));
        }
    }
    assert_eq!(upstream.hits(), 8);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_reverse_listener_with_a_base_path_sends_the_joined_path_upstream() {
    let upstream = named("a").await;
    let reverse = format!("127.0.0.1:0={}/base", upstream.url());
    let cacheow = Cacheow::start(&["--reverse", &reverse]);
    let mut stream = TcpStream::connect(cacheow.reverse[0]).await.unwrap();
    for i in 0..3 {
        let request = format!("GET /r/{i}?q={i} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        let reply = raw::exchange(&mut stream, &request).await;
        assert_eq!(reply_json(&reply)["path"], format!("/base/r/{i}"));
    }
    assert_eq!((upstream.hits(), upstream.connections()), (3, 1));
}

#[tokio::test]
async fn an_oversize_request_passes_through_and_the_connection_serves_the_next_call() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--max-body-bytes", "1024"]);
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    let body = "x".repeat(4096);
    let post = format!(
        "POST {}/big HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n{body}",
        upstream.url(),
        upstream.addr,
        body.len()
    );
    let reply = raw::exchange(&mut stream, &post).await;
    assert_eq!(
        reply_json(&reply)["body"].as_str().map(str::len),
        Some(4096)
    );
    let reply = raw::exchange(&mut stream, &proxied_get(&upstream, "/after", "")).await;
    assert_eq!(reply_json(&reply)["path"], "/after");
    assert_eq!((upstream.hits(), upstream.connections()), (2, 1));
    let function = cacheow.function("/big").await;
    assert_eq!(function["outcome_count"], 0);
    assert_eq!(function["stats"]["unrecorded"]["request_oversize"], 1);
}
