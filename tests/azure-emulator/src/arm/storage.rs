//! Microsoft.Storage: storage accounts (globally unique names, a create answered 202 with
//! `Location`, synchronous update and delete), `listKeys`, the `default` file service and its
//! file shares (synchronous PUT/GET/DELETE), as the 2025-06-01 spec and its examples show.

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::Kind;
use super::path::ResPath;
use super::resources::parse_body;
use super::rp::{base_body, new_op, not_found, system_data, visible};
use super::state::{ArmState, Resource, key};
use super::{ArmError, Ctx};
use crate::clock::rfc3339_now;
use crate::http::Resp;
use crate::lro::{OpAction, add_retry_after};
use crate::schema;

const ACCOUNTS: &str = "Microsoft.Storage/storageAccounts";
const FILE_SERVICES: &str = "Microsoft.Storage/storageAccounts/fileServices";

/// Serves a Microsoft.Storage resource or action (the generic checks already passed).
pub(super) fn handle(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    api_version: &str,
) -> Result<Resp, ArmError> {
    let id = p.id_with(kind, &p.names);
    let rkey = key(&id);
    if let Some(action) = &p.action {
        if kind.ty == ACCOUNTS
            && action.eq_ignore_ascii_case("listKeys")
            && ctx.req.method == Method::POST
        {
            return list_keys(st, p, kind, &rkey);
        }
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type '{}/{action}' could not be found in the namespace 'Microsoft.Storage' for api version '{api_version}'.",
                p.types.join("/")
            ),
        ));
    }
    if kind.ty == FILE_SERVICES {
        return file_service(ctx, st, p, kind, &id);
    }
    match ctx.req.method {
        Method::GET | Method::HEAD => {
            let r = visible(st, &rkey).ok_or_else(|| not_found(st, p, kind, &rkey))?;
            Ok(Resp::json(StatusCode::OK, &render(r)))
        }
        Method::PUT if kind.ty == ACCOUNTS => put_account(ctx, st, p, kind, &id, api_version),
        Method::PUT => put_share(ctx, st, p, kind, &id),
        // Storage deletes synchronously: 200 when something was deleted, else 204.
        Method::DELETE => match visible(st, &rkey) {
            Some(r) if r.op.is_some() => Err(ArmError::another_operation(&r.id)),
            Some(_) => {
                st.remove_tree(&rkey);
                st.storage_keys.remove(&rkey);
                Ok(Resp::empty(StatusCode::OK))
            }
            None => Ok(Resp::empty(StatusCode::NO_CONTENT)),
        },
        _ => Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The requested method '{}' is not allowed on this resource.",
                ctx.req.method
            ),
        )),
    }
}

/// The resource as GET returns it (keys never are part of it).
pub(super) fn render(r: &Resource) -> Value {
    r.body.clone()
}

