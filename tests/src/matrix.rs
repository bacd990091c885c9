//! The real-client matrix (`tests/tests/clients.rs`): HTTP clients in
//! Python, Node, Java and curl, run as child processes against the real
//! cacheow and two real upstreams on loopback, httpbin (a third-party app,
//! under gunicorn, in plain HTTP and behind TLS) and an OpenAI- and
//! Anthropic-compatible SSE server over TLS with a private CA. A row
//! records in default mode, replays in cache mode with every upstream
//! stopped, then mocks; every difference is reported by row, phase and call.
//!
//! The clients come from `tests/clients/install.sh` (a venv and npm
//! packages under the target dir); the JDK and curl from the machine.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::tls::{Alpn, TestCa, TlsFront};
use crate::{Cacheow, cacheow_bin, channel_body};

/// How long one client run may take before it is killed and reported.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

// === the installed clients ===

/// What `tests/clients/install.sh` installed, checked, and the Java row
/// compiled.
pub struct Kit {
    /// The venv's interpreter.
    pub python: PathBuf,
    /// The venv's gunicorn, which serves httpbin.
    pub gunicorn: PathBuf,
    /// `node_modules` of the npm install, for `NODE_PATH`.
    pub node_modules: PathBuf,
    /// Where `tests/clients/java/*.java` were compiled to.
    pub java_classes: PathBuf,
}

/// `tests/clients/`.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The installed clients; panics, saying what to run, when they are
/// missing or older than their pinned files (never skips).
pub fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        let target = cacheow_bin()
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/cacheow")
            .to_path_buf();
        let clients = clients_dir();
        let venv = target.join("clients-venv");
        let node = target.join("clients-node");
        let stale = |installed: &Path, pinned: &Path| {
            std::fs::read(installed.join(".installed-from")).ok() != std::fs::read(pinned).ok()
        };
        let fix = "run `bash tests/clients/install.sh` (scripts/test.sh does)";
        assert!(
            !stale(&venv, &clients.join("requirements.txt")) && venv.join("bin/python").exists(),
            "the client matrix's Python venv {} is missing or older than \
             tests/clients/requirements.txt: {fix}",
            venv.display()
        );
        assert!(
            !stale(&node, &clients.join("node/package-lock.json"))
                && node.join("node_modules").is_dir(),
            "the client matrix's npm packages in {} are missing or older than \
             tests/clients/node/package-lock.json: {fix}",
            node.display()
        );
        let java_classes = target.join("clients-java");
        let sources: Vec<PathBuf> = std::fs::read_dir(clients.join("java"))
            .expect("tests/clients/java")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "java"))
            .collect();
        let output = Command::new("javac")
            .arg("-d")
            .arg(&java_classes)
            .args(&sources)
            .output()
            .unwrap_or_else(|e| panic!("the client matrix needs javac (a JDK): {e}"));
        assert!(
            output.status.success(),
            "javac tests/clients/java failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Kit {
            python: venv.join("bin/python"),
            gunicorn: venv.join("bin/gunicorn"),
            node_modules: node.join("node_modules"),
            java_classes,
        }
    })
}

// === httpbin ===

/// httpbin under gunicorn on a loopback port, and a TLS front for it with
/// a certificate from the test CA. Its hits are its access log's lines.
pub struct Httpbin {
    child: Option<Child>,
    /// gunicorn's plain HTTP address.
    pub addr: SocketAddr,
    front: TlsFront,
    logs: tempfile::TempDir,
}

impl Httpbin {
    /// Starts gunicorn and waits until it listens (at most 20 s).
    pub async fn start(ca: &TestCa) -> Httpbin {
        let logs = tempfile::tempdir().expect("temp dir");
        let (access, errors) = (
            logs.path().join("access.log"),
            logs.path().join("error.log"),
        );
        let child = Command::new(&kit().gunicorn)
            .args(["--bind", "127.0.0.1:0", "--no-control-socket"])
            // Internal: threads for keep-alive and concurrent clients; a
            // short graceful timeout so stopping does not wait on them.
            .args(["--worker-class", "gthread", "--threads", "8"])
            .args(["--graceful-timeout", "1", "--access-logfile"])
            .arg(&access)
            .arg("--error-logfile")
            .arg(&errors)
            .arg("httpbin:app")
            .current_dir(logs.path())
            .env_remove("PYTHONPATH")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gunicorn");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let log = std::fs::read_to_string(&errors).unwrap_or_default();
            let port = log
                .split("Listening at: http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "httpbin (gunicorn) did not start in 20 s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Internal: gunicorn speaks HTTP/1.1 only, so the front offers no h2.
        let front = TlsFront::start(addr, ca, Alpn::Http1Only).await;
        Httpbin {
            child: Some(child),
            addr,
            front,
            logs,
        }
    }

    /// `https://127.0.0.1:PORT`, through the TLS front.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.front.addr.port())
    }

