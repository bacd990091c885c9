//! `--no-intercept` patterns: which CONNECT hosts are tunnelled blind (a
//! leaf, read by the config and used by the tunnel).

/// A `--no-intercept` pattern: a glob over the host, optionally with a
/// port (`host:port`, `[v6]:port`), where `*` matches any run of characters
/// and `?` one character, ignoring case.
#[derive(Debug, Clone)]
pub(crate) struct HostPattern {
    host: String,
    port: Option<String>,
}

impl HostPattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let pattern = text.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err("the pattern is empty".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || "-._:[]*?".contains(c)))
        {
            return Err(format!(
                "`{text}` has `{c}`; a pattern is a host name (or host:port) with * and ? wildcards"
            ));
        }
        let (host, port) = if let Some(rest) = pattern.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}` opens `[` without closing it"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("`{text}`: expected `:port` after `]`")),
                },
            }
        } else {
            match pattern.split_once(':') {
                // One colon: host:port. More: a bare IPv6 address.
                Some((host, port)) if !port.contains(':') => (host, Some(port)),
                _ => (pattern.as_str(), None),
            }
        };
        if host.is_empty() || port.is_some_and(str::is_empty) {
            return Err(format!("`{text}` has an empty host or port"));
        }
        Ok(Self {
            host: host.to_owned(),
            port: port.map(str::to_owned),
        })
    }

    /// True when the pattern matches `host` (lowercase, IPv6 without
    /// brackets) on `port`.
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        glob(self.host.as_bytes(), host.as_bytes())
            && self
                .port
                .as_ref()
                .is_none_or(|pattern| glob(pattern.as_bytes(), port.to_string().as_bytes()))
    }
}

/// `*` and `?` glob matching, iterative with one backtrack point.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}
