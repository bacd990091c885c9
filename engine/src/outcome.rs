//! Outcomes in memory: what a caller hands in, and what the index holds.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};

use cacheow_storage::{Outcome, OutcomeId, OutcomeType, Timestamp};
use serde_json::Value;

use crate::codec::{OutcomeCodec, Preview};
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
                "is_mock_only": self.is_mock_only,
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
    /// The content as stored; its `count` and `last_seen_at` are kept in
    /// `seen` instead, so a repeat only touches two numbers.
    outcome: Outcome,
    seen: Mutex<(u64, Timestamp)>,
    prepared: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// Set when recorded; an outcome loaded from the store gets it the
    /// first time a list shows it.
    preview: OnceLock<Preview>,
    /// What it costs the memory cache: known when read from the store,
    /// measured once before a recorded one first enters the cache.
    weight: OnceLock<u64>,
}

impl std::fmt::Debug for StoredOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredOutcome")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl StoredOutcome {
    /// `json_bytes` is the size of the outcome as compact JSON, which its
    /// cache weight is estimated from.
    pub(crate) fn new(outcome: Outcome, json_bytes: usize) -> Self {
        let stored = Self::not_sized(outcome);
        let _ = stored.weight.set(estimated_weight(json_bytes));
        stored
    }

    /// An outcome whose size is measured only if it enters the cache (one
    /// just recorded, or one a list shows).
    pub(crate) fn not_sized(outcome: Outcome) -> Self {
        Self {
            seen: Mutex::new((outcome.count, outcome.last_seen_at)),
            outcome,
            prepared: OnceLock::new(),
            preview: OnceLock::new(),
            weight: OnceLock::new(),
        }
    }

    /// What it costs the memory cache. Internal: the cache needs a weight
    /// that never changes, so it is set once; a recorded outcome is measured
    /// by serialising it, off the request path, when its write settles.
    pub(crate) fn weight(&self) -> u64 {
        *self.weight.get_or_init(|| {
            estimated_weight(serde_json::to_vec(&self.outcome).map_or(0, |b| b.len()))
        })
    }

    /// The outcome's id.
    pub fn id(&self) -> OutcomeId {
        self.outcome.id
    }

    /// The outcome's content. Its `count` and `last_seen_at` are those it
    /// was stored with; `count()`, `last_seen_at()` and `snapshot()` are
    /// current.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// How many times it was recorded.
    pub fn count(&self) -> u64 {
        self.seen().0
    }

    /// When it was last recorded.
    pub fn last_seen_at(&self) -> Timestamp {
        self.seen().1
    }

    /// Since the outcome was last recorded.
    pub fn age(&self) -> std::time::Duration {
        let now = Timestamp::now().unix_millis();
        std::time::Duration::from_millis(now.saturating_sub(self.last_seen_at().unix_millis()))
    }

    /// The outcome with its current count and time.
    pub fn snapshot(&self) -> Outcome {
        let (count, last_seen_at) = self.seen();
        Outcome {
            count,
            last_seen_at,
            ..self.outcome.clone()
        }
    }

    /// Counts one more recording of the same outcome.
    pub(crate) fn bump(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.0 += 1;
        seen.1 = Timestamp::now();
    }

    fn seen(&self) -> (u64, Timestamp) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The list summary, made by `codec` once.
    pub(crate) fn preview(&self, codec: &dyn OutcomeCodec) -> &Preview {
        self.preview.get_or_init(|| codec.preview(&self.outcome))
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

/// Bytes of memory an outcome of `json_bytes` holds once replayed: its
/// parsed JSON (serde_json's values take two to three times their text),
/// the ready-to-send reply built from it (about its text again) and fixed
/// overheads. Internal: an estimate fixed at insertion, as the cache
/// requires; bench/scale.sh checks the resident size it leads to (4 KiB
/// bodies: about 19 KB each in memory, 20 KB estimated).
fn estimated_weight(json_bytes: usize) -> u64 {
    (json_bytes as u64).saturating_mul(4).saturating_add(1024)
}
