//! Microsoft.Resources: subscriptions, tenants, resource groups, provider registration and
//! the operation status / result endpoints every long-running operation points at.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::{self, KINDS, RESOURCES_VERSIONS, SUBSCRIPTION_VERSIONS};
use super::path::Route;
use super::state::{ArmState, Group, key};
use super::{ArmError, Ctx, list_body};
use crate::http::Resp;
use crate::lro::{OpAction, Operation, Outcome, add_retry_after};
use crate::schema::{self, SchemaFile};

fn subscription_body(ctx: &Ctx<'_>, id: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": id,
        "tenantId": ctx.shared.config.tenant_id,
        "displayName": format!("siteflow emulator {id}"),
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off"
        }
    })
}

pub(super) fn subscriptions(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    route: &Route,
) -> Result<Resp, ArmError> {
    ctx.check_api_version(
        SUBSCRIPTION_VERSIONS,
        "Microsoft.Resources/subscriptions",
        false,
    )?;
    if ctx.req.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    match route {
        Route::TenantList => Ok(Resp::json(
            StatusCode::OK,
            &list_body(vec![json!({
                "id": format!("/tenants/{}", ctx.shared.config.tenant_id),
                "tenantId": ctx.shared.config.tenant_id,
                "tenantCategory": "Home",
                "displayName": "siteflow emulator",
                "defaultDomain": "siteflow.example"
            })]),
        )),
        Route::Subscription { sub } => match st.sub(sub) {
            Some(s) => Ok(Resp::json(StatusCode::OK, &subscription_body(ctx, &s.id))),
            None => Err(ArmError::subscription_not_found(sub)),
        },
        _ => {
            let items = st
                .subs
                .values()
                .map(|s| subscription_body(ctx, &s.id))
                .collect();
            Ok(Resp::json(StatusCode::OK, &list_body(items)))
        }
    }
}

fn method_not_allowed(ctx: &Ctx<'_>) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "The requested method '{}' is not allowed on this resource.",
            ctx.req.method
        ),
    )
}

fn group_body(sub: &str, g: &Group) -> Value {
    let mut b = json!({
        "id": format!("/subscriptions/{sub}/resourceGroups/{}", g.name),
        "name": g.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": g.location,
        "properties": {"provisioningState": if g.deleting { "Deleting" } else { "Succeeded" }}
    });
    if let Some(t) = &g.tags {
        b["tags"] = t.clone();
    }
    if let Some(m) = &g.managed_by {
        b["managedBy"] = json!(m);
    }
    b
}

fn require_sub(st: &ArmState, sub: &str) -> Result<String, ArmError> {
    st.sub(sub)
        .map(|s| s.id.clone())
        .ok_or_else(|| ArmError::subscription_not_found(sub))
}

pub(super) fn group_list(ctx: &Ctx<'_>, st: &mut ArmState, sub: &str) -> Result<Resp, ArmError> {
    ctx.check_api_version(
        RESOURCES_VERSIONS,
        "Microsoft.Resources/resourceGroups",
        false,
    )?;
    let sub_id = require_sub(st, sub)?;
    if ctx.req.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let items = st
        .sub(sub)
        .map(|s| s.groups.values().map(|g| group_body(&sub_id, g)).collect())
        .unwrap_or_default();
    Ok(Resp::json(StatusCode::OK, &list_body(items)))
}

