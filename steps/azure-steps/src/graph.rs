//! `azure.graph-service-principal`: the object id of a service principal by its appId, from
//! Microsoft Graph (e.g. the custom-locations app for Arc).

use serde::{Deserialize, Serialize};
use siteflow_azure::Service;
use siteflow_azure::models::{GraphList, GraphServicePrincipal};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, cancellable};

/// Input of `azure.graph-service-principal`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// The application id (`bc313c14-388c-4e7d-a58e-70017303ee3b` for custom locations).
    pub app_id: String,
}

/// Output of `azure.graph-service-principal`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GraphOutput {
    /// The service principal's object id.
    pub object_id: String,
    /// Its display name.
    pub display_name: Option<String>,
}

/// The step kind.
pub struct GraphServicePrincipalStep;

async fn lookup(cx: &StepContext, input: &GraphInput) -> Result<GraphOutput, StepError> {
    let client = input.azure.client()?;
    let url = format!(
        "{}/v1.0/servicePrincipals?$filter=appId%20eq%20'{}'",
        client.endpoints().graph_url,
        input.app_id
    );
    let resp = cancellable(cx, client.send_raw(Service::Graph, "GET", &url, None, &[])).await?;
    if resp.status == 403 {
        return Err(StepError::permanent(
            "GraphAccessDenied",
            format!(
                "Microsoft Graph refused to read the service principal of app {} (HTTP 403, correlation id {}). \
                 A service principal often may not read other applications: log in as a Microsoft Entra user \
                 (`az login` with a user account) and use `credential: {{kind: azure_cli}}`, or grant the \
                 principal Application.Read.All",
                input.app_id, resp.correlation_id
            ),
        ));
    }
    let list: GraphList<GraphServicePrincipal> =
        resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
    match list.value.into_iter().next() {
        Some(sp) => Ok(GraphOutput {
            object_id: sp.id,
            display_name: sp.display_name,
        }),
        None => Err(StepError::permanent(
            "ServicePrincipalNotFound",
            format!(
                "no service principal with appId {} in this tenant",
                input.app_id
            ),
        )),
    }
}

impl Step for GraphServicePrincipalStep {
    const KIND: &'static str = "azure.graph-service-principal";
    type Input = GraphInput;
    type Output = GraphOutput;

    fn description(&self) -> &'static str {
        "Looks up a service principal's object id by appId in Microsoft Graph"
    }

    fn validate(&self, input: &GraphInput) -> Result<(), StepError> {
        let ok = input.app_id.len() == 36
            && input
                .app_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("`{}` is not an application id (a GUID)", input.app_id),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &GraphInput,
    ) -> Result<Observed<GraphOutput>, StepError> {
        lookup(cx, input).await.map(Observed::Satisfied)
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &GraphInput,
    ) -> Result<Progress<GraphOutput>, StepError> {
        lookup(cx, input).await.map(Progress::Done)
    }
}
