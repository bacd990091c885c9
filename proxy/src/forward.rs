//! The request path for proxied calls, as small named steps wired together
//! in `pipeline`: read the request → route → call key → engine decision →
//! upstream or replay → respond.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cacheow_engine::{
    CallKey, Decision, Finished, Follow, FunctionHandle, FunctionKind, FunctionSpec, Guard,
    Landing, Lead, NewOutcome, Refusal, ReplayFilter, Source, StoredOutcome, Unrecorded, Waited,
};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::body::{Captured, Lent, ProxyBody};
use crate::call_key::{KeyInput, call_key};
use crate::controls::take_overrides;
use crate::error::{AbortConnection, ErrorKind, Kind, ProxyError, Reply};
use crate::headers::{self, strip_hop_by_hop};
use crate::live::Live;
use crate::outcome_http::{
    Ending, Prepared, body_to_json, headers_to_json, prepare, request_requirements,
    response_fingerprint, response_outcome, satisfies,
};
use crate::redact::Redaction;
use crate::state::AppState;
use crate::upstream::{self, Bound, UpstreamFailure};

/// Where a proxied request goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// `host[:port]`, lowercase.
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// The `Via` entry of the listener the request came in on.
    pub(crate) via: HeaderValue,
}

impl Target {
    /// `scheme://authority/path?query`.
    pub(crate) fn url(&self) -> String {
        match &self.query {
            Some(q) => format!("{}://{}{}?{q}", self.scheme, self.authority, self.path),
            None => format!("{}://{}{}", self.scheme, self.authority, self.path),
        }
    }
}

/// The request body, read up to the record cap.
enum RequestBody {
    Whole(Bytes),
    /// Over the cap: forwarded as is, never recorded or replayed.
    Oversize {
        head: Bytes,
        rest: Incoming,
    },
}

/// How much of a request body cacheow reads and drops after its upstream
/// call failed, so the client reads the error reply rather than a reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// One proxied call, from request to response.
pub(crate) async fn pipeline(
    state: Arc<AppState>,
    request: Request<Incoming>,
    target: Target,
    bound: &Bound,
) -> Reply {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    // Internal: hop-by-hop headers belong to this hop (an `Upgrade: h2c`
    // offer among them), so they are never keyed, stored or forwarded.
    strip_hop_by_hop(&mut parts.headers);
    let route = state.config.routes.resolve(
        parts.method.as_str(),
        target.scheme,
        &target.authority,
        &target.path,
    );
    let function = state.engine.ensure_function(FunctionSpec {
        name: route.name,
        kind: FunctionKind::Http,
        initial_mode: route.initial_mode,
        config: route.config,
        initial_config: route.initial_config,
    });
    let body = match read_body(body, state.config.max_body_bytes, state.config.body_timeout).await {
        Ok(body) => body,
        Err(BodyError::Broken(e)) => {
            tracing::info!(function = %function.id(), error = %e, "the client's request body broke off; nothing was sent upstream");
            return Err(AbortConnection);
        }
        Err(BodyError::Stalled) => {
            let message = format!(
                "the request body paused for more than {:?} (--body-timeout); nothing was sent upstream",
                state.config.body_timeout
            );
            return ProxyError::new(Kind::BodyTimeout, message)
                .for_function(function.id())
                .respond();
        }
    };
    let mut overrides = match take_overrides(&mut parts.headers) {
        Ok(overrides) => overrides,
        Err(message) => {
            return ProxyError::new(Kind::BadControl, message)
                .for_function(function.id())
                .respond();
        }
    };
    if state.config.offline {
        // Internal: replay or refuse, never call: the same decision as
        // `only-if-cached`, answered as `offline_miss`.
        overrides.only_if_cached = true;
    }
    // Internal: moved out, so the upstream request takes them without a
    // copy; `call` keeps the rest of the head.
    let headers = std::mem::take(&mut parts.headers);
    let key = match &body {
        RequestBody::Whole(bytes) => Some(call_key(
            &route.keys,
            &KeyInput {
                method: parts.method.as_str(),
                scheme: target.scheme,
                host: &target.authority,
                path: &target.path,
                query: target.query.as_deref(),
                headers: &headers,
                body: bytes,
            },
        )),
        RequestBody::Oversize { .. } => None,
    };
    let mut call = Call {
        state: &state,
        function: &function,
        parts: &parts,
        target: &target,
        bound,
        key,
        started,
        cache_miss: false,
    };
    let filter = RequestFilter { headers: &headers };
    if state.config.offline && overrides.bypass {
        return call.refused(&Refusal::NotCached {
            function: function.id(),
        });
    }
    loop {
        match function.decide_with(key.as_ref(), &filter, overrides) {
            Ok(Decision::Replay {
                outcome,
                source,
                delay,
                age,
                refresh,
                guard,
            }) => {
                if let (Some(lead), RequestBody::Whole(bytes)) = (refresh, &body) {
                    call.refresh_in_background(lead, bytes.clone(), headers.clone());
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return call
                    .replay(&outcome, source, age, guard.map(StoodInFor::Guard))
                    .await;
            }
            Ok(Decision::Call {
                reason,
                unrecorded,
                fallback,
                lead,
            }) => {
                call.cache_miss = reason.is_cache_miss();
                let plan = Plan {
                    unrecorded,
                    fallback,
                    lead,
                };
                return match body {
                    RequestBody::Whole(bytes) => call.upstream(bytes, headers, plan).await,
                    RequestBody::Oversize { head, rest } => {
                        call.pass_through(head, rest, headers).await
                    }
                };
            }
            Ok(Decision::Follow { flight, fallback }) => {
                if let Some(reply) = call.follow(flight, fallback, &filter).await {
                    return reply;
                }
                // Internal: the call it waited for left nothing to replay,
                // or took too long; this one goes on its own.
                overrides.alone = true;
            }
            Err(refusal) => return call.refused(&refusal),
        }
    }
}

/// What an upstream-bound call does with what it gets.
struct Plan {
    /// Why the answer is not to be recorded; `None` records it.
    unrecorded: Option<Unrecorded>,
    /// What may answer instead when the upstream fails.
    fallback: Option<Arc<StoredOutcome>>,
    /// Identical calls waiting for this one.
    lead: Option<Lead>,
}

impl Plan {
    /// Tells the calls waiting for this one what it recorded.
    fn land(&mut self, outcome: Option<cacheow_engine::OutcomeId>) {
        if let Some(lead) = self.lead.take() {
            lead.land(outcome);
        }
    }
}

/// Which recorded replies may answer a request with these headers, beyond
/// its call key (borrowed on the request path, owned by a lookup).
pub(crate) struct RequestFilter<H> {
    pub(crate) headers: H,
}

impl<H: std::borrow::Borrow<http::HeaderMap>> ReplayFilter for RequestFilter<H> {
    // Internal: whether a recorded failure may replay in cache mode is the
    // function's `cache_if` (by default no transport failure does).
    fn accepts(&self, outcome: &StoredOutcome, _source: Source) -> bool {
        outcome.prepared(prepare).matches(self.headers.borrow())
    }
}

/// Why a request body could not be read.
enum BodyError {
    Broken(hyper::Error),
    /// No chunk came within the body timeout.
    Stalled,
}

async fn read_body(
    mut body: Incoming,
    cap: usize,
    pause: Duration,
) -> Result<RequestBody, BodyError> {
    let mut buffer = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(BodyError::Broken)?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buffer.len() + data.len() > cap {
            buffer.extend_from_slice(&data);
            return Ok(RequestBody::Oversize {
                head: buffer.freeze(),
                rest: body,
            });
        }
        buffer.extend_from_slice(&data);
    }
    Ok(RequestBody::Whole(buffer.freeze()))
}

