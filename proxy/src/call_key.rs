//! The call key policy: which parts of a request are "the arguments".
//!
//! Parts, in order, each length-prefixed so no two parts can run together:
//! method, scheme, host (lowercase, with port), concrete path, query pairs
//! sorted (minus ignored names), body, then the included headers by
//! lowercase name, then `Range` and `If-Range` when the request has them
//! (they select which bytes the reply holds), then the config file's
//! `key_prefix` when it is set.
//!
//! The body part is canonical JSON minus ignored fields when the body
//! parses as JSON; for `multipart/form-data`, the parts in order with their
//! names, filenames, content types and bytes (the random boundary left
//! out); for `application/x-www-form-urlencoded`, the pairs sorted; else
//! the raw bytes. Changing this changes every key: keep the golden tests.

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
    /// The config file's `key_prefix`: changing it makes every call a new
    /// one, keeping the old outcomes.
    pub(crate) key_prefix: String,
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
        if !self.key_prefix.is_empty() {
            map.insert("key_prefix".into(), self.key_prefix.clone().into());
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

/// The key's hash input: each part is its length, then its bytes.
struct Parts(blake3::Hasher);

impl Parts {
    fn part(&mut self, bytes: &[u8]) {
        self.tagged(&[], bytes);
    }

    /// The part `tag` followed by `bytes`, hashed without copying them
    /// together.
    fn tagged(&mut self, tag: &[u8], bytes: &[u8]) {
        let len = tag.len() + bytes.len();
        self.0.update(&(len as u64).to_le_bytes());
        self.0.update(tag);
        self.0.update(bytes);
    }

    /// The part `pieces` joined by `separator`, hashed without joining them.
    fn joined<'a, I>(&mut self, pieces: impl Fn() -> I, separator: &[u8])
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let count = pieces().count();
        let len =
            pieces().map(<[u8]>::len).sum::<usize>() + separator.len() * count.saturating_sub(1);
        self.0.update(&(len as u64).to_le_bytes());
        for (i, piece) in pieces().enumerate() {
            if i > 0 {
                self.0.update(separator);
            }
            self.0.update(piece);
        }
    }
}

pub(crate) fn call_key(rules: &KeyRules, input: &KeyInput<'_>) -> CallKey {
    let mut parts = Parts(blake3::Hasher::new());
    parts.part(input.method.as_bytes());
    parts.part(input.scheme.as_bytes());
    if input.host.bytes().any(|b| b.is_ascii_uppercase()) {
        parts.part(input.host.to_ascii_lowercase().as_bytes());
    } else {
        parts.part(input.host.as_bytes());
    }
    parts.part(input.path.as_bytes());

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
    parts.joined(|| pairs.iter().map(|pair| pair.as_bytes()), b"&");

    let content_type = input
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match json_body(input.body) {
        None if is_media_type(content_type, "multipart/form-data") => {
            match multipart_canonical(content_type, input.body) {
                Some(canonical) => parts.part(&canonical),
                None => parts.tagged(RAW, input.body),
            }
        }
        None if is_media_type(content_type, "application/x-www-form-urlencoded") => {
            // Internal: the same `r` form as raw bytes, so a body whose pairs
            // were already sorted keeps the key it had before this rule.
            let mut pairs: Vec<&[u8]> = input
                .body
                .split(|b| *b == b'&')
                .filter(|p| !p.is_empty())
                .collect();
            pairs.sort_unstable();
            parts.tagged(RAW, &pairs.join(&b'&'));
        }
        Some(mut value) => {
            for path in &rules.ignore_body_fields {
                remove_path(&mut value, path);
            }
            let mut canonical = Vec::with_capacity(input.body.len());
            canonical.push(b'j');
            canonical_json(&value, &mut canonical);
            parts.part(&canonical);
        }
        None => parts.tagged(RAW, input.body),
    }

    for name in &rules.include_headers {
        parts.part(name.as_bytes());
        let values = input.headers.get_all(name.as_str());
        parts.joined(|| values.iter().map(|v| v.as_bytes()), b"\n");
    }
    for name in [http::header::RANGE, http::header::IF_RANGE] {
        if let Some(value) = input.headers.get(&name) {
            // Internal: a NUL can never start a header name, so these parts
            // cannot collide with an `include_headers` entry.
            parts.tagged(b"\0", name.as_str().as_bytes());
            parts.part(value.as_bytes());
        }
    }
    if !rules.key_prefix.is_empty() {
        // Internal: last and only when set, so keys without a prefix stay
        // what they were; the tag keeps it apart from any header part.
        parts.tagged(b"\0key_prefix\0", rules.key_prefix.as_bytes());
    }
    CallKey::from_blake3(parts.0.finalize())
}

/// The tag of a body keyed as its raw bytes.
const RAW: &[u8] = b"r";

