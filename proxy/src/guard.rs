//! Who may use a listener, and requests that must not be served: the token
//! off loopback (`Proxy-Authorization` for proxying), the `Host` check of
//! reverse listeners against DNS rebinding, and the `Via` loop guard.

use std::net::IpAddr;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cacheow_control::tokens_match;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};

use crate::body::ProxyBody;
use crate::error::{Kind, ProxyError};

/// How a reverse listener's client gives the token when it cannot set
/// `Proxy-Authorization` (its `Authorization` belongs to the upstream).
pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-cacheow-token");

/// A request that passed through this many cacheows is refused: a chain
/// that long is a loop between processes.
const MAX_HOPS: usize = 8;

/// The listener number of the main port in `via`; reverse listeners
/// count from 1 in flag order.
pub(crate) const MAIN_LISTENER: usize = 0;

/// This process's pseudonym in `Via` (RFC 9110 §7.6.3), random per process.
fn pseudonym() -> &'static str {
    static PSEUDONYM: OnceLock<String> = OnceLock::new();
    PSEUDONYM.get_or_init(|| format!("cacheow-{:08x}", fastrand::u32(..)))
}

/// The `Via` entry a listener adds to what it forwards: unique per process
/// and listener, so a request that comes back to the same listener is
/// recognised while one that passes from the main port to a reverse
/// listener of the same process is not.
pub(crate) fn via(listener: usize) -> HeaderValue {
    HeaderValue::from_str(&format!("1.1 {}.{listener}", pseudonym())).expect("ASCII pseudonym")
}

fn via_entries(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// A 508 when the request already passed through this listener (`own` is
/// its `via`), or through too many cacheows: an upstream that leads back.
pub(crate) fn loop_refusal(headers: &HeaderMap, own: &HeaderValue) -> Option<Response<ProxyBody>> {
    let own = own.to_str().expect("ASCII pseudonym");
    let mut hops = 0;
    for entry in via_entries(headers) {
        if entry == own {
            return Some(loop_detected(
                "this request came back to the cacheow listener that forwarded it: an upstream (or a reverse listener's URL) points at cacheow itself",
            ));
        }
        hops += usize::from(entry.contains("cacheow-"));
    }
    (hops >= MAX_HOPS).then(|| {
        loop_detected(&format!(
            "this request passed through {hops} cacheows: their upstreams form a loop"
        ))
    })
}

/// A 508 for an API request forwarded by this very process: a reverse
/// listener (or an upstream) pointed at cacheow's own API.
pub(crate) fn api_loop_refusal(headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    let mine = format!("1.1 {}.", pseudonym());
    via_entries(headers).any(|e| e.starts_with(&mine)).then(|| {
        loop_detected(
            "a cacheow listener forwarded this request to cacheow's own API; point its upstream elsewhere",
        )
    })
}

fn loop_detected(message: &str) -> Response<ProxyBody> {
    ProxyError::new(Kind::LoopDetected, message).refuse()
}

/// True when `headers` carry the token: as the password (any user name)
/// of Basic `Proxy-Authorization`, as its Bearer credentials, or, when
/// `token_header` is allowed, in `x-cacheow-token`.
pub(crate) fn carries_token(headers: &HeaderMap, token: &str, token_header: bool) -> bool {
    let from_proxy_auth = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|value| credentials_match(value, token));
    let from_header = token_header
        && headers
            .get(TOKEN_HEADER)
            .is_some_and(|v| tokens_match(v.as_bytes(), token.as_bytes()));
    from_proxy_auth || from_header
}

fn credentials_match(value: &str, token: &str) -> bool {
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return tokens_match(credentials.as_bytes(), token.as_bytes());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    BASE64.decode(credentials).is_ok_and(|decoded| {
        decoded
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| tokens_match(&decoded[colon + 1..], token.as_bytes()))
    })
}

/// The 407 a proxy client without the token gets; standard clients then
/// send the credentials of their proxy URL.
pub(crate) fn proxy_auth_required() -> Response<ProxyBody> {
    ProxyError::new(
        Kind::ProxyAuthRequired,
        "this cacheow listens off loopback and proxies only for clients with its token: use the proxy URL http://cacheow:TOKEN@HOST:PORT",
    )
    .refuse()
}

/// The 401 a reverse listener's client without the token gets.
pub(crate) fn reverse_auth_required() -> Response<ProxyBody> {
    ProxyError::new(
        Kind::Unauthorized,
        "this reverse listener is off loopback and wants cacheow's token: send `x-cacheow-token: TOKEN` (or `Proxy-Authorization: Bearer TOKEN`)",
    )
    .refuse()
}

