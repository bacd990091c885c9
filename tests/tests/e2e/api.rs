//! The control API: shapes, errors that name the field, and guards.

use cacheow_tests::{Cacheow, Upstream, eventually, outcome_files};
use http::{Method, StatusCode};
use serde_json::{Value, json};

async fn one_function(cacheow: &Cacheow, upstream: &Upstream) -> (String, String) {
    cacheow
        .proxied_client()
        .get(format!("{}/thing", upstream.url()))
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/thing").await;
    (
        function["id"].as_str().unwrap().to_owned(),
        function["outcomes"][0]["id"].as_str().unwrap().to_owned(),
    )
}

/// Method, path, body, expected status, error code and field.
type Case = (
    Method,
    String,
    Option<Value>,
    u16,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_naming_the_field_and_changes_nothing() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let (id, outcome) = one_function(&cacheow, &upstream).await;
    let before = cacheow.get(&format!("/api/functions/{id}")).await;
    let f = |rest: &str| format!("/api/functions/{id}{rest}");
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            f("/mode"),
            Some(json!({"mode": "turbo"})),
            400,
            "invalid_field",
            Some("mode"),
        ),
        (
            Method::POST,
            f("/mode"),
            Some(json!({})),
            400,
            "missing_field",
            Some("mode"),
        ),
        (
            Method::POST,
            f("/latency"),
            Some(json!({"latency_ms": -5})),
            400,
            "invalid_field",
            Some("latency_ms"),
        ),
        (
            Method::POST,
            f("/latency"),
            Some(json!({"latency_ms": "fast"})),
            400,
            "invalid_field",
            Some("latency_ms"),
        ),
        (
            Method::POST,
            f("/mock-outcomes"),
            Some(json!({"entries": [{"outcome_id": outcome, "weight": -1}]})),
            400,
            "invalid_field",
            Some("entries[0].weight"),
        ),
        (
            Method::POST,
            f("/mock-outcomes"),
            Some(json!({"entries": [{"outcome_id": "0123456789abcdef"}]})),
            400,
            "invalid_field",
            Some("entries[0].outcome_id"),
        ),
        (
            Method::POST,
            f("/outcomes/manual"),
            Some(json!({"outcome_type": "exception", "exception_type": "meltdown"})),
            400,
            "invalid_field",
            Some("exception_type"),
        ),
        (
            Method::POST,
            f("/outcomes/manual"),
            Some(json!({"outcome_type": "return", "value": {"status": 99}})),
            400,
            "invalid_field",
            Some("value.status"),
        ),
        (
            Method::GET,
            f("/outcomes/0123456789abcdef"),
            None,
            404,
            "not_found",
            None,
        ),
        // The client resolves the dots, so this reaches /api/functions/x.
        (
            Method::DELETE,
            f("/outcomes/../../x"),
            None,
            400,
            "invalid_id",
            Some("id"),
        ),
        (
            Method::GET,
            "/api/functions/0123456789abcdef".into(),
            None,
            404,
            "not_found",
            None,
        ),
        (
            Method::POST,
            "/api/functions/..%2F..%2Fetc/mode".into(),
            Some(json!({"mode": "cache"})),
            400,
            "invalid_id",
            Some("id"),
        ),
        (
            Method::GET,
            "/api/functions/ABCDEF0123456789".into(),
            None,
            400,
            "invalid_id",
            Some("id"),
        ),
        (
            Method::PUT,
            f("/mode"),
            Some(json!({"mode": "cache"})),
            405,
            "method_not_allowed",
            None,
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let (got, reply) = cacheow.api(method.clone(), &path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["status"], status);
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(field) = field {
            assert_eq!(reply["error"]["field"], field, "{method} {path}: {reply}");
        }
    }

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(format!("{}{}", cacheow.url(), f("/mode")))
        .body("{\"mode\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_json");

    let after = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(before["mode"], after["mode"]);
    assert_eq!(before["latency_ms"], after["latency_ms"]);
    assert_eq!(before["mock_outcomes"], after["mock_outcomes"]);
    assert_eq!(before["outcomes"], after["outcomes"]);
}

#[tokio::test]
async fn outcomes_can_be_read_and_deleted() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let (id, outcome) = one_function(&cacheow, &upstream).await;
    let full = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome}"))
        .await;
    assert_eq!(full["id"], outcome.as_str());
    assert_eq!(full["value"]["status"], 200);
    assert_eq!(full["value"]["body"]["path"], "/thing");
    assert_eq!(full["request"]["method"], "GET");
    eventually("the outcome file", || async {
        outcome_files(cacheow.data_dir(), &id).len() == 1
    })
    .await;
    let (status, reply) = cacheow
        .api(
            Method::DELETE,
            &format!("/api/functions/{id}/outcomes/{outcome}"),
            None,
        )
        .await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"status": "ok"})));
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(detail["outcomes"], json!([]));
    eventually("the file is gone", || async {
        outcome_files(cacheow.data_dir(), &id).is_empty()
    })
    .await;
}

#[tokio::test]
async fn secrets_in_request_headers_are_redacted_on_disk_and_in_the_api() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/me", upstream.url()))
        .header("authorization", "Bearer sk-very-secret")
        .header("x-api-key", "also-secret")
        .send()
        .await
        .unwrap();
    let function = cacheow.function("/me").await;
    let id = function["id"].as_str().unwrap();
    let outcome = function["outcomes"][0]["id"].as_str().unwrap();
    let full = cacheow
        .get(&format!("/api/functions/{id}/outcomes/{outcome}"))
        .await;
    let headers = full["request"]["headers"].to_string();
    assert!(
        headers.contains(r#"["authorization","[redacted]"]"#),
        "{headers}"
    );
    assert!(
        !headers.contains("sk-very-secret") && !headers.contains("also-secret"),
        "{headers}"
    );
    eventually("the outcome file", || async {
        outcome_files(cacheow.data_dir(), id).len() == 1
    })
    .await;
    let text = std::fs::read_to_string(&outcome_files(cacheow.data_dir(), id)[0]).unwrap();
    assert!(!text.contains("sk-very-secret"), "{text}");
}

#[tokio::test]
async fn foreign_hosts_and_cross_origin_writes_are_refused() {
    let cacheow = Cacheow::start(&[]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("{}/api/functions", cacheow.url()))
        .header("host", "evil.example:8765")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    let response = client
        .post(format!(
            "{}/api/functions/0123456789abcdef/mode",
            cacheow.url()
        ))
        .header("origin", "http://evil.example")
        .json(&json!({"mode": "cache"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let info = cacheow.get("/api/info").await;
    assert_eq!(
        info["listen"],
        cacheow.addr.to_string(),
        "the bound address, not port 0"
    );
    let index = cacheow.get("/").await;
    assert!(
        index["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GET /api/functions")
    );
}
