//! The control API (docs/API.md): guards, routing, and handlers that only
//! call the engine. What an outcome or a setting means is the codec's
//! business (`cacheow_engine::OutcomeCodec`), never this module's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cacheow_engine::{
    CallKey, Engine, EngineError, FunctionHandle, FunctionId, FunctionKind, Guard, Invalidation,
    MAX_WAIT_MS, MockEntry, Mode, NewOutcome, OutcomeId, Policy, ReplayFilter, Stats,
    StoredOutcome, policy,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The control API of one engine: how clients reach it, its token, and
/// what the server serving it adds to `/api/info`.
pub struct Control {
    engine: Engine,
    /// The bound address (the configured port may be 0).
    listen: SocketAddr,
    /// `host:port` names under which the listener is reached.
    own_authorities: Vec<String>,
    token: Option<String>,
    /// Fields `/api/info` adds to the common ones.
    info: Map<String, Value>,
    /// Finds the function and call key of a described call.
    lookup: Option<Arc<dyn Lookup>>,
}

/// Turns the call `POST /api/lookup` describes into the function it
/// belongs to and its call key, for the side that knows that kind of call
/// (the proxy: a method, URL, headers and body).
pub trait Lookup: Send + Sync {
    /// The function's identity, the call's key, and which stored outcomes
    /// may answer it; `Err((field, reason))` when the description is wrong.
    fn lookup(&self, call: &Map<String, Value>) -> Result<LookedUp, (String, String)>;
}

/// A call found by [`Lookup`].
pub struct LookedUp {
    /// The identity its function has (or will have).
    pub name: String,
    /// Its call key.
    pub key: CallKey,
    /// Which stored outcomes may answer it, beyond the key.
    pub filter: Box<dyn ReplayFilter + Send>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The API of `engine`, reached at `listen`. With a `token`, `/api/`
    /// requires `authorization: Bearer <token>`; `info` is added to what
    /// `GET /api/info` says.
    pub fn new(
        engine: Engine,
        listen: SocketAddr,
        token: Option<String>,
        info: Map<String, Value>,
    ) -> Self {
        let port = listen.port();
        let own_authorities = vec![
            listen.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        Self {
            engine,
            listen,
            own_authorities,
            token,
            info,
            lookup: None,
        }
    }

    /// The API answering `POST /api/lookup` through `lookup`.
    pub fn with_lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// True if `authority` names this listener (API, not a proxy target).
    pub fn is_own_authority(&self, authority: &str) -> bool {
        self.own_authorities
            .iter()
            .any(|own| own.eq_ignore_ascii_case(authority))
    }

    /// The `Host` check against DNS rebinding. Off loopback the token is the
    /// guard, as the name clients use for this machine cannot be known.
    fn accepts_host(&self, host: &str) -> bool {
        self.token.is_some() || self.is_own_authority(host)
    }
}

/// Largest API request body accepted.
const MAX_API_BODY: usize = 32 * 1024 * 1024;

/// An API error as the client sees it.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn into_response(self) -> Response<Bytes> {
        let mut error =
            json!({"status": self.status.as_u16(), "code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        json_response(self.status, &json!({ "error": error }))
    }
}

/// A request the API will not serve, as `{"error": {status, code, message}}`.
pub(crate) fn refused(status: StatusCode, code: &'static str, message: &str) -> Response<Bytes> {
    ApiError::new(status, code, message).into_response()
}

/// A JSON reply with the given status.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Bytes> {
    // Internal: every type handed here is plain data (strings, numbers,
    // JSON values), which always serialises.
    let mut bytes = serde_json::to_vec(value).expect("API replies always serialise");
    bytes.push(b'\n');
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares a token a client sent with the expected one in time that does
/// not depend on where they differ.
pub fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::UnknownFunction(_) | EngineError::UnknownOutcome { .. } => {
                ApiError::not_found(e.to_string())
            }
            EngineError::Invalid { field, message } => {
                ApiError::field("invalid_field", field.clone(), message.clone())
            }
            _ => {
                tracing::error!(error = %e, "API call failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

type ApiResult = Result<Response<Bytes>, ApiError>;

fn accepts_html(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

impl Control {
    /// Serves one request for the panel or the API.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Bytes> {
        if let Err(e) = guard(&self, &request) {
            return e.into_response();
        }
        match route(self, request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }
}

/// DNS-rebinding, cross-origin and token checks.
fn guard(state: &Control, request: &Request<Incoming>) -> Result<(), ApiError> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !state.accepts_host(host) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "Host `{host}` does not name this cacheow; use http://{}",
                state.listen
            ),
        ));
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state && let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.strip_prefix("http://").unwrap_or("");
        if !state.accepts_host(authority) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("cross-origin request from `{origin}` refused"),
            ));
        }
    }
    if let Some(token) = &state.token
        && request.uri().path().starts_with("/api/")
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| tokens_match(given.as_bytes(), token.as_bytes())) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this cacheow requires `authorization: Bearer <token>` (the --token it was started with)",
            ));
        }
    }
    Ok(())
}

