//! One call to a wrapped function: its key, the mode decision, the replay or
//! the real body, and the recording.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cacheow_engine::{
    AnyOutcome, CallKey, CallKeyExt, Decision, Finished, Follow, FunctionHandle, FunctionKind,
    Landing, Lead, NewOutcome, OutcomeId, OutcomeType, Overrides, Recording, Source, StoredOutcome,
    Unrecorded, canonical_json,
};
use serde_json::Value;

use crate::codec::{self, Codec, KeyArg, OutcomeView};
use crate::delay::{Delay, first_of};
use crate::manager::Manager;
use crate::rust_types::OutcomeCheckFn;
use crate::scope;

/// One wrapped function: a `static` the macro emits beside its body, so the
/// function is looked up once, not on every call.
pub struct Site {
    kind: FunctionKind,
    identity: fn() -> &'static str,
    /// Cache settings written in `#[cacheow(...)]`.
    settings: &'static [(&'static str, SettingValue)],
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
    pub const fn new(
        kind: FunctionKind,
        identity: fn() -> &'static str,
        settings: &'static [(&'static str, SettingValue)],
    ) -> Site {
        Site {
            kind,
            identity,
            settings,
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
            .get_or_init(|| manager.ensure(self.kind, (self.identity)(), self.settings))
            .clone();
        Some(Call {
            site: self,
            manager,
            function,
            key: call_key,
            args,
            started,
            cache_miss: std::cell::Cell::new(false),
            run: None,
        })
    }
}

/// The value of one setting written in `#[cacheow(...)]`.
#[derive(Debug, Clone, Copy)]
pub enum SettingValue {
    /// A string, such as a duration (`"1h"`).
    Text(&'static str),
    /// `true` or `false`.
    Flag(bool),
}

impl SettingValue {
    pub(crate) fn to_json(self) -> Value {
        match self {
            SettingValue::Text(text) => Value::from(text),
            SettingValue::Flag(flag) => Value::from(flag),
        }
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
    /// Set when the plan is to run the body: what to do with its result.
    run: Option<Run>,
}

/// What a call that runs its body does with the result.
#[derive(Debug)]
struct Run {
    /// Why nothing is recorded, when the caller asked for that.
    unrecorded: Option<Unrecorded>,
    /// What answers instead if the body fails (`stale_if_error`).
    fallback: Option<Arc<StoredOutcome>>,
    /// Identical calls waiting for this one.
    lead: Option<Lead>,
    /// The call refreshes a stale outcome (`stale_while_revalidate`): if
    /// the body fails, the stale outcome stays the answer, unrecorded over.
    refreshing: bool,
}

/// What to do with a call.
pub(crate) enum Plan<T> {
    /// Run the real body and record what it produces.
    Run,
    /// Reply with `value` after `delay`.
    Replay { value: T, delay: Duration },
    /// Wait for the identical call in flight, then replay what it recorded.
    Follow(Follow),
}

/// How long a call waits for an identical one in flight before it runs its
/// own body: the proxy's default upstream timeout.
const FOLLOW_PATIENCE: Duration = Duration::from_secs(120);

impl Call {
    /// Runs a sync function's call.
    pub fn run_sync<C: Codec>(mut self, body: impl FnOnce() -> C::Output) -> C::Output {
        self.register_check(check_call::<C>);
        let mut overrides = scope::current();
        loop {
            match self.plan(codec::decode::<C>, overrides) {
                Plan::Replay { value, delay } => {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    return value;
                }
                Plan::Follow(follow) => {
                    let landing = follow.landed_blocking(FOLLOW_PATIENCE);
                    if let Some(value) = self.replay_landing(landing, codec::decode::<C>) {
                        return value;
                    }
                    overrides.alone = true;
                }
                Plan::Run => {
                    let (output, recording) = self.finish_run::<C>(body());
                    if let Some(recording) = recording {
                        log_unstored(recording.persisted_blocking());
                    }
                    return output;
                }
            }
        }
    }

    /// Runs an async function's call.
    pub async fn run_async<C: Codec, F: Future<Output = C::Output>>(
        mut self,
        body: impl FnOnce() -> F,
    ) -> C::Output {
        self.register_check(check_call::<C>);
        let mut overrides = scope::current();
        loop {
            match self.plan(codec::decode::<C>, overrides) {
                Plan::Replay { value, delay } => {
                    Delay::new(delay).await;
                    return value;
                }
                Plan::Follow(follow) => {
                    let landing =
                        first_of(follow.landed_unbounded(), Delay::new(FOLLOW_PATIENCE)).await;
                    if let Some(value) = self.replay_landing(landing.flatten(), codec::decode::<C>)
                    {
                        return value;
                    }
                    overrides.alone = true;
                }
                Plan::Run => {
                    let (output, recording) = self.finish_run::<C>(body().await);
                    if let Some(recording) = recording {
                        // Internal: awaited, never blocking the executor.
                        log_unstored(recording.persisted().await);
                    }
                    return output;
                }
            }
        }
    }

