//! `Engine`: the set of functions in memory, backed by the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use cacheow_storage::{
    Function, FunctionId, FunctionKind, Mode, RebuildReport, Stats, Store, Write, Writer,
};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::codec::{JsonCodec, OutcomeCodec};
use crate::error::EngineError;
use crate::function::{FunctionHandle, FunctionState};
use crate::limits::Spending;
use crate::outcomes::{HotCache, Outcomes, hot_cache};
use crate::policy::Budget;

/// How often changed counters are written to the index.
const STATS_FLUSH_EVERY: Duration = Duration::from_millis(500);

type FunctionMap = RwLock<HashMap<FunctionId, Arc<FunctionState>>>;

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Mode of functions seen for the first time.
    pub default_mode: Mode,
    /// Wait for each recorded outcome to be committed before replying.
    pub durable: bool,
    /// Bytes of memory the cache of hot outcomes may hold (estimated);
    /// every other outcome stays in the store until a call needs it.
    pub memory_cache_bytes: u64,
    /// A cost guard over every function together, beside each function's
    /// own `max_upstream_calls`.
    pub max_upstream_calls: Option<Budget>,
}

impl EngineOptions {
    /// The default size of the cache of hot outcomes: 256 MiB.
    pub const DEFAULT_MEMORY_CACHE_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            default_mode: Mode::default(),
            durable: false,
            memory_cache_bytes: Self::DEFAULT_MEMORY_CACHE_BYTES,
            max_upstream_calls: None,
        }
    }
}

/// What identifies a function, and how to set it up when first seen.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Identity string; the id is its blake3 hash.
    pub name: String,
    /// What it wraps.
    pub kind: FunctionKind,
    /// Initial mode (else the engine's default mode).
    pub initial_mode: Option<Mode>,
    /// Settings kept in the function's config, updated when they change.
    /// Shared, because a proxy builds a spec for every request.
    pub config: Arc<Map<String, Value>>,
    /// Settings applied only when the function is created (the API may
    /// change them later).
    pub initial_config: Arc<Map<String, Value>>,
}

impl FunctionSpec {
    /// A spec with no initial mode and no config.
    pub fn new(name: impl Into<String>, kind: FunctionKind) -> Self {
        Self {
            name: name.into(),
            kind,
            initial_mode: None,
            config: Arc::default(),
            initial_config: Arc::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) options: EngineOptions,
    pub(crate) writer: Writer,
    store: Arc<Store>,
    cache: Arc<HotCache>,
    functions: Arc<FunctionMap>,
    codecs: RwLock<HashMap<FunctionKind, Arc<dyn OutcomeCodec>>>,
    /// The codec of kinds nobody registered one for.
    json_codec: Arc<dyn OutcomeCodec>,
    /// Upstream calls of every function, for the global budget.
    spending: Spending,
}

impl Shared {
    /// The codec of `kind`: the registered one, else plain JSON.
    pub(crate) fn codec(&self, kind: FunctionKind) -> Arc<dyn OutcomeCodec> {
        self.codecs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| self.json_codec.clone())
    }

    /// The global budget and what it has spent, when one is set.
    pub(crate) fn global_budget(&self) -> Option<(&Spending, &Budget)> {
        self.options
            .max_upstream_calls
            .as_ref()
            .map(|budget| (&self.spending, budget))
    }
}

/// The engine. Cheap to clone; the last clone dropped flushes everything to
/// disk.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.data_dir())
            .finish()
    }
}

// === impl Engine ===