/// The response head of a live upstream call, kept for recording.
struct Head {
    status: StatusCode,
    headers: http::HeaderMap,
    elapsed: Duration,
    request: RequestRecord,
}

/// The request as shown beside its outcome, turned into JSON only when the
/// outcome is new.
struct RequestRecord {
    method: http::Method,
    url: String,
    headers: http::HeaderMap,
    body: Bytes,
    redaction: Arc<Redaction>,
}

impl RequestRecord {
    /// Secrets redacted.
    fn to_json(&self) -> Value {
        let encoding = self
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let mut body = if self.body.is_empty() {
            Value::Null
        } else {
            body_to_json(&self.body, encoding)
        };
        self.redaction.body(&mut body);
        json!({
            "method": self.method.as_str(),
            "url": self.redaction.url(&self.url),
            "headers": headers_to_json(&self.headers, &self.redaction.headers),
            "body": body,
        })
    }
}

/// What recording a captured response came to.
struct Recorded {
    outcome_id: Option<cacheow_engine::OutcomeId>,
    /// The error kind, if the stream broke.
    error: Option<String>,
    unrecorded: Option<Unrecorded>,
}

/// Records what a tee captured.
fn record_captured(
    function: &FunctionHandle,
    key: Option<CallKey>,
    head: Head,
    captured: Captured,
) -> Recorded {
    let (chunks, ending) = match captured {
        Captured::Complete(chunks) => (chunks, Ending::Complete),
        Captured::Broken { chunks, error } => {
            let kind = ErrorKind::ConnectionReset.as_str().to_owned();
            (chunks, Ending::Broken(kind, error))
        }
        Captured::Oversize => return Recorded::not(Unrecorded::Oversize),
        Captured::ClientGone => return Recorded::not(Unrecorded::ClientGone),
    };
    let error = match &ending {
        Ending::Broken(kind, _) => Some(kind.clone()),
        Ending::Complete => None,
    };
    let fingerprint = response_fingerprint(head.status, &head.headers, &chunks, error.as_deref());
    let recording = function.record_with(key, &fingerprint, || {
        response_outcome(
            head.status,
            &head.headers,
            &chunks,
            ending,
            head.elapsed,
            head.request.to_json(),
        )
    });
    Recorded {
        outcome_id: Some(recording.outcome_id),
        error,
        unrecorded: None,
    }
}