pub(super) fn group(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    sub: &str,
    rg: &str,
) -> Result<Resp, ArmError> {
    let v = ctx.check_api_version(
        RESOURCES_VERSIONS,
        "Microsoft.Resources/resourceGroups",
        false,
    )?;
    let sub_id = require_sub(st, sub)?;
    let existing = st.group(sub, rg).map(|g| group_body(&sub_id, g));
    match ctx.req.method {
        Method::HEAD => Ok(Resp::empty(if existing.is_some() {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::NOT_FOUND
        })),
        Method::GET => existing
            .map(|b| Resp::json(StatusCode::OK, &b))
            .ok_or_else(|| ArmError::resource_group_not_found(rg)),
        Method::PUT | Method::PATCH => {
            let body = parse_body(ctx)?;
            let patch = ctx.req.method == Method::PATCH;
            if patch && existing.is_none() {
                return Err(ArmError::resource_group_not_found(rg));
            }
            if !patch {
                schema::validate(SchemaFile::Resources, "ResourceGroup", &body)?;
            }
            let s = st
                .sub_mut(sub)
                .ok_or_else(|| ArmError::subscription_not_found(sub))?;
            if let Some(g) = s.groups.get(&key(rg))
                && g.deleting
            {
                return Err(ArmError::new(
                    StatusCode::CONFLICT,
                    "ResourceGroupBeingDeleted",
                    format!(
                        "The resource group '{rg}' is in deprovisioning state and cannot perform this operation."
                    ),
                ));
            }
            let location = body
                .get("location")
                .and_then(Value::as_str)
                .map(str::to_string);
            let created = !s.groups.contains_key(&key(rg));
            let g = s.groups.entry(key(rg)).or_insert_with(|| Group {
                name: rg.to_string(),
                location: location.clone().unwrap_or_default(),
                tags: None,
                managed_by: None,
                deleting: false,
            });
            if let Some(l) = location
                && !created
                && !patch
                && !l.eq_ignore_ascii_case(&g.location)
            {
                return Err(ArmError::new(
                    StatusCode::CONFLICT,
                    "InvalidResourceGroupLocation",
                    format!(
                        "Invalid resource group location '{l}'. The Resource group already exists in location '{}'.",
                        g.location
                    ),
                ));
            }
            if let Some(t) = body.get("tags") {
                g.tags = Some(t.clone());
            }
            if let Some(m) = body.get("managedBy").and_then(Value::as_str) {
                g.managed_by = Some(m.to_string());
            }
            let out = group_body(&sub_id, g);
            Ok(Resp::json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &out,
            ))
        }
        Method::DELETE => {
            let Some(g) = st.group(sub, rg) else {
                return Err(ArmError::resource_group_not_found(rg));
            };
            let location = g.location.to_ascii_lowercase().replace(' ', "");
            let name = g.name.clone();
            let id = format!("/subscriptions/{sub_id}/resourceGroups/{name}");
            if let Some(g) = st.sub_mut(sub).and_then(|s| s.groups.get_mut(&key(rg))) {
                g.deleting = true;
            }
            let op = super::rp::new_op(
                ctx,
                &sub_id,
                "Microsoft.Resources",
                &location,
                &id,
                OpAction::ResourceGroupDelete,
                vec!["Deleting"],
                1.0,
                "Microsoft.Resources/resourceGroups",
                &v,
            );
            let mut resp = Resp::empty(StatusCode::ACCEPTED)
                .with_header("Location", ctx.url(&op.result_path(), &v));
            add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
            let op_id = op.id.clone();
            st.ops.insert(op_id.clone(), op);
            let prefix = format!("{}/", key(&id));
            st.release_for_delete(&op_id, |k| k.starts_with(&prefix));
            Ok(resp)
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

/// Parses a JSON object body.
pub(super) fn parse_body(ctx: &Ctx<'_>) -> Result<Value, ArmError> {
    if ctx.req.body.is_empty() {
        return Err(ArmError::invalid_content("The request content was empty"));
    }
    let v: Value = serde_json::from_slice(&ctx.req.body)
        .map_err(|e| ArmError::invalid_content(e.to_string()))?;
    if !v.is_object() {
        return Err(ArmError::invalid_content(
            "The request content is not a JSON object",
        ));
    }
    Ok(v)
}

fn provider_body(sub: &str, ns: &str, state: &str) -> Value {
    let mut types: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.namespace().eq_ignore_ascii_case(ns) && !k.read_only)
        .map(|k| {
            json!({
                "resourceType": k.type_segments().join("/"),
                "locations": ["East US", "East US 2", "West US", "West US 2", "West Europe", "North Europe"],
                "apiVersions": k.api_versions.iter().rev().collect::<Vec<_>>(),
                "capabilities": "SupportsTags, SupportsLocation"
            })
        })
        .collect();
    if let Some((_, extra)) = kinds::NAMESPACES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(ns))
    {
        for t in *extra {
            types.push(json!({
                "resourceType": t,
                "locations": ["East US", "West Europe"],
                "apiVersions": ["2021-08-15"],
                "capabilities": "None"
            }));
        }
    }
    json!({
        "id": format!("/subscriptions/{sub}/providers/{ns}"),
        "namespace": ns,
        "registrationState": state,
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types
    })
}

pub(super) fn provider_list(ctx: &Ctx<'_>, st: &mut ArmState, sub: &str) -> Result<Resp, ArmError> {
    ctx.check_api_version(RESOURCES_VERSIONS, "Microsoft.Resources/providers", false)?;
    let sub_id = require_sub(st, sub)?;
    let s = st
        .sub(sub)
        .ok_or_else(|| ArmError::subscription_not_found(sub))?;
    let items = s
        .providers
        .values()
        .map(|p| provider_body(&sub_id, &p.namespace, p.state))
        .collect();
    Ok(Resp::json(StatusCode::OK, &list_body(items)))
}

