//! Per-request controls: what one request asks of cacheow beyond its
//! function's settings: `x-cacheow-mode`, and the `Cache-Control` request
//! directives (RFC 9111 §5.2.1) `no-cache`, `no-store` and `only-if-cached`.
//! cacheow is the cache that acts on them, so they are taken out before the
//! upstream sees the request; other directives (`max-age=0`, …) pass on.

use cacheow_engine::{Mode, Overrides};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Serves one request in another mode: `default`, `cache`, `mock`, or
/// `bypass` (straight through, nothing recorded or replayed).
pub(crate) const MODE: HeaderName = HeaderName::from_static("x-cacheow-mode");

/// Reads and removes the per-request controls; `Err` says what is wrong
/// with a control header.
pub(crate) fn take_overrides(headers: &mut HeaderMap) -> Result<Overrides, String> {
    let mut overrides = Overrides::default();
    if let Some(mode) = headers.remove(MODE) {
        apply_mode(&mut overrides, &mode)?;
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        return Ok(overrides);
    }
    let mut kept = Vec::new();
    let mut consumed = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let name = directive.split('=').next().unwrap_or("").trim();
            let flag = if name.eq_ignore_ascii_case("no-cache") {
                &mut overrides.refresh
            } else if name.eq_ignore_ascii_case("no-store") {
                &mut overrides.no_store
            } else if name.eq_ignore_ascii_case("only-if-cached") {
                &mut overrides.only_if_cached
            } else {
                kept.push(directive.to_owned());
                continue;
            };
            *flag = true;
            consumed = true;
        }
    }
    // Internal: untouched unless a directive was taken, so the common
    // request allocates nothing here.
    if consumed {
        headers.remove(header::CACHE_CONTROL);
        if let Ok(rest) = HeaderValue::from_str(&kept.join(", "))
            && !kept.is_empty()
        {
            headers.insert(header::CACHE_CONTROL, rest);
        }
    }
    Ok(overrides)
}

fn apply_mode(overrides: &mut Overrides, value: &HeaderValue) -> Result<(), String> {
    let text = value.to_str().unwrap_or("").trim();
    if text.eq_ignore_ascii_case("bypass") {
        overrides.bypass = true;
        return Ok(());
    }
    let mode = text.to_ascii_lowercase().parse::<Mode>().map_err(|_| {
        format!(
            "`x-cacheow-mode: {}` is not a mode; use default, cache, mock or bypass",
            String::from_utf8_lossy(value.as_bytes())
        )
    })?;
    overrides.mode = Some(mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> (Result<Overrides, String>, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (take_overrides(&mut headers), headers)
    }

    #[test]
    fn the_mode_header_is_read_and_removed() {
        let (read, left) = overrides(&[("x-cacheow-mode", "Cache"), ("accept", "*/*")]);
        assert_eq!(read.unwrap().mode, Some(Mode::Cache));
        assert!(!left.contains_key(MODE));
        assert!(left.contains_key("accept"));
        let (read, _) = overrides(&[("x-cacheow-mode", "bypass")]);
        assert!(read.unwrap().bypass);
        let (read, _) = overrides(&[("x-cacheow-mode", "cached")]);
        assert!(read.unwrap_err().contains("default, cache, mock or bypass"));
    }

    #[test]
    fn cache_control_directives_are_read_and_taken_out() {
        let (read, left) = overrides(&[
            ("cache-control", "max-age=0, No-Cache"),
            ("cache-control", "no-store"),
        ]);
        let read = read.unwrap();
        assert!(read.refresh && read.no_store && !read.only_if_cached);
        assert_eq!(
            left[header::CACHE_CONTROL],
            "max-age=0",
            "other directives pass on"
        );
        let (_, left) = overrides(&[("cache-control", "only-if-cached")]);
        assert!(!left.contains_key(header::CACHE_CONTROL));
        let (_, left) = overrides(&[("cache-control", "max-age=60")]);
        assert_eq!(left[header::CACHE_CONTROL], "max-age=60");
        let (read, _) = overrides(&[("cache-control", "only-if-cached")]);
        assert!(read.unwrap().only_if_cached);
        let (read, _) = overrides(&[]);
        assert_eq!(read.unwrap(), Overrides::default());
    }
}
