//! Every form `#[cacheow]` wraps. trybuild builds and runs this file on its
//! own; `tests/forms.rs` also builds it as a module, so that clippy sees the
//! generated code. With cacheow off (`CACHEOW_ENABLE` unset) each function
//! runs its body as written, which `main` checks.

use std::pin::Pin;

use cacheow::cacheow;
use futures::executor::block_on;
use futures::stream::{self, BoxStream, LocalBoxStream, Stream, StreamExt};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Invoice {
    id: u32,
    total: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum FetchError {
    NotFound(u32),
    Parse(String),
}

impl From<std::num::ParseIntError> for FetchError {
    fn from(e: std::num::ParseIntError) -> Self {
        FetchError::Parse(e.to_string())
    }
}

/// An alias spelled like `std::io::Result<T>`, over a serializable error.
mod io {
    pub(crate) type Result<T> = std::result::Result<T, super::FetchError>;
}

// === free functions ===

#[cacheow]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[cacheow]
fn nothing(_: u8) {}

#[cacheow(ignore = "verbose")]
fn fetch(id: u32, text: &str, verbose: bool) -> Result<Invoice, FetchError> {
    if id == 0 {
        return Err(FetchError::NotFound(id));
    }
    let total: u64 = text.parse()?;
    if verbose {
        println!("invoice {id}: {total}");
    }
    Ok(Invoice { id, total })
}

#[cacheow(name = "pass::scaled")]
fn scaled((x, y): (u8, u8), mut scale: u16) -> u16 {
    scale += 1;
    u16::from(x + y) * scale
}

#[cacheow(ignore = "r#type, retries", name = "pass::aliased")]
fn aliased(r#type: &str, id: u32, retries: u8) -> io::Result<u32> {
    let _ = (r#type, retries);
    let previous = id.checked_sub(1).ok_or(FetchError::NotFound(id))?;
    Ok(previous)
}

#[cacheow]
fn std_result(text: String) -> std::result::Result<u64, FetchError> {
    Ok(text.parse::<u64>()?)
}

#[cacheow]
async fn double(x: u64) -> u64 {
    async { x }.await * 2
}

#[cacheow]
async fn parse_later(text: String) -> Result<u64, FetchError> {
    let parsed = async { text.parse::<u64>() }.await?;
    Ok(parsed)
}

// === streams ===

#[cacheow]
fn counting(n: u32) -> impl Stream<Item = u32> + Send {
    stream::iter(0..n)
}

#[cacheow]
fn parsed_items(texts: Vec<String>) -> impl Stream<Item = Result<u64, FetchError>> + Send + Unpin {
    stream::iter(texts).map(|t| t.parse::<u64>().map_err(FetchError::from))
}

#[cacheow]
fn pinned(n: u32) -> Pin<Box<dyn Stream<Item = u32> + Send>> {
    Box::pin(stream::iter(0..n))
}

#[cacheow]
fn boxed<'a>(words: &'a [String]) -> BoxStream<'a, String> {
    stream::iter(words.iter().cloned()).boxed()
}

#[cacheow]
fn local(n: u32) -> LocalBoxStream<'static, io::Result<u32>> {
    stream::iter((0..n).map(Ok)).boxed_local()
}

// === from a `macro_rules!`, whose locals are hygienic ===

macro_rules! echo {
    ($name:ident, $t:ty) => {
        #[cacheow]
        fn $name(value: $t) -> $t {
            value
        }
    };
    ($name:ident, $arg:ident: $t:ty) => {
        #[cacheow(ignore = "verbose")]
        fn $name($arg: $t, verbose: bool) -> $t {
            let _ = verbose;
            $arg
        }
    };
}

echo!(echo_u32, u32);
echo!(echo_string, text: String);

// === methods and associated functions ===

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Client {
    base: u32,
    calls: u32,
}

impl Client {
    #[cacheow]
    fn new(base: u32) -> Self {
        Client { base, calls: 0 }
    }

    #[cacheow]
    fn get(&self, id: u32) -> u32 {
        self.base + id
    }

    #[cacheow]
    fn bump(&mut self) -> u32 {
        self.calls += 1;
        self.calls
    }

    #[cacheow(ignore = "timeout_ms")]
    async fn get_later(&self, id: u32, timeout_ms: u64) -> Result<u32, FetchError> {
        let _ = timeout_ms;
        if id == 0 {
            return Err(FetchError::NotFound(id));
        }
        Ok(self.base + id)
    }

    #[cacheow]
    fn items(&self, n: u32) -> impl Stream<Item = u32> + '_ {
        stream::iter(0..n).map(move |i| self.base + i)
    }

    #[cacheow]
    fn into_base(self) -> u32 {
        self.base
    }
}

fn assert_send<T: Send>(_: &T) {}

pub(crate) fn main() {
    assert_eq!(add(1, 2), 3);
    nothing(7);
    assert_eq!(fetch(1, "12", false), Ok(Invoice { id: 1, total: 12 }));
    assert_eq!(fetch(0, "12", false), Err(FetchError::NotFound(0)));
    assert!(matches!(fetch(2, "x", false), Err(FetchError::Parse(_))));
    assert_eq!(scaled((1, 2), 1), 6);
    assert_eq!(aliased("a", 3, 0), Ok(2));
    assert_eq!(aliased("a", 0, 0), Err(FetchError::NotFound(0)));
    assert_eq!(std_result("5".into()), Ok(5));
    assert_eq!(echo_u32(4), 4);
    assert_eq!(echo_string("hi".into(), true), "hi");

    let mut client = Client::new(100);
    assert_eq!(client.get(1), 101);
    assert_eq!(client.bump(), 1);
    assert_eq!(client.bump(), 2);

    // Wrapped async fns stay `Send` when their data is.
    let doubled = double(21);
    assert_send(&doubled);
    assert_send(&client.get_later(1, 10));
    block_on(async {
        assert_eq!(doubled.await, 42);
        assert_eq!(parse_later("7".into()).await, Ok(7));
        assert!(matches!(
            parse_later("x".into()).await,
            Err(FetchError::Parse(_))
        ));
        assert_eq!(client.get_later(1, 10).await, Ok(101));
        assert_eq!(client.get_later(0, 10).await, Err(FetchError::NotFound(0)));

        assert_send(&counting(3));
        assert_eq!(counting(3).collect::<Vec<_>>().await, [0, 1, 2]);
        let parsed: Vec<_> = parsed_items(vec!["1".into(), "x".into()]).collect().await;
        assert_eq!(parsed[0], Ok(1));
        assert!(matches!(parsed[1], Err(FetchError::Parse(_))));
        assert_eq!(pinned(2).collect::<Vec<_>>().await, [0, 1]);
        let words = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(boxed(&words).collect::<Vec<_>>().await, words);
        assert_eq!(local(2).collect::<Vec<_>>().await, [Ok(0), Ok(1)]);
        assert_eq!(client.items(2).collect::<Vec<_>>().await, [100, 101]);
    });
    assert_eq!(client.into_base(), 100);
}