pub(super) fn provider(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    sub: &str,
    ns: &str,
    action: Option<&String>,
) -> Result<Resp, ArmError> {
    ctx.check_api_version(RESOURCES_VERSIONS, "Microsoft.Resources/providers", false)?;
    let sub_id = require_sub(st, sub)?;
    let Some(canonical) = kinds::canonical_namespace(ns) else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceNamespace",
            format!("The resource namespace '{ns}' is invalid."),
        ));
    };
    let delay = ctx
        .shared
        .clock
        .scaled(ctx.shared.config.provider_registration_secs);
    let now = ctx.now;
    let s = st
        .sub_mut(sub)
        .ok_or_else(|| ArmError::subscription_not_found(sub))?;
    let p = s
        .providers
        .entry(key(canonical))
        .or_insert_with(|| super::state::ProviderReg {
            namespace: canonical.to_string(),
            state: "NotRegistered",
            pending: None,
            propagating_until: None,
        });
    match (ctx.req.method.clone(), action.map(String::as_str)) {
        (Method::GET, None) => {}
        (Method::POST, Some("register")) => {
            if p.state != "Registered" && p.state != "Registering" {
                if delay.is_zero() {
                    p.state = "Registered";
                } else {
                    p.state = "Registering";
                    p.pending = Some((now + delay, "Registered"));
                }
            }
        }
        (Method::POST, Some("unregister")) => {
            if canonical.eq_ignore_ascii_case("Microsoft.Resources") {
                return Err(ArmError::new(
                    StatusCode::CONFLICT,
                    "CannotUnregisterProvider",
                    "The namespace 'Microsoft.Resources' cannot be unregistered.",
                ));
            }
            if p.state != "Unregistered" && p.state != "NotRegistered" {
                p.state = "Unregistering";
                p.pending = Some((now + delay, "Unregistered"));
            }
        }
        _ => return Err(method_not_allowed(ctx)),
    }
    Ok(Resp::json(
        StatusCode::OK,
        &provider_body(&sub_id, &p.namespace, p.state),
    ))
}

/// `Azure-AsyncOperation` status documents and `Location` results.
pub(super) fn operation(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    sub: &str,
    op_id: &str,
    result: bool,
) -> Result<Resp, ArmError> {
    if ctx.req.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    let Some(op) = st
        .ops
        .get(op_id)
        .filter(|o| o.sub.eq_ignore_ascii_case(sub))
        .cloned()
    else {
        ctx.api_version()
            .ok_or_else(ArmError::missing_api_version)?;
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{op_id}' could not be found."),
        ));
    };
    ctx.check_api_version(
        &kinds::namespace_versions(&op.namespace),
        &op.namespace,
        false,
    )?;
    if !result {
        return Ok(status_resp(ctx, &op));
    }
    location_result(ctx, st, &op)
}

/// The status document of `op` with `Retry-After` while it runs.
pub(super) fn status_resp(ctx: &Ctx<'_>, op: &Operation) -> Resp {
    let mut resp = Resp::json(StatusCode::OK, &op.status_body(ctx.now));
    if !op.is_done() {
        add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
    }
    resp
}

fn location_result(ctx: &Ctx<'_>, st: &mut ArmState, op: &Operation) -> Result<Resp, ArmError> {
    match &op.outcome {
        None => {
            let mut resp = Resp::empty(StatusCode::ACCEPTED).with_header(
                "Location",
                ctx.url(
                    &op.result_path(),
                    ctx.api_version().unwrap_or(&op.api_version),
                ),
            );
            add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
            Ok(resp)
        }
        Some(Outcome::Failed { code, message }) => Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            code,
            message.clone(),
        )),
        Some(Outcome::Succeeded) => match op.action {
            OpAction::Delete | OpAction::ResourceGroupDelete | OpAction::Action(_) => {
                Ok(Resp::empty(StatusCode::NO_CONTENT))
            }
            OpAction::Create | OpAction::Update => match st.resources.get(&op.resource_key) {
                Some(r) => {
                    let body = super::rp::render(ctx, st, r);
                    Ok(Resp::json(StatusCode::OK, &body))
                }
                None => Ok(Resp::empty(StatusCode::NO_CONTENT)),
            },
        },
    }
}

/// Seeds subscriptions and provider registrations from the configuration.
pub(crate) fn seed(st: &mut ArmState, config: &crate::config::EmulatorConfig) {
    for sub in &config.subscriptions {
        let mut providers = std::collections::BTreeMap::new();
        for (ns, _) in kinds::NAMESPACES {
            let registered = ns.eq_ignore_ascii_case("Microsoft.Resources")
                || config
                    .registered_providers
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(ns));
            providers.insert(
                key(ns),
                super::state::ProviderReg {
                    namespace: (*ns).to_string(),
                    state: if registered {
                        "Registered"
                    } else {
                        "NotRegistered"
                    },
                    pending: None,
                    propagating_until: None,
                },
            );
        }
        st.subs.insert(
            key(sub),
            super::state::Subscription {
                id: sub.clone(),
                groups: Default::default(),
                providers,
            },
        );
    }
}
