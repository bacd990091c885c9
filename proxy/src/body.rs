//! The one body type cacheow sends and receives: a buffered body, a
//! buffered head chained to the rest of a stream, a live stream teed into a
//! capture buffer with a size cap, or a recorded stream replayed on its
//! recorded schedule.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Errors a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One piece of a body and when it arrived, counted from the response head.
pub(crate) type Chunk = (Duration, Bytes);

/// What a tee saw by the end of the stream.
#[derive(Debug)]
pub(crate) enum Captured {
    /// The whole body, within the cap, as it arrived.
    Complete(Vec<Chunk>),
    /// The upstream broke off mid-body after sending these chunks.
    Broken { chunks: Vec<Chunk>, error: String },
    /// The body went over the cap; it was passed through unrecorded.
    Oversize,
    /// The client hung up before the end; nothing trustworthy to record.
    ClientGone,
}

type OnEnd = Box<dyn FnOnce(Captured) + Send>;

/// A body cacheow sends or receives.
pub(crate) enum ProxyBody {
    /// Fully buffered (possibly empty).
    Full(Option<Bytes>),
    /// A buffered head followed by the rest of a live stream.
    Chain { head: Option<Bytes>, rest: Incoming },
    /// A live stream, forwarded frame by frame while being captured.
    Tee(Box<Tee>),
    /// A recorded stream, sent on its recorded schedule.
    Replay(Box<Replay>),
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
    /// over: the chunks with their arrival times if they fit in `cap`.
    pub(crate) fn tee(
        inner: Incoming,
        cap: usize,
        on_end: impl FnOnce(Captured) + Send + 'static,
    ) -> Self {
        ProxyBody::Tee(Box::new(Tee {
            inner,
            chunks: Some(Vec::new()),
            size: 0,
            cap,
            started: Instant::now(),
            on_end: Some(Box::new(on_end)),
        }))
    }

    /// Sends `chunks` at their offsets times `speed` (0 = at once), then
    /// breaks the stream with `end_error` if there is one.
    pub(crate) fn replay(chunks: Vec<Chunk>, speed: f64, end_error: Option<String>) -> Self {
        ProxyBody::Replay(Box::new(Replay {
            chunks: chunks.into(),
            speed,
            started: None,
            sleep: None,
            end_error,
            flushed_before_break: false,
        }))
    }
}

/// See `ProxyBody::tee`.
pub(crate) struct Tee {
    inner: Incoming,
    /// `None` once the body went over the cap.
    chunks: Option<Vec<Chunk>>,
    size: usize,
    cap: usize,
    started: Instant,
    on_end: Option<OnEnd>,
}

impl Tee {
    fn end(&mut self, captured: Captured) {
        if let Some(on_end) = self.on_end.take() {
            on_end(captured);
        }
    }

    fn complete(&mut self) -> Captured {
        match self.chunks.take() {
            Some(chunks) => Captured::Complete(chunks),
            None => Captured::Oversize,
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Internal: hyper stops polling once a sized body is complete, so the
        // end can show up here; otherwise the client hung up mid-body.
        let captured = if self.inner.is_end_stream() {
            self.complete()
        } else {
            Captured::ClientGone
        };
        self.end(captured);
    }
}

/// See `ProxyBody::replay`.
pub(crate) struct Replay {
    chunks: VecDeque<Chunk>,
    speed: f64,
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    end_error: Option<String>,
    flushed_before_break: bool,
}

/// The error a replayed stream ends with, to break the client connection as
/// the recorded upstream did.
#[derive(Debug)]
pub(crate) struct ReplayedBreak(pub(crate) String);

impl std::fmt::Display for ReplayedBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replayed stream failure: {}", self.0)
    }
}

impl std::error::Error for ReplayedBreak {}

impl Replay {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some((offset, _)) = self.chunks.front() else {
            if self.end_error.is_some() && !self.flushed_before_break {
                // Internal: hyper drops what it has not flushed when a body
                // fails; one Pending lets it write the last chunks first.
                self.flushed_before_break = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(
                self.end_error
                    .take()
                    .map(|e| Err(Box::new(ReplayedBreak(e)) as BoxError)),
            );
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = started + offset.mul_f64(self.speed);
        if due > Instant::now() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            ready!(sleep.as_mut().poll(cx));
        }
        let (_, data) = self.chunks.pop_front().expect("checked above");
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Chain { head, rest } => match head.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            },
            ProxyBody::Replay(replay) => replay.poll_next(cx),
            ProxyBody::Tee(tee) => {
                let polled = ready!(Pin::new(&mut tee.inner).poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            tee.size += data.len();
                            if tee.size > tee.cap {
                                // Internal: drop what was kept so memory stays
                                // bounded by the cap, whatever the body's size.
                                tee.chunks = None;
                            } else if let Some(chunks) = tee.chunks.as_mut() {
                                chunks.push((tee.started.elapsed(), data.clone()));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let captured = match tee.chunks.take() {
                            Some(chunks) => Captured::Broken {
                                chunks,
                                error: e.to_string(),
                            },
                            None => Captured::Oversize,
                        };
                        tee.end(captured);
                    }
                    None => {
                        let captured = tee.complete();
                        tee.end(captured);
                    }
                }
                Poll::Ready(polled.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Chain { head, rest } => head.is_none() && rest.is_end_stream(),
            ProxyBody::Tee(tee) => tee.inner.is_end_stream(),
            ProxyBody::Replay(replay) => replay.chunks.is_empty() && replay.end_error.is_none(),
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
            // Internal: never exact, so a replayed stream is sent chunked
            // like the original rather than with a content-length.
            ProxyBody::Replay(_) => SizeHint::new(),
        }
    }
}
