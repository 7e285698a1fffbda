//! `arc.extension` and `arc.flux-configuration`: Microsoft.KubernetesConfiguration resources
//! under a connected cluster. A Flux configuration is done only when the cluster's agent has
//! fetched the source and reported it `Compliant`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};
use siteflow_steps_azure::common::{AzureConnection, Drive, Pending, cancellable, drive};
use std::collections::BTreeMap;
use std::time::Duration;

/// API version of `extensions`.
pub const EXTENSIONS_API: &str = "2025-03-01";
/// API version of `fluxConfigurations`.
pub const FLUX_API: &str = "2025-04-01";

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

fn child_url(
    client: &siteflow_azure::ArmClient,
    cluster_id: &str,
    child: &str,
    api: &str,
) -> Result<String, StepError> {
    let lower = cluster_id.to_ascii_lowercase();
    if !lower.contains("/providers/microsoft.kubernetes/connectedclusters/")
        && !lower.contains("/providers/microsoft.containerservice/managedclusters/")
    {
        return Err(invalid(format!(
            "`cluster_id` must be a connected cluster's (arc.connect's `id`) or an AKS cluster's (azure.aks's `id`) resource id, not {cluster_id:?}"
        )));
    }
    Ok(client.arm_url(
        &format!("{cluster_id}/providers/Microsoft.KubernetesConfiguration/{child}"),
        api,
    ))
}

fn stable() -> String {
    "Stable".into()
}
fn yes() -> bool {
    true
}

/// Input of `arc.extension`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArcExtensionInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// The cluster: a connected cluster (arc.connect's `id`) or an AKS cluster (azure.aks's
    /// `id`).
    pub cluster_id: String,
    /// The extension's name (`flux`).
    pub name: String,
    /// Its type (`microsoft.flux`).
    pub extension_type: String,
    /// Release train.
    #[serde(default = "stable")]
    pub release_train: String,
    /// Upgrade minor versions automatically.
    #[serde(default = "yes")]
    pub auto_upgrade_minor_version: bool,
    /// Configuration settings.
    #[serde(default)]
    pub configuration_settings: BTreeMap<String, String>,
    /// The namespace a cluster-scoped extension's release goes into.
    pub release_namespace: Option<String>,
}

/// Output of `arc.extension`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArcExtensionOutput {
    /// Resource id.
    pub id: String,
    /// The installed version.
    pub version: Option<String>,
}

/// The `arc.extension` kind.
pub struct ArcExtension;

impl Step for ArcExtension {
    const KIND: &'static str = "arc.extension";
    type Input = ArcExtensionInput;
    type Output = ArcExtensionOutput;

