use base64::Engine as _;
use leptos::callback::UnsyncCallback;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::components::{ErrorNote, OkNote};
use crate::format;

/// The transport failures an HTTP outcome can stand for (DESIGN §3), with
/// what a client sees when one is replayed.
const FAILURE_KINDS: [(&str, &str); 7] = [
    ("connection_refused", "502, as if nothing listened upstream"),
    ("dns_error", "502, as if the host did not resolve"),
    ("connect_timeout", "502, as if the connection never opened"),
    (
        "timeout",
        "504, after the recorded duration if there is one",
    ),
    ("connection_reset", "the client connection is aborted"),
    ("tls_error", "502, as if the TLS handshake failed"),
    ("protocol_error", "502, as if upstream sent garbage"),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyFormat {
    Json,
    Text,
    Base64,
}

/// The form as typed.
#[derive(Clone, Debug, PartialEq)]
struct Draft {
    /// A wrapped Rust function (`sync`, `async`, `stream`), not an HTTP
    /// route: a return value is any JSON, a failure an error of any name.
    rust: bool,
    failure: bool,
    status: String,
    headers: String,
    body_format: BodyFormat,
    body: String,
    failure_kind: String,
    message: String,
    mock_only: bool,
    call_key: String,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            rust: false,
            failure: false,
            status: "200".into(),
            headers: "content-type: application/json".into(),
            body_format: BodyFormat::Json,
            body: "{\"ok\": true}".into(),
            failure_kind: FAILURE_KINDS[0].0.into(),
            message: String::new(),
            mock_only: false,
            call_key: String::new(),
        }
    }
}

impl Draft {
    /// A blank form for an HTTP route (`rust: false`) or a Rust function.
    fn new(rust: bool) -> Self {
        if !rust {
            return Self::default();
        }
        Self {
            rust,
            body: "null".into(),
            failure_kind: String::new(),
            ..Self::default()
        }
    }

    /// The ManualOutcome body of docs/API.md, or which field is wrong.
    fn to_request(&self) -> Result<Value, ApiError> {
        let call_key = match self.call_key.trim() {
            "" => Value::Null,
            key if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Value::String(key.to_ascii_lowercase())
            }
            key => {
                return Err(ApiError::invalid(
                    "call_key",
                    format!("a call key is 64 hex characters, got `{key}`"),
                ));
            }
        };
        if self.failure {
            let message = self.message.trim();
            if self.rust && self.failure_kind.trim().is_empty() {
                return Err(ApiError::invalid(
                    "exception_type",
                    "name the error, e.g. a variant of the function's error type such as `Timeout`",
                ));
            }
            return Ok(json!({
                "outcome_type": "exception",
                "exception_type": self.failure_kind.trim(),
                "exception_message": if message.is_empty() { Value::Null } else { message.into() },
                "is_mock_only": self.mock_only,
                "call_key": call_key,
            }));
        }
        if self.rust {
            let value = serde_json::from_str::<Value>(&self.body).map_err(|e| {
                ApiError::invalid(
                    "value",
                    format!("the value is not valid JSON ({e}); a string needs quotes"),
                )
            })?;
            return Ok(json!({
                "outcome_type": "return",
                "value": value,
                "is_mock_only": self.mock_only,
                "call_key": call_key,
            }));
        }
        let status = self
            .status
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!(
                        "status must be a number from 200 to 599, got `{}`",
                        self.status
                    ),
                )
            })?;
        let mut headers = Vec::new();
        for (n, line) in self.headers.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    headers.push(json!([name.trim(), value.trim()]));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "headers",
                        format!("header line {} is not `name: value`: `{line}`", n + 1),
                    ));
                }
            }
        }
        let body = match self.body_format {
            BodyFormat::Json if self.body.trim().is_empty() => Value::Null,
            BodyFormat::Json => serde_json::from_str(&self.body).map_err(|e| {
                ApiError::invalid(
                    "body",
                    format!("the body is not valid JSON ({e}); choose “text” to send it as typed"),
                )
            })?,
            BodyFormat::Text => Value::String(self.body.clone()),
            BodyFormat::Base64 => {
                let encoded: String = self.body.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&encoded)
                    .map_err(|e| {
                        ApiError::invalid("body", format!("the body is not base64: {e}"))
                    })?;
                json!({ "base64": encoded })
            }
        };
        Ok(json!({
            "outcome_type": "return",
            "value": { "status": status, "headers": headers, "body": body },
            "is_mock_only": self.mock_only,
            "call_key": call_key,
        }))
    }
}

