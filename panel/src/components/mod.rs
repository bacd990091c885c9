//! Pieces both pages use.

mod manual_form;
mod mode_select;
mod outcome_viewer;
mod policy;
mod weights;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;

pub(crate) use manual_form::ManualOutcomeForm;
pub(crate) use mode_select::ModeSelect;
pub(crate) use outcome_viewer::OutcomeViewer;
pub(crate) use policy::CachePolicy;
pub(crate) use weights::WeightsEditor;

use crate::api::ApiError;

/// How often pages ask for fresh data. One second keeps counters moving
/// while someone watches without loading a loopback server noticeably.
pub(crate) const POLL_PERIOD: Duration = Duration::from_secs(1);

/// Runs `fetch` now, then every `period` while the calling component lives,
/// never two at once (a slow reply is not overtaken by the next tick).
/// The returned handle runs it again at once, e.g. after a change.
pub(crate) fn poll<F, Fut>(period: Duration, fetch: F) -> Refresh
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let busy = Rc::new(Cell::new(false));
    let tick: Rc<dyn Fn()> = Rc::new(move || {
        if busy.replace(true) {
            return;
        }
        let busy = Rc::clone(&busy);
        let fetched = fetch();
        spawn_local(async move {
            fetched.await;
            busy.set(false);
        });
    });
    tick();
    let interval_tick = Rc::clone(&tick);
    match set_interval_with_handle(move || interval_tick(), period) {
        Ok(handle) => on_cleanup(move || handle.clear()),
        Err(e) => leptos::logging::error!("cannot start polling: {e:?}"),
    }
    Refresh(StoredValue::new_local(tick))
}

/// Stores what a poll brought only when it differs, so an unchanged list
/// re-renders nothing and an unchanged error is not announced again every
/// second.
pub(crate) fn set_if_changed<T: PartialEq + Send + Sync + 'static>(signal: RwSignal<T>, value: T) {
    signal.maybe_update(|current| {
        let changed = *current != value;
        if changed {
            *current = value;
        }
        changed
    });
}

/// Runs a page's fetch again now (see [`poll`]). A handle into the reactive
/// arena, so views and event handlers can hold it freely.
#[derive(Clone, Copy)]
pub(crate) struct Refresh(StoredValue<Rc<dyn Fn()>, LocalStorage>);

impl Refresh {
    pub(crate) fn now(self) {
        if let Some(tick) = self.0.try_get_value() {
            tick();
        }
    }
}

/// A moment as its time of day; the full date and time show on hover and
/// stay in `datetime` for machines.
pub(crate) fn clock(at: &str) -> impl IntoView + use<> {
    view! {
        <time datetime=at.to_owned() title=crate::format::timestamp(at)>
            {crate::format::time_of_day(at)}
        </time>
    }
}

/// An HTTP status, or the failure kind when a call ended in one.
pub(crate) fn result_badge(status: Option<u16>, failure: Option<String>) -> AnyView {
    match (failure, status) {
        (Some(kind), _) => view! { <span class="badge failure">{kind}</span> }.into_any(),
        (None, Some(status)) => {
            view! { <span class=format!("badge status s{}", status / 100)>{status}</span> }
                .into_any()
        }
        (None, None) => view! { <span class="muted">"—"</span> }.into_any(),
    }
}

/// "over budget" and "circuit open" badges for the guards that stop a
/// function's upstream calls now.
pub(crate) fn guard_badges(guards: &[String]) -> impl IntoView + use<> {
    guards
        .iter()
        .map(|guard| {
            let text = match guard.as_str() {
                "budget_exceeded" => "over budget",
                "circuit_open" => "circuit open",
                other => other,
            }
            .to_owned();
            view! {
                <span class="badge guard" data-testid=format!("guard-{guard}")>{text}</span>
            }
        })
        .collect_view()
}

/// An API failure in words, announced to screen readers. Renders nothing
/// while there is no error.
#[component]
pub(crate) fn ErrorNote(
    /// What the user was doing, e.g. "Could not save the latency".
    #[prop(into)]
    context: String,
    #[prop(into)] error: Signal<Option<ApiError>>,
    #[prop(optional, into)] testid: String,
) -> impl IntoView {
    move || {
        error.get().map(|e| {
            view! {
                <p class="error" role="alert" data-testid=testid.clone()>
                    <strong>{context.clone()} ": "</strong>
                    {e.to_string()}
                </p>
            }
        })
    }
}

/// A short success message shown after an action, e.g. "Saved".
#[component]
pub(crate) fn OkNote(
    #[prop(into)] message: Signal<Option<String>>,
    #[prop(optional, into)] testid: String,
) -> impl IntoView {
    move || {
        message.get().map(|m| {
            view! {
                <p class="ok" role="status" data-testid=testid.clone()>
                    {m}
                </p>
            }
        })
    }
}
