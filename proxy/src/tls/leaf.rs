//! Per-host TLS server configs for intercepted connections, each with a leaf
//! certificate minted by the local CA on first use and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::sign::SingleCertAndKey;

use super::ca::{Ca, LeafError};
use super::{ALPN, provider};

/// Hosts kept before the cache starts over; a developer's proxy sees far
/// fewer, so this only bounds memory against a client that invents names.
const MAX_HOSTS: usize = 4096;

/// Leaf certificates by host, minted on demand.
pub(crate) struct LeafCache {
    ca: Ca,
    // Internal: a std mutex, held for a lookup or an insert and never across
    // an await; minting happens outside it.
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl LeafCache {
    pub(crate) fn new(ca: Ca) -> Self {
        Self {
            ca,
            configs: Mutex::new(HashMap::new()),
        }
    }

    /// The server config presenting a certificate for `host` (a lowercase
    /// DNS name or an IP address without brackets).
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, LeafError> {
        if let Some(config) = self.lock().get(host) {
            return Ok(config.clone());
        }
        let leaf = self.ca.mint_leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        let mut configs = self.lock();
        if configs.len() >= MAX_HOSTS {
            configs.clear();
        }
        // Internal: two connections may mint for the same host at once; the
        // first one stored wins so every later handshake sees one leaf.
        Ok(configs.entry(host.to_owned()).or_insert(config).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ServerConfig>>> {
        // A panic elsewhere cannot leave the map half-written: inserts are
        // single calls. So a poisoned lock is still a usable cache.
        self.configs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_config_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LeafCache::new(Ca::load_or_create(dir.path()).unwrap());
        let a = cache.server_config("a.example").unwrap();
        let again = cache.server_config("a.example").unwrap();
        let b = cache.server_config("b.example").unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
