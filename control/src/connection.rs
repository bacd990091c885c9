//! Serving one connection: its timeouts and first-request deadline, the
//! HTTP/1.1 and HTTP/2 settings, and the shutdown watcher, the same for the
//! proxy's plain connections, those inside a CONNECT and the in-process
//! panel's.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::deadline::{Deadline, FirstRequest};

/// How long a connection may take before it sends what it must.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// Until a new connection starts its first request.
    pub idle: Duration,
    /// Until a request head is complete, and between requests on a
    /// kept-alive HTTP/1.1 connection (hyper's header timer).
    pub header: Duration,
}

impl ConnectionTimeouts {
    /// The defaults of `cacheow serve`'s flags, and the in-process panel's.
    pub const DEFAULT: ConnectionTimeouts = ConnectionTimeouts {
        idle: Duration::from_secs(60),
        header: Duration::from_secs(75),
    };

    /// The time a new connection has to deliver its first request.
    fn first_request(self) -> Duration {
        self.idle + self.header
    }
}

/// The next connection. Errors such as EMFILE are transient: log, back off
/// instead of spinning, and try again.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What serving one connection needs besides its socket.
pub struct Connection {
    /// Keeps a clean stop waiting for the connection's open requests.
    watcher: Watcher,
    peer: SocketAddr,
    /// Lifts the first-request deadline of the connection's socket, if it
    /// has one.
    first: Option<FirstRequest>,
    timeouts: ConnectionTimeouts,
}

impl Connection {
    /// A just-accepted socket, under its first-request deadline.
    pub fn accepted(
        stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        timeouts: ConnectionTimeouts,
    ) -> (Deadline<TcpStream>, Connection) {
        let _ = stream.set_nodelay(true);
        let (stream, first) = Deadline::new(stream, timeouts.first_request());
        let connection = Connection {
            watcher,
            peer,
            first: Some(first),
            timeouts,
        };
        (stream, connection)
    }

    /// A connection carried inside another one (the decrypted requests of
    /// an intercepted CONNECT from `peer`): its socket's deadline was lifted
    /// by the request that opened it.
    pub fn nested(peer: SocketAddr, watcher: Watcher, timeouts: ConnectionTimeouts) -> Connection {
        Connection {
            watcher,
            peer,
            first: None,
            timeouts,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades) on `io` in its own task,
/// watched for graceful shutdown.
pub fn serve_connection<I, S, B>(io: I, service: S, connection: Connection)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Connection {
        watcher,
        peer,
        first,
        timeouts,
    } = connection;
    let service = service_fn(move |request| {
        if let Some(first) = &first {
            first.arrived();
        }
        service.call(request)
    });
    let connection = http_builder(timeouts)
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = watcher.watch(connection);
    let span = tracing::debug_span!("connection", %peer);
    tokio::spawn(
        async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        .instrument(span),
    );
}

/// How often an HTTP/2 client is pinged, and how long its answer may take.
const HTTP2_PING_EVERY: Duration = Duration::from_secs(60);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP/1.1 and HTTP/2 server settings of every connection.
fn http_builder(timeouts: ConnectionTimeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    // Internal: pings find dead HTTP/2 peers; a live one may stay idle, as
    // clients multiplex every call onto one connection.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_PING_EVERY))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}
