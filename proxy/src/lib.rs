//! `cacheow-proxy` owns cacheow's HTTP side: the forward proxy (absolute-form
//! requests and CONNECT), reverse-proxy listeners, route → function mapping,
//! call keys, upstream calls, replay of stored outcomes as HTTP, the control
//! API (also served alone for the in-process library, `control`) and the
//! `cacheow` command line. It reaches storage only through the
//! `cacheow` engine and knows nothing of redb.

mod api;
mod body;
mod call_key;
pub mod cli;
pub mod config;
mod connection;
pub mod control;
mod deadline;
mod error;
mod forward;
mod guard;
mod headers;
mod host_pattern;
mod outcome_http;
mod panel;
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
mod upstream;

pub use redact_store::{RedactError, redact_store};
pub use server::{RunError, run};
pub use tls::{Ca, CaError, CaPaths};
