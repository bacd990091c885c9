//! A live upstream response shared with the identical calls that wait for
//! it (coalescing): each follower gets the head at once, the chunks that
//! already arrived, then every new chunk as the upstream sends it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// One message to a follower.
enum Piece {
    Data(Bytes),
    /// The upstream ended the body cleanly.
    End,
    /// The upstream broke off.
    Broken(String),
}

/// A response on its way from the upstream, shared as it arrives.
pub(crate) struct Live {
    pub(crate) status: StatusCode,
    /// As a replay would send them (redacted: no recorded session).
    pub(crate) headers: HeaderMap,
    /// Request headers a follower must have for this reply to answer it
    /// (`Vary`, and the conditions of a 304 or 412), as for a replay.
    requires: Vec<(HeaderName, Option<String>)>,
    state: Mutex<LiveState>,
}

struct LiveState {
    /// What arrived so far, for followers that join late; `None` once past
    /// the cap (later followers call on their own).
    arrived: Option<Vec<Bytes>>,
    size: usize,
    cap: usize,
    ended: Option<Result<(), String>>,
    followers: Vec<Follower>,
}

/// One follower's channel and how many bytes wait in it unread.
struct Follower {
    pieces: mpsc::UnboundedSender<Piece>,
    queued: Arc<AtomicUsize>,
}

impl Follower {
    /// Sends `piece`; false when the follower is gone or has fallen more
    /// than `cap` bytes behind (it is then told the stream broke).
    fn send(&self, piece: Piece, cap: usize) -> bool {
        if let Piece::Data(data) = &piece {
            let queued = self.queued.fetch_add(data.len(), Ordering::AcqRel) + data.len();
            if queued > cap {
                let reason = format!(
                    "this client fell more than {cap} bytes (--max-body-bytes) behind the call it shared"
                );
                tracing::warn!(%reason, "cut off a client that was following a shared upstream reply");
                let _ = self.pieces.send(Piece::Broken(reason));
                return false;
            }
        }
        self.pieces.send(piece).is_ok()
    }
}

