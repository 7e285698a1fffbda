//! Microsoft Graph (v1.0): service principal lookups by id, by `appId` and by `$filter`,
//! with a switch that makes every call answer 403 like an under-privileged principal.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{Req, Resp};
use crate::server::Shared;
use crate::token::{audience_ok, bearer};

const GRAPH_AUDIENCES: &[&str] = &[
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];

fn graph_error(status: StatusCode, code: &str, message: &str, req: &Req) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message, "innerError": {
            "date": crate::clock::rfc3339_now(),
            "request-id": uuid::Uuid::new_v4().to_string(),
            "client-request-id": req.header("client-request-id").unwrap_or_default()
        }}}),
    )
}

fn principals(shared: &Shared) -> Vec<Value> {
    let tenant = &shared.config.tenant_id;
    let mut out: Vec<Value> = shared
        .config
        .graph_service_principals
        .iter()
        .map(|sp| (sp.id.clone(), sp.app_id.clone(), sp.display_name.clone()))
        .chain(shared.config.principals.iter().map(|p| {
            (
                p.object_id.clone(),
                p.client_id.clone(),
                p.display_name.clone(),
            )
        }))
        .map(|(id, app, name)| {
            json!({
                "id": id,
                "appId": app,
                "displayName": name,
                "servicePrincipalNames": [app],
                "servicePrincipalType": "Application",
                "accountEnabled": true,
                "appOwnerOrganizationId": tenant
            })
        })
        .collect();
    out.dedup_by(|a, b| a["id"] == b["id"]);
    out
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

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let Some(token) = bearer(&req.headers) else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            req,
        );
    };
    match shared.signer.verify(token) {
        Ok(c)
            if audience_ok(
                &c,
                &[GRAPH_AUDIENCES[0], GRAPH_AUDIENCES[1], &shared.base_url],
            ) => {}
        Ok(_) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Invalid audience.",
                req,
            );
        }
        Err(_) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                req,
            );
        }
    }
    if shared.graph_forbidden() {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            req,
        );
    }
    if req.method != Method::GET {
        return graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Only GET is supported by this emulator.",
            req,
        );
    }
    let segs: Vec<String> = req.segs.iter().map(|s| s.to_string()).collect();
    let sps = principals(shared);
    let context = "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals";
    match segs.get(1).map(|s| s.as_str()) {
        Some(s) if s.eq_ignore_ascii_case("servicePrincipals") && segs.len() == 2 => {
            let items: Vec<Value> = match req.query_param("$filter") {
                None => sps,
                Some(f) => {
                    let Some((field, value)) = filter_value(f) else {
                        return graph_error(
                            StatusCode::BAD_REQUEST,
                            "Request_UnsupportedQuery",
                            "Unsupported or invalid query filter clause specified.",
                            req,
                        );
                    };
                    sps.into_iter()
                        .filter(|sp| match field.to_ascii_lowercase().as_str() {
                            "appid" => sp["appId"]
                                .as_str()
                                .is_some_and(|a| a.eq_ignore_ascii_case(&value)),
                            "displayname" => sp["displayName"] == json!(value),
                            "serviceprincipalnames" => {
                                sp["servicePrincipalNames"].as_array().is_some_and(|n| {
                                    n.iter().any(|x| {
                                        x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(&value))
                                    })
                                })
                            }
                            "id" => sp["id"]
                                .as_str()
                                .is_some_and(|a| a.eq_ignore_ascii_case(&value)),
                            _ => false,
                        })
                        .collect()
                }
            };
            Resp::json(
                StatusCode::OK,
                &json!({"@odata.context": context, "value": items}),
            )
        }
        Some(s)
            if s.to_ascii_lowercase()
                .starts_with("serviceprincipals(appid=") =>
        {
            let app = s["servicePrincipals(appId=".len()..]
                .trim_end_matches(')')
                .trim_matches('\'');
            match sps.into_iter().find(|sp| {
                sp["appId"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(app))
            }) {
                Some(mut sp) => {
                    sp["@odata.context"] = json!(format!("{context}/$entity"));
                    Resp::json(StatusCode::OK, &sp)
                }
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{app}' does not exist or one of its queried reference-property objects are not present."
                    ),
                    req,
                ),
            }
        }
        Some(s) if s.eq_ignore_ascii_case("servicePrincipals") && segs.len() == 3 => {
            let id = &segs[2];
            match sps.into_iter().find(|sp| {
                sp["id"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(id))
            }) {
                Some(mut sp) => {
                    sp["@odata.context"] = json!(format!("{context}/$entity"));
                    Resp::json(StatusCode::OK, &sp)
                }
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                    ),
                    req,
                ),
            }
        }
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segs.get(1).cloned().unwrap_or_default()
            ),
            req,
        ),
    }
}