    /// Records what the body returned, or, when it failed and a stale
    /// outcome may answer (`stale_if_error`), records the failure and
    /// returns the stale value instead.
    fn finish_run<C: Codec>(mut self, output: C::Output) -> (C::Output, Option<Recording>) {
        let encoded = encode_call::<C>(&output);
        let failure = encoded
            .as_ref()
            .filter(|o| o.outcome_type == OutcomeType::Exception)
            .map(|o| o.exception_type.clone().unwrap_or_default());
        self.function.note_upstream(failure.is_some());
        let fallback = self.run.as_mut().and_then(|run| run.fallback.take());
        if let Some(error) = &failure
            && let Some(stale) = fallback
        {
            match codec::decode::<C>(stale.outcome().into()) {
                Ok(value) => {
                    let refreshing = self.run.as_ref().is_some_and(|run| run.refreshing);
                    if refreshing && let Some(run) = self.run.as_mut() {
                        run.unrecorded = Some(Unrecorded::RefreshFailed);
                    }
                    let (recording, _, unrecorded) = self.store(encoded, Some(stale.id()));
                    self.function.finish(Finished {
                        cache_miss: self.cache_miss.get(),
                        outcome_id: Some(stale.id()),
                        error: Some(error.clone()),
                        unrecorded: unrecorded.filter(|_| refreshing),
                        upstream_failed: true,
                        ..Finished::of(Some(self.key), Source::Stale, self.started.elapsed())
                    });
                    return (value, recording);
                }
                Err(reason) => tracing::warn!(
                    function = %self.function.id(),
                    outcome = %stale.id(),
                    %reason,
                    "cannot replay the stale outcome; returning the failure"
                ),
            }
        }
        let recording = self.record(encoded);
        (output, recording)
    }

    /// Replays what the call this one waited for recorded; `None` when it
    /// recorded nothing this call can use.
    fn replay_landing<T>(
        &self,
        landing: Option<Landing>,
        decode: impl FnOnce(OutcomeView<'_>) -> Result<T, String>,
    ) -> Option<T> {
        let Some(Landing::Recorded(id)) = landing else {
            return None;
        };
        let outcome = self.function.outcome(&id).ok().flatten()?;
        let value = decode(outcome.outcome().into()).ok()?;
        let error = (outcome.outcome().outcome_type == OutcomeType::Exception)
            .then(|| outcome.outcome().exception_type.clone())
            .flatten();
        self.finish(Source::Coalesced, Some(id), error, None);
        Some(value)
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
        &mut self,
        decode: impl FnOnce(OutcomeView<'_>) -> Result<T, String>,
        overrides: Overrides,
    ) -> Plan<T> {
        let decision = self
            .function
            .decide_with(Some(&self.key), &AnyOutcome, overrides);
        let (outcome, source, delay) = match decision {
            Ok(Decision::Call {
                reason,
                unrecorded,
                fallback,
                lead,
            }) => {
                self.cache_miss.set(reason.is_cache_miss());
                self.run = Some(Run {
                    unrecorded,
                    fallback,
                    lead,
                    refreshing: false,
                });
                return Plan::Run;
            }
            // Internal: a body cannot run in the background (it may borrow,
            // or not be `Send`), so the call that would start a refresh
            // makes it now; the calls meanwhile are served stale.
            Ok(Decision::Replay {
                outcome,
                refresh: Some(lead),
                ..
            }) => {
                self.cache_miss.set(true);
                self.run = Some(Run {
                    unrecorded: None,
                    fallback: Some(outcome),
                    lead: Some(lead),
                    refreshing: true,
                });
                return Plan::Run;
            }
            Ok(Decision::Replay {
                outcome,
                source,
                delay,
                ..
            }) => (outcome, source, delay),
            Ok(Decision::Follow { flight, .. }) => return Plan::Follow(flight),
            Err(refusal) => {
                self.function.finish(Finished {
                    error: Some(refusal.code().into()),
                    guard: refusal.guard(),
                    ..Finished::of(Some(self.key), refusal.source(), self.started.elapsed())
                });
                panic!("cacheow: `{}`: {refusal}", self.function.snapshot().name)
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
            Err(reason) if source != Source::Mock => {
                self.cache_miss.set(true);
                tracing::warn!(
                    function = %self.function.id(),
                    outcome = %outcome.id(),
                    %reason,
                    "cannot replay the cached outcome; calling the function instead"
                );
                self.run = Some(Run {
                    unrecorded: None,
                    fallback: None,
                    lead: None,
                    refreshing: false,
                });
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
        let (recording, error, unrecorded) = self.store(outcome, None);
        let outcome_id = recording.as_ref().map(|r| r.outcome_id);
        self.finish(Source::Upstream, outcome_id, error, unrecorded);
        recording
    }

    /// Stores `outcome` unless the caller asked for nothing to be kept, and
    /// tells the calls waiting for this one what to replay (`answered`, when
    /// this call answers with another outcome than the one it stores).
    /// Returns the recording, its error kind, and why nothing was stored.
    fn store(
        &mut self,
        outcome: Option<NewOutcome>,
        answered: Option<OutcomeId>,
    ) -> (Option<Recording>, Option<String>, Option<Unrecorded>) {
        let (lead, asked_not_to) = match self.run.take() {
            Some(run) => (run.lead, run.unrecorded),
            None => (None, None),
        };
        let stored = match (outcome, asked_not_to) {
            (Some(mut new), None) => {
                new.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
                new.request = Some(serde_json::json!({ "args": self.args.take() }));
                let error = new.exception_type.clone();
                let recording = self.function.record_awaitable(Some(self.key), new);
                (Some(recording), error, None)
            }
            (Some(_), Some(reason)) => (None, None, Some(reason)),
            (None, _) => (None, None, Some(Unrecorded::NotSerializable)),
        };
        if let Some(lead) = lead {
            lead.land(answered.or(stored.0.as_ref().map(|r| r.outcome_id)));
        }
        stored
    }

    fn finish(
        &self,
        source: Source,
        outcome_id: Option<OutcomeId>,
        error: Option<String>,
        unrecorded: Option<Unrecorded>,
    ) {
        self.function.finish(Finished {
            cache_miss: self.cache_miss.get(),
            outcome_id,
            error,
            unrecorded,
            ..Finished::of(Some(self.key), source, self.started.elapsed())
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
