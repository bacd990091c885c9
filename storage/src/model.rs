//! The data model. Every field name here is part of the on-disk format.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ids::{CallKey, FunctionId, OutcomeId};

/// How a function treats a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Call upstream and record every outcome; never read.
    #[default]
    Default,
    /// Replay the outcome recorded for the same call key, else call and record.
    Cache,
    /// Never call upstream; replay a stored outcome by weighted random choice.
    Mock,
}

impl Mode {
    /// The lowercase name used in the API, the CLI and the files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Cache => "cache",
            Mode::Mock => "mock",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no mode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown mode `{0}`: expected one of default, cache, mock")]
pub struct ParseModeError(String);

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Mode::Default),
            "cache" => Ok(Mode::Cache),
            "mock" => Ok(Mode::Mock),
            other => Err(ParseModeError(other.chars().take(40).collect())),
        }
    }
}

/// What kind of code a function wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// An upstream HTTP route seen through the proxy.
    Http,
    /// A plain Rust `fn`.
    Sync,
    /// A Rust `async fn`.
    Async,
    /// A Rust function returning a stream.
    Stream,
}

/// A point in time, written as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        // Internal: the text form has millisecond precision; truncating here
        // keeps a value equal to itself after a round trip through a file.
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let millis = Duration::from_millis(since_epoch.as_millis() as u64);
        Self(SystemTime::UNIX_EPOCH + millis)
    }
}

impl Timestamp {
    /// Milliseconds since the Unix epoch (0 before it).
    pub fn unix_millis(self) -> u64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// The time `millis` milliseconds after the Unix epoch.
    pub fn from_unix_millis(millis: u64) -> Self {
        Self(SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s)
            .map(Timestamp)
            .map_err(|e| serde::de::Error::custom(format!("bad timestamp `{s}`: {e}")))
    }
}

/// One entry of a function's mock configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockEntry {
    /// The outcome this entry may replay.
    pub outcome_id: OutcomeId,
    /// Relative weight; 0 is never chosen.
    pub weight: f64,
    /// Disabled entries are never chosen.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `false` limits the entry to calls with the outcome's own call key.
    #[serde(default = "yes")]
    pub ignore_args: bool,
}

fn yes() -> bool {
    true
}

/// A wrapped piece of code: an upstream route or a Rust function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// blake3 of `name`.
    pub id: FunctionId,
    /// The identity string, e.g. `GET http://api.test/users/{id}`.
    pub name: String,
    /// What it wraps.
    pub kind: FunctionKind,
    /// How calls are treated.
    pub mode: Mode,
    /// Delay added before replies in cache and mock modes.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from 0 to this, added to `latency_ms`.
    #[serde(default)]
    pub latency_jitter_ms: u64,
    /// Free-form settings interpreted by the layer that owns the function
    /// (call-key rules, replay speed, …).
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Mock configuration; empty means "choose uniformly".
    #[serde(default)]
    pub mock_entries: Vec<MockEntry>,
    /// When the function was first seen.
    pub created_at: Timestamp,
}

impl Function {
    /// A new function in default mode, its id derived from `name`.
    pub fn new(name: impl Into<String>, kind: FunctionKind) -> Self {
        let name = name.into();
        Self {
            id: FunctionId::for_identity(&name),
            name,
            kind,
            mode: Mode::Default,
            latency_ms: 0,
            latency_jitter_ms: 0,
            config: Map::new(),
            mock_entries: Vec::new(),
            created_at: Timestamp::now(),
        }
    }
}

/// What kind of result an outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeType {
    /// A value was returned (for HTTP: a response).
    Return,
    /// The call failed (for HTTP: a transport error).
    Exception,
    /// A stream of items, possibly ended by an exception.
    Stream,
}

/// What one call produced, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// blake3 of call key + content fingerprint.
    pub id: OutcomeId,
    /// The function that produced it.
    pub function_id: FunctionId,
    /// The arguments it answers; `None` for manual outcomes added without one.
    pub call_key: Option<CallKey>,
    /// Return, exception or stream.
    pub outcome_type: OutcomeType,
    /// The returned value (its shape belongs to the function's layer).
    #[serde(default)]
    pub value: Value,
    /// The error kind for exceptions (and streams that ended in one).
    #[serde(default)]
    pub exception_type: Option<String>,
    /// The error's message.
    #[serde(default)]
    pub exception_message: Option<String>,
    /// How long the original call took.
    #[serde(default)]
    pub duration_ms: f64,
    /// How many times this exact outcome was recorded.
    pub count: u64,
    /// Added by hand through the API.
    #[serde(default)]
    pub is_manual: bool,
    /// Serves mock mode only, never cache mode.
    #[serde(default)]
    pub is_mock_only: bool,
    /// First recorded.
    pub created_at: Timestamp,
    /// Last recorded.
    pub last_seen_at: Timestamp,
    /// The call that produced it, for people to read (secrets redacted).
    #[serde(default)]
    pub request: Option<Value>,
}

