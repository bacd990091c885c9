//! The control API and panel without the proxy: what a program using the
//! `cacheow` library serves in process (`CACHEOW_START_SERVER`), so one
//! panel drives wrapped Rust functions the way it drives proxied routes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cacheow_engine::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::Map;
use tokio::net::TcpListener;

use crate::api::{Control, refused};
use crate::connection::{Connection, ConnectionTimeouts, accept, serve_connection};

/// How long open requests may run on after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Settings for [`serve_control`].
#[derive(Default)]
#[non_exhaustive]
pub struct ControlOptions {
    /// When set, `/api/` requires `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl ControlOptions {
    /// Options requiring `token` on `/api/`, if there is one.
    pub fn with_token(token: Option<String>) -> Self {
        Self { token }
    }
}

impl std::fmt::Debug for ControlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Serves the control API and the panel on `listener` until `shutdown`
/// completes, then lets open requests finish for up to two seconds.
pub async fn serve_control(
    engine: Engine,
    listener: TcpListener,
    options: ControlOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let control = Arc::new(Control::new(
        engine,
        listener.local_addr()?,
        options.token,
        Map::new(),
    ));
    let watcher = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, peer) = accept(&listener) => {
                let control = control.clone();
                let service = service_fn(move |request| respond(control.clone(), request));
                let (stream, connection) =
                    Connection::accepted(stream, peer, watcher.watcher(), ConnectionTimeouts::DEFAULT);
                serve_connection(stream, service, connection);
            }
            () = &mut shutdown => break,
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, watcher.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("control connections still open at shutdown; closing them");
    }
    Ok(())
}

async fn respond(
    control: Arc<Control>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let proxied = request.method() == Method::CONNECT
        || request
            .uri()
            .authority()
            .is_some_and(|authority| !control.is_own_authority(authority.as_str()));
    let response = if proxied {
        refused(
            StatusCode::BAD_REQUEST,
            "bad_target",
            "this is the panel and API of a program using the cacheow library; it does not \
             proxy. Run `cacheow serve` for the HTTP proxy.",
        )
    } else {
        control.handle(request).await
    };
    Ok(response.map(Full::new))
}
