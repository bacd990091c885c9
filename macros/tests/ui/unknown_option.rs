use cacheow::cacheow;

#[cacheow(expires = "5s")]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

fn main() {
    add(1, 2);
}