/// Adds an outcome by hand: for an HTTP route a response or a transport
/// failure; for a Rust function a return value or a named error.
#[component]
pub(crate) fn ManualOutcomeForm(
    function_id: String,
    /// A wrapped Rust function rather than an HTTP route.
    rust: bool,
    /// Called with the new outcome's id.
    on_added: UnsyncCallback<String>,
) -> impl IntoView {
    let draft = RwSignal::new(Draft::new(rust));
    let error = RwSignal::new(None::<ApiError>);
    let added = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        added.set(None);
        let body = match draft.with_untracked(Draft::to_request) {
            Ok(body) => body,
            Err(e) => return error.set(Some(e)),
        };
        error.set(None);
        busy.set(true);
        let function_id = function_id.clone();
        spawn_local(async move {
            match api::add_manual_outcome(&function_id, &body).await {
                Ok(outcome_id) => {
                    added.set(Some(format!(
                        "Added outcome {}.",
                        format::short_id(&outcome_id)
                    )));
                    on_added.run(outcome_id);
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let is_failure = move || draft.with(|d| d.failure);
    let set = move |change: &dyn Fn(&mut Draft)| draft.update(|d| change(d));

    view! {
        <section class="card wide" aria-labelledby="manual-h">
            <h2 id="manual-h">"Add an outcome by hand"</h2>
            <form class="manual" on:submit=submit data-testid="manual-form">
                <fieldset class="choice">
                    <legend>"Kind"</legend>
                    <label>
                        <input
                            type="radio"
                            name="manual-kind"
                            id="manual-kind-response"
                            prop:checked=move || !is_failure()
                            on:change=move |_| set(&|d| d.failure = false)
                        />
                        {if rust { "Return value" } else { "Response" }}
                    </label>
                    <label>
                        <input
                            type="radio"
                            name="manual-kind"
                            id="manual-kind-failure"
                            prop:checked=is_failure
                            on:change=move |_| set(&|d| d.failure = true)
                        />
                        {if rust { "Error" } else { "Failure" }}
                    </label>
                </fieldset>
                <Show
                    when=is_failure
                    fallback=move || if rust { view! {
                        <div class="fields">
                            <label class="full">
                                <span>"Value, as JSON (what the function returns; for a stream, the list of items)"</span>
                                <textarea
                                    id="manual-value"
                                    rows="5"
                                    spellcheck="false"
                                    prop:value=move || draft.with(|d| d.body.clone())
                                    on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.body = v.clone()) }
                                ></textarea>
                            </label>
                        </div>
                    }.into_any() } else { view! {
                        <div class="fields">
                            <label>
                                <span>"Status"</span>
                                <input
                                    id="manual-status"
                                    type="number"
                                    min="200"
                                    max="599"
                                    prop:value=move || draft.with(|d| d.status.clone())
                                    on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.status = v.clone()) }
                                />
                            </label>
                            <label class="grow">
                                <span>"Headers, one " <code>"name: value"</code> " a line"</span>
                                <textarea
                                    id="manual-headers"
                                    rows="3"
                                    spellcheck="false"
                                    prop:value=move || draft.with(|d| d.headers.clone())
                                    on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.headers = v.clone()) }
                                ></textarea>
                            </label>
                            <label>
                                <span>"Body is"</span>
                                <select
                                    id="manual-body-format"
                                    on:change=move |ev| {
                                        let format = match event_target_value(&ev).as_str() {
                                            "text" => BodyFormat::Text,
                                            "base64" => BodyFormat::Base64,
                                            _ => BodyFormat::Json,
                                        };
                                        set(&|d| d.body_format = format);
                                    }
                                >
                                    <option value="json" prop:selected=move || draft.with(|d| d.body_format == BodyFormat::Json)>"JSON"</option>
                                    <option value="text" prop:selected=move || draft.with(|d| d.body_format == BodyFormat::Text)>"text"</option>
                                    <option value="base64" prop:selected=move || draft.with(|d| d.body_format == BodyFormat::Base64)>"base64 bytes"</option>
                                </select>
                            </label>
                            <label class="full">
                                <span>"Body"</span>
                                <textarea
                                    id="manual-body"
                                    rows="5"
                                    spellcheck="false"
                                    prop:value=move || draft.with(|d| d.body.clone())
                                    on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.body = v.clone()) }
                                ></textarea>
                            </label>
                        </div>
                    }.into_any() }
                >
                    {if rust { view! {
                    <div class="fields">
                        <label>
                            <span>"Error"</span>
                            <input
                                id="manual-error-type"
                                type="text"
                                spellcheck="false"
                                placeholder="e.g. Timeout"
                                prop:value=move || draft.with(|d| d.failure_kind.clone())
                                on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.failure_kind = v.clone()) }
                            />
                        </label>
                        <label class="grow">
                            <span>"Message or data"</span>
                            <input
                                id="manual-message"
                                type="text"
                                placeholder="e.g. upstream too slow"
                                prop:value=move || draft.with(|d| d.message.clone())
                                on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.message = v.clone()) }
                            />
                        </label>
                        <p class="hint full" data-testid="failure-hint">
                            "Replayed as " <code>"Err"</code> " when the function's error type can be built from it: \
                             a variant named by the error (with the message as its data), the message itself, \
                             or the message read as JSON. The program refuses one it cannot replay."
                        </p>
                    </div>
                    }.into_any() } else { view! {
                    <div class="fields">
                        <label>
                            <span>"Failure"</span>
                            <select
                                id="manual-failure-kind"
                                on:change=move |ev| { let v = event_target_value(&ev); set(&|d| d.failure_kind = v.clone()) }
                            >
                                {FAILURE_KINDS
                                    .map(|(kind, _)| view! {
                                        <option value=kind prop:selected=move || draft.with(|d| d.failure_kind == kind)>{kind}</option>
                                    })}
                            </select>
                        </label>
                        <label class="grow">
                            <span>"Message"</span>
                            <input
                                id="manual-message"
                                type="text"
                                placeholder="e.g. injected by hand"
                                prop:value=move || draft.with(|d| d.message.clone())
                                on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.message = v.clone()) }
                            />
                        </label>
                        <p class="hint full" data-testid="failure-hint">
                            "Replayed as: "
                            {move || draft.with(|d| FAILURE_KINDS.iter().find(|(k, _)| *k == d.failure_kind).map(|(_, what)| *what))}
                        </p>
                    </div>
                    }.into_any() }}
                </Show>
                <div class="fields">
                    <label class="check">
                        <input
                            id="manual-mock-only"
                            type="checkbox"
                            prop:checked=move || draft.with(|d| d.mock_only)
                            on:change=move |ev| { let on = event_target_checked(&ev); set(&|d| d.mock_only = on) }
                        />
                        "Mock mode only (never replayed in cache mode)"
                    </label>
                    <label class="grow">
                        <span>"Call key (optional, 64 hex): replay only for that call"</span>
                        <input
                            id="manual-call-key"
                            type="text"
                            spellcheck="false"
                            autocomplete="off"
                            prop:value=move || draft.with(|d| d.call_key.clone())
                            on:input=move |ev| { let v = event_target_value(&ev); set(&|d| d.call_key = v.clone()) }
                        />
                    </label>
                </div>
                <button type="submit" id="manual-submit" disabled=move || busy.get()>"Add outcome"</button>
            </form>
            <ErrorNote context="Outcome not added" error testid="manual-error"/>
            <OkNote message=added testid="manual-ok"/>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_becomes_status_header_pairs_and_a_json_body() {
        let body = Draft::default().to_request().unwrap();
        assert_eq!(
            body,
            json!({
                "outcome_type": "return",
                "value": {"status": 200, "headers": [["content-type", "application/json"]], "body": {"ok": true}},
                "is_mock_only": false,
                "call_key": null,
            })
        );
    }

    #[test]
    fn a_failure_carries_its_kind_and_message() {
        let draft = Draft {
            failure: true,
            failure_kind: "connection_reset".into(),
            message: " injected ".into(),
            mock_only: true,
            ..Draft::default()
        };
        assert_eq!(
            draft.to_request().unwrap(),
            json!({
                "outcome_type": "exception", "exception_type": "connection_reset",
                "exception_message": "injected", "is_mock_only": true, "call_key": null,
            })
        );
    }

    #[test]
    fn a_rust_function_takes_any_json_value_and_any_named_error() {
        let value = Draft {
            body: "[\"a\", \"b\"]".into(),
            ..Draft::new(true)
        };
        assert_eq!(value.to_request().unwrap()["value"], json!(["a", "b"]));
        let error = Draft {
            failure: true,
            failure_kind: " Timeout ".into(),
            message: "slow".into(),
            ..Draft::new(true)
        };
        let body = error.to_request().unwrap();
        assert_eq!(
            (&body["exception_type"], &body["exception_message"]),
            (&json!("Timeout"), &json!("slow"))
        );
        let field = |d: Draft| d.to_request().unwrap_err().field.unwrap();
        let unnamed = Draft {
            failure: true,
            ..Draft::new(true)
        };
        assert_eq!(field(unnamed), "exception_type");
        let unquoted = Draft {
            body: "cheap".into(),
            ..Draft::new(true)
        };
        assert_eq!(field(unquoted), "value");
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |d: Draft| d.to_request().unwrap_err().field.unwrap();
        assert_eq!(
            field(Draft {
                status: "99".into(),
                ..Draft::default()
            }),
            "status"
        );
        assert_eq!(
            field(Draft {
                headers: "no colon".into(),
                ..Draft::default()
            }),
            "headers"
        );
        assert_eq!(
            field(Draft {
                body: "{".into(),
                ..Draft::default()
            }),
            "body"
        );
        assert_eq!(
            field(Draft {
                call_key: "abc".into(),
                ..Draft::default()
            }),
            "call_key"
        );
        let text = Draft {
            body_format: BodyFormat::Text,
            body: "{".into(),
            ..Draft::default()
        };
        assert_eq!(text.to_request().unwrap()["value"]["body"], "{");
    }
}
