use leptos::callback::UnsyncCallback;
use leptos::html;
use leptos::prelude::*;
use serde_json::Value;

use crate::api::{self, Outcome, RecordedRequest};
use crate::format::{self, BodyView};

/// One stored outcome in full: response or failure, and the request that
/// produced it. Header values the server redacted stay visibly redacted.
#[component]
pub(crate) fn OutcomeViewer(
    function_id: String,
    outcome_id: String,
    on_close: UnsyncCallback<()>,
) -> impl IntoView {
    let outcome = {
        let (function_id, outcome_id) = (function_id.clone(), outcome_id.clone());
        LocalResource::new(move || {
            let (function_id, outcome_id) = (function_id.clone(), outcome_id.clone());
            async move { api::outcome(&function_id, &outcome_id).await }
        })
    };
    let heading = format!("Outcome {}", format::short_id(&outcome_id));
    // Opening an outcome moves focus (and the view) to it: on a narrow
    // screen it sits below the whole outcomes list.
    let section = NodeRef::<html::Section>::new();
    Effect::new(move |_| {
        if let Some(section) = section.get() {
            let _ = section.focus();
        }
    });

    view! {
        <section
            node_ref=section
            tabindex="-1"
            class="card wide viewer"
            aria-labelledby="viewer-h"
            data-testid="outcome-viewer"
            data-outcome-id=outcome_id.clone()
        >
            <div class="section-head">
                <h2 id="viewer-h">{heading}</h2>
                <button type="button" data-testid="close-viewer" on:click=move |_| on_close.run(())>
                    "Close"
                </button>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Loading outcome…"</p> }>
                <ErrorBoundary fallback=|errors| {
                    view! {
                        <p class="error" role="alert" data-testid="viewer-error">
                            <strong>"Cannot show this outcome: "</strong>
                            {move || errors.get().into_iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; ")}
                        </p>
                    }
                }>
                    {move || Suspend::new(async move { outcome.await.map(|o| outcome_details(&o)) })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

fn outcome_details(o: &Outcome) -> impl IntoView + use<> {
    let flags = [
        o.is_manual.then_some("manual"),
        o.is_mock_only.then_some("mock only"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let meta = [
        ("Type", o.outcome_type.clone()),
        (
            "Seen",
            format!("{} time{}", o.count, if o.count == 1 { "" } else { "s" }),
        ),
        (
            "Created",
            o.created_at
                .as_deref()
                .map(format::timestamp)
                .unwrap_or_default(),
        ),
        (
            "Last seen",
            o.last_seen_at
                .as_deref()
                .map(format::timestamp)
                .unwrap_or_default(),
        ),
        (
            "Upstream took",
            o.duration_ms.map(format::millis).unwrap_or_default(),
        ),
        ("Flags", flags),
    ];
    view! {
        <dl class="meta">
            {meta
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| view! { <div><dt>{k}</dt><dd>{v}</dd></div> })
                .collect_view()}
            <div class="span-all">
                <dt>"Call key"</dt>
                <dd>
                    {match o.call_key.clone() {
                        Some(key) => view! { <code class="wrap">{key}</code> }.into_any(),
                        None => "none (answers any call)".into_any(),
                    }}
                </dd>
            </div>
        </dl>
        {result(o)}
        <h3>"Request that produced it"</h3>
        {match &o.request {
            Some(request) => request_view(request).into_any(),
            None => view! { <p class="muted">"None recorded: this outcome was added by hand."</p> }.into_any(),
        }}
    }
}

/// The response (status, headers, body) or the failure.
fn result(o: &Outcome) -> impl IntoView + use<> {
    if let Some(kind) = &o.exception_type {
        return view! {
            <h3>"Failure"</h3>
            <p data-testid="viewer-failure">
                <span class="badge failure">{kind.clone()}</span>
                " "
                {o.exception_message.clone().unwrap_or_default()}
            </p>
            <p class="hint">{failure_hint(kind)}</p>
        }
        .into_any();
    }
    let Value::Object(value) = &o.value else {
        return view! { <p class="muted">"No response stored."</p> }.into_any();
    };
    let status = value.get("status").and_then(Value::as_u64);
    let headers = value
        .get("headers")
        .map(format::header_pairs)
        .unwrap_or_default();
    let body = value.get("body").map_or(BodyView::Empty, format::body_view);
    // Anything else a response carries (e.g. the chunks of a stream) is
    // shown as stored rather than dropped.
    let rest: serde_json::Map<String, Value> = value
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "status" | "headers" | "body"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    view! {
        <h3>"Response"</h3>
        <p data-testid="viewer-status">
            {status.map(|s| view! { <span class=format!("badge status s{}", s / 100)>{format!("HTTP {s}")}</span> })}
        </p>
        {headers_table(headers, "response-headers")}
        {body_block(body, "response-body")}
        {(!rest.is_empty()).then(|| view! {
            <h4>"Also stored"</h4>
            <pre class="code">{format::pretty(&Value::Object(rest))}</pre>
        })}
    }
    .into_any()
}

fn failure_hint(kind: &str) -> &'static str {
    match kind {
        "connection_reset" => "Replayed by aborting the client connection.",
        "timeout" => "Replayed by holding the request for the recorded time, then answering 504.",
        _ => "Replayed as a 502 with header x-cacheow-error naming this kind.",
    }
}

fn request_view(r: &RecordedRequest) -> impl IntoView + use<> {
    view! {
        <p class="request-line" data-testid="viewer-request-line">
            <span class="badge method">{r.method.clone()}</span>
            " "
            <code class="wrap">{r.url.clone()}</code>
        </p>
        {headers_table(format::header_pairs(&r.headers), "request-headers")}
        {body_block(format::body_view(&r.body), "request-body")}
    }
}

fn headers_table(pairs: Vec<(String, String)>, testid: &'static str) -> impl IntoView + use<> {
    if pairs.is_empty() {
        return view! { <p class="muted" data-testid=testid>"No headers."</p> }.into_any();
    }
    view! {
        <table class="headers" data-testid=testid>
            <caption class="sr-only">"Headers"</caption>
            <tbody>
                {pairs
                    .into_iter()
                    .map(|(name, value)| {
                        let shown = if value == format::REDACTED {
                            view! {
                                <span class="redacted" data-testid="redacted" title="hidden by cacheow: secrets are never shown">
                                    {format::REDACTED}
                                </span>
                            }
                            .into_any()
                        } else {
                            view! { <code class="wrap">{value}</code> }.into_any()
                        };
                        let key = name.to_lowercase();
                        view! {
                            <tr data-header=key>
                                <th scope="row"><code>{name}</code></th>
                                <td>{shown}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

fn body_block(body: BodyView, testid: &'static str) -> AnyView {
    let (label, content) = match body {
        BodyView::Empty => {
            return view! { <p class="muted" data-testid=testid>"Empty body."</p> }.into_any();
        }
        BodyView::Json { pretty, size } => (
            format!("JSON · {}", format::bytes(size)),
            view! { <pre class="code" data-kind="json">{pretty}</pre> }.into_any(),
        ),
        BodyView::Text(text) => (
            format!("Text · {}", format::bytes(text.len())),
            view! { <pre class="code" data-kind="text">{text}</pre> }.into_any(),
        ),
        BodyView::Binary { size, hex, decoded } => (
            format!("Binary · {}", format::bytes(size)),
            view! {
                <p class="hint">{format!("First {} bytes:", size.min(256))}</p>
                <pre class="code" data-kind="hex">{hex}</pre>
                {decoded.map(|d| view! {
                    <p class="hint">"Decoded (content-encoding removed):"</p>
                    {body_block(*d, "decoded-body")}
                })}
            }
            .into_any(),
        ),
        BodyView::Undecodable(why) => (
            "Body".to_owned(),
            view! { <p class="error">{why}</p> }.into_any(),
        ),
    };
    view! {
        <figure class="body" data-testid=testid>
            <figcaption>{label}</figcaption>
            {content}
        </figure>
    }
    .into_any()
}
