//! `/ui/functions/{id}`: one function's mode, latency, stats, outcomes, mock
//! weights, manual outcomes and recent calls.
//!
//! Internal: like the functions page, the detail is a polled signal rather
//! than a `LocalResource`, so the editors on this page keep their drafts and
//! focus while counters move underneath them.

use leptos::callback::UnsyncCallback;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

use crate::api::{self, ApiError, FunctionDetail, Mode, OutcomeSummary, RebuildReport};
use crate::components::{
    CachePolicy, ErrorNote, ManualOutcomeForm, ModeSelect, OkNote, OutcomeViewer, POLL_PERIOD,
    Refresh, WeightsEditor, clock, guard_badges, poll, result_badge, set_if_changed,
};
use crate::format;

#[component]
pub(crate) fn FunctionPage() -> impl IntoView {
    let params = use_params_map();
    // Keyed on the id so that following a link to another function starts
    // from a clean page rather than mixing two functions' drafts.
    move || {
        params
            .read()
            .get("id")
            .map(|id| view! { <FunctionView id/> })
    }
}

#[component]
fn FunctionView(id: String) -> impl IntoView {
    let detail = RwSignal::new(None::<FunctionDetail>);
    let load_error = RwSignal::new(None::<ApiError>);
    let selected = RwSignal::new(None::<String>);
    // How many outcomes the table shows; "Show more" raises it a page at a
    // time, so a function with millions never loads them all.
    let shown = RwSignal::new(OUTCOME_PAGE);

    let refresh = {
        let id = id.clone();
        poll(POLL_PERIOD, move || {
            let id = id.clone();
            async move {
                match load_detail(&id, shown.get_untracked()).await {
                    Ok(fresh) => {
                        set_if_changed(detail, Some(fresh));
                        set_if_changed(load_error, None);
                    }
                    Err(e) => set_if_changed(load_error, Some(e)),
                }
            }
        })
    };

    let not_found = move || load_error.with(|e| e.as_ref().is_some_and(|e| e.status == Some(404)));
    // A memo, so the body mounts once when the first detail arrives instead
    // of again (dropping every draft) on each change of the detail.
    let loaded = Memo::new(move |_| detail.with(Option::is_some));
    let body = {
        let id = id.clone();
        move || {
            loaded.get().then(|| {
                view! { <FunctionBody id=id.clone() detail selected shown refresh/> }
            })
        }
    };

    view! {
        <section class="page" data-testid="function-page">
            <nav class="crumbs" aria-label="Breadcrumb">
                <A href="/ui/">"Functions"</A>
                <span aria-hidden="true">" / "</span>
                <code>{id.clone()}</code>
            </nav>
            {move || {
                not_found()
                    .then(|| {
                        view! {
                            <h1>"No such function"</h1>
                            <p>"cacheow has no function " <code>{id.clone()}</code> ". "
                                <A href="/ui/">"See all functions"</A>
                            </p>
                        }
                    })
            }}
            <ErrorNote context="Cannot load this function, retrying every second" error=load_error testid="load-error"/>
            {move || (!loaded.get() && load_error.with(Option::is_none)).then(|| view! { <p class="muted">"Loading…"</p> })}
            {body}
        </section>
    }
}

/// Outcomes the table shows at first, and adds per "Show more": the
/// detail's first page.
const OUTCOME_PAGE: usize = 100;

/// The function's detail with its `shown` most recently seen outcomes.
async fn load_detail(id: &str, shown: usize) -> Result<FunctionDetail, ApiError> {
    let mut detail = api::function(id).await?;
    if shown > OUTCOME_PAGE && detail.outcomes_truncated {
        detail.outcomes = api::outcomes(id, shown).await?;
        detail.outcomes_truncated = (detail.outcomes.len() as u64) < detail.summary.outcome_count;
    }
    Ok(detail)
}

