//! `cacheow` records, replays and mocks plain Rust functions: put
//! `#[cacheow]` on a `fn` or `async fn` and, with `CACHEOW_ENABLE=1`, each
//! call goes through the same engine, data dir and panel as the cacheow
//! HTTP proxy. This crate owns the in-process side: settings from the
//! environment, the [`Manager`], turning arguments into call keys and values
//! into outcomes (serde), and replay; it re-exports the macro
//! (`cacheow-macros`) and the engine's types (`cacheow-engine`).
//!
//! Without `CACHEOW_ENABLE=1` a wrapped function runs its own body after one
//! check of a flag that is set once per process.
//!
//! ```no_run
//! use cacheow::{Mode, cacheow};
//!
//! #[cacheow]
//! fn slow_square(x: u64) -> u64 {
//!     std::thread::sleep(std::time::Duration::from_secs(1));
//!     x * x
//! }
//!
//! if let Some(manager) = cacheow::get_manager() {
//!     manager.set_mode(cacheow::function_id!(slow_square), Mode::Cache);
//! }
//! assert_eq!(slow_square(12), 144); // recorded on the first call…
//! assert_eq!(slow_square(12), 144); // …replayed at once on the second
//! ```
//!
//! Environment: `CACHEOW_ENABLE` (off unless `1`), `CACHEOW_DATA_DIR`
//! (`.cacheow`), `CACHEOW_START_SERVER` (`1`), `CACHEOW_SERVER_HOST`
//! (`127.0.0.1`), `CACHEOW_SERVER_PORT` (`8765`; `0` picks a free one),
//! `CACHEOW_TOKEN`, `CACHEOW_MEMORY_CACHE_BYTES` (256 MiB of hot outcomes).

mod call;
mod codec;
mod delay;
mod manager;
mod rust_types;
mod scope;
mod server;
mod stream;

pub use cacheow_engine::{
    CallKey, Engine, EngineError, FunctionHandle, FunctionId, FunctionKind, MockEntry, Mode,
    NewOutcome, Outcome, OutcomeId, OutcomeType, Overrides, Stats,
};
pub use cacheow_macros::cacheow;
pub use manager::{InitError, Manager, get_manager, init_error};
pub use scope::{Scoped, with_overrides, with_overrides_async};

/// The stable id of a wrapped function, from its path as written at the
/// call site: `cacheow::function_id!(crate::api::fetch_user)` or
/// `function_id!(Client::complete)` for a method. The id is the blake3 hash
/// of the function's module path and name, so it survives rebuilds and
/// reorderings; moving or renaming the function changes it (pin it with
/// `#[cacheow(name = "…")]`, then use `FunctionId::for_identity("…")`).
#[macro_export]
macro_rules! function_id {
    ($($path:tt)+) => {
        $crate::__private::function_id_of(&$($path)+)
    };
}

/// What the code `#[cacheow]` generates calls. Not a public API: it changes
/// with the macro.
#[doc(hidden)]
pub mod __private {
    pub use cacheow_engine::FunctionKind;

    pub use crate::call::{
        Call, KeyBuilder, SettingValue, Site, assert_key_arg, assert_return, identity_of,
        typed_future,
    };
    pub use crate::codec::{Codec, Encoded, Fallible, KeyArg, Plain, ReturnValue};
    pub use crate::stream::{CallStream, Recorder, stream};

    /// The id `#[cacheow]` gives the function `item` (see `function_id!`).
    pub fn function_id_of<F>(item: &F) -> cacheow_engine::FunctionId {
        cacheow_engine::FunctionId::for_identity(std::any::type_name_of_val(item))
    }
}