/// True if `content_type` is `media_type`, parameters aside.
fn is_media_type(content_type: &str, media_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type))
}

/// The value of parameter `name` of a header like `content-type`, unquoted.
fn header_parameter<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"'))
    })
}

/// A multipart body without its boundary: `m`, then per part its name,
/// filename and content type and its bytes, each length-prefixed. `None`
/// when the body is not well-formed multipart; the key then uses the raw
/// bytes.
fn multipart_canonical(content_type: &str, body: &[u8]) -> Option<Vec<u8>> {
    let boundary = header_parameter(content_type, "boundary").filter(|b| !b.is_empty())?;
    let delimiter = format!("--{boundary}");
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(b'm');
    let mut push = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let headers_end = find(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..headers_end]).ok()?;
        let content = &rest[headers_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        let (mut name, mut filename, mut part_type) = ("", "", "");
        for line in headers.split("\r\n") {
            let (header, value) = line.split_once(':')?;
            let header = header.trim();
            if header.eq_ignore_ascii_case("content-disposition") {
                name = header_parameter(value, "name").unwrap_or("");
                filename = header_parameter(value, "filename").unwrap_or("");
            } else if header.eq_ignore_ascii_case("content-type") {
                part_type = value.trim();
            }
        }
        push(name.as_bytes());
        push(filename.as_bytes());
        push(part_type.as_bytes());
        push(&content[..end]);
        rest = &content[end + 2 + delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    use http::HeaderName;

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

    /// One golden key per key part, each varying that part alone from the
    /// base request: a change to how any part is keyed shows here.
    #[test]
    fn golden_key_per_part() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            map
        };
        let keyed = |rules: &KeyRules, input: KeyInput<'_>| call_key(rules, &input).to_string();
        let base = |headers: &'static HeaderMap| KeyInput {
            method: "GET",
            scheme: "http",
            host: "api.test",
            path: "/v1/x",
            query: None,
            headers,
            body: b"",
        };
        let none: &'static HeaderMap = Box::leak(Box::new(HeaderMap::new()));
        let json: &'static HeaderMap =
            Box::leak(Box::new(headers(&[("content-type", "application/json")])));
        let form: &'static HeaderMap = Box::leak(Box::new(headers(&[(
            "content-type",
            "application/x-www-form-urlencoded",
        )])));
        let multi: &'static HeaderMap = Box::leak(Box::new(headers(&[(
            "content-type",
            "multipart/form-data; boundary=b",
        )])));
        let tenant: &'static HeaderMap = Box::leak(Box::new(headers(&[("x-tenant", "t1")])));
        let range: &'static HeaderMap = Box::leak(Box::new(headers(&[("range", "bytes=0-9")])));
        let with_tenant = KeyRules {
            include_headers: vec!["x-tenant".into()],
            ..KeyRules::default()
        };
        let prefixed = KeyRules {
            key_prefix: "v2".into(),
            ..KeyRules::default()
        };
        let rules = KeyRules::default();
        let cases = [
            ("base", keyed(&rules, base(none))),
            ("method", keyed(&rules, KeyInput { method: "POST", ..base(none) })),
            ("scheme", keyed(&rules, KeyInput { scheme: "https", ..base(none) })),
            ("host", keyed(&rules, KeyInput { host: "other.test", ..base(none) })),
            ("path", keyed(&rules, KeyInput { path: "/v1/y", ..base(none) })),
            ("query", keyed(&rules, KeyInput { query: Some("b=2&a=1"), ..base(none) })),
            ("included header", keyed(&with_tenant, base(tenant))),
            ("range", keyed(&rules, base(range))),
            ("json body", keyed(&rules, KeyInput { body: br#"{"z":1,"a":2}"#, ..base(json) })),
            ("form body", keyed(&rules, KeyInput { body: b"b=2&a=1", ..base(form) })),
            (
                "multipart body",
                keyed(&rules, KeyInput {
                    body: b"--b\r\ncontent-disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b--\r\n",
                    ..base(multi)
                }),
            ),
            ("raw body", keyed(&rules, KeyInput { body: &[0, 159, 146, 150], ..base(none) })),
            ("key prefix", keyed(&prefixed, base(none))),
        ];
        let golden = [
            (
                "base",
                "92b0614b1cc534cb01a62ee9d740f02004370890149def71d6bb7fb78591d366",
            ),
            (
                "method",
                "1896becbc8b2794afe461a519424b45f8697083ad933419d25ab972e7e8330bc",
            ),
            (
                "scheme",
                "6abe807066d5c2e96ee7e7f4ff2b78784ab28b6a6f0b74d227181633476b6de5",
            ),
            (
                "host",
                "b232ee2b413adad06ff9e54636241592f250f67d853368066506478badef0109",
            ),
            (
                "path",
                "768bea0e50414c8c77331cf70c7a6c9096307240cde2bd432b5d8209c67e193c",
            ),
            (
                "query",
                "db2d24c385c323b1ff99897bf9e16065d61b3fa8f6cd8b8f7f575e44749224a4",
            ),
            (
                "included header",
                "30311ab5fb33389f03f10b7784853c7d056d8cbe07176101993753283141c443",
            ),
            (
                "range",
                "a95de75c905cc92ad494bbf7b15585c2030967721513169c6b89abaefa396d90",
            ),
            (
                "json body",
                "851740c3c94018230ee39bc9843feedc6d830c27be8ae8a1a90b09df5dec4294",
            ),
            (
                "form body",
                "663bf4089ee60358da40a622bc387acec0411ac9b3948c1915edd1217b135aee",
            ),
            (
                "multipart body",
                "ed82c753ccecc2723303fb26887db9dfaea44b29ec81b441e8a28d53de4cf203",
            ),
            (
                "raw body",
                "2ba2096eec89ece71106f7a181c559448efd40a01764e7d4d3ff59209169581c",
            ),
            (
                "key prefix",
                "10b42be3c676cf56bb35e72eefff43896c66c144ca632e9348527e7d946c1329",
            ),
        ];
        let computed: Vec<(&str, &str)> = cases
            .iter()
            .map(|(part, key)| (*part, key.as_str()))
            .collect();
        assert_eq!(computed, golden);
    }

    #[test]
    fn json_order_whitespace_and_query_order_do_not_matter() {
        let rules = KeyRules::default();
        let a = key(&rules, Some("b=2&a=1"), br#"{"z": 1, "a": [1, 2]}"#);
        let b = key(&rules, Some("a=1&b=2"), br#"{"a":[1,2],"z":1}"#);
        assert_eq!(a, b);
        assert_ne!(a, key(&rules, Some("a=1&b=2"), br#"{"a":[1,2],"z":2}"#));
    }

    fn key_with(content_type: &str, extra: &[(&str, &str)], body: &[u8]) -> CallKey {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", content_type.parse().unwrap());
        for (name, value) in extra {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        call_key(
            &KeyRules::default(),
            &KeyInput {
                method: "POST",
                scheme: "http",
                host: "api.test",
                path: "/upload",
                query: None,
                headers: &headers,
                body,
            },
        )
    }

    fn multipart(boundary: &str, file: &str) -> (String, Vec<u8>) {
        let body = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
        );
        (
            format!("multipart/form-data; boundary={boundary}"),
            body.into_bytes(),
        )
    }

    #[test]
    fn multipart_bodies_are_keyed_without_their_boundary() {
        let (type_a, body_a) = multipart("----a1b2", "file bytes");
        let (type_b, body_b) = multipart("XyZ-987654321", "file bytes");
        let (type_c, body_c) = multipart("XyZ-987654321", "other bytes");
        assert_eq!(
            key_with(&type_a, &[], &body_a),
            key_with(&type_b, &[], &body_b)
        );
        assert_ne!(
            key_with(&type_b, &[], &body_b),
            key_with(&type_c, &[], &body_c)
        );
        let quoted = type_b.replace("boundary=XyZ-987654321", "boundary=\"XyZ-987654321\"");
        assert_eq!(
            key_with(&quoted, &[], &body_b),
            key_with(&type_b, &[], &body_b)
        );
        // Not well-formed: keyed by its raw bytes, never a panic.
        let broken = &body_a[..body_a.len() / 2];
        assert_eq!(
            key_with(&type_a, &[], broken),
            key_with("application/octet-stream", &[], broken)
        );
    }

    #[test]
    fn urlencoded_pairs_are_sorted_and_sorted_bodies_keep_their_old_key() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            key_with(form, &[], b"b=2&a=1"),
            key_with(form, &[], b"a=1&b=2")
        );
        assert_eq!(
            key_with(form, &[], b"a=1&b=2"),
            key_with("text/plain", &[], b"a=1&b=2")
        );
        assert_ne!(
            key_with(form, &[], b"a=1&b=2"),
            key_with(form, &[], b"a=1&b=3")
        );
    }

    #[test]
    fn range_and_if_range_are_part_of_the_key() {
        let plain = key_with("text/plain", &[], b"");
        let first = key_with("text/plain", &[("range", "bytes=0-99")], b"");
        let second = key_with("text/plain", &[("range", "bytes=100-199")], b"");
        let conditional = key_with(
            "text/plain",
            &[("range", "bytes=0-99"), ("if-range", "\"v1\"")],
            b"",
        );
        let all = [plain, first, second, conditional];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn ignored_query_and_body_fields_are_left_out() {
        let rules = KeyRules {
            ignore_query: vec!["ts".into()],
            ignore_body_fields: vec!["meta.request_id".into()],
            ..KeyRules::default()
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