impl Recorded {
    fn not(reason: Unrecorded) -> Self {
        Recorded {
            outcome_id: None,
            error: None,
            unrecorded: Some(reason),
        }
    }
}

/// A function's `replay_speed` setting: 1 replays streams with their
/// recorded gaps, 0 as fast as possible.
fn replay_speed(function: &FunctionHandle) -> f64 {
    function
        .setting(crate::replay::SPEED)
        .and_then(|v| v.as_f64())
        .filter(|speed| crate::replay::valid_speed(*speed))
        .unwrap_or(1.0)
}

/// A function's `replay_duration` setting: a replayed response waits as long
/// as the recorded call took (scaled by `replay_speed`), as streams keep
/// their gaps. Off by default: replays are instant.
fn replay_duration(function: &FunctionHandle) -> bool {
    function
        .setting(crate::replay::DURATION)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// The state of one call while it is served.
struct Call<'a> {
    state: &'a Arc<AppState>,
    function: &'a FunctionHandle,
    /// The request head; its headers were moved out to go upstream.
    parts: &'a Parts,
    target: &'a Target,
    bound: &'a Bound,
    key: Option<CallKey>,
    started: Instant,
    /// Cache mode had nothing for the call.
    cache_miss: bool,
}

impl Call<'_> {
    /// Serves a stored outcome last recorded `age` ago; a stale one that
    /// stands in for a failure says which in `x-cacheow-error`.
    async fn replay(
        &self,
        outcome: &StoredOutcome,
        source: Source,
        age: Duration,
        stood_in_for: Option<StoodInFor>,
    ) -> Reply {
        let prepared = outcome.prepared(prepare);
        let stamp = |response: &mut Response<ProxyBody>| {
            stamp_age(response, source, age);
            if let Some(failure) = &stood_in_for {
                response
                    .headers_mut()
                    .insert(headers::ERROR, failure.header());
            }
        };
        let outcome_id = Some(outcome.outcome().id);
        match &prepared.reply {
            Prepared::Response {
                status,
                headers,
                body,
                duration,
            } => {
                if replay_duration(self.function) {
                    let speed = replay_speed(self.function);
                    tokio::time::sleep(crate::replay::scaled_wait(*duration, speed)).await;
                }
                let mut response =
                    self.respond(*status, headers, ProxyBody::full(body.clone()), source);
                stamp(&mut response);
                self.finish_replay(
                    source,
                    outcome_id,
                    Some(status.as_u16()),
                    None,
                    &stood_in_for,
                );
                Ok(response)
            }
            Prepared::Stream {
                status,
                headers,
                chunks,
                broken,
            } => {
                let speed = replay_speed(self.function);
                let body = ProxyBody::replay(chunks.clone(), speed, broken.clone());
                let mut response = self.respond(*status, headers, body, source);
                stamp(&mut response);
                self.finish_replay(
                    source,
                    outcome_id,
                    Some(status.as_u16()),
                    broken.clone(),
                    &stood_in_for,
                );
                Ok(response)
            }
            Prepared::Failure {
                kind,
                message,
                duration,
            } => {
                if *kind == ErrorKind::Timeout {
                    tokio::time::sleep(*duration).await;
                }
                self.fail(
                    ProxyError::new(*kind, message.as_str()),
                    source,
                    outcome_id,
                    None,
                )
            }
            Prepared::Invalid(reason) => self.fail(
                ProxyError::new(Kind::InvalidOutcome, reason.as_str()),
                source,
                outcome_id,
                None,
            ),
        }
    }

    fn respond(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        body: ProxyBody,
        source: Source,
    ) -> Response<ProxyBody> {
        // Internal: a stored length stands beside an empty body only, and
        // is true only for the HEAD (or 304) reply it was recorded with.
        let keep_length = self.parts.method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
        // Internal: room for the two headers `mark` adds and the `Age` and
        // `x-cacheow-error` a replay may carry, so the map is allocated
        // once per reply.
        let mut copied = http::HeaderMap::with_capacity(headers.len() + 4);
        for (name, value) in headers {
            if keep_length || name != header::CONTENT_LENGTH {
                copied.append(name, value.clone());
            }
        }
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = copied;
        self.mark(&mut response, source);
        response
    }

    /// Calls upstream, streams the response to the client as it arrives and
    /// records it once it ends.
    async fn upstream(&self, body: Bytes, headers: http::HeaderMap, mut plan: Plan) -> Reply {
        let request_record = self.request_record(body.clone(), headers.clone());
        let response = match self.send(ProxyBody::full(body), headers).await {
            Ok(response) => response,
            Err(failure) => {
                self.function.note_upstream(true);
                return self.record_failure(failure, request_record, plan).await;
            }
        };
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if parts.status == StatusCode::LOOP_DETECTED
            && parts
                .headers
                .get(headers::ERROR)
                .is_some_and(|e| e == "loop_detected")
        {
            // Internal: a cacheow refused the request as a loop; its
            // refusal says nothing about the upstream, so it is not kept.
            self.finish(
                Source::Upstream,
                None,
                Some(parts.status.as_u16()),
                Some(Kind::LoopDetected.code().into()),
                Some(Unrecorded::Loop),
            );
            let body = ProxyBody::Chain {
                head: None,
                rest: incoming,
            };
            return Ok(Response::from_parts(parts, body));
        }
        let failed = self.function.is_error_status(parts.status.as_u16());
        self.function.note_upstream(failed);
        if plan.unrecorded.is_some() {
            self.finish(
                Source::Upstream,
                None,
                Some(parts.status.as_u16()),
                None,
                plan.unrecorded,
            );
            let body = ProxyBody::Chain {
                head: None,
                rest: incoming,
            };
            let mut response = Response::from_parts(parts, body);
            self.mark(&mut response, Source::Upstream);
            return Ok(response);
        }
        let head = Head {
            status: parts.status,
            headers: self.state.config.redaction.response_headers(&parts.headers),
            elapsed: self.started.elapsed(),
            request: request_record,
        };
        if failed && let Some(stale) = plan.fallback.take() {
            return self.stale_for_status(incoming, head, plan, &stale).await;
        }
        let sized = parts.headers.contains_key(header::CONTENT_LENGTH);
        if self.state.config.durable && sized {
            return self.upstream_durable(parts, incoming, head, plan).await;
        }
        let function = self.function.clone();
        let key = self.key;
        let started = self.started;
        let cache_miss = self.cache_miss;
        let status = parts.status.as_u16();
        let cap = self.state.config.max_body_bytes;
        let live = plan.lead.as_ref().map(|lead| {
            let requires =
                request_requirements(&head.request.headers, parts.status, &parts.headers);
            let live = Live::new(parts.status, head.headers.clone(), requires, cap);
            lead.share_live(live.clone());
            live
        });
        let body = ProxyBody::tee(
            incoming,
            cap,
            self.state.config.upstream_timeout,
            live,
            move |captured| {
                let recorded = record_captured(&function, key, head, captured);
                plan.land(recorded.outcome_id);
                function.finish(Finished {
                    cache_miss,
                    outcome_id: recorded.outcome_id,
                    status: Some(status),
                    error: recorded.error,
                    unrecorded: recorded.unrecorded,
                    ..Finished::of(key, Source::Upstream, started.elapsed())
                });
            },
        );
        let mut response = Response::from_parts(parts, body);
        self.mark(&mut response, Source::Upstream);
        Ok(response)
    }

    /// Durable mode: the outcome is committed before the reply is sent.
    /// (Streams without a length still flow live, committed at their end.)
    async fn upstream_durable(
        &self,
        parts: http::response::Parts,
        mut incoming: Incoming,
        head: Head,
        mut plan: Plan,
    ) -> Reply {
        let cap = self.state.config.max_body_bytes;
        let status = parts.status.as_u16();
        let mut buffer = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "upstream body broke off");
                    let chunks = vec![(head.elapsed, buffer.freeze())];
                    let captured = Captured::Broken {
                        chunks,
                        error: e.to_string(),
                    };
                    // Internal: the client gets a reset, not an answer, so
                    // there is no reply to hold until the write commits.
                    let recorded = record_captured(self.function, self.key, head, captured);
                    plan.land(recorded.outcome_id);
                    self.finish(
                        Source::Upstream,
                        recorded.outcome_id,
                        Some(status),
                        recorded.error,
                        None,
                    );
                    return Err(AbortConnection);
                }
            };
            if buffer.len() + data.len() > cap {
                buffer.extend_from_slice(&data);
                self.finish(
                    Source::Upstream,
                    None,
                    Some(status),
                    None,
                    Some(Unrecorded::Oversize),
                );
                let body = ProxyBody::Chain {
                    head: Some(buffer.freeze()),
                    rest: incoming,
                };
                let mut response = Response::from_parts(parts, body);
                self.mark(&mut response, Source::Upstream);
                return Ok(response);
            }
            buffer.extend_from_slice(&data);
        }
        let bytes = buffer.freeze();
        let chunks = [(head.elapsed, bytes.clone())];
        let fingerprint = response_fingerprint(head.status, &head.headers, &chunks, None);
        let recording = self.function.record_with(self.key, &fingerprint, || {
            response_outcome(
                head.status,
                &head.headers,
                &chunks,
                Ending::Complete,
                head.elapsed,
                head.request.to_json(),
            )
        });
        let outcome_id = recording.outcome_id;
        let is_new = recording.is_new;
        let mut mirror_lags = false;
        match recording.persisted().await {
            Ok(()) => {}
            Err(cacheow_storage::WriteError::MirrorLagging { reason }) => {
                tracing::warn!(function = %self.function.id(), %reason, "durable outcome committed; its JSON file lags");
                mirror_lags = true;
            }
            Err(e) if !is_new => {
                tracing::warn!(function = %self.function.id(), error = %e, "durable count update failed; the outcome itself was stored before");
            }
            Err(e) => {
                // Internal: nothing was stored, so the waiting calls go on
                // their own rather than replay it.
                plan.land(None);
                return Ok(self.unstored(status, &e));
            }
        }
        plan.land(Some(outcome_id));
        self.finish(Source::Upstream, Some(outcome_id), Some(status), None, None);
        let mut response = Response::from_parts(parts, ProxyBody::full(bytes));
        self.mark(&mut response, Source::Upstream);
        if mirror_lags {
            response
                .headers_mut()
                .insert(headers::MIRROR, HeaderValue::from_static("lagging"));
        }
        Ok(response)
    }

    /// The 507 for a durable call whose new outcome could not be stored:
    /// --durable promises that an answer means a stored outcome.
    fn unstored(&self, status: u16, error: &cacheow_storage::WriteError) -> Response<ProxyBody> {
        let kind = Kind::PersistFailed;
        self.finish(
            Source::Upstream,
            None,
            Some(StatusCode::INSUFFICIENT_STORAGE.as_u16()),
            Some(kind.code().into()),
            None,
        );
        ProxyError::new(
            kind,
            format!(
                "the upstream answered {status}, but --durable could not store the outcome: {error}"
            ),
        )
        .of_call(self.function.id(), Source::Upstream)
        .refuse()
    }

    /// Forwards a call that cannot be recorded (request body over the cap).
    async fn pass_through(&self, head: Bytes, rest: Incoming, headers: http::HeaderMap) -> Reply {
        let lent = Lent::new(rest);
        let body = ProxyBody::Lent {
            head: Some(head),
            rest: lent.clone(),
        };
        match self.send(body, headers).await {
            Ok(response) => {
                let (mut parts, incoming) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                self.finish(
                    Source::Upstream,
                    None,
                    Some(parts.status.as_u16()),
                    None,
                    Some(Unrecorded::RequestOversize),
                );
                let body = ProxyBody::Chain {
                    head: None,
                    rest: incoming,
                };
                let mut response = Response::from_parts(parts, body);
                self.mark(&mut response, Source::Upstream);
                Ok(response)
            }
            Err(failure) => {
                // Internal: counted (with its duration) before the drain,
                // which may take up to --body-timeout.
                let reply = self.fail(
                    ProxyError::new(failure.kind, failure.message),
                    Source::Upstream,
                    None,
                    Some(Unrecorded::RequestOversize),
                );
                lent.drain(DRAIN_LIMIT, self.state.config.body_timeout)
                    .await;
                reply
            }
        }
    }

    /// Sends the call upstream: over this connection's bound upstream
    /// connection for plain http from an HTTP/1 client (whose requests come
    /// one at a time), else through the pooled client.
    async fn send(
        &self,
        body: ProxyBody,
        headers: http::HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let bound = self.target.scheme == "http" && self.parts.version <= http::Version::HTTP_11;
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.upstream_uri(bound)?;
        *request.headers_mut() = headers;
        let headers = request.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.target.authority) {
            headers.insert(header::HOST, host);
        }
        headers.append(header::VIA, self.target.via.clone());
        let timeout = self.state.config.upstream_timeout;
        if bound {
            self.bound
                .send(&self.target.authority, request, timeout)
                .await
        } else {
            upstream::send(&self.state.client, request, timeout).await
        }
    }

    /// The request target sent upstream. A bound connection talks to the
    /// origin itself, so it is origin-form, the client's own when the path is
    /// unchanged; the pooled client takes the absolute URL.
    fn upstream_uri(&self, bound: bool) -> Result<Uri, UpstreamFailure> {
        let path_and_query = self.parts.uri.path_and_query();
        let uri = match path_and_query {
            Some(own) if bound && own.path() == self.target.path => return Ok(own.clone().into()),
            _ if bound => match &self.target.query {
                Some(query) => format!("{}?{query}", self.target.path),
                None => self.target.path.clone(),
            },
            _ => self.target.url(),
        };
        Uri::try_from(uri).map_err(|e| UpstreamFailure {
            kind: ErrorKind::ProtocolError,
            message: format!("cannot build the upstream URL: {e}"),
            duration: Duration::ZERO,
        })
    }

    /// Records a failed upstream call (unless asked not to) and answers
    /// it: with the stale fallback when there is one, else as the failure.
    async fn record_failure(
        &self,
        failure: UpstreamFailure,
        request_record: RequestRecord,
        mut plan: Plan,
    ) -> Reply {
        let outcome_id = plan.unrecorded.is_none().then(|| {
            let mut outcome = NewOutcome::exception(failure.kind.as_str(), failure.message.clone());
            outcome.duration_ms = failure.duration.as_secs_f64() * 1000.0;
            outcome.request = Some(request_record.to_json());
            self.function.record(self.key, outcome).outcome_id
        });
        plan.land(outcome_id);
        if let Some(stale) = plan.fallback.take() {
            tracing::info!(function = %self.function.id(), kind = failure.kind.as_str(), message = %failure.message, "the upstream call failed; serving the last good outcome (stale_if_error)");
            let failure = StoodInFor::Failure(HeaderValue::from_static(failure.kind.as_str()));
            return self
                .replay(&stale, Source::Stale, stale.age(), Some(failure))
                .await;
        }
        self.fail(
            ProxyError::new(failure.kind, failure.message),
            Source::Upstream,
            outcome_id,
            plan.unrecorded,
        )
    }

    /// An upstream answer with an error status when a stale outcome may
    /// answer instead: the answer is read and recorded, the stale one sent.
    async fn stale_for_status(
        &self,
        incoming: Incoming,
        head: Head,
        mut plan: Plan,
        stale: &StoredOutcome,
    ) -> Reply {
        let status = head.status.as_u16();
        let captured = read_whole(
            incoming,
            self.state.config.max_body_bytes,
            self.state.config.upstream_timeout,
        )
        .await;
        let recorded = record_captured(self.function, self.key, head, captured);
        plan.land(recorded.outcome_id);
        tracing::info!(function = %self.function.id(), status, "the upstream answered with an error status; serving the last good outcome (stale_if_error)");
        let failure = HeaderValue::from_str(&format!("status_{status}"))
            .expect("a status code makes a valid header value");
        self.replay(
            stale,
            Source::Stale,
            stale.age(),
            Some(StoodInFor::Failure(failure)),
        )
        .await
    }

    /// Waits for the identical call in flight: follows its live answer,
    /// or replays what it recorded. `None` when it left nothing to replay
    /// or took longer than the upstream timeout; this call then goes alone.
    async fn follow(
        &self,
        flight: Follow,
        fallback: Option<Arc<StoredOutcome>>,
        filter: &RequestFilter<&http::HeaderMap>,
    ) -> Option<Reply> {
        // Internal: a lead may wait the upstream timeout for the head and
        // again for the body before it lands.
        let patience = self.state.config.upstream_timeout.saturating_mul(2);
        match flight.wait::<Live>(patience).await? {
            Waited::Live(live) => {
                if !satisfies(live.requires(), filter.headers) {
                    return None;
                }
                let following = live.follow(self.state.config.upstream_timeout)?;
                let mut response = Response::new(ProxyBody::Follow(following));
                *response.status_mut() = live.status;
                *response.headers_mut() = live.headers.clone();
                self.mark(&mut response, Source::Coalesced);
                self.finish(
                    Source::Coalesced,
                    None,
                    Some(live.status.as_u16()),
                    None,
                    None,
                );
                Some(Ok(response))
            }
            Waited::Landed(Landing::Recorded(id)) => {
                let outcome = self.function.outcome(&id).ok().flatten()?;
                if !filter.accepts(&outcome, Source::Cache) {
                    return None;
                }
                if let Some(stale) = fallback
                    && let Some(failure) = self.failure_of(&outcome).map(StoodInFor::SharedFailure)
                {
                    return Some(
                        self.replay(&stale, Source::Stale, stale.age(), Some(failure))
                            .await,
                    );
                }
                Some(
                    self.replay(&outcome, Source::Coalesced, outcome.age(), None)
                        .await,
                )
            }
            Waited::Landed(Landing::Unrecorded) => None,
        }
    }

    /// What `x-cacheow-error` says of a recorded outcome that counts as an
    /// upstream failure; `None` for a good one.
    fn failure_of(&self, outcome: &StoredOutcome) -> Option<HeaderValue> {
        let stored = outcome.outcome();
        let codec = self.function.codec();
        if codec.failed(stored) {
            let kind = stored.exception_type.as_deref().unwrap_or("exception");
            return HeaderValue::from_str(kind).ok();
        }
        let status = codec.status(stored)?;
        self.function
            .is_error_status(status)
            .then(|| HeaderValue::from_str(&format!("status_{status}")).ok())
            .flatten()
    }

    /// Answers a call the engine refused, and counts it.
    fn refused(&self, refusal: &Refusal) -> Reply {
        if self.state.config.offline && matches!(refusal, Refusal::NotCached { .. }) {
            return self.offline_miss();
        }
        let kind = match refusal {
            Refusal::NoMockOutcome(_) => Kind::NoMockOutcome,
            Refusal::NotCached { .. } => Kind::NotCached,
            Refusal::Guarded {
                guard: Guard::BudgetExceeded,
                ..
            } => Kind::BudgetExceeded,
            Refusal::Guarded {
                guard: Guard::CircuitOpen,
                ..
            } => Kind::CircuitOpen,
        };
        let source = refusal.source();
        self.function.finish(Finished {
            cache_miss: self.cache_miss || matches!(refusal, Refusal::NotCached { .. }),
            error: Some(kind.code().into()),
            guard: refusal.guard(),
            ..Finished::of(self.key, source, self.started.elapsed())
        });
        let mut error =
            ProxyError::new(kind, refusal.to_string()).of_call(self.function.id(), source);
        if let Refusal::Guarded { retry_after, .. } = refusal {
            error = error.retry_after(*retry_after);
        }
        error.respond()
    }

    /// The 504 of `--offline` for a call with nothing to replay, saying
    /// which call it was and how to record it.
    fn offline_miss(&self) -> Reply {
        let kind = Kind::OfflineMiss;
        self.function.finish(Finished {
            cache_miss: true,
            error: Some(kind.code().into()),
            ..Finished::of(self.key, Source::Cache, self.started.elapsed())
        });
        let call = match &self.key {
            Some(key) => format!("call key {key}"),
            None => "no call key: its request body is over --max-body-bytes".to_owned(),
        };
        let message = format!(
            "cacheow runs --offline and has no replayable outcome for this call of function {} ({call}); record it by making the call once with cacheow running without --offline (in default or cache mode)",
            self.function.id()
        );
        let mut error = ProxyError::new(kind, message).of_call(self.function.id(), Source::Cache);
        if let Some(key) = &self.key {
            error = error.with_call_key(key);
        }
        error.respond()
    }

    /// Refreshes a stale outcome off the request path
    /// (`stale_while_revalidate`); calls that arrive meanwhile past the
    /// revalidate window wait for it through `lead`.
    fn refresh_in_background(&self, lead: Lead, body: Bytes, headers: http::HeaderMap) {
        let refresh = Refresh {
            state: self.state.clone(),
            function: self.function.clone(),
            method: self.parts.method.clone(),
            target: self.target.clone(),
            key: self.key,
            record: self.request_record(body.clone(), headers.clone()),
            headers,
            body,
        };
        tokio::spawn(refresh.run(lead));
    }

    /// Counts a call that ended in `error` (from `source`) and answers it.
    fn fail(
        &self,
        error: ProxyError,
        source: Source,
        outcome_id: Option<cacheow_engine::OutcomeId>,
        unrecorded: Option<Unrecorded>,
    ) -> Reply {
        self.finish(
            source,
            outcome_id,
            None,
            Some(error.code().into()),
            unrecorded,
        );
        error.of_call(self.function.id(), source).respond()
    }

    fn request_record(&self, body: Bytes, headers: http::HeaderMap) -> RequestRecord {
        RequestRecord {
            method: self.parts.method.clone(),
            url: self.target.url(),
            headers,
            body,
            redaction: self.state.config.redaction.clone(),
        }
    }

    fn mark(&self, response: &mut Response<ProxyBody>, source: Source) {
        let headers = response.headers_mut();
        headers.insert(headers::SOURCE, HeaderValue::from_static(source.as_str()));
        let id = HeaderValue::from_bytes(&self.function.id().hex())
            .expect("a hex id is a valid header value");
        headers.insert(headers::FUNCTION, id);
    }

    /// Counts a replay; a stale one counts what it stood in for: a failed
    /// upstream call (as an upstream call and its error), or a guard.
    fn finish_replay(
        &self,
        source: Source,
        outcome_id: Option<cacheow_engine::OutcomeId>,
        status: Option<u16>,
        error: Option<String>,
        stood_in_for: &Option<StoodInFor>,
    ) {
        let mut finished = Finished {
            cache_miss: self.cache_miss,
            outcome_id,
            status,
            error,
            ..Finished::of(self.key, source, self.started.elapsed())
        };
        match stood_in_for {
            Some(StoodInFor::Failure(failure)) => {
                finished.upstream_failed = true;
                finished.error = failure.to_str().ok().map(str::to_owned);
            }
            Some(StoodInFor::SharedFailure(failure)) => {
                finished.error = failure.to_str().ok().map(str::to_owned);
            }
            Some(StoodInFor::Guard(guard)) => finished.guard = Some(*guard),
            None => {}
        }
        self.function.finish(finished);
    }

    fn finish(
        &self,
        source: Source,
        outcome_id: Option<cacheow_engine::OutcomeId>,
        status: Option<u16>,
        error: Option<String>,
        unrecorded: Option<Unrecorded>,
    ) {
        self.function.finish(Finished {
            cache_miss: self.cache_miss,
            outcome_id,
            status,
            error,
            unrecorded,
            ..Finished::of(self.key, source, self.started.elapsed())
        });
    }
}

