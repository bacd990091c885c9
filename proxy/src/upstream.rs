//! The upstream side: plain-http HTTP/1.1 connections bound to the
//! downstream connection they serve, the pooled client for everything else
//! (https, HTTP/2 clients, upgrades; rustls on ring), and how their failures
//! map to error kinds.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::tls;

pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// An upstream call that ended without a response.
#[derive(Debug)]
pub(crate) struct UpstreamFailure {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) duration: Duration,
}

/// The client for proxied calls: http or https, HTTP/2 when the upstream
/// agrees to it by ALPN, else HTTP/1.1.
pub(crate) fn client(config: &Config) -> UpstreamClient {
    build(config, true)
}

/// The client for protocol upgrades (WebSocket): HTTP/1.1 only, since an
/// `Upgrade` request has no meaning on HTTP/2.
pub(crate) fn upgrade_client(config: &Config) -> UpstreamClient {
    build(config, false)
}

/// TCP with the connect timeout, and `TCP_NODELAY`: hyper writes each
/// head and body in one go, so Nagle would only delay the last segment.
fn http_connector(config: &Config) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector
}

fn build(config: &Config, http2: bool) -> UpstreamClient {
    let connector = http_connector(config);
    let tls = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(config.upstream_roots.clone())
        .with_no_client_auth();
    // The builder sets ALPN from the protocols enabled here.
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let connector = if http2 {
        builder.enable_http2().wrap_connector(connector)
    } else {
        builder.wrap_connector(connector)
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Sends `request` through the pooled client, waiting at most `timeout` for
/// the response headers.
pub(crate) async fn send(
    client: &UpstreamClient,
    request: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let sent = client.request(request);
    within(timeout, async {
        sent.await.map_err(|e| {
            let connecting = e.is_connect();
            Failed {
                error: e.into(),
                connecting,
                wording: None,
            }
        })
    })
    .await
}

/// An upstream call that failed before its response head, and whether it
/// failed while connecting.
struct Failed {
    error: Box<dyn StdError + Send + Sync>,
    connecting: bool,
    /// What the message starts with, when `error` itself does not say it.
    wording: Option<&'static str>,
}

impl Failed {
    /// A bound connection's failure, worded as the pooled client words it
    /// (`client error (Connect): …`): the message is part of a recorded
    /// failure's identity, so the same failure over http and https, or
    /// before and after upstream connections were bound, is one outcome.
    fn bound(error: impl Into<Box<dyn StdError + Send + Sync>>, connecting: bool) -> Self {
        Failed {
            error: error.into(),
            connecting,
            wording: Some(if connecting {
                "client error (Connect)"
            } else {
                "client error (SendRequest)"
            }),
        }
    }
}

/// `call`'s response head within `timeout`, its failure classified.
async fn within(
    timeout: Duration,
    call: impl Future<Output = Result<Response<Incoming>, Failed>>,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(Failed {
            error,
            connecting,
            wording,
        })) => Err(UpstreamFailure {
            kind: classify(&*error, connecting),
            message: match wording {
                Some(wording) => format!("{wording}: {}", error_chain(&*error)),
                None => error_chain(&*error),
            },
            duration: started.elapsed(),
        }),
        Err(_) => Err(UpstreamFailure {
            kind: ErrorKind::Timeout,
            message: format!("no response within {:.1} s", timeout.as_secs_f64()),
            duration: started.elapsed(),
        }),
    }
}

