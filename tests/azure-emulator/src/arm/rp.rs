//! Resource-provider resources in general: the CRUD and LRO flow every type shares, with the
//! type specifics delegated to the network, compute and kubernetes modules.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::{self, Family, Kind, LroHeaders, PatchStyle};
use super::path::ResPath;
use super::resources::{parse_body, status_resp};
use super::state::{ArmState, Resource, key};
use super::{
    ArmError, Ctx, aks, authorization, compute, kubernetes, list_body, msi, network, storage,
};
use crate::clock::rfc3339_now;
use crate::http::Resp;
use crate::lro::{OpAction, Operation, add_retry_after};
use crate::schema;

/// Creates an operation (not yet stored) with duration, slowness and planned failure applied.
#[allow(clippy::too_many_arguments)]
pub(super) fn new_op(
    ctx: &Ctx<'_>,
    sub: &str,
    namespace: &str,
    location: &str,
    resource_id: &str,
    action: OpAction,
    stages: Vec<&'static str>,
    factor: f64,
    fault_type: &str,
    api_version: &str,
) -> Operation {
    let method = ctx.req.method.as_str();
    let (slow, failure) = ctx.shared.faults.with_state(|f| {
        (
            f.slow_factor(fault_type, method),
            f.take_failure(fault_type, method),
        )
    });
    let secs = ctx.shared.config.lro_secs * factor * slow;
    Operation {
        id: uuid::Uuid::new_v4().to_string(),
        sub: sub.to_string(),
        namespace: namespace.to_string(),
        location: if location.is_empty() {
            "eastus".into()
        } else {
            location.to_ascii_lowercase().replace(' ', "")
        },
        resource_key: key(resource_id),
        resource_id: resource_id.to_string(),
        action,
        stages,
        start: ctx.now,
        start_wall: rfc3339_now(),
        duration: ctx.shared.clock.scaled(secs),
        planned_failure: failure.map(|f| (f.code, f.message)),
        hooks_pending: 0,
        hook_error: None,
        outcome: None,
        end_wall: None,
        api_version: api_version.to_string(),
        status_under_resource: false,
        targets: Vec::new(),
    }
}

pub(super) fn handle(ctx: &Ctx<'_>, st: &mut ArmState, p: &ResPath) -> Result<Resp, ArmError> {
    let full = p.full_type();
    // Status documents under extension / flux resources.
    if p.ns
        .eq_ignore_ascii_case("Microsoft.KubernetesConfiguration")
        && p.types.len() == 2
        && p.names.len() == 2
        && p.types[1].eq_ignore_ascii_case("operations")
    {
        let op = st.ops.get(&p.names[1]).cloned().ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "OperationNotFound",
                "The operation could not be found.",
            )
        })?;
        let kind = kinds::lookup(&format!("{}/{}", p.ns, p.types[0]));
        ctx.check_api_version(
            kind.map_or(kinds::EXTENSION_VERSIONS, |k| k.api_versions),
            &full,
            true,
        )?;
        return Ok(status_resp(ctx, &op));
    }
    if p.ns.eq_ignore_ascii_case("Microsoft.Compute")
        && p.types
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case("networkInterfaces"))
    {
        return compute::scale_set_nics(ctx, st, p);
    }
    let Some(kind) = kinds::lookup(&full) else {
        if kinds::canonical_namespace(&p.ns).is_none() {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceNamespace",
                format!("The resource namespace '{}' is invalid.", p.ns),
            ));
        }
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type '{}' could not be found in the namespace '{}' for api version '{}'.",
                p.types.join("/"),
                p.ns,
                ctx.api_version().unwrap_or("")
            ),
        ));
    };
    let api_version = ctx.check_api_version(kind.api_versions, kind.ty, true)?;
    let sub = st
        .sub(&p.sub)
        .map(|s| s.id.clone())
        .ok_or_else(|| ArmError::subscription_not_found(&p.sub))?;
    if kind.family == Family::Authorization {
        if let Some(rg) = &p.rg
            && st.group(&sub, rg).is_none()
        {
            return Err(ArmError::resource_group_not_found(rg));
        }
        return authorization::handle(ctx, st, p, kind, &sub);
    }
    if !st.provider_registered(&sub, kind.namespace())
        || st.provider_propagating(&sub, kind.namespace(), ctx.now)
    {
        return Err(ArmError::missing_registration(kind.namespace()));
    }
    if let Some(rg) = &p.rg
        && st.group(&sub, rg).is_none()
    {
        return Err(ArmError::resource_group_not_found(rg));
    }
    if p.is_collection() {
        if ctx.req.method != Method::GET {
            return Err(method_not_allowed(ctx));
        }
        return list(ctx, st, p, kind);
    }
    if kind.family == Family::ManagedIdentity {
        if p.action.is_some() {
            return Err(method_not_allowed(ctx));
        }
        return msi::handle(ctx, st, p, kind);
    }
    if kind.family == Family::Storage {
        return storage::handle(ctx, st, p, kind, &api_version);
    }
    let id = p.id_with(kind, &p.names);
    let rkey = key(&id);
    if let Some(action) = &p.action {
        return match kind.family {
            Family::Compute => compute::action(ctx, st, p, kind, &rkey, action, &api_version),
            Family::Cluster => kubernetes::cluster_action(ctx, st, p, kind, &rkey, action),
            Family::Aks => aks::action(ctx, st, p, kind, &rkey, action),
            _ => Err(not_found(st, p, kind, &rkey)),
        };
    }
    match ctx.req.method {
        Method::GET | Method::HEAD => {
            let r = visible(st, &rkey).ok_or_else(|| not_found(st, p, kind, &rkey))?;
            if ctx.req.method == Method::HEAD {
                return Ok(Resp::empty(StatusCode::NO_CONTENT));
            }
            let body = render(ctx, st, r);
            Ok(Resp::json(StatusCode::OK, &body))
        }
        Method::PUT => put(ctx, st, p, kind, &id, &api_version),
        Method::PATCH => patch(ctx, st, p, kind, &rkey, &api_version),
        Method::DELETE => delete(ctx, st, kind, &rkey, &api_version),
        _ => Err(method_not_allowed(ctx)),
    }
}

