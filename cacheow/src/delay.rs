//! Latency for async replays that works under any executor: the wrapped
//! function may run on tokio, async-std, smol or a hand-rolled executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Completes after `duration`. A short-lived thread does the sleeping, so
/// no runtime timer is needed; latency injection is a development feature
/// and a thread per delayed call is cheap at that scale.
#[derive(Debug)]
pub(crate) struct Delay {
    duration: Duration,
    shared: Option<Arc<Mutex<Timer>>>,
}

#[derive(Debug, Default)]
struct Timer {
    done: bool,
    waker: Option<Waker>,
}

impl Delay {
    pub(crate) fn new(duration: Duration) -> Self {
        Self {
            duration,
            shared: None,
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.duration.is_zero() {
            return Poll::Ready(());
        }
        let duration = self.duration;
        let shared = self.shared.get_or_insert_with(|| {
            let shared = Arc::new(Mutex::new(Timer::default()));
            let timer = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("cacheow-delay".into())
                .spawn(move || {
                    std::thread::sleep(duration);
                    let mut timer = timer.lock().unwrap_or_else(|e| e.into_inner());
                    timer.done = true;
                    if let Some(waker) = timer.waker.take() {
                        waker.wake();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a latency timer; replying without the delay");
                shared.lock().unwrap_or_else(|e| e.into_inner()).done = true;
            }
            shared
        });
        let mut timer = shared.lock().unwrap_or_else(|e| e.into_inner());
        if timer.done {
            return Poll::Ready(());
        }
        timer.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// `future`'s output, or `None` when `delay` ends first.
pub(crate) async fn first_of<F: Future>(future: F, delay: Delay) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut delay = std::pin::pin!(delay);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        delay.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn waits_at_least_the_duration_without_blocking_the_executor() {
        let started = Instant::now();
        let ticker = async {
            let mut ticks = 0;
            while started.elapsed() < Duration::from_millis(100) {
                ticks += 1;
                tokio::task::yield_now().await;
            }
            ticks
        };
        let ((), ticks) = tokio::join!(Delay::new(Duration::from_millis(120)), ticker);
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert!(ticks > 1, "the executor kept running other work");
    }
}
