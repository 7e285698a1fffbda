//! Microsoft.Authorization: role assignments at any scope (synchronous PUT, GET, DELETE and
//! list with `$filter`), checked against the directory as ARM does (`PrincipalNotFound`
//! while a new principal replicates, `RoleAssignmentExists` for a duplicate), and the
//! built-in role definitions they name.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::Kind;
use super::path::ResPath;
use super::resources::parse_body;
use super::rp::{method_not_allowed, system_data, visible};
use super::state::{ArmState, Resource, key};
use super::{ArmError, Ctx, list_body};
use crate::graph::directory::PrincipalLookup;
use crate::http::Resp;
use crate::schema::{self, SchemaFile};

/// Built-in role definitions: (role name, id, description).
pub(crate) const BUILT_IN_ROLES: &[(&str, &str, &str)] = &[
    (
        "Owner",
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
    ),
    (
        "Contributor",
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
    ),
    (
        "Reader",
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "View all resources, but does not allow you to make any changes.",
    ),
    (
        "User Access Administrator",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "Lets you manage user access to Azure resources.",
    ),
    (
        "Key Vault Secrets User",
        "4633458b-17de-408a-b874-0445c86b69e6",
        "Read secret contents.",
    ),
    (
        "AcrPull",
        "7f951dda-4ed3-4680-a7ca-43fe172d538d",
        "acr pull",
    ),
    (
        "Managed Identity Operator",
        "f1a07417-d97a-45cb-824c-7a7467783830",
        "Read and Assign User Assigned Identity",
    ),
];

const ASSIGNMENT_TYPE: &str = "Microsoft.Authorization/roleAssignments";

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// The built-in role a role definition id (`…/roleDefinitions/{guid}`) names.
fn role_of(
    role_definition_id: &str,
) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let guid = role_definition_id.rsplit('/').next().unwrap_or_default();
    BUILT_IN_ROLES
        .iter()
        .find(|(_, id, _)| id.eq_ignore_ascii_case(guid))
}

fn role_definition_body(sub: &str, role: &(&str, &str, &str)) -> Value {
    json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}", role.1),
        "name": role.1,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.0,
            "type": "BuiltInRole",
            "description": role.2,
            "assignableScopes": ["/"]
        }
    })
}

/// `roleDefinitions` (GET by id, list) and `roleAssignments` (everything).
pub(super) fn handle(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    sub: &str,
) -> Result<Resp, ArmError> {
    let definitions = kind.ty.ends_with("/roleDefinitions");
    if let Some(scope) = &p.scope
        && visible(st, &key(scope)).is_none()
    {
        let parent = scope.split("/providers/").last().unwrap_or(scope);
        return Err(ArmError::resource_not_found(
            parent,
            p.rg.as_deref().unwrap_or_default(),
        ));
    }
    if definitions {
        if ctx.req.method != Method::GET {
            return Err(method_not_allowed(ctx));
        }
        if p.is_collection() {
            let items = BUILT_IN_ROLES
                .iter()
                .map(|r| role_definition_body(sub, r))
                .collect();
            return Ok(Resp::json(StatusCode::OK, &list_body(items)));
        }
        return match role_of(p.name()) {
            Some(role) => Ok(Resp::json(StatusCode::OK, &role_definition_body(sub, role))),
            None => Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "RoleDefinitionDoesNotExist",
                format!(
                    "The specified role definition with ID '{}' does not exist.",
                    p.name()
                ),
            )),
        };
    }
    if p.is_collection() {
        if ctx.req.method != Method::GET {
            return Err(method_not_allowed(ctx));
        }
        return list(ctx, st, p);
    }
    let name = p.name().to_string();
    if !is_guid(&name) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        ));
    }
    let id = p.id_with(kind, &p.names);
    let rkey = key(&id);
    match ctx.req.method {
        Method::GET => visible(st, &rkey)
            .map(|r| Resp::json(StatusCode::OK, &r.body))
            .ok_or_else(|| not_found(&name)),
        Method::DELETE => Ok(match st.resources.remove(&rkey) {
            Some(r) => Resp::json(StatusCode::OK, &r.body),
            None => Resp::empty(StatusCode::NO_CONTENT),
        }),
        Method::PUT => put(ctx, st, p, kind, sub, &id),
        _ => Err(method_not_allowed(ctx)),
    }
}

fn not_found(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "RoleAssignmentNotFound",
        format!("The role assignment '{name}' is not found."),
    )
}

/// What ARM's view of the directory says about `principal_id`.
fn principal(ctx: &Ctx<'_>, principal_id: &str) -> PrincipalLookup {
    let config = &ctx.shared.config;
    let configured = config
        .principals
        .iter()
        .map(|p| p.object_id.as_str())
        .chain(
            config
                .graph_service_principals
                .iter()
                .map(|p| p.id.as_str()),
        )
        .any(|id| id.eq_ignore_ascii_case(principal_id));
    if configured {
        return PrincipalLookup::Found;
    }
    ctx.shared
        .lock_directory()
        .lookup(principal_id, ctx.now, ctx.shared.principal_replication())
}

