//! The in-process library (issue 6) from the outside: the README's complete
//! example (a crate outside the workspace) and a small program using
//! `#[cacheow]` (src/bin/wrapped.rs), run as real processes, checked by
//! their output, the files on disk, the in-process API, and `cacheow serve`
//! on the same data dir.

use std::process::Command;

use cacheow::FunctionId;
use cacheow_tests::{Cacheow, Wrapped, complete_example_bin, outcome_files};
use serde_json::{Value, json};

/// One line of the example's output.
#[derive(Debug)]
struct Line {
    mode: String,
    call: String,
    result: String,
    ran_body: bool,
    ms: f64,
}

fn parse(stdout: &str) -> Vec<Line> {
    stdout
        .lines()
        .filter(|line| line.contains(" -> "))
        .map(|line| {
            let (left, right) = line.split_once(" -> ").unwrap();
            let (mode, call) = left.split_once(' ').unwrap();
            let right = right.trim_end().strip_suffix(" ms").unwrap();
            let (rest, ms) = right.rsplit_once(' ').unwrap();
            let (result, ran_body) = match rest.trim_end().strip_suffix("ran the body") {
                Some(result) => (result, true),
                None => (rest.trim_end().strip_suffix("replayed").unwrap(), false),
            };
            Line {
                mode: mode.to_owned(),
                call: call.trim().to_owned(),
                result: result.trim().to_owned(),
                ran_body,
                ms: ms.trim().parse().unwrap(),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_complete_example_records_replays_and_mocks_and_cacheow_serve_lists_it() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(complete_example_bin())
        .env("CACHEOW_ENABLE", "1")
        .env("CACHEOW_DATA_DIR", data_dir.path())
        .env("CACHEOW_START_SERVER", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = parse(&stdout);
    let line = |mode: &str, call: &str| -> &Line {
        lines
            .iter()
            .find(|l| l.mode == mode && l.call == call)
            .unwrap_or_else(|| panic!("no `{mode} {call}` line in:\n{stdout}"))
    };
    let compute = "expensive_computation(6, 7)";
    let lisbon = "fetch_forecast(\"Lisbon\".into()).await";
    let atlantis = "fetch_forecast(\"Atlantis\".into()).await";
    for call in [compute, lisbon, atlantis] {
        let recorded = line("default", call);
        assert!(recorded.ran_body, "{recorded:?}");
        let replayed = lines
            .iter()
            .find(|l| l.mode == "cache" && l.call == call)
            .unwrap();
        assert!(!replayed.ran_body, "{replayed:?}");
        assert_eq!(replayed.result, recorded.result);
    }
    assert_eq!(
        line("default", atlantis).result,
        "Err(\"no forecast for Atlantis\")"
    );
    assert!(line("cache", "expensive_computation(4, 5)").ran_body);
    let recorded_products = ["42", "20"];
    let unseen = line("mock", "expensive_computation(1000, 1000)");
    assert!(!unseen.ran_body);
    assert!(
        recorded_products.contains(&unseen.result.as_str()),
        "{unseen:?}"
    );
    let reykjavik = line("mock", "fetch_forecast(\"Reykjavik\".into()).await");
    assert!(!reykjavik.ran_body);
    assert!(
        [
            &line("default", lisbon).result,
            &line("default", atlantis).result
        ]
        .contains(&&reykjavik.result),
        "{reykjavik:?}"
    );
    let delayed = line("mock", "expensive_computation(3, 3)");
    assert!(!delayed.ran_body && delayed.ms >= 250.0, "{delayed:?}");
    let delayed = lines.iter().rfind(|l| l.call == compute).unwrap();
    assert!(delayed.mode == "cache" && !delayed.ran_body && delayed.ms >= 250.0);

    let compute_id = FunctionId::for_identity("complete::expensive_computation").to_string();
    let forecast_id = FunctionId::for_identity("complete::fetch_forecast").to_string();
    assert_eq!(outcome_files(data_dir.path(), &compute_id).len(), 2);
    assert_eq!(outcome_files(data_dir.path(), &forecast_id).len(), 2);

    // The same data dir under the proxy: both functions, with their outcomes.
    let cacheow = Cacheow::start_on(data_dir, &[]);
    let list = cacheow.get("/api/functions").await;
    let summary = |id: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .clone()
    };
    let compute = summary(&compute_id);
    assert_eq!(
        (
            &compute["name"],
            &compute["kind"],
            &compute["outcome_count"]
        ),
        (
            &json!("complete::expensive_computation"),
            &json!("sync"),
            &json!(2)
        )
    );
    let forecast = summary(&forecast_id);
    assert_eq!(
        (&forecast["kind"], &forecast["outcome_count"]),
        (&json!("async"), &json!(2))
    );
    let detail = cacheow.get(&format!("/api/functions/{forecast_id}")).await;
    let failure = detail["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome_type"] == "exception")
        .expect("the Err outcome");
    assert_eq!(failure["exception_type"], "String");
    assert_eq!(failure["preview"], "no forecast for Atlantis");
}

#[tokio::test]
async fn a_program_serves_the_panel_and_api_in_process() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut program = Wrapped::start(env!("CARGO_BIN_EXE_wrapped"), data_dir.path());
    let url = program.url.clone().expect("the in-process panel started");
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{url}/api/functions{path}");

    assert_eq!(program.quote("ACME"), (json!({"Ok": 12.5}), 1));
    let list: Value = client
        .get(api(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let function = &list[0];
    assert_eq!(
        (
            &function["name"],
            &function["kind"],
            &function["outcome_count"]
        ),
        (&json!("wrapped::quote"), &json!("sync"), &json!(1))
    );
    let id = function["id"].as_str().unwrap().to_owned();
    let post = |path: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client.post(path).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, _) = post(api(&format!("/{id}/mode")), json!({"mode": "cache"})).await;
    assert_eq!(status, 200);
    assert_eq!(program.quote("ACME"), (json!({"Ok": 12.5}), 1), "replayed");

    // Manual outcomes the function could not replay are refused, saying why.
    let manual = api(&format!("/{id}/outcomes/manual"));
    let (status, refused) = post(
        manual.clone(),
        json!({"outcome_type": "exception", "exception_type": "Exploded", "exception_message": "boom"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "exception_type");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot build the error type"), "{message}");
    assert!(message.contains("QuoteError"), "{message}");
    let (status, refused) = post(
        manual.clone(),
        json!({"outcome_type": "return", "value": "cheap"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "value");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a `f64`")
    );

    // One it can: replayed as the `Err` it describes.
    let (status, added) = post(
        manual,
        json!({"outcome_type": "exception", "exception_type": "UnknownSymbol", "exception_message": "XYZ"}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let entries = json!({"entries": [{"outcome_id": added["outcome_id"], "weight": 1}]});
    assert_eq!(
        post(api(&format!("/{id}/mock-outcomes")), entries).await.0,
        200
    );
    assert_eq!(
        post(api(&format!("/{id}/mode")), json!({"mode": "mock"}))
            .await
            .0,
        200
    );
    assert_eq!(
        program.quote("NEVER-SEEN"),
        (json!({"Err": {"UnknownSymbol": "XYZ"}}), 1)
    );

    // The panel itself, and no proxying.
    let page = client
        .get(format!("{url}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&url).unwrap())
        .build()
        .unwrap();
    let refused = proxy.get("http://example.invalid/").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("does not proxy"));

    let stderr = program.finish();
    assert!(
        stderr.contains(&format!("panel and API at {url}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_data_dir_owned_by_a_running_proxy_gives_a_clear_error_and_calls_still_work() {
    let cacheow = Cacheow::start(&[]);
    let mut program = Wrapped::start(env!("CARGO_BIN_EXE_wrapped"), cacheow.data_dir());
    assert_eq!(program.url, None, "cacheow is off in that program");
    assert_eq!(program.quote("ACME").1, 1);
    assert_eq!(program.quote("ACME"), (json!({"Ok": 12.5}), 2));
    let stderr = program.finish();
    assert!(stderr.contains("is in use by another cacheow"), "{stderr}");
    assert!(
        stderr.contains("set CACHEOW_DATA_DIR to another directory"),
        "{stderr}"
    );
    assert!(stderr.contains("run unrecorded"), "{stderr}");
    assert_eq!(cacheow.get("/api/functions").await, json!([]));
}
