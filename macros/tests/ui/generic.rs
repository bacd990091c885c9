use cacheow::cacheow;

#[cacheow]
fn lookup<K: serde::Serialize>(key: K) -> u32 {
    let _ = key;
    1
}

fn main() {
    lookup("a");
}
