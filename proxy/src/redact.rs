//! What never reaches the store in clear: secret request headers, secret
//! query parameters and body fields, and the upstream's `Set-Cookie`. The
//! same rules rewrite outcomes recorded before a rule existed
//! (`cacheow redact`, in `redact_store`).

use http::HeaderMap;
use serde_json::Value;

use crate::headers::REDACTED;

/// Query parameters whose values are redacted in stored URLs, besides the
/// configured ones.
const SECRET_QUERY: [&str; 5] = ["api_key", "key", "token", "access_token", "client_secret"];

/// JSON and form body fields whose values are redacted in stored requests,
/// besides the configured ones.
const SECRET_FIELDS: [&str; 5] = [
    "password",
    "client_secret",
    "api_key",
    "access_token",
    "refresh_token",
];

/// The redaction rules: the built-in lists plus the config file's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redaction {
    /// Extra request headers (lowercase).
    pub(crate) headers: Vec<String>,
    /// Extra query parameters.
    pub(crate) query: Vec<String>,
    /// Extra body fields.
    pub(crate) body_fields: Vec<String>,
    /// Keep the upstream's `Set-Cookie` in stored responses (and replays).
    pub(crate) keep_set_cookie: bool,
}

impl Redaction {
    /// True for a request header whose value is a secret.
    pub(crate) fn is_secret_header(&self, name: &str) -> bool {
        crate::headers::is_secret(name, &self.headers)
    }

    fn is_secret_query(&self, name: &str) -> bool {
        SECRET_QUERY.iter().any(|s| s.eq_ignore_ascii_case(name))
            || self.query.iter().any(|s| s.eq_ignore_ascii_case(name))
    }

    fn is_secret_field(&self, name: &str) -> bool {
        SECRET_FIELDS.iter().any(|s| s.eq_ignore_ascii_case(name))
            || self
                .body_fields
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
    }

    /// A URL with secret query values and any userinfo redacted.
    pub(crate) fn url(&self, url: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let base = strip_userinfo(base);
        match query {
            Some(query) => format!("{base}?{}", self.form(query)),
            None => base,
        }
    }

    /// `a=1&b=2` with secret values redacted.
    fn form(&self, pairs: &str) -> String {
        pairs
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if self.is_secret_query(&decoded(name))
                        || self.is_secret_field(&decoded(name)) =>
                {
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Redacts secret fields of a stored request body: anywhere in a JSON
    /// value, or in a form-encoded string. True if anything changed.
    pub(crate) fn body(&self, body: &mut Value) -> bool {
        match body {
            // Internal: JSON that is not byte-for-byte serde's compact form
            // (spaces, escapes) is stored as text; its fields are secrets
            // all the same, so it is stored redacted as a JSON value.
            Value::String(text) if text.trim_start().starts_with(['{', '[']) => {
                let Ok(mut parsed) = serde_json::from_str::<Value>(text) else {
                    return false;
                };
                let changed = self.json_fields(&mut parsed);
                if changed {
                    *body = parsed;
                }
                changed
            }
            Value::String(text) if looks_like_form(text) => {
                let redacted = self.form(text);
                let changed = redacted != *text;
                *text = redacted;
                changed
            }
            Value::Object(_) | Value::Array(_) => self.json_fields(body),
            _ => false,
        }
    }

    fn json_fields(&self, value: &mut Value) -> bool {
        let mut changed = false;
        match value {
            Value::Object(map) => {
                // Internal: an encoded body's readable view is redacted; its
                // bytes cannot be without breaking them, so they are dropped.
                if map.contains_key("base64") && map.contains_key("decoded") {
                    if let Some(decoded) = map.get_mut("decoded")
                        && self.body(decoded)
                    {
                        map.remove("base64");
                        return true;
                    }
                    return false;
                }
                for (name, field) in map.iter_mut() {
                    if self.is_secret_field(name) && !field.is_null() && field != REDACTED {
                        *field = Value::String(REDACTED.into());
                        changed = true;
                    } else {
                        changed |= self.json_fields(field);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    changed |= self.json_fields(item);
                }
            }
            _ => {}
        }
        changed
    }

    /// The response headers to store: without `Set-Cookie` unless the config
    /// keeps it, so a replay never hands a recorded session to a client.
    pub(crate) fn response_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut stored = headers.clone();
        if !self.keep_set_cookie {
            stored.remove(http::header::SET_COOKIE);
        }
        stored
    }

    /// Applies the rules to an outcome as stored (`cacheow redact`): its
    /// request's headers, URL and body, and its response's `Set-Cookie`.
    /// True if anything changed.
    pub(crate) fn outcome(&self, outcome: &mut Value) -> bool {
        let mut changed = false;
        if let Some(request) = outcome.get_mut("request").filter(|r| r.is_object()) {
            if let Some(Value::Array(headers)) = request.get_mut("headers") {
                for pair in headers.iter_mut() {
                    if let Some([Value::String(name), value]) =
                        pair.as_array_mut().map(Vec::as_mut_slice)
                        && self.is_secret_header(name)
                        && value != REDACTED
                    {
                        *value = Value::String(REDACTED.into());
                        changed = true;
                    }
                }
            }
            if let Some(Value::String(url)) = request.get_mut("url") {
                let redacted = self.url(url);
                changed |= redacted != *url;
                *url = redacted;
            }
            if let Some(body) = request.get_mut("body") {
                changed |= self.body(body);
            }
        }
        // Internal: a manual outcome's Set-Cookie was put there on purpose.
        let manual = outcome.get("is_manual").and_then(Value::as_bool) == Some(true);
        if !self.keep_set_cookie
            && !manual
            && let Some(Value::Array(headers)) = outcome.pointer_mut("/value/headers")
        {
            let before = headers.len();
            headers.retain(|pair| {
                !pair
                    .get(0)
                    .and_then(Value::as_str)
                    .is_some_and(|name| name.eq_ignore_ascii_case("set-cookie"))
            });
            changed |= headers.len() != before;
        }
        changed
    }
}

/// `scheme://user:pass@host/…` without `user:pass@`.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
        None => url.to_owned(),
    }
}