async fn route(state: Arc<Control>, request: Request<Incoming>) -> ApiResult {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (method.clone(), segments.as_slice()) {
        // Browsers get the panel at `/`; scripts (no text/html in Accept)
        // keep getting the JSON index.
        (Method::GET, [""]) if !accepts_html(&request) => {
            Ok(json_response(StatusCode::OK, &index()))
        }
        (Method::GET, [""] | ["ui", ..]) => crate::panel::serve(&path)
            .ok_or_else(|| ApiError::not_found(format!("no panel page at {path}"))),
        (Method::GET, ["api", "info"]) => Ok(ok_json(&info(&state))),
        (Method::GET, ["api", "functions"]) => {
            let page = Page::from_query(request.uri().query())?;
            let engine = state.engine.clone();
            off_workers(move || {
                let functions = engine.functions();
                page.respond(&functions, |f| f.id().to_string(), summary)
            })
            .await
        }
        (Method::POST, ["api", "lookup"]) => {
            let Some(lookup) = state.lookup.clone() else {
                return Err(ApiError::not_found(
                    "lookup describes HTTP calls; it is served by `cacheow serve`".to_owned(),
                ));
            };
            let call = read_json(request).await?;
            let found = lookup
                .lookup(&call)
                .map_err(|(field, reason)| ApiError::field("invalid_field", field, reason))?;
            let id = FunctionId::for_identity(&found.name);
            let Some(function) = state.engine.function(&id) else {
                return Ok(ok_json(&json!({
                    "function": null,
                    "name": found.name,
                    "call_key": found.key.to_string(),
                    "would": "call",
                    "reason": "no call to this function was seen yet",
                })));
            };
            let inspection = function.inspect(&found.key, &*found.filter);
            let mut reply = serde_json::to_value(inspection).expect("an inspection serialises");
            reply["function"] = id.to_string().into();
            reply["name"] = found.name.into();
            reply["call_key"] = found.key.to_string().into();
            Ok(ok_json(&reply))
        }
        (Method::POST, ["api", "invalidate"]) => {
            let what = invalidation(&read_json(request).await?)?;
            let engine = state.engine.clone();
            off_workers(move || {
                let report = engine.invalidate(&what)?;
                Ok(ok_json(&json!({
                    "status": "ok",
                    "functions": report.functions,
                    "deleted": report.deleted,
                })))
            })
            .await
        }
        (_, ["api", "functions", id, rest @ ..]) => {
            let function = state.engine.require(&parse_function_id(id)?)?;
            match (method, rest) {
                (Method::GET, []) => off_workers(move || Ok(ok_json(&detail(&function)))).await,
                (Method::GET, ["outcomes"]) => {
                    let page = Page::from_query(request.uri().query())?;
                    off_workers(move || outcomes_page(&function, &page)).await
                }
                (Method::POST, ["mode"]) => set_mode(&function, request).await,
                (Method::POST, ["latency"]) => set_latency(&function, request).await,
                (Method::POST, ["config"]) => set_config(&function, request).await,
                (Method::POST, ["mock-outcomes"]) => set_mock_entries(&function, request).await,
                (Method::POST, ["outcomes", "manual"]) => add_manual(&function, request).await,
                (Method::GET, ["outcomes", outcome]) => {
                    let outcome = find_outcome(&function, outcome)?;
                    Ok(ok_json(
                        &serde_json::to_value(outcome.snapshot()).expect("outcomes serialise"),
                    ))
                }
                (Method::DELETE, ["outcomes", outcome]) => {
                    let id = parse_outcome_id(outcome)?;
                    function.delete_outcome(&id)?;
                    Ok(ok_json(&json!({"status": "ok"})))
                }
                (Method::POST, ["rebuild-index"]) => {
                    let report = state.engine.rebuild_index(Some(function.id())).await?;
                    Ok(ok_json(
                        &json!({"indexed": report.indexed, "failures": report.failures, "restored": report.restored}),
                    ))
                }
                (
                    _,
                    ["mode" | "latency" | "config" | "mock-outcomes" | "rebuild-index"]
                    | ["outcomes", "manual"],
                )
                | (_, ["outcomes", _])
                | (_, []) => Err(method_not_allowed(&path)),
                _ => Err(ApiError::not_found(format!(
                    "no API endpoint at {path}; see GET / for the list"
                ))),
            }
        }
        (_, ["api", "info" | "functions" | "invalidate" | "lookup"]) | (_, [""]) => {
            Err(method_not_allowed(&path))
        }
        _ => Err(ApiError::not_found(format!(
            "no API endpoint at {path}; see GET / for the list"
        ))),
    }
}

