//! Graph applications: create, list with `$filter`, get by id or `appId`, delete (with its
//! service principal), and `addPassword` / `removePassword`. A new password's `secretText`
//! is in the `addPassword` answer only; the directory keeps its digest.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::directory::{Application, Directory};
use super::{
    METADATA, alternate_key, bad_request, filtered, json_body, method_not_allowed, not_found,
};
use crate::http::{Req, Resp};
use crate::server::Shared;

fn app_json(app: &Application, tenant: &str) -> Value {
    json!({
        "id": app.id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "createdDateTime": app.created,
        "publisherDomain": format!("{tenant}.onmicrosoft.com"),
        "signInAudience": "AzureADMyOrg",
        "passwordCredentials": app.passwords.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
        "keyCredentials": [],
        "identifierUris": [],
        "tags": app.tags
    })
}

fn entity(mut v: Value) -> Value {
    v["@odata.context"] = json!(format!("{METADATA}#applications/$entity"));
    v
}

pub(super) fn handle(shared: &Shared, req: &Req) -> Resp {
    let tenant = shared.config.tenant_id.clone();
    let seg = req.segs.get(1).map(String::as_str).unwrap_or_default();
    let action = req.seg_lc(3);
    match (&req.method, req.segs.len()) {
        (&Method::GET, 2) => {
            let dir = shared.lock_directory();
            if let Some(app_id) = alternate_key(seg, "applications") {
                return match dir.app_by_app_id(app_id) {
                    Some(app) => Resp::json(StatusCode::OK, &entity(app_json(app, &tenant))),
                    None => not_found(app_id, req),
                };
            }
            let all = dir.apps.iter().map(|a| app_json(a, &tenant)).collect();
            match filtered(
                all,
                req.query_param("$filter"),
                &["displayName", "appId", "id"],
                req,
            ) {
                Ok(items) => Resp::json(
                    StatusCode::OK,
                    &json!({"@odata.context": format!("{METADATA}#applications"), "value": items}),
                ),
                Err(resp) => resp,
            }
        }
        (&Method::POST, 2) => create(shared, req),
        (&Method::GET, 3) => match shared.lock_directory().app(&req.segs[2]) {
            Some(app) => Resp::json(StatusCode::OK, &entity(app_json(app, &tenant))),
            None => not_found(&req.segs[2], req),
        },
        (&Method::DELETE, 3) => {
            let mut dir = shared.lock_directory();
            let Some(app_id) = dir.app(&req.segs[2]).map(|a| a.app_id.clone()) else {
                return not_found(&req.segs[2], req);
            };
            dir.apps.retain(|a| a.app_id != app_id);
            dir.principals.retain(|p| p.app_id != app_id);
            Resp::empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, 4) if action.as_deref() == Some("addpassword") => add_password(shared, req),
        (&Method::POST, 4) if action.as_deref() == Some("removepassword") => {
            remove_password(shared, req)
        }
        _ => method_not_allowed(req),
    }
}

fn create(shared: &Shared, req: &Req) -> Resp {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(name) = body
        .get("displayName")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
    else {
        return bad_request(
            "Invalid value specified for property 'displayName' of resource 'Application'.",
            req,
        );
    };
    let app = Application {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: uuid::Uuid::new_v4().to_string(),
        display_name: name.to_string(),
        created: crate::clock::rfc3339_now(),
        tags: body
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        passwords: Vec::new(),
    };
    let out = app_json(&app, &shared.config.tenant_id);
    let location = format!("{}/v1.0/applications/{}", shared.base_url, app.id);
    shared.lock_directory().apps.push(app);
    Resp::json(StatusCode::CREATED, &entity(out)).with_header("Location", location)
}

/// Two years from now (Graph's default password lifetime), RFC 3339.
fn default_end() -> String {
    let end = time::OffsetDateTime::now_utc() + time::Duration::days(730);
    end.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn add_password(shared: &Shared, req: &Req) -> Resp {
    let body = if req.body.is_empty() {
        json!({})
    } else {
        match json_body(req) {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    };
    let cred = body.get("passwordCredential").cloned().unwrap_or(json!({}));
    let display_name = cred
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let end = match cred.get("endDateTime").and_then(Value::as_str) {
        Some(e) => {
            if time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                .is_err()
            {
                return bad_request(
                    &format!(
                        "Cannot convert the literal '{e}' to the expected type 'Edm.DateTimeOffset'."
                    ),
                    req,
                );
            }
            e.to_string()
        }
        None => default_end(),
    };
    let mut dir = shared.lock_directory();
    let Some(app) = dir.app_mut(&req.segs[2]) else {
        return not_found(&req.segs[2], req);
    };
    let (key_id, secret) = Directory::add_password(app, display_name, end);
    let mut out = app
        .passwords
        .iter()
        .find(|p| p.key_id == key_id)
        .map(|p| p.to_json())
        .unwrap_or_default();
    out["secretText"] = json!(secret);
    out["@odata.context"] = json!(format!("{METADATA}#microsoft.graph.passwordCredential"));
    Resp::json(StatusCode::OK, &out)
}

fn remove_password(shared: &Shared, req: &Req) -> Resp {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(key_id) = body.get("keyId").and_then(Value::as_str) else {
        return bad_request("Invalid value specified for property 'keyId'.", req);
    };
    let mut dir = shared.lock_directory();
    let Some(app) = dir.app_mut(&req.segs[2]) else {
        return not_found(&req.segs[2], req);
    };
    let before = app.passwords.len();
    app.passwords
        .retain(|p| !p.key_id.eq_ignore_ascii_case(key_id));
    if app.passwords.len() == before {
        return bad_request(
            &format!("No password credential found with keyId '{key_id}'."),
            req,
        );
    }
    Resp::empty(StatusCode::NO_CONTENT)
}
