//! Kinds plug into the engine through a codec: it checks and normalises
//! manual outcomes and previews recorded ones, once, when they are recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheow_engine::{
    CodecError, Engine, EngineOptions, Function, FunctionHandle, FunctionKind, FunctionSpec,
    NewOutcome, Outcome, OutcomeCodec, Preview,
};
use cacheow_storage::test_support::{TempDataDir, temp_data_dir};
use serde_json::{Value, json};

/// Accepts only objects with a `status`, stores them with `"checked": true`,
/// and counts its previews.
#[derive(Default)]
struct StatusCodec {
    previews: AtomicUsize,
}

impl OutcomeCodec for StatusCodec {
    fn normalise(
        &self,
        _function: &Function,
        mut outcome: NewOutcome,
    ) -> Result<NewOutcome, CodecError> {
        if outcome.value.get("status").is_none() {
            return Err(CodecError::new("value.status", "a status is required"));
        }
        outcome.value["checked"] = Value::Bool(true);
        Ok(outcome)
    }

    fn preview(&self, outcome: &Outcome) -> Preview {
        self.previews.fetch_add(1, Ordering::SeqCst);
        let status = outcome.value["status"].as_u64().map(|s| s as u16);
        Preview::new(status, "from the codec", 7)
    }
}

/// An engine with `StatusCodec` registered for HTTP, and one HTTP function.
fn with_status_codec() -> (TempDataDir, Engine, Arc<StatusCodec>, FunctionHandle) {
    let dir = temp_data_dir();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let codec = Arc::new(StatusCodec::default());
    engine.register_codec(FunctionKind::Http, codec.clone());
    let http = engine.ensure_function(FunctionSpec::new("GET http://t/x", FunctionKind::Http));
    (dir, engine, codec, http)
}

#[test]
fn manual_outcomes_go_through_the_codec_of_their_kind() {
    let (_dir, engine, _codec, http) = with_status_codec();

    let refused = http
        .add_manual(None, NewOutcome::returned(json!({"body": "no status"})))
        .unwrap_err();
    assert_eq!(refused.field, "value.status");
    assert_eq!(http.outcome_count(), 0, "a refused outcome is not stored");

    let id = http
        .add_manual(None, NewOutcome::returned(json!({"status": 201})))
        .unwrap()
        .outcome_id;
    let stored = http.outcome(&id).unwrap().unwrap();
    assert_eq!(stored.outcome().value["checked"], true, "stored normalised");

    // Without the proxy's codec an HTTP function takes no manual outcome.
    let bare = temp_data_dir();
    let bare = Engine::open(bare.path(), EngineOptions::default()).unwrap();
    let unchecked = bare.ensure_function(FunctionSpec::new("GET http://t/z", FunctionKind::Http));
    let refused = unchecked
        .add_manual(None, NewOutcome::returned(json!({"status": 200})))
        .unwrap_err();
    assert!(refused.message.contains("cacheow serve"), "{refused}");
    assert_eq!(unchecked.outcome_count(), 0);

    // Another kind keeps the plain JSON codec: any value passes.
    let sync = engine.ensure_function(FunctionSpec::new("tests::f", FunctionKind::Sync));
    sync.add_manual(None, NewOutcome::returned(json!("anything")))
        .unwrap();
    let preview = sync
        .preview(&sync.outcomes_page(None, 10).unwrap().unwrap()[0])
        .clone();
    assert_eq!(preview.text, "\"anything\"");
    assert_eq!(preview.status, None);
}

#[test]
fn a_preview_is_made_once_when_the_outcome_is_recorded() {
    let (_dir, _engine, codec, http) = with_status_codec();

    http.record(None, NewOutcome::returned(json!({"status": 200})));
    assert_eq!(
        codec.previews.load(Ordering::SeqCst),
        1,
        "made at record time"
    );
    for _ in 0..3 {
        let outcome = http.outcomes_page(None, 10).unwrap().unwrap()[0].clone();
        let preview = http.preview(&outcome);
        assert_eq!(
            (preview.status, preview.text.as_str(), preview.size),
            (Some(200), "from the codec", 7)
        );
    }
    assert_eq!(codec.previews.load(Ordering::SeqCst), 1, "never made again");
}