    /// `http://127.0.0.1:PORT`, gunicorn itself.
    pub fn plain_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests httpbin answered.
    pub fn hits(&self) -> usize {
        std::fs::read_to_string(self.logs.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// Stops gunicorn (SIGINT: quick shutdown, closing its connections)
    /// and the front.
    pub fn stop(&mut self) {
        self.front.stop();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        self.stop();
    }
}

// === the LLM server ===

/// How the LLM server paces its streams.
#[derive(Debug, Clone)]
pub struct LlmOptions {
    /// Waits before each event, in turn (cycled); the first one follows the
    /// response head.
    pub gaps_ms: Vec<u64>,
    /// Wait between the last event (`data: [DONE]`, `message_stop`) and the
    /// end of the body.
    pub end_after_done: Duration,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            gaps_ms: vec![5, 15],
            end_after_done: Duration::ZERO,
        }
    }
}

type LlmBody = BoxBody<Bytes, std::io::Error>;

/// An OpenAI- and Anthropic-compatible server over TLS with the test CA:
/// `POST /v1/chat/completions` (a JSON completion, or with `"stream": true`
/// SSE chunks ending in `data: [DONE]`), `POST /v1/messages` (a message or
/// its event stream) and `GET /v1/models`. Answers are deterministic
/// functions of the request. It counts its hits, and stopping it closes
/// every open connection too, so nothing can reach it afterwards.
pub struct LlmServer {
    front: TlsFront,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LlmServer {
    /// Starts it on an ephemeral port.
    pub async fn start(ca: &TestCa, options: LlmOptions) -> LlmServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            // Internal: connections live in this set, so aborting this task
            // (stop) drops the set and aborts every connection with it.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let (options, hits) = (options.clone(), counted.clone());
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (options, hits) = (options.clone(), hits.clone());
                        async move { Ok::<_, Infallible>(answer(request, &options, &hits).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let front = TlsFront::start(addr, ca, Alpn::H2AndHttp1).await;
        LlmServer { front, hits, task }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.front.addr.port())
    }

    /// The port it serves HTTPS on.
    pub fn port(&self) -> u16 {
        self.front.addr.port()
    }

    /// Requests it answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection.
    pub fn stop(&self) {
        self.front.stop();
        self.task.abort();
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    request: Request<Incoming>,
    options: &LlmOptions,
    hits: &AtomicUsize,
) -> Response<LlmBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    hits.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = request["stream"].as_bool().unwrap_or(false);
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let pieces = [
        "You said: ".to_owned(),
        prompt.clone(),
        ". Hello".to_owned(),
        " from the".to_owned(),
        " test server!".to_owned(),
    ];
    let text = pieces.concat();
    let id = format!("{:016x}", fnv1a(&body));
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/v1/chat/completions") if stream => {
            let chunk = |delta: Value, finish: Value| {
                let chunk = json!({
                    "id": format!("chatcmpl-{id}"),
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                });
                format!("data: {chunk}\n\n")
            };
            let mut events = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )];
            events.extend(
                pieces
                    .iter()
                    .map(|p| chunk(json!({"content": p}), Value::Null)),
            );
            events.push(chunk(json!({}), json!("stop")));
            events.push("data: [DONE]\n\n".to_owned());
            sse(events, options)
        }
        ("POST", "/v1/chat/completions") => json_response(&json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        })),
        ("POST", "/v1/messages") if stream => {
            let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
            let mut events = vec![
                event(
                    "message_start",
                    json!({"type": "message_start", "message": {
                        "id": format!("msg_{id}"), "type": "message", "role": "assistant",
                        "model": model, "content": [], "stop_reason": null,
                        "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1},
                    }}),
                ),
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}),
                ),
                event("ping", json!({"type": "ping"})),
            ];
            events.extend(pieces.iter().map(|p| {
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": p}}),
                )
            }));
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push(event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": 5}}),
            ));
            events.push(event("message_stop", json!({"type": "message_stop"})));
            sse(events, options)
        }
        ("POST", "/v1/messages") => json_response(&json!({
            "id": format!("msg_{id}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 5},
        })),
        ("GET", "/v1/models") => json_response(&json!({
            "object": "list",
            "data": [{"id": "gpt-test", "object": "model", "created": 1_700_000_000, "owned_by": "cacheow-tests"}],
        })),
        _ => Response::builder()
            .status(404)
            .body(full(Bytes::from_static(b"{\"error\":\"not found\"}")))
            .expect("response"),
    }
}

