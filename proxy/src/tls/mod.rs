//! TLS for both sides of an intercepted connection: the local CA, the leaf
//! certificates it mints per host, and the one crypto provider (ring).

mod ca;
mod leaf;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use ca::{Ca, CaError, CaPaths};
pub(crate) use leaf::LeafCache;

/// ALPN protocols offered to intercepted clients and to upstreams, best first.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider every rustls config uses. Internal: passed
/// explicitly rather than installed process-wide, so a second provider
/// compiled in by some dependency can never make rustls panic at run time.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
