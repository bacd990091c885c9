//! The recording load of bench/scale.sh: `GET /item/<i>` exactly once for
//! each i below N, spread over C HTTP/1.1 keep-alive connections, then one
//! result line (`cacheow_tests::load`). wrk cannot stop after N requests:
//! its Lua can stop a thread, but it still waits out its duration. With
//! `--functions F` (F > 1) the calls are spread over F routes instead:
//! request i is `GET /f<i mod F>/item/<i div F>`.
//!
//! Usage: `record-load --addr IP:PORT --count N [--functions F] --connections C`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cacheow_tests::load::{self, Tally};
use http::{Request, header};
use http_body_util::Empty;
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    count: u64,
    functions: u64,
    connections: usize,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = std::env::args().skip(1);
        let (mut addr, mut count, mut functions, mut connections) = (None, None, 1, 16);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
                "--count" => count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
                "--functions" => {
                    functions = value()?.parse().map_err(|e| format!("--functions: {e}"))?
                }
                "--connections" => {
                    connections = value()?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if functions == 0 {
            return Err("--functions must be at least 1".into());
        }
        Ok(Args {
            addr: addr.ok_or("--addr is required")?,
            count: count.ok_or("--count is required")?,
            functions,
            connections,
        })
    }
}

// Internal: one thread, as the wrk rows run `wrk -t 1`; scale.sh pins it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => Arc::new(args),
        Err(e) => {
            eprintln!("record-load: {e}");
            return ExitCode::from(2);
        }
    };
    let next = Arc::new(AtomicU64::new(0));
    load::run(args.connections, |_| drive(args.clone(), next.clone())).await;
    ExitCode::SUCCESS
}

/// One keep-alive connection, taking the next i until all are sent. A
/// connection that breaks stops; the others take its share.
async fn drive(args: Arc<Args>, next: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::default();
    let Ok(stream) = TcpStream::connect(args.addr).await else {
        tally.socket_errors += 1;
        return tally;
    };
    let _ = stream.set_nodelay(true);
    let Some(mut sender) = load::handshake(stream).await else {
        tally.socket_errors += 1;
        return tally;
    };
    let host = args.addr.to_string();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= args.count {
            return tally;
        }
        let path = if args.functions > 1 {
            format!("/f{}/item/{}", i % args.functions, i / args.functions)
        } else {
            format!("/item/{i}")
        };
        let request = Request::get(path)
            .header(header::HOST, host.as_str())
            .body(Empty::new())
            .expect("request");
        if !load::exchange(&mut sender, request, &mut tally).await {
            return tally;
        }
    }
}
