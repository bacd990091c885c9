//! Per-call overrides for the calls inside a scope: the library's twin of
//! the proxy's request headers (`Cache-Control: no-cache`, `no-store`,
//! `only-if-cached`, `x-cacheow-mode`). A thread-local set around each
//! poll, so it works under any executor and never leaks into other tasks.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use cacheow_engine::Overrides;

thread_local! {
    static CURRENT: Cell<Overrides> = Cell::new(Overrides::default());
}

/// What the calls made now on this thread were asked for.
pub(crate) fn current() -> Overrides {
    CURRENT.with(Cell::get)
}

/// Puts the previous overrides back when dropped, also on a panic.
struct Restore(Overrides);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

fn enter(overrides: Overrides) -> Restore {
    Restore(CURRENT.with(|current| current.replace(overrides)))
}

/// Runs `f` with `overrides` applied to every wrapped call it makes on this
/// thread, e.g. a refresh of everything it reads:
///
/// ```no_run
/// # #[cacheow::cacheow] fn fetch(id: u32) -> String { id.to_string() }
/// let fresh = cacheow::with_overrides(
///     cacheow::Overrides { refresh: true, ..Default::default() },
///     || fetch(7),
/// );
/// ```
pub fn with_overrides<R>(overrides: Overrides, f: impl FnOnce() -> R) -> R {
    let _restore = enter(overrides);
    f()
}

/// `future` with `overrides` applied to every wrapped call it makes.
pub fn with_overrides_async<F: Future>(overrides: Overrides, future: F) -> Scoped<F> {
    Scoped { overrides, future }
}

pin_project_lite::pin_project! {
    /// A future whose wrapped calls carry overrides (see
    /// [`with_overrides_async`]).
    pub struct Scoped<F> {
        overrides: Overrides,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = enter(*this.overrides);
        this.future.poll(cx)
    }
}
