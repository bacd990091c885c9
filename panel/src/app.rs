//! The router and the frame around every page.

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::api;
use crate::components::ErrorNote;
use crate::pages::{FunctionPage, FunctionsPage};

#[component]
pub(crate) fn App() -> impl IntoView {
    view! {
        <Router>
            <a class="skip" href="#main">"Skip to content"</a>
            <header class="topbar">
                <A href="/ui/" attr:class="brand" exact=true>
                    <span aria-hidden="true" class="logo">"◎"</span>
                    "cacheow"
                </A>
                <nav aria-label="Main">
                    <A href="/ui/" exact=true>"Functions"</A>
                </nav>
                <ProxyInfo/>
            </header>
            <main id="main" tabindex="-1">
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=FunctionsPage/>
                    <Route path=path!("/ui") view=FunctionsPage/>
                    <Route path=path!("/ui/functions/:id") view=FunctionPage/>
                </Routes>
            </main>
        </Router>
    }
}

/// Where to point `HTTP_PROXY`, so the panel doubles as a reminder of how to
/// record something.
#[component]
fn ProxyInfo() -> impl IntoView {
    let info = LocalResource::new(api::info);
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match info.await {
                    // The in-process library serves no proxy; its data dir
                    // is what tells one program's panel from another's.
                    Ok(info) if info.proxy_url.is_empty() => view! {
                        <p class="proxy-info" data-testid="proxy-info">
                            "in process "
                            <code>{info.data_dir}</code>
                            <span class="version">" v" {info.version}</span>
                        </p>
                    }
                    .into_any(),
                    Ok(info) => view! {
                        <p class="proxy-info" data-testid="proxy-info">
                            "proxy "
                            <code title=format!("data dir {}", info.data_dir)>{info.proxy_url}</code>
                            <span class="version">" v" {info.version}</span>
                        </p>
                    }
                    .into_any(),
                    Err(e) if e.is_unauthorized() => view! { <TokenForm/> }.into_any(),
                    Err(e) => view! {
                        <p class="proxy-info error" role="alert">
                            "Cannot read /api/info: " {e.to_string()}
                        </p>
                    }
                    .into_any(),
                }
            })}
        </Transition>
    }
}

/// Shown when cacheow answers 401: it was started with `--token` (as it
/// must be off loopback), and the panel has to send that token too.
#[component]
fn TokenForm() -> impl IntoView {
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<api::ApiError>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match api::set_token(&token.get_untracked()) {
            // Start over so every part of the page fetches again with it.
            Ok(()) => {
                let _ = window().location().reload();
            }
            Err(e) => error.set(Some(e)),
        }
    };
    view! {
        <form class="token-form" on:submit=submit role="alert" data-testid="token-form">
            <label for="api-token">
                "This cacheow needs its API token (" <code>"--token"</code> " / "
                <code>"CACHEOW_TOKEN"</code> ")"
            </label>
            <input
                id="api-token"
                type="password"
                autocomplete="off"
                prop:value=move || token.get()
                on:input=move |ev| token.set(event_target_value(&ev))
            />
            <button type="submit">"Use token"</button>
            <ErrorNote context="Token not kept" error/>
        </form>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <section class="card">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/ui/">"Back to all functions"</A></p>
        </section>
    }
}
