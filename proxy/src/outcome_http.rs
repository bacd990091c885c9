//! HTTP responses ↔ stored outcomes: the body encoding of the JSON mirror,
//! and the replay-ready form built once per outcome.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use cacheow_engine::{NewOutcome, Outcome, OutcomeType, json_prefix};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::Chunk;
use crate::error::ErrorKind;
use crate::headers::{REDACTED, VOLATILE_HEADERS};

/// Writes a body in the most readable form that replays byte for byte.
pub(crate) fn body_to_json(bytes: &[u8], content_encoding: Option<&str>) -> Value {
    if let Some(encoding) = content_encoding.filter(|e| !e.eq_ignore_ascii_case("identity")) {
        let mut out = Map::new();
        out.insert("base64".into(), BASE64.encode(bytes).into());
        if let Some(decoded) = decode_content(bytes, encoding) {
            out.insert("decoded".into(), body_to_json(&decoded, None));
        }
        return Value::Object(out);
    }
    if let Ok(value @ (Value::Object(_) | Value::Array(_))) = serde_json::from_slice::<Value>(bytes)
    {
        let ambiguous = value.as_object().is_some_and(|o| o.contains_key("base64"));
        if !ambiguous && serde_json::to_vec(&value).is_ok_and(|compact| compact == bytes) {
            return value;
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({"base64": BASE64.encode(bytes)}),
    }
}

/// Reads a body written by `body_to_json` (or typed into the API / a file).
pub(crate) fn body_from_json(value: &Value) -> Result<Bytes, String> {
    match value {
        Value::Null => Ok(Bytes::new()),
        Value::String(text) => Ok(Bytes::from(text.clone())),
        Value::Object(map) if map.contains_key("base64") => {
            let text = map["base64"].as_str().ok_or("`base64` must be a string")?;
            BASE64
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| format!("`base64` is not valid base64: {e}"))
        }
        other => Ok(Bytes::from(
            serde_json::to_vec(other).expect("JSON values always serialise"),
        )),
    }
}

/// Adds at most `limit - text.len()` bytes of the body stored as `value`
/// to `text` and returns the body's whole size, without building the body:
/// a list preview must cost nothing like the body.
pub(crate) fn body_preview(value: &Value, text: &mut Vec<u8>, limit: usize) -> u64 {
    let room = limit.saturating_sub(text.len());
    match value {
        Value::Null => 0,
        Value::String(body) => {
            text.extend_from_slice(&body.as_bytes()[..body.len().min(room)]);
            body.len() as u64
        }
        Value::Object(map) if map.contains_key("base64") => {
            // Internal: bytes, not a `str` slice: a hand-edited field may
            // hold non-ASCII text, which must not panic a list.
            let encoded = map["base64"].as_str().unwrap_or("").trim_end_matches('=');
            let prefix = &encoded.as_bytes()[..encoded.len().min(room.div_ceil(3) * 4)];
            if let Ok(decoded) = BASE64_LENIENT.decode(prefix) {
                text.extend_from_slice(&decoded[..decoded.len().min(room)]);
            }
            (encoded.len() * 3 / 4) as u64
        }
        other => json_prefix(other, text, limit),
    }
}

/// Base64 without padding requirements, for decoding a prefix.
const BASE64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The readable view of an encoded body is kept up to this size: past it a
/// body is most likely a decompression bomb, and its bytes are kept anyway.
pub(crate) const DECODED_VIEW_LIMIT: u64 = 4 * 1024 * 1024;

/// Inflates a gzip or deflate body for its readable view, reading at most
/// `DECODED_VIEW_LIMIT` bytes so a bomb costs no more memory than that.
fn decode_content(bytes: &[u8], encoding: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let decoder: Box<dyn Read + '_> = match encoding.to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(bytes)),
        _ => return None,
    };
    let mut out = Vec::new();
    decoder
        .take(DECODED_VIEW_LIMIT + 1)
        .read_to_end(&mut out)
        .ok()?;
    if out.len() as u64 > DECODED_VIEW_LIMIT {
        tracing::info!(
            encoded = bytes.len(),
            limit = DECODED_VIEW_LIMIT,
            "encoded body inflates past the limit of its readable view; kept as bytes only"
        );
        return None;
    }
    Some(out)
}

