//! What the benchmark load tools (`tls-load`, `record-load`) count and the
//! one result line they print, in the format of bench/routes.lua:
//!
//! `bench-result requests=N duration_us=N p50_us=N p99_us=N socket_errors=N status_errors=N`

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Runs `connections` copies of `connection` (each given its index) at once
/// on the current runtime, and prints the result line of them all.
pub async fn run<F, Fut>(connections: usize, connection: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for index in 0..connections {
        running.spawn(connection(index));
    }
    let mut total = Tally::default();
    while let Some(tally) = running.join_next().await {
        total.add(tally.expect("connection task"));
    }
    println!("{}", total.result_line(started.elapsed()));
}

/// An HTTP/1.1 client on `io`, its connection driven by a task of its own.
pub async fn handshake<I>(io: I) -> Option<SendRequest<Empty<Bytes>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// Sends `request` and reads its whole reply, counted in `tally`; false if
/// the connection broke (counted as a socket error).
pub async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
    tally: &mut Tally,
) -> bool {
    let sent = Instant::now();
    let Ok(response) = sender.send_request(request).await else {
        tally.socket_errors += 1;
        return false;
    };
    let ok = response.status() == StatusCode::OK;
    if response.into_body().collect().await.is_err() {
        tally.socket_errors += 1;
        return false;
    }
    tally.reply(sent, ok);
    true
}

/// What one or more connections did.
#[derive(Default)]
pub struct Tally {
    latencies_us: Vec<u32>,
    /// Connections that broke or could not be made.
    pub socket_errors: u64,
    /// Replies that were not `200`.
    pub status_errors: u64,
}

impl Tally {
    /// Counts one reply, sent at `sent`, with `ok` for a `200`.
    fn reply(&mut self, sent: Instant, ok: bool) {
        if !ok {
            self.status_errors += 1;
        }
        let micros = sent.elapsed().as_micros();
        self.latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Adds another connection's tally.
    pub fn add(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.socket_errors += other.socket_errors;
        self.status_errors += other.status_errors;
    }

    /// The result line for a run that took `duration`.
    pub fn result_line(mut self, duration: Duration) -> String {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let percentile = |p: usize| {
            if n == 0 {
                0
            } else {
                self.latencies_us[((n * p).div_ceil(100)).clamp(1, n) - 1]
            }
        };
        format!(
            "bench-result requests={n} duration_us={} p50_us={} p99_us={} socket_errors={} status_errors={}",
            duration.as_micros(),
            percentile(50),
            percentile(99),
            self.socket_errors,
            self.status_errors
        )
    }
}
