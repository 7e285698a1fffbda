//! Credentials: a chain like DefaultAzureCredential (environment service principal, workload
//! identity, managed identity, Azure CLI, Azure Developer CLI) or one source chosen
//! explicitly. When every source fails, one error lists each and why.

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions as CoreOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential,
    AzureDeveloperCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde::{Deserialize, Serialize};
use siteflow_step::Secret;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{AzureError, CloudName, Endpoints};

/// Which credential to use.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Try, in order: environment, workload identity, managed identity, Azure CLI, azd.
    #[default]
    Default,
    /// A service principal with a client secret (`client_secret` or `AZURE_CLIENT_SECRET`).
    ClientSecret,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// The managed identity of the host (IMDS, App Service).
    ManagedIdentity,
    /// `az account get-access-token`.
    AzureCli,
    /// `azd auth token`.
    AzureDeveloperCli,
}

/// How to authenticate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    /// The credential source (default: the chain).
    pub kind: CredentialKind,
    /// Entra tenant (else `AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Application (client) id (else `AZURE_CLIENT_ID`); for managed identity, a
    /// user-assigned identity's client id.
    pub client_id: Option<String>,
    /// Client secret (else `AZURE_CLIENT_SECRET`); pass it from a workflow secret.
    pub client_secret: Option<Secret<String>>,
    /// A file holding the client secret (read when the client is built; the path, not the
    /// secret, is what the run stores). Used when `client_secret` is absent.
    pub client_secret_file: Option<String>,
    /// Federated token file (else `AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<String>,
    /// How long one source may take to answer before the chain moves on (seconds).
    pub source_timeout_secs: Option<u64>,
}

/// One source of the chain: its name and the credential, or why it could not be built.
pub struct CredentialSource {
    /// `EnvironmentCredential`, `WorkloadIdentityCredential`, …
    pub name: &'static str,
    /// The credential, or why it is unavailable.
    pub credential: Result<Arc<dyn TokenCredential>, String>,
}

/// Tries each source in turn, remembering the first that worked.
struct ChainCredential {
    sources: Vec<CredentialSource>,
    chosen: Mutex<Option<usize>>,
    timeout: Duration,
}

impl std::fmt::Debug for ChainCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.sources.iter().map(|s| s.name).collect();
        f.debug_struct("ChainCredential")
            .field("sources", &names)
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ChainCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = chosen
            && let Ok(c) = &self.sources[i].credential
        {
            return c.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let c = match &s.credential {
                Ok(c) => c,
                Err(why) => {
                    failures.push(format!("{}: {why}", s.name));
                    continue;
                }
            };
            match tokio::time::timeout(self.timeout, c.get_token(scopes, options.clone())).await {
                Ok(Ok(t)) => {
                    *self.chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                    return Ok(t);
                }
                Ok(Err(e)) => failures.push(format!("{}: {}", s.name, one_line(&e.to_string()))),
                Err(_) => failures.push(format!(
                    "{}: no answer within {} s",
                    s.name,
                    self.timeout.as_secs()
                )),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no credential could get a token; tried {}",
                failures.join("; ")
            ),
        ))
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("To troubleshoot"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn core_options(endpoints: &Endpoints, cloud: CloudName, transport: &Transport) -> CoreOptions {
    let cloud = match cloud {
        CloudName::Public => CloudConfiguration::AzurePublic,
        CloudName::UsGovernment => CloudConfiguration::AzureGovernment,
        CloudName::China => CloudConfiguration::AzureChina,
        CloudName::Custom => {
            let mut c = CustomConfiguration::default();
            c.authority_host = endpoints.authority_host.clone();
            c.into()
        }
    };
    // A custom authority host on a named cloud also becomes a custom cloud.
    let cloud = match cloud {
        CloudConfiguration::Custom(_) => cloud,
        _ if !endpoints.authority_host.is_empty()
            && !default_authority(&cloud).eq_ignore_ascii_case(&endpoints.authority_host) =>
        {
            let mut c = CustomConfiguration::default();
            c.authority_host = endpoints.authority_host.clone();
            c.into()
        }
        other => other,
    };
    CoreOptions {
        transport: Some(transport.clone()),
        cloud: Some(Arc::new(cloud)),
        ..Default::default()
    }
}

fn default_authority(c: &CloudConfiguration) -> &'static str {
    match c {
        CloudConfiguration::AzureGovernment => "https://login.microsoftonline.us",
        CloudConfiguration::AzureChina => "https://login.chinacloudapi.cn",
        _ => "https://login.microsoftonline.com",
    }
}

fn lookup(cfg: Option<&String>, env: &HashMap<String, String>, var: &str) -> Option<String> {
    cfg.cloned()
        .or_else(|| env.get(var).cloned())
        .filter(|v| !v.is_empty())
}

