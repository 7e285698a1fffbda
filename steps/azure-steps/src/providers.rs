//! `azure.register-providers`: registers resource provider namespaces in parallel and waits
//! until every one is `Registered`.

use serde::{Deserialize, Serialize};
use siteflow_azure::Service;
use siteflow_azure::models::Provider;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{AzureConnection, cancellable};
use crate::resource_group::API;

fn default_namespaces() -> Vec<String> {
    vec![
        "Microsoft.Kubernetes".into(),
        "Microsoft.KubernetesConfiguration".into(),
        "Microsoft.ExtendedLocation".into(),
    ]
}

fn default_poll() -> f64 {
    10.0
}

/// Input of `azure.register-providers`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidersInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Namespaces (default: Kubernetes, KubernetesConfiguration, ExtendedLocation).
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<String>,
    /// The longest wait between registration checks (seconds): checks start 0.5 s apart and
    /// the gap doubles up to this.
    #[serde(default = "default_poll")]
    pub poll_interval_secs: f64,
}

/// Output of `azure.register-providers`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProvidersOutput {
    /// `registrationState` by namespace.
    pub states: BTreeMap<String, String>,
}

/// The step kind.
pub struct RegisterProvidersStep;

async fn states(
    cx: &StepContext,
    input: &ProvidersInput,
) -> Result<BTreeMap<String, String>, StepError> {
    let client = input.azure.client()?;
    let gets = input.namespaces.iter().map(|ns| {
        let url = client.arm_url(
            &format!("/subscriptions/{}/providers/{ns}", client.subscription()),
            API,
        );
        let client = client.clone();
        async move {
            let p: Provider = client.send(Service::Arm, "GET", &url, None).await?.json()?;
            Ok::<_, siteflow_azure::AzureError>((
                ns.clone(),
                p.registration_state.unwrap_or_else(|| "Unknown".into()),
            ))
        }
    });
    let all = cancellable(cx, async {
        futures::future::join_all(gets)
            .await
            .into_iter()
            .collect::<Result<BTreeMap<_, _>, _>>()
    })
    .await?;
    Ok(all)
}

impl Step for RegisterProvidersStep {
    const KIND: &'static str = "azure.register-providers";
    type Input = ProvidersInput;
    type Output = ProvidersOutput;

    fn description(&self) -> &'static str {
        "Registers Azure resource providers (in parallel) and waits until all are Registered"
    }

    fn validate(&self, input: &ProvidersInput) -> Result<(), StepError> {
        if let Some(bad) = input
            .namespaces
            .iter()
            .find(|n| n.is_empty() || !n.contains('.') || n.contains('/'))
        {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("`{bad}` is not a provider namespace (e.g. Microsoft.Kubernetes)"),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ProvidersInput,
    ) -> Result<Observed<ProvidersOutput>, StepError> {
        let states = states(cx, input).await?;
        let waiting: Vec<_> = states
            .iter()
            .filter(|(_, s)| !s.eq_ignore_ascii_case("Registered"))
            .map(|(n, s)| format!("{n}={s}"))
            .collect();
        if waiting.is_empty() {
            Ok(Observed::Satisfied(ProvidersOutput { states }))
        } else {
            Ok(Observed::NotSatisfied {
                reason: Some(format!("not registered yet: {}", waiting.join(", "))),
            })
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ProvidersInput,
    ) -> Result<Progress<ProvidersOutput>, StepError> {
        let client = input.azure.client()?;
        let states = states(cx, input).await?;
        // Only namespaces nobody is registering yet get a POST: a re-check never repeats it.
        let to_register: Vec<&String> = states
            .iter()
            .filter(|(_, s)| {
                s.eq_ignore_ascii_case("NotRegistered") || s.eq_ignore_ascii_case("Unregistered")
            })
            .map(|(n, _)| n)
            .collect();
        let posts = to_register.iter().map(|ns| {
            let url = client.arm_url(
                &format!(
                    "/subscriptions/{}/providers/{ns}/register",
                    client.subscription()
                ),
                API,
            );
            let client = client.clone();
            async move {
                cx.info(&format!("registering {ns}"));
                let p: Provider = client
                    .send(Service::Arm, "POST", &url, None)
                    .await?
                    .json()?;
                Ok::<_, siteflow_azure::AzureError>(((*ns).clone(), p.registration_state))
            }
        });
        let results = cancellable(cx, async {
            futures::future::join_all(posts)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        let mut states = states;
        for (ns, s) in results {
            if let Some(s) = s {
                states.insert(ns, s);
            }
        }
        if states
            .values()
            .all(|s| s.eq_ignore_ascii_case("Registered"))
        {
            return Ok(Progress::Done(ProvidersOutput { states }));
        }
        // A registration takes from seconds to minutes: check early, then back off.
        let polls = cx
            .progress()
            .and_then(|p| p.get("polls").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        cx.save_progress(serde_json::json!({ "polls": polls + 1 }))
            .await?;
        let ceiling = input.poll_interval_secs.max(0.01);
        let gap = (0.5 * 2f64.powi(polls.min(16) as i32)).min(ceiling);
        Ok(Progress::Wait {
            recheck_after: Duration::from_secs_f64(gap),
        })
    }
}
