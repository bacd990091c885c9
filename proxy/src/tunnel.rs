//! `CONNECT host:port`.
//!
//! A CONNECT is intercepted by default: cacheow answers it, terminates TLS
//! with a leaf certificate for the host minted by the local CA, and hands
//! the decrypted stream back to be served like any connection (scheme
//! `https`). Hosts matching `--no-intercept` are tunnelled blind and nothing
//! is recorded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::error::{ErrorKind, Kind, ProxyError, bad_target};
use crate::rewind::Rewind;
use crate::state::AppState;

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

/// What a `CONNECT` comes to.
pub(crate) enum Connected {
    /// The whole answer: a refusal, or a blind tunnel already under way.
    Done(Response<ProxyBody>),
    /// Answer `200` and open the interception.
    Intercept(Interception),
}

/// An intercepted `CONNECT` whose client has yet to start TLS (or HTTP).
pub(crate) struct Interception {
    state: Arc<AppState>,
    request: Request<Incoming>,
    target: ConnectTarget,
}

/// The stream inside an intercepted `CONNECT`, decrypted, and where its
/// requests go.
pub(crate) struct Opened {
    pub(crate) io: Pin<Box<dyn Io>>,
    pub(crate) scheme: &'static str,
    pub(crate) authority: String,
}

/// A byte stream a connection can be served on: TLS or plain inside the
/// tunnel, whichever the client chose.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// Answers a `CONNECT`: intercepts it, or tunnels it blind for
/// `--no-intercept` hosts.
pub(crate) async fn connect(state: &Arc<AppState>, request: Request<Incoming>) -> Connected {
    let target = match ConnectTarget::parse(request.uri()) {
        Ok(target) => target,
        Err(message) => {
            return Connected::Done(bad_target(StatusCode::BAD_REQUEST, &message));
        }
    };
    if state.control.is_own_authority(&target.authority("https"))
        || state.control.is_own_authority(&target.authority("http"))
    {
        return Connected::Done(bad_target(
            StatusCode::BAD_REQUEST,
            &format!(
                "CONNECT to cacheow's own address ({}:{}): call its API and panel directly, not through the proxy (add it to NO_PROXY)",
                target.host, target.port
            ),
        ));
    }
    let blind = state
        .config
        .no_intercept
        .iter()
        .any(|p| p.matches(&target.host, target.port));
    if blind && state.config.offline {
        let message = format!(
            "cacheow runs --offline, and {}:{} is tunnelled blind (--no-intercept), so nothing of it is recorded to serve",
            target.host, target.port
        );
        return Connected::Done(ProxyError::new(Kind::OfflineMiss, message).refuse());
    }
    if blind {
        return Connected::Done(tunnel_blind(state, request, target).await);
    }
    Connected::Intercept(Interception {
        state: state.clone(),
        request,
        target,
    })
}

impl Interception {
    /// Waits for the client to take the tunnel, then for its TLS handshake;
    /// `None` (said in the log) when it never completes.
    pub(crate) async fn open(self) -> Option<Opened> {
        let Interception {
            state,
            request,
            target,
        } = self;
        let span = tracing::debug_span!("intercept", host = %target.host, port = target.port);
        async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => intercept(&state, upgraded, target).await,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    None
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Connects first, so an unreachable host is a 502 (or 504) the client can
/// read rather than a tunnel that closes at once. Nothing is recorded, so
/// the reply names no function.
async fn tunnel_blind(
    state: &AppState,
    request: Request<Incoming>,
    target: ConnectTarget,
) -> Response<ProxyBody> {
    let connecting = TcpStream::connect((target.host.as_str(), target.port));
    let mut server = match tokio::time::timeout(state.config.connect_timeout, connecting).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            let message = format!("cannot reach {}:{}: {e}", target.host, target.port);
            return ProxyError::new(connect_failure(&e), message).refuse();
        }
        Err(_) => {
            let message = format!(
                "cannot reach {}:{}: connect timed out",
                target.host, target.port
            );
            return ProxyError::new(ErrorKind::ConnectTimeout, message).refuse();
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

/// The transport failure a refused or failed TCP connect to a tunnel's
/// host is. Name lookups fail as `Other` with the resolver's message.
fn connect_failure(error: &io::Error) -> ErrorKind {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            ErrorKind::ConnectionReset
        }
        _ if error.to_string().contains("lookup") => ErrorKind::DnsError,
        _ => ErrorKind::ConnectionRefused,
    }
}

/// Opens what a client sends after CONNECT: TLS (the usual case), or plain
/// HTTP (`curl --proxytunnel http://…`, `ws://` through some clients).
async fn intercept(state: &AppState, upgraded: Upgraded, target: ConnectTarget) -> Option<Opened> {
    let mut io = TokioIo::new(upgraded);
    let mut first = vec![0u8; 512];
    let read = match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.read(&mut first)).await {
        Ok(Ok(0)) => return None,
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client closed before sending anything");
            return None;
        }
        Err(_) => {
            tracing::debug!("client sent nothing after CONNECT");
            return None;
        }
    };
    first.truncate(read);
    let kind = first[0];
    let io = Rewind::new(Bytes::from(first), io);
    if kind == TLS_HANDSHAKE {
        let tls = accept_tls(state, io, &target).await?;
        Some(Opened {
            io: Box::pin(tls),
            scheme: "https",
            authority: target.authority("https"),
        })
    } else if kind.is_ascii_uppercase() {
        Some(Opened {
            io: Box::pin(io),
            scheme: "http",
            authority: target.authority("http"),
        })
    } else {
        refuse_non_tls(io, &target, kind).await;
        None
    }
}

async fn accept_tls(
    state: &AppState,
    io: Rewind<TokioIo<Upgraded>>,
    target: &ConnectTarget,
) -> Option<tokio_rustls::server::TlsStream<Rewind<TokioIo<Upgraded>>>> {
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
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            // Internal: client-caused (it does not trust the CA, or speaks
            // something else), so not an error of cacheow's.
            tracing::info!(host = %target.host, error = %e, "TLS handshake with the client failed; does it trust the cacheow CA? (`cacheow ca`)");
            None
        }
        Err(_) => {
            tracing::info!(host = %target.host, "TLS handshake with the client timed out");
            None
        }
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
