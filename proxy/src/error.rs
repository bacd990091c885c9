//! Errors of the proxy, tagged with the side that failed, and the one
//! function that turns them into what the client observes (DESIGN §3):
//! [`ProxyError::respond`] alone builds the reset, the 504 or the 4xx/5xx
//! with `x-cacheow-error` and its JSON body, and logs the error once.

use std::fmt;
use std::str::FromStr;

use cacheow_engine::{FunctionId, Source};
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

/// What the proxy answers: a response, or a dropped connection.
pub(crate) type Reply = Result<Response<ProxyBody>, AbortConnection>;

/// Which side of a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The upstream: live, or as recorded and now replayed.
    Upstream,
    /// The client: what it sent, or what it may not do here.
    Client,
    /// cacheow itself: its store, or what is stored.
    Internal,
}

/// What went wrong: one variant per code a client reads in
/// `x-cacheow-error` and `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The upstream call failed in transport.
    Transport(ErrorKind),
    /// Mock mode had nothing to replay.
    NoMockOutcome,
    /// `Cache-Control: only-if-cached`, and nothing fresh was stored.
    NotCached,
    /// `--offline`, and nothing replayable was stored.
    OfflineMiss,
    /// A per-request control header (`x-cacheow-mode`) is not understood.
    BadControl,
    /// The upstream budget (`max_upstream_calls`) is spent.
    BudgetExceeded,
    /// The circuit breaker is open.
    CircuitOpen,
    /// A stored outcome could not be turned into a reply.
    InvalidOutcome,
    /// `--durable` could not store what the upstream answered.
    PersistFailed,
    /// The request body paused past `--body-timeout`.
    BodyTimeout,
    /// The request cannot be proxied as asked; the status says how.
    BadTarget(StatusCode),
    /// The request came back to cacheow.
    LoopDetected,
    /// A proxy client off loopback without the token.
    ProxyAuthRequired,
    /// A reverse listener's client off loopback without the token.
    Unauthorized,
    /// A reverse listener's request naming a foreign `Host`.
    Misdirected,
    /// A cross-origin request to a reverse listener.
    Forbidden,
}

impl Kind {
    /// The code in `x-cacheow-error` and `error.code`.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Kind::Transport(kind) => kind.as_str(),
            Kind::NoMockOutcome => "no_mock_outcome",
            Kind::NotCached => "not_cached",
            Kind::OfflineMiss => "offline_miss",
            Kind::BadControl => "bad_control",
            Kind::BudgetExceeded => "budget_exceeded",
            Kind::CircuitOpen => "circuit_open",
            Kind::InvalidOutcome => "invalid_outcome",
            Kind::PersistFailed => "persist_failed",
            Kind::BodyTimeout => "body_timeout",
            Kind::BadTarget(_) => "bad_target",
            Kind::LoopDetected => "loop_detected",
            Kind::ProxyAuthRequired => "proxy_auth_required",
            Kind::Unauthorized => "unauthorized",
            Kind::Misdirected => "misdirected",
            Kind::Forbidden => "forbidden",
        }
    }

    fn side(self) -> Side {
        match self {
            Kind::Transport(_) => Side::Upstream,
            Kind::InvalidOutcome | Kind::PersistFailed => Side::Internal,
            // Internal: mock mode with nothing to replay is how its user set
            // it up, not a fault of cacheow's.
            Kind::NoMockOutcome
            | Kind::NotCached
            | Kind::OfflineMiss
            | Kind::BadControl
            | Kind::BudgetExceeded
            | Kind::CircuitOpen
            | Kind::BodyTimeout
            | Kind::BadTarget(_)
            | Kind::LoopDetected
            | Kind::ProxyAuthRequired
            | Kind::Unauthorized
            | Kind::Misdirected
            | Kind::Forbidden => Side::Client,
        }
    }

    /// The status the client gets; `None` drops the connection instead.
    fn status(self) -> Option<StatusCode> {
        Some(match self {
            Kind::Transport(ErrorKind::ConnectionReset) => return None,
            Kind::Transport(ErrorKind::Timeout) | Kind::NotCached | Kind::OfflineMiss => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Kind::BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            Kind::BadControl => StatusCode::BAD_REQUEST,
            Kind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Transport(_) | Kind::NoMockOutcome | Kind::InvalidOutcome => {
                StatusCode::BAD_GATEWAY
            }
            Kind::PersistFailed => StatusCode::INSUFFICIENT_STORAGE,
            Kind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::BadTarget(status) => status,
            Kind::LoopDetected => StatusCode::LOOP_DETECTED,
            Kind::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Kind::Forbidden => StatusCode::FORBIDDEN,
        })
    }
}