/// Builds a (possibly large) JSON reply on a blocking thread, so listing
/// 100k functions never stalls the replays served on the async workers.
async fn off_workers(build: impl FnOnce() -> ApiResult + Send + 'static) -> ApiResult {
    tokio::task::spawn_blocking(build)
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("building the reply failed: {e}"),
            ))
        })
}

/// `?limit=N&after=ID` of a list: at most N rows after the row with id ID.
/// A page that is not the last names the next `after` in `x-cacheow-next`.
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

/// Largest page a list returns.
const MAX_PAGE: usize = 10_000;

impl Page {
    fn from_query(query: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            limit: None,
            after: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    let limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::field(
                                "invalid_field",
                                "limit",
                                format!("`limit` must be a whole number from 1 to {MAX_PAGE}, got `{value}`"),
                            )
                        })?;
                    page.limit = Some(limit);
                }
                "after" => page.after = Some(value.to_owned()),
                other => {
                    return Err(ApiError::field(
                        "invalid_field",
                        other,
                        format!(
                            "unknown query parameter `{other}`; lists take `limit` and `after`"
                        ),
                    ));
                }
            }
        }
        Ok(page)
    }

    fn respond<T, R: Serialize>(
        &self,
        rows: &[T],
        id: impl Fn(&T) -> String,
        render: impl Fn(&T) -> R,
    ) -> ApiResult {
        let start = match &self.after {
            None => 0,
            Some(after) => rows
                .iter()
                .position(|row| id(row) == *after)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    ApiError::field(
                        "invalid_field",
                        "after",
                        format!("`after` names no row of this list: `{after}`"),
                    )
                })?,
        };
        let end = self
            .limit
            .map_or(rows.len(), |limit| (start + limit).min(rows.len()));
        let list: Vec<R> = rows[start..end].iter().map(&render).collect();
        let mut response = ok_json(&list);
        if end < rows.len()
            && end > start
            && let Ok(next) = http::HeaderValue::from_str(&id(&rows[end - 1]))
        {
            response.headers_mut().insert(NEXT_PAGE, next);
        }
        Ok(response)
    }
}

/// The `after` of the next page of a list.
const NEXT_PAGE: http::HeaderName = http::HeaderName::from_static("x-cacheow-next");

fn method_not_allowed(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} does not take that method; see GET / for the list"),
    )
}

fn ok_json(value: &impl Serialize) -> Response<Bytes> {
    json_response(StatusCode::OK, value)
}

