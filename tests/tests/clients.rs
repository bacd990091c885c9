//! The real-client matrix: curl, requests, httpx (+h2), aiohttp, the openai
//! and anthropic Python SDKs, Node fetch via undici and the openai npm SDK,
//! Java's HttpClient (forward and reverse), each recording in default mode,
//! replaying byte for byte in cache mode with every upstream stopped, then
//! mocking (harness: `cacheow_tests::matrix`). Plus openai-python streams
//! recorded and replayed offline with their gaps, also when the upstream
//! ends the body 50 ms after `[DONE]`. docs/CLIENTS.md is what this checks.
//!
//! Needs `bash tests/clients/install.sh` first (scripts/test.sh runs it).

use std::time::Duration;

use cacheow_tests::matrix::{
    Client, JavaMode, LlmOptions, Matrix, PythonSetup, Row, difference, run_client,
};
use serde_json::json;

async fn check(row: Row) {
    Matrix::start(LlmOptions::default()).await.check(row).await;
}

fn python(script: &'static str) -> Client {
    Client::Python {
        script,
        setup: PythonSetup::SslCertFile,
        extra: json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_after_connect() {
    check(Row {
        name: "curl --http1.1",
        client: Client::Curl { http1: true },
        versions: ["get", "post_json", "gzip", "plain_http", "sse_bytes"]
            .into_iter()
            .map(|c| (c, "1.1"))
            .collect(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_after_connect() {
    check(Row {
        name: "curl (HTTP/2 after CONNECT)",
        client: Client::Curl { http1: false },
        versions: vec![
            ("get", "2"),
            ("post_json", "2"),
            ("gzip", "2"),
            ("sse_bytes", "2"),
            ("plain_http", "1.1"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests() {
    check(Row {
        name: "requests",
        client: Client::Python {
            script: "requests_client.py",
            setup: PythonSetup::RequestsCaBundle,
            extra: json!({}),
        },
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_http1() {
    check(Row {
        name: "httpx",
        client: Client::Python {
            script: "httpx_client.py",
            setup: PythonSetup::SslCertFile,
            extra: json!({"http2": false}),
        },
        versions: vec![("get", "HTTP/1.1"), ("plain_http", "HTTP/1.1")],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_http2_after_connect() {
    check(Row {
        name: "httpx http2=True",
        client: Client::Python {
            script: "httpx_client.py",
            setup: PythonSetup::SslCertFile,
            extra: json!({"http2": true}),
        },
        versions: vec![
            ("get", "HTTP/2"),
            ("post_json", "HTTP/2"),
            ("gzip", "HTTP/2"),
            ("plain_http", "HTTP/1.1"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiohttp_with_trust_env() {
    check(Row {
        name: "aiohttp trust_env=True",
        client: python("aiohttp_client.py"),
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk() {
    check(Row {
        name: "openai-python (non-streaming, streaming, async streaming)",
        client: python("openai_client.py"),
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_with_a_reverse_listener_as_base_url() {
    check(Row {
        name: "openai-python, base_url = a reverse listener",
        client: Client::Python {
            script: "openai_client.py",
            setup: PythonSetup::Reverse,
            extra: json!({}),
        },
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_with_a_reverse_listener_as_base_url() {
    check(Row {
        name: "anthropic-python, base_url = a reverse listener",
        client: Client::Python {
            script: "anthropic_client.py",
            setup: PythonSetup::Reverse,
            extra: json!({}),
        },
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk() {
    check(Row {
        name: "anthropic-python (message, stream)",
        client: python("anthropic_client.py"),
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_via_undici() {
    check(Row {
        name: "node fetch (undici EnvHttpProxyAgent)",
        client: Client::Node {
            script: "fetch_client.cjs",
        },
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_npm_sdk() {
    check(Row {
        name: "openai npm SDK (non-streaming, streaming)",
        client: Client::Node {
            script: "openai_client.cjs",
        },
        versions: vec![],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_httpclient_forward() {
    check(Row {
        name: "Java HttpClient, forward proxy by system properties",
        client: Client::Java(JavaMode::SystemProperties),
        versions: vec![
            ("get", "HTTP_2"),
            ("post_json", "HTTP_2"),
            ("sse_bytes", "HTTP_2"),
            ("plain_http", "HTTP_1_1"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_httpclient_reverse() {
    check(Row {
        name: "Java HttpClient, reverse listeners",
        client: Client::Java(JavaMode::Reverse),
        versions: vec![
            ("get", "HTTP_1_1"),
            ("post_json", "HTTP_1_1"),
            ("sse_bytes", "HTTP_1_1"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_httpclient_proxy_selector() {
    check(Row {
        name: "Java HttpClient, ProxySelector.of(cacheow)",
        client: Client::Java(JavaMode::ProxySelector),
        versions: vec![
            ("get", "HTTP_2"),
            ("post_json", "HTTP_2"),
            ("sse_bytes", "HTTP_2"),
            ("plain_http", "HTTP_1_1"),
        ],
    })
    .await;
}

/// docs/CLIENTS.md says the JDK's default `http.nonProxyHosts` sends
/// loopback hosts around the proxy properties; this is the proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javas_default_non_proxy_hosts_bypass_the_proxy_for_loopback() {
    let matrix = Matrix::start(LlmOptions::default()).await;
    let run = run_client(matrix.java(JavaMode::DefaultNonProxyHosts))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let plain = run
        .calls
        .iter()
        .find(|c| c.name == "plain_http")
        .expect("plain_http");
    assert_eq!(
        (plain.status, plain.source.as_deref()),
        (Some(200), None),
        "{run:?}"
    );
    for call in &run.calls {
        assert_eq!(
            call.source, None,
            "{} went through cacheow: {run:?}",
            call.name
        );
    }
    assert_eq!(matrix.functions().await.len(), 0, "{run:?}");
}

/// docs/CLIENTS.md says Node 20's built-in fetch ignores HTTPS_PROXY; this
/// is the proof: with it set, the call reaches the upstream directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_builtin_fetch_ignores_https_proxy() {
    let matrix = Matrix::start(LlmOptions::default()).await;
    let mut command = Matrix::clean_command("node");
    command
        .arg(cacheow_tests::matrix::clients_dir().join("node/builtin_fetch.cjs"))
        .arg(matrix.config().to_string())
        .env("HTTPS_PROXY", matrix.cacheow.url())
        .env("HTTP_PROXY", matrix.cacheow.url())
        // Internal: going direct, it must trust the upstream's own CA.
        .env("NODE_EXTRA_CA_CERTS", matrix.ca.path());
    let run = run_client(command).await.unwrap_or_else(|e| panic!("{e}"));
    let call = &run.calls[0];
    assert_eq!(call.error, None, "{run:?}");
    assert_eq!(call.status, Some(200), "{run:?}");
    assert_eq!(
        call.source, None,
        "it went through cacheow after all: {run:?}"
    );
    assert_eq!(matrix.llm.hits(), 1);
    assert_eq!(matrix.functions().await.len(), 0);
}

// === openai-python streams with their gaps ===

/// Gaps before each event (the first follows the response head): long and
/// short ones, so a replay that ignored them could not pass.
const GAPS_MS: [u64; 8] = [10, 60, 5, 90, 30, 45, 5, 20];
const STREAMS: usize = 30;
/// How far a replayed gap may be from the recorded one, on a busy 2-core
/// machine with Python measuring.
const GAP_TOLERANCE_MS: f64 = 40.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_openai_python_streams_are_recorded_and_replayed_offline_with_their_gaps() {
    openai_streams_replay_with_gaps(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_when_the_terminator_comes_50_ms_after_done() {
    openai_streams_replay_with_gaps(Duration::from_millis(50)).await;
}

/// openai-python closes its connection as soon as it reads `data: [DONE]`;
/// each stream must still be recorded whole, then replayed from the cache
/// with the upstream stopped, with the same events and the recorded gaps.
async fn openai_streams_replay_with_gaps(end_after_done: Duration) {
    let mut matrix = Matrix::start(LlmOptions {
        gaps_ms: GAPS_MS.to_vec(),
        end_after_done,
    })
    .await;
    let config = json!({"llm": matrix.llm.url(), "count": STREAMS});
    let command = |m: &Matrix| m.python("openai_streams.py", PythonSetup::SslCertFile, &config);
    let what = format!("openai-python streams, terminator {end_after_done:?} after [DONE]");

    let record = run_client(command(&matrix))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut problems = Vec::new();
    // The SDK yields every chunk but `[DONE]`: role, five pieces, finish.
    let events = 7;
    for call in &record.calls {
        if let Some(error) = &call.error {
            problems.push(format!(
                "record / {}: the client failed: {error}",
                call.name
            ));
        } else if call.source.as_deref() != Some("upstream")
            || call.events.as_ref().map(Vec::len) != Some(events)
        {
            problems.push(format!(
                "record / {}: source {:?}, {:?} events (expected \"upstream\", {events})",
                call.name,
                call.source,
                call.events.as_ref().map(Vec::len)
            ));
        }
    }
    assert_eq!(record.calls.len(), STREAMS, "{what}: {record:?}");
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
    assert_eq!(
        matrix.llm.hits(),
        STREAMS,
        "{what}: one upstream request per stream"
    );

    if let Err(e) = matrix.wait_recorded(STREAMS).await {
        panic!("{what}: {e}\ncacheow's log:\n{}", matrix.cacheow.logs());
    }
    let functions = matrix.functions().await;
    assert_eq!(
        functions.len(),
        1,
        "{what}: one function for all the streams"
    );
    let whole: Vec<_> = functions[0]["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .filter(|o| o["outcome_type"] == "stream" && o["exception_type"].is_null())
        .collect();
    assert_eq!(
        whole.len(),
        STREAMS,
        "{what}: {STREAMS} streams should be recorded whole (no exception); outcomes: {:#}",
        functions[0]["outcomes"]
    );
    let upstream_calls = matrix.upstream_calls().await;

    matrix.set_all_modes("cache").await;
    matrix.stop_upstreams();
    let replay = run_client(command(&matrix))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut replayed_ok = 0;
    let mut worst_gap_ms = 0.0f64;
    for (original, call) in record.calls.iter().zip(&replay.calls) {
        let before = problems.len();
        if let Some(error) = &call.error {
            problems.push(format!(
                "replay / {}: the client failed: {error}",
                call.name
            ));
            continue;
        }
        if call.source.as_deref() != Some("cache") {
            problems.push(format!(
                "replay / {}: source {:?}, expected \"cache\"",
                call.name, call.source
            ));
        }
        if let Some(difference) = difference(original, call) {
            problems.push(format!("replay / {}: {difference}", call.name));
        }
        let (recorded_gaps, replayed_gaps) = (original.gaps_ms(), call.gaps_ms());
        for (i, (recorded, replayed)) in recorded_gaps.iter().zip(&replayed_gaps).enumerate() {
            worst_gap_ms = worst_gap_ms.max((recorded - replayed).abs());
            if (recorded - replayed).abs() > GAP_TOLERANCE_MS {
                problems.push(format!(
                    "replay / {}: gap before event {}: recorded {recorded:.0} ms, replayed {replayed:.0} ms",
                    call.name,
                    i + 1
                ));
            }
        }
        if problems.len() == before {
            replayed_ok += 1;
        }
    }
    eprintln!("{what}: replayed gaps within {worst_gap_ms:.1} ms of the recorded ones");
    assert_eq!(
        replayed_ok,
        STREAMS,
        "{what}: {replayed_ok} of {STREAMS} streams replayed identically with their gaps:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        matrix.llm.hits(),
        STREAMS,
        "{what}: the replay reached the upstream"
    );
    assert_eq!(matrix.upstream_calls().await, upstream_calls);
}