impl From<ErrorKind> for Kind {
    fn from(kind: ErrorKind) -> Self {
        Kind::Transport(kind)
    }
}

/// A failed or refused request: what went wrong, in words, and the call it
/// belongs to when there is one.
#[derive(Debug)]
pub(crate) struct ProxyError {
    kind: Kind,
    message: String,
    /// The function the request was for.
    function: Option<FunctionId>,
    /// Where the failure came from: `upstream` when it just happened,
    /// `cache` or `mock` when it is a replay.
    source: Option<Source>,
    /// When the client may try again (`Retry-After`).
    retry_after: Option<std::time::Duration>,
    /// The call key, for a call that was not served (`offline_miss`).
    call_key: Option<String>,
}

impl ProxyError {
    pub(crate) fn new(kind: impl Into<Kind>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            function: None,
            source: None,
            retry_after: None,
            call_key: None,
        }
    }

    /// The same error, naming the call's key in its JSON body.
    pub(crate) fn with_call_key(mut self, key: &cacheow_engine::CallKey) -> Self {
        self.call_key = Some(key.to_string());
        self
    }

    /// The same error, telling the client when to try again.
    pub(crate) fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The same error, for a request to `function` that never became a call.
    pub(crate) fn for_function(mut self, function: FunctionId) -> Self {
        self.function = Some(function);
        self
    }

    /// The same error, as the outcome of a call of `function` from `source`.
    pub(crate) fn of_call(mut self, function: FunctionId, source: Source) -> Self {
        self.function = Some(function);
        self.source = Some(source);
        self
    }

    /// The code the client reads in `x-cacheow-error`.
    pub(crate) fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Logs the error (once, here) and answers it as DESIGN §3 says.
    pub(crate) fn respond(self) -> Reply {
        self.log();
        let Some(status) = self.kind.status() else {
            return Err(AbortConnection);
        };
        Ok(self.response(status))
    }

    /// The reply to a request that never became a recorded call (a
    /// refusal, an upgrade or blind tunnel whose upstream failed): always a
    /// readable reply, never a reset, since nothing is replayed.
    pub(crate) fn refuse(self) -> Response<ProxyBody> {
        self.log();
        let status = self.kind.status().unwrap_or(StatusCode::BAD_GATEWAY);
        self.response(status)
    }

    fn response(self, status: StatusCode) -> Response<ProxyBody> {
        let code = self.kind.code();
        let mut error = json!({
            "status": status.as_u16(),
            "code": code,
            "kind": code,
            "message": self.message,
        });
        if let Some(function) = &self.function {
            error["function"] = function.to_string().into();
        }
        if let Some(key) = &self.call_key {
            error["call_key"] = key.clone().into();
        }
        let mut response =
            cacheow_control::json_response(status, &json!({ "error": error })).map(ProxyBody::full);
        let h = response.headers_mut();
        h.insert(headers::ERROR, HeaderValue::from_static(code));
        if let Some(function) = &self.function
            && let Ok(id) = HeaderValue::from_str(&function.to_string())
        {
            h.insert(headers::FUNCTION, id);
        }
        if let Some(source) = self.source {
            h.insert(headers::SOURCE, HeaderValue::from_static(source.as_str()));
        }
        if let Some(wait) = self.retry_after {
            // Internal: whole seconds, rounded up so a client that obeys
            // never comes back early.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        match self.kind {
            Kind::ProxyAuthRequired => {
                h.insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"cacheow\""),
                );
            }
            // Internal: the rest of the body may still be arriving; a
            // fresh connection is the only clean state to go on from.
            Kind::BodyTimeout => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }

    /// Client-caused errors are not cacheow's and log at INFO (a loop, a
    /// misconfiguration the user must see, at WARN); a replayed failure is
    /// the mode doing its job and logs at DEBUG; a stored outcome that
    /// cannot replay (a hand edit) at WARN; a store that cannot write at
    /// ERROR.
    fn log(&self) {
        let code = self.kind.code();
        let message = &self.message;
        let replayed = matches!(self.source, Some(Source::Cache | Source::Mock));
        let function = self.function.as_ref().map(ToString::to_string);
        match (self.kind.side(), self.kind) {
            (Side::Upstream, _) if replayed => {
                tracing::debug!(?function, code, %message, "replayed a recorded failure");
            }
            (Side::Upstream, _) => {
                tracing::info!(?function, code, %message, "the upstream call failed");
            }
            (Side::Client, Kind::LoopDetected) => {
                tracing::warn!(?function, code, %message, "refused a request that loops back");
            }
            (Side::Client, _) => tracing::info!(?function, code, %message, "refused a request"),
            (Side::Internal, Kind::PersistFailed) => {
                tracing::error!(?function, code, %message, "cacheow could not store a call");
            }
            (Side::Internal, _) => {
                tracing::warn!(?function, code, %message, "cacheow could not serve a call");
            }
        }
    }
}

