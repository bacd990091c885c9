//! A new connection's deadline for its first request. hyper's header timer
//! starts only once it knows the protocol, and its protocol detection has
//! no timer, so a client that sends nothing, or a byte of the HTTP/2
//! preface, would hold its socket forever. Reads on this wrapper fail once
//! the deadline passes, until the first request has arrived.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Set by the service when the first request arrives; lifts the deadline.
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstRequest(Arc<AtomicBool>);

impl FirstRequest {
    pub(crate) fn arrived(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn has_arrived(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `io` whose reads fail with `TimedOut` after `within`, unless the first
/// request arrived before.
pub struct Deadline<I> {
    io: I,
    expiry: Pin<Box<Sleep>>,
    first: FirstRequest,
}

impl<I> Deadline<I> {
    pub(crate) fn new(io: I, within: Duration) -> (Self, FirstRequest) {
        let first = FirstRequest::default();
        let wrapped = Deadline {
            io,
            expiry: Box::pin(tokio::time::sleep(within)),
            first: first.clone(),
        };
        (wrapped, first)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if !this.first.has_arrived() => match this.expiry.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request arrived in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_fail_after_the_deadline_until_the_first_request() {
        let (client, server) = tokio::io::duplex(64);
        let (mut silent, _) = Deadline::new(server, Duration::from_millis(30));
        let mut byte = [0u8; 1];
        let err = silent.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let (mut served, first) = Deadline::new(server, Duration::from_millis(30));
        first.arrived();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(served.read(&mut byte).await.unwrap(), 1);
    }
}
