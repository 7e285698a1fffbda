//! `azure.keyvault-secret`: get, set or ensure (create once with a generated value) a Key
//! Vault secret; the value is a secret output, never persisted.

use rand::Rng;
use serde::{Deserialize, Serialize};
use siteflow_azure::models::{SecretBundle, SecretSetParameters, Tags};
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, cancellable, owner_tags};

/// Key Vault data-plane API version.
pub const API: &str = "7.6";

/// What to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvMode {
    /// Read an existing secret.
    #[default]
    Get,
    /// Write `value` (a new version when it differs).
    Set,
    /// Create it with a generated value unless it exists; then read it.
    Ensure,
}

/// Characters of a generated value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// A–Z, a–z, 0–9.
    #[default]
    Alphanumeric,
    /// 0–9, a–f.
    Hex,
    /// Printable ASCII without space, quotes and backslash.
    Printable,
}

fn default_length() -> usize {
    32
}

/// Input of `azure.keyvault-secret`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Vault name (`https://{vault}.{suffix}`), or…
    pub vault: Option<String>,
    /// …the vault URL itself.
    pub vault_url: Option<String>,
    /// Secret name.
    pub name: String,
    /// `get` (default), `set` or `ensure`.
    #[serde(default)]
    pub mode: KvMode,
    /// The value for `set`.
    pub value: Option<Secret<String>>,
    /// Generated value length (`ensure`).
    #[serde(default = "default_length")]
    pub length: usize,
    /// Generated value characters (`ensure`).
    #[serde(default)]
    pub charset: Charset,
    /// Content type.
    pub content_type: Option<String>,
}

/// Output of `azure.keyvault-secret`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KvOutput {
    /// Secret id with version.
    pub id: String,
    /// The value.
    pub value: Secret<String>,
}

/// The step kind.
pub struct KeyVaultSecretStep;

/// The URL of secret `name` in a vault given by name (`https://{vault}.{suffix}`) or URL.
pub fn secret_url(
    vault: Option<&str>,
    vault_url: Option<&str>,
    name: &str,
    suffix: &str,
) -> String {
    let base = match (vault_url, vault) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(v)) => format!("https://{v}.{suffix}"),
        (None, None) => String::new(),
    };
    format!("{base}/secrets/{name}")
}

fn input_url(input: &KvInput, suffix: &str) -> String {
    secret_url(
        input.vault.as_deref(),
        input.vault_url.as_deref(),
        &input.name,
        suffix,
    )
}

/// A secret as read back: its id (with version), value and tags.
pub(crate) struct StoredSecret {
    pub(crate) id: String,
    pub(crate) value: Secret<String>,
    pub(crate) tags: Tags,
}

/// Reads the latest version of the secret at `url` (`None` when there is none); the value is
/// registered for redaction.
pub(crate) async fn read_secret(
    cx: &StepContext,
    client: &ArmClient,
    url: &str,
) -> Result<Option<StoredSecret>, StepError> {
    let url = format!("{url}?api-version={API}");
    let resp = cancellable(
        cx,
        client.send_raw(Service::KeyVault, "GET", &url, None, &[]),
    )
    .await?;
    if resp.status == 404 {
        return Ok(None);
    }
    let b: SecretBundle = resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
    let value = b.value.unwrap_or_default();
    cx.add_secret(&value);
    Ok(Some(StoredSecret {
        id: b.id.unwrap_or_default(),
        value: Secret::new(value),
        tags: b.tags.unwrap_or_default(),
    }))
}

/// Writes a new version of the secret at `url`, tagged for this step plus `tags`; returns
/// the version's id.
pub(crate) async fn write_secret(
    cx: &StepContext,
    client: &ArmClient,
    url: &str,
    value: &str,
    tags: &Tags,
    content_type: Option<String>,
) -> Result<String, StepError> {
    cx.add_secret(value);
    let url = format!("{url}?api-version={API}");
    let body = serde_json::to_value(SecretSetParameters {
        value: value.to_string(),
        tags: Some(owner_tags(cx, tags)),
        content_type,
    })
    .unwrap_or_default();
    let b: SecretBundle = cancellable(cx, client.send(Service::KeyVault, "PUT", &url, Some(&body)))
        .await?
        .json()
        .map_err(StepError::from)?;
    Ok(b.id.unwrap_or_default())
}

