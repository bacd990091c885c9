//! `POST /api/lookup` for HTTP: the method, URL, headers and body of a call
//! described in JSON, turned into its function and call key exactly as the
//! request path would, so the API can say whether it would replay.

use std::sync::Arc;

use cacheow_control::{LookedUp, Lookup};
use http::Uri;
use serde_json::{Map, Value};

use crate::call_key::{KeyInput, call_key};
use crate::forward::RequestFilter;
use crate::headers::strip_hop_by_hop;
use crate::outcome_http::{body_from_json, headers_from_json};
use crate::route::RouteTable;

/// Looks calls up through the proxy's routes and key rules.
pub(crate) struct HttpLookup {
    pub(crate) routes: Arc<RouteTable>,
}

impl Lookup for HttpLookup {
    fn lookup(&self, call: &Map<String, Value>) -> Result<LookedUp, (String, String)> {
        let wrong = |field: &str, reason: String| (field.to_owned(), reason);
        if let Some(unknown) = call
            .keys()
            .find(|k| !["method", "url", "headers", "body"].contains(&k.as_str()))
        {
            return Err(wrong(
                unknown,
                format!("unknown field `{unknown}`; a lookup takes method, url, headers and body"),
            ));
        }
        let method = match call.get("method") {
            None | Some(Value::Null) => "GET".to_owned(),
            Some(Value::String(method)) if !method.is_empty() => method.to_ascii_uppercase(),
            Some(other) => {
                return Err(wrong(
                    "method",
                    format!("`method` must be a string like \"POST\", got {other}"),
                ));
            }
        };
        let url = call
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| wrong("url", "`url` is required: the absolute URL of the call, like \"https://api.example.com/v1/chat\"".into()))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| wrong("url", format!("`{url}` is not a URL: {e}")))?;
        let (Some(scheme @ ("http" | "https")), Some(authority)) =
            (uri.scheme_str(), uri.authority())
        else {
            return Err(wrong(
                "url",
                format!("`{url}` must be an absolute http or https URL"),
            ));
        };
        let authority = authority.as_str().to_ascii_lowercase();
        let mut headers = headers_from_json(call.get("headers").unwrap_or(&Value::Null))
            .map_err(|reason| wrong("headers", reason))?;
        // Internal: as on the request path, this hop's headers are no part
        // of the call.
        strip_hop_by_hop(&mut headers);
        let body = body_from_json(call.get("body").unwrap_or(&Value::Null))
            .map_err(|reason| wrong("body", reason))?;
        let route = self.routes.resolve(&method, scheme, &authority, uri.path());
        let key = call_key(
            &route.keys,
            &KeyInput {
                method: &method,
                scheme,
                host: &authority,
                path: uri.path(),
                query: uri.query(),
                headers: &headers,
                body: &body,
            },
        );
        Ok(LookedUp {
            name: route.name,
            key,
            filter: Box::new(RequestFilter { headers }),
        })
    }
}
