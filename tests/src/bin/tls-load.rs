//! HTTPS load for bench/run.sh's TLS rows, doing what wrk cannot: a
//! `CONNECT` through a forward proxy before the TLS handshake. Like the wrk
//! rows it keeps N HTTP/1.1 connections busy for a fixed time, each sending
//! the next route as soon as the previous reply is read, and prints one
//! line in the format of bench/routes.lua:
//!
//! `bench-result requests=N duration_us=N p50_us=N p99_us=N socket_errors=N status_errors=N`
//!
//! Usage: `tls-load --addr IP:PORT [--connect HOST:PORT] --name TLS_NAME
//!         --ca PEM_FILE --host HOST --connections N --seconds S PATH...`
//! (`--connect` sends `CONNECT HOST:PORT` to `--addr` first; the same rustls
//! client on ring is used with or without it, so rows compare servers.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cacheow_tests::tls::{connect_raw, provider, roots_from_pem_file};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    connect: Option<String>,
    name: ServerName<'static>,
    ca: PathBuf,
    host: String,
    connections: usize,
    seconds: f64,
    paths: Vec<String>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = std::env::args().skip(1);
        let (mut addr, mut connect, mut name, mut ca, mut host) = (None, None, None, None, None);
        let (mut connections, mut seconds, mut paths) = (64, 10.0, Vec::new());
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
                "--connect" => connect = Some(value()?),
                "--name" => {
                    name = Some(ServerName::try_from(value()?).map_err(|e| format!("--name: {e}"))?)
                }
                "--ca" => ca = Some(PathBuf::from(value()?)),
                "--host" => host = Some(value()?),
                "--connections" => {
                    connections = value()?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?
                }
                "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
                path if path.starts_with('/') => paths.push(arg),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if paths.is_empty() || connections == 0 || seconds <= 0.0 {
            return Err("give at least one PATH, --connections > 0 and --seconds > 0".into());
        }
        Ok(Args {
            addr: addr.ok_or("--addr is required")?,
            connect,
            name: name.ok_or("--name is required")?,
            ca: ca.ok_or("--ca is required")?,
            host: host.ok_or("--host is required")?,
            connections,
            seconds,
            paths,
        })
    }
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    socket_errors: u64,
    status_errors: u64,
}

// Internal: one thread, as the wrk rows run `wrk -t 1`; run.sh pins it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => Arc::new(args),
        Err(e) => {
            eprintln!("tls-load: {e}");
            return ExitCode::from(2);
        }
    };
    let mut tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots_from_pem_file(&args.ca))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut connections = tokio::task::JoinSet::new();
    for first in 0..args.connections {
        connections.spawn(drive(args.clone(), tls.clone(), deadline, first));
    }
    let mut total = Tally::default();
    while let Some(tally) = connections.join_next().await {
        let tally = tally.expect("connection task");
        total.latencies_us.extend(tally.latencies_us);
        total.socket_errors += tally.socket_errors;
        total.status_errors += tally.status_errors;
    }
    let duration = started.elapsed();
    total.latencies_us.sort_unstable();
    let percentile = |p: usize| {
        let n = total.latencies_us.len();
        if n == 0 {
            0
        } else {
            total.latencies_us[((n * p).div_ceil(100)).clamp(1, n) - 1]
        }
    };
    println!(
        "bench-result requests={} duration_us={} p50_us={} p99_us={} socket_errors={} status_errors={}",
        total.latencies_us.len(),
        duration.as_micros(),
        percentile(50),
        percentile(99),
        total.socket_errors,
        total.status_errors
    );
    ExitCode::SUCCESS
}

/// One keep-alive connection, busy until `deadline`.
async fn drive(
    args: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    deadline: Instant,
    first: usize,
) -> Tally {
    let mut tally = Tally::default();
    let stream = match &args.connect {
        Some(target) => {
            let (head, stream) = connect_raw(args.addr, target).await;
            if !head.starts_with("HTTP/1.1 200") {
                tally.socket_errors += 1;
                return tally;
            }
            stream
        }
        None => match TcpStream::connect(args.addr).await {
            Ok(stream) => stream,
            Err(_) => {
                tally.socket_errors += 1;
                return tally;
            }
        },
    };
    let _ = stream.set_nodelay(true);
    let Ok(stream) = tls.connect(args.name.clone(), stream).await else {
        tally.socket_errors += 1;
        return tally;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        tally.socket_errors += 1;
        return tally;
    };
    tokio::spawn(connection);
    let mut next = first;
    while Instant::now() < deadline {
        let path = &args.paths[next % args.paths.len()];
        next += 1;
        let request = Request::get(path.as_str())
            .header(header::HOST, args.host.as_str())
            .body(Empty::new())
            .expect("request");
        let sent = Instant::now();
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(_) => {
                tally.socket_errors += 1;
                return tally;
            }
        };
        let ok = response.status() == StatusCode::OK;
        if response.into_body().collect().await.is_err() {
            tally.socket_errors += 1;
            return tally;
        }
        if !ok {
            tally.status_errors += 1;
        }
        let micros = sent.elapsed().as_micros();
        tally
            .latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
    }
    tally
}
