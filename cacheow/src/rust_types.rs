//! The outcome codec of wrapped Rust functions: a manual outcome is
//! accepted only if the function's own types can be built from it, so the
//! panel and API never store a value that would not replay. Each function
//! says how to check at its first call, when its types are known.

use std::collections::HashMap;
use std::sync::RwLock;

use cacheow_engine::{
    CodecError, Function, FunctionId, NewOutcome, Outcome, OutcomeCodec, OutcomeType, Preview,
    json_preview,
};

/// Checks whether a function could replay a manual outcome.
pub(crate) type OutcomeCheckFn = fn(&NewOutcome) -> Result<(), String>;

/// The checks of the functions called so far; a function not called yet
/// takes any value, as its types are not known.
#[derive(Default)]
pub(crate) struct RustTypes {
    checks: RwLock<HashMap<FunctionId, OutcomeCheckFn>>,
}

impl RustTypes {
    pub(crate) fn register(&self, id: FunctionId, check: OutcomeCheckFn) {
        self.checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, check);
    }
}

impl OutcomeCodec for RustTypes {
    fn normalise(
        &self,
        function: &Function,
        outcome: NewOutcome,
    ) -> Result<NewOutcome, CodecError> {
        let check = self
            .checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&function.id)
            .copied();
        if let Some(check) = check {
            check(&outcome).map_err(|reason| {
                let field = match outcome.outcome_type {
                    OutcomeType::Exception => "exception_type",
                    _ => "value",
                };
                CodecError::new(field, reason)
            })?;
        }
        Ok(outcome)
    }

    fn preview(&self, outcome: &Outcome) -> Preview {
        json_preview(outcome)
    }
}
