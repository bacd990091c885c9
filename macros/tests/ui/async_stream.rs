use cacheow::cacheow;
use futures::stream::{self, Stream};

#[cacheow]
async fn numbers(n: u32) -> impl Stream<Item = u32> {
    stream::iter(0..n)
}

fn main() {
    let _ = numbers(3);
}
