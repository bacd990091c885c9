//! `CONNECT host:port` and protocol upgrades.
//!
//! A CONNECT is intercepted by default: cacheow answers it, terminates TLS
//! with a leaf certificate for the host minted by the local CA, and serves
//! the decrypted requests through the same pipeline as plain proxied ones
//! (scheme `https`). Hosts matching `--no-intercept` are tunnelled blind and
//! nothing is recorded. Upgrades (WebSocket) pass through as bytes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::connection::ConnectionTimeouts;
use crate::error::bad_target;
use crate::error::{AbortConnection, ErrorKind, json_response};
use crate::forward::{self, Target};
use crate::headers::{self, strip_hop_by_hop};
use crate::rewind::Rewind;
use crate::state::AppState;
use crate::upstream;

/// How long a client may take, after CONNECT, to send its first bytes and
/// finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// A validated `CONNECT` target.
#[derive(Debug, Clone)]
struct ConnectTarget {
    /// Lowercase DNS name, or an IP address without brackets.
    host: String,
    port: u16,
}

impl ConnectTarget {
    fn parse(uri: &Uri) -> Result<Self, String> {
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "CONNECT target `{uri}` is not host:port, e.g. CONNECT api.example.com:443"
            ));
        };
        if authority.as_str().contains('@') || uri.path_and_query().is_some_and(|p| p != "/") {
            return Err(format!(
                "CONNECT target `{uri}` is not host:port, e.g. CONNECT api.example.com:443"
            ));
        }
        let Some(port) = authority.port_u16() else {
            return Err(format!(
                "CONNECT target `{authority}` has no port; use host:port"
            ));
        };
        if port == 0 {
            return Err(format!(
                "CONNECT target `{authority}`: port 0 is not a port"
            ));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase();
        if ServerName::try_from(host.as_str()).is_err() {
            return Err(format!(
                "CONNECT target `{authority}`: `{host}` is neither a host name nor an IP address"
            ));
        }
        Ok(Self { host, port })
    }

    /// `host[:port]` as it appears in a URL of `scheme` (default port left
    /// out, so routes and call keys match those of plain requests).
    fn authority(&self, scheme: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if scheme == "https" { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Answers a `CONNECT`: intercepts it, or tunnels it blind for
/// `--no-intercept` hosts.
pub(crate) async fn connect(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let target = match ConnectTarget::parse(request.uri()) {
        Ok(target) => target,
        Err(message) => {
            tracing::info!(%message, "malformed CONNECT");
            return bad_target(StatusCode::BAD_REQUEST, &message);
        }
    };
    if state.control.is_own_authority(&target.authority("https"))
        || state.control.is_own_authority(&target.authority("http"))
    {
        tracing::info!(host = %target.host, port = target.port, "refused a CONNECT to cacheow itself");
        return bad_target(
            StatusCode::BAD_REQUEST,
            "CONNECT to cacheow's own address: call its API and panel directly, not through the proxy (add it to NO_PROXY)",
        );
    }
    let blind = state
        .config
        .no_intercept
        .iter()
        .any(|p| p.matches(&target.host, target.port));
    if blind {
        return tunnel_blind(state, request, target).await;
    }
    let span = tracing::debug_span!("intercept", host = %target.host, port = target.port);
    tokio::spawn(
        async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => intercept(state, upgraded, target).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        }
        .instrument(span),
    );
    Response::new(ProxyBody::empty())
}

/// Connects first, so an unreachable host is a 502 the client can read
/// rather than a tunnel that closes at once.
async fn tunnel_blind(
    state: Arc<AppState>,
    request: Request<Incoming>,
    target: ConnectTarget,
) -> Response<ProxyBody> {
    let connecting = TcpStream::connect((target.host.as_str(), target.port));
    let mut server = match tokio::time::timeout(state.config.connect_timeout, connecting).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            tracing::info!(host = %target.host, port = target.port, error = %e, "tunnel target unreachable");
            return bad_target(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach {}:{}: {e}", target.host, target.port),
            );
        }
        Err(_) => {
            return bad_target(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "cannot reach {}:{}: connect timed out",
                    target.host, target.port
                ),
            );
        }
    };
    let _ = server.set_nodelay(true);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(host = %target.host, error = %e, "tunnel closed");
        }
    });
    Response::new(ProxyBody::empty())
}

