//! Listeners, the accept loop, per-request dispatch and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cacheow_engine::{Engine, EngineError, EngineOptions};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::api::{self, Control};
use crate::body::ProxyBody;
use crate::config::{self, Config, Upstream};
use crate::connection::{Connection, ConnectionTimeouts, accept, serve_connection};
use crate::deadline::Deadline;
use crate::error::AbortConnection;
use crate::error::bad_target;
use crate::forward::{self, Target};
use crate::guard;
use crate::request_line::{self, FirstLine};
use crate::rewind::Rewind;
use crate::state::AppState;
use crate::tls::{Ca, CaError, LeafCache};
use crate::tunnel;
use crate::upstream;

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The data dir could not be opened.
    #[error(transparent)]
    Open(#[from] EngineError),
    /// The local CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl RunError {
    /// True when another cacheow owns the data dir.
    pub fn is_data_dir_locked(&self) -> bool {
        matches!(self, RunError::Open(EngineError::Open(e)) if e.is_locked())
    }
}

/// Which listener a connection came in on.
#[derive(Clone)]
enum Listener {
    Main,
    Reverse(Arc<Upstream>),
}

/// A listener, whether its clients must show the token (off loopback they
/// may be anyone), and the `Via` entry of the requests it forwards.
#[derive(Clone)]
struct Bound {
    kind: Listener,
    needs_token: bool,
    via: HeaderValue,
}

/// Runs cacheow until SIGINT or SIGTERM. `on_ready` gets the bound main
/// address and the bound reverse addresses once every port is open.
pub async fn run(
    config: Config,
    on_ready: impl FnOnce(SocketAddr, &[(SocketAddr, String)], &Engine),
) -> Result<(), RunError> {
    let engine = Engine::open(
        &config.data_dir,
        EngineOptions {
            default_mode: config.default_mode,
            durable: config.durable,
        },
    )?;
    let ca = Ca::load_or_create(&config.data_dir)?;
    if ca.created() {
        tracing::info!(cert = %ca.paths().cert.display(), "created the local CA");
    }
    let main = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.listen,
            source,
        })?;
    let main_addr = main.local_addr().map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut reverse = Vec::new();
    for spec in &config.reverse {
        let listener = TcpListener::bind(spec.listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: spec.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RunError::Bind {
            addr: spec.listen,
            source,
        })?;
        reverse.push((listener, addr, Arc::new(spec.upstream.clone())));
        if !config::is_loopback(addr.ip()) {
            tracing::info!(%addr, "reverse listener off loopback: clients must send the token");
        }
    }

    let info = Map::from_iter([
        ("proxy_url".to_owned(), json!(format!("http://{main_addr}"))),
        ("durable".to_owned(), json!(config.durable)),
        ("loss_window".to_owned(), json!(engine.loss_window())),
        ("max_body_bytes".to_owned(), json!(config.max_body_bytes)),
    ]);
    let control = Arc::new(Control::new(
        engine.clone(),
        main_addr,
        config.token.clone(),
        info,
        None,
    ));
    let state = Arc::new(AppState {
        client: upstream::client(&config),
        upgrade_client: upstream::upgrade_client(&config),
        leaves: LeafCache::new(ca),
        engine: engine.clone(),
        config,
        control,
        shutdown: std::sync::Mutex::new(Some(GracefulShutdown::new())),
    });
    let reverse_addrs: Vec<(SocketAddr, String)> = reverse
        .iter()
        .map(|(_, addr, up)| (*addr, up.url()))
        .collect();
    on_ready(main_addr, &reverse_addrs, &engine);

    let mut accepts = tokio::task::JoinSet::new();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let token = state.config.token.is_some();
    let mut listeners = vec![(
        main,
        Bound {
            kind: Listener::Main,
            needs_token: token && !config::is_loopback(main_addr.ip()),
            via: guard::via(guard::MAIN_LISTENER),
        },
    )];
    listeners.extend(reverse.into_iter().enumerate().map(|(i, (l, addr, up))| {
        let bound = Bound {
            kind: Listener::Reverse(up),
            needs_token: token && !config::is_loopback(addr.ip()),
            via: guard::via(i + 1),
        };
        (l, bound)
    }));
    let timeouts = ConnectionTimeouts::of(&state.config);
    for (listener, bound) in listeners {
        let state = state.clone();
        let mut stop = stop_tx.subscribe();
        accepts.spawn(async move {
            loop {
                tokio::select! {
                    (stream, peer) = accept(&listener) => {
                        let state = state.clone();
                        let bound = bound.clone();
                        let Some(watcher) = state.watcher() else {
                            return;
                        };
                        let (stream, connection) = Connection::accepted(stream, peer, watcher, timeouts);
                        match bound.kind {
                            Listener::Main => {
                                tokio::spawn(serve_main(state, stream, bound, connection));
                            }
                            Listener::Reverse(_) => {
                                let service = service_fn(move |request| {
                                    dispatch(state.clone(), request, bound.clone(), false)
                                });
                                serve_connection(stream, service, connection);
                            }
                        }
                    }
                    _ = stop.recv() => return,
                }
            }
        });
    }

    shutdown_signal().await;
    tracing::info!("shutting down: finishing open requests, then flushing the store");
    let _ = stop_tx.send(());
    while accepts.join_next().await.is_some() {}
    let graceful = state
        .shutdown
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
    let flushing = engine.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.flush()).await;
    Ok(())
}

