//! The router and the frame around every page.

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::api;
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
                    Ok(info) => view! {
                        <p class="proxy-info" data-testid="proxy-info">
                            "proxy "
                            <code title=format!("data dir {}", info.data_dir)>{info.proxy_url}</code>
                            <span class="version">" v" {info.version}</span>
                        </p>
                    }
                    .into_any(),
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

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <section class="card">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/ui/">"Back to all functions"</A></p>
        </section>
    }
}
