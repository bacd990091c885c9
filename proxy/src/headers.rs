//! Header names cacheow adds, and the headers it never stores or forwards.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Where the reply came from: `upstream`, `cache` or `mock`.
pub(crate) const SOURCE: HeaderName = HeaderName::from_static("x-cacheow-source");
/// The id of the function that served the call.
pub(crate) const FUNCTION: HeaderName = HeaderName::from_static("x-cacheow-function");
/// `lagging` on a durable reply whose outcome is committed to the index but
/// not yet written to its JSON file.
pub(crate) const MIRROR: HeaderName = HeaderName::from_static("x-cacheow-mirror");
/// The error kind, on replies that stand for a failure.
pub(crate) const ERROR: HeaderName = HeaderName::from_static("x-cacheow-error");

/// Hop-by-hop headers (RFC 9110 §7.6.1), the legacy `proxy-connection`, and
/// `x-cacheow-token`, which is for cacheow alone.
const HOP_BY_HOP: [&str; 10] = [
    "x-cacheow-token",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        strip_listed(headers);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the headers a `Connection` header names. Names already in
/// `HOP_BY_HOP` and the `close` option (most `Connection` headers hold only
/// those) are skipped, so the usual case allocates nothing.
fn strip_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Request headers whose values are secrets, redacted in the mirror and the
/// panel (configurable additions come from the config file).
pub(crate) const SECRET_HEADERS: [&str; 7] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-goog-api-key",
];

/// What a secret's value is stored as.
pub(crate) const REDACTED: &str = "[redacted]";

/// True for a header whose value is a secret: a built-in one or one of
/// `extra` (the config file's `redact_headers`), in any case.
pub(crate) fn is_secret(name: &str, extra: &[String]) -> bool {
    SECRET_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(name))
        || extra.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// Response headers that differ between otherwise identical replies, left
/// out when deciding whether two outcomes are the same.
pub(crate) const VOLATILE_HEADERS: [&str; 12] = [
    "date",
    "age",
    "expires",
    "x-request-id",
    "request-id",
    "x-amzn-requestid",
    "x-amz-request-id",
    "x-amz-cf-id",
    "cf-ray",
    "x-trace-id",
    "traceparent",
    "server-timing",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_standard_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }
}
