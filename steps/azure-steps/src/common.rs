//! What every Azure step shares: the connection input, the process-wide client cache,
//! ownership tags, cancellation and the LRO progress helpers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use siteflow_azure::models::Tags;
use siteflow_azure::{
    ArmClient, AzureError, Begun, ClientOptions, CloudConfig, CredentialConfig, LroPoller,
    LroStatus,
};
use siteflow_step::{StepContext, StepError, reveal_secrets, schemars, sha256_hex};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Tag naming the site a resource belongs to.
pub const TAG_SITE: &str = "siteflow-site";
/// Tag naming the run that created a resource.
pub const TAG_RUN: &str = "siteflow-run";
/// Tag naming the step that owns a resource.
pub const TAG_STEP: &str = "siteflow-step";

/// Where and as whom to talk to Azure.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConnection {
    /// Subscription id (else `AZURE_SUBSCRIPTION_ID`).
    pub subscription: Option<String>,
    /// The cloud and its endpoints (the emulator is a `custom` cloud).
    pub cloud: CloudConfig,
    /// How to authenticate (default: the credential chain).
    pub credential: CredentialConfig,
}

/// The process's ARM client set: one [`ArmClient`] per connection (cloud, credential,
/// subscription), so tokens and throttling state are shared by every step, crate and run.
/// A cache rather than a set the CLI creates and passes in, as for the SSH pool: which
/// clients exist depends on each step's `azure` input, known only when the step runs.
static CLIENTS: LazyLock<Mutex<HashMap<String, ArmClient>>> = LazyLock::new(Default::default);

impl AzureConnection {
    /// The subscription id.
    pub fn subscription(&self) -> Result<String, StepError> {
        self.subscription
            .clone()
            .or_else(|| std::env::var("AZURE_SUBSCRIPTION_ID").ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                StepError::permanent(
                    "InvalidInput",
                    "no subscription: set `azure.subscription` or AZURE_SUBSCRIPTION_ID",
                )
            })
    }

    /// The shared client for this connection (one per cloud, credential and subscription,
    /// so tokens and the throttling state are shared by every step and run in the process).
    pub fn client(&self) -> Result<ArmClient, StepError> {
        let subscription = self.subscription()?;
        let key = {
            let json = reveal_secrets(|| serde_json::to_string(self)).unwrap_or_default();
            sha256_hex(format!("{subscription}\n{json}").as_bytes())
        };
        let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = ArmClient::new(ClientOptions::new(
            self.cloud.clone(),
            self.credential.clone(),
            &subscription,
        ))
        .map_err(StepError::from)?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Runs a request, giving up when the attempt is cancelled.
pub async fn cancellable<T>(
    cx: &StepContext,
    fut: impl Future<Output = Result<T, AzureError>>,
) -> Result<T, StepError> {
    tokio::select! {
        r = fut => r.map_err(StepError::from),
        _ = cx.cancel.cancelled() => Err(StepError::cancelled("the attempt was cancelled")),
    }
}

/// The tags a step puts on what it creates, merged over the user's.
pub fn owner_tags(cx: &StepContext, extra: &Tags) -> Tags {
    let mut t = extra.clone();
    if let Some(site) = &cx.site {
        t.insert(TAG_SITE.into(), site.clone());
    }
    t.insert(TAG_RUN.into(), cx.run_id.clone());
    t.insert(TAG_STEP.into(), cx.step_id.clone());
    t
}

/// The tags to write on a resource that has `existing` tags: this step's owner tags and
/// `extra` over them, keeping the tag of the run that created it.
pub fn adopted_tags(cx: &StepContext, existing: Tags, extra: &Tags) -> Tags {
    let mut tags = existing;
    for (k, v) in owner_tags(cx, extra) {
        if k == TAG_RUN && tags.contains_key(&k) {
            continue;
        }
        tags.insert(k, v);
    }
    tags
}

/// Whether an existing resource's tags say this step (of this site) owns it.
pub fn is_ours(cx: &StepContext, tags: Option<&Tags>) -> bool {
    let Some(tags) = tags else { return false };
    let step_ok = tags.get(TAG_STEP) == Some(&cx.step_id);
    let site_ok = match &cx.site {
        Some(site) => tags.get(TAG_SITE) == Some(site),
        None => true,
    };
    step_ok && site_ok
}

/// The error for an existing resource that siteflow did not create.
pub fn not_owned(what: &str, id: &str) -> StepError {
    StepError::permanent(
        "ResourceNotOwned",
        format!(
            "{what} {id} already exists without this step's siteflow tags; \
             set `adopt_untagged: true` to take it over, or choose another name"
        ),
    )
}

/// Lower-cased comparison of ARM strings (locations, ids).
pub fn same(a: &str, b: &str) -> bool {
    a.replace(' ', "").eq_ignore_ascii_case(&b.replace(' ', ""))
}

/// Per-resource LRO progress: which resource's operation is in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// Operations by resource key (`nsg`, `vnet`, `vm`, …).
    #[serde(default)]
    pub ops: HashMap<String, LroPoller>,
    /// Side effects already made while the step waits, by name: a fingerprint of what was
    /// done (so a recheck does not repeat it unless its inputs changed).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub done: HashMap<String, String>,
}

impl Pending {
    /// The saved progress of this step.
    pub fn load(cx: &StepContext) -> Pending {
        cx.progress()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    /// Saves it durably.
    pub async fn save(&self, cx: &StepContext) -> Result<(), StepError> {
        cx.save_progress(serde_json::to_value(self).unwrap_or(Value::Null))
            .await
    }
}

/// The result of driving one resource's write.
pub enum Drive {
    /// The resource is in place (its final body, when known).
    Done(Option<Value>),
    /// An operation is in flight: recheck after this delay.
    Wait(Duration),
}

/// Drives one resource's create/update: continues a saved operation if there is one
/// (never sending the write again), else sends `method url body`, saving the operation's
/// poller before returning `Wait`.
pub async fn drive(
    cx: &StepContext,
    client: &ArmClient,
    pending: &mut Pending,
    key: &str,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<Drive, StepError> {
    if let Some(poller) = pending.ops.get(key).cloned() {
        let status = cancellable(cx, client.poll(&poller)).await;
        return match status {
            Ok(LroStatus::InProgress(after)) => Ok(Drive::Wait(after)),
            Ok(LroStatus::Succeeded(v)) => {
                pending.ops.remove(key);
                pending.save(cx).await?;
                Ok(Drive::Done(v))
            }
            Err(e) => {
                if !e.class.is_retryable() {
                    // The operation is over: a later attempt starts afresh.
                    pending.ops.remove(key);
                    pending.save(cx).await?;
                }
                Err(e)
            }
        };
    }
    match cancellable(cx, client.begin(method, url, body)).await? {
        Begun::Done(resp) => Ok(Drive::Done(resp.json_value())),
        Begun::Pending(poller, after) => {
            cx.info(&format!("{key}: {method} accepted, polling the operation"));
            pending.ops.insert(key.to_string(), poller);
            pending.save(cx).await?;
            Ok(Drive::Wait(after))
        }
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/{rp}/{rest}`.
pub fn resource_path(subscription: &str, rg: &str, rp_and_rest: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{rg}/providers/{rp_and_rest}")
}

/// The provisioning state inside a resource body.
pub fn provisioning_state(v: &Value) -> Option<&str> {
    v.pointer("/properties/provisioningState")
        .and_then(Value::as_str)
}
