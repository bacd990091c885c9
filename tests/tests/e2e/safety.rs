//! Nothing lost, nobody in (issue 11), against the real binary: bounded
//! decoding of gzip bombs, the token off loopback (in a network namespace
//! the test creates), timeouts and the open-files limit, the loop guard,
//! secrets kept out of files, redb and the API, and bounds on what the API
//! accepts.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::{Cacheow, Upstream, closed_port, eventually, json_reply, outcome_files, raw};
use http::Response;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gzip stream of 256 MiB of zeros: about 261 KB on the wire.
fn gzip_bomb() -> Bytes {
    let output = Command::new("sh")
        .args(["-c", "head -c 268435456 /dev/zero | gzip -9"])
        .output()
        .expect("running gzip");
    assert!(output.status.success(), "gzip failed");
    Bytes::from(output.stdout)
}

/// Every file under `dir`, recursively, as bytes.
/// Every file under `dir` with its bytes; an index file's bytes are
/// followed by everything its zstd frames inflate to, so a search of them
/// also sees the compressed outcome rows (live or in freed pages).
fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), readable_bytes(&path)));
            }
        }
    }
    out
}

/// The bytes of a file, and for an index (`*.redb`) what every zstd frame
/// in it inflates to.
fn readable_bytes(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let mut bytes = std::fs::read(path).unwrap();
    if path.extension().is_none_or(|e| e != "redb") {
        return bytes;
    }
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == MAGIC)
        .map(|(i, _)| i)
        .collect();
    let mut inflated = Vec::new();
    for start in starts {
        let Ok(decoder) = zstd::stream::read::Decoder::new(&bytes[start..]) else {
            continue;
        };
        // Internal: a match inside other data is no frame; what it inflates
        // to before the error is kept, which can only widen the search.
        let _ = decoder
            .single_frame()
            .take(16 * 1024 * 1024)
            .read_to_end(&mut inflated);
    }
    bytes.extend(inflated);
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_gzip_bomb_response_and_request_are_recorded_without_an_inflated_view() {
    let bomb = gzip_bomb();
    assert!(bomb.len() < 300_000, "bomb is {} bytes", bomb.len());
    let served = bomb.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| {
        Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Full::new(served.clone()))
            .unwrap()
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let rss_before = cacheow.memory_kib("VmRSS");

    let reply = client
        .get(format!("{}/bomb", upstream.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.bytes().await.unwrap(),
        bomb,
        "the client gets the bytes as sent"
    );
    let reply = client
        .post(format!("{}/upload", upstream.url()))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let functions = cacheow.get("/api/functions").await;
    assert_eq!(
        functions.as_array().unwrap().len(),
        2,
        "both calls recorded"
    );
    for function in functions.as_array().unwrap() {
        let id = function["id"].as_str().unwrap().to_owned();
        let data_dir = cacheow.data_dir().to_owned();
        eventually("the outcome files", || {
            let found = outcome_files(&data_dir, &id).len() == 1;
            async move { found }
        })
        .await;
    }
    let grown_mib = cacheow.memory_kib("VmHWM").saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "peak memory grew by {grown_mib} MiB");

    for (needle, pointer) in [("GET", "/value/body"), ("POST", "/request/body")] {
        let function = cacheow.function(needle).await;
        let id = function["id"].as_str().unwrap();
        let files = outcome_files(cacheow.data_dir(), id);
        assert_eq!(files.len(), 1, "{needle}: one outcome file");
        let outcome: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        let body = outcome.pointer(pointer).unwrap();
        assert!(body.get("base64").is_some(), "{needle}: bytes kept");
        assert!(body.get("decoded").is_none(), "{needle}: no inflated view");
        let size = std::fs::metadata(&files[0]).unwrap().len();
        assert!(size < 1_000_000, "{needle}: outcome file is {size} bytes");
    }
}

