//! `/` and `/ui/`: every function with its mode and counters, kept live by
//! polling.
//!
//! Internal: the list is a plain signal fed by [`poll`] rather than a
//! `LocalResource` under `<Transition>`: a refetch would rebuild the table
//! every second, closing an open mode menu and dropping keyboard focus. Rows
//! are keyed by function id and read their cells through a memo, so a poll
//! only touches the text that changed.

use leptos::callback::UnsyncCallback;
use leptos::prelude::*;

use crate::api::{self, ApiError, FunctionSummary, Mode};
use crate::components::{
    ErrorNote, ModeSelect, POLL_PERIOD, clock, guard_badges, poll, set_if_changed,
};

#[component]
pub(crate) fn FunctionsPage() -> impl IntoView {
    let functions = RwSignal::new(Vec::<FunctionSummary>::new());
    let loaded = RwSignal::new(false);
    let poll_error = RwSignal::new(None::<ApiError>);
    let text = RwSignal::new(String::new());
    let mode_filter = RwSignal::new(None::<Mode>);

    poll(POLL_PERIOD, move || async move {
        match api::list_functions().await {
            Ok(list) => {
                set_if_changed(functions, list);
                set_if_changed(poll_error, None);
                loaded.set(true);
            }
            Err(e) => set_if_changed(poll_error, Some(e)),
        }
    });

    let visible = Memo::new(move |_| {
        let needle = text.read().trim().to_lowercase();
        let mode = mode_filter.get();
        functions.with(|all| {
            all.iter()
                .filter(|f| mode.is_none_or(|m| f.mode == m) && matches_text(f, &needle))
                .map(|f| f.id.clone())
                .collect::<Vec<_>>()
        })
    });
    let total = move || functions.with(Vec::len);

    view! {
        <section class="page" data-testid="functions-page">
            <div class="page-head">
                <h1>"Functions"</h1>
                <p class="live" role="status" data-testid="functions-count">
                    {move || {
                        let shown = visible.with(Vec::len);
                        let total = total();
                        if shown == total {
                            format!("{total} function{}", if total == 1 { "" } else { "s" })
                        } else {
                            format!("{shown} of {total} functions")
                        }
                    }}
                    <span class="dot" class:stale=move || poll_error.with(Option::is_some) aria-hidden="true"></span>
                </p>
            </div>
            <ErrorNote
                context="Live updates paused, retrying every second"
                error=poll_error
                testid="poll-error"
            />
            <form class="filters" on:submit=|ev| ev.prevent_default() role="search">
                <label>
                    "Filter"
                    <input
                        type="search"
                        id="filter-text"
                        data-testid="filter-text"
                        placeholder="method, host, route, name or id"
                        prop:value=move || text.get()
                        on:input=move |ev| text.set(event_target_value(&ev))
                    />
                </label>
                <label>
                    "Mode"
                    <select
                        id="filter-mode"
                        data-testid="filter-mode"
                        on:change=move |ev| mode_filter.set(Mode::parse(&event_target_value(&ev)))
                    >
                        <option value="">"all modes"</option>
                        {Mode::ALL.map(|m| view! { <option value=m.as_str()>{m.as_str()}</option> })}
                    </select>
                </label>
            </form>
            <div class="table-wrap">
                <table class="functions stack-narrow" data-testid="functions-table">
                    <thead>
                        <tr>
                            <th scope="col">"Function"</th>
                            <th scope="col">"Mode"</th>
                            <th scope="col" class="num">"Calls"</th>
                            <th scope="col" class="num">"Hits"</th>
                            <th scope="col" class="num">"Misses"</th>
                            <th scope="col" class="num">"Mocks"</th>
                            <th scope="col" class="num">"Errors"</th>
                            <th scope="col" class="num">"Latency"</th>
                            <th scope="col">"Last call"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || visible.get() key=|id| id.clone() let:id>
                            <FunctionRow id functions/>
                        </For>
                    </tbody>
                </table>
            </div>
            {move || {
                (loaded.get() && visible.with(Vec::is_empty))
                    .then(|| {
                        if total() == 0 {
                            view! {
                                <p class="empty" data-testid="functions-empty">
                                    "No functions recorded yet. Send a request through the proxy "
                                    "(set " <code>"HTTP_PROXY"</code> " to the address above) "
                                    "and it appears here."
                                </p>
                            }
                            .into_any()
                        } else {
                            view! {
                                <p class="empty" data-testid="functions-empty">
                                    "No function matches the filter."
                                </p>
                            }
                            .into_any()
                        }
                    })
            }}
            {move || (!loaded.get() && poll_error.with(Option::is_none)).then(|| view! { <p class="muted">"Loading…"</p> })}
        </section>
    }
}

