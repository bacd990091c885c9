//! The pooled upstream clients (http and https, rustls on ring), and how
//! their failures map to error kinds.

use std::error::Error as StdError;
use std::io;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

fn build(config: &Config, http2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
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

/// Sends `request`, waiting at most `timeout` for the response headers.
pub(crate) async fn send(
    client: &UpstreamClient,
    request: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(UpstreamFailure {
            kind: classify(&e),
            message: error_chain(&e),
            duration: started.elapsed(),
        }),
        Err(_) => Err(UpstreamFailure {
            kind: ErrorKind::Timeout,
            message: format!("no response within {:.1} s", timeout.as_secs_f64()),
            duration: started.elapsed(),
        }),
    }
}

fn classify(error: &hyper_util::client::legacy::Error) -> ErrorKind {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    let connecting = error.is_connect();
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
