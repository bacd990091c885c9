use std::future::Future;

use cacheow::cacheow;

#[cacheow]
fn later(x: u32) -> impl Future<Output = u32> {
    async move { x }
}

fn main() {
    let _ = later(1);
}