    fn description(&self) -> &'static str {
        "Install a cluster extension (e.g. microsoft.flux) on an Arc-connected or AKS cluster"
    }

    fn validate(&self, input: &ArcExtensionInput) -> Result<(), StepError> {
        if input.name.is_empty() || input.extension_type.is_empty() {
            return Err(invalid("`name` and `extension_type` must not be empty"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ArcExtensionInput,
    ) -> Result<Observed<ArcExtensionOutput>, StepError> {
        let client = input.azure.client()?;
        let url = child_url(
            &client,
            &input.cluster_id,
            &format!("extensions/{}", input.name),
            EXTENSIONS_API,
        )?;
        let Some(live) = cancellable(cx, client.get_opt::<Value>(&url)).await? else {
            return Ok(Observed::missing());
        };
        if !str_at(&live, "/properties/extensionType")
            .is_some_and(|t| t.eq_ignore_ascii_case(&input.extension_type))
        {
            return Err(StepError::permanent(
                "ExtensionTypeMismatch",
                format!(
                    "extension {} exists with type {:?}; choose another name",
                    input.name,
                    str_at(&live, "/properties/extensionType")
                ),
            ));
        }
        if str_at(&live, "/properties/provisioningState") != Some("Succeeded") {
            return Ok(Observed::NotSatisfied {
                reason: Some("the extension is not provisioned".into()),
            });
        }
        let live_settings: BTreeMap<String, String> = live
            .pointer("/properties/configurationSettings")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        if live_settings != input.configuration_settings {
            return Ok(Observed::NotSatisfied {
                reason: Some("configurationSettings differ".into()),
            });
        }
        Ok(Observed::Satisfied(ArcExtensionOutput {
            id: str_at(&live, "/id").unwrap_or_default().to_string(),
            version: str_at(&live, "/properties/currentVersion").map(str::to_string),
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ArcExtensionInput,
    ) -> Result<Progress<ArcExtensionOutput>, StepError> {
        let client = input.azure.client()?;
        let url = child_url(
            &client,
            &input.cluster_id,
            &format!("extensions/{}", input.name),
            EXTENSIONS_API,
        )?;
        let mut props = json!({
            "extensionType": input.extension_type,
            "releaseTrain": input.release_train,
            "autoUpgradeMinorVersion": input.auto_upgrade_minor_version,
            "configurationSettings": input.configuration_settings,
        });
        if let Some(ns) = &input.release_namespace {
            props["scope"] = json!({"cluster": {"releaseNamespace": ns}});
        }
        let body = json!({"properties": props});
        let mut pending = Pending::load(cx);
        match drive(
            cx,
            &client,
            &mut pending,
            "extension",
            "PUT",
            &url,
            Some(&body),
        )
        .await?
        {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after.max(Duration::from_millis(10)),
            }),
            Drive::Done(_) => {
                let live = cancellable(cx, client.get_opt::<Value>(&url))
                    .await?
                    .unwrap_or_default();
                if str_at(&live, "/properties/provisioningState") != Some("Succeeded") {
                    return Ok(Progress::Wait {
                        recheck_after: Duration::from_secs(5),
                    });
                }
                Ok(Progress::Done(ArcExtensionOutput {
                    id: str_at(&live, "/id").unwrap_or_default().to_string(),
                    version: str_at(&live, "/properties/currentVersion").map(str::to_string),
                }))
            }
        }
    }
}

/// A Flux kustomization.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kustomization {
    /// Path in the repository.
    pub path: String,
    /// Delete what is no longer in the source.
    #[serde(default)]
    pub prune: bool,
    /// Kustomizations that must be ready first.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

fn main_branch() -> String {
    "main".into()
}
fn git_user() -> String {
    "git".into()
}
fn flux_ns() -> String {
    "flux-system".into()
}
fn ten_s() -> siteflow_step::Duration {
    std::time::Duration::from_secs(10).into()
}

/// Input of `arc.flux-configuration`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArcFluxInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// The cluster: a connected cluster (arc.connect's `id`) or an AKS cluster (azure.aks's
    /// `id`).
    pub cluster_id: String,
    /// The configuration's name.
    pub name: String,
    /// Namespace of the Flux objects.
    #[serde(default = "flux_ns")]
    pub namespace: String,
    /// Git repository URL (https://, or ssh:// with `ssh_private_key`).
    pub url: String,
    /// Branch.
    #[serde(default = "main_branch")]
    pub branch: String,
    /// HTTPS user.
    #[serde(default = "git_user")]
    pub https_user: String,
    /// HTTPS token (a secret; sent as a protected setting).
    pub https_token: Option<Secret<String>>,
    /// SSH private key (a secret; sent as a protected setting).
    pub ssh_private_key: Option<Secret<String>>,
    /// Kustomizations by name.
    pub kustomizations: BTreeMap<String, Kustomization>,
    /// How often to check compliance.
    #[serde(default = "ten_s")]
    pub interval: siteflow_step::Duration,
}

/// Output of `arc.flux-configuration`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArcFluxOutput {
    /// Resource id.
    pub id: String,
    /// `Compliant`.
    pub compliance_state: String,
    /// The source revision the cluster applied (`branch@sha1:…`).
    pub revision: Option<String>,
    /// The public key to register as a deploy key (ssh sources).
    pub repository_public_key: Option<String>,
}

/// The `arc.flux-configuration` kind.
pub struct ArcFluxConfiguration;

fn flux_output(live: &Value) -> ArcFluxOutput {
    ArcFluxOutput {
        id: str_at(live, "/id").unwrap_or_default().to_string(),
        compliance_state: str_at(live, "/properties/complianceState")
            .unwrap_or_default()
            .to_string(),
        revision: str_at(live, "/properties/sourceSyncedCommitId").map(str::to_string),
        repository_public_key: str_at(live, "/properties/repositoryPublicKey").map(str::to_string),
    }
}

/// What differs between the live configuration and the input (`None`: nothing).
fn flux_drift(input: &ArcFluxInput, live: &Value) -> Option<String> {
    if str_at(live, "/properties/gitRepository/url") != Some(input.url.as_str()) {
        return Some("the git URL differs".into());
    }
    if str_at(live, "/properties/gitRepository/repositoryRef/branch") != Some(input.branch.as_str())
    {
        return Some("the branch differs".into());
    }
    // Each kustomization's path, prune and dependsOn, as the service returns them.
    type Shape = (String, bool, Vec<String>);
    let have: BTreeMap<String, Shape> = live
        .pointer("/properties/kustomizations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let depends_on = v["dependsOn"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|d| d.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let shape = (
                        str_at(v, "/path").unwrap_or_default().to_string(),
                        v["prune"].as_bool().unwrap_or(false),
                        depends_on,
                    );
                    (k.clone(), shape)
                })
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeMap<String, Shape> = input
        .kustomizations
        .iter()
        .map(|(k, v)| (k.clone(), (v.path.clone(), v.prune, v.depends_on.clone())))
        .collect();
    (have != want).then(|| "the kustomizations differ".into())
}