/// Sends `events` one chunk each with the configured gaps, then ends the
/// body `end_after_done` after the last one.
fn sse(events: Vec<String>, options: &LlmOptions) -> Response<LlmBody> {
    let (tx, body) = channel_body();
    let options = options.clone();
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            let gap = options
                .gaps_ms
                .get(i % options.gaps_ms.len().max(1))
                .copied();
            tokio::time::sleep(Duration::from_millis(gap.unwrap_or(0))).await;
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(options.end_after_done).await;
        // Dropping `tx` here ends the body: the terminator goes out now.
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body.boxed())
        .expect("response")
}

fn json_response(value: &Value) -> Response<LlmBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(Bytes::from(value.to_string())))
        .expect("response")
}

fn full(bytes: Bytes) -> LlmBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A stable 64-bit hash for the answers' ids (no hashing crate here).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// === what a client saw ===

/// One call as a client row reported it (see tests/clients/python/common.py).
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// The call's name within its row.
    pub name: String,
    /// Response status.
    #[serde(default)]
    pub status: Option<u16>,
    /// The HTTP version the client spoke, in the client's own spelling.
    #[serde(default)]
    pub version: Option<String>,
    /// `x-cacheow-source`.
    #[serde(default)]
    pub source: Option<String>,
    /// `x-cacheow-function`.
    #[serde(default)]
    pub function: Option<String>,
    /// The body as the client library returned it, base64.
    #[serde(default)]
    pub body_b64: Option<String>,
    /// For SDK streams: each event as the library yielded it.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// When each event arrived, in ms since the call started.
    #[serde(default)]
    pub times_ms: Option<Vec<f64>>,
    /// How long the call took, in ms.
    #[serde(default)]
    pub elapsed_ms: f64,
    /// What the client raised, if the call failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl Call {
    /// The body bytes (empty for streams and failures).
    pub fn body(&self) -> Vec<u8> {
        self.body_b64
            .as_deref()
            .map(|b| base64_decode(b).unwrap_or_else(|e| panic!("{}: {e}", self.name)))
            .unwrap_or_default()
    }

    /// Gaps between consecutive events, in ms.
    pub fn gaps_ms(&self) -> Vec<f64> {
        let times = self.times_ms.as_deref().unwrap_or_default();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// How a client run went: its calls, or why there are none.
#[derive(Debug)]
pub struct ClientRun {
    /// The calls it reported.
    pub calls: Vec<Call>,
    /// Its stderr, for the report.
    pub stderr: String,
}

/// Runs a client to completion (killed after [`CLIENT_LIMIT`]) and parses
/// the JSON line it printed last.
pub async fn run_client(mut command: Command) -> Result<ClientRun, String> {
    let described = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start: {e}"))?;
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });
        let deadline = Instant::now() + CLIENT_LIMIT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        Ok::<_, String>((status, stdout, stderr))
    })
    .await
    .expect("client runner")
    .map_err(|e| format!("{described}: {e}"))?;
    let (status, stdout, stderr) = output;
    let Some(status) = status else {
        return Err(format!(
            "{described} did not finish in {CLIENT_LIMIT:?} and was killed\nstdout: {stdout}\nstderr: {}",
            tail(&stderr, 40)
        ));
    };
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let parsed = line.map(|l| serde_json::from_str::<Value>(l).map_err(|e| e.to_string()));
    match parsed {
        Some(Ok(value)) => {
            let calls = serde_json::from_value(value["calls"].clone())
                .map_err(|e| format!("{described}: bad result line: {e}\n{stdout}"))?;
            Ok(ClientRun { calls, stderr })
        }
        _ => Err(format!(
            "{described} printed no result line ({status})\nstdout: {stdout}\nstderr: {}",
            tail(&stderr, 40)
        )),
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// === the matrix ===

/// A client row: which client, driven how, and what it must negotiate.
#[derive(Debug, Clone)]
pub struct Row {
    /// The row's name in reports.
    pub name: &'static str,
    /// The client.
    pub client: Client,
    /// Calls whose HTTP version is fixed, with the version the client must
    /// report (in its own spelling) in every phase.
    pub versions: Vec<(&'static str, &'static str)>,
}

/// The clients of the matrix and how each is pointed at cacheow.
#[derive(Debug, Clone)]
pub enum Client {
    /// curl through `http_proxy`/`https_proxy`, trusting the CA by
    /// `CURL_CA_BUNDLE`; HTTP/2 after CONNECT unless `http1`.
    Curl {
        /// `--http1.1`.
        http1: bool,
    },
    /// A script in tests/clients/python.
    Python {
        /// File name.
        script: &'static str,
        /// How it reaches cacheow.
        setup: PythonSetup,
        /// Merged into the script's config.
        extra: Value,
    },
    /// A script in tests/clients/node, with `HTTP(S)_PROXY` and
    /// `NODE_EXTRA_CA_CERTS`.
    Node {
        /// File name.
        script: &'static str,
    },
    /// tests/clients/java/Client.java, trusting cacheow's CA through a
    /// keytool truststore (`-Djavax.net.ssl.trustStore`).
    Java(JavaMode),
}

/// How a Python row reaches cacheow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonSetup {
    /// `HTTP(S)_PROXY`, cacheow's CA in `SSL_CERT_FILE`.
    SslCertFile,
    /// `HTTP(S)_PROXY`, cacheow's CA in `REQUESTS_CA_BUNDLE` (requests).
    RequestsCaBundle,
    /// No proxy and no CA: the script uses the reverse listeners (its
    /// config gets `"reverse": true`).
    Reverse,
}

