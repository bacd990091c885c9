//! `cacheow-control` owns cacheow's control side: the JSON control API
//! (docs/API.md), the panel (built from `panel/` by this crate's build
//! script and embedded), and the serving of connections that the API and
//! the proxy share (timeouts, first-request deadline, graceful shutdown).
//! It knows the engine but not what an outcome means: each kind of function
//! registers an [`OutcomeCodec`](cacheow_engine::OutcomeCodec) with the
//! engine (the proxy for HTTP, the library for Rust types), and the API asks
//! it to check, normalise and preview outcomes. It must not know HTTP
//! outcomes, TLS or the command line.
//!
//! The proxy serves [`Control`] on its main port; a program using the
//! `cacheow` library serves it alone with [`serve_control`].

mod api;
mod connection;
mod deadline;
mod panel;
mod serve;

pub use api::{Control, LookedUp, Lookup, json_response, tokens_match};
pub use connection::{Connection, ConnectionTimeouts, accept, serve_connection};
pub use deadline::Deadline;
pub use serve::{ControlOptions, serve_control};
