//! `cacheow-tests` owns the end-to-end harness: it builds and starts the real
//! `cacheow` binary on an ephemeral port with a temp data dir, runs real
//! upstreams on loopback that count their hits, and drives it with real
//! clients. Tests live in `tests/`, one binary per concern.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

pub mod load;
pub mod matrix;
pub mod raw;
pub mod tls;

/// The `cacheow` binary, built once per test run with the test's profile.
///
/// `cargo test` does not build other packages' binaries for us, so this runs
/// `cargo build` for it (a no-op when fresh).
pub fn cacheow_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps layout");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "cacheow-proxy", "--bin", "cacheow"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("running cargo build for the cacheow binary");
        assert!(status.success(), "building the cacheow binary failed");
        profile_dir.join("cacheow")
    })
}

/// The README's complete example (`examples/complete`, a crate outside the
/// workspace that depends on `cacheow` by path), built once per test run
/// into this run's target dir, so it shares the workspace's build artifacts.
pub fn complete_example_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let profile_dir = cacheow_bin().parent().expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target");
        let manifest =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/complete/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--locked", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the example");
        assert!(status.success(), "building {} failed", manifest.display());
        profile_dir.join("complete")
    })
}

/// `src/bin/wrapped.rs` (pass `env!("CARGO_BIN_EXE_wrapped")`), running with
/// cacheow enabled on `data_dir` and its panel on a free port.
pub struct Wrapped {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The in-process panel, if it started.
    pub url: Option<String>,
}

impl Wrapped {
    /// Starts `bin` with cacheow enabled on `data_dir`.
    pub fn start(bin: &str, data_dir: &Path) -> Wrapped {
        let mut child = Command::new(bin)
            .env("CACHEOW_ENABLE", "1")
            .env("CACHEOW_DATA_DIR", data_dir)
            .env("CACHEOW_SERVER_PORT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        let url = match ready.trim().strip_prefix("ready ") {
            Some("off") => None,
            Some(url) => Some(url.to_owned()),
            None => panic!("expected `ready …`, got {ready:?}"),
        };
        Wrapped {
            child,
            stdin,
            stdout,
            url,
        }
    }

    /// Calls `quote(symbol)`: its result as JSON and how often the body has
    /// run so far.
    pub fn quote(&mut self, symbol: &str) -> (Value, u64) {
        writeln!(self.stdin, "quote {symbol}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        (reply["result"].clone(), reply["runs"].as_u64().unwrap())
    }

    /// Closes stdin and returns what the program wrote to stderr.
    pub fn finish(self) -> String {
        drop(self.stdin);
        let output = self.child.wait_with_output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stderr).unwrap()
    }
}

/// A running `cacheow`, stopped (gracefully) on drop.
pub struct Cacheow {
    child: Option<Child>,
    /// Main listener.
    pub addr: SocketAddr,
    /// Reverse listeners, in flag order.
    pub reverse: Vec<SocketAddr>,
    data_dir: Arc<tempfile::TempDir>,
    args: Vec<String>,
    wrapper: Vec<String>,
    stderr_path: PathBuf,
}

impl Cacheow {
    /// Starts cacheow with a fresh data dir and extra flags.
    pub fn start(args: &[&str]) -> Cacheow {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp data dir"));
        Self::start_in(
            data_dir,
            args.iter().map(|s| s.to_string()).collect(),
            Vec::new(),
        )
    }

