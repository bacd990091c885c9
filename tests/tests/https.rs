//! HTTPS end to end (issue 3): cacheow's own CA, CONNECT interception with
//! real TLS on loopback, upstream TLS, blind tunnels and upgrades. Clients
//! are curl and reqwest, trusting cacheow's CA as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheow_tests::tls::{
    Alpn, HttpsUpstream, TestCa, TlsFront, connect_raw, get, https_client_through, peer_chain,
    read_head, roots_from_pem_file, tls_through, upgrade_echo,
};
use cacheow_tests::{Cacheow, Handler, Upstream, cacheow_bin, json_reply};
use rustls::RootCertStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers with what it saw, including the HTTP version it was spoken to in.
fn echo() -> Handler {
    Arc::new(|parts, body| {
        json_reply(&json!({
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "method": parts.method.as_str(),
            "version": format!("{:?}", parts.version),
            "body": String::from_utf8_lossy(body),
        }))
    })
}

fn ca_cert(cacheow: &Cacheow) -> PathBuf {
    cacheow.data_dir().join("ca").join("cacheow-ca.pem")
}

/// What curl saw.
#[derive(Debug)]
struct Curl {
    /// curl's exit code (0 unless the transfer failed, e.g. 60 for TLS).
    code: i32,
    /// `%{http_version}`: "2", "1.1".
    version: String,
    status: u16,
    /// Response headers, lowercase names.
    headers: String,
    body: Vec<u8>,
}