/// How long an unused upstream connection is kept for reuse, and how many
/// per upstream: those of the pooled client.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// Plain-http upstream connections that no downstream connection holds,
/// newest last, by upstream authority. A downstream connection takes one
/// when it first needs it and gives it back when it closes, so a client that
/// opens a connection per request still reuses upstream connections.
pub(crate) struct IdleUpstreams {
    connector: HttpConnector,
    connections: Mutex<HashMap<String, Vec<Idle>>>,
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl Idle {
    fn usable(&self) -> bool {
        self.since.elapsed() < IDLE_TIMEOUT && !self.sender.is_closed()
    }
}

impl IdleUpstreams {
    pub(crate) fn new(config: &Config) -> Self {
        IdleUpstreams {
            connector: http_connector(config),
            connections: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Idle>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest usable idle connection to `authority`; older ones wait
    /// longer and are the first the upstream closes.
    fn take(&self, authority: &str) -> Option<SendRequest<ProxyBody>> {
        let mut connections = self.lock();
        let idle = connections.get_mut(authority)?;
        let found = std::iter::from_fn(|| idle.pop()).find(Idle::usable);
        if idle.is_empty() {
            connections.remove(authority);
        }
        found.map(|idle| idle.sender)
    }

    /// Keeps `sender` for reuse if it is between responses. One still
    /// reading a response (its client hung up mid-body) is dropped, which
    /// closes it. Every expired or closed connection, to any upstream, is
    /// dropped on the way (this runs when a client connection ends or moves
    /// to another upstream, not per call), and at the cap the oldest makes
    /// room.
    fn give_back(&self, authority: String, sender: SendRequest<ProxyBody>) {
        if !sender.is_ready() {
            return;
        }
        let mut connections = self.lock();
        connections.retain(|_, idle| {
            idle.retain(Idle::usable);
            !idle.is_empty()
        });
        let idle = connections.entry(authority).or_default();
        if idle.len() == MAX_IDLE_PER_UPSTREAM {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self, authority: &str) -> Result<SendRequest<ProxyBody>, Failed> {
        let connect_failure = |error: Box<dyn StdError + Send + Sync>| Failed::bound(error, true);
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| connect_failure(e.into()))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| connect_failure(e.into()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| connect_failure(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// The plain-http upstream connection of one downstream HTTP/1 connection.
/// Its requests come one after another, so one upstream connection serves
/// them all: no pool lock, hash, boxed future or spawned task per call.
pub(crate) struct Bound {
    idle: Arc<IdleUpstreams>,
    slot: Mutex<Option<BoundConnection>>,
}

struct BoundConnection {
    authority: String,
    sender: SendRequest<ProxyBody>,
}

impl Bound {
    pub(crate) fn new(idle: Arc<IdleUpstreams>) -> Self {
        Bound {
            idle,
            slot: Mutex::default(),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<BoundConnection>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` to `http://authority`, waiting at most `timeout` for
    /// the response headers.
    pub(crate) async fn send(
        &self,
        authority: &str,
        request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        within(timeout, self.call(authority, request)).await
    }

    async fn call(
        &self,
        authority: &str,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Failed> {
        if let Some(mut bound) = self.take(authority) {
            // Internal: the previous response on this connection was read
            // to its end before this request could arrive, so the
            // connection is idle. One that is not (closed, or anything
            // unforeseen) is dropped, which closes it, rather than waited
            // on: a wait here would count against the upstream.
            if bound.sender.is_ready() {
                match bound.sender.try_send_request(request).await {
                    Ok(response) => {
                        *self.slot() = Some(bound);
                        return Ok(response);
                    }
                    Err(mut e) => match e.take_message() {
                        // Not written: the upstream closed the idle
                        // connection first, so it is safe to send again.
                        Some(unsent) => request = unsent,
                        None => return Err(Failed::bound(e.into_error(), false)),
                    },
                }
            }
        }
        let mut sender = self.idle.connect(authority).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failed::bound(e, false))?;
        *self.slot() = Some(BoundConnection {
            authority: authority.to_owned(),
            sender,
        });
        Ok(response)
    }

    /// This connection's upstream connection to `authority`, else an idle
    /// one. One to another upstream goes back to the idle list.
    fn take(&self, authority: &str) -> Option<BoundConnection> {
        if let Some(bound) = self.slot().take() {
            if bound.authority == authority {
                return Some(bound);
            }
            self.idle.give_back(bound.authority, bound.sender);
        }
        let sender = self.idle.take(authority)?;
        Some(BoundConnection {
            authority: authority.to_owned(),
            sender,
        })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(bound) = self.slot().take() {
            self.idle.give_back(bound.authority, bound.sender);
        }
    }
}

fn classify(error: &(dyn StdError + 'static), connecting: bool) -> ErrorKind {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        if e.to_string().contains("dns error") {
            return ErrorKind::DnsError;
        }
        if is_tls_error(e) {
            return ErrorKind::TlsError;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match innermost_io(io).kind() {
                io::ErrorKind::ConnectionRefused => return ErrorKind::ConnectionRefused,
                io::ErrorKind::TimedOut if connecting => return ErrorKind::ConnectTimeout,
                io::ErrorKind::TimedOut => return ErrorKind::Timeout,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return ErrorKind::ConnectionReset,
                _ => {}
            }
        }
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>() {
            if hyper_error.is_parse() || hyper_error.is_parse_status() {
                return ErrorKind::ProtocolError;
            }
            if hyper_error.is_incomplete_message()
                || hyper_error.is_closed()
                || hyper_error.is_canceled()
            {
                return ErrorKind::ConnectionReset;
            }
        }
        source = e.source();
    }
    if connecting {
        ErrorKind::ConnectionRefused
    } else {
        ErrorKind::ProtocolError
    }
}

/// A rustls error, either itself or carried inside `io::Error`s (hyper-rustls
/// wraps tokio-rustls's `io::Error` in another). Internal: `io::Error::source`
/// skips the error it carries, so walking `source()` alone never reaches it.
fn is_tls_error(error: &(dyn StdError + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    match error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        Some(inner) => is_tls_error(inner),
        None => false,
    }
}

/// The `io::Error` at the bottom of a stack of wrapped ones, whose kind says
/// what happened (the wrappers are `Other`).
fn innermost_io(mut error: &io::Error) -> &io::Error {
    while let Some(inner) = error.get_ref().and_then(|e| e.downcast_ref::<io::Error>()) {
        error = inner;
    }
    error
}

/// "outer: inner: innermost", the way people read error chains.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