/// Where the fingerprint of a configuration's credentials is kept (shared values).
const CREDENTIALS_NAMESPACE: &str = "arc.flux-configuration/credentials";

/// The protected settings a PUT sends: the credentials, base64 as the service wants them.
fn protected_settings(input: &ArcFluxInput) -> serde_json::Map<String, Value> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut protected = serde_json::Map::new();
    if let Some(t) = &input.https_token {
        protected.insert("httpsKey".into(), json!(b64(t.expose())));
    }
    if let Some(k) = &input.ssh_private_key {
        protected.insert("sshPrivateKey".into(), json!(b64(k.expose())));
    }
    protected
}

/// A salted SHA-256 of the protected settings: the service never returns them, so this is
/// how a later run sees that a token or key was rotated (the values themselves are never
/// stored).
fn credentials_fingerprint(salt: &str, protected: &serde_json::Map<String, Value>) -> String {
    siteflow_step::sha256_hex(format!("{salt}\0{}", Value::Object(protected.clone())).as_bytes())
}

/// Whether the credentials differ from those the configuration at `url` was last given. A
/// configuration siteflow never gave credentials to is current when there are none.
async fn credentials_changed(
    cx: &StepContext,
    url: &str,
    protected: &serde_json::Map<String, Value>,
) -> Result<bool, StepError> {
    let key = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    Ok(match cx.shared_value(CREDENTIALS_NAMESPACE, &key).await? {
        Some(v) => {
            let salt = v["salt"].as_str().unwrap_or_default();
            v["sha256"].as_str() != Some(credentials_fingerprint(salt, protected).as_str())
        }
        None => !protected.is_empty(),
    })
}

/// Records the credentials the configuration at `url` now has.
async fn record_credentials(
    cx: &StepContext,
    url: &str,
    protected: &serde_json::Map<String, Value>,
) -> Result<(), StepError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| StepError::retryable("Random", format!("no random salt: {e}")))?;
    let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    let key = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    cx.set_shared_value(
        CREDENTIALS_NAMESPACE,
        &key,
        json!({"salt": salt, "sha256": credentials_fingerprint(&salt, protected)}),
    )
    .await
}

impl Step for ArcFluxConfiguration {
    const KIND: &'static str = "arc.flux-configuration";
    type Input = ArcFluxInput;
    type Output = ArcFluxOutput;