/// A network namespace with a veth pair: the host side gets `.1`, the
/// namespace `.2`. Removed on drop.
struct Namespace {
    name: String,
    host: String,
}

impl Namespace {
    fn create() -> Namespace {
        let id = std::process::id() % 250;
        let name = format!("cw-safety-{}", std::process::id());
        let (outer, inner) = (format!("cwo{id}"), format!("cwi{id}"));
        let host = format!("10.231.{id}.1");
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("running ip");
            assert!(
                status.success(),
                "`ip {}` failed: this test needs root and iproute2 to create a network namespace",
                args.join(" ")
            );
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["netns", "add", &name]);
        let namespace = Namespace {
            name: name.clone(),
            host: host.clone(),
        };
        run(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        run(&["link", "set", &inner, "netns", &name]);
        run(&["addr", "add", &format!("{host}/30"), "dev", &outer]);
        run(&["link", "set", &outer, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            run(&all);
        };
        inside(&["addr", "add", &format!("10.231.{id}.2/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        namespace
    }

    /// curl run inside the namespace; returns (HTTP status, stdout).
    async fn curl(&self, args: &[&str]) -> (String, String) {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-sS",
                "--max-time",
                "10",
            ])
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .args(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("running curl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.to_owned(), body.to_owned())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn off_loopback_every_listener_wants_the_token() {
    let upstream = Upstream::start(Arc::new(|_, _| {
        json_reply(&json!({"secret": "loopback-only"}))
    }))
    .await;
    let namespace = Namespace::create();
    let listen = format!("{}:{}", namespace.host, closed_port());
    let reverse = format!("{}:{}={}", namespace.host, closed_port(), upstream.url());
    let cacheow = Cacheow::start(&[
        "--listen",
        &listen,
        "--token",
        "s3cret",
        "--reverse",
        &reverse,
    ]);
    let proxy = format!("http://{}", cacheow.addr);
    let target = format!("{}/private", upstream.url());

    // The attack: a stranger on the network uses cacheow to reach the
    // host's loopback-only service.
    let (status, _) = namespace.curl(&["--proxy", &proxy, &target]).await;
    assert_eq!(status, "407");
    let (status, _) = namespace
        .curl(&["--proxy", &proxy, "--proxy-user", "cacheow:wrong", &target])
        .await;
    assert_eq!(status, "407");
    let tls_target = format!("https://127.0.0.1:{}/", upstream.addr.port());
    let (connect_status, _) = namespace
        .curl(&[
            "--proxy",
            &proxy,
            "-k",
            &tls_target,
            "-w",
            "\n%{http_connect}",
        ])
        .await;
    assert_eq!(
        connect_status, "407",
        "CONNECT without the token is refused"
    );
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");

    // Standard clients put the token in the proxy URL.
    let with_token = format!("http://cacheow:s3cret@{}", cacheow.addr);
    let (connect_status, _) = namespace
        .curl(&[
            "--proxy",
            &with_token,
            "-k",
            &tls_target,
            "-w",
            "\n%{http_connect}",
        ])
        .await;
    assert_eq!(connect_status, "200", "CONNECT with the token is served");
    let (status, body) = namespace.curl(&["--proxy", &with_token, &target]).await;
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("loopback-only"));
    assert_eq!(upstream.hits(), 1);

    let reverse_url = format!("http://{}/private", cacheow.reverse[0]);
    let (status, _) = namespace.curl(&[&reverse_url]).await;
    assert_eq!(status, "401");
    let (status, _) = namespace
        .curl(&["-H", "x-cacheow-token: s3cret", &reverse_url])
        .await;
    assert_eq!(status, "200");
    assert_eq!(upstream.hits(), 2);
    let (status, _) = namespace
        .curl(&[
            "-H",
            "authorization: Bearer s3cret",
            &format!("{proxy}/api/functions"),
        ])
        .await;
    assert_eq!(status, "200", "the API still takes its bearer token");

    let refused = Command::new(cacheow_tests::cacheow_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--reverse"])
        .arg(format!("0.0.0.0:0={}", upstream.url()))
        .env_remove("CACHEOW_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token"));
}

#[tokio::test]
async fn a_loopback_reverse_listener_refuses_foreign_hosts_and_origins() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let reverse = format!("127.0.0.1:0={}", upstream.url());
    let client = reqwest::Client::new();
    for with_token in [false, true] {
        let mut flags = vec!["--reverse", reverse.as_str()];
        if with_token {
            flags.extend(["--token", "s3cret"]);
        }
        let cacheow = Cacheow::start(&flags);
        let hits = upstream.hits();
        let url = format!("http://{}/x", cacheow.reverse[0]);
        let send = |host: &'static str, origin: Option<&'static str>, token: bool| {
            let mut request = client.get(&url).header("host", host);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if token {
                request = request.header("x-cacheow-token", "s3cret");
            }
            async move { request.send().await.unwrap().status() }
        };
        assert_eq!(
            send("attacker.example:80", None, false).await,
            421,
            "{flags:?}"
        );
        let cross = send("localhost", Some("https://attacker.example"), false).await;
        assert_eq!(cross, 403, "{flags:?}");
        assert_eq!(send("localhost", None, false).await, 200, "{flags:?}");
        let local_page = send("127.0.0.1", Some("http://localhost:3000"), false).await;
        assert_eq!(local_page, 200, "{flags:?}");
        assert_eq!(upstream.hits(), hits + 2, "{flags:?}");
        if with_token {
            let named = send("my-laptop.example", None, true).await;
            assert_eq!(named, 200, "the token lets any Host in");
        }
    }
}

#[tokio::test]
async fn a_thousand_idle_sockets_do_not_block_a_new_client_at_a_1024_file_limit() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let cacheow = Cacheow::start_under(&["prlimit", "--nofile=1024:8192"], &[]);
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(TcpStream::connect(cacheow.addr).await.unwrap());
    }
    let started = Instant::now();
    let reply = cacheow
        .proxied_client()
        .get(format!("{}/after-idle", upstream.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a new client is served beside 1,100 idle sockets");
    assert_eq!(reply.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
}

#[tokio::test]
async fn idle_connections_and_stalled_bodies_are_closed_by_their_timeouts() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let reverse = format!("127.0.0.1:0={}", upstream.url());
    let cacheow = Cacheow::start(&[
        "--idle-timeout",
        "1",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--reverse",
        &reverse,
    ]);
    // Nothing at all; half a request head; the start of an HTTP/2 preface,
    // which hyper's protocol detection would wait on forever.
    let stalls: [(SocketAddr, &[u8]); 4] = [
        (cacheow.addr, b""),
        (
            cacheow.addr,
            b"GET http://127.0.0.1/ HTTP/1.1\r\nhost: x\r\n",
        ),
        (cacheow.addr, b"PRI * HTTP/2.0\r\n"),
        (cacheow.reverse[0], b"P"),
    ];
    for (addr, sent) in stalls {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut reply = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
        assert!(
            closed.is_ok(),
            "{addr} after {:?} is closed",
            String::from_utf8_lossy(sent)
        );
    }

    let head = format!(
        "POST {}/upload HTTP/1.1\r\nhost: {}\r\ncontent-length: 10\r\n\r\nabc",
        upstream.url(),
        upstream.addr
    );
    let reply = raw::exchange_until_close(cacheow.addr, &head).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn a_listener_that_leads_back_to_cacheow_answers_508_at_once_and_records_nothing() {
    let port = closed_port();
    let main_port = closed_port();
    let self_pointing = format!("127.0.0.1:{port}=http://127.0.0.1:{port}");
    let to_main = format!("127.0.0.1:0=http://127.0.0.1:{main_port}");
    let listen = format!("127.0.0.1:{main_port}");
    let cacheow = Cacheow::start(&[
        "--listen",
        &listen,
        "--reverse",
        &self_pointing,
        "--reverse",
        &to_main,
    ]);
    let client = reqwest::Client::new();

    let started = Instant::now();
    let reply = client
        .get(format!("http://127.0.0.1:{port}/loop"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(reply.status(), 508);
    assert_eq!(reply.headers()["x-cacheow-error"], "loop_detected");

    let reply = client
        .get(format!("http://{}/api/functions", cacheow.reverse[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        508,
        "the API is not handed out through a reverse listener"
    );

    let mut websocket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let upgrade = format!(
        "GET /socket HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    websocket.write_all(upgrade.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), websocket.read(&mut reply))
        .await
        .expect("a looping websocket upgrade is answered at once")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 508"), "{reply}");

    let mut connect = TcpStream::connect(cacheow.addr).await.unwrap();
    let request =
        format!("CONNECT 127.0.0.1:{main_port} HTTP/1.1\r\nhost: 127.0.0.1:{main_port}\r\n\r\n");
    connect.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), connect.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(
        reply.starts_with("HTTP/1.1 400"),
        "CONNECT to cacheow itself is refused: {reply}"
    );

    let functions = cacheow.get("/api/functions").await;
    for function in functions.as_array().unwrap() {
        assert_eq!(function["outcome_count"], 0, "{function}");
    }
    let looped = functions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["stats"]["unrecorded"]["loop"].as_u64())
        .sum::<u64>();
    assert!(looped >= 1, "the loop is counted: {functions}");
}

#[tokio::test]
async fn secrets_never_reach_the_files_the_index_or_the_api() {
    let seen_host = Arc::new(Mutex::new(String::new()));
    let host = seen_host.clone();
    let upstream = Upstream::start(Arc::new(move |parts, _| {
        *host.lock().unwrap() = parts.headers["host"].to_str().unwrap().to_owned();
        Response::builder()
            .header("content-type", "application/json")
            .header("set-cookie", "sid=SECRET-COOKIE; HttpOnly")
            .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
            .unwrap()
    }))
    .await;
    let mut cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let reply = client
        .post(format!("{}/login?api_key=SECRET-QUERY&q=1", upstream.url()))
        .header("x-auth-token", "SECRET-H1")
        .header("api-key", "SECRET-H2")
        .header("x-goog-api-key", "SECRET-H3")
        .header("authorization", "Bearer SECRET-H4")
        .json(&json!({"user": "ann", "password": "SECRET-BODY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.headers()["set-cookie"],
        "sid=SECRET-COOKIE; HttpOnly",
        "the live reply keeps it"
    );
    // Python's json.dumps spaces its output, so it is stored as text.
    let spaced = client
        .post(format!("{}/spaced", upstream.url()))
        .header("content-type", "application/json")
        .body(r#"{"user": "ann", "password": "SECRET-SPACED"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(spaced.status(), 200);

    // Userinfo in the request target never reaches the upstream's Host.
    let mut stream = TcpStream::connect(cacheow.addr).await.unwrap();
    let request = format!(
        "GET http://user:SECRET-USERINFO@{}/info HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        upstream.addr, upstream.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    assert_eq!(*seen_host.lock().unwrap(), upstream.addr.to_string());

    let login = cacheow.function("/login").await;
    let id = login["id"].as_str().unwrap().to_owned();
    cacheow.set_mode(&id, "cache").await;
    let replay = client
        .post(format!("{}/login?api_key=SECRET-QUERY&q=1", upstream.url()))
        .header("x-auth-token", "SECRET-H1")
        .header("api-key", "SECRET-H2")
        .header("x-goog-api-key", "SECRET-H3")
        .header("authorization", "Bearer SECRET-H4")
        .json(&json!({"user": "ann", "password": "SECRET-BODY"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["x-cacheow-source"], "cache");
    assert!(
        replay.headers().get("set-cookie").is_none(),
        "a replay hands out no recorded session"
    );

    let mut api_text = cacheow.get("/api/functions").await.to_string();
    for function in cacheow.get("/api/functions").await.as_array().unwrap() {
        let id = function["id"].as_str().unwrap();
        let detail = cacheow.get(&format!("/api/functions/{id}")).await;
        api_text.push_str(&detail.to_string());
        for outcome in detail["outcomes"].as_array().unwrap() {
            let oid = outcome["id"].as_str().unwrap();
            api_text.push_str(
                &cacheow
                    .get(&format!("/api/functions/{id}/outcomes/{oid}"))
                    .await
                    .to_string(),
            );
        }
    }
    assert!(
        !api_text.contains("SECRET"),
        "the API shows a secret: {api_text}"
    );

    cacheow.stop();
    for (path, bytes) in every_file(cacheow.data_dir()) {
        if path.extension().is_some_and(|e| e == "pem" || e == "key") {
            continue;
        }
        assert!(
            !contains(&bytes, "SECRET"),
            "{} holds a secret",
            path.display()
        );
    }
}

#[tokio::test]
async fn cacheow_redact_applies_a_new_rule_to_what_was_recorded_before_it() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let mut cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/session?sig=OLD-SIGNATURE", upstream.url()))
        .header("x-session", "OLD-SESSION")
        .send()
        .await
        .unwrap();
    cacheow.stop();
    // The JSON files and the bytes of the index, its compressed rows
    // inflated.
    let index = cacheow.data_dir().join("cacheow.redb");
    let files = || {
        let mut files = every_file(&cacheow.data_dir().join("functions"));
        files.push((index.clone(), readable_bytes(&index)));
        files
    };
    assert!(
        contains(&readable_bytes(&index), "OLD-SESSION"),
        "the search sees inside the index's compressed rows"
    );
    assert!(
        !contains(&std::fs::read(&index).unwrap(), "OLD-SESSION"),
        "the index keeps outcomes compressed"
    );

    let config = cacheow.data_dir().with_extension("redact.toml");
    std::fs::write(
        &config,
        "redact_headers = [\"x-session\"]\nredact_query = [\"sig\"]\n",
    )
    .unwrap();
    let output = Command::new(cacheow_tests::cacheow_bin())
        .args(["redact", "--data-dir"])
        .arg(cacheow.data_dir())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("redacted 1 outcomes"));
    for (path, bytes) in files() {
        assert!(!contains(&bytes, "OLD-SESSION"), "{}", path.display());
        assert!(!contains(&bytes, "OLD-SIGNATURE"), "{}", path.display());
    }
    let cacheow = cacheow.restart();
    let function = cacheow.function("/session").await;
    assert_eq!(function["outcome_count"], 1, "the outcome is still there");
}

#[tokio::test]
async fn the_api_refuses_values_that_could_not_replay() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/bounds", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/bounds").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    let outcome = detail["outcomes"][0]["id"].as_str().unwrap().to_owned();
    let refused = [
        ("config", json!({"replay_speed": 1e300})),
        ("config", json!({"replay_speed": -1})),
        (
            "outcomes/manual",
            json!({"outcome_type": "exception", "exception_type": "timeout", "duration_ms": 1e300}),
        ),
        (
            "outcomes/manual",
            json!({"outcome_type": "return", "value": {"status": 101, "headers": {}, "body": null}}),
        ),
        (
            "outcomes/manual",
            json!({"outcome_type": "return", "value": {"status": 100, "headers": {}, "body": null}}),
        ),
        (
            "mock-outcomes",
            json!({"entries": [{"outcome_id": outcome, "weight": 1e308}, {"outcome_id": outcome, "weight": 1e308}]}),
        ),
    ];
    for (path, body) in refused {
        let (status, reply) = cacheow
            .api(
                http::Method::POST,
                &format!("/api/functions/{id}/{path}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(reply["error"]["message"].is_string(), "{reply}");
    }

    // A hand-edited file with absurd times still replays, clamped.
    let files = outcome_files(cacheow.data_dir(), &id);
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    stored["duration_ms"] = json!(1e300);
    std::fs::write(&files[0], serde_json::to_vec_pretty(&stored).unwrap()).unwrap();
    cacheow
        .post(&format!("/api/functions/{id}/rebuild-index"), json!({}))
        .await;
    cacheow
        .post(
            &format!("/api/functions/{id}/config"),
            json!({"replay_duration": true, "replay_speed": 0}),
        )
        .await;
    cacheow.set_mode(&id, "cache").await;
    let reply = cacheow
        .proxied_client()
        .get(format!("{}/bounds", upstream.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["x-cacheow-source"], "cache");
}

#[tokio::test]
async fn a_function_renamed_by_hand_stays_reachable() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/renamed", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/renamed").await;
    let id = function["id"].as_str().unwrap().to_owned();
    let mut cacheow = cacheow;
    cacheow.stop();
    let file = cacheow
        .data_dir()
        .join("functions")
        .join(&id)
        .join("function.json");
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["name"] = json!("GET my renamed route");
    std::fs::write(&file, serde_json::to_vec_pretty(&stored).unwrap()).unwrap();
    let rebuilt = Command::new(cacheow_tests::cacheow_bin())
        .args(["rebuild-index", "--data-dir"])
        .arg(cacheow.data_dir())
        .output()
        .unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let cacheow = cacheow.restart();
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(detail["name"], "GET my renamed route");
}

/// Follows `x-cacheow-next` through every page of a list.
async fn every_page(base: &str, limit: usize) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}?limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let reply = client.get(&url).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{url}");
        let next = reply
            .headers()
            .get("x-cacheow-next")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = reply.json().await.unwrap();
        assert!(page.len() <= limit);
        rows.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return rows,
        }
    }
}

#[tokio::test]
async fn lists_are_paged_with_limit_and_after() {
    let upstream = Upstream::start(Arc::new(|parts, _| {
        json_reply(&json!({"query": parts.uri.query()}))
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for path in ["a", "b", "c", "d", "e"] {
        client
            .get(format!("{}/{path}", upstream.url()))
            .send()
            .await
            .unwrap();
    }
    for n in 0..3 {
        client
            .get(format!("{}/a?n={n}", upstream.url()))
            .send()
            .await
            .unwrap();
    }
    let all = cacheow.get("/api/functions").await;
    let paged = every_page(&format!("{}/api/functions", cacheow.url()), 2).await;
    assert_eq!(Value::Array(paged.clone()), all);
    assert_eq!(paged.len(), 5);

    let a = cacheow.function("/a").await;
    let id = a["id"].as_str().unwrap();
    let outcomes = every_page(&format!("{}/api/functions/{id}/outcomes", cacheow.url()), 3).await;
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(Value::Array(outcomes), detail["outcomes"]);
    assert_eq!(detail["outcomes"].as_array().unwrap().len(), 4);

    let (status, reply) = cacheow
        .api(http::Method::GET, "/api/functions?limit=0", None)
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = cacheow
        .api(http::Method::GET, "/api/functions?after=nope", None)
        .await;
    assert_eq!(status, 400, "{reply}");
    let unknown = format!("/api/functions/{id}/outcomes?after=0000000000000000");
    let (status, reply) = cacheow.api(http::Method::GET, &unknown, None).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["field"], "after", "{reply}");
}

#[tokio::test]
async fn a_call_through_the_proxy_to_a_reverse_listener_of_the_same_cacheow_is_no_loop() {
    let upstream = Upstream::start(Arc::new(|_, _| json_reply(&json!({"ok": true})))).await;
    let reverse = format!("127.0.0.1:0={}", upstream.url());
    let cacheow = Cacheow::start(&["--reverse", &reverse]);
    let reply = cacheow
        .proxied_client()
        .get(format!("http://{}/chained", cacheow.reverse[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(upstream.hits(), 1);
}