fn matches_text(f: &FunctionSummary, needle: &str) -> bool {
    needle.is_empty()
        || [&f.name, &f.id, &f.kind]
            .into_iter()
            .any(|s| s.to_lowercase().contains(needle))
}

#[component]
fn FunctionRow(id: String, functions: RwSignal<Vec<FunctionSummary>>) -> impl IntoView {
    let row = {
        let id = id.clone();
        Memo::new(move |_| functions.with(|all| all.iter().find(|f| f.id == id).cloned()))
    };
    let stat =
        move |pick: fn(&FunctionSummary) -> u64| move || row.with(|f| f.as_ref().map_or(0, pick));
    let mode = Signal::derive(move || row.with(|f| f.as_ref().map_or(Mode::Default, |f| f.mode)));
    let href = format!("/ui/functions/{id}");
    let on_saved = {
        let id = id.clone();
        UnsyncCallback::new(move |mode| {
            functions.update(|all| {
                if let Some(f) = all.iter_mut().find(|f| f.id == id) {
                    f.mode = mode;
                }
            });
        })
    };
    let label = move || row.with(|f| f.as_ref().map(|f| f.name.clone()).unwrap_or_default());

    view! {
        <tr data-testid="function-row" data-function-id=id.clone()>
            <th scope="row" class="fn-name" data-label="Function">
                {move || row.get().map(|f| function_label(&f, &href))}
            </th>
            <td data-label="Mode">
                <ModeSelect function_id=id.clone() mode label=Signal::derive(move || format!("Mode of {}", label())) on_saved/>
            </td>
            <td class="num" data-label="Calls" data-testid="calls">{stat(|f| f.stats.total_calls)}</td>
            <td class="num" data-label="Hits" data-testid="hits">{stat(|f| f.stats.cache_hits)}</td>
            <td class="num" data-label="Misses" data-testid="misses">{stat(|f| f.stats.cache_misses)}</td>
            <td class="num" data-label="Mocks" data-testid="mocks">{stat(|f| f.stats.mock_calls)}</td>
            <td class="num" data-label="Errors" data-testid="errors">{stat(|f| f.stats.exceptions)}</td>
            <td class="num" data-label="Latency" data-testid="latency">
                {move || row.with(|f| f.as_ref().map(|f| format!("{} ms", f.latency_ms)))}
            </td>
            <td data-label="Last call">
                {move || {
                    row.with(|f| {
                        f.as_ref()
                            .and_then(|f| f.stats.last_called_at.clone())
                            .map(|at| clock(&at))
                    })
                }}
            </td>
        </tr>
    }
}

/// Method, host and route for HTTP functions; kind and Rust path otherwise.
fn function_label(f: &FunctionSummary, href: &str) -> impl IntoView + use<> {
    let (badge, badge_class, main, detail) = match &f.http {
        Some(http) => (
            http.method.clone(),
            format!("badge method method-{}", http.method.to_lowercase()),
            http.route.clone(),
            format!("{}://{}", http.scheme, http.host),
        ),
        None => (
            f.kind.clone(),
            "badge kind".to_owned(),
            f.name.clone(),
            String::new(),
        ),
    };
    view! {
        <span class=badge_class>{badge}</span>
        <a href=href.to_owned() class="fn-link" data-testid="function-link" title=f.name.clone()>
            <span class="route">{main}</span>
            <span class="host">{detail}</span>
        </a>
        {guard_badges(&f.guards)}
    }
}
