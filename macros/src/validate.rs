//! Checks a function against what `#[cacheow]` can wrap and decides how:
//! sync, async or stream, and which codec stores its outcome. Every
//! rejection is a spanned error that says what to change.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, GenericParam, LitStr, Pat, PathArguments, ReturnType, Signature, Type,
    TypeParamBound,
};

use crate::args::Args;

/// How the wrapped function is called, and so how its body is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sync,
    Async,
    /// A plain `fn` returning a stream; `boxed` when the declared type is a
    /// `Pin<Box<dyn Stream>>` (or `BoxStream`), which the result must be
    /// boxed into.
    Stream {
        boxed: bool,
    },
}

/// How an outcome (the return value, or each item of a stream) is stored.
pub(crate) struct Codec {
    /// `Result<T, E>` (by the last path segment): `Err` is stored as an
    /// error outcome, not as a value.
    pub(crate) fallible: bool,
    /// The return type, or the stream's item type.
    pub(crate) ty: Type,
    /// Types that must be serializable and deserializable, checked one by
    /// one so that the error points at the type at fault.
    pub(crate) values: Vec<Type>,
}

/// One non-`self` argument.
pub(crate) struct Arg {
    pub(crate) pat: Pat,
    pub(crate) ty: Type,
    /// Part of the call key (not listed in `ignore`).
    pub(crate) keyed: bool,
}

/// A function that `#[cacheow]` can wrap, and how.
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    pub(crate) codec: Codec,
    pub(crate) args: Vec<Arg>,
    pub(crate) name: Option<LitStr>,
    pub(crate) settings: Vec<(String, crate::args::Setting)>,
}

/// Collects every error instead of stopping at the first, so one build
/// shows all that needs changing.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// `value` if nothing was pushed, else every error, `value`'s last.
    fn finish<T>(self, value: syn::Result<T>) -> syn::Result<T> {
        match (self.0, value) {
            (None, value) => value,
            (Some(errors), Ok(_)) => Err(errors),
            (Some(mut errors), Err(last)) => {
                errors.combine(last);
                Err(errors)
            }
        }
    }
}

pub(crate) fn validate(args: Args, sig: &Signature) -> syn::Result<Plan> {
    let mut errors = Errors::default();
    check_signature(sig, &mut errors);
    let fn_args = collect_args(sig, &mut errors);
    let fn_args = apply_ignore(fn_args, &args.ignore, &mut errors);
    let plan = output(sig).map(|(kind, codec)| Plan {
        kind,
        codec,
        args: fn_args,
        name: args.name,
        settings: args.settings,
    });
    errors.finish(plan)
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.push(
            constness.span,
            "`#[cacheow]` cannot wrap a `const fn`: a recorded call cannot run at compile time; remove `const`",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi.span(),
            "`#[cacheow]` cannot wrap an `extern` function; wrap a plain Rust `fn` that calls it",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(
            variadic.span(),
            "`#[cacheow]` cannot wrap a variadic function",
        );
    }
    for param in &sig.generics.params {
        let what = match param {
            GenericParam::Lifetime(_) => continue,
            GenericParam::Type(_) => "type",
            GenericParam::Const(_) => "const",
        };
        errors.push(
            param.span(),
            format!(
                "`#[cacheow]` cannot wrap a generic function (this {what} parameter): calls are \
                 recorded per concrete function; wrap a concrete function that calls this one"
            ),
        );
    }
}

/// Arguments with the name `ignore` refers to them by (`None` for a pattern
/// like `(x, y): (u8, u8)`).
fn collect_args(sig: &Signature, errors: &mut Errors) -> Vec<(Option<String>, Arg)> {
    let mut out = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        if let Some(span) = find_impl(&typed.ty) {
            errors.push(
                span,
                "`#[cacheow]` needs concrete argument types, not `impl Trait`: use a concrete type \
                 (e.g. `String` instead of `impl Into<String>`)",
            );
        }
        let name = match &*typed.pat {
            Pat::Ident(ident) => Some(ident.ident.unraw().to_string()),
            _ => None,
        };
        out.push((
            name,
            Arg {
                pat: (*typed.pat).clone(),
                ty: (*typed.ty).clone(),
                keyed: true,
            },
        ));
    }
    out
}

fn apply_ignore(
    mut fn_args: Vec<(Option<String>, Arg)>,
    ignore: &[(String, Span)],
    errors: &mut Errors,
) -> Vec<Arg> {
    for (name, span) in ignore {
        if name == "self" {
            errors.push(
                *span,
                "`self` is never part of the call key; remove it from `ignore`",
            );
            continue;
        }
        if let Some((_, arg)) = fn_args
            .iter_mut()
            .find(|(n, _)| n.as_deref() == Some(name.as_str()))
        {
            arg.keyed = false;
            continue;
        }
        if let Some((_, arg)) = fn_args
            .iter()
            .find(|(n, arg)| n.is_none() && binds(&arg.pat, name))
        {
            let pat = compact(&arg.pat.to_token_stream().to_string());
            errors.push(
                *span,
                format!(
                    "`{name}` is bound inside the pattern `{pat}`; `ignore` takes whole arguments: \
                     bind that argument to a name and destructure it in the body"
                ),
            );
            continue;
        }
        let names: Vec<&str> = fn_args.iter().filter_map(|(n, _)| n.as_deref()).collect();
        let known = if names.is_empty() {
            "the function has no arguments bound to a plain name".to_owned()
        } else {
            format!("the arguments are: {}", names.join(", "))
        };
        errors.push(*span, format!("no argument named `{name}`; {known}"));
    }
    fn_args.into_iter().map(|(_, arg)| arg).collect()
}

