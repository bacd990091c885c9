use cacheow::cacheow;

// `std::io::Error` is not `Serialize`, so an `Err` could not be recorded.
#[cacheow]
fn read_config(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[derive(serde::Serialize)]
struct LookupError;

#[cacheow]
fn lookup(id: u32) -> Result<u32, LookupError> {
    Ok(id)
}

fn main() {
    let _ = read_config("cacheow.toml".into());
    let _ = lookup(1);
}