fn client_secret_source(
    config: &CredentialConfig,
    env: &HashMap<String, String>,
    opts: &CoreOptions,
    name: &'static str,
) -> CredentialSource {
    let tenant = lookup(config.tenant_id.as_ref(), env, "AZURE_TENANT_ID");
    let client = lookup(config.client_id.as_ref(), env, "AZURE_CLIENT_ID");
    let secret = config
        .client_secret
        .as_ref()
        .map(|s| s.expose().clone())
        .or_else(|| {
            config
                .client_secret_file
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .map(|s| s.trim().to_string())
        })
        .or_else(|| env.get("AZURE_CLIENT_SECRET").cloned())
        .filter(|v| !v.is_empty());
    let credential = match (tenant, client, secret) {
        (Some(t), Some(c), Some(s)) => ClientSecretCredential::new(
            &t,
            c,
            s.into(),
            Some(ClientSecretCredentialOptions {
                client_options: opts.clone(),
            }),
        )
        .map(|c| c as Arc<dyn TokenCredential>)
        .map_err(|e| one_line(&e.to_string())),
        (t, c, s) => {
            let missing: Vec<&str> = [
                ("AZURE_TENANT_ID", t.is_none()),
                ("AZURE_CLIENT_ID", c.is_none()),
                ("AZURE_CLIENT_SECRET", s.is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            Err(format!("{} not set", missing.join(", ")))
        }
    };
    CredentialSource { name, credential }
}

fn workload_source(
    config: &CredentialConfig,
    env: &HashMap<String, String>,
    opts: &CoreOptions,
) -> CredentialSource {
    let file = lookup(
        config.federated_token_file.as_ref(),
        env,
        "AZURE_FEDERATED_TOKEN_FILE",
    );
    let tenant = lookup(config.tenant_id.as_ref(), env, "AZURE_TENANT_ID");
    let client = lookup(config.client_id.as_ref(), env, "AZURE_CLIENT_ID");
    let credential = match (file, tenant, client) {
        (Some(f), Some(t), Some(c)) => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: opts.clone(),
                },
                client_id: Some(c),
                tenant_id: Some(t),
                token_file_path: Some(PathBuf::from(f)),
            }))
            .map(|c| c as Arc<dyn TokenCredential>)
            .map_err(|e| one_line(&e.to_string()))
        }
        (None, ..) => Err("AZURE_FEDERATED_TOKEN_FILE not set".into()),
        _ => Err("AZURE_TENANT_ID or AZURE_CLIENT_ID not set".into()),
    };
    CredentialSource {
        name: "WorkloadIdentityCredential",
        credential,
    }
}

fn managed_source(config: &CredentialConfig, opts: &CoreOptions) -> CredentialSource {
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
        client_options: opts.clone(),
    }))
    .map(|c| c as Arc<dyn TokenCredential>)
    .map_err(|e| one_line(&e.to_string()));
    CredentialSource {
        name: "ManagedIdentityCredential",
        credential,
    }
}

fn cli_source(config: &CredentialConfig) -> CredentialSource {
    let credential = AzureCliCredential::new(Some(AzureCliCredentialOptions {
        tenant_id: config.tenant_id.clone(),
        ..Default::default()
    }))
    .map(|c| c as Arc<dyn TokenCredential>)
    .map_err(|e| one_line(&e.to_string()));
    CredentialSource {
        name: "AzureCliCredential",
        credential,
    }
}

fn azd_source(config: &CredentialConfig) -> CredentialSource {
    let credential = AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
        tenant_id: config.tenant_id.clone(),
        ..Default::default()
    }))
    .map(|c| c as Arc<dyn TokenCredential>)
    .map_err(|e| one_line(&e.to_string()));
    CredentialSource {
        name: "AzureDeveloperCliCredential",
        credential,
    }
}

/// Builds the credential the configuration asks for, reading variables from `env` (a
/// snapshot of the process environment in production; a map in tests).
pub(crate) fn build(
    config: &CredentialConfig,
    env: &HashMap<String, String>,
    endpoints: &Endpoints,
    cloud: CloudName,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, AzureError> {
    let opts = core_options(endpoints, cloud, transport);
    let sources = match config.kind {
        CredentialKind::Default => vec![
            client_secret_source(config, env, &opts, "EnvironmentCredential"),
            workload_source(config, env, &opts),
            managed_source(config, &opts),
            cli_source(config),
            azd_source(config),
        ],
        CredentialKind::ClientSecret => vec![client_secret_source(
            config,
            env,
            &opts,
            "ClientSecretCredential",
        )],
        CredentialKind::WorkloadIdentity => vec![workload_source(config, env, &opts)],
        CredentialKind::ManagedIdentity => vec![managed_source(config, &opts)],
        CredentialKind::AzureCli => vec![cli_source(config)],
        CredentialKind::AzureDeveloperCli => vec![azd_source(config)],
    };
    Ok(chain_from(
        sources,
        Duration::from_secs(config.source_timeout_secs.unwrap_or(30)),
    ))
}

/// A chain over explicit sources (for callers that assemble their own), each given at most
/// `timeout` to answer.
pub fn chain_from(sources: Vec<CredentialSource>, timeout: Duration) -> Arc<dyn TokenCredential> {
    Arc::new(ChainCredential {
        sources,
        chosen: Mutex::new(None),
        timeout,
    })
}
