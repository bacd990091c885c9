use cacheow::cacheow;

#[cacheow]
struct Settings {
    verbose: bool,
}

fn main() {
    let _ = Settings { verbose: true }.verbose;
}
