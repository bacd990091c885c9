//! `cacheow-engine` owns the engine: for each call to a wrapped function it decides,
//! from the function's mode and cache policy, whether to call the real thing
//! or replay a stored outcome (cache key match within its ttl, a stale one
//! while it refreshes or when the upstream fails, or a weighted mock choice),
//! coalesces identical calls in flight, guards the upstream (budget, circuit
//! breaker), applies latency, keeps stats and hands new outcomes to the
//! store's background writer; a bounded cache keeps hot outcomes in memory.
//! It knows nothing of HTTP or TLS: the proxy maps requests to calls and
//! outcomes to responses.
//!
//! ```
//! use cacheow_engine::{CallKey, CallKeyExt, Decision, Engine, EngineOptions, FunctionKind, FunctionSpec, Mode, NewOutcome};
//! # let dir = tempfile_dir();
//! let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
//! let function = engine.ensure_function(FunctionSpec::new("my_crate::slow", FunctionKind::Sync));
//! function.set_mode(Mode::Cache);
//! let key = CallKey::of_bytes(b"args");
//! assert!(matches!(function.decide(&key).unwrap(), Decision::Call { .. }));
//! function.record(Some(key), NewOutcome::returned(serde_json::json!(42)));
//! match function.decide(&key).unwrap() {
//!     Decision::Replay { outcome, .. } => assert_eq!(outcome.outcome().value, 42),
//!     other => panic!("expected a replay, got {other:?}"),
//! }
//! # fn tempfile_dir() -> std::path::PathBuf {
//! #     let dir = std::env::temp_dir().join(format!("cacheow-doc-{}", std::process::id()));
//! #     let _ = std::fs::remove_dir_all(&dir);
//! #     dir
//! # }
//! ```

mod codec;
mod counters;
mod decide;
mod engine;
mod error;
mod flights;
mod function;
mod invalidate;
mod keys;
mod limits;
mod outcome;
mod outcomes;
mod park;
pub mod policy;

pub use cacheow_storage::{
    CallKey, Function, FunctionId, FunctionKind, IdError, MockEntry, Mode, OpenError, Outcome,
    OutcomeId, OutcomeType, ParseModeError, RebuildFailure, RebuildReport, Stats, Timestamp,
    WriteError,
};
pub use codec::{CodecError, MAX_WAIT_MS, OutcomeCodec, Preview, json_prefix, json_preview};
pub use decide::{
    AnyOutcome, CallReason, Decision, Guard, Inspection, Overrides, Refusal, ReplayFilter, Source,
};
pub use engine::{Engine, EngineOptions, FunctionSpec};
pub use error::{EngineError, NoMockOutcome};
pub use flights::{Follow, Landing, Lead, Waited};
pub use function::{Finished, FunctionHandle, RecentCall, Recording, Unrecorded};
pub use invalidate::{Invalidation, InvalidationReport};
pub use keys::{CallKeyExt, canonical_json};
pub use outcome::{NewOutcome, StoredOutcome};
pub use policy::Policy;