/// The `Host` check of a loopback reverse listener: a DNS-rebinding page
/// sends its own domain name, while local clients use an address or
/// `localhost` (or, in HTTP/1.0, no `Host` at all).
pub(crate) fn local_host_name(host: &str) -> bool {
    if host.is_empty() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
}

/// True for an `Origin` (a browser page) that is not on this machine.
pub(crate) fn foreign_origin(origin: &str) -> bool {
    let authority = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    authority.is_empty() || !local_host_name(authority)
}

/// The 403 for a cross-origin request to a reverse listener.
pub(crate) fn cross_origin(origin: &str) -> Response<ProxyBody> {
    ProxyError::new(
        Kind::Forbidden,
        format!(
            "cross-origin request from `{origin}` refused: a page on another site may not call this reverse listener (start cacheow with --token and send it to allow it)"
        ),
    )
    .refuse()
}

/// The 421 for a reverse listener's request with a foreign `Host`.
pub(crate) fn misdirected(host: &str) -> Response<ProxyBody> {
    ProxyError::new(
        Kind::Misdirected,
        format!(
            "Host `{host}` is not an address of this machine; call this reverse listener by IP address or `localhost` (or send cacheow's --token as `x-cacheow-token`)"
        ),
    )
    .refuse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_token_is_the_password_of_basic_credentials_or_a_bearer() {
        let basic = format!("Basic {}", BASE64.encode("cacheow:s3cret"));
        let other_user = format!("Basic {}", BASE64.encode("anyone:s3cret"));
        let wrong = format!("Basic {}", BASE64.encode("cacheow:s3cre"));
        let auth = header::PROXY_AUTHORIZATION;
        assert!(carries_token(&with(auth.clone(), &basic), "s3cret", false));
        assert!(carries_token(
            &with(auth.clone(), &other_user),
            "s3cret",
            false
        ));
        assert!(carries_token(
            &with(auth.clone(), "Bearer s3cret"),
            "s3cret",
            false
        ));
        assert!(!carries_token(&with(auth.clone(), &wrong), "s3cret", false));
        assert!(!carries_token(&with(auth, "Basic !!"), "s3cret", false));
        assert!(!carries_token(
            &with(TOKEN_HEADER, "s3cret"),
            "s3cret",
            false
        ));
        assert!(carries_token(&with(TOKEN_HEADER, "s3cret"), "s3cret", true));
        assert!(!carries_token(&HeaderMap::new(), "s3cret", true));
    }

    #[test]
    fn a_request_seen_by_the_same_listener_or_after_too_many_hops_is_a_loop() {
        let main = via(MAIN_LISTENER);
        let reverse = via(1);
        assert!(loop_refusal(&HeaderMap::new(), &main).is_none());
        let other = with(header::VIA, "1.1 nginx, 1.1 cacheow-00000001.0");
        assert!(loop_refusal(&other, &main).is_none());
        let passed_main = with(
            header::VIA,
            &format!("1.0 squid, {}", main.to_str().unwrap()),
        );
        let seen = loop_refusal(&passed_main, &main).unwrap();
        assert_eq!(seen.status(), http::StatusCode::LOOP_DETECTED);
        assert!(
            loop_refusal(&passed_main, &reverse).is_none(),
            "main port to reverse listener is fine"
        );
        assert!(api_loop_refusal(&passed_main).is_some());
        assert!(api_loop_refusal(&other).is_none());
        let chain: Vec<String> = (0..MAX_HOPS)
            .map(|i| format!("1.1 cacheow-{i:08x}.0"))
            .collect();
        assert!(loop_refusal(&with(header::VIA, &chain.join(", ")), &main).is_some());
    }

    #[test]
    fn origins_on_this_machine_are_local() {
        assert!(!foreign_origin("http://localhost:3000"));
        assert!(!foreign_origin("http://127.0.0.1:5173"));
        assert!(foreign_origin("https://evil.example"));
        assert!(foreign_origin("null"));
    }

    #[test]
    fn local_host_names_are_addresses_and_localhost() {
        for host in [
            "127.0.0.1:9000",
            "[::1]:9000",
            "localhost",
            "api.localhost:80",
            "10.0.0.2",
            "",
        ] {
            assert!(local_host_name(host), "{host}");
        }
        for host in ["evil.example:9000", "localhost.evil.example"] {
            assert!(!local_host_name(host), "{host}");
        }
    }
}