impl Curl {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Runs curl through `proxy`, trusting `cacert`, with `extra` flags.
async fn curl(proxy: &str, cacert: &Path, url: &str, extra: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "20", "--proxy", proxy, "--cacert"])
        .arg(cacert)
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(extra)
        .arg(url);
    for name in ["NO_PROXY", "no_proxy", "CURL_CA_BUNDLE", "SSL_CERT_FILE"] {
        command.env_remove(name);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (version, status) = written.split_once(' ').unwrap_or(("", "0"));
    Curl {
        code: output.status.code().unwrap_or(-1),
        version: version.to_owned(),
        status: status.parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

async fn curl_via(cacheow: &Cacheow, url: &str, extra: &[&str]) -> Curl {
    curl(&cacheow.url(), &ca_cert(cacheow), url, extra).await
}

#[tokio::test]
async fn https_is_recorded_replayed_and_mocked_through_the_proxy() {
    let test_ca = TestCa::new();
    let upstream = HttpsUpstream::start(echo(), &test_ca, Alpn::H2AndHttp1).await;
    let cacheow = Cacheow::start(&["--upstream-ca", test_ca.path().to_str().unwrap()]);
    let client = https_client_through(cacheow.addr, roots_from_pem_file(&ca_cert(&cacheow)));
    let url = format!("{}/v1/users/42?verbose=1", upstream.url());

    let recorded = curl_via(&cacheow, &url, &[]).await;
    assert_eq!((recorded.code, recorded.status), (0, 200), "{recorded:?}");
    assert_eq!(recorded.header("x-cacheow-source").unwrap(), "upstream");
    assert_eq!(recorded.json()["path"], "/v1/users/42");
    let (head, body) = get(&client, &url).await;
    assert_eq!(head.headers["x-cacheow-source"], "upstream");
    assert_eq!(head.version, http::Version::HTTP_2, "ALPN h2 after CONNECT");
    assert_eq!(body, recorded.body);
    assert_eq!(upstream.hits(), 2, "default mode calls upstream every time");

    let function = cacheow.function("/v1/users").await;
    assert_eq!(
        function["name"],
        format!("GET {}/v1/users/{{id}}", upstream.url()),
        "the scheme is https in the function's identity"
    );
    let id = function["id"].as_str().unwrap();

    cacheow.set_mode(id, "cache").await;
    let replayed = curl_via(&cacheow, &url, &[]).await;
    assert_eq!(replayed.header("x-cacheow-source").unwrap(), "cache");
    assert_eq!(replayed.body, recorded.body);
    let (head, body) = get(&client, &url).await;
    assert_eq!(head.headers["x-cacheow-source"], "cache");
    assert_eq!(body, recorded.body);
    assert_eq!(upstream.hits(), 2, "cache mode replays without calling");

    upstream.stop();
    cacheow.set_mode(id, "mock").await;
    let mocked = curl_via(&cacheow, &url, &[]).await;
    assert_eq!(mocked.status, 200, "{mocked:?}");
    assert_eq!(mocked.header("x-cacheow-source").unwrap(), "mock");
    assert_eq!(mocked.body, recorded.body);
    let (head, body) = get(&client, &url).await;
    assert_eq!(head.headers["x-cacheow-source"], "mock");
    assert_eq!(body, recorded.body);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn curl_gets_http2_after_connect_and_http1_only_upstreams_work() {
    let test_ca = TestCa::new();
    let h2 = HttpsUpstream::start(echo(), &test_ca, Alpn::H2AndHttp1).await;
    let h1 = HttpsUpstream::start(echo(), &test_ca, Alpn::Http1Only).await;
    let cacheow = Cacheow::start(&["--upstream-ca", test_ca.path().to_str().unwrap()]);
    for (upstream, upstream_version) in [(&h2, "HTTP/2.0"), (&h1, "HTTP/1.1")] {
        let url = format!("{}/proto", upstream.url());
        let over_h2 = curl_via(&cacheow, &url, &[]).await;
        assert_eq!(
            (over_h2.version.as_str(), over_h2.status),
            ("2", 200),
            "{over_h2:?}"
        );
        assert_eq!(over_h2.json()["version"], upstream_version);
        let over_h1 = curl_via(&cacheow, &url, &["--http1.1"]).await;
        assert_eq!(
            (over_h1.version.as_str(), over_h1.status),
            ("1.1", 200),
            "{over_h1:?}"
        );
        assert_eq!(over_h1.body, over_h2.body, "same bytes on either protocol");
    }
    assert_eq!((h2.hits(), h1.hits()), (2, 2));
}

#[tokio::test]
async fn the_ca_survives_restarts_and_signs_one_leaf_per_host() {
    let cacheow = Cacheow::start(&[]);
    let cert = ca_cert(&cacheow);
    let key = cert.with_file_name("cacheow-ca-key.pem");
    let pem = std::fs::read(&cert).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    }

    // `cacheow ca` reads only the CA files, so it works beside `serve`.
    let ca = |extra: &[&str]| {
        let output = Command::new(cacheow_bin())
            .args(["ca", "--data-dir"])
            .arg(cacheow.data_dir())
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(ca(&["--pem"]).as_bytes(), pem);
    let help = ca(&[]);
    for needle in [
        cert.to_str().unwrap(),
        "--cacert",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "reqwest",
        "/usr/local/share/ca-certificates/cacheow.crt",
        "update-ca-certificates",
    ] {
        assert!(
            help.contains(needle),
            "`cacheow ca` should mention {needle}:\n{help}"
        );
    }

    // Handshakes that verify against cacheow's CA alone: a.test and b.test
    // by SNI, 127.0.0.1 (no SNI) by the CONNECT authority; rustls checks
    // the name, so the last one proves an IP SAN.
    let roots = roots_from_pem_file(&cert);
    let mut chains = Vec::new();
    for (target, name) in [
        ("a.test:443", "a.test"),
        ("b.test:443", "b.test"),
        ("127.0.0.1:443", "127.0.0.1"),
    ] {
        let stream = tls_through(cacheow.addr, target, name, roots.clone(), Alpn::H2AndHttp1)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        chains.push(peer_chain(&stream));
    }
    assert_ne!(chains[0][0], chains[1][0], "each host has its own leaf");
    assert_eq!(chains[0][1], chains[1][1], "both signed by the one CA");
    let cacheow = cacheow.restart();
    assert_eq!(
        std::fs::read(ca_cert(&cacheow)).unwrap(),
        pem,
        "same CA after a restart"
    );
    let stream = tls_through(cacheow.addr, "a.test:443", "a.test", roots, Alpn::Http1Only).await;
    assert!(stream.is_ok(), "the old CA file still verifies: {stream:?}");
}

#[tokio::test]
async fn an_upstream_certificate_that_does_not_verify_is_a_tls_error_outcome() {
    let untrusted_ca = TestCa::new();
    let upstream = HttpsUpstream::start(echo(), &untrusted_ca, Alpn::H2AndHttp1).await;
    let cacheow = Cacheow::start(&["--default-mode", "cache"]);
    let url = format!("{}/secure", upstream.url());
    // Cache mode tries a failed upstream again (`cache_if` is "responses"
    // by default); the failure is recorded once, counted twice.
    for _ in 0..2 {
        let source = "upstream";
        let started = Instant::now();
        let reply = curl_via(&cacheow, &url, &[]).await;
        assert!(started.elapsed() < Duration::from_secs(10), "no hang");
        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(
            reply.header("x-cacheow-error").unwrap(),
            "tls_error",
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("x-cacheow-source").unwrap(), source);
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("certificate"), "{message}");
    }
    let function = cacheow.function("/secure").await;
    let outcomes = function["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{function:#}");
    assert_eq!(outcomes[0]["exception_type"], "tls_error");
    assert_eq!(outcomes[0]["count"], 2);
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn no_intercept_hosts_are_tunnelled_blind_and_not_recorded() {
    let test_ca = TestCa::new();
    let upstream = HttpsUpstream::start(echo(), &test_ca, Alpn::H2AndHttp1).await;
    let cacheow = Cacheow::start(&["--no-intercept", "local*"]);
    let pinned = format!("https://localhost:{}/pinned", upstream.port());

    // Trusting only the upstream's own CA works: the client sees its cert.
    let reply = curl(&cacheow.url(), &test_ca.path(), &pinned, &[]).await;
    assert_eq!((reply.code, reply.status), (0, 200), "{reply:?}");
    assert_eq!(reply.json()["path"], "/pinned");
    assert!(reply.header("x-cacheow-source").is_none(), "{reply:?}");
    let stream = tls_through(
        cacheow.addr,
        &format!("localhost:{}", upstream.port()),
        "localhost",
        roots_from_pem_file(&test_ca.path()),
        Alpn::H2AndHttp1,
    )
    .await
    .unwrap();
    assert_eq!(peer_chain(&stream).last(), Some(test_ca.der()));

    // A host the pattern does not match is intercepted: cacheow's leaf.
    let intercepted = curl(&cacheow.url(), &test_ca.path(), &upstream.url(), &[]).await;
    assert_eq!(intercepted.code, 60, "{intercepted:?}");

    assert_eq!(upstream.hits(), 1);
    assert_eq!(cacheow.get("/api/functions").await, json!([]));
}

#[tokio::test]
async fn malformed_connects_and_non_tls_bytes_get_clear_errors() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);

    for (target, expected) in [
        ("example.com", "has no port"),
        ("bad_host!:443", "neither a host name nor an IP address"),
        ("example.com:0", "port 0"),
    ] {
        let (head, mut stream) = connect_raw(cacheow.addr, target).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{target}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(expected), "{target}: {body}");
    }
    let (head, _) = connect_raw(cacheow.addr, "[::1").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // Not TLS after CONNECT: a plain-text 400 saying what was expected.
    let (head, mut garbage) = connect_raw(cacheow.addr, "a.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    garbage
        .write_all(b"\x00\x01\x02 not tls\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), garbage.read_to_string(&mut reply))
        .await
        .expect("closed, not wedged")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("TLS handshake"), "{reply}");

    // A client that does not trust the CA fails its handshake, cleanly.
    let distrust = tls_through(
        cacheow.addr,
        "a.test:443",
        "a.test",
        RootCertStore::empty(),
        Alpn::H2AndHttp1,
    )
    .await;
    assert!(distrust.is_err());

    // A tunnel that stays silent holds nothing else up.
    let (_, _silent) = connect_raw(cacheow.addr, "b.test:443").await;
    let response = cacheow
        .proxied_client()
        .get(format!("{}/still-up", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cacheow-source"], "upstream");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn plain_http_after_connect_is_proxied_as_http() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let (head, mut stream) = connect_raw(cacheow.addr, &upstream.addr.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
        .write_all(b"GET /through-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-cacheow-source: upstream"), "{reply}");
    assert!(reply.contains("/through-tunnel"), "{reply}");
    let function = cacheow.function("/through-tunnel").await;
    assert_eq!(
        function["name"],
        format!("GET http://{}/through-tunnel", upstream.addr)
    );
}

/// Sends a WebSocket handshake for `path` to `host` and checks that bytes
/// echo back once it is switched.
async fn upgrade_and_echo<S>(stream: &mut S, request_target: &str, host: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET {request_target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"ping 1"[..], b"\x81\x05hello"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .expect("echo")
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn websocket_upgrades_pass_through_plain_and_intercepted() {
    let (plain, _echo) = upgrade_echo().await;
    let test_ca = TestCa::new();
    let tls = TlsFront::start(plain, &test_ca, Alpn::Http1Only).await;
    let cacheow = Cacheow::start(&["--upstream-ca", test_ca.path().to_str().unwrap()]);

    // ws:// as an absolute-form request to the forward proxy.
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    upgrade_and_echo(
        &mut stream,
        &format!("http://{plain}/ws"),
        &plain.to_string(),
    )
    .await;

    // wss:// through CONNECT, TLS terminated by cacheow, TLS again upstream.
    let authority = format!("127.0.0.1:{}", tls.addr.port());
    let mut stream = tls_through(
        cacheow.addr,
        &authority,
        "127.0.0.1",
        roots_from_pem_file(&ca_cert(&cacheow)),
        Alpn::Http1Only,
    )
    .await
    .unwrap();
    upgrade_and_echo(&mut stream, "/ws", &authority).await;

    assert_eq!(cacheow.get("/api/functions").await, json!([]));
}

#[tokio::test]
async fn reverse_listeners_reach_https_upstreams() {
    let test_ca = TestCa::new();
    let upstream = HttpsUpstream::start(echo(), &test_ca, Alpn::H2AndHttp1).await;
    let reverse = format!("127.0.0.1:0={}/base", upstream.url());
    let cacheow = Cacheow::start(&[
        "--reverse",
        &reverse,
        "--upstream-ca",
        test_ca.path().to_str().unwrap(),
    ]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}/v1/users/7", cacheow.reverse[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cacheow-source"], "upstream");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/base/v1/users/7");
    assert_eq!(body["version"], "HTTP/2.0", "h2 to the upstream by ALPN");
    let function = cacheow.function("/v1/users").await;
    assert_eq!(
        function["name"],
        format!("GET {}/base/v1/users/{{id}}", upstream.url())
    );
}

/// A clean stop (SIGTERM) finishes a request in flight inside an
/// intercepted CONNECT, like one on a plain connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_an_intercepted_https_request_completes_it() {
    let test_ca = TestCa::new();
    let slow: Handler = Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(3500));
        json_reply(&json!({"slow": "but whole"}))
    });
    let upstream = HttpsUpstream::start(slow, &test_ca, Alpn::H2AndHttp1).await;
    let mut cacheow = Cacheow::start(&["--upstream-ca", test_ca.path().to_str().unwrap()]);
    let (proxy, cacert) = (cacheow.url(), ca_cert(&cacheow));
    let url = format!("{}/slow", upstream.url());
    let in_flight = tokio::spawn(async move { curl(&proxy, &cacert, &url, &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::block_in_place(|| cacheow.stop());
    // Internal: the reply comes ~3 s after the stop began; an unwatched
    // connection would be gone by then.
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.code, 0, "curl failed: {reply:?}");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["slow"], "but whole");
    assert!(status.success(), "cacheow exits cleanly: {status}");
}