#[component]
fn FunctionBody(
    id: String,
    detail: RwSignal<Option<FunctionDetail>>,
    selected: RwSignal<Option<String>>,
    shown: RwSignal<usize>,
    refresh: Refresh,
) -> impl IntoView {
    let summary = Memo::new(move |_| detail.with(|d| d.as_ref().map(|d| d.summary.clone())));
    let mode =
        Signal::derive(move || summary.with(|s| s.as_ref().map_or(Mode::Default, |s| s.mode)));
    let name = move || summary.with(|s| s.as_ref().map(|s| s.name.clone()).unwrap_or_default());

    let on_mode_saved = UnsyncCallback::new(move |mode| {
        detail.update(|d| {
            if let Some(d) = d {
                d.summary.mode = mode;
            }
        });
        refresh.now();
    });
    let viewer = {
        let id = id.clone();
        move || {
            selected.get().map(|outcome_id| {
                view! {
                    <OutcomeViewer
                        function_id=id.clone()
                        outcome_id
                        on_close=UnsyncCallback::new(move |()| selected.set(None))
                    />
                }
            })
        }
    };

    view! {
        <header class="fn-head">
            {move || summary.get().map(|s| heading(&s))}
        </header>
        <div class="grid3">
            <section class="card" aria-labelledby="mode-h">
                <h2 id="mode-h">
                    <label for="function-mode">"Mode"</label>
                </h2>
                <ModeSelect
                    id="function-mode"
                    function_id=id.clone()
                    mode
                    label=Signal::derive(move || format!("Mode of {}", name()))
                    on_saved=on_mode_saved
                />
                <p class="hint" data-testid="mode-hint">{move || mode_hint(mode.get())}</p>
            </section>
            <LatencyCard id=id.clone() detail/>
            <StatsCard detail/>
        </div>
        <CachePolicy id=id.clone() detail/>
        <OutcomesTable id=id.clone() detail selected shown refresh/>
        {viewer}
        <WeightsEditor function_id=id.clone() detail/>
        <RecentCalls detail selected/>
        <ManualOutcomeForm
            function_id=id.clone()
            rust=detail.with_untracked(|d| d.as_ref().is_some_and(|d| d.summary.kind != "http"))
            on_added=UnsyncCallback::new(move |outcome_id: String| {
                selected.set(Some(outcome_id));
                refresh.now();
            })
        />
        <Maintenance id detail refresh/>
    }
}

fn heading(s: &api::FunctionSummary) -> impl IntoView + use<> {
    match &s.http {
        Some(http) => view! {
            <h1 data-testid="function-name">
                <span class=format!("badge method method-{}", http.method.to_lowercase())>{http.method.clone()}</span>
                " "
                <span class="route">{http.route.clone()}</span>
            </h1>
            <p class="muted">
                {format!("{}://{}", http.scheme, http.host)} " · " {s.kind.clone()} " · id "
                <code>{s.id.clone()}</code>
                " " {guard_badges(&s.guards)}
            </p>
        }
        .into_any(),
        None => view! {
            <h1 data-testid="function-name">
                <span class="badge kind">{s.kind.clone()}</span>
                " "
                <span class="route">{s.name.clone()}</span>
            </h1>
            <p class="muted">
                "Rust function · id " <code>{s.id.clone()}</code> " " {guard_badges(&s.guards)}
            </p>
        }
        .into_any(),
    }
}

fn mode_hint(mode: Mode) -> &'static str {
    match mode {
        Mode::Default => "Calls upstream and records every outcome.",
        Mode::Cache => {
            "Replays the outcome recorded for the same call; calls upstream only for new calls."
        }
        Mode::Mock => {
            "Never calls upstream: replies with a stored outcome picked by the weights below."
        }
    }
}