    /// Starts cacheow under a wrapper command, e.g. `prlimit --nofile=…`.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Cacheow {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp data dir"));
        let wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        Self::start_in(
            data_dir,
            args.iter().map(|s| s.to_string()).collect(),
            wrapper,
        )
    }

    /// Starts cacheow on a copy of a data dir under `fixtures/`.
    pub fn start_with_fixture(fixture: &str, args: &[&str]) -> Cacheow {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp data dir"));
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(fixture);
        copy_dir(&source, data_dir.path());
        Self::start_in(
            data_dir,
            args.iter().map(|s| s.to_string()).collect(),
            Vec::new(),
        )
    }

    /// Starts cacheow on a data dir something else has written.
    pub fn start_on(data_dir: tempfile::TempDir, args: &[&str]) -> Cacheow {
        Self::start_in(
            Arc::new(data_dir),
            args.iter().map(|s| s.to_string()).collect(),
            Vec::new(),
        )
    }

    /// `--listen 127.0.0.1:0` unless `args` name a listen address.
    fn start_in(
        data_dir: Arc<tempfile::TempDir>,
        args: Vec<String>,
        wrapper: Vec<String>,
    ) -> Cacheow {
        let stderr_path = data_dir
            .path()
            .with_extension(format!("stderr.{}", fastish_id()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(cacheow_bin());
                command
            }
            None => Command::new(cacheow_bin()),
        };
        command.arg("serve");
        if !args.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(&args)
            .env("RUST_LOG", "info")
            .env_remove("CACHEOW_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting cacheow");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut reverse = Vec::new();
        let reverse_count = args.iter().filter(|a| *a == "--reverse").count();
        while addr.is_none() || reverse.len() < reverse_count {
            let Some(Ok(line)) = lines.next() else {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("cacheow exited before it was ready: {stderr}");
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().parse().expect("listen address"));
            }
            if let Some(rest) = line.trim().strip_prefix("reverse http://") {
                let listen = rest.split(' ').next().expect("reverse address");
                reverse.push(listen.parse().expect("reverse address"));
            }
        }
        // Internal: keep draining stdout so cacheow never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Cacheow {
            child: Some(child),
            addr: addr.expect("listen address"),
            reverse,
            data_dir,
            args,
            wrapper,
            stderr_path,
        }
    }

    /// The process id, e.g. to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// What cacheow logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully (SIGTERM) and waits; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        terminate(&child);
        wait_or_kill(&mut child, Duration::from_secs(10))
    }

    /// Kills hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops and starts again on the same data dir with the same flags.
    pub fn restart(mut self) -> Cacheow {
        let args = std::mem::take(&mut self.args);
        self.restart_with_args(args)
    }

    /// Stops and starts again on the same data dir with `args` instead.
    pub fn restart_with(self, args: &[&str]) -> Cacheow {
        self.restart_with_args(args.iter().map(|s| s.to_string()).collect())
    }

    fn restart_with_args(mut self, args: Vec<String>) -> Cacheow {
        if self.child.is_some() {
            self.stop();
        }
        let data_dir = self.data_dir.clone();
        let wrapper = std::mem::take(&mut self.wrapper);
        Self::start_in(data_dir, args, wrapper)
    }

    /// A client that sends every request through this cacheow as its proxy.
    pub fn proxied_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.url()).expect("proxy url"))
            .pool_max_idle_per_host(8)
            .build()
            .expect("client")
    }

    /// `GET /api/…` as JSON; panics on a non-2xx.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(http::Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }

    /// `POST /api/…` with a JSON body; panics on a non-2xx.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.api(http::Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {reply}");
        reply
    }

    /// Any API call; returns status and JSON body (Null when empty).
    pub async fn api(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> (http::StatusCode, Value) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut request = client.request(method, format!("{}{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status();
        let bytes = response.bytes().await.expect("API body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("API JSON")
        };
        (status, value)
    }

    /// The only function whose name contains `needle`.
    pub async fn function(&self, needle: &str) -> Value {
        let list = self.get("/api/functions").await;
        let matching: Vec<&Value> = list
            .as_array()
            .expect("list")
            .iter()
            .filter(|f| f["name"].as_str().is_some_and(|n| n.contains(needle)))
            .collect();
        assert_eq!(matching.len(), 1, "functions matching {needle}: {list:#}");
        let id = matching[0]["id"].as_str().expect("id");
        self.get(&format!("/api/functions/{id}")).await
    }

    /// Sets a function's mode.
    pub async fn set_mode(&self, id: &str, mode: &str) {
        self.post(
            &format!("/api/functions/{id}/mode"),
            serde_json::json!({ "mode": mode }),
        )
        .await;
    }
}

impl Drop for Cacheow {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_or_kill(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fastish_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a test upstream answers with body type `B`: called with the request
/// and its body.
pub type HandlerOf<B> = Arc<dyn Fn(&http::request::Parts, &Bytes) -> Response<B> + Send + Sync>;

/// What a test upstream answers.
pub type Handler = HandlerOf<Full<Bytes>>;

/// What a streaming test upstream answers.
pub type StreamHandler = HandlerOf<ChannelBody>;

/// A response body fed through a channel: each `Ok` is one chunk, an `Err`
/// breaks the connection mid-body.
pub struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

/// A body and the sender that feeds it.
pub fn channel_body() -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ChannelBody,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, ChannelBody(rx))
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A real HTTP server on loopback that counts its hits and connections.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Serves `handler` on an ephemeral port.
    pub async fn start(handler: Handler) -> Upstream {
        Self::serve(handler, "127.0.0.1:0".parse().expect("address")).await
    }

    /// Serves `handler` on `addr`, e.g. to bring an upstream back on the
    /// port it had.
    pub async fn start_at(addr: SocketAddr, handler: Handler) -> Upstream {
        Self::serve(handler, addr).await
    }

    /// Serves responses whose bodies the handler feeds through a channel
    /// (see `channel_body`), for streams and failures mid-body.
    pub async fn streaming(handler: StreamHandler) -> Upstream {
        Self::serve(handler, "127.0.0.1:0".parse().expect("address")).await
    }

    async fn serve<B>(handler: HandlerOf<B>, addr: SocketAddr) -> Upstream
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            // Internal: connection tasks belong to this one, so stopping the
            // upstream closes the connections it kept alive too.
            let mut served = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                while served.try_join_next().is_some() {}
                let handler = handler.clone();
                let hits = counted.clone();
                served.spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = handler.clone();
                        let hits = hits.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            hits.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(handler(&parts, &body))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            task,
        }
    }

    /// Answers every request with JSON `{"path": …, "method": …, "body": …}`.
    pub async fn echo() -> Upstream {
        Self::start(Arc::new(|parts, body| {
            json_reply(&serde_json::json!({
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "method": parts.method.as_str(),
                "body": String::from_utf8_lossy(body),
            }))
        }))
        .await
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// How many TCP connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and closes the open ones.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `200` JSON response.
pub fn json_reply(value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("json"),
        )))
        .expect("response")
}

/// A loopback port that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Waits until `check` holds, polling; panics with `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every outcome file of a function.
pub fn outcome_files(data_dir: &Path, function_id: &str) -> Vec<PathBuf> {
    let dir = data_dir
        .join("functions")
        .join(function_id)
        .join("outcomes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