/// What a stale reply stands in for, named in its `x-cacheow-error`.
enum StoodInFor {
    /// This call's upstream call failed (`connection_refused`, `status_503`).
    Failure(HeaderValue),
    /// The identical call it waited for failed.
    SharedFailure(HeaderValue),
    /// A guard kept the call from the upstream.
    Guard(Guard),
}

impl StoodInFor {
    fn header(&self) -> HeaderValue {
        match self {
            StoodInFor::Failure(failure) | StoodInFor::SharedFailure(failure) => failure.clone(),
            StoodInFor::Guard(guard) => HeaderValue::from_static(guard.code()),
        }
    }
}

/// Sets `Age` (RFC 9111 §5.1) on a replay from the store: the age the
/// upstream gave it, if any, plus the time since it was recorded.
fn stamp_age(response: &mut Response<ProxyBody>, source: Source, resident: Duration) {
    if !matches!(source, Source::Cache | Source::Stale | Source::Coalesced) {
        return;
    }
    let headers = response.headers_mut();
    let recorded = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let age = recorded.saturating_add(resident.as_secs());
    headers.insert(header::AGE, HeaderValue::from(age));
}

/// A whole upstream body read into chunks, as a tee would have captured
/// it, within `cap` bytes and `within` time.
async fn read_whole(mut incoming: Incoming, cap: usize, within: Duration) -> Captured {
    let started = Instant::now();
    let mut chunks = Vec::new();
    let mut size = 0;
    let read = async {
        while let Some(frame) = incoming.frame().await {
            match frame {
                Ok(frame) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    size += data.len();
                    if size > cap {
                        return Captured::Oversize;
                    }
                    chunks.push((started.elapsed(), data));
                }
                Err(e) => {
                    return Captured::Broken {
                        chunks: std::mem::take(&mut chunks),
                        error: e.to_string(),
                    };
                }
            }
        }
        Captured::Complete(std::mem::take(&mut chunks))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Captured::ClientGone)
}

