//! The first request line of a connection on the main listener, checked
//! before hyper parses it. hyper answers a target it cannot parse with an
//! empty 400 and logs nothing; here such a target gets a JSON 400 that says
//! what was wrong, and the unbracketed IPv6 form that httpx and the openai
//! SDK send (`GET http://::1:8080/x`, `CONNECT ::1:443`) is mended.

use std::net::Ipv6Addr;

use bytes::{Bytes, BytesMut};
use http::Uri;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest first line looked at; a longer one is left to hyper.
const MAX_LINE: usize = 16 * 1024;

/// What the first line of a connection came to.
#[derive(Debug, PartialEq)]
pub(crate) enum FirstLine {
    /// Serve the connection, starting with these bytes. `mended` says the
    /// request line was rewritten: each reply then closes the connection,
    /// so the client's next request comes on a new one and is checked too.
    Serve { prefix: Bytes, mended: bool },
    /// Answer 400 with this message and close.
    Refuse(String),
    /// The client sent nothing (or went away) before a whole line.
    Gone,
}

/// Reads up to the end of the first line (or `MAX_LINE` bytes) from `io`.
pub(crate) async fn read_first_line<I: AsyncRead + Unpin>(io: &mut I) -> FirstLine {
    let mut buffer = BytesMut::with_capacity(4096);
    let read = async {
        loop {
            if buffer.windows(2).any(|w| w == b"\r\n") || buffer.len() >= MAX_LINE {
                return true;
            }
            match io.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return !buffer.is_empty(),
                Ok(_) => {}
            }
        }
    };
    // Internal: the socket's first-request deadline (`Deadline`) bounds
    // how long this waits.
    if read.await {
        check(buffer.freeze())
    } else {
        FirstLine::Gone
    }
}

/// Checks the request line at the start of `bytes`.
fn check(bytes: Bytes) -> FirstLine {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return serve(bytes);
    };
    let Ok(line) = std::str::from_utf8(&bytes[..end]) else {
        return FirstLine::Refuse("the request line is not valid UTF-8 text".into());
    };
    // Internal: HTTP/2 with prior knowledge starts `PRI * HTTP/2.0`.
    if line.starts_with("PRI * ") {
        return serve(bytes);
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return FirstLine::Refuse(format!(
            "the request line `{}` is not `METHOD TARGET HTTP/1.1`; a request target cannot contain spaces (percent-encode them as %20)",
            shorten(line)
        ));
    };
    if !version.starts_with("HTTP/") || target.parse::<Uri>().is_ok() {
        return serve(bytes);
    }
    match mend_ipv6(method, target) {
        Some(mended) => {
            let mut prefix = BytesMut::with_capacity(bytes.len() + 2);
            prefix.extend_from_slice(format!("{method} {mended} {version}").as_bytes());
            prefix.extend_from_slice(&bytes[end..]);
            FirstLine::Serve {
                prefix: prefix.freeze(),
                mended: true,
            }
        }
        None => FirstLine::Refuse(format!(
            "the request target `{}` is not a valid URI: expected an absolute URL such as http://host:port/path (IPv6 hosts in brackets, http://[::1]:8080/), host:port after CONNECT, or a path",
            shorten(target)
        )),
    }
}

fn serve(prefix: Bytes) -> FirstLine {
    FirstLine::Serve {
        prefix,
        mended: false,
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `::1:443` → `[::1]:443` after CONNECT, and `http://::1:8080/x` →
/// `http://[::1]:8080/x`: the last colon-separated group is the port when
/// what comes before it is an IPv6 address; otherwise, for a URL, the whole
/// host is the address (no port). `None` when that does not make a URI.
fn mend_ipv6(method: &str, target: &str) -> Option<String> {
    let mended = if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = target.rsplit_once(':')?;
        host.parse::<Ipv6Addr>().ok()?;
        port.parse::<u16>().ok()?;
        format!("[{host}]:{port}")
    } else {
        let (scheme, rest) = target.split_once("://")?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let bracketed = match authority.rsplit_once(':') {
            Some((host, port))
                if host.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok() =>
            {
                format!("[{host}]:{port}")
            }
            _ => {
                authority.parse::<Ipv6Addr>().ok()?;
                format!("[{authority}]")
            }
        };
        format!("{scheme}://{bracketed}{path}")
    };
    mended.parse::<Uri>().ok().map(|_| mended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(line: &str) -> FirstLine {
        check(Bytes::from(format!("{line}\r\nhost: x\r\n\r\n")))
    }

    fn mended_line(line: &str) -> Option<String> {
        match checked(line) {
            FirstLine::Serve {
                prefix,
                mended: true,
            } => {
                let text = String::from_utf8(prefix.to_vec()).unwrap();
                Some(text.split("\r\n").next().unwrap().to_owned())
            }
            _ => None,
        }
    }

    #[test]
    fn valid_lines_pass_untouched() {
        for line in [
            "GET http://[::1]:8080/x HTTP/1.1",
            "GET /api/functions HTTP/1.1",
            "CONNECT api.example.com:443 HTTP/1.1",
            "PRI * HTTP/2.0",
        ] {
            assert!(
                matches!(checked(line), FirstLine::Serve { mended: false, .. }),
                "{line}"
            );
        }
    }

    #[test]
    fn unbracketed_ipv6_is_mended() {
        assert_eq!(
            mended_line("GET http://::1:8080/x?y=1 HTTP/1.1").as_deref(),
            Some("GET http://[::1]:8080/x?y=1 HTTP/1.1")
        );
        assert_eq!(
            mended_line("CONNECT ::1:443 HTTP/1.1").as_deref(),
            Some("CONNECT [::1]:443 HTTP/1.1")
        );
        assert_eq!(
            mended_line("GET http://fe80::1/x HTTP/1.1").as_deref(),
            Some("GET http://[fe80::1]/x HTTP/1.1")
        );
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        for line in [
            "GET http://exa mple/ HTTP/1.1",
            "GET http://a^b/ HTTP/1.1",
            "CONNECT ::1 HTTP/1.1",
        ] {
            match checked(line) {
                FirstLine::Refuse(message) => assert!(message.contains("request"), "{message}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
