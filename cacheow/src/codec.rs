//! How a wrapped function's values become outcomes and back: serde for
//! values, `Err` as exception outcomes, and clear messages for what cannot
//! be built.

use std::marker::PhantomData;

use cacheow_engine::{NewOutcome, Outcome, OutcomeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A value a call key can be built from.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cacheow call key: it does not implement `serde::Serialize`",
    label = "this argument is hashed into the call key",
    note = "derive or implement `serde::Serialize` for the argument's type, or leave the argument out of the key with `#[cacheow(ignore = \"<argument name>\")]`"
)]
pub trait KeyArg: Serialize {}

impl<T: Serialize + ?Sized> KeyArg for T {}

/// A value cacheow can record and replay.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded by cacheow: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "cacheow records and replays this type",
    note = "derive `serde::Serialize` and `serde::Deserialize` for `{Self}` (owned data only: no borrowed `&str` fields)"
)]
pub trait ReturnValue: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> ReturnValue for T {}

/// What a value turned into.
#[derive(Debug)]
pub enum Encoded {
    /// A value to return.
    Value(Value),
    /// An `Err`: kept as an exception outcome.
    Error {
        /// Short name of the error type.
        exception_type: String,
        /// Human-readable form.
        message: String,
        /// The serialized error, which replays it exactly.
        value: Value,
    },
}

impl Encoded {
    /// The outcome recorded for a returned value.
    pub(crate) fn into_outcome(self) -> NewOutcome {
        match self {
            Encoded::Value(value) => NewOutcome::returned(value),
            Encoded::Error {
                exception_type,
                message,
                value,
            } => NewOutcome {
                value,
                ..NewOutcome::exception(exception_type, message)
            },
        }
    }
}

/// The parts of an outcome a codec reads, whether stored or about to be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeView<'a> {
    pub(crate) outcome_type: OutcomeType,
    pub(crate) value: &'a Value,
    pub(crate) exception_type: Option<&'a str>,
    pub(crate) exception_message: Option<&'a str>,
}

impl<'a> From<&'a Outcome> for OutcomeView<'a> {
    fn from(o: &'a Outcome) -> Self {
        Self {
            outcome_type: o.outcome_type,
            value: &o.value,
            exception_type: o.exception_type.as_deref(),
            exception_message: o.exception_message.as_deref(),
        }
    }
}

impl<'a> From<&'a NewOutcome> for OutcomeView<'a> {
    fn from(o: &'a NewOutcome) -> Self {
        Self {
            outcome_type: o.outcome_type,
            value: &o.value,
            exception_type: o.exception_type.as_deref(),
            exception_message: o.exception_message.as_deref(),
        }
    }
}

/// Turns one Rust type into outcomes and back. The macro picks `Plain` or
/// `Fallible` from the return type's spelling.
pub trait Codec: 'static {
    /// What the wrapped function returns (or a stream yields).
    type Output;
    /// The recorded form of `output`.
    fn encode(output: &Self::Output) -> Result<Encoded, serde_json::Error>;
    /// A returned value from its recorded form.
    fn decode_value(value: &Value) -> Result<Self::Output, String>;
    /// An exception outcome as `Self::Output`, if the type can carry one.
    fn decode_error(
        exception_type: Option<&str>,
        message: Option<&str>,
        value: &Value,
    ) -> Result<Self::Output, String>;
}

/// Codec for a return type that is not a `Result`.
#[derive(Debug)]
pub struct Plain<T>(PhantomData<fn() -> T>);

// Bounds through `ReturnValue`, so a type that is not serde-ready is
// reported with its message even behind a `Result` alias.
impl<T: ReturnValue + 'static> Codec for Plain<T> {
    type Output = T;

    fn encode(output: &T) -> Result<Encoded, serde_json::Error> {
        serde_json::to_value(output).map(Encoded::Value)
    }

    fn decode_value(value: &Value) -> Result<T, String> {
        T::deserialize(value).map_err(|e| {
            format!(
                "the value {} is not a `{}`: {e}",
                preview(value),
                std::any::type_name::<T>()
            )
        })
    }

    fn decode_error(
        exception_type: Option<&str>,
        message: Option<&str>,
        _value: &Value,
    ) -> Result<T, String> {
        Err(format!(
            "this function returns `{}`, which cannot carry the exception `{}: {}`; \
             only functions returning a `Result` replay exceptions",
            std::any::type_name::<T>(),
            exception_type.unwrap_or("error"),
            message.unwrap_or_default(),
        ))
    }
}

/// Codec for `Result<T, E>` (under any alias): `Err` is an exception outcome.
#[derive(Debug)]
pub struct Fallible<R>(PhantomData<fn() -> R>);