impl Engine {
    /// Opens the data dir and loads every function (not its outcomes,
    /// which are read when a call or a list needs them).
    pub fn open(data_dir: &Path, options: EngineOptions) -> Result<Engine, EngineError> {
        let store = Arc::new(Store::open(data_dir)?);
        let cache = Arc::new(hot_cache(options.memory_cache_bytes));
        let functions: Arc<FunctionMap> = Arc::new(RwLock::new(HashMap::new()));
        for record in store.functions()? {
            // Internal: keyed by the stored id, not the name's hash, so a
            // function renamed by hand in its file stays reachable by its id.
            let id = record.function.id;
            let outcomes = Outcomes::new(id, record.outcome_count, store.clone(), cache.clone());
            let state = FunctionState::new(record.function, record.stats, outcomes);
            functions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Arc::new(state));
        }
        let failed = functions.clone();
        let writer = Writer::spawn(store.clone(), move |id, _| {
            if let Some(state) = failed.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
                state.note_persist_failure();
            }
        });
        let shared = Arc::new(Shared {
            options,
            writer,
            store,
            cache,
            functions,
            codecs: RwLock::default(),
            json_codec: Arc::new(JsonCodec),
            spending: Spending::default(),
        });
        spawn_stats_flusher(Arc::downgrade(&shared));
        Ok(Engine { shared })
    }

    /// How many acknowledged writes a hard kill can lose at most: the
    /// bounded writer queue plus the batch being committed.
    pub fn loss_window(&self) -> usize {
        self.shared.writer.loss_window()
    }

    /// Makes `codec` check, normalise and preview the outcomes of every
    /// function of `kind` (replacing an earlier one).
    pub fn register_codec(&self, kind: FunctionKind, codec: Arc<dyn OutcomeCodec>) {
        self.shared
            .codecs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind, codec);
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.shared.store.data_dir().to_owned()
    }

    /// The function with this identity, created (and persisted) if new.
    /// Settings in `spec.config` are merged into an existing function's
    /// config when they differ.
    pub fn ensure_function(&self, spec: FunctionSpec) -> FunctionHandle {
        let id = FunctionId::for_identity(&spec.name);
        if let Some(state) = self.map().get(&id).cloned() {
            let handle = self.handle(state);
            // Internal: this runs on every proxied request; compare in place
            // rather than cloning the function.
            if !spec.config.is_empty() && handle.config_differs(&spec.config) {
                handle.merge_config((*spec.config).clone());
            }
            return handle;
        }
        let mut map = self
            .shared
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get(&id).cloned() {
            drop(map);
            return self.handle(state);
        }
        let mut function = Function::new(spec.name, spec.kind);
        function.mode = spec
            .initial_mode
            .unwrap_or(self.shared.options.default_mode);
        function.config = (*spec.initial_config).clone();
        function
            .config
            .extend(spec.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        let outcomes = Outcomes::new(id, 0, self.shared.store.clone(), self.shared.cache.clone());
        let state = Arc::new(FunctionState::new(
            function.clone(),
            Stats::default(),
            outcomes,
        ));
        map.insert(id, state.clone());
        drop(map);
        tracing::info!(function = %id, name = %function.name, mode = %function.mode, "new function");
        self.shared.writer.submit(Write::PutFunction(function));
        self.handle(state)
    }

    /// The function with this id.
    pub fn function(&self, id: &FunctionId) -> Option<FunctionHandle> {
        self.map().get(id).cloned().map(|state| self.handle(state))
    }

    /// The function with this id, or `UnknownFunction`.
    pub fn require(&self, id: &FunctionId) -> Result<FunctionHandle, EngineError> {
        self.function(id).ok_or(EngineError::UnknownFunction(*id))
    }

    /// Every function, sorted by name.
    pub fn functions(&self) -> Vec<FunctionHandle> {
        let mut all: Vec<_> = self
            .map()
            .values()
            .cloned()
            .map(|s| self.handle(s))
            .collect();
        all.sort_by_cached_key(FunctionHandle::name);
        all
    }

    /// Re-reads the JSON mirror (one function, or all) into the index and the
    /// memory, after every queued write has landed.
    pub async fn rebuild_index(
        &self,
        only: Option<FunctionId>,
    ) -> Result<RebuildReport, EngineError> {
        if let Some(id) = only {
            self.require(&id)?;
        }
        let (tx, rx) = oneshot::channel();
        self.shared.writer.rebuild(only, move |result| {
            let _ = tx.send(result);
        });
        let report = rx
            .await
            .map_err(|_| cacheow_storage::RebuildError::WriterGone)??;
        let stored = self.shared.store.functions()?;
        let mut map = self
            .shared
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if only.is_none() {
            let kept: std::collections::HashSet<FunctionId> =
                stored.iter().map(|s| s.function.id).collect();
            map.retain(|id, _| kept.contains(id));
        }
        for record in stored {
            let id = record.function.id;
            if only.is_some_and(|only| only != id) {
                continue;
            }
            match map.get(&id) {
                Some(state) => state.reload(record.function, record.outcome_count),
                None => {
                    let outcomes = Outcomes::new(
                        id,
                        record.outcome_count,
                        self.shared.store.clone(),
                        self.shared.cache.clone(),
                    );
                    let state = FunctionState::new(record.function, record.stats, outcomes);
                    map.insert(id, Arc::new(state));
                }
            }
        }
        Ok(report)
    }

    /// Writes changed counters and waits until everything queued is on disk.
    pub fn flush(&self) {
        flush_stats(&self.shared);
        self.shared.writer.flush();
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<FunctionId, Arc<FunctionState>>> {
        self.shared
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, state: Arc<FunctionState>) -> FunctionHandle {
        FunctionHandle {
            state,
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        flush_stats(self);
    }
}

fn flush_stats(shared: &Shared) {
    let states: Vec<_> = shared
        .functions
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for state in states {
        state.flush_dirty(&shared.writer);
    }
}

/// Counters change on every call; writing them on a timer keeps the replay
/// path free of disk work.
fn spawn_stats_flusher(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("cacheow-stats".into())
        .spawn(move || {
            loop {
                std::thread::sleep(STATS_FLUSH_EVERY);
                match shared.upgrade() {
                    Some(shared) => flush_stats(&shared),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stats flusher; counters are saved at shutdown only");
    }
}
