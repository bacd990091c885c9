use cacheow::cacheow;

#[cacheow(ignore = "client")]
fn fetch(id: u32, clinet: String) -> u32 {
    let _ = clinet;
    id
}

fn main() {
    fetch(1, String::new());
}
