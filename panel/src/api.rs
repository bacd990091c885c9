//! Typed client of the control API. Shapes follow docs/API.md; every call
//! returns `Result<_, ApiError>` so pages can show each failure in words.

use std::fmt;

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// === errors ===

/// Why an API call failed, in the API's own terms (`{"error":{…}}`) when the
/// server answered, or as a `network` / `bad_reply` error when it did not.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    /// `None` when no HTTP answer arrived at all.
    pub(crate) status: Option<u16>,
    pub(crate) code: String,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    status: Option<u16>,
    code: String,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn network(error: gloo_net::Error) -> Self {
        Self {
            status: None,
            code: "network".into(),
            field: None,
            message: format!("cacheow did not answer ({error}). Is it still running?"),
        }
    }

    fn from_reply(status: u16, status_text: &str, body: &str) -> Self {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => Self {
                status: Some(error.status.unwrap_or(status)),
                code: error.code,
                field: error.field,
                message: error.message,
            },
            Err(_) => {
                let excerpt: String = body.chars().take(200).collect();
                Self {
                    status: Some(status),
                    code: "http".into(),
                    field: None,
                    message: format!("{status} {status_text} {excerpt}")
                        .trim_end()
                        .to_owned(),
                }
            }
        }
    }

    fn bad_reply(path: &str, error: &serde_json::Error) -> Self {
        Self {
            status: None,
            code: "bad_reply".into(),
            field: None,
            message: format!("unexpected reply from {path}: {error}"),
        }
    }

    /// An error found before anything was sent (e.g. a form field that
    /// cannot be turned into a request).
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: None,
            code: "invalid_field".into(),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut details = Vec::new();
        if let Some(field) = &self.field {
            details.push(format!("field {field}"));
        }
        details.push(self.code.clone());
        if let Some(status) = self.status {
            details.push(format!("HTTP {status}"));
        }
        write!(f, " ({})", details.join(", "))
    }
}

impl std::error::Error for ApiError {}

// === shapes ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Default,
    Cache,
    Mock,
}

