//! `azure.storage-account` (a StorageV2 account with shared-key access for SMB mounts, its key
//! as a secret output from `listKeys`) and `azure.file-share` (a share of its `default` file
//! service, with a quota).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::models::Tags;
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{
    AzureConnection, Drive, Pending, cancellable, drive, is_ours, not_owned, owner_tags,
    provisioning_state, resource_path,
};

/// API version of Microsoft.Storage (the newest stable spec folder).
pub const API: &str = "2025-06-01";

/// Storage account names: 3 to 24 characters, digits and lower-case letters only (they are
/// global: `<name>.file.core.windows.net`).
pub fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// File share names: 3 to 63 characters of lower-case letters, digits and single hyphens,
/// starting and ending with a letter or digit.
pub fn valid_share_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn standard_lrs() -> String {
    "Standard_LRS".into()
}

fn storage_v2() -> String {
    "StorageV2".into()
}

fn tls12() -> String {
    "TLS1_2".into()
}

fn yes() -> bool {
    true
}

/// Input of `azure.storage-account`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageAccountInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// Account name: 3-24 lower-case letters and digits, unique in all of Azure.
    pub name: String,
    /// SKU (`Standard_LRS`, `Standard_ZRS`, `Premium_LRS`, ...).
    #[serde(default = "standard_lrs")]
    pub sku: String,
    /// Kind (`StorageV2`, or `FileStorage` for premium shares).
    #[serde(default = "storage_v2")]
    pub kind: String,
    /// Shared-key access (SMB mounts with the account key need it).
    #[serde(default = "yes")]
    pub allow_shared_key_access: bool,
    /// Minimum TLS version.
    #[serde(default = "tls12")]
    pub minimum_tls_version: String,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over an account that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.storage-account`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StorageAccountOutput {
    /// Account id.
    pub id: String,
    /// Account name.
    pub name: String,
    /// The file endpoint (`https://<name>.file.core.windows.net/`).
    pub file_endpoint: String,
    /// The first account key (`listKeys`): a secret, never persisted.
    pub key: Secret<String>,
}

/// The step kind `azure.storage-account`.
pub struct StorageAccountStep;

fn account_url(client: &ArmClient, rg: &str, name: &str, suffix: &str) -> String {
    client.arm_url(
        &format!(
            "{}{suffix}",
            resource_path(
                client.subscription(),
                rg,
                &format!("Microsoft.Storage/storageAccounts/{name}")
            )
        ),
        API,
    )
}

fn account_body(cx: &StepContext, input: &StorageAccountInput) -> Value {
    json!({
        "location": input.location,
        "tags": owner_tags(cx, &input.tags),
        "kind": input.kind,
        "sku": {"name": input.sku},
        "properties": {
            "allowSharedKeyAccess": input.allow_shared_key_access,
            "minimumTlsVersion": input.minimum_tls_version,
            "supportsHttpsTrafficOnly": true,
            "allowBlobPublicAccess": false,
        },
    })
}

/// What differs between the account and the input (drift a PUT repairs).
fn drift(input: &StorageAccountInput, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let s = |p: &str| got.pointer(p).and_then(Value::as_str).unwrap_or_default();
    if !s("/sku/name").eq_ignore_ascii_case(&input.sku) {
        out.push(format!("sku is {}, not {}", s("/sku/name"), input.sku));
    }
    if !s("/properties/minimumTlsVersion").eq_ignore_ascii_case(&input.minimum_tls_version) {
        out.push(format!(
            "minimumTlsVersion is {}, not {}",
            s("/properties/minimumTlsVersion"),
            input.minimum_tls_version
        ));
    }
    let shared = got
        .pointer("/properties/allowSharedKeyAccess")
        .and_then(Value::as_bool)
        // Absent means allowed.
        .unwrap_or(true);
    if shared != input.allow_shared_key_access {
        out.push(format!("allowSharedKeyAccess is {shared}"));
    }
    out
}

async fn account_output(
    cx: &StepContext,
    client: &ArmClient,
    input: &StorageAccountInput,
    got: &Value,
) -> Result<StorageAccountOutput, StepError> {
    let keys: Value = cancellable(
        cx,
        client.send(
            Service::Arm,
            "POST",
            &account_url(client, &input.resource_group, &input.name, "/listKeys"),
            None,
        ),
    )
    .await?
    .json()
    .map_err(StepError::from)?;
    let key = keys
        .pointer("/keys/0/value")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            StepError::permanent(
                "UnexpectedResponse",
                format!("listKeys of storage account {} gave no key", input.name),
            )
        })?;
    Ok(StorageAccountOutput {
        id: got["id"].as_str().unwrap_or_default().to_string(),
        name: input.name.clone(),
        file_endpoint: got
            .pointer("/properties/primaryEndpoints/file")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://{}.file.core.windows.net/", input.name)),
        key: Secret::new(key.to_string()),
    })
}

fn tags_of(v: &Value) -> Option<Tags> {
    v.get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
}

