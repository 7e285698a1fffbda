//! Graph service principals: the configured ones and those created at run time (for
//! applications and managed identities); list with `$filter`, get by id or by `appId`, create.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::directory::{CreatedPrincipal, PrincipalKind};
use super::{
    METADATA, alternate_key, bad_request, filtered, graph_error, json_body, method_not_allowed,
    not_found,
};
use crate::http::{Req, Resp};
use crate::server::Shared;

fn sp_json(
    id: &str,
    app_id: &str,
    name: &str,
    kind: PrincipalKind,
    alt: Option<&str>,
    tenant: &str,
) -> Value {
    let (ty, alternative): (&str, Vec<&str>) = match kind {
        PrincipalKind::Application => ("Application", vec![]),
        PrincipalKind::ManagedIdentity => ("ManagedIdentity", alt.into_iter().collect()),
    };
    json!({
        "id": id,
        "appId": app_id,
        "displayName": name,
        "servicePrincipalNames": [app_id],
        "servicePrincipalType": ty,
        "alternativeNames": alternative,
        "accountEnabled": true,
        "appOwnerOrganizationId": tenant
    })
}

/// Every service principal Graph knows, as Graph returns them.
fn principals(shared: &Shared) -> Vec<Value> {
    let tenant = &shared.config.tenant_id;
    let configured = shared
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
        .map(|(id, app, name)| sp_json(&id, &app, &name, PrincipalKind::Application, None, tenant));
    let dir = shared.lock_directory();
    let created = dir.principals.iter().map(|p| {
        sp_json(
            &p.id,
            &p.app_id,
            &p.display_name,
            p.kind,
            p.alternative_name.as_deref(),
            tenant,
        )
    });
    let mut out: Vec<Value> = configured.chain(created).collect();
    out.dedup_by(|a, b| a["id"] == b["id"]);
    out
}

fn entity(mut sp: Value) -> Value {
    sp["@odata.context"] = json!(format!("{METADATA}#servicePrincipals/$entity"));
    sp
}

pub(super) fn handle(shared: &Shared, req: &Req) -> Resp {
    let seg = req.segs.get(1).map(String::as_str).unwrap_or_default();
    let sps = principals(shared);
    let by = |field: &str, key: &str| {
        sps.iter()
            .find(|sp| {
                sp[field]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(key))
            })
            .cloned()
    };
    match (&req.method, req.segs.len()) {
        (&Method::GET, 2) => {
            if let Some(app) = alternate_key(seg, "serviceprincipals") {
                return match by("appId", app) {
                    Some(sp) => Resp::json(StatusCode::OK, &entity(sp)),
                    None => not_found(app, req),
                };
            }
            match filtered(
                sps,
                req.query_param("$filter"),
                &["appId", "displayName", "servicePrincipalNames", "id"],
                req,
            ) {
                Ok(items) => Resp::json(
                    StatusCode::OK,
                    &json!({"@odata.context": format!("{METADATA}#servicePrincipals"), "value": items}),
                ),
                Err(resp) => resp,
            }
        }
        (&Method::GET, 3) => match by("id", &req.segs[2]) {
            Some(sp) => Resp::json(StatusCode::OK, &entity(sp)),
            None => not_found(&req.segs[2], req),
        },
        (&Method::POST, 2) => create(shared, req, &sps),
        _ => method_not_allowed(req),
    }
}

/// `POST /servicePrincipals {"appId"}`: 201, or 409 when the app already has one.
fn create(shared: &Shared, req: &Req, existing: &[Value]) -> Resp {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(app_id) = body.get("appId").and_then(Value::as_str) else {
        return bad_request(
            "Invalid value specified for property 'appId' of resource 'ServicePrincipal'.",
            req,
        );
    };
    if existing.iter().any(|sp| {
        sp["appId"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(app_id))
    }) {
        return graph_error(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            "Another object with the same value for property servicePrincipalNames already exists.",
            req,
        );
    }
    let mut dir = shared.lock_directory();
    let Some(app) = dir.app_by_app_id(app_id) else {
        return bad_request(
            &format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            ),
            req,
        );
    };
    let principal = CreatedPrincipal {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: app.app_id.clone(),
        display_name: app.display_name.clone(),
        kind: PrincipalKind::Application,
        alternative_name: None,
        created_at: shared.clock.now(),
    };
    let out = sp_json(
        &principal.id,
        &principal.app_id,
        &principal.display_name,
        principal.kind,
        None,
        &shared.config.tenant_id,
    );
    let location = format!(
        "{}/v1.0/servicePrincipals/{}",
        shared.base_url, principal.id
    );
    dir.principals.push(principal);
    Resp::json(StatusCode::CREATED, &entity(out)).with_header("Location", location)
}
