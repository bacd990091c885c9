//! The process-wide manager: settings from the environment, the engine on
//! the data dir, the in-process panel, and runtime control of functions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cacheow_engine::{
    Engine, EngineError, EngineOptions, FunctionHandle, FunctionId, FunctionKind, FunctionSpec,
    MockEntry, Mode, Policy,
};

use crate::call::SettingValue;
use crate::rust_types::{OutcomeCheckFn, RustTypes};

/// Where the port goes when `CACHEOW_SERVER_PORT` is unset, as in the proxy.
const DEFAULT_PORT: u16 = 8765;

/// Settings read from the environment once, at the first wrapped call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) enabled: bool,
    pub(crate) data_dir: PathBuf,
    pub(crate) start_server: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) token: Option<String>,
    pub(crate) memory_cache_bytes: u64,
}

impl Settings {
    pub(crate) fn from_env() -> Settings {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Settings {
        let flag = |name: &str, default: bool| match get(name) {
            None => default,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "" | "0" | "false" | "no" | "off" => false,
                _ => {
                    tracing::warn!(%name, %value, "not a boolean (use 1 or 0); using {default}");
                    default
                }
            },
        };
        let port = match get("CACHEOW_SERVER_PORT") {
            None => DEFAULT_PORT,
            Some(text) => text.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(value = %text, "CACHEOW_SERVER_PORT is not a port number; using {DEFAULT_PORT}");
                DEFAULT_PORT
            }),
        };
        let default_cache = EngineOptions::DEFAULT_MEMORY_CACHE_BYTES;
        let memory_cache_bytes = match get("CACHEOW_MEMORY_CACHE_BYTES") {
            None => default_cache,
            Some(text) => text.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(value = %text, "CACHEOW_MEMORY_CACHE_BYTES is not a whole number of bytes; using {default_cache}");
                default_cache
            }),
        };
        Settings {
            enabled: flag("CACHEOW_ENABLE", false),
            data_dir: get("CACHEOW_DATA_DIR")
                .filter(|dir| !dir.is_empty())
                .map_or_else(|| PathBuf::from(".cacheow"), PathBuf::from),
            start_server: flag("CACHEOW_START_SERVER", true),
            host: get("CACHEOW_SERVER_HOST")
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| "127.0.0.1".into()),
            port,
            token: get("CACHEOW_TOKEN").filter(|token| !token.is_empty()),
            memory_cache_bytes,
        }
    }
}

/// Why cacheow could not start although `CACHEOW_ENABLE=1`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Another cacheow owns the data dir.
    #[error(
        "the data dir `{}` is in use by another cacheow (a running `cacheow serve`, or another \
         program with CACHEOW_ENABLE=1): stop it, or set CACHEOW_DATA_DIR to another directory",
        data_dir.display()
    )]
    DataDirInUse {
        /// The data dir.
        data_dir: PathBuf,
    },
    /// The data dir could not be opened.
    #[error("cannot open the cacheow data dir `{}`: {source}", data_dir.display())]
    Open {
        /// The data dir.
        data_dir: PathBuf,
        /// The cause.
        source: EngineError,
    },
}

/// Runtime control of the wrapped functions, like the panel's.
pub struct Manager {
    engine: Engine,
    server: Option<SocketAddr>,
    types: Arc<RustTypes>,
    /// Modes and latencies set for functions not called yet: applied at
    /// their first call, which is when they come into being.
    pending: Mutex<HashMap<FunctionId, Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    mode: Option<Mode>,
    latency_ms: Option<u64>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("data_dir", &self.engine.data_dir())
            .field("server", &self.server)
            .finish()
    }
}

impl Manager {
    /// Opens the data dir and, if asked, starts the panel.
    pub(crate) fn start(settings: &Settings) -> Result<Manager, InitError> {
        let options = EngineOptions {
            memory_cache_bytes: settings.memory_cache_bytes,
            ..EngineOptions::default()
        };
        let engine = Engine::open(&settings.data_dir, options).map_err(|e| match &e {
            EngineError::Open(open) if open.is_locked() => InitError::DataDirInUse {
                data_dir: settings.data_dir.clone(),
            },
            _ => InitError::Open {
                data_dir: settings.data_dir.clone(),
                source: e,
            },
        })?;
        let types = Arc::new(RustTypes::default());
        for kind in [
            FunctionKind::Sync,
            FunctionKind::Async,
            FunctionKind::Stream,
        ] {
            engine.register_codec(kind, types.clone());
        }
        let server = if settings.start_server {
            crate::server::start(&engine, settings)
        } else {
            None
        };
        Ok(Manager {
            engine,
            server,
            types,
            pending: Mutex::default(),
        })
    }

