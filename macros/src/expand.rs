//! Turns a validated function into one whose calls go through cacheow's
//! runtime. Generated code names the runtime only by absolute
//! `::cacheow::__private::…` paths and its locals `__cacheow_*`, so it
//! cannot clash with the user's names.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, FnArg, ItemFn, ReturnType};

use crate::args::{Args, Setting};
use crate::validate::{Kind, Plan, validate};

/// The whole attribute: on any error, the error plus the function as it was
/// written, so that the build reports only what `#[cacheow]` rejected and
/// not every call site of a function that vanished.
pub(crate) fn cacheow(args: TokenStream, item: TokenStream) -> TokenStream {
    let Ok(function) = syn::parse2::<ItemFn>(item.clone()) else {
        let error = syn::Error::new(
            Span::call_site(),
            "`#[cacheow]` wraps functions with a body: put it on a `fn` or `async fn` \
             (for a trait method, on the method in the `impl`)",
        )
        .to_compile_error();
        return quote!(#error #item);
    };
    let plan = match Args::parse(args) {
        Ok(args) => validate(args, &function.sig),
        Err(mut error) => {
            // Still check the signature, so one build shows every problem.
            if let Err(more) = validate(Args::default(), &function.sig) {
                error.combine(more);
            }
            Err(error)
        }
    };
    match plan {
        Ok(plan) => expand(function, &plan),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #function)
        }
    }
}

pub(crate) fn expand(function: ItemFn, plan: &Plan) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    let (outer, inner): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));

    // The signature takes plain names; the body rebinds the user's patterns
    // inside the closure, after the key has borrowed the arguments.
    let mut idents: Vec<Ident> = Vec::new();
    for input in &mut sig.inputs {
        if let FnArg::Typed(typed) = input {
            let ident = format_ident!("__cacheow_arg{}", idents.len());
            *typed.pat = syn::parse_quote!(#ident);
            idents.push(ident);
        }
    }

    let key_args = plan
        .args
        .iter()
        .zip(&idents)
        .filter(|(arg, _)| arg.keyed)
        .map(|(arg, ident)| {
            // The error names the type; the caret goes under the argument.
            let span = at(&arg.pat);
            let ty = respan(&arg.ty, span);
            let ident = Ident::new(&ident.to_string(), span);
            quote_spanned! {span=>
                ::cacheow::__private::assert_key_arg::<#ty>();
                __cacheow_key.arg(&#ident);
            }
        });
    let lets = plan.args.iter().zip(&idents).map(|(arg, ident)| {
        let pat = &arg.pat;
        quote!(let #pat = #ident;)
    });
    let stmts = &block.stmts;
    let body = quote!(#(#lets)* #(#stmts)*);

    let ret_span = at(&plan.codec.ty);
    let codec_ty = respan(&plan.codec.ty, ret_span);
    let codec = if plan.codec.fallible {
        quote_spanned!(ret_span=> ::cacheow::__private::Fallible<#codec_ty>)
    } else {
        quote_spanned!(ret_span=> ::cacheow::__private::Plain<#codec_ty>)
    };
    let return_checks = plan
        .codec
        .values
        .iter()
        .map(|ty| respan(ty, ret_span))
        .map(|ty| quote_spanned!(ret_span=> ::cacheow::__private::assert_return::<#ty>();));

    let settings = plan.settings.iter().map(|(key, setting)| match setting {
        Setting::Text(text) => quote!((#key, ::cacheow::__private::SettingValue::Text(#text))),
        Setting::Flag(flag) => quote!((#key, ::cacheow::__private::SettingValue::Flag(#flag))),
    });
    let identity = match &plan.name {
        Some(name) => quote!(#name),
        None => quote!(::cacheow::__private::identity_of(&__cacheow_identity)),
    };

    let (kind, closure, call) = match plan.kind {
        Kind::Sync => {
            // No annotation for `()`: `-> ()` would only draw lints.
            let ret = match &sig.output {
                ReturnType::Default => quote!(),
                ReturnType::Type(arrow, ty) => quote!(#arrow #ty),
            };
            // A body that mutates through `&mut self` makes the closure
            // `FnMut`, and calling one needs a `mut` binding.
            let closure = quote! {
                #[allow(unused_mut)]
                let mut __cacheow_body = move || #ret { #body };
            };
            let run = quote_spanned!(ret_span=> __cacheow_call.run_sync::<#codec>(__cacheow_body));
            let call = quote! {
                match __cacheow_call {
                    ::core::option::Option::None => __cacheow_body(),
                    ::core::option::Option::Some(__cacheow_call) => #run,
                }
            };
            (quote!(Sync), closure, call)
        }
        Kind::Async => {
            // The declared output type lets `?` inside the block infer.
            let closure = quote! {
                let __cacheow_body = move || {
                    ::cacheow::__private::typed_future::<#codec_ty, _>(async move { #body })
                };
            };
            let run = quote_spanned! {ret_span=>
                __cacheow_call.run_async::<#codec, _>(__cacheow_body).await
            };
            let call = quote! {
                match __cacheow_call {
                    ::core::option::Option::None => __cacheow_body().await,
                    ::core::option::Option::Some(__cacheow_call) => #run,
                }
            };
            (quote!(Async), closure, call)
        }
        Kind::Stream { boxed } => {
            // No annotation: `impl Stream` cannot be written on a closure.
            let closure = quote!(let __cacheow_body = move || { #body };);
            let stream = quote_spanned! {ret_span=>
                ::cacheow::__private::stream::<#codec, _>(__cacheow_call, __cacheow_body)
            };
            let call = if boxed {
                quote!(::std::boxed::Box::pin(#stream))
            } else {
                stream
            };
            (quote!(Stream), closure, call)
        }
    };

    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            fn __cacheow_identity() -> &'static str {
                #identity
            }
            static __CACHEOW_SITE: ::cacheow::__private::Site = ::cacheow::__private::Site::new(
                ::cacheow::__private::FunctionKind::#kind,
                __cacheow_identity,
                &[#(#settings),*],
            );
            #(#return_checks)*
            let __cacheow_call = __CACHEOW_SITE.start(|__cacheow_key| {
                #(#key_args)*
            });
            #closure
            #call
        }
    }
}

// Internal: each check on a type (the `assert_*` call, the key's `arg`
// call, each use of the codec) is written entirely at one span: the
// argument's or the return type's location, with the call site's hygiene.
// rustc drops a repeated error at an identical span, so a bad type is
// reported once, there, with the runtime's message. The call site's hygiene
// keeps generated names resolving to generated locals even when the
// function comes from a `macro_rules!`; respanning the user's type tokens
// moves them but does not change how they resolve (paths are not hygienic).

/// The location of `node` with the call site's hygiene.
fn at(node: &impl Spanned) -> Span {
    Span::call_site().located_at(node.span())
}

/// `tokens` with every token at `span`.
fn respan(tokens: &impl ToTokens, span: Span) -> TokenStream {
    tokens
        .to_token_stream()
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), respan(&group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}
