//! What an HTTP function's outcomes and settings mean to the control API:
//! the codec the proxy registers with the engine for `FunctionKind::Http`,
//! so the API checks a manual reply, previews a recorded one and validates
//! a replay setting without knowing HTTP itself.

use cacheow_engine::policy::CacheIf;
use cacheow_engine::{
    CodecError, Function, NewOutcome, Outcome, OutcomeCodec, OutcomeType, Preview, json_preview,
};
use serde_json::{Map, Value, json};

use crate::error::ErrorKind;
use crate::outcome_http::{body_preview, headers_from_json, headers_to_json, response_parts};
use crate::replay;

/// How many bytes of a body a preview decodes as text.
const PREVIEW_BYTES: usize = 600;

/// The codec of HTTP functions.
pub(crate) struct HttpCodec;

impl OutcomeCodec for HttpCodec {
    fn normalise(
        &self,
        _function: &Function,
        mut outcome: NewOutcome,
    ) -> Result<NewOutcome, CodecError> {
        match outcome.outcome_type {
            OutcomeType::Exception => {
                let kind = outcome.exception_type.as_deref().unwrap_or("");
                kind.parse::<ErrorKind>()
                    .map_err(|reason| CodecError::new("exception_type", reason))?;
            }
            _ => outcome.value = response_value(&outcome.value)?,
        }
        Ok(outcome)
    }

    fn preview(&self, outcome: &Outcome) -> Preview {
        if outcome.outcome_type == OutcomeType::Exception {
            return Preview::of_exception(outcome);
        }
        let Some(status) = outcome.value.get("status") else {
            return json_preview(outcome);
        };
        let status = status.as_u64().and_then(|s| u16::try_from(s).ok());
        // Internal: made when a new outcome is recorded, on the request
        // path, so it reads the start of the body and never builds it.
        let mut text = Vec::with_capacity(PREVIEW_BYTES);
        let size = match outcome.value.get("chunks").and_then(Value::as_array) {
            Some(chunks) => chunks
                .iter()
                .map(|c| {
                    let data = c.get("data").unwrap_or(&Value::Null);
                    body_preview(data, &mut text, PREVIEW_BYTES)
                })
                .sum(),
            None => {
                let body = outcome.value.get("body").unwrap_or(&Value::Null);
                body_preview(body, &mut text, PREVIEW_BYTES)
            }
        };
        Preview::new(status, &String::from_utf8_lossy(&text), size)
    }

    fn describe(&self, function: &Function) -> Map<String, Value> {
        Map::from_iter([("http".to_owned(), http_identity(&function.name))])
    }

    fn check_setting(&self, key: &str, value: &Value) -> Option<Result<(), String>> {
        let checked = match key {
            replay::SPEED => {
                if value.is_null() || value.as_f64().is_some_and(replay::valid_speed) {
                    Ok(())
                } else {
                    Err(format!(
                        "`replay_speed` must be a number from 0 to 100 (1 = as recorded, 0 = at once), got {value}"
                    ))
                }
            }
            replay::DURATION => {
                if value.is_null() || value.is_boolean() {
                    Ok(())
                } else {
                    Err(format!(
                        "`replay_duration` must be true (replies take their recorded time) or false (instant), got {value}"
                    ))
                }
            }
            "ignore_query" | "ignore_body_fields" | "include_headers" => Err(format!(
                "`{key}` is a call-key rule; set it for the route in the config file"
            )),
            _ => return None,
        };
        Some(checked)
    }

    fn setting_names(&self) -> &[&str] {
        &[replay::SPEED, replay::DURATION]
    }

    /// Any response, and streams that ended cleanly: a transport failure
    /// says the upstream was unreachable, not what it answers.
    fn default_cache_if(&self) -> CacheIf {
        CacheIf::Results
    }

    fn status(&self, outcome: &Outcome) -> Option<u16> {
        let status = outcome.value.get("status")?.as_u64()?;
        u16::try_from(status).ok()
    }
}

