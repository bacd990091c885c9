//! The one body type cacheow sends and receives: a buffered body, a
//! buffered head chained to the rest of a stream, or a live stream teed into
//! a capture buffer with a size cap.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// What a tee saw by the end of the stream.
#[derive(Debug)]
pub(crate) enum Captured {
    /// The whole body, within the cap.
    Complete(Bytes),
    /// The body went over the cap; it was passed through unrecorded.
    Oversize,
    /// The stream broke before its end.
    Broken(String),
}

type OnEnd = Box<dyn FnOnce(Captured) + Send>;

/// A body cacheow sends or receives.
pub(crate) enum ProxyBody {
    /// Fully buffered (possibly empty).
    Full(Option<Bytes>),
    /// A buffered head followed by the rest of a live stream.
    Chain { head: Option<Bytes>, rest: Incoming },
    /// A live stream, forwarded frame by frame while being captured.
    Tee(Tee),
}

impl ProxyBody {
    pub(crate) fn empty() -> Self {
        ProxyBody::Full(None)
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// Forwards `inner` and hands what it carried to `on_end` once it is
    /// over: the bytes if they fit in `cap`, else `Oversize`.
    pub(crate) fn tee(
        inner: Incoming,
        cap: usize,
        on_end: impl FnOnce(Captured) + Send + 'static,
    ) -> Self {
        ProxyBody::Tee(Tee {
            inner,
            captured: Some(BytesMut::new()),
            cap,
            on_end: Some(Box::new(on_end)),
        })
    }
}

/// See `ProxyBody::tee`.
pub(crate) struct Tee {
    inner: Incoming,
    captured: Option<BytesMut>,
    cap: usize,
    on_end: Option<OnEnd>,
}

impl Tee {
    fn end(&mut self, captured: Captured) {
        if let Some(on_end) = self.on_end.take() {
            on_end(captured);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Internal: hyper stops polling once a sized body is complete, so the
        // end can show up here. A client that hangs up mid-body also drops us
        // early; that outcome is incomplete and must not be recorded as whole.
        let captured = if self.inner.is_end_stream() {
            match self.captured.take() {
                Some(bytes) => Captured::Complete(bytes.freeze()),
                None => Captured::Oversize,
            }
        } else {
            Captured::Broken("the client closed the connection before the body ended".into())
        };
        self.end(captured);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Chain { head, rest } => match head.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            ProxyBody::Tee(tee) => {
                let polled = ready!(Pin::new(&mut tee.inner).poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let over = tee
                                .captured
                                .as_ref()
                                .is_some_and(|c| c.len() + data.len() > tee.cap);
                            if over {
                                tee.captured = None;
                            } else if let Some(captured) = tee.captured.as_mut() {
                                captured.extend_from_slice(data);
                            }
                        }
                    }
                    Some(Err(e)) => tee.end(Captured::Broken(e.to_string())),
                    None => {
                        let captured = match tee.captured.take() {
                            Some(bytes) => Captured::Complete(bytes.freeze()),
                            None => Captured::Oversize,
                        };
                        tee.end(captured);
                    }
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Chain { head, rest } => head.is_none() && rest.is_end_stream(),
            ProxyBody::Tee(tee) => tee.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Chain { head, rest } => {
                let head = head.as_ref().map_or(0, |b| b.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + head);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
            ProxyBody::Tee(tee) => tee.inner.size_hint(),
        }
    }
}
