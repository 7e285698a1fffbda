//! `azure.service-principal`: a Microsoft Graph application with its service principal and,
//! when asked, a password (a secret output) that can be kept in Key Vault and read back there
//! on later runs instead of minting another.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::models::{GraphList, Tags};
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, TAG_SITE, TAG_STEP, cancellable, not_owned};
use crate::keyvault::{read_secret, secret_url, write_secret};

/// The Key Vault secret tag naming the password credential (`keyId`) the value belongs to.
pub const TAG_KEY_ID: &str = "siteflow-key-id";

/// Input of `azure.service-principal`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpInput {
    /// Connection (its principal needs Application.ReadWrite.All in Graph).
    #[serde(default)]
    pub azure: AzureConnection,
    /// The application's display name (unique in the tenant for this step).
    pub display_name: String,
    /// Give the application a password (`client_secret` output).
    #[serde(default)]
    pub password: bool,
    /// Keep the password in this Key Vault secret, and read it back from there on later
    /// runs. Without it a later run cannot know the secret, so it rotates the password.
    pub key_vault_secret: Option<String>,
    /// The vault of `key_vault_secret`, by name…
    pub vault: Option<String>,
    /// …or by URL.
    pub vault_url: Option<String>,
    /// Take over an application that exists without this step's siteflow tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.service-principal`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SpOutput {
    /// The application (client) id.
    pub client_id: String,
    /// The service principal's object id (what role assignments name).
    pub object_id: String,
    /// The application's object id.
    pub application_object_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The password (with `password: true`).
    pub client_secret: Option<Secret<String>>,
    /// The password credential's id (with `password: true`).
    pub key_id: Option<String>,
}

