//! `azure.role-assignment`: grants a role (a built-in role by name, or a role definition id)
//! to a principal at a scope (by default a resource group), under a name derived from the
//! three so that re-runs find it; `PrincipalNotFound` for a just-created principal is retried.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, cancellable};

/// API version of Microsoft.Authorization role assignments.
pub const API: &str = "2022-04-01";

/// Built-in roles by name (Azure's published role definition ids).
pub const BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
    (
        "User Access Administrator",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    ),
    (
        "Key Vault Secrets User",
        "4633458b-17de-408a-b874-0445c86b69e6",
    ),
    ("AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d"),
    (
        "Managed Identity Operator",
        "f1a07417-d97a-45cb-824c-7a7467783830",
    ),
];

/// The namespace of the assignment names (UUID v5 of scope, role and principal).
const NAME_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f1e_f10a_0000_4000_8000_0000_0000_0011);

/// The principal's kind, as ARM names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PrincipalType {
    /// An application's or a managed identity's service principal.
    ServicePrincipal,
    /// A user.
    User,
    /// A group.
    Group,
    /// A group of another tenant.
    ForeignGroup,
    /// A device.
    Device,
}

/// Input of `azure.role-assignment`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RaInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// The principal's object id (`steps.<sp>.outputs.object_id`).
    pub principal_id: String,
    /// Its kind: set it for a principal created just before (ARM then does not wait for the
    /// directory to replicate it).
    pub principal_type: Option<PrincipalType>,
    /// A built-in role name (`Contributor`), a role definition GUID, or a full role
    /// definition id.
    pub role: String,
    /// The scope: this resource group of the subscription…
    pub resource_group: Option<String>,
    /// …or any scope (a resource id, `/subscriptions/{id}`).
    pub scope: Option<String>,
    /// Description on the assignment.
    pub description: Option<String>,
}

/// Output of `azure.role-assignment`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RaOutput {
    /// The assignment's id.
    pub id: String,
    /// Its name (a GUID).
    pub name: String,
    /// The full role definition id.
    pub role_definition_id: String,
    /// The scope.
    pub scope: String,
}

/// The step kind.
pub struct RoleAssignmentStep;

fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// The role definition GUID of `role`.
fn role_guid(role: &str) -> Option<String> {
    if let Some((_, id)) = BUILT_IN_ROLES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(role))
    {
        return Some((*id).to_string());
    }
    let last = role.rsplit('/').next().unwrap_or(role);
    let full = role.contains('/');
    let well_formed = !full
        || role
            .to_ascii_lowercase()
            .contains("/providers/microsoft.authorization/roledefinitions/");
    (is_guid(last) && well_formed).then(|| last.to_ascii_lowercase())
}

struct Target {
    scope: String,
    role_definition_id: String,
    name: String,
}

fn target(client: &ArmClient, input: &RaInput) -> Target {
    let sub = client.subscription();
    let scope = match (&input.scope, &input.resource_group) {
        (Some(s), _) => s.trim_end_matches('/').to_string(),
        (None, Some(rg)) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
        (None, None) => String::new(),
    };
    let guid = role_guid(&input.role).unwrap_or_default();
    let role_definition_id =
        format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}");
    let seed = format!(
        "{}|{guid}|{}",
        scope.to_ascii_lowercase(),
        input.principal_id.to_ascii_lowercase()
    );
    Target {
        name: uuid::Uuid::new_v5(&NAME_NAMESPACE, seed.as_bytes()).to_string(),
        scope,
        role_definition_id,
    }
}

fn url(client: &ArmClient, t: &Target) -> String {
    client.arm_url(
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            t.scope, t.name
        ),
        API,
    )
}

fn output(t: &Target, body: &Value) -> RaOutput {
    RaOutput {
        id: body["id"].as_str().unwrap_or_default().to_string(),
        name: body["name"].as_str().unwrap_or(&t.name).to_string(),
        role_definition_id: t.role_definition_id.clone(),
        scope: t.scope.clone(),
    }
}

/// Whether an assignment body grants the target's role to the input's principal.
fn grants(t: &Target, input: &RaInput, body: &Value) -> bool {
    let p = &body["properties"];
    let role = p["roleDefinitionId"].as_str().unwrap_or_default();
    role.rsplit('/')
        .next()
        .is_some_and(|g| t.role_definition_id.ends_with(&g.to_ascii_lowercase()))
        && p["principalId"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(&input.principal_id))
}