/// Checks `{"status", "headers", "body"}` and normalises its headers to
/// `[[name, value], …]`.
fn response_value(value: &Value) -> Result<Value, CodecError> {
    if !value.is_object() {
        return Err(CodecError::new(
            "value",
            "`value` must be an object like {\"status\": 200, \"headers\": {}, \"body\": …}",
        ));
    }
    response_parts(value).map_err(|reason| {
        let field = if reason.contains("status") {
            "value.status"
        } else if reason.contains("header") {
            "value.headers"
        } else {
            "value.body"
        };
        CodecError::new(field, reason)
    })?;
    let headers = headers_from_json(value.get("headers").unwrap_or(&Value::Null))
        .map_err(|reason| CodecError::new("value.headers", reason))?;
    Ok(json!({
        "status": value["status"],
        "headers": headers_to_json(&headers, &[]),
        "body": value.get("body").cloned().unwrap_or(Value::Null),
    }))
}

/// `METHOD scheme://host/route` split into its parts.
fn http_identity(name: &str) -> Value {
    let Some((method, url)) = name.split_once(' ') else {
        return Value::Null;
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Value::Null;
    };
    let (host, route) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    json!({"method": method, "scheme": scheme, "host": host, "route": route})
}

#[cfg(test)]
mod tests {
    use cacheow_storage::test_support::{sample_function, sample_outcome};

    use super::*;

    #[test]
    fn a_preview_shows_the_status_and_the_start_of_the_body() {
        let function = sample_function("users");
        let mut outcome = sample_outcome(&function, "k", "");
        outcome.value = json!({"status": 201, "headers": [], "body": "x".repeat(1000)});
        let preview = HttpCodec.preview(&outcome);
        assert_eq!(preview.status, Some(201));
        assert_eq!(preview.size, 1000);
        assert_eq!(preview.text.len(), Preview::MAX_CHARS);
        assert_eq!(
            HttpCodec.describe(&function)["http"],
            json!({"method": "GET", "scheme": "http", "host": "api.test", "route": "/users"})
        );
    }

    #[test]
    fn a_preview_reads_every_body_form_without_building_it() {
        let function = sample_function("users");
        let mut outcome = sample_outcome(&function, "k", "");
        let object = json!({"a": "y".repeat(700)});
        let cases = [
            (json!({"base64": "aGVsbG8gd29ybGQ="}), "hello world", 11),
            (json!({"base64": "AAEC"}), "\u{0}\u{1}\u{2}", 3),
            (
                object.clone(),
                &object.to_string()[..200],
                object.to_string().len(),
            ),
            // A hand edit that is not base64: no text, and never a panic.
            (json!({"base64": "xé".repeat(300)}), "", 675),
        ];
        for (body, text, size) in cases {
            outcome.value = json!({"status": 200, "headers": [], "body": body});
            let preview = HttpCodec.preview(&outcome);
            assert_eq!((preview.text.as_str(), preview.size), (text, size as u64));
        }
        outcome.value = json!({"status": 200, "headers": [], "chunks": [
            {"offset_ms": 0, "data": "data: 1\n\n"},
            {"offset_ms": 5, "data": {"base64": "ZGF0YTogMgoK"}},
        ]});
        let preview = HttpCodec.preview(&outcome);
        assert_eq!(
            (preview.text.as_str(), preview.size),
            ("data: 1\n\ndata: 2\n\n", 18)
        );
    }

    #[test]
    fn a_manual_reply_with_a_1xx_status_names_the_status_field() {
        let function = sample_function("users");
        let refusal = HttpCodec
            .normalise(&function, NewOutcome::returned(json!({"status": 101})))
            .unwrap_err();
        assert_eq!(refusal.field, "value.status");
        let refusal = HttpCodec
            .normalise(&function, NewOutcome::exception("gone_fishing", "x"))
            .unwrap_err();
        assert_eq!(refusal.field, "exception_type");
    }

    #[test]
    fn settings_are_checked_and_call_key_rules_pointed_to_the_config_file() {
        assert_eq!(
            HttpCodec.check_setting("replay_speed", &json!(2)),
            Some(Ok(()))
        );
        assert!(matches!(
            HttpCodec.check_setting("replay_speed", &json!(101)),
            Some(Err(_))
        ));
        assert!(matches!(
            HttpCodec.check_setting("ignore_query", &json!([])),
            Some(Err(_))
        ));
        assert_eq!(HttpCodec.check_setting("colour", &json!("red")), None);
    }
}
