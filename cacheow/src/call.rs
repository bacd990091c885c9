//! One call to a wrapped function: its key, the mode decision, the replay or
//! the real body, and the recording.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cacheow_engine::{
    CallKey, CallKeyExt, CallReason, Decision, Finished, FunctionHandle, FunctionKind, NewOutcome,
    OutcomeId, OutcomeType, Recording, Source, Unrecorded, canonical_json,
};
use serde_json::Value;

use crate::codec::{self, Codec, KeyArg, OutcomeView};
use crate::delay::Delay;
use crate::manager::Manager;
use crate::rust_types::OutcomeCheckFn;

/// One wrapped function: a `static` the macro emits beside its body, so the
/// function is looked up once, not on every call.
pub struct Site {
    kind: FunctionKind,
    identity: fn() -> &'static str,
    function: OnceLock<FunctionHandle>,
    check_registered: AtomicBool,
    key_warned: AtomicBool,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("identity", &(self.identity)())
            .field("kind", &self.kind)
            .finish()
    }
}

impl Site {
    /// `identity` names the function (module path and name, or the `name`
    /// option); it is called once, on the first enabled call.
    pub const fn new(kind: FunctionKind, identity: fn() -> &'static str) -> Site {
        Site {
            kind,
            identity,
            function: OnceLock::new(),
            check_registered: AtomicBool::new(false),
            key_warned: AtomicBool::new(false),
        }
    }

    /// Starts a call; `None` when cacheow is disabled or the arguments
    /// cannot be hashed, and the caller then runs its body as is.
    #[inline]
    pub fn start(&'static self, key: impl FnOnce(&mut KeyBuilder)) -> Option<Call> {
        let manager = crate::get_manager()?;
        self.start_enabled(manager, key)
    }

    fn start_enabled(
        &'static self,
        manager: &'static Manager,
        key: impl FnOnce(&mut KeyBuilder),
    ) -> Option<Call> {
        let started = Instant::now();
        let mut builder = KeyBuilder::default();
        key(&mut builder);
        let (call_key, args) = match builder.finish() {
            Ok(finished) => finished,
            Err(e) => {
                if !self.key_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        function = (self.identity)(),
                        error = %e,
                        "cacheow cannot serialize this function's arguments; it runs unrecorded"
                    );
                }
                return None;
            }
        };
        let function = self
            .function
            .get_or_init(|| manager.ensure(self.kind, (self.identity)()))
            .clone();
        Some(Call {
            site: self,
            manager,
            function,
            key: call_key,
            args,
            started,
            cache_miss: std::cell::Cell::new(false),
        })
    }
}

/// The arguments of one call, hashed into its key.
#[derive(Debug, Default)]
pub struct KeyBuilder {
    args: Vec<Value>,
    error: Option<serde_json::Error>,
}

impl KeyBuilder {
    /// Adds the next argument.
    pub fn arg<T: KeyArg + ?Sized>(&mut self, value: &T) {
        match serde_json::to_value(value) {
            Ok(value) => self.args.push(value),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// The key, blake3 of the canonical JSON (sorted keys) of the argument
    /// list, so map ordering never changes it; and the arguments.
    fn finish(self) -> Result<(CallKey, Value), serde_json::Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let args = Value::Array(self.args);
        let mut bytes = Vec::new();
        canonical_json(&args, &mut bytes);
        Ok((CallKey::of_bytes(&bytes), args))
    }
}

/// A call in progress while cacheow is enabled.
#[derive(Debug)]
pub struct Call {
    site: &'static Site,
    manager: &'static Manager,
    function: FunctionHandle,
    key: CallKey,
    /// The key's arguments, stored with a new outcome for people to read.
    args: Value,
    started: Instant,
    /// Cache mode had nothing for the call (or what it had did not decode).
    cache_miss: std::cell::Cell<bool>,
}

/// What to do with a call.
pub(crate) enum Plan<T> {
    /// Run the real body and record what it produces.
    Run,
    /// Reply with `value` after `delay`.
    Replay { value: T, delay: Duration },
}

impl Call {
    /// Runs a sync function's call.
    pub fn run_sync<C: Codec>(self, body: impl FnOnce() -> C::Output) -> C::Output {
        self.register_check(check_call::<C>);
        match self.plan(codec::decode::<C>) {
            Plan::Replay { value, delay } => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                value
            }
            Plan::Run => {
                let output = body();
                if let Some(recording) = self.record(encode_call::<C>(&output)) {
                    log_unstored(recording.persisted_blocking());
                }
                output
            }
        }
    }

    /// Runs an async function's call.
    pub async fn run_async<C: Codec, F: Future<Output = C::Output>>(
        self,
        body: impl FnOnce() -> F,
    ) -> C::Output {
        self.register_check(check_call::<C>);
        match self.plan(codec::decode::<C>) {
            Plan::Replay { value, delay } => {
                Delay::new(delay).await;
                value
            }
            Plan::Run => {
                let output = body().await;
                if let Some(recording) = self.record(encode_call::<C>(&output)) {
                    // Internal: awaited, never blocking the executor.
                    log_unstored(recording.persisted().await);
                }
                output
            }
        }
    }

    /// Lets the API refuse manual outcomes this function could not replay.
    pub(crate) fn register_check(&self, check: OutcomeCheckFn) {
        if !self.site.check_registered.load(Ordering::Relaxed) {
            self.manager.register_check(self.function.id(), check);
            self.site.check_registered.store(true, Ordering::Relaxed);
        }
    }

