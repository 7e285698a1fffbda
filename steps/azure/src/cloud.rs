//! Azure clouds and their endpoints: public, US Government, China, or custom (the emulator).

use crate::AzureError;
use serde::{Deserialize, Serialize};

/// A named cloud.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CloudName {
    /// Azure public cloud.
    #[default]
    Public,
    /// Azure US Government.
    UsGovernment,
    /// Azure operated by 21Vianet (China).
    China,
    /// Custom endpoints (Azure Stack, the local emulator): `arm_url` and `authority_host`
    /// are required.
    Custom,
}

/// Which cloud to talk to; each endpoint may be overridden.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// The named cloud whose endpoints are the defaults.
    pub name: CloudName,
    /// Resource Manager URL (`https://management.azure.com`).
    pub arm_url: Option<String>,
    /// Entra authority host (`https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
    /// Token scope for ARM (`https://management.azure.com/.default`).
    pub arm_scope: Option<String>,
    /// Microsoft Graph URL (`https://graph.microsoft.com`).
    pub graph_url: Option<String>,
    /// Key Vault DNS suffix (`vault.azure.net`).
    pub keyvault_suffix: Option<String>,
    /// A PEM file of extra CA certificates to trust (the emulator's CA).
    pub ca_pem_file: Option<String>,
}

/// The resolved endpoints of a cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Resource Manager URL, no trailing slash.
    pub arm_url: String,
    /// Entra authority host, no trailing slash.
    pub authority_host: String,
    /// ARM token scope.
    pub arm_scope: String,
    /// Microsoft Graph URL, no trailing slash.
    pub graph_url: String,
    /// Graph token scope.
    pub graph_scope: String,
    /// Key Vault DNS suffix.
    pub keyvault_suffix: String,
}

fn trim(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

impl CloudConfig {
    /// The emulator-style custom cloud: everything served from one base URL.
    pub fn custom(base_url: &str, ca_pem_file: Option<&str>) -> Self {
        CloudConfig {
            name: CloudName::Custom,
            arm_url: Some(base_url.to_string()),
            authority_host: Some(base_url.to_string()),
            arm_scope: None,
            graph_url: Some(base_url.to_string()),
            keyvault_suffix: None,
            ca_pem_file: ca_pem_file.map(str::to_string),
        }
    }

    /// Resolves the endpoints, checking that custom clouds name theirs.
    pub fn endpoints(&self) -> Result<Endpoints, AzureError> {
        let (arm, auth, graph, kv) = match self.name {
            CloudName::Public => (
                "https://management.azure.com",
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
                "vault.azure.net",
            ),
            CloudName::UsGovernment => (
                "https://management.usgovcloudapi.net",
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
                "vault.usgovcloudapi.net",
            ),
            CloudName::China => (
                "https://management.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "vault.azure.cn",
            ),
            CloudName::Custom => ("", "", "", "vault.azure.net"),
        };
        let arm_url = trim(self.arm_url.as_deref().unwrap_or(arm));
        let authority_host = trim(self.authority_host.as_deref().unwrap_or(auth));
        if arm_url.is_empty() || authority_host.is_empty() {
            return Err(AzureError::Config(
                "a custom cloud needs `arm_url` and `authority_host`".into(),
            ));
        }
        for u in [&arm_url, &authority_host] {
            if !u.starts_with("https://") {
                return Err(AzureError::Config(format!(
                    "{u}: Azure endpoints must use https"
                )));
            }
        }
        let graph_url = trim(self.graph_url.as_deref().unwrap_or(if graph.is_empty() {
            &arm_url
        } else {
            graph
        }));
        // ARM's audience is its public host for the named clouds (the token audience of the
        // public cloud is management.azure.com, or management.core.windows.net).
        let arm_scope = match &self.arm_scope {
            Some(s) => s.clone(),
            None => match self.name {
                CloudName::Custom => "https://management.azure.com/.default".to_string(),
                _ => format!("{arm}/.default"),
            },
        };
        let graph_scope = match self.name {
            CloudName::Custom => "https://graph.microsoft.com/.default".to_string(),
            _ => format!("{graph}/.default"),
        };
        Ok(Endpoints {
            arm_url,
            authority_host,
            arm_scope,
            graph_url,
            graph_scope,
            keyvault_suffix: self.keyvault_suffix.clone().unwrap_or_else(|| kv.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_clouds_resolve() {
        let e = CloudConfig {
            name: CloudName::UsGovernment,
            ..Default::default()
        }
        .endpoints()
        .unwrap();
        assert_eq!(e.arm_url, "https://management.usgovcloudapi.net");
        assert_eq!(e.authority_host, "https://login.microsoftonline.us");
        assert_eq!(e.arm_scope, "https://management.usgovcloudapi.net/.default");
        let e = CloudConfig {
            name: CloudName::China,
            ..Default::default()
        }
        .endpoints()
        .unwrap();
        assert_eq!(e.keyvault_suffix, "vault.azure.cn");
        let e = CloudConfig::default().endpoints().unwrap();
        assert_eq!(e.arm_scope, "https://management.azure.com/.default");
    }

    #[test]
    fn custom_cloud_needs_https_endpoints() {
        let c = CloudConfig {
            name: CloudName::Custom,
            ..Default::default()
        };
        assert!(c.endpoints().is_err());
        let c = CloudConfig::custom("http://127.0.0.1:1", None);
        assert!(c.endpoints().unwrap_err().to_string().contains("https"));
        let e = CloudConfig::custom("https://127.0.0.1:8443/", None)
            .endpoints()
            .unwrap();
        assert_eq!(e.arm_url, "https://127.0.0.1:8443");
        assert_eq!(e.graph_url, "https://127.0.0.1:8443");
    }
}
