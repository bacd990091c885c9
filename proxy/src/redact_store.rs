//! `cacheow redact`: today's redaction rules applied to a stopped
//! cacheow's stored outcomes.

use std::path::Path;

use cacheow_storage::{Outcome, Store, Write};

use crate::config::ConfigError;

/// Why `cacheow redact` failed; nothing is half-rewritten, as each outcome
/// is replaced in the index and its file together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// The config file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir cannot be opened (in use, damaged, newer).
    #[error(transparent)]
    Open(#[from] cacheow_storage::OpenError),
    /// The index cannot be read.
    #[error(transparent)]
    Read(#[from] cacheow_storage::ReadError),
    /// A rewritten outcome cannot be stored.
    #[error(transparent)]
    Write(#[from] cacheow_storage::WriteError),
    /// A stored outcome no longer fits the model once redacted.
    #[error("outcome {id} cannot be redacted: {reason}")]
    Outcome {
        /// The outcome.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Applies today's redaction rules (the built-in ones and `config_file`'s)
/// to every outcome of a stopped cacheow's data dir. Returns how many
/// outcomes changed.
pub fn redact_store(data_dir: &Path, config_file: Option<&Path>) -> Result<usize, RedactError> {
    let rules = crate::config::redaction_from(config_file)?;
    let store = Store::open(data_dir)?;
    let mut changed = 0;
    for function in store.load()? {
        let mut writes = Vec::new();
        for outcome in function.outcomes {
            let id = outcome.id.to_string();
            let mut value = serde_json::to_value(&outcome).map_err(|e| RedactError::Outcome {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            if rules.outcome(&mut value) {
                let redacted: Outcome =
                    serde_json::from_value(value).map_err(|e| RedactError::Outcome {
                        id,
                        reason: e.to_string(),
                    })?;
                writes.push(Write::PutOutcome(redacted));
            }
        }
        changed += writes.len();
        store.apply(&writes)?;
    }
    if changed > 0 {
        store.compact()?;
    }
    Ok(changed)
}
