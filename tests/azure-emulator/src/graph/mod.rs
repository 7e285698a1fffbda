//! Microsoft Graph (v1.0): service principals and applications (with password credentials),
//! behind Graph's token check, errors in Graph's shape, and a switch that makes every call
//! answer 403 like an under-privileged principal.

mod applications;
pub(crate) mod directory;
mod service_principals;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::http::{Req, Resp};
use crate::server::Shared;
use crate::token::{audience_ok, bearer};

const GRAPH_AUDIENCES: &[&str] = &[
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];

/// `https://graph.microsoft.com/v1.0/$metadata#…`.
const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// A Graph error: `{"error":{"code","message","innerError":{date,request-id,client-request-id}}}`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str, req: &Req) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message, "innerError": {
            "date": crate::clock::rfc3339_now(),
            "request-id": uuid::Uuid::new_v4().to_string(),
            "client-request-id": req.header("client-request-id").unwrap_or_default()
        }}}),
    )
}

/// 404 `Request_ResourceNotFound` for an object id or key.
fn not_found(what: &str, req: &Req) -> Resp {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
        req,
    )
}

/// 400 `Request_BadRequest`.
fn bad_request(message: &str, req: &Req) -> Resp {
    graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", message, req)
}

/// The JSON object of a POST body, or Graph's answer to a missing or malformed one.
fn json_body(req: &Req) -> Result<Value, Resp> {
    if req.body.is_empty() {
        return Err(bad_request("Empty Payload. JSON content expected.", req));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(bad_request(
            "Invalid request body: a JSON object is expected.",
            req,
        )),
    }
}

/// The quoted value in `field eq 'value'` (or the `any(c:c eq 'value')` form).
fn filter_value(filter: &str) -> Option<(String, String)> {
    let f = filter.trim();
    let (lhs, rest) = f.split_once(" eq ")?;
    let value = rest
        .trim()
        .trim_end_matches(')')
        .trim_matches('\'')
        .to_string();
    let field = if lhs
        .to_ascii_lowercase()
        .starts_with("serviceprincipalnames/any")
    {
        "servicePrincipalNames".to_string()
    } else {
        lhs.trim().to_string()
    };
    Some((field, value))
}

/// The items whose `field` (one of `fields`, case-insensitive) equals `value`, for a
/// `$filter`; Graph's 400 for a filter it cannot read.
fn filtered(
    items: Vec<Value>,
    filter: Option<&str>,
    fields: &[&str],
    req: &Req,
) -> Result<Vec<Value>, Resp> {
    let Some(f) = filter else { return Ok(items) };
    let unsupported = || {
        graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported or invalid query filter clause specified.",
            req,
        )
    };
    let (field, value) = filter_value(f).ok_or_else(unsupported)?;
    let field = fields
        .iter()
        .find(|k| k.eq_ignore_ascii_case(&field))
        .ok_or_else(unsupported)?;
    let matches = |v: &Value| match v {
        Value::String(s) => {
            // Display names compare exactly; ids case-insensitively.
            if *field == "displayName" {
                s == &value
            } else {
                s.eq_ignore_ascii_case(&value)
            }
        }
        Value::Array(a) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(&value))),
        _ => false,
    };
    Ok(items.into_iter().filter(|i| matches(&i[*field])).collect())
}

/// Checks the token (a Graph audience) and the 403 switch.
fn authorize(shared: &Shared, req: &Req) -> Option<Resp> {
    let Some(token) = bearer(&req.headers) else {
        return Some(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            req,
        ));
    };
    match shared.signer.verify(token) {
        Ok(c)
            if audience_ok(
                &c,
                &[GRAPH_AUDIENCES[0], GRAPH_AUDIENCES[1], &shared.base_url],
            ) => {}
        Ok(_) => {
            return Some(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Invalid audience.",
                req,
            ));
        }
        Err(_) => {
            return Some(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                req,
            ));
        }
    }
    if shared.graph_forbidden() {
        return Some(graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            req,
        ));
    }
    None
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    if let Some(denied) = authorize(shared, req) {
        return denied;
    }
    let collection = req.seg_lc(1).unwrap_or_default();
    if collection.starts_with("serviceprincipals") {
        service_principals::handle(shared, req)
    } else if collection.starts_with("applications") {
        applications::handle(shared, req)
    } else {
        graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                req.segs.get(1).cloned().unwrap_or_default()
            ),
            req,
        )
    }
}

/// 405 for a method a Graph path does not take.
fn method_not_allowed(req: &Req) -> Resp {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        &format!(
            "The method '{}' is not supported on this resource.",
            req.method
        ),
        req,
    )
}

/// The key inside `collection(appId='…')`, if the segment has that form.
fn alternate_key<'a>(seg: &'a str, collection: &str) -> Option<&'a str> {
    let prefix = format!("{collection}(appid=");
    seg.to_ascii_lowercase()
        .starts_with(&prefix)
        .then(|| seg[prefix.len()..].trim_end_matches(')').trim_matches('\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_alternate_keys_parse() {
        assert_eq!(
            filter_value("appId eq 'abc'"),
            Some(("appId".into(), "abc".into()))
        );
        assert_eq!(
            filter_value("servicePrincipalNames/any(c:c eq 'x')"),
            Some(("servicePrincipalNames".into(), "x".into()))
        );
        assert_eq!(
            alternate_key("servicePrincipals(appId='a-b')", "serviceprincipals"),
            Some("a-b")
        );
        assert_eq!(
            alternate_key("servicePrincipals", "serviceprincipals"),
            None
        );
    }
}