pub(super) fn method_not_allowed(ctx: &Ctx<'_>) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "The requested method '{}' is not allowed on this resource.",
            ctx.req.method
        ),
    )
}

pub(super) fn visible<'a>(st: &'a ArmState, rkey: &str) -> Option<&'a Resource> {
    st.resources.get(rkey).filter(|r| r.visible)
}

/// `ResourceNotFound` naming the first missing ancestor (or the resource).
pub(super) fn not_found(st: &ArmState, p: &ResPath, kind: &Kind, rkey: &str) -> ArmError {
    let rg = p.rg.clone().unwrap_or_default();
    if let Some(scope) = &p.scope
        && visible(st, &key(scope)).is_none()
    {
        let parent = scope.split("/providers/").last().unwrap_or(scope);
        return ArmError::resource_not_found(parent, &rg);
    }
    if p.names.len() > 1 {
        let parent_id = p.id_with(kind, &p.names[..1]);
        if visible(st, &key(&parent_id)).is_none() {
            let segs = kind.type_segments();
            let tn = format!("{}/{}/{}", kind.namespace(), segs[0], p.names[0]);
            return ArmError::resource_not_found(&tn, &rg);
        }
    }
    let _ = rkey;
    ArmError::resource_not_found(&p.type_and_name(kind), &rg)
}

fn list(ctx: &Ctx<'_>, st: &ArmState, p: &ResPath, kind: &Kind) -> Result<Resp, ArmError> {
    let parent_prefix = if p.names.is_empty() {
        key(&p.base())
    } else {
        let parent_kind_ty = format!(
            "{}/{}",
            kind.namespace(),
            kind.type_segments()[..p.names.len()].join("/")
        );
        let parent_kind = kinds::lookup(&parent_kind_ty).ok_or_else(|| method_not_allowed(ctx))?;
        let parent_id = p.id_with(parent_kind, &p.names);
        if visible(st, &key(&parent_id)).is_none() {
            return Err(not_found(
                st,
                &ResPath {
                    types: p.types[..p.names.len()].to_vec(),
                    ..p.clone()
                },
                parent_kind,
                &key(&parent_id),
            ));
        }
        key(&parent_id)
    };
    let prefix = format!("{parent_prefix}/");
    let items: Vec<Value> = st
        .resources
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, r)| r.visible && std::ptr::eq(r.kind, kind))
        .map(|(_, r)| render(ctx, st, r))
        .collect();
    Ok(Resp::json(StatusCode::OK, &list_body(items)))
}

