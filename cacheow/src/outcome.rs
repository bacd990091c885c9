//! Outcomes in memory: what a caller hands in, and what the index holds.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cacheow_storage::{CallKey, Outcome, OutcomeId, OutcomeType};
use serde_json::Value;

use crate::keys::canonical_json;

/// An outcome about to be recorded.
#[derive(Debug, Clone)]
pub struct NewOutcome {
    /// Return, exception or stream.
    pub outcome_type: OutcomeType,
    /// The returned value.
    pub value: Value,
    /// Error kind, for exceptions.
    pub exception_type: Option<String>,
    /// Error message, for exceptions.
    pub exception_message: Option<String>,
    /// How long the real call took.
    pub duration_ms: f64,
    /// The call that produced it, for people to read.
    pub request: Option<Value>,
    /// The bytes that make two outcomes "the same" (defaults to the
    /// canonical form of type, value and exception).
    pub fingerprint: Option<Vec<u8>>,
    /// Added by hand.
    pub is_manual: bool,
    /// Serves mock mode only.
    pub is_mock_only: bool,
}

impl NewOutcome {
    /// A returned value.
    pub fn returned(value: Value) -> Self {
        Self {
            outcome_type: OutcomeType::Return,
            value,
            exception_type: None,
            exception_message: None,
            duration_ms: 0.0,
            request: None,
            fingerprint: None,
            is_manual: false,
            is_mock_only: false,
        }
    }

    /// A failure of kind `exception_type`.
    pub fn exception(exception_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            outcome_type: OutcomeType::Exception,
            exception_type: Some(exception_type.into()),
            exception_message: Some(message.into()),
            ..Self::returned(Value::Null)
        }
    }

    /// The fingerprint used for the outcome id.
    pub(crate) fn fingerprint_bytes(&self) -> Vec<u8> {
        if let Some(bytes) = &self.fingerprint {
            return bytes.clone();
        }
        let mut out = Vec::new();
        canonical_json(
            &serde_json::json!({
                "outcome_type": self.outcome_type,
                "value": self.value,
                "exception_type": self.exception_type,
                "exception_message": self.exception_message,
            }),
            &mut out,
        );
        out
    }
}

/// An outcome held by the in-memory index, with a slot where the layer that
/// replays it can keep a ready-to-send form (built once, reused on every
/// replay).
pub struct StoredOutcome {
    outcome: Outcome,
    prepared: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for StoredOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredOutcome")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl StoredOutcome {
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            prepared: OnceLock::new(),
        }
    }

    /// The stored outcome.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// The replay-ready form of this outcome, built by `build` the first time
    /// it is asked for. A caller asking for another type gets a fresh value.
    pub fn prepared<T: Any + Send + Sync>(&self, build: impl FnOnce(&Outcome) -> T) -> Arc<T> {
        if let Some(ready) = self.prepared.get() {
            if let Ok(ready) = ready.clone().downcast::<T>() {
                return ready;
            }
            return Arc::new(build(&self.outcome));
        }
        let ready = Arc::new(build(&self.outcome));
        // Internal: losing a race to another thread just drops our copy.
        let _ = self.prepared.set(ready.clone());
        ready
    }
}

/// One function's outcomes, by id and by call key.
#[derive(Default)]
pub(crate) struct OutcomeIndex {
    by_id: HashMap<OutcomeId, Arc<StoredOutcome>>,
    /// Ids per call key, most recently recorded last.
    by_key: HashMap<CallKey, Vec<OutcomeId>>,
}

impl OutcomeIndex {
    pub(crate) fn insert(&mut self, outcome: Outcome) -> Arc<StoredOutcome> {
        let id = outcome.id;
        if let Some(key) = outcome.call_key {
            let ids = self.by_key.entry(key).or_default();
            ids.retain(|other| *other != id);
            ids.push(id);
        }
        let stored = Arc::new(StoredOutcome::new(outcome));
        self.by_id.insert(id, stored.clone());
        stored
    }

    pub(crate) fn remove(&mut self, id: &OutcomeId) -> Option<Arc<StoredOutcome>> {
        let removed = self.by_id.remove(id)?;
        if let Some(key) = removed.outcome.call_key
            && let Some(ids) = self.by_key.get_mut(&key)
        {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
        Some(removed)
    }

    pub(crate) fn get(&self, id: &OutcomeId) -> Option<&Arc<StoredOutcome>> {
        self.by_id.get(id)
    }

    /// The latest outcome for `key` that cache mode may replay.
    pub(crate) fn latest_for_key(&self, key: &CallKey) -> Option<&Arc<StoredOutcome>> {
        self.by_key
            .get(key)?
            .iter()
            .rev()
            .filter_map(|id| self.by_id.get(id))
            .find(|o| !o.outcome.is_mock_only)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<StoredOutcome>> {
        self.by_id.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}