    fn description(&self) -> &'static str {
        "A Flux configuration on an Arc-connected or AKS cluster, waiting until the cluster reports it Compliant"
    }

    fn validate(&self, input: &ArcFluxInput) -> Result<(), StepError> {
        if input.kustomizations.is_empty() {
            return Err(invalid("give at least one kustomization"));
        }
        let ssh = input.url.starts_with("ssh://") || input.url.starts_with("git@");
        if !ssh
            && !input.url.starts_with("https://")
            && !input.url.starts_with("http://")
            && !input.url.starts_with("git://")
        {
            return Err(invalid(
                "`url` is an https://, http://, git:// or ssh:// git URL",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ArcFluxInput,
    ) -> Result<Observed<ArcFluxOutput>, StepError> {
        let client = input.azure.client()?;
        let url = child_url(
            &client,
            &input.cluster_id,
            &format!("fluxConfigurations/{}", input.name),
            FLUX_API,
        )?;
        let Some(live) = cancellable(cx, client.get_opt::<Value>(&url)).await? else {
            return Ok(Observed::missing());
        };
        if let Some(why) = flux_drift(input, &live) {
            return Ok(Observed::NotSatisfied { reason: Some(why) });
        }
        if credentials_changed(cx, &url, &protected_settings(input)).await? {
            return Ok(Observed::NotSatisfied {
                reason: Some("the git credentials changed".into()),
            });
        }
        match str_at(&live, "/properties/complianceState") {
            Some("Compliant") => Ok(Observed::Satisfied(flux_output(&live))),
            other => Ok(Observed::NotSatisfied {
                reason: Some(format!("complianceState is {}", other.unwrap_or("unknown"))),
            }),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ArcFluxInput,
    ) -> Result<Progress<ArcFluxOutput>, StepError> {
        let interval = input.interval.get();
        let client = input.azure.client()?;
        let url = child_url(
            &client,
            &input.cluster_id,
            &format!("fluxConfigurations/{}", input.name),
            FLUX_API,
        )?;
        let live = cancellable(cx, client.get_opt::<Value>(&url)).await?;
        let mut pending = Pending::load(cx);
        let protected = protected_settings(input);
        let needs_put = pending.ops.contains_key("flux")
            || live.as_ref().is_none_or(|l| flux_drift(input, l).is_some())
            || credentials_changed(cx, &url, &protected).await?;
        if needs_put {
            let kustomizations: serde_json::Map<String, Value> = input
                .kustomizations
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({"path": v.path, "prune": v.prune, "dependsOn": v.depends_on, "syncIntervalInSeconds": 600}),
                    )
                })
                .collect();
            let mut git = json!({"url": input.url, "repositoryRef": {"branch": input.branch}, "syncIntervalInSeconds": 600, "timeoutInSeconds": 600});
            if input.https_token.is_some() {
                git["httpsUser"] = json!(input.https_user);
            }
            let body = json!({"properties": {
                "scope": "cluster",
                "namespace": input.namespace,
                "sourceKind": "GitRepository",
                "gitRepository": git,
                "kustomizations": kustomizations,
                "configurationProtectedSettings": protected,
            }});
            if let Drive::Wait(after) =
                drive(cx, &client, &mut pending, "flux", "PUT", &url, Some(&body)).await?
            {
                return Ok(Progress::Wait {
                    recheck_after: after.max(Duration::from_millis(10)),
                });
            }
            record_credentials(cx, &url, &protected).await?;
        }
        let live = cancellable(cx, client.get_opt::<Value>(&url))
            .await?
            .unwrap_or_default();
        match str_at(&live, "/properties/complianceState") {
            Some("Compliant") => Ok(Progress::Done(flux_output(&live))),
            state => {
                // An ssh source without a key: the service made one; the repository must
                // accept it before the cluster can fetch.
                if input.ssh_private_key.is_none()
                    && let Some(key) = str_at(&live, "/properties/repositoryPublicKey")
                    && pending.done.get("deploy_key").map(String::as_str) != Some(key)
                {
                    cx.info(&format!(
                        "add this public key to the repository as a read-only deploy key: {key}"
                    ));
                    pending.done.insert("deploy_key".into(), key.to_string());
                    pending.save(cx).await?;
                }
                let msg = str_at(&live, "/properties/errorMessage").unwrap_or_default();
                cx.info(&format!(
                    "waiting for the cluster to reconcile {} (complianceState {}{})",
                    input.name,
                    state.unwrap_or("unknown"),
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                ));
                Ok(Progress::Wait {
                    recheck_after: interval,
                })
            }
        }
    }
}
