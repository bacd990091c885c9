use cacheow::cacheow;

struct Connection;

#[cacheow]
fn query(conn: &Connection, id: u32) -> u32 {
    let _ = conn;
    id
}

fn main() {
    query(&Connection, 1);
}
