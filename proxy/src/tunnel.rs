//! `CONNECT host:port`: a blind TCP tunnel (nothing is recorded).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::server::plain_error;

pub(crate) fn connect(request: Request<Incoming>) -> Response<ProxyBody> {
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return plain_error(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target");
    };
    if request.uri().port_u16().is_none() {
        return plain_error(
            StatusCode::BAD_REQUEST,
            &format!("CONNECT target `{authority}` has no port; use host:port"),
        );
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let mut server = match TcpStream::connect(&authority).await {
            Ok(server) => server,
            Err(e) => {
                tracing::info!(target = %authority, error = %e, "tunnel target unreachable");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(target = %authority, error = %e, "tunnel closed");
        }
    });
    Response::new(ProxyBody::empty())
}
