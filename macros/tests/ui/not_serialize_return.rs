use cacheow::cacheow;

struct Handle(u32);

#[cacheow]
fn open(id: u32) -> Handle {
    Handle(id)
}

fn main() {
    open(1);
}
