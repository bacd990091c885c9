//! One dispatch for every request cacheow receives, whichever way it came
//! in: the main port (absolute-form and CONNECT are proxied, origin-form is
//! the control API and panel), a reverse listener (everything goes to its
//! upstream), or a connection inside an intercepted CONNECT (everything goes
//! to the CONNECT's host). Each request is admitted by its entry's guard,
//! then routed to the forward pipeline, an upgrade, a tunnel or the API.

use std::net::SocketAddr;
use std::sync::Arc;

use cacheow_control::{Connection, Deadline, serve_connection};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::config::Upstream;
use crate::error::{Reply, bad_target};
use crate::forward::{self, Target};
use crate::guard;
use crate::request_line::{self, FirstLine};
use crate::rewind::Rewind;
use crate::state::AppState;
use crate::tunnel::{self, Connected, Interception};
use crate::upgrade;
use crate::upstream::Bound;

/// Where requests come in, and where they go.
pub(crate) enum Entry {
    /// The main port.
    Main,
    /// A reverse listener in front of one upstream.
    Reverse(Upstream),
    /// The inside of an intercepted CONNECT to `scheme://authority`.
    Tunnel {
        scheme: &'static str,
        authority: String,
    },
}

/// An entry, whether its clients must show the token (off loopback they
/// may be anyone), and the `Via` entry of the requests it forwards.
pub(crate) struct Listener {
    pub(crate) entry: Entry,
    pub(crate) needs_token: bool,
    pub(crate) via: HeaderValue,
}

/// A connection's requests: which listener, which client, and whether each
/// reply must close the connection.
#[derive(Clone)]
struct Inbound {
    listener: Arc<Listener>,
    peer: SocketAddr,
    close: bool,
}

impl Inbound {
    fn new(listener: Arc<Listener>, peer: SocketAddr) -> Self {
        Inbound {
            listener,
            peer,
            close: false,
        }
    }
}

/// Serves a connection accepted on `listener`. On the main port its first
/// request line is checked (and an unbracketed IPv6 target mended) before
/// hyper parses it.
pub(crate) async fn serve_accepted(
    state: Arc<AppState>,
    mut stream: Deadline<TcpStream>,
    listener: Arc<Listener>,
    connection: Connection,
) {
    let peer = connection.peer();
    let mut inbound = Inbound::new(listener, peer);
    if !matches!(inbound.listener.entry, Entry::Main) {
        serve(state, stream, inbound, connection);
        return;
    }
    let (prefix, mended) = match request_line::read_first_line(&mut stream).await {
        FirstLine::Serve { prefix, mended } => (prefix, mended),
        FirstLine::Gone => {
            tracing::debug!(%peer, "closed a connection that sent no request line");
            return;
        }
        FirstLine::Refuse(message) => {
            refuse_raw(&mut stream, &message).await;
            return;
        }
    };
    if mended {
        tracing::debug!(%peer, "mended an unbracketed IPv6 request target");
    }
    inbound.close = mended;
    serve(state, Rewind::new(prefix, stream), inbound, connection);
}

/// A 400 written straight to the socket: hyper could not parse the request
/// line, so there is no request to answer through it. The head and body are
/// those of the one responder's reply.
async fn refuse_raw<W: AsyncWrite + Unpin>(stream: &mut W, message: &str) {
    let response = bad_target(StatusCode::BAD_REQUEST, message);
    let (parts, body) = response.into_parts();
    let ProxyBody::Full(body) = body else {
        unreachable!("error replies are buffered JSON");
    };
    let body = body.unwrap_or_default();
    let mut head = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = stream.write_all(&head).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

fn serve<I>(state: Arc<AppState>, io: I, inbound: Inbound, connection: Connection)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bound = Arc::new(Bound::new(state.idle_upstreams.clone()));
    let service =
        service_fn(move |request| dispatch(state.clone(), request, inbound.clone(), bound.clone()));
    serve_connection(io, service, connection);
}

/// Serves the decrypted requests of an intercepted CONNECT, watched by the
/// graceful shutdown like any connection.
async fn serve_intercepted(state: Arc<AppState>, interception: Interception, from: Inbound) {
    let Some(opened) = interception.open().await else {
        return;
    };
    // Internal: a clean stop that began during the handshake takes no new
    // connections, this one included.
    let Some(watcher) = state.watcher() else {
        return;
    };
    let listener = Arc::new(Listener {
        entry: Entry::Tunnel {
            scheme: opened.scheme,
            authority: opened.authority,
        },
        // Internal: the CONNECT itself was admitted on its listener.
        needs_token: false,
        via: from.listener.via.clone(),
    });
    let connection = Connection::nested(from.peer, watcher, state.config.connection_timeouts());
    let inbound = Inbound::new(listener, from.peer);
    serve(state, opened.io, inbound, connection);
}