fn put(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    sub: &str,
    id: &str,
) -> Result<Resp, ArmError> {
    let body = parse_body(ctx)?;
    schema::validate(
        SchemaFile::Authorization,
        "RoleAssignmentCreateParameters",
        &body,
    )?;
    let props = &body["properties"];
    let text = |k: &str| {
        props
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (role_definition_id, principal_id) = (text("roleDefinitionId"), text("principalId"));
    let given_type = props.get("principalType").and_then(Value::as_str);
    let Some(role) = role_of(&role_definition_id) else {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                role_definition_id.rsplit('/').next().unwrap_or_default()
            ),
        ));
    };
    let tenant = &ctx.shared.config.tenant_id;
    match (principal(ctx, &principal_id), given_type) {
        (PrincipalLookup::Found, _) | (PrincipalLookup::Replicating, Some(_)) => {}
        _ => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "PrincipalNotFound",
                format!(
                    "Principal {} does not exist in the directory {tenant}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                    principal_id.replace('-', "")
                ),
            ));
        }
    }
    // Every principal the emulator knows is a service principal.
    if let Some(t) = given_type
        && !t.eq_ignore_ascii_case("ServicePrincipal")
    {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "UnmatchedPrincipalType",
            format!(
                "The PrincipalId '{}' has type 'ServicePrincipal' , which is different from specified PrincipalType '{t}'.",
                principal_id.replace('-', "")
            ),
        ));
    }
    let scope = p.base();
    let role_id = format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        role.1
    );
    let same_grant = |r: &Resource| {
        let rp = &r.body["properties"];
        rp["principalId"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(&principal_id))
            && rp["roleDefinitionId"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(&role_id))
            && rp["scope"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(&scope))
    };
    let rkey = key(id);
    if let Some(other) = st
        .resources
        .values()
        .find(|r| r.kind.ty == ASSIGNMENT_TYPE && key(&r.id) != rkey && same_grant(r))
    {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            format!(
                "The role assignment already exists. The ID of the existing role assignment is {}.",
                other
                    .id
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .replace('-', "")
            ),
        ));
    }
    let existing = visible(st, &rkey).cloned();
    if let Some(r) = &existing
        && !same_grant(r)
    {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ));
    }
    let who = system_data(ctx, existing.as_ref());
    let created_on = existing
        .as_ref()
        .and_then(|r| r.body.pointer("/properties/createdOn").cloned())
        .unwrap_or_else(|| who["lastModifiedAt"].clone());
    let out = json!({
        "id": id,
        "name": p.name(),
        "type": ASSIGNMENT_TYPE,
        "properties": {
            "roleDefinitionId": role_id,
            "principalId": principal_id,
            "principalType": given_type.unwrap_or("ServicePrincipal"),
            "scope": scope,
            "condition": props.get("condition").cloned().unwrap_or(Value::Null),
            "conditionVersion": props.get("conditionVersion").cloned().unwrap_or(Value::Null),
            "description": props.get("description").cloned().unwrap_or(Value::Null),
            "createdOn": created_on,
            "updatedOn": who["lastModifiedAt"],
            "createdBy": who["createdBy"],
            "updatedBy": who["lastModifiedBy"],
            "delegatedManagedIdentityResourceId": null
        }
    });
    st.resources.insert(
        rkey,
        Resource {
            id: id.to_string(),
            kind,
            body: out.clone(),
            visible: true,
            op: None,
            power_state: "",
        },
    );
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(Resp::json(status, &out))
}

/// Role assignments that apply to the scope (at, above or below it), optionally those of one
/// principal (`principalId eq '{id}'`) or only those at or above it (`atScope()`).
fn list(ctx: &Ctx<'_>, st: &ArmState, p: &ResPath) -> Result<Resp, ArmError> {
    let scope = key(&p.base());
    let filter = ctx.req.query_param("$filter").unwrap_or_default().trim();
    let at_scope = filter.eq_ignore_ascii_case("atScope()");
    let principal = filter
        .split_once(" eq ")
        .filter(|(l, _)| l.trim().eq_ignore_ascii_case("principalId"))
        .map(|(_, r)| r.trim().trim_matches('\'').to_ascii_lowercase());
    if !filter.is_empty() && !at_scope && principal.is_none() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedQuery",
            format!("The filter '{filter}' is not supported."),
        ));
    }
    let items = st
        .resources
        .values()
        .filter(|r| r.kind.ty == ASSIGNMENT_TYPE)
        .filter(|r| {
            let s = key(r.body["properties"]["scope"].as_str().unwrap_or_default());
            let above = scope == s || scope.starts_with(&format!("{s}/"));
            let below = s.starts_with(&format!("{scope}/"));
            above || (!at_scope && below)
        })
        .filter(|r| {
            principal.as_deref().is_none_or(|want| {
                r.body["properties"]["principalId"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(want))
            })
        })
        .map(|r| r.body.clone())
        .collect();
    Ok(Resp::json(StatusCode::OK, &list_body(items)))
}