    /// Asks the engine, and reads the outcome to replay with `decode`. A
    /// cached outcome that does not decode (a hand edit gone wrong) falls
    /// back to the real call; in mock mode there is nothing to fall back to,
    /// so that is a panic that says which outcome to fix.
    pub(crate) fn plan<T>(
        &self,
        decode: impl FnOnce(OutcomeView<'_>) -> Result<T, String>,
    ) -> Plan<T> {
        let (outcome, source, delay) = match self.function.decide(&self.key) {
            Ok(Decision::Call { reason }) => {
                self.cache_miss.set(matches!(reason, CallReason::CacheMiss));
                return Plan::Run;
            }
            Ok(Decision::Replay {
                outcome,
                source,
                delay,
            }) => (outcome, source, delay),
            Err(none) => {
                self.finish(Source::Mock, None, Some("no_mock_outcome".into()), None);
                panic!("cacheow: `{}`: {none}", self.function.snapshot().name)
            }
        };
        match decode(outcome.outcome().into()) {
            Ok(value) => {
                let error = (outcome.outcome().outcome_type == OutcomeType::Exception)
                    .then(|| outcome.outcome().exception_type.clone())
                    .flatten();
                self.finish(source, Some(outcome.id()), error, None);
                Plan::Replay { value, delay }
            }
            Err(reason) if source == Source::Cache => {
                self.cache_miss.set(true);
                tracing::warn!(
                    function = %self.function.id(),
                    outcome = %outcome.id(),
                    %reason,
                    "cannot replay the cached outcome; calling the function instead"
                );
                Plan::Run
            }
            Err(reason) => panic!(
                "cacheow: cannot replay mock outcome {} of `{}`: {reason}. Fix or delete it in \
                 the panel (or edit functions/{}/outcomes/{}.json and rebuild the index), or \
                 disable it in the mock weights",
                outcome.id(),
                self.function.snapshot().name,
                self.function.id(),
                outcome.id(),
            ),
        }
    }

    /// Records what the real body produced (if it could be serialized). The
    /// caller waits on the returned `Recording` (blocking for a sync
    /// function, awaiting for an async one) so nothing is lost when the
    /// program exits right after; a failure to persist is logged and never
    /// changes the result.
    pub(crate) fn record(mut self, outcome: Option<NewOutcome>) -> Option<Recording> {
        match outcome {
            Some(mut new) => {
                new.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
                new.request = Some(serde_json::json!({ "args": self.args.take() }));
                let error = new.exception_type.clone();
                let recording = self.function.record_awaitable(Some(self.key), new);
                self.finish(Source::Upstream, Some(recording.outcome_id), error, None);
                Some(recording)
            }
            None => {
                self.finish(
                    Source::Upstream,
                    None,
                    None,
                    Some(Unrecorded::NotSerializable),
                );
                None
            }
        }
    }

    fn finish(
        &self,
        source: Source,
        outcome_id: Option<OutcomeId>,
        error: Option<String>,
        unrecorded: Option<Unrecorded>,
    ) {
        self.function.finish(Finished {
            call_key: Some(self.key),
            source,
            cache_miss: self.cache_miss.get(),
            outcome_id,
            elapsed: self.started.elapsed(),
            status: None,
            error,
            unrecorded,
        });
    }

    /// For logs: which function this call belongs to.
    pub(crate) fn function_id(&self) -> cacheow_engine::FunctionId {
        self.function.id()
    }
}

/// Logs a recorded result that did not reach the disk (the result itself is
/// returned all the same).
pub(crate) fn log_unstored(persisted: Result<(), cacheow_engine::WriteError>) {
    if let Err(e) = persisted {
        tracing::warn!(error = %e, "cacheow could not store a recorded result; it was returned anyway");
    }
}

/// The outcome for a call's result; `None` (logged) when it cannot be
/// serialized, in which case the result is returned unrecorded.
fn encode_call<C: Codec>(output: &C::Output) -> Option<NewOutcome> {
    match C::encode(output) {
        Ok(encoded) => Some(encoded.into_outcome()),
        Err(e) => {
            tracing::warn!(error = %e, "cacheow cannot serialize this result; returned unrecorded");
            None
        }
    }
}

fn check_call<C: Codec>(outcome: &NewOutcome) -> Result<(), String> {
    codec::decode::<C>(outcome.into()).map(drop)
}

/// Makes an async block's output type known up front, so `?` inside it
/// converts errors into the wrapped function's error type.
pub fn typed_future<T, F: Future<Output = T>>(future: F) -> F {
    future
}

/// The identity string of the function an anchor item sits in: the macro
/// declares `fn __cacheow_identity` inside the wrapped function, whose type
/// name is `crate::module::function::__cacheow_identity` (or
/// `crate::module::Type::method::…` for methods; items in an `async fn`
/// sit in its `{{closure}}`, which is not part of the identity).
pub fn identity_of<F>(anchor: &F) -> &'static str {
    let full = std::any::type_name_of_val(anchor);
    let mut name = full.strip_suffix("::__cacheow_identity").unwrap_or(full);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name
}

/// Compile-time check that an argument can be part of the key.
pub fn assert_key_arg<T: KeyArg + ?Sized>() {}

/// Compile-time check that a return type can be recorded.
pub fn assert_return<T: codec::ReturnValue>() {}