/// Counters kept per function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, from = "StatsOnDisk")]
pub struct Stats {
    /// Every call, whatever its source.
    pub total_calls: u64,
    /// Cache mode calls answered from the store.
    pub cache_hits: u64,
    /// Cache mode calls that went upstream.
    pub cache_misses: u64,
    /// Mock mode calls.
    pub mock_calls: u64,
    /// Calls that ended in an exception outcome (recorded or replayed).
    pub exceptions: u64,
    /// Calls that reached the real upstream.
    pub upstream_calls: u64,
    /// Sum of call durations.
    pub total_duration_ms: f64,
    /// When the function was last called.
    pub last_called_at: Option<Timestamp>,
    /// Calls that ended without a recorded outcome, by reason
    /// (`client_gone`, `oversize`, `request_oversize`, …).
    pub unrecorded: BTreeMap<String, u64>,
    /// Outcomes or settings that could not be persisted.
    pub persist_failures: u64,
    /// Calls answered with an outcome past its ttl (while it was refreshed,
    /// or because the upstream failed or its circuit was open).
    pub stale_served: u64,
    /// Background refreshes of stale outcomes.
    pub refreshed: u64,
    /// Calls answered with what an identical call in flight recorded.
    pub coalesced: u64,
    /// Calls refused because an upstream budget was spent.
    pub budget_rejected: u64,
    /// Calls that met an open circuit breaker.
    pub circuit_open: u64,
}

/// `Stats` as older stores wrote them too: before per-reason counts there
/// was one `unrecorded_oversize` counter, now `unrecorded.oversize`.
#[derive(Default, Deserialize)]
#[serde(default)]
struct StatsOnDisk {
    total_calls: u64,
    cache_hits: u64,
    cache_misses: u64,
    mock_calls: u64,
    exceptions: u64,
    upstream_calls: u64,
    total_duration_ms: f64,
    last_called_at: Option<Timestamp>,
    unrecorded: BTreeMap<String, u64>,
    unrecorded_oversize: u64,
    persist_failures: u64,
    stale_served: u64,
    refreshed: u64,
    coalesced: u64,
    budget_rejected: u64,
    circuit_open: u64,
}

impl From<StatsOnDisk> for Stats {
    fn from(disk: StatsOnDisk) -> Self {
        let mut unrecorded = disk.unrecorded;
        if disk.unrecorded_oversize > 0 {
            *unrecorded.entry("oversize".to_owned()).or_default() += disk.unrecorded_oversize;
        }
        Stats {
            total_calls: disk.total_calls,
            cache_hits: disk.cache_hits,
            cache_misses: disk.cache_misses,
            mock_calls: disk.mock_calls,
            exceptions: disk.exceptions,
            upstream_calls: disk.upstream_calls,
            total_duration_ms: disk.total_duration_ms,
            last_called_at: disk.last_called_at,
            unrecorded,
            persist_failures: disk.persist_failures,
            stale_served: disk.stale_served,
            refreshed: disk.refreshed,
            coalesced: disk.coalesced,
            budget_rejected: disk.budget_rejected,
            circuit_open: disk.circuit_open,
        }
    }
}

impl Stats {
    /// Mean call duration, 0 before the first call.
    pub fn average_duration_ms(&self) -> f64 {
        if self.total_calls == 0 {
            0.0
        } else {
            self.total_duration_ms / self.total_calls as f64
        }
    }

    /// Adds one call's duration.
    pub fn add_duration(&mut self, elapsed: Duration) {
        self.total_duration_ms += elapsed.as_secs_f64() * 1000.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_written_before_per_reason_counts_keep_their_oversize_count() {
        let old: Stats =
            serde_json::from_str(r#"{"total_calls": 3, "unrecorded_oversize": 2}"#).unwrap();
        assert_eq!(old.total_calls, 3);
        assert_eq!(old.unrecorded.get("oversize"), Some(&2));
        let written = serde_json::to_value(&old).unwrap();
        assert!(written.get("unrecorded_oversize").is_none());
        assert_eq!(written["unrecorded"]["oversize"], 2);
        let again: Stats = serde_json::from_value(written).unwrap();
        assert_eq!(again, old);
    }
}