/// The assignment of the same grant that exists under another name (someone made it by
/// hand, or with another tool), found by listing the principal's assignments at the scope.
async fn existing_grant(
    cx: &StepContext,
    client: &ArmClient,
    t: &Target,
    input: &RaInput,
) -> Result<Option<Value>, StepError> {
    let list = format!(
        "{}&$filter=principalId%20eq%20'{}'",
        client.arm_url(
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                t.scope
            ),
            API
        ),
        input.principal_id
    );
    let v: Value = cancellable(cx, client.send(Service::Arm, "GET", &list, None))
        .await?
        .json()
        .map_err(StepError::from)?;
    Ok(v["value"].as_array().and_then(|items| {
        items
            .iter()
            .find(|a| {
                grants(t, input, a)
                    && a["properties"]["scope"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(&t.scope))
            })
            .cloned()
    }))
}

impl Step for RoleAssignmentStep {
    const KIND: &'static str = "azure.role-assignment";
    type Input = RaInput;
    type Output = RaOutput;

    fn description(&self) -> &'static str {
        "Grants a role to a principal at a resource group (or any scope), idempotently"
    }

    fn validate(&self, input: &RaInput) -> Result<(), StepError> {
        if input.scope.is_none() == input.resource_group.is_none() {
            return Err(StepError::permanent(
                "InvalidInput",
                "give exactly one of `resource_group` and `scope`",
            ));
        }
        if input.scope.as_deref().is_some_and(|s| !s.starts_with('/')) {
            return Err(StepError::permanent(
                "InvalidInput",
                "`scope` is a resource id: `/subscriptions/…`",
            ));
        }
        if !is_guid(&input.principal_id) {
            return Err(StepError::permanent(
                "InvalidInput",
                format!(
                    "`{}` is not a principal object id (a GUID)",
                    input.principal_id
                ),
            ));
        }
        if role_guid(&input.role).is_none() {
            let names: Vec<&str> = BUILT_IN_ROLES.iter().map(|(n, _)| *n).collect();
            return Err(StepError::permanent(
                "InvalidInput",
                format!(
                    "`{}` is not a role: use a role definition id (or its GUID) or one of {}",
                    input.role,
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &RaInput,
    ) -> Result<Observed<RaOutput>, StepError> {
        let client = input.azure.client()?;
        let t = target(&client, input);
        let got: Option<Value> = cancellable(cx, client.get_opt(&url(&client, &t))).await?;
        Ok(match got {
            Some(body) if grants(&t, input, &body) => Observed::Satisfied(output(&t, &body)),
            Some(_) => Observed::NotSatisfied {
                reason: Some("the assignment grants another role or principal".into()),
            },
            None => Observed::missing(),
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &RaInput,
    ) -> Result<Progress<RaOutput>, StepError> {
        let client = input.azure.client()?;
        let t = target(&client, input);
        let mut props = json!({
            "roleDefinitionId": t.role_definition_id,
            "principalId": input.principal_id,
        });
        if let Some(pt) = input.principal_type {
            props["principalType"] = serde_json::to_value(pt).unwrap_or(Value::Null);
        }
        if let Some(d) = &input.description {
            props["description"] = json!(d);
        }
        let body = json!({ "properties": props });
        let resp = cancellable(
            cx,
            client.send_raw(Service::Arm, "PUT", &url(&client, &t), Some(&body), &[]),
        )
        .await?;
        if resp.is_success() {
            return Ok(Progress::Done(output(
                &t,
                &resp.json_value().unwrap_or_default(),
            )));
        }
        let err = resp.error();
        match err.code() {
            Some("PrincipalNotFound") => Err(StepError::retryable(
                "PrincipalNotFound",
                format!(
                    "{err}; a principal created moments ago takes a while to reach Azure RBAC \
                     (directory replication): retried; set `principal_type` to skip the wait"
                ),
            )),
            Some("RoleAssignmentExists") => match existing_grant(cx, &client, &t, input).await? {
                Some(found) => {
                    cx.info(&format!(
                        "the role is already assigned as {}: adopting it",
                        found["name"].as_str().unwrap_or_default()
                    ));
                    Ok(Progress::Done(output(&t, &found)))
                }
                None => Err(StepError::from(err)),
            },
            _ => Err(StepError::from(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_name_guid_or_id() {
        assert_eq!(
            role_guid("contributor").as_deref(),
            Some("b24988ac-6180-42a0-ab88-20f7382dd24c")
        );
        assert_eq!(
            role_guid("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/ACDD72A7-3385-48EF-BD42-F606FBA81AE7").as_deref(),
            Some("acdd72a7-3385-48ef-bd42-f606fba81ae7")
        );
        assert!(role_guid("Conributor").is_none());
        assert!(
            role_guid("/subscriptions/s/resourceGroups/b24988ac-6180-42a0-ab88-20f7382dd24c")
                .is_none()
        );
    }
}
