//! `cacheow-proxy` owns cacheow's HTTP side: the forward proxy (absolute-form
//! requests and CONNECT with TLS interception), reverse-proxy listeners,
//! route → function mapping, call keys, upstream calls, replay of stored
//! outcomes as HTTP, the HTTP codec it registers with the engine, and the
//! `cacheow` command line. The control API and panel it serves on its main
//! port come from `cacheow-control`; it reaches the store only through the
//! engine and knows nothing of redb.

mod body;
mod call_key;
pub mod cli;
mod codec;
pub mod config;
mod controls;
mod dispatch;
mod error;
mod forward;
mod guard;
mod headers;
mod host_pattern;
mod live;
mod lookup;
mod outcome_http;
#[cfg(test)]
mod properties;
mod redact;
mod redact_store;
mod replay;
mod request_line;
mod rewind;
mod route;
mod server;
mod state;
pub mod telemetry;
mod tls;
mod tunnel;
mod upgrade;
mod upstream;

pub use redact_store::{RedactError, redact_store};
pub use server::{RunError, run};
pub use tls::{Ca, CaError, CaPaths};
