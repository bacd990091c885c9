//! A live upstream response shared with the identical calls that wait for
//! it (coalescing): each follower gets the head at once, the chunks that
//! already arrived, then every new chunk as the upstream sends it.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;

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
    pub(crate) headers: HeaderMap,
    state: Mutex<LiveState>,
}

struct LiveState {
    /// What arrived so far, for followers that join late; `None` once past
    /// the cap (later followers call on their own).
    arrived: Option<Vec<Bytes>>,
    size: usize,
    cap: usize,
    ended: Option<Result<(), String>>,
    followers: Vec<mpsc::UnboundedSender<Piece>>,
}

impl Live {
    /// A response with this head whose body is kept for late followers up
    /// to `cap` bytes.
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, cap: usize) -> Arc<Live> {
        Arc::new(Live {
            status,
            headers,
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
        state
            .followers
            .retain(|follower| follower.send(Piece::Data(data.clone())).is_ok());
    }

    /// The body is over: cleanly, or broken with `Err(reason)`.
    pub(crate) fn end(&self, result: Result<(), String>) {
        let mut state = self.state();
        if state.ended.is_some() {
            return;
        }
        for follower in state.followers.drain(..) {
            let _ = follower.send(match &result {
                Ok(()) => Piece::End,
                Err(reason) => Piece::Broken(reason.clone()),
            });
        }
        state.ended = Some(result);
    }

    /// A body that replays what arrived and follows the rest; `None` when
    /// the start is no longer kept (the body went past the cap).
    pub(crate) fn follow(&self) -> Option<Following> {
        let mut state = self.state();
        let arrived = state.arrived.as_ref()?;
        let (tx, rx) = mpsc::unbounded_channel();
        for data in arrived {
            let _ = tx.send(Piece::Data(data.clone()));
        }
        match &state.ended {
            Some(Ok(())) => drop(tx.send(Piece::End)),
            Some(Err(reason)) => drop(tx.send(Piece::Broken(reason.clone()))),
            None => state.followers.push(tx),
        }
        Some(Following { pieces: rx })
    }
}

/// A follower's view of a live body.
pub(crate) struct Following {
    pieces: mpsc::UnboundedReceiver<Piece>,
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
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(data))) => Poll::Ready(Some(Ok(data))),
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

    async fn read_all(mut following: Following) -> Result<Vec<Bytes>, String> {
        let mut out = Vec::new();
        while let Some(piece) = poll_fn(|cx| following.poll_next(cx)).await {
            out.push(piece.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn early_and_late_followers_get_every_chunk_and_the_end() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), 100);
        let early = live.follow().unwrap();
        live.push(&Bytes::from_static(b"a"));
        let late = live.follow().unwrap();
        live.push(&Bytes::from_static(b"b"));
        live.end(Ok(()));
        let after = live.follow().unwrap();
        for following in [early, late, after] {
            assert_eq!(read_all(following).await.unwrap(), [&b"a"[..], b"b"]);
        }
    }

    #[tokio::test]
    async fn a_break_or_a_lost_lead_is_an_error_never_a_clean_end() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), 100);
        let following = live.follow().unwrap();
        live.push(&Bytes::from_static(b"a"));
        live.end(Err("reset".into()));
        assert!(read_all(following).await.unwrap_err().contains("reset"));

        let live = Live::new(StatusCode::OK, HeaderMap::new(), 100);
        let following = live.follow().unwrap();
        drop(live);
        assert!(
            read_all(following)
                .await
                .unwrap_err()
                .contains("ended before")
        );
    }

    #[test]
    fn past_the_cap_late_followers_are_turned_away() {
        let live = Live::new(StatusCode::OK, HeaderMap::new(), 3);
        let early = live.follow().unwrap();
        live.push(&Bytes::from_static(b"abcd"));
        assert!(live.follow().is_none());
        drop(early);
    }
}