/// Storage account names: 3 to 24 characters, digits and lower-case letters only.
pub(crate) fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn put_account(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    api_version: &str,
) -> Result<Resp, ArmError> {
    let name = p.name().to_string();
    if !valid_account_name(&name) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "AccountNameInvalid",
            format!(
                "{name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only."
            ),
        )
        .target("accountName"));
    }
    let rkey = key(id);
    // Names are global: another group's or subscription's account holds it.
    let suffix = format!(
        "/providers/microsoft.storage/storageaccounts/{}",
        key(&name)
    );
    if st
        .resources
        .iter()
        .any(|(k, r)| k.ends_with(&suffix) && *k != rkey && std::ptr::eq(r.kind, kind))
    {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "StorageAccountAlreadyTaken",
            format!("The storage account named {name} is already taken."),
        ));
    }
    let body = parse_body(ctx)?;
    if let Some((file, root)) = kind.schema {
        schema::validate(file, root, &body)?;
    }
    let existing = st.resources.get(&rkey).cloned();
    if let Some(r) = &existing
        && r.op.is_some()
    {
        return Err(ArmError::another_operation(id));
    }
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(' ', "");
    if let Some(r) = &existing
        && let Some(old) = r.body.get("location").and_then(Value::as_str)
        && !old.eq_ignore_ascii_case(&location)
    {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "InvalidResourceLocation",
            format!(
                "The resource '{name}' already exists in location '{old}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'. Please select a new resource name.",
                p.rg.as_deref().unwrap_or_default()
            ),
        ));
    }
    let mut b = base_body(kind, id, &name, body);
    b["location"] = json!(location);
    let sku_name = b
        .pointer("/sku/name")
        .and_then(Value::as_str)
        .unwrap_or("Standard_LRS")
        .to_string();
    b["sku"]["tier"] = json!(if sku_name.starts_with("Premium") {
        "Premium"
    } else {
        "Standard"
    });
    let old_props = existing
        .as_ref()
        .and_then(|r| r.body.get("properties").cloned())
        .unwrap_or(json!({}));
    let now = rfc3339_now();
    let props = b["properties"].as_object_mut().expect("object");
    props.remove("provisioningState");
    let keep = |k: &str, default: Value| old_props.get(k).cloned().unwrap_or(default);
    props.insert("creationTime".into(), keep("creationTime", json!(now)));
    props.insert(
        "keyCreationTime".into(),
        keep("keyCreationTime", json!({"key1": now, "key2": now})),
    );
    props.entry("minimumTlsVersion").or_insert(json!("TLS1_2"));
    props
        .entry("supportsHttpsTrafficOnly")
        .or_insert(json!(true));
    props.entry("allowBlobPublicAccess").or_insert(json!(false));
    props.entry("encryption").or_insert(json!({
        "services": {
            "file": {"keyType": "Account", "enabled": true, "lastEnabledTime": now},
            "blob": {"keyType": "Account", "enabled": true, "lastEnabledTime": now}
        },
        "keySource": "Microsoft.Storage"
    }));
    let endpoint = |svc: &str| format!("https://{name}.{svc}.core.windows.net/");
    props.insert(
        "primaryEndpoints".into(),
        json!({
            "blob": endpoint("blob"), "dfs": endpoint("dfs"), "file": endpoint("file"),
            "queue": endpoint("queue"), "table": endpoint("table"), "web": endpoint("web")
        }),
    );
    props.insert("primaryLocation".into(), json!(location));
    props.insert("statusOfPrimary".into(), json!("available"));
    b["systemData"] = system_data(ctx, existing.as_ref());
    let is_new = existing.as_ref().is_none_or(|r| !r.visible);
    if !is_new {
        // An update of an existing account is synchronous: 200 with the account.
        let mut r = existing.expect("existing");
        r.body = b;
        r.set_provisioning_state("Succeeded");
        let out = render(&r);
        st.resources.insert(rkey, r);
        return Ok(Resp::json(StatusCode::OK, &out));
    }
    st.storage_keys.insert(rkey.clone(), new_keys());
    let op = new_op(
        ctx,
        &p.sub,
        kind.namespace(),
        &location,
        id,
        OpAction::Create,
        kind.create_stages.to_vec(),
        kind.duration_factor,
        kind.ty,
        api_version,
    );
    let mut r = Resource {
        id: id.to_string(),
        kind,
        body: b,
        // A running create is not there yet: GET answers 404 until it is done.
        visible: false,
        op: Some(op.id.clone()),
        power_state: "running",
    };
    r.set_provisioning_state(kind.create_stages.first().copied().unwrap_or("Creating"));
    st.resources.insert(rkey, r);
    let mut resp = Resp::empty(StatusCode::ACCEPTED)
        .with_header("Location", ctx.url(&op.result_path(), api_version));
    add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
    st.ops.insert(op.id.clone(), op);
    Ok(resp)
}