/// Headers as `[[name, value], …]`, optionally redacting secrets.
pub(crate) fn headers_to_json(headers: &HeaderMap, redact: &[String]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let text = if crate::headers::is_secret(name.as_str(), redact) {
                    REDACTED.to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                json!([name.as_str(), text])
            })
            .collect(),
    )
}

/// Reads headers given as `[[name, value], …]` or `{name: value}`.
pub(crate) fn headers_from_json(value: &Value) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &Value| -> Result<(), String> {
        let text = value
            .as_str()
            .ok_or_else(|| format!("header `{name}` must have a string value"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let value = HeaderValue::from_str(text)
            .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
        headers.append(name, value);
        Ok(())
    };
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (name, value) in map {
                add(name, value)?;
            }
        }
        Value::Array(pairs) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => add(name, value)?,
                    _ => return Err("each header must be a [name, value] pair".into()),
                }
            }
        }
        _ => return Err("headers must be an object or a list of [name, value] pairs".into()),
    }
    Ok(headers)
}

/// How a recorded response ended.
pub(crate) enum Ending {
    /// The body arrived whole.
    Complete,
    /// The upstream broke off mid-body; the kind and message of the failure.
    Broken(String, String),
}

/// A recorded response as an outcome to store. A response without a
/// `content-length` (chunked, server-sent events, close-delimited) is a
/// `stream` outcome that keeps each chunk's arrival time; one with a length
/// is a plain `return` outcome.
pub(crate) fn response_outcome(
    status: StatusCode,
    headers: &HeaderMap,
    chunks: &[Chunk],
    ending: Ending,
    duration: Duration,
    request: Value,
) -> NewOutcome {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let streamed = !headers.contains_key(http::header::CONTENT_LENGTH) && !chunks.is_empty();
    let mut stored_headers = headers.clone();
    let body: Vec<u8> = chunks
        .iter()
        .flat_map(|(_, data)| data.iter().copied())
        .collect();
    // Internal: the length is recomputed on replay, so a hand-edited body
    // never disagrees with a stale content-length. A reply without a body
    // (HEAD, 304) keeps it: there is nothing to recompute it from.
    if !body.is_empty() {
        stored_headers.remove(http::header::CONTENT_LENGTH);
    }
    let broken = match &ending {
        Ending::Broken(kind, message) => Some((kind.clone(), message.clone())),
        Ending::Complete => None,
    };
    let mut outcome = if streamed || broken.is_some() {
        let chunk_values: Vec<Value> = chunks
            .iter()
            .map(|(offset, data)| {
                json!({"offset_ms": (offset.as_secs_f64() * 1_000_000.0).round() / 1000.0, "data": body_to_json(data, encoding)})
            })
            .collect();
        let mut outcome = NewOutcome::returned(json!({
            "status": status.as_u16(),
            "headers": headers_to_json(&stored_headers, &[]),
            "chunks": chunk_values,
        }));
        outcome.outcome_type = OutcomeType::Stream;
        if let Some((kind, message)) = &broken {
            outcome.exception_type = Some(kind.clone());
            outcome.exception_message = Some(message.clone());
        }
        outcome
    } else {
        NewOutcome::returned(json!({
            "status": status.as_u16(),
            "headers": headers_to_json(&stored_headers, &[]),
            "body": body_to_json(&body, encoding),
        }))
    };
    outcome.duration_ms = duration.as_secs_f64() * 1000.0;
    outcome.request = Some(request);
    outcome
}

/// Two responses are "the same" when status, body and the non-volatile
/// headers match, so polling one endpoint does not grow the store. Chunk
/// boundaries and timing are left out too: they vary between runs.
pub(crate) fn response_fingerprint(
    status: StatusCode,
    headers: &HeaderMap,
    chunks: &[Chunk],
    broken: Option<&str>,
) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"response\0");
    hasher.update(broken.unwrap_or("").as_bytes()).update(b"\0");
    hasher.update(&status.as_u16().to_le_bytes());
    let mut names: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(n, _)| {
            *n != http::header::CONTENT_LENGTH && !VOLATILE_HEADERS.contains(&n.as_str())
        })
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    names.sort();
    for (name, value) in names {
        hasher
            .update(name.as_bytes())
            .update(b":")
            .update(value)
            .update(b"\n");
    }
    let length: usize = chunks.iter().map(|(_, data)| data.len()).sum();
    hasher.update(&(length as u64).to_le_bytes());
    for (_, data) in chunks {
        hasher.update(data);
    }
    hasher.finalize().as_bytes().to_vec()
}

