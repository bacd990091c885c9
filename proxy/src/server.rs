//! The composition root: opens the engine and the CA, binds every
//! listener, runs the accept loops, and stops gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cacheow_control::{Connection, Control, accept};
use cacheow_engine::{Engine, EngineError, EngineOptions, FunctionKind};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, json};
use tokio::net::TcpListener;

use crate::codec::HttpCodec;
use crate::config::{self, Config};
use crate::dispatch::{Entry, Listener, serve_accepted};
use crate::guard;
use crate::lookup::HttpLookup;
use crate::state::AppState;
use crate::tls::{Ca, CaError, LeafCache};
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
            memory_cache_bytes: config.memory_cache_bytes,
            max_upstream_calls: config.max_upstream_calls,
        },
    )?;
    engine.register_codec(FunctionKind::Http, Arc::new(HttpCodec));
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
        reverse.push((listener, addr, spec.upstream.clone()));
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
    let lookup = Arc::new(HttpLookup {
        routes: config.routes.clone(),
    });
    let control = Arc::new(
        Control::new(engine.clone(), main_addr, config.token.clone(), info).with_lookup(lookup),
    );
    let state = Arc::new(AppState {
        client: upstream::client(&config),
        upgrade_client: upstream::upgrade_client(&config),
        idle_upstreams: Arc::new(upstream::IdleUpstreams::new(&config)),
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
        Listener {
            entry: Entry::Main,
            needs_token: token && !config::is_loopback(main_addr.ip()),
            via: guard::via(guard::MAIN_LISTENER),
        },
    )];
    listeners.extend(reverse.into_iter().enumerate().map(|(i, (l, addr, up))| {
        let listener = Listener {
            entry: Entry::Reverse(up),
            needs_token: token && !config::is_loopback(addr.ip()),
            via: guard::via(i + 1),
        };
        (l, listener)
    }));
    let timeouts = state.config.connection_timeouts();
    for (socket, listener) in listeners {
        let state = state.clone();
        let listener = Arc::new(listener);
        let mut stop = stop_tx.subscribe();
        accepts.spawn(async move {
            loop {
                tokio::select! {
                    (stream, peer) = accept(&socket) => {
                        let Some(watcher) = state.watcher() else {
                            return;
                        };
                        let (stream, connection) = Connection::accepted(stream, peer, watcher, timeouts);
                        tokio::spawn(serve_accepted(state.clone(), stream, listener.clone(), connection));
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
