//! `/metadata/endpoints`: the cloud metadata that lets az and SDKs use the emulator as a
//! custom cloud (every endpoint points back at the emulator).

use hyper::StatusCode;
use serde_json::json;

use super::ArmError;
use super::kinds::METADATA_VERSIONS;
use crate::http::{Req, Resp};

pub(crate) fn endpoints(base_url: &str, req: &Req) -> Resp {
    let Some(v) = req.query_param("api-version") else {
        return ArmError::missing_api_version().into_resp();
    };
    if !METADATA_VERSIONS.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        return ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                METADATA_VERSIONS.join(", ")
            ),
        )
        .into_resp();
    }
    let base = format!("{base_url}/");
    Resp::json(
        StatusCode::OK,
        &json!({
            "name": "SiteflowEmulator",
            "galleryEndpoint": base,
            "graphEndpoint": base,
            "graphAudience": "https://graph.windows.net/",
            "portalEndpoint": base,
            "resourceManager": base,
            "microsoftGraphResourceId": base,
            "activeDirectoryDataLake": "https://datalake.azure.net/",
            "batch": "https://batch.core.windows.net/",
            "media": "https://rest.media.azure.net",
            "sqlManagement": "https://management.core.windows.net:8443/",
            "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/main/arm-compute/quickstart-templates/aliases.json",
            "appInsightsResourceId": "https://api.applicationinsights.io",
            "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
            "attestationResourceId": "https://attest.azure.net",
            "synapseAnalyticsResourceId": "https://dev.azuresynapse.net",
            "logAnalyticsResourceId": "https://api.loganalytics.io",
            "ossrDbmsResourceId": "https://ossrdbms-aad.database.windows.net",
            "authentication": {
                "loginEndpoint": base,
                "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                "tenant": "common",
                "identityProvider": "AAD"
            },
            "suffixes": {
                "acrLoginServer": "azurecr.io",
                "keyVaultDns": "vault.azure.net",
                "mhsmDns": "managedhsm.azure.net",
                "storage": "core.windows.net",
                "sqlServerHostname": "database.windows.net",
                "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
                "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                "azureFrontDoorEndpointSuffix": "azurefd.net",
                "storageSyncEndpointSuffix": "afs.azure.net",
                "mysqlServerEndpoint": "mysql.database.azure.com",
                "postgresqlServerEndpoint": "postgres.database.azure.com",
                "mariadbServerEndpoint": "mariadb.database.azure.com",
                "synapseAnalytics": "dev.azuresynapse.net",
                "attestationEndpoint": "attest.azure.net"
            }
        }),
    )
}
