//! Listeners, the accept loop, per-request dispatch and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cacheow_engine::{Engine, EngineError, EngineOptions};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::{Map, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::api::{self, Control};
use crate::body::ProxyBody;
use crate::config::{self, Config, Upstream};
use crate::deadline::{Deadline, FirstRequest};
use crate::error::AbortConnection;
use crate::error::bad_target;
use crate::forward::{self, Target};
use crate::guard;
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
    /// Watches every connection, plain or inside a CONNECT, so a clean stop
    /// finishes their open requests; `None` once the stop has begun.
    shutdown: std::sync::Mutex<Option<GracefulShutdown>>,
}

impl AppState {
    /// A watcher for a new connection, or `None` when cacheow is stopping.
    pub(crate) fn watcher(&self) -> Option<Watcher> {
        self.shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(GracefulShutdown::watcher)
    }
}

/// Which listener a connection came in on.
#[derive(Clone)]
enum Listener {
    Main,
    Reverse(Arc<Upstream>),
}

/// How long a connection may take before it sends what it must.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionTimeouts {
    /// Until a new connection starts its first request.
    pub(crate) idle: Duration,
    /// Until a request head is complete, and between requests on a
    /// kept-alive HTTP/1.1 connection (hyper's header timer).
    pub(crate) header: Duration,
}

impl ConnectionTimeouts {
    /// The in-process panel's: the defaults of `serve`'s flags.
    pub(crate) const LIBRARY: ConnectionTimeouts = ConnectionTimeouts {
        idle: Duration::from_secs(60),
        header: Duration::from_secs(75),
    };

    /// The time a new connection has to deliver its first request.
    fn first_request(self) -> Duration {
        self.idle + self.header
    }

    pub(crate) fn of(config: &Config) -> Self {
        Self {
            idle: config.idle_timeout,
            header: config.header_timeout,
        }
    }
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

/// What serving one accepted connection needs besides its socket.
pub(crate) struct Connection {
    /// Keeps a clean stop waiting for the connection's open requests.
    pub(crate) watcher: Watcher,
    pub(crate) peer: SocketAddr,
    /// Lifts the first-request deadline of the connection's socket.
    pub(crate) first: FirstRequest,
    pub(crate) timeouts: ConnectionTimeouts,
}

impl Connection {
    /// A just-accepted socket, under its first-request deadline.
    pub(crate) fn accepted(
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
            first,
            timeouts,
        };
        (stream, connection)
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades) on `io` in its own task,
/// watched for graceful shutdown.
pub(crate) fn serve_connection<I, S, B>(io: I, service: S, connection: Connection)
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
        first.arrived();
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
pub(crate) fn http_builder(timeouts: ConnectionTimeouts) -> auto::Builder<TokioExecutor> {
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