/// How the Java row reaches cacheow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JavaMode {
    /// `-Dhttp(s).proxyHost/Port` and `-Dhttp.nonProxyHosts=` (empty), the
    /// client `HttpClient.newHttpClient()`.
    SystemProperties,
    /// The same without `-Dhttp.nonProxyHosts`: the JDK's default bypasses
    /// localhost and 127.*.
    DefaultNonProxyHosts,
    /// `HttpClient.newBuilder().proxy(ProxySelector.of(cacheow))`, no proxy
    /// properties.
    ProxySelector,
    /// Plain HTTP to cacheow's reverse listeners, no proxy.
    Reverse,
}

/// The three phases of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Default mode, upstreams up.
    Record,
    /// Cache mode, every upstream stopped.
    Replay,
    /// Mock mode, every upstream stopped.
    Mock,
}

impl Phase {
    /// The `x-cacheow-source` every call must carry.
    pub fn source(self) -> &'static str {
        match self {
            Phase::Record => "upstream",
            Phase::Replay => "cache",
            Phase::Mock => "mock",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Record => "record (default mode, upstreams up)",
            Phase::Replay => "replay (cache mode, every upstream stopped)",
            Phase::Mock => "mock (mock mode, every upstream stopped)",
        })
    }
}

/// cacheow with both upstreams: the forward proxy on its main port and one
/// reverse listener for each upstream (httpbin plain, the LLM server).
pub struct Matrix {
    /// The private CA of both upstreams, given to cacheow by `--upstream-ca`.
    pub ca: TestCa,
    /// httpbin.
    pub httpbin: Httpbin,
    /// The LLM server.
    pub llm: LlmServer,
    /// cacheow.
    pub cacheow: Cacheow,
    dir: tempfile::TempDir,
}

