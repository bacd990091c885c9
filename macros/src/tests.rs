//! Option parsing, the choice of kind and codec, and every rejection, on
//! token streams: no compiler run, no runtime.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::ItemFn;

use crate::args::Args;
use crate::validate::{Kind, Plan, validate};

fn plan(args: TokenStream, item: TokenStream) -> syn::Result<Plan> {
    let function: ItemFn = syn::parse2(item).expect("test input is a fn");
    Args::parse(args).and_then(|args| validate(args, &function.sig))
}

fn messages(result: syn::Result<Plan>) -> Vec<String> {
    match result {
        Ok(plan) => panic!("expected an error, got a {:?} plan", plan.kind),
        Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn message(result: syn::Result<Plan>) -> String {
    let mut all = messages(result);
    assert_eq!(all.len(), 1, "expected one error, got {all:?}");
    all.remove(0)
}

fn tokens(t: &impl ToTokens) -> String {
    t.to_token_stream().to_string().replace(' ', "")
}

/// The expansion without whitespace, for substring checks.
fn expanded(args: TokenStream, item: TokenStream) -> String {
    crate::expand::cacheow(args, item)
        .to_string()
        .replace(' ', "")
}

// === options ===

#[test]
fn options_accept_the_documented_forms() {
    for args in [
        quote!(),
        quote!(ignore = "a"),
        quote!(name = "n"),
        quote!(ignore = "a", name = "n"),
        quote!(
            ttl = "1h",
            stale_if_error = "forever",
            cache_if = "ok",
            coalesce = false
        ),
        quote!(stale_while_revalidate = "1m", max_upstream_calls = "100/1h"),
    ] {
        Args::parse(args.clone()).unwrap_or_else(|e| panic!("{args}: {e}"));
    }
    let args = Args::parse(quote!(ignore = " a,b ,  r#c ", name = "my::stable::name")).unwrap();
    let names: Vec<&str> = args.ignore.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(args.name.unwrap().value(), "my::stable::name");
}

#[test]
fn options_reject_misuse_with_a_fix() {
    let error = |args: TokenStream| Args::parse(args).err().expect("an error").to_string();
    let unknown = error(quote!(foo = "x"));
    assert!(
        unknown.starts_with("unknown option `foo`; expected `ignore = \"a, b\"`, `name = \"…\"`")
            && unknown.contains("`ttl`"),
        "{unknown}"
    );
    assert!(error(quote!(ttl = "1h", ttl = "2h")).starts_with("duplicate option `ttl`"));
    assert_eq!(
        error(quote!(ttl = 30)),
        "expected a string, as in `ttl = \"…\"`"
    );
    assert_eq!(
        error(quote!(coalesce = "no")),
        "expected true or false, as in `coalesce = false`"
    );
    assert!(error(quote!(ignore = "a", ignore = "b")).starts_with("duplicate option `ignore`"));
    assert!(error(quote!(name = "a", name = "b")).starts_with("duplicate option `name`"));
    assert!(error(quote!(name = " ")).starts_with("`name` is empty"));
    assert!(error(quote!(ignore = "a,,b")).starts_with("`ignore` has an empty name"));
    assert_eq!(
        error(quote!(ignore = "a, a")),
        "`a` is listed twice in `ignore`"
    );
    assert_eq!(
        error(quote!(ignore = a)),
        "expected a string, as in `ignore = \"a, b\"`"
    );
    assert_eq!(
        error(quote!(name)),
        "expected `name = \"my::stable::name\"`"
    );
}

// === kind and codec ===

#[test]
fn plain_and_unit_returns() {
    let p = plan(
        quote!(),
        quote!(
            fn f(a: u8) -> Vec<u8> {
                vec![a]
            }
        ),
    )
    .unwrap();
    assert_eq!(p.kind, Kind::Sync);
    assert!(!p.codec.fallible);
    assert_eq!(tokens(&p.codec.ty), "Vec<u8>");
    assert_eq!(p.codec.values.len(), 1);

    let p = plan(
        quote!(),
        quote!(
            async fn f() {}
        ),
    )
    .unwrap();
    assert_eq!(p.kind, Kind::Async);
    assert_eq!(tokens(&p.codec.ty), "()");
    assert!(p.codec.values.is_empty());

    let p = plan(
        quote!(),
        quote!(
            fn f() -> Option<Result<u8, String>> {
                None
            }
        ),
    )
    .unwrap();
    assert!(
        !p.codec.fallible,
        "only a type that is itself a Result is fallible"
    );
}

#[test]
fn result_returns_are_fallible() {
    for (ret, named) in [
        (quote!(Result<u8, String>), 2),
        (quote!(std::result::Result<u8, String>), 2),
        (quote!(io::Result<u8>), 0),
        (quote!(anyhow::Result<()>), 0),
    ] {
        let p = plan(quote!(), quote!(fn f() -> #ret { todo!() })).unwrap();
        assert!(p.codec.fallible, "{ret}");
        assert_eq!(
            p.codec.values.len(),
            named,
            "{ret}: only `Result<T, E>` names its sides"
        );
    }
}

#[test]
fn stream_forms_pick_the_item_codec() {
    for (ret, boxed, item, fallible) in [
        (quote!(impl Stream<Item = u8>), false, "u8", false),
        (
            quote!(impl futures::Stream<Item = Result<u8, E>> + Send + Unpin + 'a),
            false,
            "Result<u8,E>",
            true,
        ),
        (
            quote!(Pin<Box<dyn Stream<Item = u8> + Send>>),
            true,
            "u8",
            false,
        ),
        (
            quote!(std::pin::Pin<Box<dyn Stream<Item = io::Result<u8>>>>),
            true,
            "io::Result<u8>",
            true,
        ),
        (quote!(BoxStream<'a, String>), true, "String", false),
        (
            quote!(LocalBoxStream<'static, Result<u8, E>>),
            true,
            "Result<u8,E>",
            true,
        ),
    ] {
        let p = plan(quote!(), quote!(fn f<'a>(a: &'a str) -> #ret { todo!() })).unwrap();
        assert_eq!(p.kind, Kind::Stream { boxed }, "{ret}");
        assert_eq!(tokens(&p.codec.ty), item, "{ret}");
        assert_eq!(p.codec.fallible, fallible, "{ret}");
    }
}

#[test]
fn receivers_are_never_arguments() {
    let p = plan(
        quote!(ignore = "b"),
        quote!(
            fn f(&mut self, a: u8, (x, y): (u8, u8), mut b: u8) -> u8 {
                a
            }
        ),
    )
    .unwrap();
    let keyed: Vec<bool> = p.args.iter().map(|a| a.keyed).collect();
    assert_eq!(keyed, [true, true, false]);
}

// === rejections ===

#[test]
fn generic_type_and_const_parameters_are_rejected_lifetimes_are_not() {
    plan(
        quote!(),
        quote!(
            fn f<'a>(a: &'a str) -> String {
                a.into()
            }
        ),
    )
    .unwrap();
    let all = messages(plan(
        quote!(),
        quote!(
            fn f<T: Serialize, const N: usize>(a: T) {}
        ),
    ));
    assert_eq!(all.len(), 2);
    assert!(
        all[0].contains("cannot wrap a generic function (this type parameter)"),
        "{all:?}"
    );
    assert!(all[1].contains("(this const parameter)"), "{all:?}");
    assert!(all[0].ends_with("wrap a concrete function that calls this one"));
}

#[test]
fn impl_trait_arguments_are_rejected_at_any_depth() {
    for ty in [
        quote!(impl Into<String>),
        quote!(Vec<impl Display>),
        quote!(&(u8, impl Fn())),
    ] {
        let m = message(plan(quote!(), quote!(fn f(a: #ty) {})));
        assert!(
            m.contains("use a concrete type (e.g. `String` instead of `impl Into<String>`)"),
            "{ty}: {m}"
        );
    }
}

#[test]
fn unsupported_fn_flavours_are_rejected() {
    assert!(
        message(plan(
            quote!(),
            quote!(
                const fn f() {}
            )
        ))
        .contains("cannot wrap a `const fn`")
    );
    assert!(
        message(plan(
            quote!(),
            quote!(
                extern "C" fn f() {}
            )
        ))
        .contains("cannot wrap an `extern` function")
    );
    let all = messages(plan(
        quote!(),
        quote!(
            unsafe extern "C" fn f(a: u8, ...) {}
        ),
    ));
    assert!(all.iter().any(|m| m.contains("variadic")), "{all:?}");
    assert!(
        message(plan(
            quote!(),
            quote!(
                fn f() -> ! {
                    loop {}
                }
            )
        ))
        .contains("never returns")
    );
}

#[test]
fn impl_trait_returns_other_than_streams_are_rejected() {
    for ret in [
        quote!(impl Future<Output = u8>),
        quote!(impl Iterator<Item = u8>),
        quote!(Vec<impl Display>),
    ] {
        let m = message(plan(quote!(), quote!(fn f() -> #ret { todo!() })));
        assert!(
            m.contains("cannot wrap a function returning `impl Trait`"),
            "{ret}: {m}"
        );
    }
    let m = message(plan(
        quote!(),
        quote!(
            fn f() -> impl Stream<Item = impl Display> {
                todo!()
            }
        ),
    ));
    assert!(m.contains("concrete stream item type"), "{m}");
}

#[test]
fn async_stream_functions_are_rejected() {
    let m = message(plan(
        quote!(),
        quote!(
            async fn f() -> BoxStream<'static, u8> {
                todo!()
            }
        ),
    ));
    assert!(
        m.contains("return the stream from a plain `fn` (remove `async`)"),
        "{m}"
    );
}

#[test]
fn ignore_must_name_a_whole_argument() {
    let item = quote!(
        fn f(&self, a: u8, b: u8, (x, y): (u8, u8)) {}
    );
    assert_eq!(
        message(plan(quote!(ignore = "c"), item.clone())),
        "no argument named `c`; the arguments are: a, b"
    );
    assert!(
        message(plan(quote!(ignore = "self"), item.clone()))
            .starts_with("`self` is never part of the call key")
    );
    assert!(
        message(plan(quote!(ignore = "x"), item.clone()))
            .starts_with("`x` is bound inside the pattern `(x, y)`")
    );
    assert!(
        message(plan(
            quote!(ignore = "a"),
            quote!(
                fn f() {}
            )
        ))
        .ends_with("the function has no arguments bound to a plain name")
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let all = messages(plan(
        quote!(ignore = "z"),
        quote!(
            const fn f<T>(a: impl Display) -> impl Display {
                a
            }
        ),
    ));
    assert_eq!(all.len(), 5, "{all:?}");
}

// === expansion ===

#[test]
fn not_a_function_is_an_error_that_keeps_the_item() {
    let out = expanded(
        quote!(),
        quote!(
            struct S;
        ),
    );
    assert!(out.contains("compile_error!"), "{out}");
    assert!(out.contains("wrapsfunctionswithabody"), "{out}");
    assert!(out.ends_with("structS;"), "{out}");
}

#[test]
fn a_rejected_function_is_kept_as_written() {
    let out = expanded(
        quote!(bogus = "1"),
        quote!(
            fn f<T>(a: T) -> u8 {
                1
            }
        ),
    );
    assert_eq!(out.matches("compile_error!").count(), 2, "{out}");
    assert!(out.ends_with("fnf<T>(a:T)->u8{1}"), "{out}");
}

#[test]
fn sync_expansion_keys_arguments_and_rebinds_patterns() {
    let out = expanded(
        quote!(ignore = "c"),
        quote!(
            #[inline]
            pub fn f(a: u8, (x, y): (u8, u8), mut c: String) -> Result<u8, E> {
                #![allow(unused)]
                Ok(a)
            }
        ),
    );
    assert!(out.starts_with("#[inline]pubfnf(__cacheow_arg0:u8,__cacheow_arg1:(u8,u8),__cacheow_arg2:String)->Result<u8,E>{#![allow(unused)]"), "{out}");
    assert!(out.contains("FunctionKind::Sync"), "{out}");
    assert!(out.contains("identity_of(&__cacheow_identity)"), "{out}");
    assert!(out.contains("__cacheow_key.arg(&__cacheow_arg0);"), "{out}");
    assert!(out.contains("__cacheow_key.arg(&__cacheow_arg1);"), "{out}");
    assert!(
        !out.contains("__cacheow_key.arg(&__cacheow_arg2);"),
        "ignored: {out}"
    );
    assert!(
        out.contains("assert_return::<u8>();::cacheow::__private::assert_return::<E>();"),
        "{out}"
    );
    assert!(out.contains("letmut__cacheow_body=move||->Result<u8,E>{leta=__cacheow_arg0;let(x,y)=__cacheow_arg1;letmutc=__cacheow_arg2;Ok(a)}"), "{out}");
    assert!(
        out.contains("run_sync::<::cacheow::__private::Fallible<Result<u8,E>>>(__cacheow_body)"),
        "{out}"
    );
}

#[test]
fn async_expansion_awaits_and_pins_the_output_type() {
    let out = expanded(
        quote!(name = "stable"),
        quote!(
            async fn f(&self) -> u8 {
                self.0
            }
        ),
    );
    assert!(
        out.contains("fn__cacheow_identity()->&'staticstr{\"stable\"}"),
        "{out}"
    );
    assert!(out.contains("FunctionKind::Async"), "{out}");
    assert!(
        out.contains("move||{::cacheow::__private::typed_future::<u8,_>(asyncmove{self.0})}"),
        "{out}"
    );
    assert!(out.contains("None=>__cacheow_body().await"), "{out}");
    assert!(
        out.contains("run_async::<::cacheow::__private::Plain<u8>,_>(__cacheow_body).await"),
        "{out}"
    );
}

#[test]
fn stream_expansion_boxes_only_boxed_forms() {
    let out = expanded(
        quote!(),
        quote!(
            fn f(a: u8) -> impl Stream<Item = u8> {
                iter([a])
            }
        ),
    );
    assert!(out.contains("FunctionKind::Stream"), "{out}");
    assert!(
        out.contains("move||{leta=__cacheow_arg0;iter([a])}"),
        "{out}"
    );
    assert!(out.ends_with("::cacheow::__private::stream::<::cacheow::__private::Plain<u8>,_>(__cacheow_call,__cacheow_body)}"), "{out}");

    let out = expanded(
        quote!(),
        quote!(
            fn f() -> BoxStream<'static, io::Result<u8>> {
                todo!()
            }
        ),
    );
    assert!(out.contains("::std::boxed::Box::pin(::cacheow::__private::stream::<::cacheow::__private::Fallible<io::Result<u8>>,_>"), "{out}");
}
