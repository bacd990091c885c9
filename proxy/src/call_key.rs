//! The call key policy: which parts of a request are "the arguments".
//!
//! Parts, in order, each length-prefixed so no two parts can run together:
//! method, scheme, host (lowercase, with port), concrete path, query pairs
//! sorted (minus ignored names), body (canonical JSON minus ignored fields
//! when it parses as JSON, else raw bytes), then the included headers by
//! lowercase name. Changing this changes every key: keep the golden test.

use cacheow_engine::{CallKey, canonical_json};
use http::HeaderMap;
use serde_json::{Map, Value};

/// Per-route rules from the config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyRules {
    pub(crate) ignore_query: Vec<String>,
    /// Dotted paths (`metadata.request_id`, `messages.0.id`).
    pub(crate) ignore_body_fields: Vec<String>,
    /// Lowercase header names.
    pub(crate) include_headers: Vec<String>,
}

impl KeyRules {
    /// The rules as shown in the function's `config`.
    pub(crate) fn to_config(&self) -> Map<String, Value> {
        let mut map = Map::new();
        if !self.ignore_query.is_empty() {
            map.insert("ignore_query".into(), self.ignore_query.clone().into());
        }
        if !self.ignore_body_fields.is_empty() {
            map.insert(
                "ignore_body_fields".into(),
                self.ignore_body_fields.clone().into(),
            );
        }
        if !self.include_headers.is_empty() {
            map.insert(
                "include_headers".into(),
                self.include_headers.clone().into(),
            );
        }
        map
    }
}

/// The parts of a request that make up its key.
pub(crate) struct KeyInput<'a> {
    pub(crate) method: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

pub(crate) fn call_key(rules: &KeyRules, input: &KeyInput<'_>) -> CallKey {
    let mut hasher = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part(input.method.as_bytes());
    part(input.scheme.as_bytes());
    part(input.host.to_ascii_lowercase().as_bytes());
    part(input.path.as_bytes());

    let mut pairs: Vec<&str> = input
        .query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !rules.ignore_query.iter().any(|ignored| ignored == name)
        })
        .collect();
    pairs.sort_unstable();
    part(pairs.join("&").as_bytes());

    match json_body(input.body) {
        Some(mut value) => {
            for path in &rules.ignore_body_fields {
                remove_path(&mut value, path);
            }
            let mut canonical = Vec::with_capacity(input.body.len());
            canonical.push(b'j');
            canonical_json(&value, &mut canonical);
            part(&canonical);
        }
        None => {
            let mut raw = Vec::with_capacity(input.body.len() + 1);
            raw.push(b'r');
            raw.extend_from_slice(input.body);
            part(&raw);
        }
    }

    for name in &rules.include_headers {
        part(name.as_bytes());
        let values: Vec<&[u8]> = input
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        part(&values.join(&b'\n'));
    }
    CallKey::from_blake3(hasher.finalize())
}

fn json_body(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' && *first != b'[' {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn remove_path(value: &mut Value, path: &str) {
    let mut parts = path.split('.').peekable();
    let mut current = value;
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        current = match current {
            Value::Object(map) if last => {
                map.shift_remove(part);
                return;
            }
            Value::Object(map) => match map.get_mut(part) {
                Some(next) => next,
                None => return,
            },
            Value::Array(items) => match part.parse::<usize>() {
                Ok(i) if last && i < items.len() => {
                    items.remove(i);
                    return;
                }
                Ok(i) => match items.get_mut(i) {
                    Some(next) => next,
                    None => return,
                },
                Err(_) => return,
            },
            _ => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rules: &KeyRules, query: Option<&str>, body: &[u8]) -> CallKey {
        call_key(
            rules,
            &KeyInput {
                method: "POST",
                scheme: "http",
                host: "API.test:80",
                path: "/v1/x",
                query,
                headers: &HeaderMap::new(),
                body,
            },
        )
    }

    #[test]
    fn golden_key() {
        // Internal: keys are stored on disk; this value must never change
        // without a schema migration that recomputes them.
        let k = key(
            &KeyRules::default(),
            Some("b=2&a=1"),
            br#"{"z":1,"a":[1,2]}"#,
        );
        assert_eq!(
            k.to_string(),
            "2425c2c24ab3ca48955a22f3904f85fdb4a83e2d2ccb28c9c619aa891a5a8bf3"
        );
    }

    #[test]
    fn json_order_whitespace_and_query_order_do_not_matter() {
        let rules = KeyRules::default();
        let a = key(&rules, Some("b=2&a=1"), br#"{"z": 1, "a": [1, 2]}"#);
        let b = key(&rules, Some("a=1&b=2"), br#"{"a":[1,2],"z":1}"#);
        assert_eq!(a, b);
        assert_ne!(a, key(&rules, Some("a=1&b=2"), br#"{"a":[1,2],"z":2}"#));
    }

    #[test]
    fn ignored_query_and_body_fields_are_left_out() {
        let rules = KeyRules {
            ignore_query: vec!["ts".into()],
            ignore_body_fields: vec!["meta.request_id".into()],
            include_headers: vec![],
        };
        assert_eq!(
            key(
                &rules,
                Some("q=x&ts=1"),
                br#"{"q":1,"meta":{"request_id":"a"}}"#
            ),
            key(
                &rules,
                Some("ts=2&q=x"),
                br#"{"q":1,"meta":{"request_id":"b"}}"#
            )
        );
    }
}
