//! The one body type cacheow sends and receives: a buffered body, a
//! buffered head chained to the rest of a stream, a live stream teed into a
//! capture buffer with a size cap, or a recorded stream replayed on its
//! recorded schedule.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::live::{Following, Live};

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
    /// The client hung up before the end, and the rest did not arrive in
    /// time to be recorded.
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
    /// A buffered head followed by a client's request body lent to the
    /// upstream call (see [`Lent`]).
    Lent { head: Option<Bytes>, rest: Lent },
    /// Another call's live upstream body, followed as it arrives.
    Follow(Following),
}

/// A request body lent to the upstream client. If the call fails before
/// the client read it all, the rest comes back to be drained: an HTTP/2
/// client still uploading would otherwise see its stream reset instead of
/// reading the error reply.
#[derive(Clone)]
pub(crate) struct Lent(Arc<Mutex<Option<Incoming>>>);

impl Lent {
    pub(crate) fn new(body: Incoming) -> Lent {
        Lent(Arc::new(Mutex::new(Some(body))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<Incoming>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads and drops what is left, up to `cap` bytes and with pauses of at
    /// most `pause`; past either the client's stream is left to be reset.
    pub(crate) async fn drain(self, cap: usize, pause: Duration) {
        let Some(mut body) = self.with(Option::take) else {
            return;
        };
        let mut read = 0;
        while read <= cap {
            match tokio::time::timeout(pause, body.frame()).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
                _ => return,
            }
        }
    }
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
    /// over: the chunks with their arrival times if they fit in `cap`. If
    /// the client hangs up first (an SDK that stops reading at its last
    /// event), the rest is still read, for up to `finish_within`, so the
    /// stream is recorded as the upstream sent it.
    /// Each chunk is also pushed to `live`, for calls that follow this one.
    pub(crate) fn tee(
        inner: Incoming,
        cap: usize,
        finish_within: Duration,
        live: Option<Arc<Live>>,
        on_end: impl FnOnce(Captured) + Send + 'static,
    ) -> Self {
        ProxyBody::Tee(Box::new(Tee {
            inner: Some(inner),
            capture: Capture {
                chunks: Some(Vec::new()),
                size: 0,
                cap,
                started: Instant::now(),
                on_end: Some(Box::new(on_end)),
                live,
            },
            finish_within,
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
    /// `None` only while being dropped.
    inner: Option<Incoming>,
    capture: Capture,
    finish_within: Duration,
}

/// What a tee keeps of the body, and whom it tells at the end.
struct Capture {
    /// `None` once the body went over the cap.
    chunks: Option<Vec<Chunk>>,
    size: usize,
    cap: usize,
    started: Instant,
    /// `None` once told.
    on_end: Option<OnEnd>,
    /// Where followers read the body as it arrives.
    live: Option<Arc<Live>>,
}

impl Capture {
    fn push(&mut self, data: &Bytes) {
        if let Some(live) = &self.live {
            live.push(data);
        }
        self.size += data.len();
        if self.size > self.cap {
            // Internal: drop what was kept so memory stays bounded by the
            // cap, whatever the body's size.
            self.chunks = None;
        } else if let Some(chunks) = self.chunks.as_mut() {
            chunks.push((self.started.elapsed(), data.clone()));
        }
    }

    fn complete(&mut self) -> Captured {
        match self.chunks.take() {
            Some(chunks) => Captured::Complete(chunks),
            None => Captured::Oversize,
        }
    }

    fn broken(&mut self, error: String) -> Captured {
        match self.chunks.take() {
            Some(chunks) => Captured::Broken { chunks, error },
            None => Captured::Oversize,
        }
    }

    /// Hands `captured` on; `whole` says whether the upstream body was read
    /// to its clean end (an oversize capture may or may not have been).
    fn end(&mut self, captured: Captured, whole: bool) {
        if let Some(live) = self.live.take() {
            live.end(match &captured {
                _ if whole => Ok(()),
                Captured::Broken { error, .. } => Err(error.clone()),
                _ => Err("cacheow stopped reading the upstream body (over the size cap, or past the upstream timeout after its caller left)".into()),
            });
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(captured);
        }
    }

    /// Reads what is left of `inner` after the client went away.
    async fn finish_reading(mut self, mut inner: Incoming, within: Duration) {
        let rest = async {
            while let Some(frame) = inner.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            self.push(data);
                            // Internal: nobody reads on and nothing can be
                            // recorded, unless a follower still does.
                            if self.chunks.is_none() && self.live.is_none() {
                                return (Captured::Oversize, false);
                            }
                        }
                    }
                    Err(e) => return (self.broken(e.to_string()), false),
                }
            }
            (self.complete(), true)
        };
        let (captured, whole) = tokio::time::timeout(within, rest)
            .await
            .unwrap_or((Captured::ClientGone, false));
        self.end(captured, whole);
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.capture.on_end.is_none() {
            return;
        }
        // Internal: hyper stops polling once a sized body is complete, so the
        // end can show up here.
        if inner.is_end_stream() {
            let captured = self.capture.complete();
            self.capture.end(captured, true);
            return;
        }
        if self.capture.chunks.is_none() && self.capture.live.is_none() {
            self.capture.end(Captured::Oversize, false);
            return;
        }
        let capture = Capture {
            chunks: self.capture.chunks.take(),
            size: self.capture.size,
            cap: self.capture.cap,
            started: self.capture.started,
            on_end: self.capture.on_end.take(),
            live: self.capture.live.take(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(capture.finish_reading(inner, self.finish_within));
            }
            Err(_) => {
                let mut capture = capture;
                capture.end(Captured::ClientGone, false);
            }
        }
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
        let due = started + crate::replay::scaled_wait(*offset, self.speed);
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
            ProxyBody::Follow(following) => following
                .poll_next(cx)
                .map(|next| next.map(|r| r.map(Frame::data).map_err(Into::into))),
            ProxyBody::Lent { head, rest } => match head.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => rest.with(|body| match body.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }),
            },
            ProxyBody::Tee(tee) => {
                let Some(inner) = tee.inner.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = ready!(Pin::new(inner).poll_frame(cx));
                let capture = &mut tee.capture;
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            capture.push(data);
                        }
                    }
                    Some(Err(e)) => {
                        let captured = capture.broken(e.to_string());
                        capture.end(captured, false);
                    }
                    None => {
                        let captured = capture.complete();
                        capture.end(captured, true);
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
            ProxyBody::Tee(tee) => tee.inner.as_ref().is_none_or(Incoming::is_end_stream),
            ProxyBody::Replay(replay) => replay.chunks.is_empty() && replay.end_error.is_none(),
            ProxyBody::Follow(_) => false,
            ProxyBody::Lent { head, rest } => {
                head.is_none()
                    && rest.with(|body| body.as_ref().is_none_or(Incoming::is_end_stream))
            }
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
            ProxyBody::Tee(tee) => tee
                .inner
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint),
            // Internal: never exact, so a replayed stream is sent chunked
            // like the original rather than with a content-length.
            ProxyBody::Replay(_) | ProxyBody::Follow(_) => SizeHint::new(),
            ProxyBody::Lent { head, rest } => {
                let head = head.as_ref().map_or(0, |b| b.len() as u64);
                let rest = rest.with(|body| body.as_ref().map(Incoming::size_hint));
                let mut hint = SizeHint::new();
                if let Some(rest) = rest {
                    hint.set_lower(rest.lower() + head);
                    if let Some(upper) = rest.upper() {
                        hint.set_upper(upper + head);
                    }
                }
                hint
            }
        }
    }
}
