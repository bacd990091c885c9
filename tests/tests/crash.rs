//! Crashes: what a `kill -9` loses. A binary of its own so the other tests'
//! load does not skew the measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheow_tests::{Cacheow, Upstream, json_reply};
use serde_json::json;

/// Loss window after a hard kill: with --durable every acknowledged outcome
/// survives; without it, the ones lost are the last batch's. Prints the
/// measured loss so the README's figure can be checked.
#[tokio::test]
async fn kill_9_loses_nothing_in_durable_mode_and_reports_the_default_window() {
    let counter = Arc::new(AtomicUsize::new(0));
    let numbered = counter.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| {
        json_reply(&json!({"n": numbered.fetch_add(1, Ordering::SeqCst)}))
    }))
    .await;
    for durable in [true, false] {
        let flags: &[&str] = if durable { &["--durable"] } else { &[] };
        let mut cacheow = Cacheow::start(flags);
        let client = cacheow.proxied_client();
        let calls = 200;
        for _ in 0..calls {
            client
                .get(format!("{}/n", upstream.url()))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        cacheow.kill();
        let cacheow = cacheow.restart();
        let list = cacheow.get("/api/functions").await;
        let kept = list
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["outcome_count"].as_u64().unwrap() as usize)
            .sum::<usize>();
        println!("durable={durable}: {kept} of {calls} outcomes survived kill -9");
        if durable {
            assert_eq!(kept, calls);
        } else {
            // Only the batch being committed at the kill may be lost.
            assert!(kept >= calls * 3 / 4, "lost {} of {calls}", calls - kept);
        }
    }
}
