//! A program using the cacheow library, driven line by line on stdin by
//! tests/tests/library.rs: `quote SYMBOL` calls a wrapped function and
//! prints `{"result": …, "runs": N}`, where `runs` counts how often its body
//! ran. The first line out is `ready URL` (the in-process panel) or
//! `ready off`.

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};

use cacheow::cacheow;
use serde::{Deserialize, Serialize};
use serde_json::json;

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Serialize, Deserialize)]
enum QuoteError {
    RateLimited { retry_after_s: u32 },
    UnknownSymbol(String),
}

#[cacheow]
fn quote(symbol: String) -> Result<f64, QuoteError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    match symbol.as_str() {
        "ACME" => Ok(12.5),
        _ => Err(QuoteError::UnknownSymbol(symbol)),
    }
}

fn main() {
    let ready = cacheow::get_manager()
        .and_then(|manager| manager.server_address())
        .map_or_else(|| "off".to_owned(), |addr| format!("http://{addr}"));
    println!("ready {ready}");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let Some(symbol) = line.strip_prefix("quote ") else {
            println!("{}", json!({"error": format!("unknown command {line:?}")}));
            continue;
        };
        let result = match quote(symbol.to_owned()) {
            Ok(price) => json!({"Ok": price}),
            Err(e) => json!({"Err": e}),
        };
        println!(
            "{}",
            json!({"result": result, "runs": RUNS.load(Ordering::SeqCst)})
        );
    }
}
