//! Turning API values into text for people: times, durations, bodies, headers.

use base64::Engine as _;
use serde_json::Value;

/// `2026-11-21T07:00:00.123Z` → `2026-11-21 07:00:00`. Unknown shapes are
/// shown as they came.
pub(crate) fn timestamp(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((date, time)) => {
            let time = time.split(['.', 'Z', '+']).next().unwrap_or(time);
            format!("{date} {time}")
        }
        None => rfc3339.to_owned(),
    }
}

/// Only the time of day, for dense tables; the full stamp goes in a title.
pub(crate) fn time_of_day(rfc3339: &str) -> String {
    let full = timestamp(rfc3339);
    full.split_once(' ')
        .map_or(full.clone(), |(_, time)| time.to_owned())
}

pub(crate) fn millis(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub(crate) fn bytes(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    }
}

pub(crate) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Headers arrive as `[[name, value], …]` (stored form) or as an object
/// (the manual-outcome input form); both become ordered pairs.
pub(crate) fn header_pairs(headers: &Value) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    match headers {
        Value::Array(items) => items
            .iter()
            .filter_map(|pair| match pair.as_array()?.as_slice() {
                [name, value] => Some((text(name), text(value))),
                _ => None,
            })
            .collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        _ => Vec::new(),
    }
}

pub(crate) const REDACTED: &str = "[redacted]";

/// How a stored HTTP body is best shown.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BodyView {
    Empty,
    /// Pretty-printed JSON and the size of the bytes it stands for.
    Json {
        pretty: String,
        size: usize,
    },
    Text(String),
    Binary {
        size: usize,
        hex: String,
        /// The readable `decoded` view stored beside content-encoded bodies.
        decoded: Option<Box<BodyView>>,
    },
    /// `{"base64": …}` that does not decode; shown rather than hidden.
    Undecodable(String),
}

const HEX_PREVIEW_BYTES: usize = 256;

/// Classifies a body in the stored form of docs/API.md: a JSON value, a
/// string, or `{"base64": "…"}` (optionally with a `decoded` view).
pub(crate) fn body_view(body: &Value) -> BodyView {
    match body {
        Value::Null => BodyView::Empty,
        Value::String(s) if s.is_empty() => BodyView::Empty,
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            // Text that is JSON but not in compact form is still JSON to a reader.
            Ok(v @ (Value::Object(_) | Value::Array(_))) => BodyView::Json {
                pretty: pretty(&v),
                size: s.len(),
            },
            _ => BodyView::Text(s.clone()),
        },
        Value::Object(map) if map.contains_key("base64") => {
            let encoded = map
                .get("base64")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(raw) => BodyView::Binary {
                    size: raw.len(),
                    hex: hex_dump(&raw[..raw.len().min(HEX_PREVIEW_BYTES)]),
                    decoded: map.get("decoded").map(|d| Box::new(body_view(d))),
                },
                Err(e) => BodyView::Undecodable(format!("base64 body does not decode: {e}")),
            }
        }
        other => BodyView::Json {
            pretty: pretty(other),
            size: other.to_string().len(),
        },
    }
}

pub(crate) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Classic 16-bytes-a-line dump: offset, hex, printable ASCII.
pub(crate) fn hex_dump(raw: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in raw.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{ascii}|\n",
            line * 16,
            hex.join(" ")
        ));
    }
    out
}

/// Each entry's share of mock replies in percent, in input order. Entries
/// that are disabled or weigh nothing get `None`: mock mode never picks them.
pub(crate) fn shares(weights: &[(f64, bool)]) -> Vec<Option<f64>> {
    let counts = |&(w, enabled): &(f64, bool)| enabled && w > 0.0;
    let total: f64 = weights.iter().filter(|e| counts(e)).map(|e| e.0).sum();
    weights
        .iter()
        .map(|e| (counts(e) && total > 0.0).then(|| e.0 / total * 100.0))
        .collect()
}

/// "2 client_gone, 1 oversize, 1 failed to persist": why calls left no
/// outcome.
pub(crate) fn not_recorded(
    unrecorded: &std::collections::BTreeMap<String, u64>,
    persist_failures: u64,
) -> String {
    let mut parts: Vec<String> = unrecorded
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    if persist_failures > 0 {
        parts.push(format!("{persist_failures} failed to persist"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bodies_are_shown_by_what_they_hold() {
        assert_eq!(body_view(&Value::Null), BodyView::Empty);
        assert_eq!(
            body_view(&json!({"b": 1, "a": [true]})),
            BodyView::Json {
                pretty: "{\n  \"b\": 1,\n  \"a\": [\n    true\n  ]\n}".into(),
                size: 18
            }
        );
        assert_eq!(body_view(&json!("plain")), BodyView::Text("plain".into()));
        // Non-compact JSON text is still JSON to a reader.
        assert!(matches!(
            body_view(&json!("{ \"a\": 1 }")),
            BodyView::Json { size: 10, .. }
        ));
        let BodyView::Binary { size, hex, decoded } =
            body_view(&json!({"base64": "AAEC/w==", "decoded": "text"}))
        else {
            panic!("binary expected");
        };
        assert_eq!(
            (size, decoded),
            (4, Some(Box::new(BodyView::Text("text".into()))))
        );
        assert!(hex.starts_with("00000000  00 01 02 ff"), "{hex}");
        assert!(matches!(
            body_view(&json!({"base64": "%%"})),
            BodyView::Undecodable(_)
        ));
    }

    #[test]
    fn not_recorded_names_each_reason_with_its_count() {
        let reasons = [("client_gone".to_owned(), 2), ("oversize".to_owned(), 1)]
            .into_iter()
            .collect();
        assert_eq!(
            not_recorded(&reasons, 3),
            "2 client_gone, 1 oversize, 3 failed to persist"
        );
        assert_eq!(not_recorded(&Default::default(), 0), "");
    }

    #[test]
    fn shares_count_only_enabled_positive_weights() {
        assert_eq!(
            shares(&[(3.0, true), (1.0, true), (5.0, false), (0.0, true)]),
            vec![Some(75.0), Some(25.0), None, None]
        );
        assert_eq!(shares(&[(0.0, true)]), vec![None]);
    }

    #[test]
    fn headers_come_as_pairs_from_either_shape() {
        let pairs = vec![("a".to_owned(), "1".to_owned())];
        assert_eq!(header_pairs(&json!([["a", "1"]])), pairs);
        assert_eq!(header_pairs(&json!({"a": "1"})), pairs);
    }

    #[test]
    fn timestamps_drop_fractions_and_zone() {
        assert_eq!(timestamp("2026-11-21T07:00:00.123Z"), "2026-11-21 07:00:00");
        assert_eq!(time_of_day("2026-11-21T07:00:00Z"), "07:00:00");
    }
}
