//! Engine errors.

use cacheow_storage::{FunctionId, OutcomeId};

/// Mock mode found nothing it may replay for this call.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "function {function} is in mock mode but has no eligible outcome for this call; record one (default or cache mode), add a manual outcome, or enable a mock entry"
)]
pub struct NoMockOutcome {
    /// The function.
    pub function: FunctionId,
}

/// A management operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No such function.
    #[error("no function with id {0}")]
    UnknownFunction(FunctionId),
    /// No such outcome in that function.
    #[error("function {function} has no outcome {outcome}")]
    UnknownOutcome {
        /// The function.
        function: FunctionId,
        /// The outcome asked for.
        outcome: OutcomeId,
    },
    /// A setting was out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] cacheow_storage::OpenError),
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] cacheow_storage::ReadError),
    /// rebuild-index failed as a whole.
    #[error(transparent)]
    Rebuild(#[from] cacheow_storage::RebuildError),
}
