//! The cache policy of one function, editable: ttl, stale answers,
//! coalescing, cache_if, the cost guard, the circuit breaker and tags, as
//! `POST /api/functions/{id}/config` takes them; and invalidation.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Map, Value, json};

use super::{ErrorNote, OkNote};
use crate::api::{self, ApiError, FunctionDetail};

/// The text settings, with their labels and what an empty field means.
const TEXT_SETTINGS: [Field; 5] = [
    ("ttl", "ttl: replays are fresh for", "always fresh"),
    (
        "stale_while_revalidate",
        "then served stale while refreshed for",
        "no",
    ),
    (
        "stale_if_error",
        "stale answers when the upstream fails, for",
        "no (or \"forever\")",
    ),
    (
        "max_upstream_calls",
        "at most upstream calls per window",
        "no limit, e.g. 100/1h",
    ),
    (
        "cache_if",
        "cache mode replays",
        "responses (or success, any, [\"2xx\", 404])",
    ),
];

/// The circuit breaker's fields.
const BREAKER: [Field; 3] = [
    ("failures", "breaker: failures", "off, e.g. 5"),
    ("window", "within", "e.g. 30s"),
    ("open_for", "then stops calling for", "e.g. 60s"),
];

/// A setting's value as its field shows it.
fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// A field's text as the setting's value: empty resets it; `cache_if`
/// takes a JSON list too.
fn typed(key: &str, text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() {
        return Value::Null;
    }
    if key == "cache_if" && text.starts_with('[') {
        return serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
    }
    Value::from(text)
}

/// Reads every field of the form into the settings to send.
fn read_form(form: &web_sys::HtmlFormElement) -> Result<Map<String, Value>, ApiError> {
    let field = |name: &str| -> String {
        form.elements()
            .named_item(name)
            .and_then(|e| {
                use wasm_bindgen::JsCast;
                e.dyn_into::<web_sys::HtmlInputElement>().ok()
            })
            .map(|input| {
                if input.type_() == "checkbox" {
                    input.checked().to_string()
                } else {
                    input.value()
                }
            })
            .unwrap_or_default()
    };
    let mut settings = Map::new();
    for (key, ..) in TEXT_SETTINGS {
        settings.insert(key.to_owned(), typed(key, &field(key)));
    }
    settings.insert("coalesce".into(), Value::from(field("coalesce") == "true"));
    let tags: Vec<Value> = field("tags")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Value::from)
        .collect();
    settings.insert(
        "tags".into(),
        if tags.is_empty() {
            Value::Null
        } else {
            Value::Array(tags)
        },
    );
    let breaker: Vec<String> = BREAKER.iter().map(|(k, ..)| field(k)).collect();
    let breaker = if breaker.iter().all(|v| v.trim().is_empty()) {
        Value::Null
    } else {
        let failures = breaker[0].trim().parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "circuit_breaker.failures",
                format!(
                    "the breaker's failures must be a whole number ≥ 1, got `{}`",
                    breaker[0]
                ),
            )
        })?;
        json!({"failures": failures, "window": breaker[1].trim(), "open_for": breaker[2].trim()})
    };
    settings.insert("circuit_breaker".into(), breaker);
    Ok(settings)
}

/// A field's name, label and placeholder.
type Field = (&'static str, &'static str, &'static str);

/// A label and the text field it names, showing `value` until edited.
fn labelled_input(
    input_id: String,
    name: &'static str,
    label: &'static str,
    placeholder: &'static str,
    value: impl Fn() -> String + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <label for=input_id.clone()>{label}</label>
        <input
            id=input_id.clone()
            name=name
            data-testid=input_id
            placeholder=placeholder
            prop:value=value
        />
    }
}

/// The policy card of the function page.
#[component]
pub(crate) fn CachePolicy(id: String, detail: RwSignal<Option<FunctionDetail>>) -> impl IntoView {
    let config =
        Memo::new(move |_| detail.with(|d| d.as_ref().map_or(Value::Null, |d| d.config.clone())));
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(None::<String>);
    let form_ref = NodeRef::<leptos::html::Form>::new();
    let save_id = id.clone();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(form) = form_ref.get_untracked() else {
            return;
        };
        error.set(None);
        saved.set(None);
        let settings = match read_form(&form) {
            Ok(settings) => settings,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let id = save_id.clone();
        spawn_local(async move {
            match api::set_config(&id, &Value::Object(settings)).await {
                Ok(config) => {
                    detail.update(|d| {
                        if let Some(d) = d {
                            d.config = config;
                        }
                    });
                    saved.set(Some("Saved".into()));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let invalidate_id = id.clone();
    let on_invalidate = move |_| {
        let id = invalidate_id.clone();
        error.set(None);
        saved.set(None);
        spawn_local(async move {
            match api::invalidate(&json!({ "function": id })).await {
                Ok(()) => saved.set(Some(
                    "Every outcome is now stale: the next cache-mode call goes upstream".into(),
                )),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let text_field = move |(key, label, placeholder): Field| {
        let value = move || config.with(|c| shown(c.get(key)));
        labelled_input(format!("policy-{key}"), key, label, placeholder, value)
    };
    let breaker_field = move |(key, label, placeholder): Field| {
        let value =
            move || config.with(|c| shown(c.get("circuit_breaker").and_then(|b| b.get(key))));
        labelled_input(
            format!("policy-breaker-{key}"),
            key,
            label,
            placeholder,
            value,
        )
    };
    view! {
        <section class="card" aria-labelledby="policy-h">
            <h2 id="policy-h">"Cache policy"</h2>
            <form class="policy-form" node_ref=form_ref on:submit=on_submit>
                <div class="policy-grid">
                    {TEXT_SETTINGS.into_iter().map(text_field).collect_view()}
                    <label for="policy-tags">"tags"</label>
                    <input
                        id="policy-tags"
                        name="tags"
                        data-testid="policy-tags"
                        placeholder="none, e.g. llm, billing"
                        prop:value=move || config.with(|c| {
                            c.get("tags")
                                .and_then(Value::as_array)
                                .map(|tags| tags.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                                .unwrap_or_default()
                        })
                    />
                    {BREAKER.into_iter().map(breaker_field).collect_view()}
                </div>
                <label class="check">
                    <input
                        type="checkbox"
                        name="coalesce"
                        id="policy-coalesce"
                        data-testid="policy-coalesce"
                        prop:checked=move || config.with(|c| c.get("coalesce").and_then(Value::as_bool).unwrap_or(true))
                    />
                    " Identical calls at the same time make one upstream call"
                </label>
                <div class="row">
                    <button type="submit" id="policy-save">"Save policy"</button>
                    <button type="button" id="policy-invalidate" on:click=on_invalidate>
                        "Mark all outcomes stale"
                    </button>
                </div>
            </form>
            <ErrorNote context="Policy not saved" error testid="policy-error"/>
            <OkNote message=saved testid="policy-ok"/>
        </section>
    }
}
