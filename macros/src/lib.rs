//! `cacheow-macros` owns the `#[cacheow]` attribute: it checks a function and
//! rewrites it so that each call goes through `cacheow`'s runtime. It knows
//! only the `::cacheow::__private` items the generated code calls, nothing of
//! the engine or the store. Use it through the `cacheow` crate
//! (`use cacheow::cacheow;`).
//!
//! Layout: `args` parses the options, `validate` checks the function and
//! decides how to wrap it (with a spanned error for each misuse), `expand`
//! writes the code.

mod args;
mod expand;
mod validate;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Records, replays or mocks each call of a function through cacheow.
///
/// With `CACHEOW_ENABLE` unset the body runs as written. Otherwise each call
/// is keyed by its arguments (serialized with serde) and, depending on the
/// function's mode, runs and is recorded, or is answered from a recorded or
/// mocked outcome.
///
/// It wraps `fn` and `async fn`: free functions, methods (`self`, `&self`,
/// `&mut self`, never part of the key) and associated functions. A
/// `Result<T, E>` return (any path ending in `Result`, such as
/// `io::Result<T>`) records `Err` as an error outcome. A plain `fn`
/// returning `impl Stream<Item = I>`, `Pin<Box<dyn Stream<Item = I>>>`,
/// `BoxStream<'_, I>` or `LocalBoxStream<'_, I>` is recorded item by item.
///
/// Arguments must implement `serde::Serialize`; the return value (or item)
/// `Serialize` and `DeserializeOwned`. Generic functions and `impl Trait`
/// arguments are rejected: wrap a concrete function instead.
///
/// # Options
///
/// - `ignore = "a, b"`: leave these arguments out of the call key (a
///   client, a logger, a deadline).
/// - `name = "billing::fetch_invoice"`: the function's identity in the
///   store, instead of its module path, so that moving or renaming the
///   function keeps its recordings.
/// - Cache settings, as in the proxy's config file and API, applied each
///   time the program starts (a bad value panics at the first call, saying
///   why): `ttl = "1h"`, `stale_if_error = "forever"`, `cache_if = "ok"`
///   (replay `Ok` results only; the default `"any"` replays `Err` too),
///   `max_upstream_calls = "100/1h"` (past it the call panics with
///   `budget_exceeded`), `coalesce = false` (identical concurrent calls
///   otherwise run the body once), `stale_while_revalidate = "10m"` (stale
///   results answer while one call refreshes them in the foreground).
///
/// ```
/// use cacheow::cacheow;
///
/// #[cacheow(ignore = "verbose", name = "docs::add")]
/// fn add(a: u32, b: u32, verbose: bool) -> u32 {
///     if verbose {
///         println!("{a} + {b}");
///     }
///     a + b
/// }
///
/// assert_eq!(add(1, 2, false), 3);
/// ```
#[proc_macro_attribute]
pub fn cacheow(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cacheow(args.into(), item.into()).into()
}
