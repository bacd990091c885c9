//! Per-request controls: what one request asks of cacheow beyond its
//! function's settings. `x-cacheow-mode` is for cacheow alone and never
//! reaches the upstream; `Cache-Control` request directives (RFC 9111
//! §5.2.1) are read and forwarded, since they are meant for every cache on
//! the way.

use cacheow_engine::{Mode, Overrides};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Serves one request in another mode: `default`, `cache`, `mock`, or
/// `bypass` (straight through, nothing recorded or replayed).
pub(crate) const MODE: HeaderName = HeaderName::from_static("x-cacheow-mode");

/// Reads (and removes) cacheow's own control header and reads the request's
/// `Cache-Control`; `Err` says what is wrong with a control header.
pub(crate) fn take_overrides(headers: &mut HeaderMap) -> Result<Overrides, String> {
    let mut overrides = Overrides::default();
    if let Some(mode) = headers.remove(MODE) {
        apply_mode(&mut overrides, &mode)?;
    }
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for directive in text.split(',') {
            let name = directive.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-cache") {
                overrides.refresh = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                overrides.no_store = true;
            } else if name.eq_ignore_ascii_case("only-if-cached") {
                overrides.only_if_cached = true;
            }
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
    fn cache_control_directives_are_read_and_kept() {
        let (read, left) = overrides(&[
            ("cache-control", "max-age=0, No-Cache"),
            ("cache-control", "no-store"),
        ]);
        let read = read.unwrap();
        assert!(read.refresh && read.no_store && !read.only_if_cached);
        assert_eq!(left.get_all(header::CACHE_CONTROL).iter().count(), 2);
        let (read, _) = overrides(&[("cache-control", "only-if-cached")]);
        assert!(read.unwrap().only_if_cached);
        let (read, _) = overrides(&[]);
        assert_eq!(read.unwrap(), Overrides::default());
    }
}