impl Matrix {
    /// Starts the upstreams and cacheow.
    pub async fn start(options: LlmOptions) -> Matrix {
        kit();
        let ca = TestCa::new();
        let httpbin = Httpbin::start(&ca).await;
        let llm = LlmServer::start(&ca, options).await;
        let ca_path = ca.path();
        let reverse_httpbin = format!("127.0.0.1:0={}", httpbin.plain_url());
        let reverse_llm = format!("127.0.0.1:0={}", llm.url());
        let cacheow = Cacheow::start(&[
            "--upstream-ca",
            ca_path.to_str().expect("utf-8 path"),
            "--reverse",
            &reverse_httpbin,
            "--reverse",
            &reverse_llm,
        ]);
        Matrix {
            ca,
            httpbin,
            llm,
            cacheow,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// cacheow's CA certificate, which every client must trust.
    pub fn cacheow_ca(&self) -> PathBuf {
        self.cacheow.data_dir().join("ca").join("cacheow-ca.pem")
    }

    /// Where every client finds the upstreams (the scripts' argv[1]).
    pub fn config(&self) -> Value {
        json!({
            "httpbin": self.httpbin.url(),
            "httpbin_plain": self.httpbin.plain_url(),
            "llm": self.llm.url(),
            "httpbin_reverse": format!("http://{}", self.cacheow.reverse[0]),
            "llm_reverse": format!("http://{}", self.cacheow.reverse[1]),
        })
    }

    /// Requests both upstreams answered.
    pub fn upstream_hits(&self) -> usize {
        self.httpbin.hits() + self.llm.hits()
    }

    /// Stops httpbin, its TLS front and the LLM server, closing their
    /// connections.
    pub fn stop_upstreams(&mut self) {
        self.httpbin.stop();
        self.llm.stop();
    }

    /// A command with none of the environment that steers HTTP clients,
    /// so each row sets exactly what docs/CLIENTS.md says.
    pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for name in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "NODE_OPTIONS",
            "NODE_USE_ENV_PROXY",
            "NODE_TLS_REJECT_UNAUTHORIZED",
            "NODE_PATH",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "PYTHONPATH",
            "PYTHONHOME",
            "VIRTUAL_ENV",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_API_KEY",
            "CURL_HOME",
        ] {
            command.env_remove(name);
        }
        command
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        command
    }

    /// A Python script of tests/clients/python set up as `setup` says.
    pub fn python(&self, script: &str, setup: PythonSetup, config: &Value) -> Command {
        let mut command = Self::clean_command(&kit().python);
        command.arg(clients_dir().join("python").join(script));
        let ca_variable = match setup {
            PythonSetup::SslCertFile => "SSL_CERT_FILE",
            PythonSetup::RequestsCaBundle => "REQUESTS_CA_BUNDLE",
            PythonSetup::Reverse => {
                let mut config = config.clone();
                config["reverse"] = json!(true);
                command.arg(config.to_string());
                return command;
            }
        };
        command
            .arg(config.to_string())
            .env("HTTP_PROXY", self.cacheow.url())
            .env("HTTPS_PROXY", self.cacheow.url())
            .env(ca_variable, self.cacheow_ca());
        command
    }