/// The step kind.
pub struct ServicePrincipalStep;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Application {
    id: String,
    app_id: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    password_credentials: Vec<PasswordCredential>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordCredential {
    key_id: String,
    display_name: Option<String>,
    secret_text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Principal {
    id: String,
    app_owner_organization_id: Option<String>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `$filter=field eq 'value'` with OData quoting.
fn filter(field: &str, value: &str) -> String {
    encode(&format!("{field} eq '{}'", value.replace('\'', "''")))
}

/// The Graph tags that mark an application as this step's (of this site).
fn owner_tags(cx: &StepContext) -> Vec<String> {
    let mut t = vec![format!("{TAG_STEP}:{}", cx.step_id)];
    if let Some(site) = &cx.site {
        t.push(format!("{TAG_SITE}:{site}"));
    }
    t
}

/// The display name of the password credentials this step adds.
fn password_name(cx: &StepContext) -> String {
    format!("siteflow {}", cx.step_id)
}

fn graph_url(client: &ArmClient, path: &str) -> String {
    format!(
        "{}/v1.0/{path}",
        client.endpoints().graph_url.trim_end_matches('/')
    )
}

/// Sends a Graph request; a 403 becomes advice on the permission needed.
async fn graph(
    cx: &StepContext,
    client: &ArmClient,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<siteflow_azure::ArmResponse, StepError> {
    let url = graph_url(client, path);
    let resp = cancellable(cx, client.send_raw(Service::Graph, method, &url, body, &[])).await?;
    if resp.status == 403 {
        return Err(StepError::permanent(
            "GraphAccessDenied",
            format!(
                "Microsoft Graph refused {method} {path} (HTTP 403, correlation id {}): the signed-in \
                 principal needs the Application.ReadWrite.All permission (or the Application \
                 Administrator role); log in as a Microsoft Entra user who has it, or grant it",
                resp.correlation_id
            ),
        ));
    }
    resp.ok().map_err(StepError::from)
}

/// What exists now for this input.
struct Found {
    app: Application,
    principal: Option<Principal>,
}

async fn find(
    cx: &StepContext,
    client: &ArmClient,
    input: &SpInput,
) -> Result<Option<Found>, StepError> {
    let path = format!(
        "applications?$filter={}",
        filter("displayName", &input.display_name)
    );
    let apps: GraphList<Application> = graph(cx, client, "GET", &path, None)
        .await?
        .json()
        .map_err(StepError::from)?;
    let mut apps = apps.value;
    if apps.len() > 1 {
        return Err(StepError::permanent(
            "AmbiguousApplication",
            format!(
                "{} applications are named `{}`: rename or delete the extra ones, or choose another display_name",
                apps.len(),
                input.display_name
            ),
        ));
    }
    let Some(app) = apps.pop() else {
        return Ok(None);
    };
    let wanted = owner_tags(cx);
    if !wanted.iter().all(|t| app.tags.contains(t)) && !input.adopt_untagged {
        return Err(not_owned("application", &input.display_name));
    }
    Ok(Some(Found {
        principal: principal_of(cx, client, &app.app_id).await?,
        app,
    }))
}

/// The service principal of an application, if it has one.
async fn principal_of(
    cx: &StepContext,
    client: &ArmClient,
    app_id: &str,
) -> Result<Option<Principal>, StepError> {
    let path = format!("servicePrincipals?$filter={}", filter("appId", app_id));
    let sps: GraphList<Principal> = graph(cx, client, "GET", &path, None)
        .await?
        .json()
        .map_err(StepError::from)?;
    Ok(sps.value.into_iter().next())
}

/// The password kept in Key Vault, if it still belongs to one of the app's credentials.
async fn stored_password(
    cx: &StepContext,
    client: &ArmClient,
    input: &SpInput,
    app: &Application,
) -> Result<Option<(String, Secret<String>)>, StepError> {
    let Some(url) = vault_url(client, input) else {
        return Ok(None);
    };
    let Some(stored) = read_secret(cx, client, &url).await? else {
        return Ok(None);
    };
    let key_id = stored.tags.get(TAG_KEY_ID).cloned().unwrap_or_default();
    if app.password_credentials.iter().any(|p| p.key_id == key_id) {
        Ok(Some((key_id, stored.value)))
    } else {
        cx.info(&format!(
            "the password in Key Vault secret {} is no longer a credential of the application: adding a new one",
            input.key_vault_secret.as_deref().unwrap_or_default()
        ));
        Ok(None)
    }
}

fn vault_url(client: &ArmClient, input: &SpInput) -> Option<String> {
    input.key_vault_secret.as_deref().map(|name| {
        secret_url(
            input.vault.as_deref(),
            input.vault_url.as_deref(),
            name,
            &client.endpoints().keyvault_suffix,
        )
    })
}

fn output(
    found: &Found,
    principal: &Principal,
    password: Option<(String, Secret<String>)>,
) -> SpOutput {
    let (key_id, client_secret) = password.map_or((None, None), |(k, s)| (Some(k), Some(s)));
    SpOutput {
        client_id: found.app.app_id.clone(),
        object_id: principal.id.clone(),
        application_object_id: found.app.id.clone(),
        tenant_id: principal
            .app_owner_organization_id
            .clone()
            .unwrap_or_default(),
        client_secret,
        key_id,
    }
}

/// Adds a password, removes this step's older ones, and keeps the new one in Key Vault.
async fn new_password(
    cx: &StepContext,
    client: &ArmClient,
    input: &SpInput,
    app: &Application,
) -> Result<(String, Secret<String>), StepError> {
    let body = json!({"passwordCredential": {"displayName": password_name(cx)}});
    let cred: PasswordCredential = graph(
        cx,
        client,
        "POST",
        &format!("applications/{}/addPassword", app.id),
        Some(&body),
    )
    .await?
    .json()
    .map_err(StepError::from)?;
    let secret = cred.secret_text.unwrap_or_default();
    cx.add_secret(&secret);
    // Older passwords of this step (a rotation, or one minted by an attempt that died
    // before storing it) are removed so the application keeps one.
    for old in app
        .password_credentials
        .iter()
        .filter(|p| p.display_name.as_deref() == Some(password_name(cx).as_str()))
    {
        graph(
            cx,
            client,
            "POST",
            &format!("applications/{}/removePassword", app.id),
            Some(&json!({"keyId": old.key_id})),
        )
        .await?;
    }
    if let Some(url) = vault_url(client, input) {
        let tags = Tags::from([(TAG_KEY_ID.to_string(), cred.key_id.clone())]);
        write_secret(
            cx,
            client,
            &url,
            &secret,
            &tags,
            Some("client-secret".into()),
        )
        .await?;
    }
    Ok((cred.key_id, Secret::new(secret)))
}

impl Step for ServicePrincipalStep {
    const KIND: &'static str = "azure.service-principal";
    type Input = SpInput;
    type Output = SpOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) an Entra application and its service principal, with a password kept in Key Vault"
    }

    fn validate(&self, input: &SpInput) -> Result<(), StepError> {
        if input.display_name.trim().is_empty() || input.display_name.len() > 120 {
            return Err(StepError::permanent(
                "InvalidInput",
                "`display_name` has 1 to 120 characters",
            ));
        }
        if input.key_vault_secret.is_some() {
            if !input.password {
                return Err(StepError::permanent(
                    "InvalidInput",
                    "`key_vault_secret` keeps the password: set `password: true` too",
                ));
            }
            if input.vault.is_none() == input.vault_url.is_none() {
                return Err(StepError::permanent(
                    "InvalidInput",
                    "with `key_vault_secret`, give exactly one of `vault` and `vault_url`",
                ));
            }
        } else if input.vault.is_some() || input.vault_url.is_some() {
            return Err(StepError::permanent(
                "InvalidInput",
                "`vault` and `vault_url` go with `key_vault_secret`",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &SpInput,
    ) -> Result<Observed<SpOutput>, StepError> {
        let client = input.azure.client()?;
        let Some(found) = find(cx, &client, input).await? else {
            return Ok(Observed::missing());
        };
        let Some(principal) = &found.principal else {
            return Ok(Observed::NotSatisfied {
                reason: Some("the application has no service principal".into()),
            });
        };
        if !input.password {
            return Ok(Observed::Satisfied(output(&found, principal, None)));
        }
        match stored_password(cx, &client, input, &found.app).await? {
            Some(p) => Ok(Observed::Satisfied(output(&found, principal, Some(p)))),
            None => Ok(Observed::NotSatisfied {
                reason: Some("no password this step can give".into()),
            }),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &SpInput,
    ) -> Result<Progress<SpOutput>, StepError> {
        let client = input.azure.client()?;
        // An application this step created in an earlier attempt: Graph's `$filter` may not
        // list it yet (directory replication), its id does.
        let saved = cx
            .progress()
            .and_then(|p| p["application_object_id"].as_str().map(str::to_string));
        let earlier = match saved {
            Some(id) => {
                let resp = cancellable(
                    cx,
                    client.send_raw(
                        Service::Graph,
                        "GET",
                        &graph_url(&client, &format!("applications/{id}")),
                        None,
                        &[],
                    ),
                )
                .await?;
                if resp.status == 404 {
                    None
                } else {
                    let app: Application =
                        resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
                    Some(Found {
                        app,
                        principal: None,
                    })
                }
            }
            None => None,
        };
        let found = match earlier {
            Some(f) => Some(f),
            None => find(cx, &client, input).await?,
        };
        let mut found = match found {
            Some(f) => f,
            None => {
                let body = json!({"displayName": input.display_name, "tags": owner_tags(cx)});
                let app: Application = graph(cx, &client, "POST", "applications", Some(&body))
                    .await?
                    .json()
                    .map_err(StepError::from)?;
                cx.save_progress(json!({"application_object_id": app.id}))
                    .await?;
                cx.info(&format!(
                    "created application {} ({})",
                    input.display_name, app.app_id
                ));
                Found {
                    app,
                    principal: None,
                }
            }
        };
        if found.principal.is_none() {
            found.principal = principal_of(cx, &client, &found.app.app_id).await?;
        }
        let principal = match found.principal.take() {
            Some(p) => p,
            None => graph(
                cx,
                &client,
                "POST",
                "servicePrincipals",
                Some(&json!({"appId": found.app.app_id})),
            )
            .await?
            .json()
            .map_err(StepError::from)?,
        };
        let password = if input.password {
            match stored_password(cx, &client, input, &found.app).await? {
                Some(p) => Some(p),
                None => Some(new_password(cx, &client, input, &found.app).await?),
            }
        } else {
            None
        };
        Ok(Progress::Done(output(&found, &principal, password)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_quoted_and_encoded() {
        assert_eq!(
            filter("displayName", "rancher's app"),
            "displayName%20eq%20%27rancher%27%27s%20app%27"
        );
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn key_vault_needs_a_password_and_one_vault() {
        let input = |v: Value| -> SpInput { serde_json::from_value(v).unwrap() };
        let step = ServicePrincipalStep;
        assert!(step
            .validate(&input(json!({"display_name": "a", "password": true, "key_vault_secret": "s", "vault": "v"})))
            .is_ok());
        for bad in [
            json!({"display_name": "a", "key_vault_secret": "s", "vault": "v"}),
            json!({"display_name": "a", "password": true, "key_vault_secret": "s"}),
            json!({"display_name": "a", "vault": "v"}),
            json!({"display_name": " "}),
        ] {
            assert_eq!(step.validate(&input(bad)).unwrap_err().code, "InvalidInput");
        }
    }
}