fn generate(len: usize, charset: Charset) -> String {
    let chars: Vec<char> = match charset {
        Charset::Alphanumeric => ('A'..='Z').chain('a'..='z').chain('0'..='9').collect(),
        Charset::Hex => ('0'..='9').chain('a'..='f').collect(),
        Charset::Printable => ('!'..='~').filter(|c| !"\"'\\`".contains(*c)).collect(),
    };
    let mut rng = rand::rng();
    (0..len)
        .map(|_| chars[rng.random_range(0..chars.len())])
        .collect()
}

async fn read(cx: &StepContext, input: &KvInput) -> Result<Option<KvOutput>, StepError> {
    let client = input.azure.client()?;
    let url = input_url(input, &client.endpoints().keyvault_suffix);
    Ok(read_secret(cx, &client, &url).await?.map(|s| KvOutput {
        id: s.id,
        value: s.value,
    }))
}

impl Step for KeyVaultSecretStep {
    const KIND: &'static str = "azure.keyvault-secret";
    type Input = KvInput;
    type Output = KvOutput;

    fn description(&self) -> &'static str {
        "Reads, writes or ensures (generates once) a Key Vault secret; the value stays secret"
    }

    fn validate(&self, input: &KvInput) -> Result<(), StepError> {
        if input.vault.is_none() == input.vault_url.is_none() {
            return Err(StepError::permanent(
                "InvalidInput",
                "give exactly one of `vault` and `vault_url`",
            ));
        }
        if input.name.is_empty()
            || !input
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(StepError::permanent(
                "InvalidInput",
                "a secret name has only letters, digits and -",
            ));
        }
        if (input.mode == KvMode::Set) != input.value.is_some() {
            return Err(StepError::permanent(
                "InvalidInput",
                "`value` is given with `mode: set`, and only then",
            ));
        }
        if input.mode == KvMode::Ensure && !(8..=4096).contains(&input.length) {
            return Err(StepError::permanent(
                "InvalidInput",
                "`length` is between 8 and 4096",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &KvInput,
    ) -> Result<Observed<KvOutput>, StepError> {
        if let Some(v) = &input.value {
            cx.add_secret(v.expose());
        }
        let got = read(cx, input).await?;
        Ok(match (input.mode, got) {
            (KvMode::Set, Some(o))
                if Some(o.value.expose()) != input.value.as_ref().map(|v| v.expose()) =>
            {
                Observed::NotSatisfied {
                    reason: Some("the value differs".into()),
                }
            }
            (_, Some(o)) => Observed::Satisfied(o),
            (_, None) => Observed::NotSatisfied {
                reason: Some("no such secret".into()),
            },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &KvInput,
    ) -> Result<Progress<KvOutput>, StepError> {
        let value = match input.mode {
            KvMode::Get => {
                return Err(StepError::permanent(
                    "SecretNotFound",
                    format!("Key Vault secret {} does not exist", input.name),
                ));
            }
            KvMode::Set => input.value.clone().unwrap_or_default().into_inner(),
            KvMode::Ensure => {
                if let Some(o) = read(cx, input).await? {
                    return Ok(Progress::Done(o));
                }
                generate(input.length, input.charset)
            }
        };
        let client = input.azure.client()?;
        let url = input_url(input, &client.endpoints().keyvault_suffix);
        let id = write_secret(
            cx,
            &client,
            &url,
            &value,
            &Tags::new(),
            input.content_type.clone(),
        )
        .await?;
        Ok(Progress::Done(KvOutput {
            id,
            value: Secret::new(value),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_use_the_charset() {
        let v = generate(64, Charset::Hex);
        assert_eq!(v.len(), 64);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(
            generate(32, Charset::Alphanumeric),
            generate(32, Charset::Alphanumeric)
        );
        assert!(!generate(200, Charset::Printable).contains(['"', '\\', ' ']));
    }
}