    /// Runs one phase of a row.
    pub async fn run(&self, client: &Client) -> Result<ClientRun, String> {
        let config = self.config();
        match client {
            Client::Curl { http1 } => self.curl(*http1).await,
            Client::Python {
                script,
                setup,
                extra,
            } => {
                let mut config = config;
                if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
                    config.extend(extra.clone());
                }
                run_client(self.python(script, *setup, &config)).await
            }
            Client::Node { script } => {
                let mut command = Self::clean_command("node");
                command
                    .arg(clients_dir().join("node").join(script))
                    .arg(config.to_string())
                    .env("NODE_PATH", &kit().node_modules)
                    .env("HTTP_PROXY", self.cacheow.url())
                    .env("HTTPS_PROXY", self.cacheow.url())
                    .env("NODE_EXTRA_CA_CERTS", self.cacheow_ca());
                run_client(command).await
            }
            Client::Java(mode) => run_client(self.java(*mode)).await,
        }
    }

    /// The Java row's command.
    pub fn java(&self, mode: JavaMode) -> Command {
        let config = self.config();
        let url = |name: &str| config[name].as_str().expect("url").to_owned();
        let (host, port) = (
            self.cacheow.addr.ip().to_string(),
            self.cacheow.addr.port().to_string(),
        );
        let mut command = Self::clean_command("java");
        command.arg("-cp").arg(&kit().java_classes);
        command
            .arg(format!(
                "-Djavax.net.ssl.trustStore={}",
                self.truststore().display()
            ))
            .arg("-Djavax.net.ssl.trustStorePassword=changeit");
        if matches!(
            mode,
            JavaMode::SystemProperties | JavaMode::DefaultNonProxyHosts
        ) {
            command
                .arg(format!("-Dhttps.proxyHost={host}"))
                .arg(format!("-Dhttps.proxyPort={port}"))
                .arg(format!("-Dhttp.proxyHost={host}"))
                .arg(format!("-Dhttp.proxyPort={port}"));
        }
        if mode == JavaMode::SystemProperties {
            // Internal: the JDK's default bypasses localhost and 127.*,
            // where every upstream of this test lives.
            command.arg("-Dhttp.nonProxyHosts=");
        }
        match mode {
            JavaMode::SystemProperties | JavaMode::DefaultNonProxyHosts => {
                command.args(["Client", "forward"]);
            }
            JavaMode::ProxySelector => {
                command.args(["Client", "selector", &host, &port]);
            }
            JavaMode::Reverse => {
                command
                    .args(["Client", "reverse"])
                    .args([url("httpbin_reverse"), url("llm_reverse")]);
                return command;
            }
        }
        command.args([url("httpbin"), url("httpbin_plain"), url("llm")]);
        command
    }

    /// A PKCS12 truststore holding cacheow's CA, made with keytool once.
    pub fn truststore(&self) -> PathBuf {
        let path = self.dir.path().join("cacheow-truststore.p12");
        if !path.exists() {
            let output = Command::new("keytool")
                .args([
                    "-importcert",
                    "-noprompt",
                    "-alias",
                    "cacheow",
                    "-storetype",
                    "PKCS12",
                ])
                .args(["-storepass", "changeit", "-file"])
                .arg(self.cacheow_ca())
                .arg("-keystore")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("keytool (a JDK) is needed: {e}"));
            assert!(output.status.success(), "keytool: {output:?}");
        }
        path
    }

    /// The curl row: curl for each call, as a user would type it.
    async fn curl(&self, http1: bool) -> Result<ClientRun, String> {
        let config = self.config();
        let (tls, plain, llm) = (
            config["httpbin"].as_str().expect("url"),
            config["httpbin_plain"].as_str().expect("url"),
            config["llm"].as_str().expect("url"),
        );
        let chat = r#"{"model":"gpt-test","messages":[{"role":"user","content":"Stream over curl"}],"stream":true}"#;
        let calls: Vec<(&str, Vec<String>)> = vec![
            ("get", vec![format!("{tls}/anything/curl?q=1")]),
            (
                "post_json",
                vec![
                    "-H".into(),
                    "content-type: application/json".into(),
                    "--data".into(),
                    r#"{"a":1}"#.into(),
                    format!("{tls}/anything/curl"),
                ],
            ),
            // No --compressed: the gzip bytes themselves must replay.
            ("gzip", vec![format!("{tls}/gzip")]),
            ("plain_http", vec![format!("{plain}/anything/curl-plain")]),
            (
                "sse_bytes",
                vec![
                    "-N".into(),
                    "-H".into(),
                    "content-type: application/json".into(),
                    "--data".into(),
                    chat.into(),
                    format!("{llm}/v1/chat/completions"),
                ],
            ),
        ];
        let mut out = Vec::new();
        for (name, args) in calls {
            let dir = tempfile::tempdir().expect("temp dir");
            let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
            let mut command = Self::clean_command("curl");
            command
                .args(["-sS", "--max-time", "20", "-D"])
                .arg(&headers)
                .arg("-o")
                .arg(&body)
                .args(["-w", "%{http_version} %{http_code}"])
                .args(http1.then_some("--http1.1"))
                .args(&args)
                .env("http_proxy", self.cacheow.url())
                .env("https_proxy", self.cacheow.url())
                .env("CURL_CA_BUNDLE", self.cacheow_ca());
            let started = Instant::now();
            let output = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("curl runner")
                .map_err(|e| format!("curl: {e}"))?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let written = String::from_utf8_lossy(&output.stdout).into_owned();
            let (version, status) = written.split_once(' ').unwrap_or(("", "0"));
            let head = std::fs::read_to_string(&headers).unwrap_or_default();
            let header = |wanted: &str| {
                head.lines().find_map(|line| {
                    let (n, v) = line.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(wanted)
                        .then(|| v.trim().to_owned())
                })
            };
            let error = (!output.status.success()).then(|| {
                format!(
                    "curl exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )
            });
            out.push(Call {
                name: name.to_owned(),
                status: status.parse().ok(),
                version: Some(version.to_owned()),
                source: header("x-cacheow-source"),
                function: header("x-cacheow-function"),
                body_b64: Some(base64_encode(&std::fs::read(&body).unwrap_or_default())),
                events: None,
                times_ms: None,
                elapsed_ms,
                error,
            });
        }
        Ok(ClientRun {
            calls: out,
            stderr: String::new(),
        })
    }

    /// Every function's detail from the API.
    pub async fn functions(&self) -> Vec<Value> {
        let list = self.cacheow.get("/api/functions").await;
        let mut out = Vec::new();
        for f in list.as_array().expect("list") {
            let id = f["id"].as_str().expect("id");
            out.push(self.cacheow.get(&format!("/api/functions/{id}")).await);
        }
        out
    }

    /// Sets every function's mode.
    pub async fn set_all_modes(&self, mode: &str) {
        for f in self.functions().await {
            self.cacheow
                .set_mode(f["id"].as_str().expect("id"), mode)
                .await;
        }
    }

    /// Waits (at most 10 s) until the recorded outcomes account for `calls`
    /// upstream calls, since a stream is recorded when it ends, which can be
    /// after the client has stopped reading. Returns what is missing.
    pub async fn wait_recorded(&self, calls: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let functions = self.functions().await;
            let recorded: u64 = functions
                .iter()
                .flat_map(|f| f["outcomes"].as_array().cloned().unwrap_or_default())
                .map(|o| o["count"].as_u64().unwrap_or(1))
                .sum();
            if recorded as usize >= calls {
                return Ok(());
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = functions
                    .iter()
                    .map(|f| {
                        format!(
                            "  {} ({} outcomes, stats {})",
                            f["name"].as_str().unwrap_or("?"),
                            f["outcome_count"],
                            f["stats"]
                        )
                    })
                    .collect();
                return Err(format!(
                    "{calls} calls went upstream but after 10 s only {recorded} outcomes were recorded:\n{}",
                    summary.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sum of `stats.upstream_calls` over every function.
    pub async fn upstream_calls(&self) -> u64 {
        self.functions()
            .await
            .iter()
            .map(|f| f["stats"]["upstream_calls"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The whole row: record, cache with every upstream stopped, mock.
    /// Panics with every problem found, by phase and call.
    pub async fn check(mut self, row: Row) {
        let mut report = Report::new(row.name);
        let hits_before = self.upstream_hits();
        let record = self.phase(&row, Phase::Record, None, &mut report).await;
        let Some(record) = record else {
            return report.finish(&self);
        };
        let hits = self.upstream_hits() - hits_before;
        if hits != record.len() {
            report.problem(
                Phase::Record,
                "-",
                format!(
                    "the upstreams answered {hits} requests for {} calls",
                    record.len()
                ),
            );
        }
        let went_upstream = record.iter().filter(|c| c.error.is_none()).count();
        if let Err(e) = self.wait_recorded(went_upstream).await {
            report.problem(Phase::Record, "-", e);
        }
        let upstream_calls = self.upstream_calls().await;

        self.set_all_modes("cache").await;
        self.stop_upstreams();
        let hits = self.upstream_hits();
        self.phase(&row, Phase::Replay, Some(&record), &mut report)
            .await;
        self.set_all_modes("mock").await;
        self.phase(&row, Phase::Mock, Some(&record), &mut report)
            .await;
        if self.upstream_hits() != hits {
            report.problem(Phase::Mock, "-", "a stopped upstream was reached".into());
        }
        let after = self.upstream_calls().await;
        if after != upstream_calls {
            report.problem(
                Phase::Mock,
                "-",
                format!("stats.upstream_calls went from {upstream_calls} to {after} with every upstream stopped"),
            );
        }
        report.finish(&self);
    }

    /// Runs one phase and checks it; returns its calls.
    async fn phase(
        &self,
        row: &Row,
        phase: Phase,
        recorded: Option<&[Call]>,
        report: &mut Report,
    ) -> Option<Vec<Call>> {
        let run = match self.run(&row.client).await {
            Ok(run) => run,
            Err(e) => {
                report.problem(phase, "-", e);
                return None;
            }
        };
        report.log(phase, &run);
        for call in &run.calls {
            let problem = |what: String| (call.name.clone(), what);
            let mut problems = Vec::new();
            if let Some(error) = &call.error {
                problems.push(problem(format!("the client failed: {}", error.trim())));
            } else {
                if call.source.as_deref() != Some(phase.source()) {
                    problems.push(problem(format!(
                        "x-cacheow-source is {:?}, expected {:?} (status {:?})",
                        call.source,
                        phase.source(),
                        call.status
                    )));
                }
                if call.function.is_none() {
                    problems.push(problem("no x-cacheow-function header".into()));
                }
                if let Some((_, version)) = row.versions.iter().find(|(n, _)| *n == call.name)
                    && call.version.as_deref() != Some(version)
                {
                    problems.push(problem(format!(
                        "spoke HTTP version {:?}, expected {version:?}",
                        call.version
                    )));
                }
                match recorded.map(|r| r.iter().find(|c| c.name == call.name)) {
                    None if !call.status.is_some_and(|s| (200..300).contains(&s)) => {
                        problems.push(problem(format!(
                            "status {:?}; body: {}",
                            call.status,
                            preview(&call.body())
                        )))
                    }
                    None => {}
                    Some(None) => problems.push(problem("not in the recording".into())),
                    // Internal: already reported when it was recorded.
                    Some(Some(original)) if original.error.is_some() => {}
                    Some(Some(original)) => {
                        if let Some(difference) = difference(original, call) {
                            problems.push(problem(difference));
                        }
                    }
                }
            }
            for (name, what) in problems {
                report.problem(phase, &name, what);
            }
        }
        if let Some(recorded) = recorded {
            for original in recorded {
                if !run.calls.iter().any(|c| c.name == original.name) {
                    report.problem(phase, &original.name, "missing from this run".into());
                }
            }
        }
        Some(run.calls)
    }
}

/// How a replayed call differs from its recording, if it does.
pub fn difference(recorded: &Call, replayed: &Call) -> Option<String> {
    if recorded.status != replayed.status {
        return Some(format!(
            "status {:?}, recorded {:?}; body: {}",
            replayed.status,
            recorded.status,
            preview(&replayed.body())
        ));
    }
    if recorded.body_b64 != replayed.body_b64 {
        let (a, b) = (recorded.body(), replayed.body());
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Some(format!(
            "body differs from byte {at}: recorded {} bytes {}, got {} bytes {}",
            a.len(),
            preview(&a[at.min(a.len())..]),
            b.len(),
            preview(&b[at.min(b.len())..])
        ));
    }
    if recorded.events != replayed.events {
        let (a, b) = (
            recorded.events.clone().unwrap_or_default(),
            replayed.events.clone().unwrap_or_default(),
        );
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Some(format!(
            "events differ from event {at}: recorded {} events ({:?}), got {} ({:?})",
            a.len(),
            a.get(at),
            b.len(),
            b.get(at)
        ));
    }
    None
}

/// Up to 160 bytes of a body, readable.
pub fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(160)];
    let text = String::from_utf8_lossy(shown);
    let ellipsis = if bytes.len() > shown.len() { "…" } else { "" };
    format!("{:?}{ellipsis}", text)
}

/// Problems of one row, and what each phase's client said, for the panic.
struct Report {
    row: &'static str,
    problems: Vec<String>,
    logs: Vec<String>,
}

impl Report {
    fn new(row: &'static str) -> Report {
        Report {
            row,
            problems: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn problem(&mut self, phase: Phase, call: &str, what: String) {
        self.problems.push(format!("{phase} / {call}: {what}"));
    }

    fn log(&mut self, phase: Phase, run: &ClientRun) {
        let calls: Vec<String> = run
            .calls
            .iter()
            .map(|c| {
                format!(
                    "    {:<14} status {:?} source {:?} version {:?} {:.1} ms",
                    c.name, c.status, c.source, c.version, c.elapsed_ms
                )
            })
            .collect();
        let stderr = tail(run.stderr.trim(), 15);
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!("\n    stderr:\n{stderr}")
        };
        self.logs
            .push(format!("  {phase}:\n{}{stderr}", calls.join("\n")));
    }

    fn finish(self, matrix: &Matrix) {
        eprintln!(
            "client matrix row `{}`:\n{}",
            self.row,
            self.logs.join("\n")
        );
        if !self.problems.is_empty() {
            panic!(
                "client matrix row `{}`: {} problem(s)\n  {}\n\nwhat the client saw:\n{}\n\ncacheow's log (last lines):\n{}",
                self.row,
                self.problems.len(),
                self.problems.join("\n  "),
                self.logs.join("\n"),
                tail(&matrix.cacheow.logs(), 25)
            );
        }
    }
}

// === base64 (no crate for it in this package) ===

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as the client scripts write it.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inverse of [`base64_encode`].
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = BASE64
            .iter()
            .position(|b| *b == c)
            .ok_or_else(|| format!("not base64: {c:?}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\x00\xff\x10gzip"] {
            let encoded = base64_encode(input);
            assert_eq!(base64_decode(&encoded).unwrap(), input, "{encoded}");
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }
}
