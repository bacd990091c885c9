use cacheow::cacheow;
use futures::stream::{self, Stream};

struct Row(u32);

#[cacheow]
fn rows(n: u32) -> impl Stream<Item = Row> {
    stream::iter((0..n).map(Row))
}

fn main() {
    let _ = rows(3);
}