/// `(x , y)` as a person writes it, `(x, y)`, for messages.
fn compact(tokens: &str) -> String {
    tokens
        .replace(" ,", ",")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace("& ", "&")
}

/// Whether `name` appears as an identifier anywhere in `pat`.
fn binds(pat: &Pat, name: &str) -> bool {
    fn walk(tokens: TokenStream, name: &str) -> bool {
        tokens.into_iter().any(|tree| match tree {
            TokenTree::Ident(ident) => ident.unraw() == name,
            TokenTree::Group(group) => walk(group.stream(), name),
            _ => false,
        })
    }
    walk(pat.to_token_stream(), name)
}

/// The span of the first `impl` keyword in a type. `impl` can only appear in
/// a type as `impl Trait`, so a token scan finds it at any depth.
fn find_impl(ty: &Type) -> Option<Span> {
    fn walk(tokens: TokenStream) -> Option<Span> {
        tokens.into_iter().find_map(|tree| match tree {
            TokenTree::Ident(ident) if ident == "impl" => Some(ident.span()),
            TokenTree::Group(group) => walk(group.stream()),
            _ => None,
        })
    }
    walk(ty.to_token_stream())
}

/// The kind of call and the codec of its outcome.
fn output(sig: &Signature) -> syn::Result<(Kind, Codec)> {
    let ret = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(&**ty),
    };
    if let Some((item, boxed)) = ret.and_then(stream_item) {
        if let Some(asyncness) = &sig.asyncness {
            return Err(syn::Error::new(
                asyncness.span,
                "`#[cacheow]` cannot wrap an `async fn` that returns a stream: return the stream \
                 from a plain `fn` (remove `async`) so each item can be recorded",
            ));
        }
        if let Some(span) = find_impl(item) {
            return Err(syn::Error::new(
                span,
                "`#[cacheow]` needs a concrete stream item type, not `impl Trait`",
            ));
        }
        return Ok((Kind::Stream { boxed }, codec(item)));
    }
    let kind = if sig.asyncness.is_some() {
        Kind::Async
    } else {
        Kind::Sync
    };
    let Some(ty) = ret else {
        // `()` needs no check, and has no span to report one at.
        return Ok((
            kind,
            Codec {
                fallible: false,
                ty: syn::parse_quote!(()),
                values: Vec::new(),
            },
        ));
    };
    if let Some(span) = find_impl(ty) {
        return Err(syn::Error::new(
            span,
            "`#[cacheow]` cannot wrap a function returning `impl Trait`: it must name the type \
             to record and replay it; return a concrete type, `impl Stream<Item = T>` for a \
             stream, or write an `async fn` instead of returning `impl Future`",
        ));
    }
    if let Type::Never(never) = strip(ty) {
        return Err(syn::Error::new(
            never.span(),
            "`#[cacheow]` cannot wrap a function that never returns: there is no outcome to record",
        ));
    }
    Ok((kind, codec(ty)))
}

/// `(item, boxed)` for the stream return types cacheow can record.
fn stream_item(ty: &Type) -> Option<(&Type, bool)> {
    match strip(ty) {
        Type::ImplTrait(imp) => stream_bound_item(imp.bounds.iter()).map(|item| (item, false)),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            if last.ident == "BoxStream" || last.ident == "LocalBoxStream" {
                return single_type_arg(&last.arguments).map(|item| (item, true));
            }
            if last.ident != "Pin" {
                return None;
            }
            let Type::Path(boxed) = strip(single_type_arg(&last.arguments)?) else {
                return None;
            };
            let box_segment = boxed.path.segments.last().filter(|s| s.ident == "Box")?;
            let Type::TraitObject(object) = strip(single_type_arg(&box_segment.arguments)?) else {
                return None;
            };
            stream_bound_item(object.bounds.iter()).map(|item| (item, true))
        }
        _ => None,
    }
}

/// `I` from a `Stream<Item = I>` bound among `bounds`.
fn stream_bound_item<'a>(mut bounds: impl Iterator<Item = &'a TypeParamBound>) -> Option<&'a Type> {
    bounds.find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last().filter(|s| s.ident == "Stream")?;
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Item" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// The only type argument in `<…>` (lifetimes aside).
fn single_type_arg(arguments: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some(first)
}

fn codec(ty: &Type) -> Codec {
    let result_args = match strip(ty) {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .filter(|s| s.ident == "Result")
            .map(|s| &s.arguments),
        _ => None,
    };
    let Some(arguments) = result_args else {
        return Codec {
            fallible: false,
            ty: ty.clone(),
            values: vec![ty.clone()],
        };
    };
    // `Result<T, E>` names both sides; an alias like `io::Result<T>` hides
    // `E` and may not even put `T` first, so nothing is named and the codec's
    // own bound reports a bad type.
    let values = match arguments {
        PathArguments::AngleBracketed(args) => {
            let types: Vec<Type> = args
                .args
                .iter()
                .filter_map(|arg| match arg {
                    GenericArgument::Type(ty) => Some(ty.clone()),
                    _ => None,
                })
                .collect();
            if types.len() == 2 { types } else { Vec::new() }
        }
        _ => Vec::new(),
    };
    Codec {
        fallible: true,
        ty: ty.clone(),
        values,
    }
}

/// Looks through parentheses and the invisible groups `macro_rules!` wraps
/// around a `$t:ty`.
fn strip(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(inner) => ty = &inner.elem,
            Type::Group(inner) => ty = &inner.elem,
            _ => return ty,
        }
    }
}