/// A background refresh of one call, owning what it needs.
struct Refresh {
    state: Arc<AppState>,
    function: FunctionHandle,
    method: Method,
    target: Target,
    key: Option<CallKey>,
    record: RequestRecord,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Refresh {
    async fn run(self, lead: Lead) {
        let started = Instant::now();
        let finished = |outcome_id, status, error| Finished {
            outcome_id,
            status,
            error,
            refresh: true,
            ..Finished::of(self.key, Source::Upstream, started.elapsed())
        };
        let sent = match Uri::try_from(self.target.url()) {
            Ok(uri) => {
                let mut request = Request::new(ProxyBody::full(self.body.clone()));
                *request.method_mut() = self.method.clone();
                *request.uri_mut() = uri;
                *request.headers_mut() = self.headers.clone();
                if let Ok(host) = HeaderValue::from_str(&self.target.authority) {
                    request.headers_mut().insert(header::HOST, host);
                }
                request
                    .headers_mut()
                    .append(header::VIA, self.target.via.clone());
                upstream::send(
                    &self.state.client,
                    request,
                    self.state.config.upstream_timeout,
                )
                .await
            }
            Err(e) => Err(UpstreamFailure {
                kind: ErrorKind::ProtocolError,
                message: format!("cannot build the upstream URL: {e}"),
                duration: Duration::ZERO,
            }),
        };
        let response = match sent {
            Ok(response) => response,
            Err(failure) => {
                self.function.note_upstream(true);
                self.failed(lead, failure.kind.as_str(), None, finished);
                return;
            }
        };
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let status = parts.status.as_u16();
        let failed = self.function.is_error_status(status);
        self.function.note_upstream(failed);
        if failed {
            self.failed(lead, &format!("status_{status}"), Some(status), finished);
            return;
        }
        let elapsed = started.elapsed();
        let captured = read_whole(
            incoming,
            self.state.config.max_body_bytes,
            self.state.config.upstream_timeout,
        )
        .await;
        if let Captured::Broken { .. } = captured {
            let kind = ErrorKind::ConnectionReset.as_str();
            self.failed(lead, kind, Some(status), finished);
            return;
        }
        let head = Head {
            status: parts.status,
            headers: self.state.config.redaction.response_headers(&parts.headers),
            elapsed,
            request: self.record,
        };
        let recorded = record_captured(&self.function, self.key, head, captured);
        lead.land(recorded.outcome_id);
        self.function.finish(Finished {
            unrecorded: recorded.unrecorded,
            ..finished(recorded.outcome_id, Some(status), recorded.error)
        });
    }

    /// A refresh that failed is not recorded: the stale outcome it was to
    /// replace stays the answer (RFC 5861), rather than a failure becoming
    /// the fresh one. The calls waiting for it go on their own.
    fn failed(
        &self,
        lead: Lead,
        error: &str,
        status: Option<u16>,
        finished: impl FnOnce(
            Option<cacheow_engine::OutcomeId>,
            Option<u16>,
            Option<String>,
        ) -> Finished,
    ) {
        tracing::info!(function = %self.function.id(), error, "a background refresh failed; the stale outcome stays");
        lead.land(None);
        self.function.finish(Finished {
            unrecorded: Some(Unrecorded::RefreshFailed),
            ..finished(None, status, Some(error.to_owned()))
        });
    }
}
