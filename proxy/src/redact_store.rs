//! `cacheow redact`: today's redaction rules applied to a stopped
//! cacheow's stored outcomes.

use std::path::Path;

use cacheow_storage::{Outcome, Store, Write};

use crate::config::ConfigError;
use crate::redact::Redaction;

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

/// Outcomes read and rewritten per transaction.
const PAGE: usize = 1000;

/// The outcome with today's rules applied, or `None` when they change
/// nothing.
fn redacted(rules: &Redaction, outcome: Outcome) -> Result<Option<Outcome>, RedactError> {
    let id = outcome.id.to_string();
    let mut value = serde_json::to_value(&outcome).map_err(|e| RedactError::Outcome {
        id: id.clone(),
        reason: e.to_string(),
    })?;
    if !rules.outcome(&mut value) {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| RedactError::Outcome {
            id,
            reason: e.to_string(),
        })
}

/// Applies today's redaction rules (the built-in ones and `config_file`'s)
/// to every outcome of a stopped cacheow's data dir. Returns how many
/// outcomes changed.
pub fn redact_store(data_dir: &Path, config_file: Option<&Path>) -> Result<usize, RedactError> {
    let rules = crate::config::redaction_from(config_file)?;
    let store = Store::open(data_dir)?;
    let mut changed = 0;
    // Internal: a page at a time, so a store of any size is redacted in
    // bounded memory; redacting keeps each outcome's place in the list.
    for function in store.functions()? {
        let id = function.function.id;
        let mut after = None;
        while let Some(page) = store.outcomes_page(&id, after.as_ref(), PAGE)? {
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            let mut writes = Vec::new();
            for outcome in page {
                if let Some(redacted) = redacted(&rules, outcome)? {
                    writes.push(Write::PutOutcome(redacted));
                }
            }
            changed += writes.len();
            store.apply(&writes)?;
        }
    }
    if changed > 0 {
        store.compact()?;
    }
    Ok(changed)
}
