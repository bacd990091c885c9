//! Protocol upgrades (WebSocket): passed to the upstream untouched and, once
//! it agrees, copied byte for byte both ways. Nothing is recorded.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::error::{Kind, ProxyError, Reply, bad_target};
use crate::forward::Target;
use crate::headers::strip_hop_by_hop;
use crate::state::AppState;
use crate::upstream;

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
) -> Reply {
    if state.config.offline {
        let message = format!(
            "cacheow runs --offline, and a protocol upgrade (WebSocket) to {} is never recorded, so it cannot be served",
            target.url()
        );
        return Ok(ProxyError::new(Kind::OfflineMiss, message).refuse());
    }
    let client_side = hyper::upgrade::on(&mut request);
    let (parts, body) = request.into_parts();
    let url = target.url();
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
        // Internal: nothing is recorded, so there is no function to name;
        // a readable 502 (never a reset) tells the client what failed.
        Err(failure) => return Ok(ProxyError::new(failure.kind, failure.message).refuse()),
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