/// Serves what a client sends after CONNECT: TLS (the usual case), or plain
/// HTTP (`curl --proxytunnel http://…`, `ws://` through some clients).
async fn intercept(state: Arc<AppState>, upgraded: Upgraded, target: ConnectTarget) {
    let mut io = TokioIo::new(upgraded);
    let mut first = vec![0u8; 512];
    let read = match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.read(&mut first)).await {
        Ok(Ok(0)) => return,
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client closed before sending anything");
            return;
        }
        Err(_) => {
            tracing::debug!("client sent nothing after CONNECT");
            return;
        }
    };
    first.truncate(read);
    let kind = first[0];
    let io = Rewind::new(Bytes::from(first), io);
    if kind == TLS_HANDSHAKE {
        serve_tls(state, io, target).await;
    } else if kind.is_ascii_uppercase() {
        serve_http(state, io, "http", target.authority("http")).await;
    } else {
        refuse_non_tls(io, &target, kind).await;
    }
}

async fn serve_tls(state: Arc<AppState>, io: Rewind<TokioIo<Upgraded>>, target: ConnectTarget) {
    let handshake = async {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = acceptor.await?;
        // SNI first; clients connecting to an IP address send none.
        let host = match start.client_hello().server_name() {
            Some(name) => name.to_ascii_lowercase(),
            None => target.host.clone(),
        };
        let config = state
            .leaves
            .server_config(&host)
            .map_err(|e| io::Error::other(e.to_string()))?;
        start.into_stream(config).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => serve_http(state, tls, "https", target.authority("https")).await,
        Ok(Err(e)) => {
            // Internal: client-caused (it does not trust the CA, or speaks
            // something else), so not an error of cacheow's.
            tracing::info!(host = %target.host, error = %e, "TLS handshake with the client failed; does it trust the cacheow CA? (`cacheow ca`)");
        }
        Err(_) => tracing::info!(host = %target.host, "TLS handshake with the client timed out"),
    }
}

/// Neither TLS nor HTTP: says so in plain HTTP (what a confused client most
/// likely reads) and closes.
async fn refuse_non_tls(mut io: Rewind<TokioIo<Upgraded>>, target: &ConnectTarget, first: u8) {
    tracing::info!(host = %target.host, first_byte = first, "bytes after CONNECT are neither TLS nor HTTP");
    let message = format!(
        "cacheow: after CONNECT {}:{} a TLS handshake (or an HTTP request) must follow; the first byte was 0x{first:02x}\n",
        target.host, target.port
    );
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
        message.len()
    );
    let _ = io.write_all(reply.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// Serves decrypted (or plain) requests of one tunnelled connection; each
/// goes to `scheme://authority` through the forward pipeline.
async fn serve_http<I>(state: Arc<AppState>, io: I, scheme: &'static str, authority: String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = ConnectionTimeouts::of(&state.config);
    // Internal: watched like a plain connection, so a clean stop finishes
    // the intercepted requests in flight.
    let Some(watcher) = state.watcher() else {
        return;
    };
    let via = crate::guard::via(crate::guard::MAIN_LISTENER);
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        let target = Target {
            scheme: scheme.to_owned(),
            authority: authority.clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().map(str::to_owned),
            via: via.clone(),
        };
        async move {
            if let Some(refusal) = crate::guard::loop_refusal(request.headers(), &target.via) {
                Ok(refusal)
            } else if is_upgrade(&request) {
                pass_upgrade(state, request, target).await
            } else {
                forward::pipeline(state, request, target).await
            }
        }
    });
    let connection = crate::connection::http_builder(timeouts)
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = watcher.watch(connection).await;
    if let Err(e) = connection {
        tracing::debug!(error = %e, "tunnelled connection ended with an error");
    }
}

/// True for an HTTP/1.1 request asking to switch to WebSocket. Other
/// upgrade offers (`h2c`, which Java's HttpClient sends on every plain
/// request) are dropped by the pipeline and the request served as HTTP/1.1.
pub(crate) fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.method() != Method::CONNECT
        && request
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|protocol| {
                let name = protocol.trim().split('/').next().unwrap_or("");
                name.eq_ignore_ascii_case("websocket")
            })
}