/// A stored outcome in the form replay needs, built once per outcome: the
/// reply, and what a request must look like for this reply to answer it.
#[derive(Debug)]
pub(crate) struct PreparedOutcome {
    pub(crate) reply: Prepared,
    /// Request headers that must have these values (`None`: be absent).
    pub(crate) requires: Vec<(HeaderName, Option<String>)>,
}

impl PreparedOutcome {
    /// True if a request with `headers` may be answered by this outcome.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        satisfies(&self.requires, headers)
    }
}

/// True when `headers` have the values `requires` names (`None`: absent).
pub(crate) fn satisfies(requires: &[(HeaderName, Option<String>)], headers: &HeaderMap) -> bool {
    requires.iter().all(|(name, expected)| {
        let actual = header_text(headers, name);
        match (expected.as_deref(), actual) {
            // Internal: a secret is stored redacted, so only its presence
            // can be compared.
            (Some(REDACTED), actual) => actual.is_some(),
            (expected, actual) => expected == actual.as_deref(),
        }
    })
}

/// Request headers that make a 304 or 412 answer true only for a request
/// that carries the same condition.
const CONDITIONAL_HEADERS: [HeaderName; 5] = [
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
];

/// All values of `name`, joined as one list.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("").trim())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The request headers a recorded reply depends on, with the values the
/// recorded request had: those its `Vary` names, and for a 304 or 412 the
/// conditions that produced it.
fn requirements(
    outcome: &Outcome,
    status: StatusCode,
    headers: &HeaderMap,
) -> Vec<(HeaderName, Option<String>)> {
    let Some(request) = &outcome.request else {
        return Vec::new();
    };
    let Ok(recorded) = headers_from_json(request.get("headers").unwrap_or(&Value::Null)) else {
        return Vec::new();
    };
    request_requirements(&recorded, status, headers)
}

/// What a request must look like to be answered by the reply with `status`
/// and `headers` that a request with headers `recorded` got: the headers
/// its `Vary` names, and for a 304 or 412 the request's conditions.
pub(crate) fn request_requirements(
    recorded: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
) -> Vec<(HeaderName, Option<String>)> {
    let mut names: Vec<HeaderName> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // Internal: `Vary: *` would forbid every replay; a development
        // proxy replays it rather than never.
        .filter(|name| !name.is_empty() && *name != "*")
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    if matches!(
        status,
        StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED
    ) {
        names.extend(CONDITIONAL_HEADERS);
    }
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let value = header_text(recorded, &name);
            (name, value)
        })
        .collect()
}

/// The reply a stored outcome stands for.
#[derive(Debug)]
pub(crate) enum Prepared {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        /// How long the recorded call took.
        duration: Duration,
    },
    /// Chunks with their offsets; a failure kind if the stream broke off.
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        chunks: Vec<Chunk>,
        broken: Option<String>,
    },
    Failure {
        kind: ErrorKind,
        message: String,
        duration: Duration,
    },
    /// Hand-edited into something that cannot be replayed.
    Invalid(String),
}

pub(crate) fn prepare(outcome: &Outcome) -> PreparedOutcome {
    let reply = prepare_reply(outcome);
    let requires = match &reply {
        Prepared::Response {
            status, headers, ..
        }
        | Prepared::Stream {
            status, headers, ..
        } => requirements(outcome, *status, headers),
        Prepared::Failure { .. } | Prepared::Invalid(_) => Vec::new(),
    };
    PreparedOutcome { reply, requires }
}

