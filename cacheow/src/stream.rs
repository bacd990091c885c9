//! Functions returning a `Stream`: recorded item by item (with an optional
//! terminal `Err`) as the caller consumes them, and replayed so.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use cacheow_engine::{NewOutcome, OutcomeType, Overrides};
use futures_core::Stream;
use serde_json::{Value, json};

use crate::call::{Call, Plan};
use crate::codec::{Codec, Encoded, OutcomeView};
use crate::delay::Delay;

pin_project_lite::pin_project! {
    /// What a wrapped stream function returns: the real stream (passed
    /// through, or recorded on the way) or a replay.
    #[project = CallStreamProjection]
    #[derive(Debug)]
    // Internal: pin-project-lite takes no doc comments on variant fields;
    // each variant's doc says what its fields hold.
    #[allow(missing_docs)]
    pub enum CallStream<S, C: Codec> {
        /// cacheow is off: the real stream, untouched.
        Direct { #[pin] inner: S },
        /// The real stream, recorded item by item.
        Recording { #[pin] inner: S, recorder: Recorder },
        /// Stored items.
        Replay { items: VecDeque<C::Output>, delay: Delay },
    }
}

/// Starts a wrapped stream function's call: replays a stored stream, or
/// runs `body` and records what its stream yields.
pub fn stream<C: Codec, S: Stream<Item = C::Output>>(
    call: Option<Call>,
    body: impl FnOnce() -> S,
) -> CallStream<S, C> {
    let Some(mut call) = call else {
        return CallStream::Direct { inner: body() };
    };
    call.register_check(check_stream::<C>);
    // Internal: a stream is recorded once it ends, so waiting for an
    // identical one would wait for all of it; streams run alone.
    let overrides = Overrides {
        alone: true,
        ..crate::scope::current()
    };
    match call.plan(decode_stream::<C>, overrides) {
        Plan::Replay { value, delay } => CallStream::Replay {
            items: value.into(),
            delay: Delay::new(delay),
        },
        Plan::Follow(_) => unreachable!("a call that runs alone follows no other"),
        Plan::Run => CallStream::Recording {
            inner: body(),
            recorder: Recorder {
                call: Some(call),
                started: Instant::now(),
                items: Vec::new(),
                offsets_ms: Vec::new(),
                storing: None,
                ended: false,
            },
        },
    }
}

impl<S: Stream<Item = C::Output>, C: Codec> Stream for CallStream<S, C> {
    type Item = C::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<C::Output>> {
        match self.project() {
            CallStreamProjection::Direct { inner } => inner.poll_next(cx),
            CallStreamProjection::Recording { inner, recorder } => {
                // Internal: a recorded outcome is awaited until stored before
                // the stream goes on (or ends), never blocking a thread.
                if let Some(storing) = recorder.storing.as_mut() {
                    crate::call::log_unstored(ready!(storing.0.as_mut().poll(cx)));
                    recorder.storing = None;
                }
                if recorder.ended {
                    return Poll::Ready(None);
                }
                let next = ready!(inner.poll_next(cx));
                match &next {
                    Some(item) => recorder.item::<C>(item),
                    None => {
                        recorder.ended = true;
                        recorder.end(None);
                        if recorder.storing.is_some() {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
                Poll::Ready(next)
            }
            CallStreamProjection::Replay { items, delay } => {
                ready!(Pin::new(delay).poll(cx));
                Poll::Ready(items.pop_front())
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            CallStream::Direct { inner } | CallStream::Recording { inner, .. } => inner.size_hint(),
            CallStream::Replay { items, .. } => (items.len(), Some(items.len())),
        }
    }
}

/// Collects a stream's items as they pass.
#[derive(Debug)]
pub struct Recorder {
    /// `None` once recorded (or given up on).
    call: Option<Call>,
    started: Instant,
    items: Vec<Value>,
    offsets_ms: Vec<f64>,
    /// The recorded outcome on its way to disk.
    storing: Option<Storing>,
    /// The inner stream has ended.
    ended: bool,
}

/// Waits until a recorded stream is stored.
struct Storing(Pin<Box<dyn Future<Output = Result<(), cacheow_engine::WriteError>> + Send>>);

impl std::fmt::Debug for Storing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storing")
    }
}

impl Recorder {
    fn item<C: Codec>(&mut self, item: &C::Output) {
        if self.call.is_none() {
            return;
        }
        match C::encode(item) {
            Ok(Encoded::Value(value)) => {
                self.items.push(value);
                self.offsets_ms
                    .push(self.started.elapsed().as_secs_f64() * 1000.0);
            }
            // The first `Err` ends the recording: replay yields it last.
            Ok(error @ Encoded::Error { .. }) => self.end(Some(error)),
            Err(e) => {
                if let Some(call) = self.call.take() {
                    tracing::warn!(function = %call.function_id(), error = %e, "cacheow cannot serialize a stream item; this stream runs unrecorded");
                    call.record(None);
                }
            }
        }
    }

    fn end(&mut self, error: Option<Encoded>) {
        let Some(call) = self.call.take() else {
            return;
        };
        let items = std::mem::take(&mut self.items);
        let offsets_ms = std::mem::take(&mut self.offsets_ms);
        let mut outcome = NewOutcome {
            outcome_type: OutcomeType::Stream,
            ..NewOutcome::returned(json!({ "items": items, "offsets_ms": offsets_ms }))
        };
        if let Some(Encoded::Error {
            exception_type,
            message,
            value,
        }) = error
        {
            outcome.exception_type = Some(exception_type);
            outcome.exception_message = Some(message);
            outcome.value["error"] = value;
        }
        // Offsets vary run to run; the same items are the same outcome.
        outcome.fingerprint = Some(stream_fingerprint(&outcome));
        self.storing = call
            .record(Some(outcome))
            .map(|recording| Storing(Box::pin(recording.persisted())));
    }
}

impl Drop for Recorder {
    /// A stream dropped before its end is counted but not recorded: replaying
    /// half a stream as if it were whole would be wrong.
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            tracing::debug!(function = %call.function_id(), "stream dropped before its end; not recorded");
            call.record(None);
        }
    }
}

fn stream_fingerprint(outcome: &NewOutcome) -> Vec<u8> {
    let mut bytes = Vec::new();
    cacheow_engine::canonical_json(
        &json!({
            "items": outcome.value["items"],
            "error": outcome.value.get("error"),
            "exception_type": outcome.exception_type,
            "exception_message": outcome.exception_message,
        }),
        &mut bytes,
    );
    bytes
}

/// The items a stored outcome replays: a recorded stream, or a manual
/// `return` whose value is the list of items (or `{"items": […]}`), or a
/// manual exception, which yields only the error.
fn decode_stream<C: Codec>(outcome: OutcomeView<'_>) -> Result<Vec<C::Output>, String> {
    let (items, error_value) = match outcome.outcome_type {
        OutcomeType::Exception => (&[][..], outcome.value),
        OutcomeType::Return | OutcomeType::Stream => {
            let items = match outcome.value {
                Value::Array(items) => items,
                other => other.get("items").and_then(Value::as_array).ok_or_else(|| {
                    format!(
                        "a stream outcome's value must be a list of items or {{\"items\": […]}}, got {}",
                        crate::codec::preview(other)
                    )
                })?,
            };
            (
                &items[..],
                outcome.value.get("error").unwrap_or(&Value::Null),
            )
        }
    };
    let mut decoded = items
        .iter()
        .enumerate()
        .map(|(i, item)| C::decode_value(item).map_err(|e| format!("item {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if outcome.exception_type.is_some() {
        decoded.push(C::decode_error(
            outcome.exception_type,
            outcome.exception_message,
            error_value,
        )?);
    }
    Ok(decoded)
}

fn check_stream<C: Codec>(outcome: &NewOutcome) -> Result<(), String> {
    decode_stream::<C>(outcome.into()).map(drop)
}
