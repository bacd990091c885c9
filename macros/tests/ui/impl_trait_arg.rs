use cacheow::cacheow;

#[cacheow]
fn greet(name: impl Into<String>) -> String {
    format!("hello {}", name.into())
}

fn main() {
    greet("you");
}
