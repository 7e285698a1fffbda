//! `azure.vmss-power`: power off, start, restart, deallocate or reimage a scale set's
//! instances (all, or given instance ids), through Compute's POST actions.
//!
//! `power_off`, `start` and `deallocate` are states: instances already there are left alone,
//! and when every target is there the step makes no request that writes. `restart` and
//! `reimage` are events: each run that reaches the step sends them once (a resumed attempt
//! keeps polling the operation it started instead of sending it again).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::ArmClient;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::common::{AzureConnection, Drive, Pending, cancellable, drive, resource_path};
use crate::vm::API;

/// The action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerOperation {
    /// Stop the instances (still allocated, still billed for compute).
    PowerOff,
    /// Start them.
    Start,
    /// Restart them.
    Restart,
    /// Stop and deallocate them.
    Deallocate,
    /// Reimage their OS disks (they run afterwards).
    Reimage,
}

impl PowerOperation {
    /// Compute's action segment.
    fn action(self) -> &'static str {
        match self {
            PowerOperation::PowerOff => "poweroff",
            PowerOperation::Start => "start",
            PowerOperation::Restart => "restart",
            PowerOperation::Deallocate => "deallocate",
            PowerOperation::Reimage => "reimage",
        }
    }

    /// The power states (`PowerState/<state>`) in which an instance needs nothing.
    fn done_in(self) -> &'static [&'static str] {
        match self {
            // A deallocated instance is off too.
            PowerOperation::PowerOff => &["stopped", "deallocated"],
            PowerOperation::Start => &["running"],
            PowerOperation::Deallocate => &["deallocated"],
            PowerOperation::Restart | PowerOperation::Reimage => &[],
        }
    }
}

/// Input of `azure.vmss-power`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmssPowerInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// The scale set.
    pub name: String,
    /// `power_off`, `start`, `restart`, `deallocate` or `reimage`.
    pub operation: PowerOperation,
    /// Instance ids (`"0"`, `"3"`); default every instance.
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
}

/// One instance's power state afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
pub struct InstancePower {
    /// The instance id.
    pub instance_id: String,
    /// `running`, `stopped`, `deallocated`, ... (`PowerState/<state>`).
    pub power_state: String,
}

/// Output of `azure.vmss-power`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmssPowerOutput {
    /// The targeted instances and their power states.
    pub instances: Vec<InstancePower>,
}

/// The step kind.
pub struct VmssPowerStep;

fn url(client: &ArmClient, input: &VmssPowerInput, suffix: &str) -> String {
    client.arm_url(
        &format!(
            "{}{suffix}",
            resource_path(
                client.subscription(),
                &input.resource_group,
                &format!("Microsoft.Compute/virtualMachineScaleSets/{}", input.name)
            )
        ),
        API,
    )
}

/// The targeted instances with their power states, from the instance views.
async fn targets(
    cx: &StepContext,
    client: &ArmClient,
    input: &VmssPowerInput,
) -> Result<Vec<InstancePower>, StepError> {
    let list_url = format!(
        "{}&$expand=instanceView",
        url(client, input, "/virtualMachines")
    );
    let Some(list) = cancellable(cx, client.get_opt::<Value>(&list_url)).await? else {
        return Err(StepError::permanent(
            "ResourceNotFound",
            format!(
                "scale set {} not found in resource group {}",
                input.name, input.resource_group
            ),
        ));
    };
    let all: Vec<InstancePower> = list["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| InstancePower {
            instance_id: v["instanceId"].as_str().unwrap_or_default().to_string(),
            power_state: crate::vmss::power_state(v),
        })
        .collect();
    let Some(ids) = &input.instance_ids else {
        return Ok(all);
    };
    ids.iter()
        .map(|id| {
            all.iter()
                .find(|i| &i.instance_id == id)
                .cloned()
                .ok_or_else(|| {
                    StepError::permanent(
                        "InvalidInput",
                        format!(
                            "scale set {} has no instance {id} (it has {})",
                            input.name,
                            all.iter()
                                .map(|i| i.instance_id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
        })
        .collect()
}

impl Step for VmssPowerStep {
    const KIND: &'static str = "azure.vmss-power";
    type Input = VmssPowerInput;
    type Output = VmssPowerOutput;

    fn description(&self) -> &'static str {
        "Powers off, starts, restarts, deallocates or reimages a scale set's instances"
    }

    fn validate(&self, input: &VmssPowerInput) -> Result<(), StepError> {
        if let Some(ids) = &input.instance_ids {
            if ids.is_empty() {
                return Err(StepError::permanent(
                    "InvalidInput",
                    "instance_ids is empty: leave it out to act on every instance",
                ));
            }
            if let Some(bad) = ids
                .iter()
                .find(|i| i.is_empty() || !i.chars().all(|c| c.is_ascii_digit()))
            {
                return Err(StepError::permanent(
                    "InvalidInput",
                    format!("`{bad}` is not an instance id (a number such as \"0\")"),
                ));
            }
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &VmssPowerInput,
    ) -> Result<Observed<VmssPowerOutput>, StepError> {
        let client = input.azure.client()?;
        let instances = targets(cx, &client, input).await?;
        let done = input.operation.done_in();
        let waiting: Vec<&InstancePower> = instances
            .iter()
            .filter(|i| !done.contains(&i.power_state.as_str()))
            .collect();
        if waiting.is_empty() && !done.is_empty() {
            return Ok(Observed::Satisfied(VmssPowerOutput { instances }));
        }
        Ok(Observed::NotSatisfied {
            reason: Some(format!(
                "{} of {} instances to {}",
                waiting.len(),
                instances.len(),
                input.operation.action()
            )),
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &VmssPowerInput,
    ) -> Result<Progress<VmssPowerOutput>, StepError> {
        let client = input.azure.client()?;
        let mut pending = Pending::load(cx);
        let action_url = url(&client, input, &format!("/{}", input.operation.action()));
        // Only the instances not yet there (for states); every target for events.
        let body = if pending.ops.contains_key("power") {
            None
        } else {
            let instances = targets(cx, &client, input).await?;
            let done = input.operation.done_in();
            let ids: Vec<&str> = instances
                .iter()
                .filter(|i| !done.contains(&i.power_state.as_str()))
                .map(|i| i.instance_id.as_str())
                .collect();
            Some(json!({"instanceIds": ids}))
        };
        match drive(
            cx,
            &client,
            &mut pending,
            "power",
            "POST",
            &action_url,
            body.as_ref(),
        )
        .await?
        {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after,
            }),
            Drive::Done(_) => {
                let instances = targets(cx, &client, input).await?;
                Ok(Progress::Done(VmssPowerOutput { instances }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_events() {
        assert!(PowerOperation::PowerOff.done_in().contains(&"deallocated"));
        assert!(PowerOperation::Restart.done_in().is_empty());
        assert_eq!(PowerOperation::PowerOff.action(), "poweroff");
        assert_eq!(PowerOperation::Reimage.action(), "reimage");
    }
}