fn decoded(name: &str) -> String {
    name.replace('+', " ")
}

fn looks_like_form(text: &str) -> bool {
    !text.is_empty()
        && text.contains('=')
        && !text.contains(char::is_whitespace)
        && !text.starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_lose_secret_query_values_and_userinfo() {
        let rules = Redaction {
            query: vec!["sig".into()],
            ..Redaction::default()
        };
        assert_eq!(
            rules.url("https://user:pw@api.example/v1/x?api_key=abc&q=1&sig=zz&KEY=k"),
            "https://api.example/v1/x?api_key=[redacted]&q=1&sig=[redacted]&KEY=[redacted]"
        );
        assert_eq!(rules.url("http://h/p"), "http://h/p");
    }

    #[test]
    fn body_fields_are_redacted_in_json_and_forms() {
        let rules = Redaction::default();
        let mut body =
            json!({"user": "ann", "password": "hunter2", "nested": [{"client_secret": "s"}]});
        assert!(rules.body(&mut body));
        assert_eq!(
            body,
            json!({"user": "ann", "password": "[redacted]", "nested": [{"client_secret": "[redacted]"}]})
        );
        assert!(!rules.body(&mut body), "a second pass changes nothing");
        let mut form = json!("user=ann&password=hunter2");
        assert!(rules.body(&mut form));
        assert_eq!(form, json!("user=ann&password=[redacted]"));
        let mut text = json!("just some text");
        assert!(!rules.body(&mut text));
        let mut spaced = json!("{\"user\": \"ann\", \"password\": \"hunter2\"}");
        assert!(
            rules.body(&mut spaced),
            "JSON stored as text is redacted too"
        );
        assert_eq!(spaced, json!({"user": "ann", "password": "[redacted]"}));
    }

    #[test]
    fn stored_outcomes_are_redacted_in_place() {
        let rules = Redaction::default();
        let mut outcome = json!({
            "value": {"status": 200, "headers": [["set-cookie", "sid=1"], ["content-type", "text/plain"]], "body": "ok"},
            "request": {
                "method": "POST",
                "url": "http://h/login?token=t",
                "headers": [["x-goog-api-key", "g"], ["accept", "*/*"]],
                "body": {"password": "p"},
            },
        });
        assert!(rules.outcome(&mut outcome));
        assert_eq!(
            outcome["value"]["headers"],
            json!([["content-type", "text/plain"]])
        );
        assert_eq!(outcome["request"]["url"], "http://h/login?token=[redacted]");
        assert_eq!(
            outcome["request"]["headers"][0],
            json!(["x-goog-api-key", "[redacted]"])
        );
        assert_eq!(
            outcome["request"]["body"],
            json!({"password": "[redacted]"})
        );
        assert!(!rules.outcome(&mut outcome));
    }
}