impl<T, E> Codec for Fallible<Result<T, E>>
where
    T: ReturnValue + 'static,
    E: ReturnValue + 'static,
{
    type Output = Result<T, E>;

    fn encode(output: &Result<T, E>) -> Result<Encoded, serde_json::Error> {
        Ok(match output {
            Ok(value) => Encoded::Value(serde_json::to_value(value)?),
            Err(error) => {
                let value = serde_json::to_value(error)?;
                let message = match &value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                Encoded::Error {
                    exception_type: short_type_name::<E>(),
                    message,
                    value,
                }
            }
        })
    }

    fn decode_value(value: &Value) -> Result<Result<T, E>, String> {
        Plain::<T>::decode_value(value).map(Ok)
    }

    /// A recorded `Err` carries its serialized value. A manual exception from
    /// the panel carries a type and a message: it becomes `E` when one of
    /// the shapes serde derives for common error types fits.
    fn decode_error(
        exception_type: Option<&str>,
        message: Option<&str>,
        value: &Value,
    ) -> Result<Result<T, E>, String> {
        let mut candidates = Vec::new();
        if !value.is_null() {
            candidates.push(value.clone());
        }
        if let Some(message) = message {
            if let Ok(parsed) = serde_json::from_str::<Value>(message) {
                candidates.push(parsed);
            }
            candidates.push(json!(message));
            if let Some(kind) = exception_type {
                candidates.push(json!({ kind: message }));
            }
        }
        if let Some(kind) = exception_type {
            candidates.push(json!(kind));
        }
        let mut first_error = None;
        for candidate in &candidates {
            match E::deserialize(candidate) {
                Ok(error) => return Ok(Err(error)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let kind = exception_type.unwrap_or("error");
        let message = message.unwrap_or_default();
        Err(format!(
            "cannot build the error type `{}` from the exception `{kind}: {message}`{}. \
             Give the outcome a `value` that deserializes into `{}` (what a recorded `Err` \
             of this function looks like), or an exception_type/message serde can read as one",
            std::any::type_name::<E>(),
            first_error.map(|e| format!(" ({e})")).unwrap_or_default(),
            std::any::type_name::<E>(),
        ))
    }
}

/// Reads an outcome of a call (not a stream) as `C::Output`.
pub(crate) fn decode<C: Codec>(outcome: OutcomeView<'_>) -> Result<C::Output, String> {
    match outcome.outcome_type {
        OutcomeType::Return => C::decode_value(outcome.value),
        OutcomeType::Exception => C::decode_error(
            outcome.exception_type,
            outcome.exception_message,
            outcome.value,
        ),
        OutcomeType::Stream => Err("a stream outcome cannot replay as a single value".into()),
    }
}

/// `my_crate::errors::ApiError<T>` → `ApiError`.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_owned()
}

/// The start of a JSON value, for error messages.
pub(crate) fn preview(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum ApiError {
        Timeout,
        NotFound(String),
        Limited { retry_after: u32 },
    }

    type Call = Fallible<Result<u32, ApiError>>;

    fn manual(kind: &str, message: &str) -> Result<Result<u32, ApiError>, String> {
        Call::decode_error(Some(kind), Some(message), &Value::Null)
    }

    #[test]
    fn recorded_errors_replay_exactly() {
        for error in [
            ApiError::Timeout,
            ApiError::NotFound("user 7".into()),
            ApiError::Limited { retry_after: 3 },
        ] {
            let Encoded::Error {
                exception_type,
                message,
                value,
            } = Call::encode(&Err(error)).unwrap()
            else {
                panic!("an Err must encode as an error");
            };
            assert_eq!(exception_type, "ApiError");
            let back = Call::decode_error(Some(&exception_type), Some(&message), &value).unwrap();
            assert!(back.is_err());
        }
    }

    #[test]
    fn manual_exceptions_become_the_error_type_when_a_shape_fits() {
        assert_eq!(manual("Timeout", "").unwrap(), Err(ApiError::Timeout));
        assert_eq!(
            manual("NotFound", "no user 3").unwrap(),
            Err(ApiError::NotFound("no user 3".into()))
        );
        assert_eq!(
            manual("ApiError", r#"{"Limited":{"retry_after":9}}"#).unwrap(),
            Err(ApiError::Limited { retry_after: 9 })
        );
        let strings = Fallible::<Result<u32, String>>::decode_error(
            Some("Boom"),
            Some("it broke"),
            &Value::Null,
        );
        assert_eq!(strings.unwrap(), Err("it broke".to_owned()));
    }

    #[test]
    fn unbuildable_exceptions_say_what_to_do() {
        let message = manual("Exploded", "boom").unwrap_err();
        assert!(message.contains("cannot build the error type"), "{message}");
        assert!(message.contains("ApiError"), "{message}");
        assert!(message.contains("Exploded: boom"), "{message}");
        let plain = Plain::<u32>::decode_error(Some("Timeout"), Some("slow"), &Value::Null);
        assert!(
            plain
                .unwrap_err()
                .contains("only functions returning a `Result`")
        );
        let wrong = Plain::<u32>::decode_value(&json!("text")).unwrap_err();
        assert!(wrong.contains("is not a `u32`"), "{wrong}");
    }
}
