//! cacheow's complete example: a slow sync function and a slow async one,
//! recorded, replayed from the cache, and mocked for an argument never seen.
//!
//! Run it with `CACHEOW_ENABLE=1 cargo run` (add `CACHEOW_START_SERVER=0`
//! to skip the panel).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheow::{Mode, cacheow, function_id};
use serde::{Deserialize, Serialize};

static BODY_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheow]
fn expensive_computation(x: u64, y: u64) -> u64 {
    BODY_RUNS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    x * y
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forecast {
    city: String,
    celsius: f32,
}

#[cacheow]
async fn fetch_forecast(city: String) -> Result<Forecast, String> {
    BODY_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    match city.as_str() {
        "Atlantis" => Err(format!("no forecast for {city}")),
        _ => Ok(Forecast {
            city,
            celsius: 21.5,
        }),
    }
}

/// Prints one call: mode, call, result, whether the body ran, and how long
/// it took.
fn show(
    mode: &str,
    call: &str,
    result: impl std::fmt::Debug,
    runs_before: usize,
    started: Instant,
) {
    let ran = if BODY_RUNS.load(Ordering::SeqCst) > runs_before {
        "ran the body"
    } else {
        "replayed"
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{mode:<8} {call:<41} -> {:<50} {ran:<13} {ms:>8.3} ms",
        format!("{result:?}")
    );
}

macro_rules! call {
    ($mode:expr, $call:expr) => {{
        let runs = BODY_RUNS.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = $call;
        show($mode, stringify!($call), &result, runs, started);
    }};
}

#[tokio::main]
async fn main() {
    let Some(manager) = cacheow::get_manager() else {
        eprintln!("cacheow is off: run with CACHEOW_ENABLE=1");
        std::process::exit(2);
    };
    let compute = function_id!(expensive_computation);
    let forecast = function_id!(fetch_forecast);
    println!("data dir {}", manager.data_dir().display());

    // default: every call runs and is recorded.
    call!("default", expensive_computation(6, 7));
    call!("default", fetch_forecast("Lisbon".into()).await);
    call!("default", fetch_forecast("Atlantis".into()).await);

    // cache: a recorded call replays without running the body; a new one
    // runs once and is recorded.
    manager.set_mode(compute, Mode::Cache);
    manager.set_mode(forecast, Mode::Cache);
    call!("cache", expensive_computation(6, 7));
    call!("cache", fetch_forecast("Lisbon".into()).await);
    call!("cache", fetch_forecast("Atlantis".into()).await);
    call!("cache", expensive_computation(4, 5));

    // mock: never runs the body, even for arguments never seen.
    manager.set_mode(compute, Mode::Mock);
    manager.set_mode(forecast, Mode::Mock);
    call!("mock", expensive_computation(1000, 1000));
    call!("mock", fetch_forecast("Reykjavik".into()).await);

    // latency: added to cache and mock replies.
    manager.set_latency(compute, 250);
    call!("mock", expensive_computation(3, 3));
    manager.set_mode(compute, Mode::Cache);
    call!("cache", expensive_computation(6, 7));

    let stats = manager
        .function(compute)
        .map(|f| f.stats())
        .unwrap_or_default();
    println!(
        "expensive_computation: {} calls, {} cache hits, {} mock calls, {} upstream calls",
        stats.total_calls, stats.cache_hits, stats.mock_calls, stats.upstream_calls
    );
}
