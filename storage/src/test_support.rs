//! Factories for tests of this crate and the crates above it.

use serde_json::json;

use crate::ids::CallKey;
use crate::ids::OutcomeId;
use crate::model::{Function, FunctionKind, Outcome, OutcomeType, Timestamp};

/// A temporary data dir, removed on drop.
pub type TempDataDir = tempfile::TempDir;

/// A fresh temporary data dir.
pub fn temp_data_dir() -> TempDataDir {
    tempfile::tempdir().expect("creating a temp dir")
}

/// An HTTP function named `GET http://api.test/<route>`.
pub fn sample_function(route: &str) -> Function {
    Function::new(format!("GET http://api.test/{route}"), FunctionKind::Http)
}

/// A `return` outcome of `function` whose body is `body`.
pub fn sample_outcome(function: &Function, key_seed: &str, body: &str) -> Outcome {
    let call_key = CallKey::from_blake3(blake3::hash(key_seed.as_bytes()));
    let now = Timestamp::now();
    Outcome {
        id: OutcomeId::for_content(Some(&call_key), body.as_bytes()),
        function_id: function.id,
        call_key: Some(call_key),
        outcome_type: OutcomeType::Return,
        value: json!({"status": 200, "headers": [], "body": body}),
        exception_type: None,
        exception_message: None,
        duration_ms: 1.0,
        count: 1,
        is_manual: false,
        is_mock_only: false,
        created_at: now,
        last_seen_at: now,
        request: None,
    }
}
