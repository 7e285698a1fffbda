//! `azure.acr-token`: exchanges an Entra token for an ACR refresh token, and that for an
//! access token (both secret outputs; observing again mints fresh ones).

use serde::{Deserialize, Serialize};
use siteflow_azure::models::{AcrAccessToken, AcrRefreshToken};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, cancellable};

fn default_scope() -> String {
    "repository:*:pull".into()
}

/// Input of `azure.acr-token`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcrInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Registry login server (`myreg.azurecr.io`).
    pub registry: String,
    /// The registry's base URL when not `https://{registry}` (the emulator).
    pub registry_url: Option<String>,
    /// Token scope.
    #[serde(default = "default_scope")]
    pub scope: String,
}

/// Output of `azure.acr-token`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AcrOutput {
    /// The user name registries expect with a refresh token.
    pub username: String,
    /// Refresh token (the registry password).
    pub refresh_token: Secret<String>,
    /// Access token for `scope`.
    pub access_token: Secret<String>,
}

/// The step kind.
pub struct AcrTokenStep;

async fn exchange(cx: &StepContext, input: &AcrInput) -> Result<AcrOutput, StepError> {
    let client = input.azure.client()?;
    let base = input
        .registry_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", input.registry))
        .trim_end_matches('/')
        .to_string();
    let aad = cancellable(cx, client.token(&client.endpoints().arm_scope)).await?;
    let resp = cancellable(
        cx,
        client.post_form(
            &format!("{base}/oauth2/exchange"),
            &[
                ("grant_type", "access_token"),
                ("service", &input.registry),
                ("access_token", &aad),
            ],
        ),
    )
    .await?;
    let refresh: AcrRefreshToken = resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
    cx.add_secret(&refresh.refresh_token);
    let resp = cancellable(
        cx,
        client.post_form(
            &format!("{base}/oauth2/token"),
            &[
                ("grant_type", "refresh_token"),
                ("service", &input.registry),
                ("scope", &input.scope),
                ("refresh_token", &refresh.refresh_token),
            ],
        ),
    )
    .await?;
    let access: AcrAccessToken = resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
    cx.add_secret(&access.access_token);
    Ok(AcrOutput {
        username: "00000000-0000-0000-0000-000000000000".into(),
        refresh_token: Secret::new(refresh.refresh_token),
        access_token: Secret::new(access.access_token),
    })
}

impl Step for AcrTokenStep {
    const KIND: &'static str = "azure.acr-token";
    type Input = AcrInput;
    type Output = AcrOutput;

    fn description(&self) -> &'static str {
        "Exchanges the Entra token for ACR refresh and access tokens (secret outputs)"
    }

    fn validate(&self, input: &AcrInput) -> Result<(), StepError> {
        if input.registry.is_empty() || input.registry.contains('/') {
            return Err(StepError::permanent(
                "InvalidInput",
                "`registry` is a login server such as myreg.azurecr.io",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &AcrInput,
    ) -> Result<Observed<AcrOutput>, StepError> {
        // Tokens are short-lived and never stored: observing mints fresh ones (read-only in Azure).
        exchange(cx, input).await.map(Observed::Satisfied)
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &AcrInput,
    ) -> Result<Progress<AcrOutput>, StepError> {
        exchange(cx, input).await.map(Progress::Done)
    }
}
