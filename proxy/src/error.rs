//! Errors of the proxy, tagged with the side that failed, and the one
//! function that turns them into what the client observes.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::body::ProxyBody;
use crate::headers;

/// Transport failures an upstream call can end in (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    ConnectionRefused,
    DnsError,
    ConnectTimeout,
    Timeout,
    ConnectionReset,
    TlsError,
    ProtocolError,
}

impl ErrorKind {
    pub(crate) const ALL: [ErrorKind; 7] = [
        ErrorKind::ConnectionRefused,
        ErrorKind::DnsError,
        ErrorKind::ConnectTimeout,
        ErrorKind::Timeout,
        ErrorKind::ConnectionReset,
        ErrorKind::TlsError,
        ErrorKind::ProtocolError,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionReset => "connection_reset",
            ErrorKind::TlsError => "tls_error",
            ErrorKind::ProtocolError => "protocol_error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown error kind `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Returned by the service to make hyper drop the client connection without
/// a response: how a `connection_reset` outcome is replayed.
#[derive(Debug)]
pub(crate) struct AbortConnection;

impl fmt::Display for AbortConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection aborted to replay a connection_reset outcome")
    }
}

impl std::error::Error for AbortConnection {}

/// What a failed call looks like to the client: the reset, the 504 or the
/// 502 with `x-cacheow-error` (DESIGN §3). `function` is the function id.
pub(crate) fn respond_failure(
    kind: &str,
    message: &str,
    function: &str,
    source: &str,
) -> Result<Response<ProxyBody>, AbortConnection> {
    if kind == ErrorKind::ConnectionReset.as_str() {
        return Err(AbortConnection);
    }
    let status = if kind == ErrorKind::Timeout.as_str() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let body = json!({"error": {"kind": kind, "message": message, "function": function}});
    let mut response = json_response(status, &body);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert(headers::ERROR, v);
    }
    if let Ok(v) = HeaderValue::from_str(function) {
        h.insert(headers::FUNCTION, v);
    }
    h.insert(
        headers::SOURCE,
        HeaderValue::from_static(source_static(source)),
    );
    Ok(response)
}

fn source_static(source: &str) -> &'static str {
    match source {
        "cache" => "cache",
        "mock" => "mock",
        _ => "upstream",
    }
}

/// A request cacheow cannot proxy at all (a bad target or CONNECT), with
/// what was wrong.
pub(crate) fn bad_target(status: StatusCode, message: &str) -> Response<ProxyBody> {
    refused(status, "bad_target", message)
}

/// A request cacheow will not serve, as `{"error": {status, code, message}}`.
pub(crate) fn refused(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json_response(
        status,
        &json!({"error": {"status": status.as_u16(), "code": code, "message": message}}),
    )
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values always serialise");
    bytes.push(b'\n');
    let mut response = Response::new(ProxyBody::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