/// A connection on the main listener: its first request line is checked
/// (and an unbracketed IPv6 target mended) before hyper serves it.
async fn serve_main(
    state: Arc<AppState>,
    mut stream: Deadline<TcpStream>,
    bound: Bound,
    connection: Connection,
) {
    let peer = connection.peer;
    let (prefix, mended) = match request_line::read_first_line(&mut stream).await {
        FirstLine::Serve { prefix, mended } => (prefix, mended),
        FirstLine::Gone => {
            tracing::debug!(%peer, "closed a connection that sent no request line");
            return;
        }
        FirstLine::Refuse(message) => {
            tracing::info!(%peer, %message, "refused a request with a bad request target");
            let body = json!({"error": {"status": 400, "code": "bad_target", "message": message}});
            let mut body = serde_json::to_vec(&body).expect("JSON values always serialise");
            body.push(b'\n');
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    if mended {
        tracing::debug!(%peer, "mended an unbracketed IPv6 request target");
    }
    let service =
        service_fn(move |request| dispatch(state.clone(), request, bound.clone(), mended));
    serve_connection(Rewind::new(prefix, stream), service, connection);
}

/// `route` behind the listener's guard, with `connection: close` on every
/// reply when `close` is set.
async fn dispatch(
    state: Arc<AppState>,
    request: Request<Incoming>,
    bound: Bound,
    close: bool,
) -> Result<Response<ProxyBody>, AbortConnection> {
    let mut response = match admit(&state, &request, &bound) {
        Some(refusal) => refusal,
        None => route(state, request, bound.kind, bound.via).await?,
    };
    if close {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The refusal for a request this listener must not serve: a client
/// without the token off loopback, a foreign `Host` on a loopback reverse
/// listener, a request that looped back.
fn admit(
    state: &AppState,
    request: &Request<Incoming>,
    bound: &Bound,
) -> Option<Response<ProxyBody>> {
    let token = state.config.token.as_deref();
    let headers = request.headers();
    match &bound.kind {
        Listener::Main => {
            let proxied = request.method() == Method::CONNECT
                || request
                    .uri()
                    .authority()
                    .is_some_and(|a| !state.control.is_own_authority(a.as_str()));
            if !proxied {
                // Internal: the API checks its own token (as `Authorization`).
                return guard::api_loop_refusal(headers);
            }
            if let Some(refusal) = guard::loop_refusal(headers, &bound.via) {
                return Some(refusal);
            }
            if bound.needs_token && token.is_some_and(|t| !guard::carries_token(headers, t, false))
            {
                return Some(guard::proxy_auth_required());
            }
        }
        Listener::Reverse(_) => {
            if let Some(refusal) = guard::loop_refusal(headers, &bound.via) {
                return Some(refusal);
            }
            let with_token = token.is_some_and(|t| guard::carries_token(headers, t, true));
            if bound.needs_token && !with_token {
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
    }
    None
}

/// One port: absolute-form and CONNECT are proxied; origin-form is the API
/// (or, on a reverse listener, proxied to its upstream).
async fn route(
    state: Arc<AppState>,
    request: Request<Incoming>,
    listener: Listener,
    via: HeaderValue,
) -> Result<Response<ProxyBody>, AbortConnection> {
    if request.method() == Method::CONNECT {
        return Ok(tunnel::connect(state, request).await);
    }
    match listener {
        Listener::Reverse(upstream) => {
            let path = request.uri().path();
            let target = Target {
                scheme: upstream.scheme.clone(),
                authority: upstream.authority.clone(),
                path: format!("{}{}", upstream.base_path, path),
                query: request.uri().query().map(str::to_owned),
                via,
            };
            if tunnel::is_upgrade(&request) {
                return tunnel::pass_upgrade(state, request, target).await;
            }
            forward::pipeline(state, request, target).await
        }
        Listener::Main => {
            let uri = request.uri();
            let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                return Ok(api::handle(state.control.clone(), request).await);
            };
            if state.control.is_own_authority(authority.as_str()) {
                return Ok(api::handle(state.control.clone(), request).await);
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
            let target = Target {
                scheme: scheme.to_owned(),
                authority: authority.to_ascii_lowercase(),
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                via,
            };
            if tunnel::is_upgrade(&request) {
                return tunnel::pass_upgrade(state, request, target).await;
            }
            forward::pipeline(state, request, target).await
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