/// `route` behind the entry's guard, with `connection: close` on every
/// reply when the connection asks for it.
async fn dispatch(
    state: Arc<AppState>,
    request: Request<Incoming>,
    inbound: Inbound,
    bound: Arc<Bound>,
) -> Reply {
    let mut response = match admit(&state, &request, &inbound.listener) {
        Some(refusal) => refusal,
        None => route(state, request, &inbound, &bound).await?,
    };
    if inbound.close {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The refusal for a request this entry must not serve: a client without
/// the token off loopback, a foreign `Host` on a loopback reverse listener,
/// a request that looped back.
fn admit(
    state: &AppState,
    request: &Request<Incoming>,
    listener: &Listener,
) -> Option<Response<ProxyBody>> {
    let token = state.config.token.as_deref();
    let headers = request.headers();
    match &listener.entry {
        Entry::Main => {
            if !proxied(state, request) {
                // Internal: the API checks its own token (as `Authorization`).
                return guard::api_loop_refusal(headers);
            }
            if let Some(refusal) = guard::loop_refusal(headers, &listener.via) {
                return Some(refusal);
            }
            if listener.needs_token
                && token.is_some_and(|t| !guard::carries_token(headers, t, false))
            {
                return Some(guard::proxy_auth_required());
            }
        }
        Entry::Reverse(_) => {
            if let Some(refusal) = guard::loop_refusal(headers, &listener.via) {
                return Some(refusal);
            }
            let with_token = token.is_some_and(|t| guard::carries_token(headers, t, true));
            if listener.needs_token && !with_token {
                return Some(guard::reverse_auth_required());
            }
            if !with_token {
                let host = match headers.get(http::header::HOST) {
                    Some(value) => value.to_str().unwrap_or("\u{fffd}"),
                    None => request.uri().authority().map_or("", |a| a.as_str()),
                };
                if !guard::local_host_name(host) {
                    return Some(guard::misdirected(host));
                }
                if let Some(origin) = headers.get(http::header::ORIGIN) {
                    let origin = origin.to_str().unwrap_or("null");
                    if guard::foreign_origin(origin) {
                        return Some(guard::cross_origin(origin));
                    }
                }
            }
        }
        Entry::Tunnel { .. } => return guard::loop_refusal(headers, &listener.via),
    }
    None
}

/// True for a request on the main port that names another host (or is a
/// CONNECT): proxied, not the API.
fn proxied(state: &AppState, request: &Request<Incoming>) -> bool {
    request.method() == Method::CONNECT
        || request
            .uri()
            .authority()
            .is_some_and(|a| !state.control.is_own_authority(a.as_str()))
}

/// Sends an admitted request where its entry and target say.
async fn route(
    state: Arc<AppState>,
    request: Request<Incoming>,
    inbound: &Inbound,
    bound: &Bound,
) -> Reply {
    let listener = &inbound.listener;
    if request.method() == Method::CONNECT && !matches!(listener.entry, Entry::Tunnel { .. }) {
        return Ok(match tunnel::connect(&state, request).await {
            Connected::Done(response) => response,
            Connected::Intercept(interception) => {
                tokio::spawn(serve_intercepted(state, interception, inbound.clone()));
                Response::new(ProxyBody::empty())
            }
        });
    }
    let via = listener.via.clone();
    let uri = request.uri();
    let target = match &listener.entry {
        Entry::Reverse(upstream) => Target {
            scheme: upstream.scheme,
            authority: upstream.authority.clone(),
            path: format!("{}{}", upstream.base_path, uri.path()),
            query: uri.query().map(str::to_owned),
            via,
        },
        Entry::Tunnel { scheme, authority } => Target {
            scheme,
            authority: authority.clone(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            via,
        },
        Entry::Main => {
            let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                return Ok(api(&state, request).await);
            };
            if state.control.is_own_authority(authority.as_str()) {
                return Ok(api(&state, request).await);
            }
            if scheme != "http" {
                return Ok(bad_target(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "scheme `{scheme}` cannot be proxied as a plain request; HTTPS goes through CONNECT (set HTTPS_PROXY)"
                    ),
                ));
            }
            // Internal: credentials in the URL (`user:pass@host`) must not
            // reach names, files, logs or the upstream's `Host`.
            let authority = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, host)| host);
            Target {
                scheme: "http",
                authority: authority.to_ascii_lowercase(),
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                via,
            }
        }
    };
    if upgrade::is_upgrade(&request) {
        return upgrade::pass_upgrade(state, request, target).await;
    }
    forward::pipeline(state, request, target, bound).await
}

/// The control API and panel, on the main port.
async fn api(state: &AppState, request: Request<Incoming>) -> Response<ProxyBody> {
    state
        .control
        .clone()
        .handle(request)
        .await
        .map(ProxyBody::full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_request_line_gets_the_responders_400_on_the_socket() {
        let mut written = Vec::new();
        refuse_raw(&mut written, "the request target is not a URL").await;
        let text = String::from_utf8(written).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        for line in [
            "x-cacheow-error: bad_target",
            "content-type: application/json",
            &format!("content-length: {}", body.len()),
            "connection: close",
        ] {
            assert!(head.contains(line), "{line} missing from {head}");
        }
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "bad_target");
        assert_eq!(error["error"]["message"], "the request target is not a URL");
    }
}