fn index() -> Value {
    json!({
        "name": "cacheow",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "GET /api/info",
            "GET /api/functions",
            "GET /api/functions/{id}",
            "GET /api/functions/{id}/outcomes?limit=N&after=ID",
            "POST /api/functions/{id}/mode",
            "POST /api/functions/{id}/latency",
            "POST /api/functions/{id}/config",
            "POST /api/functions/{id}/mock-outcomes",
            "POST /api/functions/{id}/outcomes/manual",
            "GET /api/functions/{id}/outcomes/{outcome_id}",
            "DELETE /api/functions/{id}/outcomes/{outcome_id}",
            "POST /api/functions/{id}/rebuild-index",
            "POST /api/invalidate",
            "POST /api/lookup",
        ],
    })
}

fn info(state: &Control) -> Value {
    let mut info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": state.listen.to_string(),
        "data_dir": state.engine.data_dir(),
    });
    info.as_object_mut()
        .expect("a JSON object")
        .extend(state.info.clone());
    info
}

// === reading ===

fn parse_function_id(text: &str) -> Result<FunctionId, ApiError> {
    text.parse()
        .map_err(|e: cacheow_engine::IdError| ApiError::field("invalid_id", "id", e.to_string()))
}

fn parse_outcome_id(text: &str) -> Result<OutcomeId, ApiError> {
    text.parse().map_err(|e: cacheow_engine::IdError| {
        ApiError::field("invalid_id", "outcome_id", e.to_string())
    })
}

fn find_outcome(function: &FunctionHandle, text: &str) -> Result<Arc<StoredOutcome>, ApiError> {
    let id = parse_outcome_id(text)?;
    function.outcome(&id)?.ok_or_else(|| {
        ApiError::not_found(format!("function {} has no outcome {id}", function.id()))
    })
}

/// A function as lists show it, serialised straight to bytes: a list of
/// ten thousand is built without a JSON value per field.
#[derive(Serialize)]
struct Summary {
    id: FunctionId,
    name: String,
    kind: FunctionKind,
    mode: Mode,
    latency_ms: u64,
    latency_jitter_ms: u64,
    outcome_count: usize,
    stats: SummaryStats,
    /// Guards that stop upstream calls now (`budget_exceeded`,
    /// `circuit_open`).
    guards: Vec<Guard>,
    /// What the kind's codec adds (for HTTP: `http`).
    #[serde(flatten)]
    described: Map<String, Value>,
}

#[derive(Serialize)]
struct SummaryStats {
    #[serde(flatten)]
    stats: Stats,
    average_duration_ms: f64,
}

fn summary(function: &FunctionHandle) -> Summary {
    let stats = function.stats();
    let codec = function.codec();
    function.with_settings(|settings| {
        let mut described = codec.describe(settings);
        described.retain(|key, _| !SUMMARY_FIELDS.contains(&key.as_str()));
        Summary {
            id: settings.id,
            name: settings.name.clone(),
            kind: settings.kind,
            mode: settings.mode,
            latency_ms: settings.latency_ms,
            latency_jitter_ms: settings.latency_jitter_ms,
            outcome_count: function.outcome_count(),
            guards: function.tripped_guards(),
            stats: SummaryStats {
                average_duration_ms: stats.average_duration_ms(),
                stats,
            },
            described,
        }
    })
}

/// The fields a summary always has; a codec cannot replace them.
const SUMMARY_FIELDS: [&str; 9] = [
    "id",
    "name",
    "kind",
    "mode",
    "latency_ms",
    "latency_jitter_ms",
    "outcome_count",
    "stats",
    "guards",
];

