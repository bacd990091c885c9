use leptos::callback::UnsyncCallback;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError, Mode};
use crate::components::ErrorNote;

/// The mode as a menu that saves on change (POST …/mode). On failure the
/// menu goes back to the stored mode and the reason is shown beside it.
#[component]
pub(crate) fn ModeSelect(
    #[prop(into)] function_id: String,
    #[prop(into)] mode: Signal<Mode>,
    /// Accessible name, e.g. "Mode of GET http://…".
    #[prop(into)]
    label: Signal<String>,
    /// Called with the mode the server confirmed.
    #[prop(into)]
    on_saved: UnsyncCallback<Mode>,
    #[prop(optional, into)] id: Option<String>,
) -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let pending = RwSignal::new(false);
    let select = NodeRef::<html::Select>::new();

    let on_change = move |ev| {
        let Some(chosen) = Mode::parse(&event_target_value(&ev)) else {
            return;
        };
        let function_id = function_id.clone();
        pending.set(true);
        error.set(None);
        spawn_local(async move {
            match api::set_mode(&function_id, chosen).await {
                Ok(saved) => on_saved.run(saved),
                Err(e) => {
                    error.set(Some(e));
                    if let Some(el) = select.get_untracked() {
                        el.set_value(mode.get_untracked().as_str());
                    }
                }
            }
            pending.set(false);
        });
    };

    view! {
        <span class="mode-control">
            <select
                node_ref=select
                id=id
                class=move || format!("mode mode-{}", mode.get().as_str())
                aria-label=move || label.get()
                aria-busy=move || pending.get().to_string()
                data-testid="mode-select"
                on:change=on_change
            >
                // `selected` per option, not `value` on the select: the
                // select's value is set before its options exist.
                {Mode::ALL
                    .map(|m| {
                        view! {
                            <option value=m.as_str() prop:selected=move || mode.get() == m>
                                {m.as_str()}
                            </option>
                        }
                    })}
            </select>
            <ErrorNote context="Mode not changed" error=error testid="mode-error"/>
        </span>
    }
}
