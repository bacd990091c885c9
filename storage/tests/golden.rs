//! The JSON mirror's format, byte for byte: a `function.json` and an
//! outcome file with every field set are compared with committed golden
//! files. A change here is a change to what users edit and commit; it needs
//! a schema version and a migration (see `schema.rs`).

use cacheow_storage::test_support::temp_data_dir;
use cacheow_storage::{
    CallKey, Function, FunctionKind, MockEntry, Mode, Outcome, OutcomeId, OutcomeType, Store,
    Timestamp, Write,
};
use serde_json::json;

fn golden(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn function_and_outcome_files_match_their_golden_files() {
    let at = Timestamp::from_unix_millis(1_767_225_600_123);
    let mut function = Function::new("POST https://api.test/v1/chat", FunctionKind::Http);
    let call_key = CallKey::from_blake3(blake3::hash(b"golden call"));
    let outcome_id = OutcomeId::for_content(Some(&call_key), b"golden content");
    function.mode = Mode::Cache;
    function.latency_ms = 25;
    function.latency_jitter_ms = 5;
    function.created_at = at;
    function.config = json!({"replay_speed": 0.5, "replay_duration": true})
        .as_object()
        .cloned()
        .unwrap();
    function.mock_entries = vec![MockEntry {
        outcome_id,
        weight: 3.0,
        enabled: true,
        ignore_args: false,
    }];
    let outcome = Outcome {
        id: outcome_id,
        function_id: function.id,
        call_key: Some(call_key),
        outcome_type: OutcomeType::Stream,
        value: json!({
            "status": 200,
            "headers": [["content-type", "text/event-stream"]],
            "chunks": [{"offset_ms": 0.0, "data": "data: 1\n\n"}, {"offset_ms": 12.5, "data": "data: [DONE]\n\n"}],
        }),
        exception_type: Some("connection_reset".into()),
        exception_message: Some("the upstream closed mid-stream".into()),
        duration_ms: 14.25,
        count: 2,
        is_manual: false,
        is_mock_only: true,
        created_at: at,
        last_seen_at: at,
        request: Some(json!({
            "method": "POST",
            "url": "https://api.test/v1/chat",
            "headers": [["authorization", "[redacted]"]],
            "body": {"stream": true},
        })),
    };
    let dir = temp_data_dir();
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(&[
            Write::PutFunction(function.clone()),
            Write::PutOutcome(outcome),
        ])
        .unwrap();
    let function_dir = dir.path().join("functions").join(function.id.to_string());
    let written_function = std::fs::read_to_string(function_dir.join("function.json")).unwrap();
    let written_outcome = std::fs::read_to_string(
        function_dir
            .join("outcomes")
            .join(format!("{outcome_id}.json")),
    )
    .unwrap();
    assert_eq!(written_function, golden("function.json"));
    assert_eq!(written_outcome, golden("outcome.json"));
}