/// The resource as GET returns it.
pub(super) fn render(ctx: &Ctx<'_>, st: &ArmState, r: &Resource) -> Value {
    match r.kind.family {
        Family::Network => network::render(st, r),
        Family::Compute => compute::render(ctx, st, r),
        Family::Cluster | Family::K8sConfig => kubernetes::render(r),
        Family::Aks => aks::render(r),
        Family::Authorization | Family::ManagedIdentity => r.body.clone(),
        Family::Storage => storage::render(r),
    }
}

fn lro_headers(
    ctx: &Ctx<'_>,
    resp: &mut Resp,
    op: &Operation,
    headers: LroHeaders,
    api_version: &str,
) {
    resp.set_header(
        "Azure-AsyncOperation",
        ctx.url(&op.status_path(), api_version),
    );
    if headers == LroHeaders::LocationAndAsync {
        resp.set_header("Location", ctx.url(&op.result_path(), api_version));
    }
    add_retry_after(resp, op.remaining(ctx.now), ctx.shared.wait_hint);
}

fn put(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    api_version: &str,
) -> Result<Resp, ArmError> {
    if kind.read_only {
        return Err(method_not_allowed(ctx));
    }
    let rkey = key(id);
    // Parents must exist.
    if let Some(scope) = &p.scope
        && visible(st, &key(scope)).is_none()
    {
        return Err(not_found(st, p, kind, &rkey));
    }
    if p.names.len() > 1 && visible(st, &key(&p.id_with(kind, &p.names[..1]))).is_none() {
        return Err(not_found(st, p, kind, &rkey));
    }
    let body = parse_body(ctx)?;
    if let Some((file, root)) = kind.schema {
        schema::validate(file, root, &body)?;
    }
    let existing_owned = st.resources.get(&rkey).cloned();
    let existing = existing_owned.as_ref();
    if let Some(r) = existing
        && r.op.is_some()
    {
        return Err(ArmError::another_operation(id));
    }
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_string);
    if kind.tracked && location.as_deref().is_none_or(str::is_empty) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    }
    let is_new = existing.is_none_or(|r| !r.visible);
    let location = location
        .or_else(|| {
            existing.and_then(|r| {
                r.body
                    .get("location")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
        })
        .or_else(|| {
            p.scope
                .as_ref()
                .and_then(|s| st.resources.get(&key(s)))
                .and_then(|r| {
                    r.body
                        .get("location")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        })
        .or_else(|| {
            p.rg.as_ref()
                .and_then(|rg| st.group(&p.sub, rg))
                .map(|g| g.location.clone())
        })
        .unwrap_or_else(|| "eastus".into());
    let prepared = match kind.family {
        Family::Network => network::prepare(ctx, st, p, kind, id, body, existing)?,
        Family::Compute => compute::prepare(ctx, st, p, kind, id, body, existing)?,
        Family::Cluster => kubernetes::prepare_cluster(ctx, st, p, kind, id, body, existing)?,
        Family::K8sConfig => kubernetes::prepare_config(ctx, st, p, kind, id, body, existing)?,
        Family::Aks => aks::prepare(ctx, st, p, kind, id, body, existing)?,
        // Served by their own modules before the generic flow.
        Family::Authorization | Family::ManagedIdentity | Family::Storage => {
            return Err(method_not_allowed(ctx));
        }
    };
    let stages: Vec<&'static str> = if is_new {
        kind.create_stages.to_vec()
    } else {
        vec!["Updating"]
    };
    let accepted_202 = is_new
        && ctx
            .shared
            .config
            .accepted_create_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(kind.ty));
    let mut op = new_op(
        ctx,
        &p.sub,
        kind.namespace(),
        &location,
        id,
        if is_new {
            OpAction::Create
        } else {
            OpAction::Update
        },
        stages.clone(),
        kind.duration_factor,
        kind.ty,
        api_version,
    );
    op.status_under_resource = kind.family == Family::K8sConfig;
    let mut resource = Resource {
        id: id.to_string(),
        kind,
        body: prepared,
        visible: !accepted_202,
        op: Some(op.id.clone()),
        power_state: existing.map_or("starting", |r| r.power_state),
    };
    resource.set_provisioning_state(stages.first().copied().unwrap_or("Updating"));
    st.resources.insert(rkey.clone(), resource);
    let op_id = op.id.clone();
    st.ops.insert(op_id.clone(), op);
    match kind.family {
        Family::Network => network::after_put(ctx, st, &rkey)?,
        Family::Compute => compute::after_put(ctx, st, &rkey, &op_id, is_new),
        Family::Aks => aks::after_put(ctx, st, &rkey, &op_id),
        Family::Cluster
        | Family::K8sConfig
        | Family::Authorization
        | Family::ManagedIdentity
        | Family::Storage => {}
    }
    let op = st
        .ops
        .get(&op_id)
        .cloned()
        .ok_or_else(|| method_not_allowed(ctx))?;
    if accepted_202 {
        let mut resp = Resp::empty(StatusCode::ACCEPTED)
            .with_header("Location", ctx.url(&op.result_path(), api_version));
        add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
        return Ok(resp);
    }
    let r = st
        .resources
        .get(&rkey)
        .ok_or_else(|| method_not_allowed(ctx))?;
    let body = render(ctx, st, r);
    let mut resp = Resp::json(
        if is_new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &body,
    );
    lro_headers(ctx, &mut resp, &op, kind.put_headers, api_version);
    Ok(resp)
}

/// RFC 7386 merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn patch(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    rkey: &str,
    api_version: &str,
) -> Result<Resp, ArmError> {
    if visible(st, rkey).is_none() {
        return Err(not_found(st, p, kind, rkey));
    }
    let body = parse_body(ctx)?;
    if let Some((file, root)) = kind.patch_schema {
        schema::validate(file, root, &body)?;
    }
    if st.resources.get(rkey).is_some_and(|r| r.op.is_some()) {
        return Err(ArmError::another_operation(rkey));
    }
    let r = st
        .resources
        .get_mut(rkey)
        .ok_or_else(|| method_not_allowed(ctx))?;
    if kind.patch == PatchStyle::SyncTags {
        if let Some(tags) = body.get("tags") {
            r.body["tags"] = tags.clone();
        }
        if let Some(etag) = r.body.get_mut("etag") {
            *etag = json!(format!("W/\"{}\"", uuid::Uuid::new_v4()));
        }
        let r = &st.resources[rkey];
        return Ok(Resp::json(StatusCode::OK, &render(ctx, st, r)));
    }
    let mut patch_body = body.clone();
    if let Some(props) = patch_body
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    {
        props.remove("provisioningState");
    }
    merge_patch(&mut r.body, &patch_body);
    let (id, location) = (
        r.id.clone(),
        r.body
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or("eastus")
            .to_string(),
    );
    let mut op = new_op(
        ctx,
        &p.sub,
        kind.namespace(),
        &location,
        &id,
        OpAction::Update,
        vec!["Updating"],
        kind.duration_factor,
        kind.ty,
        api_version,
    );
    op.status_under_resource = kind.family == Family::K8sConfig;
    let r = st
        .resources
        .get_mut(rkey)
        .ok_or_else(|| method_not_allowed(ctx))?;
    r.op = Some(op.id.clone());
    r.set_provisioning_state("Updating");
    let mut resp = match kind.patch {
        PatchStyle::Lro200 => {
            let mut resp = Resp::json(StatusCode::OK, &render(ctx, st, &st.resources[rkey]));
            lro_headers(
                ctx,
                &mut resp,
                &op,
                LroHeaders::LocationAndAsync,
                api_version,
            );
            resp
        }
        PatchStyle::Lro202Location => Resp::empty(StatusCode::ACCEPTED)
            .with_header("Location", ctx.url(&op.result_path(), api_version)),
        _ => Resp::empty(StatusCode::ACCEPTED).with_header(
            "Azure-AsyncOperation",
            ctx.url(&op.status_path(), api_version),
        ),
    };
    add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
    st.ops.insert(op.id.clone(), op);
    Ok(resp)
}