impl Step for StorageAccountStep {
    const KIND: &'static str = "azure.storage-account";
    type Input = StorageAccountInput;
    type Output = StorageAccountOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) a storage account for file shares; its key is a secret output"
    }

    fn validate(&self, input: &StorageAccountInput) -> Result<(), StepError> {
        if !valid_account_name(&input.name) {
            return Err(StepError::permanent(
                "InvalidInput",
                format!(
                    "`{}` is not a valid storage account name: use 3 to 24 lower-case letters and digits",
                    input.name
                ),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &StorageAccountInput,
    ) -> Result<Observed<StorageAccountOutput>, StepError> {
        let client = input.azure.client()?;
        let url = account_url(&client, &input.resource_group, &input.name, "");
        let Some(got) = cancellable(cx, client.get_opt::<Value>(&url)).await? else {
            return Ok(Observed::missing());
        };
        if !is_ours(cx, tags_of(&got).as_ref()) && !input.adopt_untagged {
            return Err(not_owned("storage account", &input.name));
        }
        if !provisioning_state(&got).is_some_and(|s| s.eq_ignore_ascii_case("Succeeded")) {
            return Ok(Observed::NotSatisfied {
                reason: Some("the account is still being created".into()),
            });
        }
        let drift = drift(input, &got);
        if !drift.is_empty() {
            for d in &drift {
                cx.info(&format!("drift: storage account {}: {d}", input.name));
            }
            return Ok(Observed::NotSatisfied {
                reason: Some("the account drifted".into()),
            });
        }
        Ok(Observed::Satisfied(
            account_output(cx, &client, input, &got).await?,
        ))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &StorageAccountInput,
    ) -> Result<Progress<StorageAccountOutput>, StepError> {
        let client = input.azure.client()?;
        let url = account_url(&client, &input.resource_group, &input.name, "");
        let mut pending = Pending::load(cx);
        let body = account_body(cx, input);
        match drive(
            cx,
            &client,
            &mut pending,
            "account",
            "PUT",
            &url,
            Some(&body),
        )
        .await?
        {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after,
            }),
            Drive::Done(_) => {
                let got: Value = cancellable(cx, client.send(Service::Arm, "GET", &url, None))
                    .await?
                    .json()
                    .map_err(StepError::from)?;
                Ok(Progress::Done(
                    account_output(cx, &client, input, &got).await?,
                ))
            }
        }
    }
}

fn default_quota() -> u32 {
    100
}

/// Input of `azure.file-share`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileShareInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group of the account.
    pub resource_group: String,
    /// The storage account.
    pub account: String,
    /// Share name: 3-63 lower-case letters, digits and single hyphens.
    pub name: String,
    /// Quota in GiB (1 to 102400).
    #[serde(default = "default_quota")]
    pub quota_gb: u32,
}

/// Output of `azure.file-share`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileShareOutput {
    /// Share id.
    pub id: String,
    /// Share name.
    pub name: String,
    /// The account.
    pub account: String,
    /// Its SMB path: `//<account>.file.core.windows.net/<share>`.
    pub unc: String,
    /// Quota in GiB.
    pub quota_gb: u32,
}

/// The step kind `azure.file-share`.
pub struct FileShareStep;

fn share_url(client: &ArmClient, input: &FileShareInput) -> String {
    account_url(
        client,
        &input.resource_group,
        &input.account,
        &format!("/fileServices/default/shares/{}", input.name),
    )
}

fn share_output(input: &FileShareInput, got: &Value) -> FileShareOutput {
    FileShareOutput {
        id: got["id"].as_str().unwrap_or_default().to_string(),
        name: input.name.clone(),
        account: input.account.clone(),
        unc: format!("//{}.file.core.windows.net/{}", input.account, input.name),
        quota_gb: got
            .pointer("/properties/shareQuota")
            .and_then(Value::as_u64)
            .map_or(input.quota_gb, |q| q as u32),
    }
}

impl Step for FileShareStep {
    const KIND: &'static str = "azure.file-share";
    type Input = FileShareInput;
    type Output = FileShareOutput;

    fn description(&self) -> &'static str {
        "Creates a file share in a storage account (or sets its quota)"
    }

    fn validate(&self, input: &FileShareInput) -> Result<(), StepError> {
        if !valid_account_name(&input.account) {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("`{}` is not a valid storage account name", input.account),
            ));
        }
        if !valid_share_name(&input.name) {
            return Err(StepError::permanent(
                "InvalidInput",
                format!(
                    "`{}` is not a valid file share name: use 3 to 63 lower-case letters, digits and single hyphens",
                    input.name
                ),
            ));
        }
        if !(1..=102_400).contains(&input.quota_gb) {
            return Err(StepError::permanent(
                "InvalidInput",
                "quota_gb is between 1 and 102400",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &FileShareInput,
    ) -> Result<Observed<FileShareOutput>, StepError> {
        let client = input.azure.client()?;
        let Some(got) =
            cancellable(cx, client.get_opt::<Value>(&share_url(&client, input))).await?
        else {
            return Ok(Observed::missing());
        };
        let out = share_output(input, &got);
        if out.quota_gb != input.quota_gb {
            cx.info(&format!(
                "drift: file share {} has a quota of {} GiB, not {}",
                input.name, out.quota_gb, input.quota_gb
            ));
            return Ok(Observed::NotSatisfied {
                reason: Some("quota differs".into()),
            });
        }
        Ok(Observed::Satisfied(out))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &FileShareInput,
    ) -> Result<Progress<FileShareOutput>, StepError> {
        let client = input.azure.client()?;
        let url = share_url(&client, input);
        let mut pending = Pending::load(cx);
        let body = json!({"properties": {"shareQuota": input.quota_gb, "enabledProtocols": "SMB"}});
        match drive(cx, &client, &mut pending, "share", "PUT", &url, Some(&body)).await? {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after,
            }),
            Drive::Done(v) => {
                let got = match v {
                    Some(v) => v,
                    None => cancellable(cx, client.send(Service::Arm, "GET", &url, None))
                        .await?
                        .json()
                        .map_err(StepError::from)?,
                };
                Ok(Progress::Done(share_output(input, &got)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_storage_rules() {
        assert!(valid_account_name("edge01files"));
        assert!(!valid_account_name("Edge"));
        assert!(!valid_account_name("ab"));
        assert!(valid_share_name("data-01"));
        assert!(!valid_share_name("-data"));
        assert!(!valid_share_name("da--ta"));
        assert!(!valid_share_name("Data"));
    }
}