fn prepare_reply(outcome: &Outcome) -> Prepared {
    match outcome.outcome_type {
        OutcomeType::Exception => {
            let kind = match outcome.exception_type.as_deref() {
                None => Ok(ErrorKind::ProtocolError),
                Some(kind) => kind.parse::<ErrorKind>(),
            };
            match kind {
                Ok(kind) => Prepared::Failure {
                    kind,
                    message: outcome.exception_message.clone().unwrap_or_default(),
                    duration: crate::replay::recorded_wait(outcome.duration_ms),
                },
                Err(reason) => Prepared::Invalid(format!(
                    "outcome {} cannot be replayed: {reason}",
                    outcome.id
                )),
            }
        }
        OutcomeType::Return => match response_parts(&outcome.value) {
            Ok((status, headers, body)) => Prepared::Response {
                status,
                headers,
                body,
                duration: crate::replay::recorded_wait(outcome.duration_ms),
            },
            Err(reason) => Prepared::Invalid(format!(
                "outcome {} cannot be replayed: {reason}",
                outcome.id
            )),
        },
        OutcomeType::Stream => match stream_parts(&outcome.value) {
            Ok((status, headers, chunks)) => Prepared::Stream {
                status,
                headers,
                chunks,
                broken: outcome.exception_type.clone(),
            },
            Err(reason) => Prepared::Invalid(format!(
                "outcome {} cannot be replayed: {reason}",
                outcome.id
            )),
        },
    }
}

/// Reads `{"status", "headers", "chunks": [{"offset_ms", "data"}]}`.
pub(crate) fn stream_parts(value: &Value) -> Result<(StatusCode, HeaderMap, Vec<Chunk>), String> {
    let (status, mut headers) = head_parts(value)?;
    headers.remove(http::header::CONTENT_LENGTH);
    let items = value
        .get("chunks")
        .and_then(Value::as_array)
        .ok_or("`chunks` must be a list")?;
    let mut chunks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let offset = item
            .get("offset_ms")
            .and_then(Value::as_f64)
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .ok_or_else(|| format!("`chunks[{i}].offset_ms` must be a number ≥ 0"))?;
        let data = body_from_json(item.get("data").unwrap_or(&Value::Null))
            .map_err(|e| format!("`chunks[{i}].data`: {e}"))?;
        chunks.push((crate::replay::recorded_wait(offset), data));
    }
    Ok((status, headers, chunks))
}

/// Reads `{"status", "headers", "body"}`. A `content-length` is kept only
/// beside an empty body (a HEAD or 304 reply's); otherwise the body's own
/// length is sent.
pub(crate) fn response_parts(value: &Value) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let (status, mut headers) = head_parts(value)?;
    let body = body_from_json(value.get("body").unwrap_or(&Value::Null))?;
    if !body.is_empty() {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    Ok((status, headers, body))
}

fn head_parts(value: &Value) -> Result<(StatusCode, HeaderMap), String> {
    let status = value
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or("`status` must be a number from 200 to 599 (a 1xx is not a final reply)")?;
    let mut headers = headers_from_json(value.get("headers").unwrap_or(&Value::Null))?;
    crate::headers::strip_hop_by_hop(&mut headers);
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_roundtrip_in_their_most_readable_form() {
        let cases: [(&[u8], Value); 4] = [
            (
                br#"{"a":1,"b":[true,null]}"#,
                json!({"a": 1, "b": [true, null]}),
            ),
            (br#"{"a": 1}"#, json!("{\"a\": 1}")),
            (b"plain text", json!("plain text")),
            (&[0xff, 0x00, 0x10], json!({"base64": "/wAQ"})),
        ];
        for (bytes, want) in cases {
            let written = body_to_json(bytes, None);
            assert_eq!(written, want);
            assert_eq!(body_from_json(&written).unwrap().as_ref(), bytes);
        }
    }

    #[test]
    fn gzip_bodies_keep_bytes_and_gain_a_readable_view() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(br#"{"hello":"world"}"#).unwrap();
        let gz = encoder.finish().unwrap();
        let written = body_to_json(&gz, Some("gzip"));
        assert_eq!(written["decoded"], json!({"hello": "world"}));
        assert_eq!(body_from_json(&written).unwrap().as_ref(), gz.as_slice());
    }
}
