//! The state every connection shares: the engine, the config, the
//! upstream clients, the leaf certificates, the control API and the
//! shutdown handle. Its own module, so the request path reaches it without
//! reaching back into the listeners.

use std::sync::Arc;

use cacheow_control::Control;
use cacheow_engine::Engine;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};

use crate::config::Config;
use crate::tls::LeafCache;
use crate::upstream::{IdleUpstreams, UpstreamClient};

/// Shared by every connection.
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: Config,
    pub(crate) client: UpstreamClient,
    /// HTTP/1.1-only twin of `client`, for upgrades (WebSocket).
    pub(crate) upgrade_client: UpstreamClient,
    /// Plain-http upstream connections no downstream connection holds.
    pub(crate) idle_upstreams: Arc<IdleUpstreams>,
    /// Leaf certificates for intercepted CONNECTs.
    pub(crate) leaves: LeafCache,
    /// The control API on the main listener.
    pub(crate) control: Arc<Control>,
    /// Watches every connection, plain or inside a CONNECT, so a clean stop
    /// finishes their open requests; `None` once the stop has begun.
    pub(crate) shutdown: std::sync::Mutex<Option<GracefulShutdown>>,
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