fn delete(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    kind: &'static Kind,
    rkey: &str,
    api_version: &str,
) -> Result<Resp, ArmError> {
    let Some(r) = visible(st, rkey) else {
        return Ok(Resp::empty(StatusCode::NO_CONTENT));
    };
    if kind.read_only {
        return Err(method_not_allowed(ctx));
    }
    if let Some(op_id) = &r.op {
        let running = st.ops.get(op_id).cloned();
        if let Some(op) = running.filter(|o| o.action == OpAction::Delete) {
            let mut resp = Resp::empty(StatusCode::ACCEPTED)
                .with_header("Location", ctx.url(&op.result_path(), api_version));
            add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
            return Ok(resp);
        }
        return Err(ArmError::another_operation(&r.id));
    }
    if kind.family == Family::Network {
        super::network::check_delete(st, kind, rkey)?;
    }
    let (id, sub, location) = (
        r.id.clone(),
        r.id.split('/').nth(2).unwrap_or_default().to_string(),
        r.body
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or("eastus")
            .to_string(),
    );
    if kind.family == Family::Aks {
        super::aks::before_delete(st, rkey)?;
    }
    let mut op = new_op(
        ctx,
        &sub,
        kind.namespace(),
        &location,
        &id,
        OpAction::Delete,
        vec!["Deleting"],
        kind.duration_factor,
        kind.ty,
        api_version,
    );
    op.status_under_resource = kind.family == Family::K8sConfig;
    if let Some(r) = st.resources.get_mut(rkey) {
        r.op = Some(op.id.clone());
        r.set_provisioning_state("Deleting");
    }
    let mut resp = Resp::empty(StatusCode::ACCEPTED)
        .with_header("Location", ctx.url(&op.result_path(), api_version));
    if kind.delete_async_header {
        resp.set_header(
            "Azure-AsyncOperation",
            ctx.url(&op.status_path(), api_version),
        );
    }
    add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
    let op_id = op.id.clone();
    st.ops.insert(op_id.clone(), op);
    // The deleted VMs' (and clusters') hosts are off before the delete ends.
    let prefix = format!("{rkey}/");
    st.release_for_delete(&op_id, |k| k == rkey || k.starts_with(&prefix));
    if kind.family == Family::Aks {
        // A pool's nodes go before its delete ends.
        super::aks::after_delete(ctx, st, rkey, &op_id);
    }
    Ok(resp)
}

