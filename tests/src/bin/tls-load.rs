//! HTTPS load for bench/run.sh's TLS rows, doing what wrk cannot: a
//! `CONNECT` through a forward proxy before the TLS handshake. Like the wrk
//! rows it keeps N HTTP/1.1 connections busy for a fixed time, each sending
//! the next route as soon as the previous reply is read, and prints one
//! line in the format of bench/routes.lua (`cacheow_tests::load`).
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

use cacheow_tests::load::{self, Tally};
use cacheow_tests::tls::{connect_raw, provider, roots_from_pem_file};
use http::{Request, header};
use http_body_util::Empty;
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
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    load::run(args.connections, |first| {
        drive(args.clone(), tls.clone(), deadline, first)
    })
    .await;
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
    let Some(mut sender) = load::handshake(stream).await else {
        tally.socket_errors += 1;
        return tally;
    };
    let mut next = first;
    while Instant::now() < deadline {
        let path = &args.paths[next % args.paths.len()];
        next += 1;
        let request = Request::get(path.as_str())
            .header(header::HOST, args.host.as_str())
            .body(Empty::new())
            .expect("request");
        if !load::exchange(&mut sender, request, &mut tally).await {
            return tally;
        }
    }
    tally
}
