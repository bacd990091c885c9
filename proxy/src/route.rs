//! Route → function identity: explicit patterns from the config file first,
//! then a heuristic that templates id-like path segments.

use std::sync::Arc;

use cacheow_engine::Mode;
use serde_json::{Map, Value};

use crate::call_key::KeyRules;

/// A route pattern from the config file, e.g.
/// `POST https://api.example.com/v1/models/{model}` (method optional, host
/// may be `*`, `{name}` matches one segment, a final `{*name}` the rest).
#[derive(Debug, Clone)]
pub(crate) struct RoutePattern {
    method: Option<String>,
    scheme: String,
    host: Option<String>,
    segments: Vec<Segment>,
    path_text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

impl RoutePattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (method, url) = match text.split_once(' ') {
            Some((method, url)) => (Some(method.trim()), url.trim()),
            None => (None, text),
        };
        if let Some(method) = method
            && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "`{method}` is not an HTTP method (expected e.g. GET or POST in capitals)"
            ));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("`{url}` has no scheme; write it as http://host/path or https://host/path")
        })?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme `{scheme}` is not http or https"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return Err("the host is empty; use * to match any host".into());
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = if part.starts_with("{*") && part.ends_with('}') {
                if i + 1 != parts.len() {
                    return Err(format!("`{part}` must be the last segment"));
                }
                Segment::Rest
            } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
                Segment::One
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment `{part}` mixes text and a placeholder; use a whole segment like {{id}}"
                ));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(segment);
        }
        Ok(Self {
            method: method.map(str::to_owned),
            scheme: scheme.to_owned(),
            host: (host != "*").then(|| host.to_ascii_lowercase()),
            segments,
            path_text: path.to_owned(),
        })
    }

    fn matches(&self, method: &str, scheme: &str, host: &str, path: &str) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) || self.scheme != scheme {
            return false;
        }
        if self
            .host
            .as_deref()
            .is_some_and(|h| !h.eq_ignore_ascii_case(host))
        {
            return false;
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return false;
                    }
                }
                Segment::Literal(text) => {
                    if parts.get(i) != Some(&text.as_str()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == parts.len()
    }
}

/// One `[[route]]` of the config file.
#[derive(Debug, Clone)]
pub(crate) struct RouteRule {
    pattern: RoutePattern,
    mode: Option<Mode>,
    keys: Arc<KeyRules>,
    /// The call-key rules as shown in the function's config, computed once.
    config: Arc<Map<String, Value>>,
    /// Settings a new function starts with (`replay_speed`).
    initial_config: Arc<Map<String, Value>>,
}

impl RouteRule {
    pub(crate) fn new(
        pattern: RoutePattern,
        mode: Option<Mode>,
        keys: KeyRules,
        initial_config: Map<String, Value>,
    ) -> Self {
        Self {
            pattern,
            mode,
            config: Arc::new(keys.to_config()),
            keys: Arc::new(keys),
            initial_config: Arc::new(initial_config),
        }
    }
}

/// The function a request belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Identity string: `METHOD scheme://host[:port]/route`.
    pub(crate) name: String,
    pub(crate) initial_mode: Option<Mode>,
    pub(crate) keys: Arc<KeyRules>,
    pub(crate) config: Arc<Map<String, Value>>,
    pub(crate) initial_config: Arc<Map<String, Value>>,
}

/// Every route rule, in config-file order (first match wins).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    rules: Vec<RouteRule>,
    default_keys: Arc<KeyRules>,
    /// The config of a route no rule matches (its key prefix, if any),
    /// shared rather than allocated per request.
    no_config: Arc<Map<String, Value>>,
    /// The settings of a route no rule matches: none.
    no_settings: Arc<Map<String, Value>>,
}

impl RouteTable {
    /// `key_prefix` is the config file's: routes no rule matches key their
    /// calls with it too.
    pub(crate) fn new(rules: Vec<RouteRule>, key_prefix: String) -> Self {
        let default_keys = KeyRules {
            key_prefix,
            ..KeyRules::default()
        };
        Self {
            rules,
            no_config: Arc::new(default_keys.to_config()),
            default_keys: Arc::new(default_keys),
            no_settings: Arc::default(),
        }
    }

