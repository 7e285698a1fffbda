//! `azure.acr-token`: exchanges an Entra token for an ACR refresh token, and that for an
//! access token (both secret outputs). Given the refresh token in use (`current`), observe
//! keeps it while it is valid for longer than `renew_before`, so a registries file written
//! from it does not change (and k3s does not restart) until rotation is due.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use siteflow_azure::models::{AcrAccessToken, AcrRefreshToken};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, cancellable};

fn default_scope() -> String {
    "repository:*:pull".into()
}

fn default_renew_before() -> siteflow_step::Duration {
    std::time::Duration::from_secs(3600).into()
}

/// The user name registries expect with an ACR refresh token.
const TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

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
    /// The refresh token in use (e.g. `k3s.registry-credential`'s `password`). Kept while it
    /// is this registry's and valid for longer than `renew_before`; empty or absent: mint.
    #[serde(default)]
    pub current: Option<Secret<String>>,
    /// Mint a new refresh token when the current one expires within this (ACR refresh
    /// tokens live 3 h).
    #[serde(default = "default_renew_before")]
    pub renew_before: siteflow_step::Duration,
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
    /// When the refresh token expires (Unix seconds).
    pub expires_at: u64,
}

/// The step kind.
pub struct AcrTokenStep;

fn base_url(input: &AcrInput) -> String {
    input
        .registry_url
        .clone()
        .unwrap_or_else(|| format!("https://{}", input.registry))
        .trim_end_matches('/')
        .to_string()
}

/// `aud` and `exp` of a JWT's payload (not verified: the registry checks the signature when
/// the token is used; this only decides whether to keep it).
fn jwt_audience_expiry(token: &str) -> Option<(String, u64)> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let aud = match claims.get("aud")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.first()?.as_str()?.to_string(),
        _ => return None,
    };
    Some((aud, claims.get("exp")?.as_u64()?))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current refresh token's expiry when it is this registry's and valid for longer than
/// `renew_before`.
fn reusable(input: &AcrInput) -> Result<Option<(String, u64)>, StepError> {
    let renew = input.renew_before.get();
    let Some(current) = input
        .current
        .as_ref()
        .map(|c| c.expose().trim().to_string())
    else {
        return Ok(None);
    };
    Ok(match jwt_audience_expiry(&current) {
        Some((aud, exp))
            if aud.eq_ignore_ascii_case(&input.registry)
                && exp > unix_now().saturating_add(renew.as_secs()) =>
        {
            Some((current, exp))
        }
        _ => None,
    })
}

/// The access token for `scope` from a refresh token.
async fn access_token(
    cx: &StepContext,
    input: &AcrInput,
    refresh: &str,
) -> Result<String, StepError> {
    let client = input.azure.client()?;
    let base = base_url(input);
    let resp = cancellable(
        cx,
        client.post_form(
            &format!("{base}/oauth2/token"),
            &[
                ("grant_type", "refresh_token"),
                ("service", &input.registry),
                ("scope", &input.scope),
                ("refresh_token", refresh),
            ],
        ),
    )
    .await?;
    let access: AcrAccessToken = resp.ok().and_then(|r| r.json()).map_err(StepError::from)?;
    cx.add_secret(&access.access_token);
    Ok(access.access_token)
}

async fn exchange(cx: &StepContext, input: &AcrInput) -> Result<AcrOutput, StepError> {
    let client = input.azure.client()?;
    let base = base_url(input);
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
    let expires_at = jwt_audience_expiry(&refresh.refresh_token)
        .map(|(_, exp)| exp)
        .unwrap_or_default();
    let access = access_token(cx, input, &refresh.refresh_token).await?;
    Ok(AcrOutput {
        username: TOKEN_USERNAME.into(),
        refresh_token: Secret::new(refresh.refresh_token),
        access_token: Secret::new(access),
        expires_at,
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
        reusable(input).map(|_| ())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &AcrInput,
    ) -> Result<Observed<AcrOutput>, StepError> {
        let Some((current, expires_at)) = reusable(input)? else {
            return Ok(Observed::NotSatisfied {
                reason: Some(if input.current.is_some() {
                    format!(
                        "the current refresh token is not {}'s or expires within {}",
                        input.registry, input.renew_before
                    )
                } else {
                    "no current refresh token".into()
                }),
            });
        };
        cx.add_secret(&current);
        // The registry still takes it (a revoked token is minted again).
        match access_token(cx, input, &current).await {
            Ok(access) => Ok(Observed::Satisfied(AcrOutput {
                username: TOKEN_USERNAME.into(),
                refresh_token: Secret::new(current),
                access_token: Secret::new(access),
                expires_at,
            })),
            Err(e) if e.class == siteflow_step::ErrorClass::Permanent => {
                Ok(Observed::NotSatisfied {
                    reason: Some(format!(
                        "the registry refuses the current refresh token: {e}"
                    )),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &AcrInput,
    ) -> Result<Progress<AcrOutput>, StepError> {
        exchange(cx, input).await.map(Progress::Done)
    }
}