fn detail(function: &FunctionHandle) -> Value {
    let snapshot = function.snapshot();
    let mut value = serde_json::to_value(summary(function)).expect("summaries serialise");
    value["config"] = Value::Object(snapshot.config);
    // Internal: the first page only; a function may hold millions, and
    // the rest are read a page at a time from /outcomes.
    let first = function
        .outcomes_page(None, DETAIL_OUTCOMES + 1)
        .map_err(|e| tracing::error!(function = %snapshot.id, error = %e, "cannot read the outcomes to show"))
        .ok()
        .flatten()
        .unwrap_or_default();
    value["outcomes_truncated"] = json!(first.len() > DETAIL_OUTCOMES);
    value["outcomes"] = first
        .iter()
        .take(DETAIL_OUTCOMES)
        .map(|o| outcome_summary(function, o))
        .collect();
    value["mock_outcomes"] =
        serde_json::to_value(&snapshot.mock_entries).expect("entries serialise");
    value["recent_calls"] = serde_json::to_value(function.recent_calls()).expect("calls serialise");
    value
}

/// Outcomes a function's detail shows; `/outcomes` pages through the rest.
const DETAIL_OUTCOMES: usize = 100;

/// Outcomes a page of `/outcomes` holds when the request sets no `limit`.
const DEFAULT_OUTCOME_PAGE: usize = 1000;

/// A page of a function's outcomes, the most recently seen first, read from
/// the store: `after` is the last outcome id of the previous page, which
/// `x-cacheow-next` names while more follow.
fn outcomes_page(function: &FunctionHandle, page: &Page) -> ApiResult {
    let after = page.after.as_deref().map(parse_outcome_id).transpose()?;
    let limit = page.limit.unwrap_or(DEFAULT_OUTCOME_PAGE);
    let Some(mut outcomes) = function.outcomes_page(after.as_ref(), limit + 1)? else {
        return Err(ApiError::field(
            "invalid_field",
            "after",
            format!(
                "`after` names no outcome of function {}: `{}`",
                function.id(),
                page.after.as_deref().unwrap_or_default()
            ),
        ));
    };
    let more = outcomes.len() > limit;
    outcomes.truncate(limit);
    let list: Vec<Value> = outcomes
        .iter()
        .map(|o| outcome_summary(function, o))
        .collect();
    let mut response = ok_json(&Value::Array(list));
    if more
        && let Some(last) = outcomes.last()
        && let Ok(next) = http::HeaderValue::from_str(&last.id().to_string())
    {
        response.headers_mut().insert(NEXT_PAGE, next);
    }
    Ok(response)
}

fn outcome_summary(function: &FunctionHandle, stored: &StoredOutcome) -> Value {
    let o = stored.outcome();
    let preview = function.preview(stored);
    json!({
        "id": o.id,
        "call_key": o.call_key,
        "outcome_type": o.outcome_type,
        "count": stored.count(),
        "is_manual": o.is_manual,
        "is_mock_only": o.is_mock_only,
        "created_at": o.created_at,
        "last_seen_at": stored.last_seen_at(),
        "status": preview.status,
        "exception_type": o.exception_type,
        "preview": preview.text,
        "size": preview.size,
    })
}

// === changing ===

async fn read_json(request: Request<Incoming>) -> Result<Map<String, Value>, ApiError> {
    let bytes: Bytes = Limited::new(request.into_body(), MAX_API_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("cannot read the body: {e}"),
            )
        })?
        .to_bytes();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// `{"tag", "function", "older_than", "call_key", "delete"}`.
fn invalidation(body: &Map<String, Value>) -> Result<Invalidation, ApiError> {
    let text = |field: &str| -> Result<Option<&str>, ApiError> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(ApiError::field(
                "invalid_field",
                field,
                format!("`{field}` must be a string, got {other}"),
            )),
        }
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !["tag", "function", "older_than", "call_key", "delete"].contains(&k.as_str()))
    {
        return Err(ApiError::field(
            "invalid_field",
            unknown.clone(),
            format!(
                "unknown field `{unknown}`; invalidate takes tag, function, older_than, call_key and delete"
            ),
        ));
    }
    let older_than = text("older_than")?
        .map(|d| {
            policy::parse_duration(d).map_err(|e| ApiError::field("invalid_field", "older_than", e))
        })
        .transpose()?;
    let call_key = text("call_key")?
        .map(|k| {
            k.parse::<CallKey>()
                .map_err(|e| ApiError::field("invalid_field", "call_key", e.to_string()))
        })
        .transpose()?;
    Ok(Invalidation {
        tag: text("tag")?.map(str::to_owned),
        function: text("function")?.map(parse_function_id).transpose()?,
        older_than,
        call_key,
        delete: optional_bool(body, "delete", false, "delete")?,
    })
}

fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ApiError> {
    body.get(field)
        .ok_or_else(|| ApiError::field("missing_field", field, format!("`{field}` is required")))
}

fn optional_bool(
    body: &Map<String, Value>,
    field: &str,
    default: bool,
    path: &str,
) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::field(
            "invalid_field",
            path,
            format!("`{path}` must be true or false, got {other}"),
        )),
    }
}

async fn set_mode(function: &FunctionHandle, request: Request<Incoming>) -> ApiResult {
    let body = read_json(request).await?;
    let mode: Mode = match required(&body, "mode")? {
        Value::String(text) => text.parse().map_err(|e: cacheow_engine::ParseModeError| {
            ApiError::field("invalid_field", "mode", e.to_string())
        })?,
        other => {
            return Err(ApiError::field(
                "invalid_field",
                "mode",
                format!("`mode` must be a string, got {other}"),
            ));
        }
    };
    function.set_mode(mode);
    Ok(ok_json(&json!({"status": "ok", "mode": mode})))
}

async fn set_latency(function: &FunctionHandle, request: Request<Incoming>) -> ApiResult {
    let body = read_json(request).await?;
    let latency = whole_ms(required(&body, "latency_ms")?, "latency_ms")?;
    let current_jitter = function.snapshot().latency_jitter_ms;
    let jitter = match body.get("latency_jitter_ms") {
        None => current_jitter,
        Some(value) => whole_ms(value, "latency_jitter_ms")?,
    };
    function.set_latency(latency, jitter);
    Ok(ok_json(
        &json!({"status": "ok", "latency_ms": latency, "latency_jitter_ms": jitter}),
    ))
}

/// A whole number of milliseconds from 0 to one hour.
fn whole_ms(value: &Value, field: &str) -> Result<u64, ApiError> {
    value.as_u64().filter(|ms| *ms <= 3_600_000).ok_or_else(|| {
        ApiError::field(
            "invalid_field",
            field,
            format!("`{field}` must be a whole number from 0 to 3600000, got {value}"),
        )
    })
}

/// Settings the API may change, as the function's codec knows them.
async fn set_config(function: &FunctionHandle, request: Request<Incoming>) -> ApiResult {
    let body = read_json(request).await?;
    let codec = function.codec();
    let mut settings = Map::new();
    for (key, value) in body {
        let checked = Policy::check(&key, &value).or_else(|| codec.check_setting(&key, &value));
        match checked {
            Some(Ok(())) => {
                settings.insert(key, value);
            }
            Some(Err(reason)) => return Err(ApiError::field("invalid_field", key, reason)),
            None => {
                let known: Vec<&str> = codec
                    .setting_names()
                    .iter()
                    .chain(&policy::SETTINGS)
                    .copied()
                    .collect();
                let known = format!("the settings are: {}", known.join(", "));
                return Err(ApiError::field(
                    "invalid_field",
                    key.clone(),
                    format!("unknown setting `{key}`; {known}"),
                ));
            }
        }
    }
    function.merge_config(settings);
    Ok(ok_json(
        &json!({"status": "ok", "config": function.snapshot().config}),
    ))
}