    /// The engine, for everything this type does not wrap.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.engine.data_dir()
    }

    /// Where the in-process panel and API listen, if they were started.
    pub fn server_address(&self) -> Option<SocketAddr> {
        self.server
    }

    /// A function that has been called at least once (in this or an earlier
    /// run on the same data dir).
    pub fn function(&self, id: FunctionId) -> Option<FunctionHandle> {
        self.engine.function(&id)
    }

    /// Every function in the data dir, wrapped Rust functions and HTTP routes
    /// alike, sorted by name.
    pub fn functions(&self) -> Vec<FunctionHandle> {
        self.engine.functions()
    }

    /// Sets a function's mode. A function not called yet gets it at its
    /// first call.
    pub fn set_mode(&self, id: FunctionId, mode: Mode) {
        match self.engine.function(&id) {
            Some(function) => function.set_mode(mode),
            None => self.update_pending(id, |pending| pending.mode = Some(mode)),
        }
    }

    /// Sets the delay added to cache and mock replies, keeping any jitter. A
    /// function not called yet gets it at its first call.
    pub fn set_latency(&self, id: FunctionId, latency_ms: u64) {
        match self.engine.function(&id) {
            Some(function) => {
                function.set_latency(latency_ms, function.snapshot().latency_jitter_ms);
            }
            None => self.update_pending(id, |pending| pending.latency_ms = Some(latency_ms)),
        }
    }

    /// Sets the weighted outcomes mock mode chooses from. The outcomes must
    /// exist, so the function must have been called.
    pub fn set_mock_entries(
        &self,
        id: FunctionId,
        entries: Vec<MockEntry>,
    ) -> Result<(), EngineError> {
        self.engine.require(&id)?.set_mock_entries(entries)
    }

    /// Writes every pending change to disk and waits for it. Recordings are
    /// on disk before the wrapped call returns; counters of replayed calls
    /// are written every half second, and at once by this.
    pub fn flush(&self) {
        self.engine.flush();
    }

    fn update_pending(&self, id: FunctionId, update: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        update(pending.entry(id).or_default());
    }

    /// The function for a wrapped function's first enabled call.
    /// The function of a wrapped site, with the cache settings its
    /// attribute gives. A setting that is not valid is a bug in the code
    /// that wrote it, so the first call panics and says which and why.
    pub(crate) fn ensure(
        &self,
        kind: FunctionKind,
        identity: &str,
        settings: &[(&str, SettingValue)],
    ) -> FunctionHandle {
        let mut config = serde_json::Map::new();
        for (key, value) in settings {
            let value = value.to_json();
            if let Some(Err(reason)) = Policy::check(key, &value) {
                panic!("cacheow: #[cacheow({key} = {value})] on `{identity}`: {reason}");
            }
            config.insert((*key).to_owned(), value);
        }
        let mut spec = FunctionSpec::new(identity, kind);
        spec.config = Arc::new(config);
        let function = self.engine.ensure_function(spec);
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&function.id());
        if let Some(pending) = pending {
            if let Some(mode) = pending.mode {
                function.set_mode(mode);
            }
            if let Some(latency_ms) = pending.latency_ms {
                function.set_latency(latency_ms, function.snapshot().latency_jitter_ms);
            }
        }
        function
    }

    pub(crate) fn register_check(&self, id: FunctionId, check: OutcomeCheckFn) {
        self.types.register(id, check);
    }
}

/// Whether cacheow is on in this process, decided once.
enum State {
    Disabled,
    Ready(Manager),
    Failed(InitError),
}

static STATE: OnceLock<State> = OnceLock::new();

/// Set once cacheow is known to be off: the whole cost of a wrapped call
/// then is one relaxed load and a branch (see benches/overhead.rs).
static OFF: AtomicBool = AtomicBool::new(false);

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let settings = Settings::from_env();
        if !settings.enabled {
            return State::Disabled;
        }
        match Manager::start(&settings) {
            Ok(manager) => State::Ready(manager),
            Err(e) => {
                // Internal: the user asked for cacheow with CACHEOW_ENABLE=1;
                // a log line alone may go nowhere.
                eprintln!("cacheow: {e}. Wrapped functions run unrecorded in this process.");
                tracing::error!(error = %e, "cacheow could not start");
                State::Failed(e)
            }
        }
    })
}

/// The manager, or `None` when cacheow is off (`CACHEOW_ENABLE` is not `1`)
/// or could not start (see [`init_error`]).
#[inline]
pub fn get_manager() -> Option<&'static Manager> {
    if OFF.load(Ordering::Relaxed) {
        return None;
    }
    manager_slow()
}

#[inline(never)]
fn manager_slow() -> Option<&'static Manager> {
    match state() {
        State::Ready(manager) => Some(manager),
        State::Disabled | State::Failed(_) => {
            OFF.store(true, Ordering::Relaxed);
            None
        }
    }
}

/// Why cacheow is not running although `CACHEOW_ENABLE=1`.
pub fn init_error() -> Option<&'static InitError> {
    match state() {
        State::Failed(e) => Some(e),
        State::Disabled | State::Ready(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn off_unless_enabled_and_seed_defaults_otherwise() {
        let defaults = settings(&[]);
        assert!(!defaults.enabled);
        assert!(defaults.start_server);
        assert_eq!(defaults.data_dir, PathBuf::from(".cacheow"));
        assert_eq!((defaults.host.as_str(), defaults.port), ("127.0.0.1", 8765));
        for on in ["1", "true", "YES", "on"] {
            assert!(settings(&[("CACHEOW_ENABLE", on)]).enabled, "{on}");
        }
        for off in ["0", "", "false", "maybe"] {
            assert!(!settings(&[("CACHEOW_ENABLE", off)]).enabled, "{off}");
        }
        let custom = settings(&[
            ("CACHEOW_START_SERVER", "0"),
            ("CACHEOW_SERVER_PORT", "9100"),
            ("CACHEOW_DATA_DIR", "/tmp/x"),
        ]);
        assert!(!custom.start_server);
        assert_eq!(custom.port, 9100);
        assert_eq!(custom.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(settings(&[("CACHEOW_SERVER_PORT", "http")]).port, 8765);
        assert_eq!(
            settings(&[("CACHEOW_MEMORY_CACHE_BYTES", "1048576")]).memory_cache_bytes,
            1 << 20
        );
        assert_eq!(
            settings(&[("CACHEOW_MEMORY_CACHE_BYTES", "lots")]).memory_cache_bytes,
            EngineOptions::DEFAULT_MEMORY_CACHE_BYTES
        );
    }
}
