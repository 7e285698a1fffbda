//! `azure.resource-group`: create or adopt a resource group, or delete it.

use serde::{Deserialize, Serialize};
use serde_json::json;
use siteflow_azure::models::{ResourceGroup, Tags};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use std::time::Duration;

use crate::common::{
    AzureConnection, Drive, Pending, adopted_tags, cancellable, drive, is_ours, not_owned, same,
};

/// API version of Microsoft.Resources.
pub const API: &str = "2025-04-01";

/// Present or absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Create or adopt.
    #[default]
    Present,
    /// Delete (with everything in it).
    Delete,
}

/// Input of `azure.resource-group`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RgInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Group name.
    pub name: String,
    /// Azure region (`westeurope`).
    pub location: String,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// `present` (default) or `delete`.
    #[serde(default)]
    pub mode: Mode,
    /// Take over a group that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.resource-group`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RgOutput {
    /// Resource id (empty after a delete).
    pub id: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
}

/// The step kind.
pub struct ResourceGroupStep;

fn url(client: &siteflow_azure::ArmClient, name: &str) -> String {
    client.arm_url(
        &format!(
            "/subscriptions/{}/resourcegroups/{name}",
            client.subscription()
        ),
        API,
    )
}

impl Step for ResourceGroupStep {
    const KIND: &'static str = "azure.resource-group";
    type Input = RgInput;
    type Output = RgOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) an Azure resource group tagged for the site, or deletes it"
    }

    fn validate(&self, input: &RgInput) -> Result<(), StepError> {
        let ok = !input.name.is_empty()
            && input.name.len() <= 90
            && input
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
            && !input.name.ends_with('.');
        if !ok {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("`{}` is not a valid resource group name", input.name),
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &RgInput,
    ) -> Result<Observed<RgOutput>, StepError> {
        let client = input.azure.client()?;
        let got: Option<ResourceGroup> =
            cancellable(cx, client.get_opt(&url(&client, &input.name))).await?;
        match (input.mode, got) {
            (Mode::Delete, None) => Ok(Observed::Satisfied(RgOutput {
                id: String::new(),
                name: input.name.clone(),
                location: input.location.clone(),
            })),
            (Mode::Delete, Some(rg)) => {
                // Never delete a group siteflow did not create, unless told to.
                if !is_ours(cx, rg.tags.as_ref()) && !input.adopt_untagged {
                    return Err(not_owned("resource group", &input.name));
                }
                Ok(Observed::NotSatisfied {
                    reason: Some("the group still exists".into()),
                })
            }
            (Mode::Present, None) => Ok(Observed::missing()),
            (Mode::Present, Some(rg)) => {
                if !is_ours(cx, rg.tags.as_ref()) && !input.adopt_untagged {
                    return Err(not_owned("resource group", &input.name));
                }
                if !same(&rg.location, &input.location) {
                    cx.info(&format!(
                        "drift: resource group {} is in {}, not {}; a group cannot move, keeping it",
                        input.name, rg.location, input.location
                    ));
                }
                let mut missing_tags = false;
                for (k, v) in &input.tags {
                    if rg.tags.as_ref().and_then(|t| t.get(k)) != Some(v) {
                        cx.info(&format!(
                            "drift: tag {k} of resource group {} differs",
                            input.name
                        ));
                        missing_tags = true;
                    }
                }
                if missing_tags {
                    return Ok(Observed::NotSatisfied {
                        reason: Some("tags drifted".into()),
                    });
                }
                Ok(Observed::Satisfied(RgOutput {
                    id: rg.id.unwrap_or_default(),
                    name: input.name.clone(),
                    location: rg.location,
                }))
            }
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &RgInput,
    ) -> Result<Progress<RgOutput>, StepError> {
        let client = input.azure.client()?;
        let url = url(&client, &input.name);
        let mut pending = Pending::load(cx);
        match input.mode {
            Mode::Delete => {
                match drive(cx, &client, &mut pending, "delete", "DELETE", &url, None).await? {
                    Drive::Wait(after) => Ok(Progress::Wait {
                        recheck_after: after,
                    }),
                    Drive::Done(_) => Ok(Progress::Done(RgOutput {
                        id: String::new(),
                        name: input.name.clone(),
                        location: input.location.clone(),
                    })),
                }
            }
            Mode::Present => {
                let existing: Option<ResourceGroup> = cancellable(cx, client.get_opt(&url)).await?;
                let (location, tags) = match &existing {
                    Some(rg) => (rg.location.clone(), rg.tags.clone().unwrap_or_default()),
                    None => (input.location.clone(), Tags::new()),
                };
                let tags = adopted_tags(cx, tags, &input.tags);
                let body = json!({"location": location, "tags": tags});
                match drive(cx, &client, &mut pending, "group", "PUT", &url, Some(&body)).await? {
                    Drive::Wait(after) => Ok(Progress::Wait {
                        recheck_after: after.max(Duration::from_millis(10)),
                    }),
                    Drive::Done(v) => {
                        let rg: ResourceGroup = v
                            .and_then(|v| serde_json::from_value(v).ok())
                            .unwrap_or_default();
                        Ok(Progress::Done(RgOutput {
                            id: rg.id.unwrap_or_default(),
                            name: input.name.clone(),
                            location: if rg.location.is_empty() {
                                location
                            } else {
                                rg.location
                            },
                        }))
                    }
                }
            }
        }
    }
}
