//! Microsoft.ManagedIdentity: user-assigned identities (synchronous PUT/PATCH/GET/DELETE; a
//! new identity gets a service principal in the directory) and their federated identity
//! credentials (issuer, subject, audiences) for workload identity.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::Kind;
use super::path::ResPath;
use super::resources::parse_body;
use super::rp::{method_not_allowed, not_found, system_data, visible};
use super::state::{ArmState, Resource, key};
use super::{ArmError, Ctx};
use crate::graph::directory::{CreatedPrincipal, PrincipalKind};
use crate::http::Resp;
use crate::schema::{self, SchemaFile, Violation};

/// One identity or credential (collections go through the generic list).
pub(super) fn handle(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
) -> Result<Resp, ArmError> {
    let credential = p.names.len() == 2;
    let id = p.id_with(kind, &p.names);
    let rkey = key(&id);
    if credential && visible(st, &key(&p.id_with(kind, &p.names[..1]))).is_none() {
        return Err(not_found(st, p, kind, &rkey));
    }
    match ctx.req.method {
        Method::GET => visible(st, &rkey)
            .map(|r| Resp::json(StatusCode::OK, &r.body))
            .ok_or_else(|| not_found(st, p, kind, &rkey)),
        Method::DELETE => {
            let Some(r) = st.resources.remove(&rkey) else {
                return Ok(Resp::empty(StatusCode::NO_CONTENT));
            };
            if !credential {
                let prefix = format!("{rkey}/");
                st.resources.retain(|k, _| !k.starts_with(&prefix));
                ctx.shared.lock_directory().remove_identity_principal(&r.id);
            }
            Ok(Resp::empty(StatusCode::OK))
        }
        Method::PUT if credential => put_credential(ctx, st, p, kind, &id),
        Method::PUT => put_identity(ctx, st, p, kind, &id),
        Method::PATCH if !credential => patch_identity(ctx, st, p, kind, &rkey),
        _ => Err(method_not_allowed(ctx)),
    }
}

fn valid_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn invalid_name(name: &str, what: &str) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidResourceName",
        format!(
            "Resource name {name} is invalid. The name of a {what} can be 3-128 characters long, must start with a letter or number, and can contain letters, numbers, dashes and underscores."
        ),
    )
}

/// Stores `body` as the resource `id`: 201 when it is new, else 200, with the body.
fn save(st: &mut ArmState, kind: &'static Kind, id: &str, body: Value, existed: bool) -> Resp {
    let resp = Resp::json(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &body,
    );
    st.resources.insert(
        key(id),
        Resource {
            id: id.to_string(),
            kind,
            body,
            visible: true,
            op: None,
            power_state: "",
        },
    );
    resp
}

/// The body of a PUT, once the name and the body's shape are checked.
fn checked_body(ctx: &Ctx<'_>, p: &ResPath, what: &str, root: &str) -> Result<Value, ArmError> {
    if !valid_name(p.name()) {
        return Err(invalid_name(p.name(), what));
    }
    let body = parse_body(ctx)?;
    schema::validate(SchemaFile::Msi, root, &body)?;
    Ok(body)
}

fn put_identity(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
) -> Result<Resp, ArmError> {
    let body = checked_body(ctx, p, "user assigned identity", "Identity")?;
    let location = body["location"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(' ', "");
    let existing = visible(st, &key(id)).cloned();
    let kept = |k: &str| {
        existing
            .as_ref()
            .and_then(|r| r.body["properties"][k].as_str().map(str::to_string))
    };
    let principal_id = kept("principalId").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let client_id = kept("clientId").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let isolation = body
        .pointer("/properties/isolationScope")
        .cloned()
        .unwrap_or_else(|| json!("None"));
    let out = json!({
        "id": id,
        "name": p.name(),
        "type": kind.ty,
        "location": location,
        "tags": body.get("tags").cloned().unwrap_or_else(|| json!({})),
        "systemData": system_data(ctx, existing.as_ref()),
        "properties": {
            "tenantId": ctx.shared.config.tenant_id,
            "principalId": principal_id,
            "clientId": client_id,
            "isolationScope": isolation
        }
    });
    if existing.is_none() {
        ctx.shared
            .lock_directory()
            .principals
            .push(CreatedPrincipal {
                id: principal_id,
                app_id: client_id,
                display_name: p.name().to_string(),
                kind: PrincipalKind::ManagedIdentity,
                alternative_name: Some(id.to_string()),
                created_at: ctx.now,
            });
    }
    Ok(save(st, kind, id, out, existing.is_some()))
}

/// `PATCH` (IdentityUpdate): tags and isolation scope, synchronously.
fn patch_identity(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    rkey: &str,
) -> Result<Resp, ArmError> {
    let body = parse_body(ctx)?;
    let existing = visible(st, rkey).cloned();
    let Some(mut r) = existing else {
        return Err(not_found(st, p, kind, rkey));
    };
    if let Some(tags) = body.get("tags") {
        r.body["tags"] = tags.clone();
    }
    if let Some(scope) = body.pointer("/properties/isolationScope") {
        r.body["properties"]["isolationScope"] = scope.clone();
    }
    r.body["systemData"] = system_data(ctx, Some(&r));
    let out = r.body.clone();
    st.resources.insert(rkey.to_string(), r);
    Ok(Resp::json(StatusCode::OK, &out))
}

fn put_credential(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
) -> Result<Resp, ArmError> {
    let body = checked_body(
        ctx,
        p,
        "federated identity credential",
        "FederatedIdentityCredential",
    )?;
    // The spec requires all three (the SDK model does not say so).
    for field in ["issuer", "subject", "audiences"] {
        if body
            .pointer(&format!("/properties/{field}"))
            .is_none_or(Value::is_null)
        {
            return Err(Violation::Missing {
                path: format!("properties.{field}"),
            }
            .into());
        }
    }
    let issuer = body["properties"]["issuer"].as_str().unwrap_or_default();
    if !issuer.starts_with("https://") {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("The issuer '{issuer}' is not a valid URL: it must use the https scheme."),
        ));
    }
    let audiences = body["properties"]["audiences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if audiences.is_empty() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The audiences of a federated identity credential must not be empty.",
        ));
    }
    let existing = visible(st, &key(id)).cloned();
    let out = json!({
        "id": id,
        "name": p.name(),
        "type": kind.ty,
        "systemData": system_data(ctx, existing.as_ref()),
        "properties": {
            "issuer": issuer,
            "subject": body["properties"]["subject"],
            "audiences": audiences
        }
    });
    Ok(save(st, kind, id, out, existing.is_some()))
}