impl Live {
    /// A response with this head whose body is kept for late followers up
    /// to `cap` bytes; `requires` is what a follower's request must match.
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        requires: Vec<(HeaderName, Option<String>)>,
        cap: usize,
    ) -> Arc<Live> {
        Arc::new(Live {
            status,
            headers,
            requires,
            state: Mutex::new(LiveState {
                arrived: Some(Vec::new()),
                size: 0,
                cap,
                ended: None,
                followers: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more chunk from the upstream.
    pub(crate) fn push(&self, data: &Bytes) {
        let mut state = self.state();
        state.size += data.len();
        if state.size > state.cap {
            state.arrived = None;
        } else if let Some(arrived) = state.arrived.as_mut() {
            arrived.push(data.clone());
        }
        let cap = state.cap;
        state
            .followers
            .retain(|follower| follower.send(Piece::Data(data.clone()), cap));
    }

    /// The body is over: cleanly, or broken with `Err(reason)`.
    pub(crate) fn end(&self, result: Result<(), String>) {
        let mut state = self.state();
        if state.ended.is_some() {
            return;
        }
        for follower in state.followers.drain(..) {
            let _ = follower.pieces.send(match &result {
                Ok(()) => Piece::End,
                Err(reason) => Piece::Broken(reason.clone()),
            });
        }
        state.ended = Some(result);
    }

    /// What a follower's request must match for this reply to answer it.
    pub(crate) fn requires(&self) -> &[(HeaderName, Option<String>)] {
        &self.requires
    }

    /// A body that replays what arrived and follows the rest, breaking off
    /// if nothing comes for `idle`; `None` when the start is no longer kept
    /// (the body went past the cap).
    pub(crate) fn follow(&self, idle: Duration) -> Option<Following> {
        let mut state = self.state();
        let arrived = state.arrived.as_ref()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let follower = Follower {
            pieces: tx,
            queued: Arc::default(),
        };
        for data in arrived {
            follower.send(Piece::Data(data.clone()), usize::MAX);
        }
        match &state.ended {
            Some(Ok(())) => drop(follower.pieces.send(Piece::End)),
            Some(Err(reason)) => drop(follower.pieces.send(Piece::Broken(reason.clone()))),
            None => {}
        }
        let queued = follower.queued.clone();
        if state.ended.is_none() {
            state.followers.push(follower);
        }
        Some(Following {
            pieces: rx,
            queued,
            idle,
            stall: Box::pin(tokio::time::sleep(idle)),
        })
    }
}

/// A follower's view of a live body.
pub(crate) struct Following {
    pieces: mpsc::UnboundedReceiver<Piece>,
    /// Bytes sent to this follower and not read yet.
    queued: Arc<AtomicUsize>,
    /// The longest wait for the next piece: the shared call's client may
    /// have stopped reading, and so the upstream with it.
    idle: Duration,
    stall: Pin<Box<Sleep>>,
}

/// A shared body that ended other than the upstream ended it.
#[derive(Debug)]
pub(crate) struct LiveBroken(String);

impl std::fmt::Display for LiveBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the shared upstream response broke off: {}", self.0)
    }
}

impl std::error::Error for LiveBroken {}

impl Following {
    /// The next chunk; `Ready(None)` only after the upstream's clean end.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, LiveBroken>>> {
        match self.pieces.poll_recv(cx) {
            Poll::Pending => {
                if self.stall.as_mut().poll(cx).is_ready() {
                    self.pieces.close();
                    let reason = format!("nothing came for {:?} (--upstream-timeout)", self.idle);
                    tracing::warn!(%reason, "cut off a client that was following a shared upstream reply");
                    return Poll::Ready(Some(Err(LiveBroken(reason))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Piece::Data(data))) => {
                self.queued.fetch_sub(data.len(), Ordering::AcqRel);
                let idle = self.idle;
                self.stall.as_mut().reset(Instant::now() + idle);
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Piece::End)) => {
                self.pieces.close();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Broken(reason))) => {
                self.pieces.close();
                Poll::Ready(Some(Err(LiveBroken(reason))))
            }
            // Internal: the lead went away without an end, so the body is
            // incomplete; a clean end would pass a cut reply as whole.
            Poll::Ready(None) => Poll::Ready(Some(Err(LiveBroken(
                "the call that was sharing it ended before the upstream did".into(),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    async fn read_all(mut following: Following) -> Result<Vec<Bytes>, String> {
        let mut out = Vec::new();
        while let Some(piece) = poll_fn(|cx| following.poll_next(cx)).await {
            out.push(piece.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn early_and_late_followers_get_every_chunk_and_the_end() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), Vec::new(), 100);
        let early = live.follow(IDLE).unwrap();
        live.push(&Bytes::from_static(b"a"));
        let late = live.follow(IDLE).unwrap();
        live.push(&Bytes::from_static(b"b"));
        live.end(Ok(()));
        let after = live.follow(IDLE).unwrap();
        for following in [early, late, after] {
            assert_eq!(read_all(following).await.unwrap(), [&b"a"[..], b"b"]);
        }
    }

    #[tokio::test]
    async fn a_break_or_a_lost_lead_is_an_error_never_a_clean_end() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), Vec::new(), 100);
        let following = live.follow(IDLE).unwrap();
        live.push(&Bytes::from_static(b"a"));
        live.end(Err("reset".into()));
        assert!(read_all(following).await.unwrap_err().contains("reset"));

        let live = Live::new(StatusCode::OK, HeaderMap::new(), Vec::new(), 100);
        let following = live.follow(IDLE).unwrap();
        drop(live);
        assert!(
            read_all(following)
                .await
                .unwrap_err()
                .contains("ended before")
        );
    }

    #[tokio::test]
    async fn past_the_cap_late_followers_are_turned_away_and_laggards_cut_off() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), Vec::new(), 3);
        let lagging = live.follow(IDLE).unwrap();
        live.push(&Bytes::from_static(b"ab"));
        live.push(&Bytes::from_static(b"cd"));
        assert!(live.follow(IDLE).is_none());
        let read = read_all(lagging).await;
        assert!(
            read.unwrap_err().contains("fell more than 3 bytes"),
            "unread bytes are bounded"
        );
    }

    #[tokio::test]
    async fn a_follower_waits_at_most_idle_for_the_next_piece() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), Vec::new(), 100);
        let following = live.follow(Duration::from_millis(30)).unwrap();
        live.push(&Bytes::from_static(b"a"));
        assert!(
            read_all(following)
                .await
                .unwrap_err()
                .contains("nothing came")
        );
        drop(live);
    }
}
