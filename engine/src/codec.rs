//! How one kind of function's outcomes are checked, normalised and
//! summarised. The engine stores values it does not understand; the layer
//! that owns a kind (the proxy for HTTP, the library for Rust types)
//! registers a codec, and the control API asks it instead of knowing HTTP.

use cacheow_storage::{Function, FunctionKind, Outcome, OutcomeType};
use serde_json::{Map, Value};

use crate::outcome::NewOutcome;
use crate::policy::CacheIf;

/// The longest recorded time (a call's duration, a stream chunk's offset)
/// anything waits for on replay: one hour, in milliseconds.
pub const MAX_WAIT_MS: f64 = 3_600_000.0;

/// What a list of outcomes shows of one: computed once per outcome, when it
/// is recorded, so paging a long list decodes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The status a reply would carry, for kinds that have one.
    pub status: Option<u16>,
    /// The start of the value as text, at most [`Preview::MAX_CHARS`].
    pub text: String,
    /// The value's size in bytes as the kind counts it (an HTTP body's length).
    pub size: u64,
}

impl Preview {
    /// How many characters of text a preview keeps.
    pub const MAX_CHARS: usize = 200;

    /// A preview of `text`, cut to [`Preview::MAX_CHARS`] characters.
    pub fn new(status: Option<u16>, text: &str, size: u64) -> Self {
        Self {
            status,
            text: text.chars().take(Self::MAX_CHARS).collect(),
            size,
        }
    }

    /// The preview every kind gives a failure: its message.
    pub fn of_exception(outcome: &Outcome) -> Self {
        Self::new(None, outcome.exception_message.as_deref().unwrap_or(""), 0)
    }
}

/// Why a manual outcome was refused: the field at fault and what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CodecError {
    /// The request field at fault (`value`, `value.headers`, `exception_type`, …).
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl CodecError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One kind's rules for outcomes and settings.
pub trait OutcomeCodec: Send + Sync {
    /// Checks a manual outcome for `function` and returns it in the form it
    /// is stored in; `Err` when it would not replay.
    fn normalise(&self, function: &Function, outcome: NewOutcome)
    -> Result<NewOutcome, CodecError>;

    /// The list summary of a stored outcome.
    fn preview(&self, outcome: &Outcome) -> Preview;

    /// Fields the kind adds to a function's summary (the proxy splits an
    /// HTTP function's name into method, scheme, host and route).
    fn describe(&self, function: &Function) -> Map<String, Value> {
        let _ = function;
        Map::new()
    }

    /// Checks a per-function setting the API was asked to change: `None`
    /// when the kind has no such setting, else whether `value` is valid.
    fn check_setting(&self, key: &str, value: &Value) -> Option<Result<(), String>> {
        let _ = (key, value);
        None
    }

    /// The settings `check_setting` knows, for the error naming them.
    fn setting_names(&self) -> &[&str] {
        &[]
    }

    /// Which outcomes cache mode replays when `cache_if` is not set.
    fn default_cache_if(&self) -> CacheIf {
        CacheIf::Any
    }

    /// True when the outcome is a failure: an exception, or a stream that
    /// broke off.
    fn failed(&self, outcome: &Outcome) -> bool {
        outcome.outcome_type == OutcomeType::Exception
            || (outcome.outcome_type == OutcomeType::Stream && outcome.exception_type.is_some())
    }

    /// The outcome's result code, for kinds that have one (HTTP: its status).
    fn status(&self, outcome: &Outcome) -> Option<u16> {
        let _ = outcome;
        None
    }
}

/// The codec of kinds nobody registered one for: any JSON value replays, and
/// the preview is its JSON text. HTTP is the exception: only the proxy can
/// tell a reply that replays from one that does not.
pub(crate) struct JsonCodec;

impl OutcomeCodec for JsonCodec {
    fn normalise(
        &self,
        function: &Function,
        outcome: NewOutcome,
    ) -> Result<NewOutcome, CodecError> {
        // Internal: a library program may open a data dir the proxy
        // recorded; it must not store an HTTP reply nothing has checked.
        if function.kind == FunctionKind::Http {
            return Err(CodecError::new(
                "value",
                "outcomes of HTTP functions are checked by the cacheow proxy: add this one through the panel or API of `cacheow serve`",
            ));
        }
        Ok(outcome)
    }

    fn preview(&self, outcome: &Outcome) -> Preview {
        json_preview(outcome)
    }
}

/// A preview of an outcome's value as JSON text (the message of a failure).
pub fn json_preview(outcome: &Outcome) -> Preview {
    if outcome.outcome_type == OutcomeType::Exception {
        return Preview::of_exception(outcome);
    }
    // Internal: four bytes a character is enough for any 200 characters.
    let mut text = Vec::new();
    let size = json_prefix(&outcome.value, &mut text, Preview::MAX_CHARS * 4);
    Preview::new(None, &String::from_utf8_lossy(&text), size)
}

/// Adds the start of `value`'s compact JSON to `text`, up to `limit` bytes
/// in all, and returns the JSON's whole length, without building it: a
/// preview is made on the recording path and must cost nothing like the
/// value.
pub fn json_prefix(value: &Value, text: &mut Vec<u8>, limit: usize) -> u64 {
    let room = limit.saturating_sub(text.len());
    let mut prefix = Prefix {
        text,
        room,
        size: 0,
    };
    serde_json::to_writer(&mut prefix, value).expect("JSON values always serialise");
    prefix.size
}

/// Keeps the first `room` bytes written to it and counts them all.
struct Prefix<'a> {
    text: &'a mut Vec<u8>,
    room: usize,
    size: u64,
}

impl std::io::Write for Prefix<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let keep = bytes.len().min(self.room);
        self.text.extend_from_slice(&bytes[..keep]);
        self.room -= keep;
        self.size += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_prefix_keeps_its_limit_and_counts_the_whole_value() {
        let value = serde_json::json!({"a": "x".repeat(1000), "b": [1, 2]});
        let whole = value.to_string();
        let mut text = b"ab".to_vec();
        assert_eq!(json_prefix(&value, &mut text, 12), whole.len() as u64);
        assert_eq!(text, [b"ab", &whole.as_bytes()[..10]].concat());
    }

    #[test]
    fn a_preview_keeps_two_hundred_characters_not_bytes() {
        let text = "é".repeat(300);
        let preview = Preview::new(Some(200), &text, 600);
        assert_eq!(preview.text.chars().count(), Preview::MAX_CHARS);
        assert_eq!(preview.size, 600);
    }
}