    pub(crate) fn resolve(&self, method: &str, scheme: &str, host: &str, path: &str) -> Route {
        for rule in &self.rules {
            if rule.pattern.matches(method, scheme, host, path) {
                return Route {
                    name: format!("{method} {scheme}://{host}{}", rule.pattern.path_text),
                    initial_mode: rule.mode,
                    keys: rule.keys.clone(),
                    config: rule.config.clone(),
                    initial_config: rule.initial_config.clone(),
                };
            }
        }
        let mut name = format!("{method} {scheme}://{host}");
        push_template_path(&mut name, path);
        Route {
            name,
            initial_mode: None,
            keys: self.default_keys.clone(),
            config: self.no_config.clone(),
            initial_config: self.no_settings.clone(),
        }
    }
}

/// Appends `path` to `out` with id-like segments replaced by `{id}`: all
/// digits, UUIDs, hex strings of 16+ characters, and long or prefixed tokens
/// that mix letters and digits (`cus_NfJd8vA2kQ…`, `chatcmpl-9x…`). Appended,
/// so a route name is built in one allocation.
fn push_template_path(out: &mut String, path: &str) {
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_id_like(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
}

fn is_id_like(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let bytes = segment.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if bytes.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    if bytes.len() >= 16 && bytes.iter().all(u8::is_ascii_hexdigit) && has_digit {
        return true;
    }
    let token_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
    if token_chars && has_digit && has_letter && bytes.len() >= 20 {
        return true;
    }
    // Prefixed ids: a short lowercase word, `_` or `-`, then 10+ alphanumerics with a digit.
    if let Some(pos) = segment.find(['_', '-']) {
        let (prefix, rest) = (&segment[..pos], &segment[pos + 1..]);
        return (2..=10).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_lowercase())
            && rest.len() >= 10
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            && rest.bytes().any(|b| b.is_ascii_digit());
    }
    false
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_id_like_segments() {
        let cases = [
            ("/users/1", "/users/{id}"),
            ("/users/42/posts/7", "/users/{id}/posts/{id}"),
            ("/items/123e4567-e89b-12d3-a456-426614174000", "/items/{id}"),
            ("/blobs/0123456789abcdef0123", "/blobs/{id}"),
            ("/v1/customers/cus_NfJd8vA2kQxyz9", "/v1/customers/{id}"),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v2/api", "/v2/api"),
            ("/", "/"),
            ("/deadbeef", "/deadbeef"),
            ("/user-profile", "/user-profile"),
        ];
        for (path, want) in cases {
            let mut templated = String::new();
            push_template_path(&mut templated, path);
            assert_eq!(templated, want, "{path}");
        }
    }

    #[test]
    fn explicit_patterns_win_over_the_heuristic() {
        let rule = RouteRule::new(
            RoutePattern::parse("GET http://api.test/repos/{owner}/{repo}").unwrap(),
            Some(Mode::Cache),
            KeyRules::default(),
            Map::new(),
        );
        let table = RouteTable::new(vec![rule], String::new());
        let route = table.resolve("GET", "http", "api.test", "/repos/rust-lang/rust");
        assert_eq!(route.name, "GET http://api.test/repos/{owner}/{repo}");
        assert_eq!(route.initial_mode, Some(Mode::Cache));
        let other = table.resolve("POST", "http", "api.test", "/repos/rust-lang/rust");
        assert_eq!(other.name, "POST http://api.test/repos/rust-lang/rust");
    }

    #[test]
    fn rest_and_any_host_patterns() {
        let pattern = RoutePattern::parse("https://*/files/{*path}").unwrap();
        assert!(pattern.matches("GET", "https", "x.test", "/files/a/b/c"));
        assert!(!pattern.matches("GET", "http", "x.test", "/files/a"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            RoutePattern::parse("get http://a/b")
                .unwrap_err()
                .contains("HTTP method")
        );
        assert!(
            RoutePattern::parse("a/b")
                .unwrap_err()
                .contains("no scheme")
        );
        assert!(
            RoutePattern::parse("http://a/x{id}")
                .unwrap_err()
                .contains("mixes")
        );
    }
}