/// Common top-level fields for a stored body.
pub(super) fn base_body(kind: &Kind, id: &str, name: &str, mut body: Value) -> Value {
    if !body.is_object() {
        body = json!({});
    }
    body["id"] = json!(id);
    body["name"] = json!(name);
    body["type"] = json!(kind.ty);
    if !body.get("properties").is_some_and(Value::is_object) {
        body["properties"] = json!({});
    }
    body
}

/// ARM assigns a system-assigned identity's principal and tenant ids (read-only; the
/// principal stays what it was on an update).
pub(super) fn system_identity(ctx: &Ctx<'_>, b: &mut Value, old: &Value) {
    if b.pointer("/identity/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.to_ascii_lowercase().contains("systemassigned"))
    {
        let principal = old
            .pointer("/identity/principalId")
            .cloned()
            .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
        b["identity"]["principalId"] = principal;
        b["identity"]["tenantId"] = json!(ctx.shared.config.tenant_id);
    }
}

/// systemData for resources that report it.
pub(super) fn system_data(ctx: &Ctx<'_>, existing: Option<&Resource>) -> Value {
    let now = rfc3339_now();
    let who = ctx
        .shared
        .config
        .principals
        .first()
        .map_or("unknown", |p| p.client_id.as_str())
        .to_string();
    let created = existing
        .and_then(|r| r.body.get("systemData").cloned())
        .unwrap_or_else(
            || json!({"createdBy": who, "createdByType": "Application", "createdAt": now}),
        );
    let mut sd = created;
    sd["lastModifiedBy"] = json!(who);
    sd["lastModifiedByType"] = json!("Application");
    sd["lastModifiedAt"] = json!(now);
    sd
}