/// Two fresh 512-bit account keys, base64 as Azure shows them.
fn new_keys() -> Value {
    let gen_key = || {
        let mut bytes = Vec::with_capacity(64);
        while bytes.len() < 64 {
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    json!([gen_key(), gen_key()])
}

fn list_keys(
    st: &ArmState,
    p: &ResPath,
    kind: &'static Kind,
    rkey: &str,
) -> Result<Resp, ArmError> {
    let r = visible(st, rkey).ok_or_else(|| not_found(st, p, kind, rkey))?;
    let keys = st.storage_keys.get(rkey).cloned().unwrap_or(json!([]));
    let created = |k: &str| {
        r.body
            .pointer(&format!("/properties/keyCreationTime/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let entry = |i: usize, name: &str| {
        json!({
            "keyName": name,
            "value": keys.get(i).cloned().unwrap_or(Value::Null),
            "permissions": "FULL",
            "creationTime": created(name)
        })
    };
    Ok(Resp::json(
        StatusCode::OK,
        &json!({"keys": [entry(0, "key1"), entry(1, "key2")]}),
    ))
}

/// The account a share (or file service) path hangs off, if it exists.
fn account_of<'a>(st: &'a ArmState, p: &ResPath) -> Option<&'a Resource> {
    let kind = super::kinds::lookup(ACCOUNTS)?;
    visible(st, &key(&p.id_with(kind, &p.names[..1])))
}

fn missing_account(p: &ResPath) -> ArmError {
    ArmError::resource_not_found(
        &format!("{ACCOUNTS}/{}", p.names[0]),
        p.rg.as_deref().unwrap_or_default(),
    )
}

/// `fileServices/default`: every account has it; GET and PUT (settings ignored) answer it.
fn file_service(
    ctx: &Ctx<'_>,
    st: &ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
) -> Result<Resp, ArmError> {
    if account_of(st, p).is_none() {
        return Err(missing_account(p));
    }
    if !p.name().eq_ignore_ascii_case("default") {
        return Err(not_found(st, p, kind, &key(id)));
    }
    if ![Method::GET, Method::PUT].contains(&ctx.req.method) {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET and PUT are supported on the file service.",
        ));
    }
    Ok(Resp::json(
        StatusCode::OK,
        &json!({
            "id": id,
            "name": "default",
            "type": FILE_SERVICES,
            "properties": {"shareDeleteRetentionPolicy": {"enabled": true, "days": 7}}
        }),
    ))
}

/// The default quota of a share (GiB): large file shares, as new accounts have them.
const DEFAULT_SHARE_QUOTA_GB: u64 = 102_400;

fn put_share(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
) -> Result<Resp, ArmError> {
    if account_of(st, p).is_none() {
        return Err(missing_account(p));
    }
    if !p.names[1].eq_ignore_ascii_case("default") {
        return Err(missing_account(p));
    }
    let body = parse_body(ctx)?;
    if let Some((file, root)) = kind.schema {
        schema::validate(file, root, &body)?;
    }
    if let Some(q) = body
        .pointer("/properties/shareQuota")
        .and_then(Value::as_i64)
        && !(1..=DEFAULT_SHARE_QUOTA_GB as i64).contains(&q)
    {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidHeaderValue",
            format!(
                "The value for one of the HTTP headers is not in the correct format. shareQuota {q} is outside 1..{DEFAULT_SHARE_QUOTA_GB}."
            ),
        ));
    }
    let rkey = key(id);
    let existing = visible(st, &rkey).cloned();
    let mut b = base_body(kind, id, p.name(), body);
    let props = b["properties"].as_object_mut().expect("object");
    props
        .entry("shareQuota")
        .or_insert(json!(DEFAULT_SHARE_QUOTA_GB));
    props.entry("enabledProtocols").or_insert(json!("SMB"));
    props
        .entry("accessTier")
        .or_insert(json!("TransactionOptimized"));
    props.insert("lastModifiedTime".into(), json!(rfc3339_now()));
    b["etag"] = json!(format!("\"0x{}\"", uuid::Uuid::new_v4().simple()));
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let r = Resource {
        id: id.to_string(),
        kind,
        body: b,
        visible: true,
        op: None,
        power_state: "running",
    };
    let out = render(&r);
    st.resources.insert(rkey, r);
    Ok(Resp::json(status, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_follow_the_storage_rules() {
        assert!(valid_account_name("siteflowedge01"));
        assert!(!valid_account_name("ab"));
        assert!(!valid_account_name("Upper"));
        assert!(!valid_account_name("with-dash"));
        assert!(!valid_account_name(&"a".repeat(25)));
    }
}