/// A request cacheow cannot proxy at all (a bad target or CONNECT), with
/// what was wrong.
pub(crate) fn bad_target(status: StatusCode, message: &str) -> Response<ProxyBody> {
    ProxyError::new(Kind::BadTarget(status), message).refuse()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body(response: Response<ProxyBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_failed_call_names_its_function_source_and_kind() {
        let function = FunctionId::for_identity("GET http://api.test/x");
        let response = ProxyError::new(ErrorKind::ConnectionRefused, "refused")
            .of_call(function, Source::Mock)
            .respond()
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()[headers::ERROR], "connection_refused");
        assert_eq!(response.headers()[headers::SOURCE], "mock");
        assert_eq!(response.headers()[headers::FUNCTION], function.to_string());
        let error = &body(response).await["error"];
        assert_eq!(error["kind"], "connection_refused");
        assert_eq!(error["code"], "connection_refused");
        assert_eq!(error["status"], 502);
        assert_eq!(error["function"], function.to_string());
    }

    #[tokio::test]
    async fn each_kind_answers_with_its_own_status() {
        let cases = [
            (
                Kind::Transport(ErrorKind::Timeout),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (Kind::NoMockOutcome, StatusCode::BAD_GATEWAY),
            (Kind::NotCached, StatusCode::GATEWAY_TIMEOUT),
            (Kind::OfflineMiss, StatusCode::GATEWAY_TIMEOUT),
            (Kind::BudgetExceeded, StatusCode::TOO_MANY_REQUESTS),
            (Kind::CircuitOpen, StatusCode::SERVICE_UNAVAILABLE),
            (Kind::PersistFailed, StatusCode::INSUFFICIENT_STORAGE),
            (Kind::BodyTimeout, StatusCode::REQUEST_TIMEOUT),
            (Kind::LoopDetected, StatusCode::LOOP_DETECTED),
            (Kind::Misdirected, StatusCode::MISDIRECTED_REQUEST),
        ];
        for (kind, status) in cases {
            let response = ProxyError::new(kind, "x").respond().unwrap();
            assert_eq!(response.status(), status, "{kind:?}");
            assert_eq!(body(response).await["error"]["code"], kind.code());
        }
        let auth = ProxyError::new(Kind::ProxyAuthRequired, "x").refuse();
        assert!(auth.headers().contains_key(header::PROXY_AUTHENTICATE));
    }

    #[test]
    fn a_reset_drops_the_connection() {
        let reply = ProxyError::new(ErrorKind::ConnectionReset, "reset").respond();
        assert!(reply.is_err());
    }
}