impl Mode {
    pub(crate) const ALL: [Mode; 3] = [Mode::Default, Mode::Cache, Mode::Mock];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Cache => "cache",
            Mode::Mock => "mock",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct HttpIdentity {
    pub(crate) method: String,
    pub(crate) scheme: String,
    pub(crate) host: String,
    pub(crate) route: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Stats {
    pub(crate) total_calls: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) mock_calls: u64,
    pub(crate) exceptions: u64,
    pub(crate) upstream_calls: u64,
    pub(crate) total_duration_ms: f64,
    pub(crate) average_duration_ms: f64,
    pub(crate) last_called_at: Option<String>,
    /// Calls that left no outcome, by reason (`client_gone`, `oversize`, …).
    pub(crate) unrecorded: std::collections::BTreeMap<String, u64>,
    pub(crate) persist_failures: u64,
    pub(crate) stale_served: u64,
    pub(crate) refreshed: u64,
    pub(crate) coalesced: u64,
    pub(crate) budget_rejected: u64,
    pub(crate) circuit_open: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct FunctionSummary {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) latency_ms: u64,
    #[serde(default)]
    pub(crate) http: Option<HttpIdentity>,
    #[serde(default)]
    pub(crate) outcome_count: u64,
    /// Guards that stop upstream calls now: `budget_exceeded`,
    /// `circuit_open`.
    #[serde(default)]
    pub(crate) guards: Vec<String>,
    #[serde(default)]
    pub(crate) stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct FunctionDetail {
    #[serde(flatten)]
    pub(crate) summary: FunctionSummary,
    #[serde(default)]
    pub(crate) config: Value,
    /// The most recently seen outcomes: the detail's first page, or as
    /// many as the page asked for with `outcomes`.
    #[serde(default)]
    pub(crate) outcomes: Vec<OutcomeSummary>,
    /// More outcomes exist than `outcomes` holds.
    #[serde(default)]
    pub(crate) outcomes_truncated: bool,
    #[serde(default)]
    pub(crate) mock_outcomes: Vec<MockEntry>,
    #[serde(default)]
    pub(crate) recent_calls: Vec<RecentCall>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct OutcomeSummary {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) call_key: Option<String>,
    pub(crate) outcome_type: String,
    #[serde(default)]
    pub(crate) count: u64,
    #[serde(default)]
    pub(crate) is_manual: bool,
    #[serde(default)]
    pub(crate) is_mock_only: bool,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
    #[serde(default)]
    pub(crate) last_seen_at: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<u16>,
    #[serde(default)]
    pub(crate) exception_type: Option<String>,
    #[serde(default)]
    pub(crate) preview: String,
    #[serde(default)]
    pub(crate) size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MockEntry {
    pub(crate) outcome_id: String,
    pub(crate) weight: f64,
    pub(crate) enabled: bool,
    pub(crate) ignore_args: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct RecentCall {
    pub(crate) at: String,
    #[serde(default)]
    pub(crate) source: String,
    #[serde(default)]
    pub(crate) outcome_id: Option<String>,
    #[serde(default)]
    pub(crate) duration_ms: f64,
    #[serde(default)]
    pub(crate) status: Option<u16>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// Why a real call left no outcome (`client_gone`, `oversize`, …).
    #[serde(default)]
    pub(crate) unrecorded: Option<String>,
}

/// A full stored outcome. `value` stays a JSON value: its shape depends on
/// the outcome type (response, stream, none for failures), and the viewer
/// shows whatever it holds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) call_key: Option<String>,
    pub(crate) outcome_type: String,
    #[serde(default)]
    pub(crate) value: Value,
    #[serde(default)]
    pub(crate) exception_type: Option<String>,
    #[serde(default)]
    pub(crate) exception_message: Option<String>,
    #[serde(default)]
    pub(crate) duration_ms: Option<f64>,
    #[serde(default)]
    pub(crate) count: u64,
    #[serde(default)]
    pub(crate) is_manual: bool,
    #[serde(default)]
    pub(crate) is_mock_only: bool,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
    #[serde(default)]
    pub(crate) last_seen_at: Option<String>,
    #[serde(default)]
    pub(crate) request: Option<RecordedRequest>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct RecordedRequest {
    #[serde(default)]
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) headers: Value,
    #[serde(default)]
    pub(crate) body: Value,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Info {
    pub(crate) version: String,
    pub(crate) listen: String,
    pub(crate) data_dir: String,
    pub(crate) proxy_url: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct RebuildReport {
    pub(crate) indexed: u64,
    #[serde(default)]
    pub(crate) failures: Vec<RebuildFailure>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(crate) struct RebuildFailure {
    pub(crate) path: String,
    pub(crate) reason: String,
}

#[derive(Deserialize)]
struct ModeReply {
    mode: Mode,
}

#[derive(Deserialize)]
struct LatencyReply {
    latency_ms: u64,
}

#[derive(Deserialize)]
struct ConfigReply {
    config: Value,
}

#[derive(Deserialize)]
struct ManualReply {
    outcome_id: String,
}

/// Any `{"status":"ok",…}` reply whose other fields the panel does not need.
#[derive(Deserialize)]
struct Done {}

// === calls ===

/// Ids are 16 lowercase hex characters (docs/API.md). Checking before a URL
/// is built keeps a hand-edited address from reaching an unintended path.
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn function_path(id: &str, rest: &str) -> Result<String, ApiError> {
    if is_id(id) {
        Ok(format!("/api/functions/{id}{rest}"))
    } else {
        Err(ApiError::invalid(
            "id",
            format!("`{id}` is not a function id (16 lowercase hex characters)"),
        ))
    }
}

async fn reply<T: DeserializeOwned>(
    path: &str,
    sent: Result<Response, gloo_net::Error>,
) -> Result<T, ApiError> {
    let response = sent.map_err(ApiError::network)?;
    let text = response.text().await.map_err(ApiError::network)?;
    if response.ok() {
        serde_json::from_str(&text).map_err(|e| ApiError::bad_reply(path, &e))
    } else {
        Err(ApiError::from_reply(
            response.status(),
            &response.status_text(),
            &text,
        ))
    }
}

// === token ===

/// Where the token lives: this tab only, gone when it closes.
const TOKEN_KEY: &str = "cacheow-token";

fn session_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

/// Remembers the token a cacheow started with `--token` asks for, so every
/// later request carries it.
pub(crate) fn set_token(token: &str) -> Result<(), ApiError> {
    session_storage()
        .and_then(|storage| storage.set_item(TOKEN_KEY, token.trim()).ok())
        .ok_or_else(|| {
            ApiError::invalid("token", "this browser does not let the page keep the token")
        })
}

/// Adds `authorization: Bearer …` when a token was given.
fn authorized(request: RequestBuilder) -> RequestBuilder {
    match session_storage().and_then(|storage| storage.get_item(TOKEN_KEY).ok().flatten()) {
        Some(token) => request.header("authorization", &format!("Bearer {token}")),
        None => request,
    }
}

impl ApiError {
    /// cacheow wants a token (it listens beyond loopback).
    pub(crate) fn is_unauthorized(&self) -> bool {
        self.status == Some(401)
    }
}

// === requests ===

async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    reply(path, authorized(Request::get(path)).send().await).await
}

async fn post<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> Result<T, ApiError> {
    let request = authorized(Request::post(path))
        .json(body)
        .map_err(ApiError::network)?;
    reply(path, request.send().await).await
}

pub(crate) async fn info() -> Result<Info, ApiError> {
    get("/api/info").await
}

pub(crate) async fn list_functions() -> Result<Vec<FunctionSummary>, ApiError> {
    get("/api/functions").await
}

pub(crate) async fn function(id: &str) -> Result<FunctionDetail, ApiError> {
    get(&function_path(id, "")?).await
}

/// The `limit` most recently seen outcomes of a function.
pub(crate) async fn outcomes(id: &str, limit: usize) -> Result<Vec<OutcomeSummary>, ApiError> {
    get(&function_path(id, &format!("/outcomes?limit={limit}"))?).await
}

pub(crate) async fn set_mode(id: &str, mode: Mode) -> Result<Mode, ApiError> {
    let path = function_path(id, "/mode")?;
    let reply: ModeReply = post(&path, &serde_json::json!({ "mode": mode })).await?;
    Ok(reply.mode)
}

pub(crate) async fn set_latency(id: &str, latency_ms: u64) -> Result<u64, ApiError> {
    let path = function_path(id, "/latency")?;
    let reply: LatencyReply = post(&path, &serde_json::json!({ "latency_ms": latency_ms })).await?;
    Ok(reply.latency_ms)
}

/// Merges `settings` (e.g. `{"replay_duration": true}`) into the function's
/// config; returns the whole config.
pub(crate) async fn set_config(id: &str, settings: &Value) -> Result<Value, ApiError> {
    let path = function_path(id, "/config")?;
    let reply: ConfigReply = post(&path, settings).await?;
    Ok(reply.config)
}

/// Marks outcomes stale (or deletes them): `POST /api/invalidate`.
pub(crate) async fn invalidate(what: &Value) -> Result<(), ApiError> {
    let _: Value = post("/api/invalidate", what).await?;
    Ok(())
}

pub(crate) async fn set_mock_outcomes(id: &str, entries: &[MockEntry]) -> Result<(), ApiError> {
    let path = function_path(id, "/mock-outcomes")?;
    let Done {} = post(&path, &serde_json::json!({ "entries": entries })).await?;
    Ok(())
}

/// `outcome` is a ManualOutcome body as docs/API.md describes it.
pub(crate) async fn add_manual_outcome(id: &str, outcome: &Value) -> Result<String, ApiError> {
    let path = function_path(id, "/outcomes/manual")?;
    let reply: ManualReply = post(&path, outcome).await?;
    Ok(reply.outcome_id)
}

fn outcome_path(id: &str, outcome_id: &str) -> Result<String, ApiError> {
    if !is_id(outcome_id) {
        return Err(ApiError::invalid(
            "outcome_id",
            format!("`{outcome_id}` is not an outcome id (16 lowercase hex characters)"),
        ));
    }
    function_path(id, &format!("/outcomes/{outcome_id}"))
}

pub(crate) async fn outcome(id: &str, outcome_id: &str) -> Result<Outcome, ApiError> {
    get(&outcome_path(id, outcome_id)?).await
}

pub(crate) async fn delete_outcome(id: &str, outcome_id: &str) -> Result<(), ApiError> {
    let path = outcome_path(id, outcome_id)?;
    let Done {} = reply(&path, authorized(Request::delete(&path)).send().await).await?;
    Ok(())
}

pub(crate) async fn rebuild_index(id: &str) -> Result<RebuildReport, ApiError> {
    let path = function_path(id, "/rebuild-index")?;
    reply(&path, authorized(Request::post(&path)).send().await).await
}
