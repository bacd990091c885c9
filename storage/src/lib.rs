//! `cacheow-storage` owns cacheow's data model (functions, outcomes, modes,
//! mock entries, stats) and its bytes on disk: the redb index, the JSON mirror
//! under `functions/<id>/`, the schema version and the batching background
//! writer. It knows nothing of HTTP, hyper or the panel, and of tokio only
//! enough to not stall a runtime worker when the writer's queue is full.
//!
//! ```
//! use cacheow_storage::{Function, FunctionKind, Store, Write};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let function = Function::new("GET http://api.test/users/{id}", FunctionKind::Http);
//! store.apply(&[Write::PutFunction(function.clone())]).unwrap();
//! let loaded = store.load().unwrap();
//! assert_eq!(loaded[0].function.id, function.id);
//! assert!(dir.path().join("functions").join(function.id.to_string()).join("function.json").exists());
//! ```

mod atomic;
mod error;
mod ids;
mod index;
mod layout;
mod model;
mod outcomes;
mod rebuild;
mod row;
mod schema;
mod store;
mod tables;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod writer;

pub use error::{OpenError, ReadError, RebuildError, WriteError};
pub use ids::{CallKey, FunctionId, IdError, OutcomeId};
pub use index::panic_is_contained;
pub use model::{
    Function, FunctionKind, MockEntry, Mode, Outcome, OutcomeType, ParseModeError, Stats, Timestamp,
};
pub use outcomes::{FunctionRecord, KeyedOutcome};
pub use rebuild::{RebuildFailure, RebuildReport};
pub use schema::{FILE_VERSION, SCHEMA_VERSION};
pub use store::{Store, StoredFunction, Write};
pub use writer::{Ack, Writer, WriterOptions};
