//! The options inside `#[cacheow(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::LitStr;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;

const EXPECTED: &str = "expected `ignore = \"a, b\"`, `name = \"…\"`, or a cache setting: `ttl`, `stale_while_revalidate`, `stale_if_error`, `cache_if`, `max_upstream_calls` (strings) or `coalesce` (true or false)";

/// Cache settings written as strings, as in the config file and the API.
const TEXT_SETTINGS: [&str; 5] = [
    "ttl",
    "stale_while_revalidate",
    "stale_if_error",
    "cache_if",
    "max_upstream_calls",
];

/// One cache setting of the function, checked when cacheow first sees it.
pub(crate) enum Setting {
    Text(LitStr),
    Flag(syn::LitBool),
}

/// What the attribute asked for, syntactically valid but not yet checked
/// against the function (that is `validate`'s job).
#[derive(Default)]
pub(crate) struct Args {
    /// Argument names left out of the call key, each with the span of the
    /// string it came from (a span cannot point inside a string on stable).
    pub(crate) ignore: Vec<(String, Span)>,
    /// A stable identity replacing the function's path.
    pub(crate) name: Option<LitStr>,
    /// Cache settings, by name, in the order written.
    pub(crate) settings: Vec<(String, Setting)>,
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        let mut ignore_seen = false;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("ignore") {
                if ignore_seen {
                    return Err(meta.error(
                        "duplicate option `ignore`; list every name in one `ignore = \"a, b\"`",
                    ));
                }
                ignore_seen = true;
                let lit = string_value(&meta, "ignore = \"a, b\"")?;
                args.ignore = ignore_list(&lit)?;
                Ok(())
            } else if meta.path.is_ident("name") {
                if args.name.is_some() {
                    return Err(meta.error("duplicate option `name`; give it once"));
                }
                let lit = string_value(&meta, "name = \"my::stable::name\"")?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`name` is empty; give a stable name like `name = \"billing::fetch_invoice\"`, or drop the option to use the function's path",
                    ));
                }
                args.name = Some(lit);
                Ok(())
            } else if let Some(key) = TEXT_SETTINGS.iter().find(|k| meta.path.is_ident(k)) {
                if args.settings.iter().any(|(seen, _)| seen == key) {
                    return Err(meta.error(format!("duplicate option `{key}`; give it once")));
                }
                let lit = string_value(&meta, &format!("{key} = \"…\""))?;
                args.settings.push(((*key).to_owned(), Setting::Text(lit)));
                Ok(())
            } else if meta.path.is_ident("coalesce") {
                if args.settings.iter().any(|(seen, _)| seen == "coalesce") {
                    return Err(meta.error("duplicate option `coalesce`; give it once"));
                }
                let value = meta
                    .value()
                    .map_err(|_| meta.error("expected `coalesce = false`"))?;
                let flag = value.parse::<syn::LitBool>().map_err(|e| {
                    syn::Error::new(e.span(), "expected true or false, as in `coalesce = false`")
                })?;
                args.settings
                    .push(("coalesce".to_owned(), Setting::Flag(flag)));
                Ok(())
            } else {
                let option = meta.path.get_ident().map_or_else(
                    || quote::ToTokens::to_token_stream(&meta.path).to_string(),
                    ToString::to_string,
                );
                Err(meta.error(format!("unknown option `{option}`; {EXPECTED}")))
            }
        });
        parser.parse2(tokens)?;
        Ok(args)
    }
}

fn string_value(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<LitStr> {
    let value = meta
        .value()
        .map_err(|_| meta.error(format!("expected `{example}`")))?;
    value
        .parse::<LitStr>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected a string, as in `{example}`")))
}

/// Splits `"a, b"` into names, refusing empty entries and repeats so that a
/// typo cannot silently leave an argument in the key.
fn ignore_list(lit: &LitStr) -> syn::Result<Vec<(String, Span)>> {
    let value = lit.value();
    let mut names: Vec<(String, Span)> = Vec::new();
    for raw in value.split(',') {
        let name = raw.trim();
        let name = name.strip_prefix("r#").unwrap_or(name);
        if name.is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                "`ignore` has an empty name; list argument names separated by commas, as in `ignore = \"a, b\"`",
            ));
        }
        if names.iter().any(|(seen, _)| seen == name) {
            return Err(syn::Error::new(
                lit.span(),
                format!("`{name}` is listed twice in `ignore`"),
            ));
        }
        names.push((name.to_owned(), lit.span()));
    }
    Ok(names)
}
