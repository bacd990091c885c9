//! Engine errors.

use cacheow_storage::{FunctionId, OutcomeId};

/// Mock mode found nothing it may replay for this call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct NoMockOutcome {
    /// The function.
    pub function: FunctionId,
    /// The call had no key (its arguments were over the size cap), so only
    /// mock entries with `ignore_args` could answer it.
    pub keyless: bool,
}

impl NoMockOutcome {
    fn message(&self) -> String {
        if self.keyless {
            format!(
                "function {} is in mock mode and this call's arguments are over the size cap (--max-body-bytes), so only a mock entry with ignore_args can answer it; enable one, or raise the cap",
                self.function
            )
        } else {
            format!(
                "function {} is in mock mode but has no eligible outcome for this call; record one (default or cache mode), add a manual outcome, or enable a mock entry",
                self.function
            )
        }
    }
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
