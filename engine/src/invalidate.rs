//! Invalidation: marking stored outcomes stale (kept, for history and mock
//! mode) or deleting them, by tag, function, age and call key, from the API
//! or the command line.

use std::time::Duration;

use cacheow_storage::{CallKey, FunctionId, Timestamp};
use serde_json::Map;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::function::FunctionHandle;
use crate::policy::{INVALIDATED, Invalidated};

/// Which outcomes to invalidate; every given part must match.
#[derive(Debug, Clone, Default)]
pub struct Invalidation {
    /// Functions with this tag.
    pub tag: Option<String>,
    /// This function.
    pub function: Option<FunctionId>,
    /// Outcomes last recorded longer ago than this.
    pub older_than: Option<Duration>,
    /// Outcomes of this call.
    pub call_key: Option<CallKey>,
    /// Delete them (and their files) instead of marking them stale.
    pub delete: bool,
}

/// What an invalidation touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvalidationReport {
    /// Functions matched.
    pub functions: usize,
    /// Outcomes deleted (0 when marking stale).
    pub deleted: usize,
}

/// How many outcomes a delete reads per page.
const PAGE: usize = 1000;

impl Engine {
    /// Marks the matching outcomes stale, or deletes them. At least one of
    /// tag, function, age or call key must be given.
    pub fn invalidate(&self, what: &Invalidation) -> Result<InvalidationReport, EngineError> {
        if what.tag.is_none()
            && what.function.is_none()
            && what.older_than.is_none()
            && what.call_key.is_none()
        {
            return Err(EngineError::Invalid {
                field: "tag".into(),
                message: "say what to invalidate: a tag, a function, older_than or a call_key (all of them must match)".into(),
            });
        }
        let functions: Vec<FunctionHandle> = match what.function {
            Some(id) => vec![self.require(&id)?],
            None => self.functions(),
        };
        let now = Timestamp::now().unix_millis();
        let cutoff = now.saturating_sub(
            what.older_than
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
        let mut report = InvalidationReport::default();
        for function in functions {
            if let Some(tag) = &what.tag
                && !function.policy().tags.iter().any(|t| t == tag)
            {
                continue;
            }
            report.functions += 1;
            if what.delete {
                report.deleted += delete_matching(&function, what.call_key.as_ref(), cutoff)?;
            } else {
                mark_stale(&function, what.call_key, cutoff);
            }
        }
        Ok(report)
    }
}

/// Records in the function's config that outcomes (of `key`, or all) last
/// recorded before `cutoff` are stale.
fn mark_stale(function: &FunctionHandle, key: Option<CallKey>, cutoff: u64) {
    let mut marks = function
        .setting(INVALIDATED)
        .map(|value| Invalidated::from_config(&value))
        .unwrap_or_default();
    match key {
        Some(key) => {
            let mark = marks.keys.entry(key).or_default();
            *mark = (*mark).max(cutoff);
        }
        None => marks.before = marks.before.max(cutoff),
    }
    function.merge_config(Map::from_iter([(
        INVALIDATED.to_owned(),
        marks.to_config(),
    )]));
}

/// Deletes the outcomes (of `key`, or all) last recorded before `cutoff`;
/// how many.
fn delete_matching(
    function: &FunctionHandle,
    key: Option<&CallKey>,
    cutoff: u64,
) -> Result<usize, EngineError> {
    let mut doomed = Vec::new();
    let mut after = None;
    loop {
        let Some(page) = function.outcomes_page(after.as_ref(), PAGE)? else {
            break;
        };
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id());
        doomed.extend(
            page.iter()
                .filter(|o| key.is_none_or(|k| o.outcome().call_key.as_ref() == Some(k)))
                .filter(|o| o.last_seen_at().unix_millis() < cutoff)
                .map(|o| o.id()),
        );
        if page.len() < PAGE {
            break;
        }
    }
    for id in &doomed {
        function.delete_outcome(id)?;
    }
    Ok(doomed.len())
}