#[component]
fn LatencyCard(id: String, detail: RwSignal<Option<FunctionDetail>>) -> impl IntoView {
    let stored =
        Memo::new(move |_| detail.with(|d| d.as_ref().map_or(0, |d| d.summary.latency_ms)));
    // `None` while untouched, so the field follows the stored value until
    // someone starts typing.
    let draft = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(None::<String>);
    let is_http =
        Memo::new(move |_| detail.with(|d| d.as_ref().is_some_and(|d| d.summary.kind == "http")));
    let toggle_id = id.clone();

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft
            .get_untracked()
            .unwrap_or_else(|| stored.get_untracked().to_string());
        let Ok(ms) = text.trim().parse::<u64>() else {
            error.set(Some(ApiError::invalid(
                "latency_ms",
                format!("latency must be a whole number of milliseconds ≥ 0, got `{text}`"),
            )));
            return;
        };
        let id = id.clone();
        error.set(None);
        saved.set(None);
        spawn_local(async move {
            match api::set_latency(&id, ms).await {
                Ok(ms) => {
                    detail.update(|d| {
                        if let Some(d) = d {
                            d.summary.latency_ms = ms;
                        }
                    });
                    draft.set(None);
                    saved.set(Some(format!("Saved: {ms} ms")));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    view! {
        <section class="card" aria-labelledby="latency-h">
            <h2 id="latency-h">"Latency"</h2>
            <form class="inline-form" on:submit=on_submit>
                <label for="latency-input">"Delay before each cache or mock reply (ms)"</label>
                <div class="row">
                    <input
                        id="latency-input"
                        data-testid="latency-input"
                        type="number"
                        min="0"
                        step="1"
                        inputmode="numeric"
                        prop:value=move || draft.get().unwrap_or_else(|| stored.get().to_string())
                        on:input=move |ev| {
                            saved.set(None);
                            draft.set(Some(event_target_value(&ev)));
                        }
                    />
                    <button type="submit" id="latency-save">"Save"</button>
                </div>
            </form>
            <ErrorNote context="Latency not saved" error testid="latency-error"/>
            <OkNote message=saved testid="latency-ok"/>
            {move || is_http.get().then(|| view! { <ReplayDurationToggle id=toggle_id.clone() detail/> })}
        </section>
    }
}

/// `replay_duration`: replayed responses wait their recorded time.
#[component]
fn ReplayDurationToggle(id: String, detail: RwSignal<Option<FunctionDetail>>) -> impl IntoView {
    let on = Memo::new(move |_| {
        detail.with(|d| {
            d.as_ref()
                .and_then(|d| d.config.get("replay_duration"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
    });
    let error = RwSignal::new(None::<ApiError>);
    let on_change = move |ev: leptos::ev::Event| {
        let wanted = event_target_checked(&ev);
        let id = id.clone();
        error.set(None);
        spawn_local(async move {
            let settings = serde_json::json!({ "replay_duration": wanted });
            match api::set_config(&id, &settings).await {
                Ok(config) => detail.update(|d| {
                    if let Some(d) = d {
                        d.config = config;
                    }
                }),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <label class="check">
            <input
                type="checkbox"
                id="replay-duration"
                data-testid="replay-duration"
                prop:checked=move || on.get()
                on:change=on_change
            />
            " Replayed responses take as long as the recorded call did"
        </label>
        <ErrorNote context="Setting not saved" error testid="replay-duration-error"/>
    }
}

#[component]
fn StatsCard(detail: RwSignal<Option<FunctionDetail>>) -> impl IntoView {
    let stats = Memo::new(move |_| {
        detail.with(|d| {
            d.as_ref()
                .map(|d| d.summary.stats.clone())
                .unwrap_or_default()
        })
    });
    let count = move |label: &'static str, testid: &'static str, pick: fn(&api::Stats) -> u64| {
        view! {
            <div>
                <dt>{label}</dt>
                <dd data-testid=testid>{move || stats.with(pick)}</dd>
            </div>
        }
    };
    view! {
        <section class="card" aria-labelledby="stats-h">
            <h2 id="stats-h">"Stats"</h2>
            <dl class="stats" data-testid="stats">
                {count("Calls", "stat-calls", |s| s.total_calls)}
                {count("Upstream", "stat-upstream", |s| s.upstream_calls)}
                {count("Cache hits", "stat-hits", |s| s.cache_hits)}
                {count("Cache misses", "stat-misses", |s| s.cache_misses)}
                {count("Mocks", "stat-mocks", |s| s.mock_calls)}
                {count("Errors", "stat-errors", |s| s.exceptions)}
                {count("Stale", "stat-stale", |s| s.stale_served)}
                {count("Refreshed", "stat-refreshed", |s| s.refreshed)}
                {count("Coalesced", "stat-coalesced", |s| s.coalesced)}
                {count("Over budget", "stat-budget", |s| s.budget_rejected)}
                {count("Circuit open", "stat-circuit", |s| s.circuit_open)}
                <div>
                    <dt>"Average"</dt>
                    <dd>{move || format::millis(stats.with(|s| s.average_duration_ms))}</dd>
                </div>
                <div>
                    <dt>"Last call"</dt>
                    <dd>
                        {move || {
                            stats.with(|s| match s.last_called_at.as_deref() {
                                Some(at) => clock(at).into_any(),
                                None => "never".into_any(),
                            })
                        }}
                    </dd>
                </div>
                {move || {
                    stats.with(|s| {
                        (!s.unrecorded.is_empty() || s.persist_failures > 0)
                            .then(|| {
                                view! {
                                    <div class="warn">
                                        <dt>"Not recorded"</dt>
                                        <dd>{format::not_recorded(&s.unrecorded, s.persist_failures)}</dd>
                                    </div>
                                }
                            })
                    })
                }}
            </dl>
        </section>
    }
}

#[component]
fn OutcomesTable(
    id: String,
    detail: RwSignal<Option<FunctionDetail>>,
    selected: RwSignal<Option<String>>,
    shown: RwSignal<usize>,
    refresh: Refresh,
) -> impl IntoView {
    let ids = Memo::new(move |_| {
        detail.with(|d| {
            d.as_ref()
                .map(|d| d.outcomes.iter().map(|o| o.id.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });
    let error = RwSignal::new(None::<ApiError>);
    let total = move || detail.with(|d| d.as_ref().map_or(0, |d| d.summary.outcome_count));
    let truncated = move || detail.with(|d| d.as_ref().is_some_and(|d| d.outcomes_truncated));
    let show_more = move |_| {
        shown.update(|n| *n += OUTCOME_PAGE);
        refresh.now();
    };

    view! {
        <section class="card wide" aria-labelledby="outcomes-h">
            <h2 id="outcomes-h">
                "Outcomes " <span class="muted" data-testid="outcome-count">{total}</span>
            </h2>
            <ErrorNote context="Outcome not deleted" error testid="outcome-error"/>
            {move || {
                ids.with(Vec::is_empty)
                    .then(|| view! {
                        <p class="empty">"No outcomes yet: call this function in default or cache mode, or add one below."</p>
                    })
            }}
            <div class="table-wrap">
                <table class="outcomes stack-narrow" data-testid="outcomes-table">
                    <thead>
                        <tr>
                            <th scope="col">"Outcome"</th>
                            <th scope="col">"Result"</th>
                            <th scope="col">"Preview"</th>
                            <th scope="col" class="num">"Count"</th>
                            <th scope="col">"Last seen"</th>
                            <th scope="col">"Flags"</th>
                            <th scope="col"><span class="sr-only">"Actions"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || ids.get() key=|id| id.clone() let:outcome_id>
                            <OutcomeRow function_id=id.clone() outcome_id detail selected error refresh/>
                        </For>
                    </tbody>
                </table>
            </div>
            {move || {
                truncated()
                    .then(|| {
                        view! {
                            <p class="more">
                                <span class="muted" data-testid="outcomes-shown">
                                    {move || format!("Showing the {} most recently seen of {}.", ids.with(Vec::len), total())}
                                </span>
                                " "
                                <button type="button" data-testid="show-more-outcomes" on:click=show_more>
                                    {format!("Show {OUTCOME_PAGE} more")}
                                </button>
                            </p>
                        }
                    })
            }}
        </section>
    }
}

#[component]
fn OutcomeRow(
    function_id: String,
    outcome_id: String,
    detail: RwSignal<Option<FunctionDetail>>,
    selected: RwSignal<Option<String>>,
    error: RwSignal<Option<ApiError>>,
    refresh: Refresh,
) -> impl IntoView {
    let row = {
        let outcome_id = outcome_id.clone();
        Memo::new(move |_| {
            detail.with(|d| {
                d.as_ref()
                    .and_then(|d| d.outcomes.iter().find(|o| o.id == outcome_id).cloned())
            })
        })
    };
    let confirming = RwSignal::new(false);
    let short = format::short_id(&outcome_id).to_owned();

    let view_it = {
        let outcome_id = outcome_id.clone();
        move |_| selected.set(Some(outcome_id.clone()))
    };
    let delete_it = {
        let outcome_id = outcome_id.clone();
        move |_| {
            let (function_id, outcome_id) = (function_id.clone(), outcome_id.clone());
            error.set(None);
            spawn_local(async move {
                match api::delete_outcome(&function_id, &outcome_id).await {
                    Ok(()) => {
                        if selected.get_untracked().as_deref() == Some(outcome_id.as_str()) {
                            selected.set(None);
                        }
                        detail.update(|d| {
                            if let Some(d) = d {
                                d.outcomes.retain(|o| o.id != outcome_id);
                            }
                        });
                        refresh.now();
                    }
                    Err(e) => {
                        confirming.set(false);
                        error.set(Some(e));
                    }
                }
            });
        }
    };
    let is_selected = {
        let outcome_id = outcome_id.clone();
        move || selected.with(|s| s.as_deref() == Some(outcome_id.as_str()))
    };

    view! {
        <tr data-testid="outcome-row" data-outcome-id=outcome_id.clone() class:selected=is_selected>
            <th scope="row" data-label="Outcome">
                <code title=outcome_id.clone()>{short.clone()}</code>
                " "
                <span class="muted">{move || row.with(|o| o.as_ref().map(|o| o.outcome_type.clone()))}</span>
            </th>
            <td data-label="Result">
                {move || row.get().map(|o| result_badge(o.status, o.exception_type))}
            </td>
            <td data-label="Preview" class="preview">
                <code>{move || row.with(|o| o.as_ref().map(|o| o.preview.clone()))}</code>
            </td>
            <td class="num" data-label="Count" data-testid="outcome-count-cell">
                {move || row.with(|o| o.as_ref().map_or(0, |o| o.count))}
            </td>
            <td data-label="Last seen">
                {move || {
                    row.with(|o| {
                        o.as_ref()
                            .and_then(|o| o.last_seen_at.clone().or_else(|| o.created_at.clone()))
                            .map(|at| clock(&at))
                    })
                }}
            </td>
            <td data-label="Flags">{move || row.get().map(|o| flags(&o))}</td>
            <td class="actions">
                <button type="button" data-testid="view-outcome" on:click=view_it aria-label=format!("View outcome {short}")>
                    "View"
                </button>
                {move || {
                    if confirming.get() {
                        view! {
                            <span class="confirm" role="group" aria-label="Confirm delete">
                                <button type="button" class="danger" data-testid="confirm-delete" on:click=delete_it.clone()>
                                    "Delete it"
                                </button>
                                <button type="button" data-testid="cancel-delete" on:click=move |_| confirming.set(false)>
                                    "Keep"
                                </button>
                            </span>
                        }
                        .into_any()
                    } else {
                        view! {
                            <button type="button" data-testid="delete-outcome" on:click=move |_| confirming.set(true)>
                                "Delete"
                            </button>
                        }
                        .into_any()
                    }
                }}
            </td>
        </tr>
    }
}

fn flags(o: &OutcomeSummary) -> impl IntoView + use<> {
    let key = if o.call_key.is_some() {
        None
    } else {
        Some("any call")
    };
    view! {
        {o.is_manual.then(|| view! { <span class="flag" data-testid="flag-manual">"manual"</span> })}
        {o.is_mock_only.then(|| view! { <span class="flag" data-testid="flag-mock-only">"mock only"</span> })}
        {key.map(|k| view! { <span class="flag quiet" title="not tied to a call key">{k}</span> })}
    }
}

#[component]
fn RecentCalls(
    detail: RwSignal<Option<FunctionDetail>>,
    selected: RwSignal<Option<String>>,
) -> impl IntoView {
    let calls = Memo::new(move |_| {
        detail.with(|d| {
            d.as_ref()
                .map(|d| d.recent_calls.clone())
                .unwrap_or_default()
        })
    });
    view! {
        <section class="card wide" aria-labelledby="calls-h">
            <h2 id="calls-h">"Recent calls"</h2>
            {move || {
                calls.with(Vec::is_empty)
                    .then(|| view! { <p class="empty">"No calls yet."</p> })
            }}
            <div class="table-wrap">
                <table class="calls stack-narrow" data-testid="recent-calls">
                    <thead>
                        <tr>
                            <th scope="col">"Time"</th>
                            <th scope="col">"Source"</th>
                            <th scope="col">"Result"</th>
                            <th scope="col" class="num">"Duration"</th>
                            <th scope="col">"Outcome"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || {
                            calls.get()
                                .into_iter()
                                .map(|call| {
                                    view! {
                                        <tr data-testid="call-row">
                                            <td data-label="Time">{clock(&call.at)}</td>
                                            <td data-label="Source"><span class=format!("source source-{}", call.source)>{call.source.clone()}</span></td>
                                            <td data-label="Result">{result_badge(call.status, call.error)}</td>
                                            <td class="num" data-label="Duration">{format::millis(call.duration_ms)}</td>
                                            <td data-label="Outcome">
                                                {call.outcome_id.map(|oid| {
                                                    let label = format!("View outcome {}", format::short_id(&oid));
                                                    view! {
                                                        <button type="button" class="link" aria-label=label on:click={
                                                            let oid = oid.clone();
                                                            move |_| selected.set(Some(oid.clone()))
                                                        }>
                                                            <code>{format::short_id(&oid).to_owned()}</code>
                                                        </button>
                                                    }
                                                })}
                                                {call.unrecorded.map(|reason| view! {
                                                    <span class="muted" data-testid="unrecorded">{format!("not recorded: {reason}")}</span>
                                                })}
                                            </td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                        }}
                    </tbody>
                </table>
            </div>
        </section>
    }
}

#[component]
fn Maintenance(
    id: String,
    detail: RwSignal<Option<FunctionDetail>>,
    refresh: Refresh,
) -> impl IntoView {
    let report = RwSignal::new(None::<RebuildReport>);
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let rebuild = move |_| {
        let id = id.clone();
        busy.set(true);
        error.set(None);
        report.set(None);
        spawn_local(async move {
            match api::rebuild_index(&id).await {
                Ok(r) => {
                    report.set(Some(r));
                    refresh.now();
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let config = Memo::new(move |_| {
        detail.with(|d| d.as_ref().map(|d| d.config.clone()).unwrap_or_default())
    });

    view! {
        <section class="card wide" aria-labelledby="maint-h">
            <h2 id="maint-h">"Call key and index"</h2>
            <dl class="config" data-testid="config">{move || config_rows(&config.get())}</dl>
            <p class="hint">
                "Rebuild index re-reads this function's JSON files (after editing them by hand) into the store."
            </p>
            <button type="button" id="rebuild-index" on:click=rebuild disabled=move || busy.get()>
                {move || if busy.get() { "Rebuilding…" } else { "Rebuild index" }}
            </button>
            <ErrorNote context="Index not rebuilt" error testid="rebuild-error"/>
            {move || {
                report.get().map(|r| {
                    let failures = r.failures.len();
                    view! {
                        <div role="status" data-testid="rebuild-result" class=if failures == 0 { "ok" } else { "error" }>
                            <p>
                                {format!(
                                    "Indexed {} outcome file{}; {} could not be read.",
                                    r.indexed,
                                    if r.indexed == 1 { "" } else { "s" },
                                    failures,
                                )}
                            </p>
                            <ul>
                                {r.failures
                                    .into_iter()
                                    .map(|f| view! { <li><code>{f.path}</code> ": " {f.reason}</li> })
                                    .collect_view()}
                            </ul>
                        </div>
                    }
                })
            }}
        </section>
    }
}

/// The call-key settings as "what is ignored / included" lines.
fn config_rows(config: &Value) -> impl IntoView + use<> {
    let Value::Object(map) = config else {
        return view! { <div><dt>"Call key"</dt><dd>"default (method, URL, body)"</dd></div> }
            .into_any();
    };
    map.iter()
        .map(|(key, value)| {
            let shown = match value {
                Value::Array(items) if items.is_empty() => "none".to_owned(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            };
            view! { <div><dt>{key.replace('_', " ")}</dt><dd>{shown}</dd></div> }
        })
        .collect_view()
        .into_any()
}