async fn set_mock_entries(function: &FunctionHandle, request: Request<Incoming>) -> ApiResult {
    let body = read_json(request).await?;
    let Value::Array(items) = required(&body, "entries")? else {
        return Err(ApiError::field(
            "invalid_field",
            "entries",
            "`entries` must be a list",
        ));
    };
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("entries[{i}].{field}");
        let Value::Object(item) = item else {
            return Err(ApiError::field(
                "invalid_field",
                format!("entries[{i}]"),
                "each entry must be an object",
            ));
        };
        let outcome_id = match item.get("outcome_id") {
            Some(Value::String(text)) => text.parse().map_err(|e: cacheow_engine::IdError| {
                ApiError::field("invalid_id", at("outcome_id"), e.to_string())
            })?,
            _ => {
                return Err(ApiError::field(
                    "missing_field",
                    at("outcome_id"),
                    format!("`{}` is required", at("outcome_id")),
                ));
            }
        };
        let weight = match item.get("weight") {
            None => 1.0,
            Some(w) => w
                .as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| {
                    ApiError::field(
                        "invalid_field",
                        at("weight"),
                        format!("`{}` must be a number ≥ 0, got {w}", at("weight")),
                    )
                })?,
        };
        entries.push(MockEntry {
            outcome_id,
            weight,
            enabled: optional_bool(item, "enabled", true, &at("enabled"))?,
            ignore_args: optional_bool(item, "ignore_args", true, &at("ignore_args"))?,
        });
    }
    function.set_mock_entries(entries)?;
    Ok(ok_json(&json!({"status": "ok"})))
}

async fn add_manual(function: &FunctionHandle, request: Request<Incoming>) -> ApiResult {
    let body = read_json(request).await?;
    let call_key: Option<CallKey> = match body.get("call_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.parse().map_err(|e: cacheow_engine::IdError| {
            ApiError::field("invalid_field", "call_key", e.to_string())
        })?),
        Some(other) => {
            return Err(ApiError::field(
                "invalid_field",
                "call_key",
                format!("`call_key` must be a string, got {other}"),
            ));
        }
    };
    let mut outcome = match required(&body, "outcome_type")?.as_str() {
        Some("return") => NewOutcome::returned(required(&body, "value")?.clone()),
        Some("exception") => {
            let kind = match required(&body, "exception_type")? {
                Value::String(kind) => kind.clone(),
                other => {
                    return Err(ApiError::field(
                        "invalid_field",
                        "exception_type",
                        format!("`exception_type` must be a string, got {other}"),
                    ));
                }
            };
            let message = match body.get("exception_message") {
                None | Some(Value::Null) => format!("manual {kind} outcome"),
                Some(Value::String(m)) => m.clone(),
                Some(other) => {
                    return Err(ApiError::field(
                        "invalid_field",
                        "exception_message",
                        format!("`exception_message` must be a string, got {other}"),
                    ));
                }
            };
            let mut outcome = NewOutcome::exception(kind, message);
            if let Some(ms) = body.get("duration_ms") {
                outcome.duration_ms = ms
                    .as_f64()
                    .filter(|ms| (0.0..=MAX_WAIT_MS).contains(ms))
                    .ok_or_else(|| {
                        ApiError::field(
                            "invalid_field",
                            "duration_ms",
                            format!("`duration_ms` must be a number from 0 to {MAX_WAIT_MS}"),
                        )
                    })?;
            }
            outcome
        }
        _ => {
            return Err(ApiError::field(
                "invalid_field",
                "outcome_type",
                "`outcome_type` must be \"return\" or \"exception\"",
            ));
        }
    };
    outcome.is_mock_only = optional_bool(&body, "is_mock_only", false, "is_mock_only")?;
    let recording = function
        .add_manual(call_key, outcome)
        .map_err(|refusal| ApiError::field("invalid_field", refusal.field, refusal.message))?;
    let outcome_id = recording.outcome_id;
    let is_new = recording.is_new;
    // Internal: in durable mode an "ok" means stored, as for proxied calls.
    match recording.persisted().await {
        Ok(()) => {}
        Err(cacheow_engine::WriteError::MirrorLagging { reason }) => {
            tracing::warn!(function = %function.id(), %reason, "manual outcome committed; its JSON file lags");
        }
        Err(e) if !is_new => {
            tracing::warn!(function = %function.id(), error = %e, "the repeat of a stored manual outcome was not counted");
        }
        Err(e) => {
            tracing::error!(function = %function.id(), error = %e, "manual outcome could not be stored");
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "persist_failed",
                format!("the outcome could not be stored, so it was not added: {e}"),
            ));
        }
    }
    Ok(ok_json(&json!({"status": "ok", "outcome_id": outcome_id})))
}
