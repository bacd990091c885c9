//! Property tests, run by `cargo test` with a bounded number of cases: the
//! call key and its canonicalisers, and preparing a replay from whatever a
//! hand-edited mirror file may hold, never panic and keep their promises.

use cacheow_engine::Outcome;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::call_key::{KeyInput, KeyRules, call_key};
use crate::outcome_http::{Prepared, prepare};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key_of(content_type: &str, query: Option<&str>, body: &[u8]) -> cacheow_engine::CallKey {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    call_key(
        &KeyRules::default(),
        &KeyInput {
            method: "POST",
            scheme: "http",
            host: "api.test",
            path: "/v1/x",
            query,
            headers: &headers,
            body,
        },
    )
}

fn multipart(boundary: &str, parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// An outcome as a mirror file could hold it, with any value.
fn outcome(outcome_type: &str, value: Value, duration_ms: f64) -> Option<Outcome> {
    serde_json::from_value(json!({
        "id": "00000000000000aa",
        "function_id": "00000000000000bb",
        "call_key": null,
        "outcome_type": outcome_type,
        "value": value,
        "exception_type": "timeout",
        "duration_ms": duration_ms,
        "count": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "last_seen_at": "2026-01-01T00:00:00Z",
    }))
    .ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn call_keys_never_panic_on_any_body_or_content_type(
        content_type in prop_oneof![
            Just("application/json".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            "multipart/form-data; boundary=[a-zA-Z0-9-]{0,20}",
            ".{0,40}",
        ],
        query in proptest::option::of(".{0,40}"),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = key_of(&content_type, query.as_deref(), &body);
    }

    #[test]
    fn json_bodies_key_the_same_whatever_their_key_order(value in json_value()) {
        let Value::Object(map) = &value else { return Ok(()); };
        let reversed: Map<String, Value> = map.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        let a = serde_json::to_vec(&value).unwrap();
        let b = serde_json::to_vec(&Value::Object(reversed)).unwrap();
        prop_assert_eq!(key_of("application/json", None, &a), key_of("application/json", None, &b));
    }

    #[test]
    fn multipart_keys_do_not_depend_on_the_boundary(
        parts in prop::collection::vec(("[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..64)), 1..4),
        first in "[a-zA-Z0-9]{8,20}",
        second in "[a-zA-Z0-9]{8,20}",
    ) {
        // Internal: a boundary must not occur in the parts' bytes.
        let clash = |b: &str| parts.iter().any(|(_, d)| d.windows(b.len()).any(|w| w == b.as_bytes()));
        prop_assume!(!clash(&first) && !clash(&second));
        let a = key_of(&format!("multipart/form-data; boundary={first}"), None, &multipart(&first, &parts));
        let b = key_of(&format!("multipart/form-data; boundary={second}"), None, &multipart(&second, &parts));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn any_stored_value_prepares_a_replay_or_says_why(
        outcome_type in prop_oneof![Just("return"), Just("stream"), Just("exception")],
        value in json_value(),
        status in any::<u16>(),
        duration_ms in any::<f64>(),
        chunks in prop::collection::vec((any::<f64>(), ".{0,8}"), 0..4),
    ) {
        let shaped = json!({
            "status": status,
            "headers": [["content-type", "text/plain"]],
            "body": value.clone(),
            "chunks": chunks.iter().map(|(offset, data)| json!({"offset_ms": offset, "data": data})).collect::<Vec<_>>(),
        });
        for candidate in [value, shaped] {
            if let Some(outcome) = outcome(outcome_type, candidate, duration_ms) {
                match prepare(&outcome).reply {
                    Prepared::Invalid(reason) => prop_assert!(!reason.is_empty()),
                    Prepared::Response { status, .. } | Prepared::Stream { status, .. } => {
                        prop_assert!((200..=599).contains(&status.as_u16()));
                    }
                    Prepared::Failure { duration, .. } => {
                        prop_assert!(duration.as_secs() <= 3_600);
                    }
                }
            }
        }
    }
}

#[test]
fn the_outcome_template_parses() {
    let parsed = outcome(
        "return",
        json!({"status": 200, "headers": [], "body": "ok"}),
        1.0,
    );
    assert!(matches!(
        prepare(&parsed.expect("template parses")).reply,
        Prepared::Response { .. }
    ));
}

/// A function dir with one outcome file holding `bytes`, as a hand edit or
/// a torn copy could leave it.
fn store_with_outcome_file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let function = dir.path().join("functions/00000000000000bb");
    std::fs::create_dir_all(function.join("outcomes")).expect("dirs");
    let function_json = json!({
        "schema_version": 1, "id": "00000000000000bb", "name": "GET http://h/x", "kind": "http",
        "mode": "default", "latency_ms": 0, "config": {}, "mock_entries": [],
        "created_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(function.join("function.json"), function_json.to_string()).expect("write");
    let file = function.join("outcomes/00000000000000aa.json");
    std::fs::write(&file, bytes).expect("write");
    (dir, file)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_outcome_file_is_indexed_or_reported_by_path(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            (json_value(), any::<f64>()).prop_map(|(value, duration)| serde_json::to_vec(&json!({
                "schema_version": 1, "id": "00000000000000aa", "function_id": "00000000000000bb",
                "outcome_type": "return", "value": value, "duration_ms": duration, "count": 1,
                "created_at": "2026-01-01T00:00:00Z", "last_seen_at": "2026-01-01T00:00:00Z",
            })).unwrap()),
        ],
    ) {
        let (dir, file) = store_with_outcome_file(&bytes);
        let store = cacheow_storage::Store::open(dir.path()).expect("the store opens");
        let report = store.rebuild_index(None).expect("rebuild runs");
        let reported = report.failures.iter().any(|f| f.path.ends_with(file.file_name().unwrap()));
        prop_assert!(report.indexed == 1 || reported, "neither indexed nor reported: {report:?}");
        for function in store.load().expect("the index loads") {
            for outcome in &function.outcomes {
                let _ = prepare(outcome);
            }
        }
    }
}
