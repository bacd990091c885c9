//! The in-process panel and control API (`CACHEOW_START_SERVER`), served
//! by `cacheow-control` on a thread of its own, so it works whatever
//! runtime (if any) the program uses.

use std::net::SocketAddr;

use cacheow_engine::Engine;

use crate::manager::Settings;

/// Starts the panel; `None` (said on stderr) when it cannot, because a
/// busy port must not stop the program or its recordings.
#[cfg(feature = "server")]
pub(crate) fn start(engine: &Engine, settings: &Settings) -> Option<SocketAddr> {
    match serve(engine, settings) {
        Ok(addr) => {
            eprintln!(
                "cacheow: panel and API at http://{addr} (data dir {})",
                shown(&settings.data_dir)
            );
            Some(addr)
        }
        Err(reason) => {
            eprintln!(
                "cacheow: the panel is not running: {reason}. Recording and replay work without it."
            );
            tracing::warn!(%reason, "in-process panel not started");
            None
        }
    }
}

/// The data dir as the banner shows it: absolute when it exists.
#[cfg(feature = "server")]
fn shown(dir: &std::path::Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_owned())
        .display()
        .to_string()
}

#[cfg(feature = "server")]
fn serve(engine: &Engine, settings: &Settings) -> Result<SocketAddr, String> {
    use cacheow_control::{ControlOptions, serve_control};

    let listen = format!("{}:{}", settings.host, settings.port);
    let listener = std::net::TcpListener::bind(&listen).map_err(|e| {
        format!("cannot listen on {listen}: {e}; set CACHEOW_SERVER_PORT to a free port (0 picks one), or CACHEOW_START_SERVER=0")
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if !addr.ip().is_loopback() && settings.token.is_none() {
        return Err(format!(
            "{addr} is reachable from other machines; set CACHEOW_TOKEN to require a token, or use CACHEOW_SERVER_HOST=127.0.0.1"
        ));
    }
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let options = ControlOptions::with_token(settings.token.clone());
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("cacheow-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the panel's runtime");
                    return;
                }
            };
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve_control(engine, listener, options, std::future::pending()).await
            });
            if let Err(e) = served {
                tracing::error!(error = %e, "the in-process panel stopped");
            }
        })
        .map_err(|e| format!("cannot start its thread: {e}"))?;
    Ok(addr)
}

#[cfg(not(feature = "server"))]
pub(crate) fn start(_engine: &Engine, _settings: &Settings) -> Option<SocketAddr> {
    tracing::info!("cacheow was built without its `server` feature: no in-process panel");
    None
}
