//! HTTP/1.1 spoken as raw bytes on a socket, for tests that need to control
//! the connection itself (keep it open, reuse it, send what a client sends).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of header `name` in a raw HTTP/1.1 reply.
pub fn header<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let head = reply.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The body of a raw HTTP/1.1 reply.
pub fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Writes `request` on `stream` and reads one reply, by its content-length;
/// the connection stays open for the next request.
pub async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("reply within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&reply).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length: usize = header(&format!("{head}\r\n\r\n"), "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rest.len() >= length {
                return text;
            }
        }
    }
}

/// One request on a fresh connection, which stays open after the reply (as
/// Java's would).
pub async fn exchange_keepalive(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    exchange(&mut stream, request).await
}

/// Sends `request` to `addr` and reads until the server closes (the request
/// should say `connection: close`).
pub async fn exchange_until_close(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("reply within 10 s")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}
