//! `azure.managed-identity` (a user-assigned identity, created or adopted by its siteflow
//! tags) and `azure.federated-credential` (trust of a workload identity issuer's tokens for
//! one subject, e.g. a Kubernetes service account).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::models::Tags;
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::common::{
    AzureConnection, adopted_tags, cancellable, is_ours, not_owned, resource_path, same,
};

/// API version of Microsoft.ManagedIdentity (what azure-mgmt-msi 7.1 speaks).
pub const API: &str = "2024-11-30";

/// The audience Entra expects in a federated token exchange.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Input of `azure.managed-identity`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MiInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Identity name.
    pub name: String,
    /// Azure region.
    pub location: String,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over an identity that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.managed-identity`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MiOutput {
    /// Resource id.
    pub id: String,
    /// Its service principal's object id (for role assignments).
    pub principal_id: String,
    /// Its client id (what a workload's `azure.workload.identity/client-id` names).
    pub client_id: String,
    /// The tenant.
    pub tenant_id: String,
}

/// The step kind `azure.managed-identity`.
pub struct ManagedIdentityStep;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    #[serde(default)]
    id: String,
    #[serde(default)]
    location: String,
    tags: Option<Tags>,
    #[serde(default)]
    properties: IdentityProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityProperties {
    #[serde(default)]
    principal_id: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    tenant_id: String,
}

impl From<Identity> for MiOutput {
    fn from(i: Identity) -> Self {
        MiOutput {
            id: i.id,
            principal_id: i.properties.principal_id,
            client_id: i.properties.client_id,
            tenant_id: i.properties.tenant_id,
        }
    }
}

fn identity_url(client: &ArmClient, input: &MiInput) -> String {
    client.arm_url(
        &identity_path(client, &input.resource_group, &input.name),
        API,
    )
}

fn identity_path(client: &ArmClient, rg: &str, name: &str) -> String {
    resource_path(
        client.subscription(),
        rg,
        &format!("Microsoft.ManagedIdentity/userAssignedIdentities/{name}"),
    )
}

/// Names of identities and credentials: 3 to 128 letters, digits, `-` and `_`, starting
/// with a letter or digit.
fn check_name(name: &str, what: &str) -> Result<(), StepError> {
    let ok = (3..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StepError::permanent(
            "InvalidInput",
            format!(
                "`{name}` is not a valid {what} name: 3 to 128 letters, digits, - and _, starting with a letter or digit"
            ),
        ))
    }
}

impl Step for ManagedIdentityStep {
    const KIND: &'static str = "azure.managed-identity";
    type Input = MiInput;
    type Output = MiOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) a user-assigned managed identity tagged for the site"
    }

    fn validate(&self, input: &MiInput) -> Result<(), StepError> {
        check_name(&input.name, "managed identity")
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &MiInput,
    ) -> Result<Observed<MiOutput>, StepError> {
        let client = input.azure.client()?;
        let url = identity_url(&client, input);
        let Some(got): Option<Identity> = cancellable(cx, client.get_opt(&url)).await? else {
            return Ok(Observed::missing());
        };
        if !is_ours(cx, got.tags.as_ref()) && !input.adopt_untagged {
            return Err(not_owned("managed identity", &input.name));
        }
        if !same(&got.location, &input.location) {
            cx.info(&format!(
                "drift: managed identity {} is in {}, not {}; an identity cannot move, keeping it",
                input.name, got.location, input.location
            ));
        }
        let tags_drifted = input
            .tags
            .iter()
            .any(|(k, v)| got.tags.as_ref().and_then(|t| t.get(k)) != Some(v));
        if tags_drifted || !is_ours(cx, got.tags.as_ref()) {
            return Ok(Observed::NotSatisfied {
                reason: Some("tags drifted".into()),
            });
        }
        Ok(Observed::Satisfied(got.into()))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &MiInput,
    ) -> Result<Progress<MiOutput>, StepError> {
        let client = input.azure.client()?;
        let url = identity_url(&client, input);
        let existing: Option<Identity> = cancellable(cx, client.get_opt(&url)).await?;
        let (location, tags) = match &existing {
            Some(i) => (i.location.clone(), i.tags.clone().unwrap_or_default()),
            None => (input.location.clone(), Tags::new()),
        };
        let tags = adopted_tags(cx, tags, &input.tags);
        let body = json!({"location": location, "tags": tags});
        let got: Identity = cancellable(cx, client.send(Service::Arm, "PUT", &url, Some(&body)))
            .await?
            .json()
            .map_err(StepError::from)?;
        Ok(Progress::Done(got.into()))
    }
}

fn default_audiences() -> Vec<String> {
    vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
}

/// Input of `azure.federated-credential`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FicInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group of the identity.
    pub resource_group: String,
    /// The user-assigned identity's name.
    pub identity: String,
    /// Credential name.
    pub name: String,
    /// The token issuer (the cluster's OIDC issuer URL, e.g. Arc's `issuer_url`).
    pub issuer: String,
    /// The token subject: `system:serviceaccount:<namespace>:<service account>`.
    pub subject: String,
    /// Accepted audiences.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

/// Output of `azure.federated-credential`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FicOutput {
    /// Resource id.
    pub id: String,
    /// The issuer.
    pub issuer: String,
    /// The subject.
    pub subject: String,
}

/// The step kind `azure.federated-credential`.
pub struct FederatedCredentialStep;

fn credential_url(client: &ArmClient, input: &FicInput) -> String {
    client.arm_url(
        &format!(
            "{}/federatedIdentityCredentials/{}",
            identity_path(client, &input.resource_group, &input.identity),
            input.name
        ),
        API,
    )
}

/// The body's credential matches the input.
fn matches(input: &FicInput, body: &Value) -> bool {
    let p = &body["properties"];
    let audiences: Vec<&str> = p["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    p["issuer"].as_str() == Some(input.issuer.as_str())
        && p["subject"].as_str() == Some(input.subject.as_str())
        && audiences
            == input
                .audiences
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
}

fn fic_output(input: &FicInput, body: &Value) -> FicOutput {
    FicOutput {
        id: body["id"].as_str().unwrap_or_default().to_string(),
        issuer: input.issuer.clone(),
        subject: input.subject.clone(),
    }
}

impl Step for FederatedCredentialStep {
    const KIND: &'static str = "azure.federated-credential";
    type Input = FicInput;
    type Output = FicOutput;

    fn description(&self) -> &'static str {
        "Lets a workload identity issuer's tokens for one subject act as a managed identity"
    }

    fn validate(&self, input: &FicInput) -> Result<(), StepError> {
        check_name(&input.identity, "managed identity")?;
        check_name(&input.name, "federated credential")?;
        if !input.issuer.starts_with("https://") {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("the issuer `{}` is not an https URL", input.issuer),
            ));
        }
        if input.subject.is_empty() || input.subject.len() > 600 {
            return Err(StepError::permanent(
                "InvalidInput",
                "`subject` has 1 to 600 characters (system:serviceaccount:<namespace>:<name>)",
            ));
        }
        if input.audiences.is_empty() {
            return Err(StepError::permanent(
                "InvalidInput",
                format!(
                    "`audiences` names at least one audience (usually {TOKEN_EXCHANGE_AUDIENCE})"
                ),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &FicInput,
    ) -> Result<Observed<FicOutput>, StepError> {
        let client = input.azure.client()?;
        let got: Option<Value> =
            cancellable(cx, client.get_opt(&credential_url(&client, input))).await?;
        Ok(match got {
            Some(body) if matches(input, &body) => Observed::Satisfied(fic_output(input, &body)),
            Some(_) => Observed::NotSatisfied {
                reason: Some("the issuer, subject or audiences differ".into()),
            },
            None => Observed::missing(),
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &FicInput,
    ) -> Result<Progress<FicOutput>, StepError> {
        let client = input.azure.client()?;
        let body = json!({"properties": {
            "issuer": input.issuer,
            "subject": input.subject,
            "audiences": input.audiences,
        }});
        let got: Value = cancellable(
            cx,
            client.send(
                Service::Arm,
                "PUT",
                &credential_url(&client, input),
                Some(&body),
            ),
        )
        .await?
        .json()
        .map_err(StepError::from)?;
        Ok(Progress::Done(fic_output(input, &got)))
    }
}