/// Passes an upgrade request to the upstream untouched and, on `101`, copies
/// bytes both ways until either side closes. Nothing is recorded.
pub(crate) async fn pass_upgrade(
    state: Arc<AppState>,
    mut request: Request<Incoming>,
    target: Target,
) -> Result<Response<ProxyBody>, AbortConnection> {
    let client_side = hyper::upgrade::on(&mut request);
    let (parts, body) = request.into_parts();
    let url = match &target.query {
        Some(q) => format!(
            "{}://{}{}?{q}",
            target.scheme, target.authority, target.path
        ),
        None => format!("{}://{}{}", target.scheme, target.authority, target.path),
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return Ok(bad_target(
            StatusCode::BAD_REQUEST,
            &format!("cannot build an upstream URL from `{url}`"),
        ));
    };
    let mut upstream_request = Request::new(ProxyBody::Chain {
        head: None,
        rest: body,
    });
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = parts.headers;
    let headers = upstream_request.headers_mut();
    // Internal: `connection` and `upgrade` are hop-by-hop but are exactly
    // what this hop must pass on; only the proxy's own headers go.
    for name in [
        "proxy-connection",
        "proxy-authorization",
        "keep-alive",
        crate::guard::TOKEN_HEADER.as_str(),
    ] {
        headers.remove(name);
    }
    if let Ok(host) = HeaderValue::from_str(&target.authority) {
        headers.insert(header::HOST, host);
    }
    headers.append(header::VIA, target.via.clone());
    let sent = upstream::send(
        &state.upgrade_client,
        upstream_request,
        state.config.upstream_timeout,
    )
    .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(failure) => return Ok(upgrade_failed(failure.kind, &failure.message)),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            ProxyBody::Chain {
                head: None,
                rest: incoming,
            },
        ));
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, server) = match tokio::try_join!(client_side, upstream_side) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(error = %e, "upgraded connection closed");
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}

/// A 502 for an upgrade the upstream could not take (nothing is recorded,
/// so there is no function to name).
fn upgrade_failed(kind: ErrorKind, message: &str) -> Response<ProxyBody> {
    let status = if kind == ErrorKind::Timeout {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let mut response = json_response(
        status,
        &json!({"error": {"kind": kind.as_str(), "message": message}}),
    );
    response
        .headers_mut()
        .insert(headers::ERROR, HeaderValue::from_static(kind.as_str()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_pattern::HostPattern;

    fn target(text: &str) -> Result<ConnectTarget, String> {
        ConnectTarget::parse(&text.parse::<Uri>().map_err(|e| e.to_string())?)
    }

    #[test]
    fn connect_targets_are_validated() {
        let t = target("API.Example.com:443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        assert_eq!(t.authority("https"), "api.example.com");
        assert_eq!(t.authority("http"), "api.example.com:443");
        let t = target("[::1]:8443").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority("https"), "[::1]:8443");
        assert_eq!(
            target("127.0.0.1:443").unwrap().authority("https"),
            "127.0.0.1"
        );
        for bad in [
            "example.com",
            "example.com:0",
            "user@example.com:443",
            "/path",
        ] {
            assert!(target(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn no_intercept_globs() {
        let host = |p: &str, t: &str| {
            let target = target(t).unwrap();
            HostPattern::parse(p)
                .unwrap()
                .matches(&target.host, target.port)
        };
        assert!(host("*.pinned.example", "a.pinned.example:443"));
        assert!(host("*.pinned.example", "a.b.PINNED.example:443"));
        assert!(!host("*.pinned.example", "pinned.example:443"));
        assert!(host("pinned.example", "pinned.example:8443"));
        assert!(host("api-?.example", "api-1.example:443"));
        assert!(!host("api-?.example", "api-12.example:443"));
        assert!(host("*.example:8443", "a.example:8443"));
        assert!(!host("*.example:8443", "a.example:443"));
        assert!(host("127.0.0.*", "127.0.0.1:443"));
        assert!(host("[::1]", "[::1]:443"));
        assert!(host("*", "anything:1"));
        assert!(HostPattern::parse("").is_err());
        assert!(host("[::1]:443", "[::1]:443"));
        assert!(host("::1", "[::1]:8443"));
        assert!(HostPattern::parse("a/b").is_err());
        assert!(HostPattern::parse("a:").is_err());
    }
}
