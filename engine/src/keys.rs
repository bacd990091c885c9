//! Helpers for building call keys and outcome fingerprints.

use serde_json::Value;

use cacheow_storage::CallKey;

/// Building call keys from canonical bytes (see `canonical_json`).
pub trait CallKeyExt {
    /// The call key of some canonical bytes.
    fn of_bytes(bytes: &[u8]) -> CallKey;
}

impl CallKeyExt for CallKey {
    fn of_bytes(bytes: &[u8]) -> CallKey {
        CallKey::from_blake3(blake3::hash(bytes))
    }
}

/// Writes `value` as canonical JSON: object keys sorted, no insignificant
/// whitespace. Two documents that differ only in key order or whitespace get
/// the same bytes.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Internal: a string always serialises.
                out.extend(serde_json::to_vec(key).expect("string serialises"));
                out.push(b':');
                canonical_json(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("scalar serialises")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(value: &Value) -> CallKey {
        let mut out = Vec::new();
        canonical_json(value, &mut out);
        CallKey::of_bytes(&out)
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(key(&a), key(&b));
        let mut out = Vec::new();
        canonical_json(&a, &mut out);
        assert_eq!(out, br#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
    }

    #[test]
    fn different_values_differ() {
        assert_ne!(key(&json!({"a": 1})), key(&json!({"a": 2})));
    }
}
