//! Listeners, the accept loop, per-request dispatch and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cacheow_engine::{Engine, EngineError, EngineOptions};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::api::{self, Control};
use crate::body::ProxyBody;
use crate::config::{Config, Upstream};
use crate::error::AbortConnection;
use crate::error::bad_target;
use crate::forward::{self, Target};
use crate::request_line::{self, FirstLine};
use crate::rewind::Rewind;
use crate::tls::{Ca, CaError, LeafCache};
use crate::tunnel;
use crate::upstream::{self, UpstreamClient};

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

/// Shared by every connection.
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: Config,
    pub(crate) client: UpstreamClient,
    /// HTTP/1.1-only twin of `client`, for upgrades (WebSocket).
    pub(crate) upgrade_client: UpstreamClient,
    /// Leaf certificates for intercepted CONNECTs.
    pub(crate) leaves: LeafCache,
    /// The control API on the main listener.
    pub(crate) control: Arc<Control>,
}

/// Which listener a connection came in on.
#[derive(Clone)]
enum Listener {
    Main,
    Reverse(Arc<Upstream>),
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
    }

    let info = Map::from_iter([
        ("proxy_url".to_owned(), json!(format!("http://{main_addr}"))),
        ("durable".to_owned(), json!(config.durable)),
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
    });
    let reverse_addrs: Vec<(SocketAddr, String)> = reverse
        .iter()
        .map(|(_, addr, up)| (*addr, up.url()))
        .collect();
    on_ready(main_addr, &reverse_addrs, &engine);

    let graceful = GracefulShutdown::new();
    let mut accepts = tokio::task::JoinSet::new();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let watcher = Arc::new(graceful);
    let mut listeners = vec![(main, Listener::Main)];
    listeners.extend(
        reverse
            .into_iter()
            .map(|(l, _, up)| (l, Listener::Reverse(up))),
    );
    for (listener, kind) in listeners {
        let state = state.clone();
        let watcher = watcher.clone();
        let mut stop = stop_tx.subscribe();
        accepts.spawn(async move {
            loop {
                tokio::select! {
                    (stream, peer) = accept(&listener) => {
                        let _ = stream.set_nodelay(true);
                        let state = state.clone();
                        match kind.clone() {
                            Listener::Main => {
                                let watcher = watcher.clone();
                                tokio::spawn(serve_main(state, watcher, stream, peer));
                            }
                            reverse => {
                                let service = service_fn(move |request| {
                                    dispatch(state.clone(), request, reverse.clone(), false)
                                });
                                serve_connection(&watcher, stream, peer, service);
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
    let watcher = Arc::try_unwrap(watcher).unwrap_or_else(|_| GracefulShutdown::new());
    if tokio::time::timeout(Duration::from_secs(5), watcher.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
    let flushing = engine.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.flush()).await;
    Ok(())
}

/// The next connection. Errors such as EMFILE are transient: log, back off
/// instead of spinning, and try again.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
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

/// A connection on the main listener: its first request line is checked
/// (and an unbracketed IPv6 target mended) before hyper serves it.
async fn serve_main(
    state: Arc<AppState>,
    watcher: Arc<GracefulShutdown>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let (prefix, mended) = match request_line::read_first_line(&mut stream).await {
        FirstLine::Serve { prefix, mended } => (prefix, mended),
        FirstLine::Gone => return,
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
        service_fn(move |request| dispatch(state.clone(), request, Listener::Main, mended));
    serve_connection(&watcher, Rewind::new(prefix, stream), peer, service);
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades) on `io` in its own task,
/// watched by `watcher` for graceful shutdown.
pub(crate) fn serve_connection<I, S, B>(
    watcher: &GracefulShutdown,
    io: I,
    peer: SocketAddr,
    service: S,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder
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

/// `route`, with `connection: close` on every reply when `close` is set.
async fn dispatch(
    state: Arc<AppState>,
    request: Request<Incoming>,
    listener: Listener,
    close: bool,
) -> Result<Response<ProxyBody>, AbortConnection> {
    let mut response = route(state, request, listener).await?;
    if close {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// One port: absolute-form and CONNECT are proxied; origin-form is the API
/// (or, on a reverse listener, proxied to its upstream).
async fn route(
    state: Arc<AppState>,
    request: Request<Incoming>,
    listener: Listener,
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
            let target = Target {
                scheme: scheme.to_owned(),
                authority: authority.as_str().to_ascii_lowercase(),
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
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
