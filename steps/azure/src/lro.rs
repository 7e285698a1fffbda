//! Long-running operations: how one starts, how it is polled (`Azure-AsyncOperation` or
//! `Location`), and the poller state a step persists so a resumed run keeps polling the same
//! operation instead of sending its PUT again.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use crate::ArmResponse;

/// How an operation is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LroKind {
    /// GET the `Azure-AsyncOperation` URL until `status` is terminal, then GET the resource.
    AsyncOperation,
    /// GET the `Location` URL: 202 while running, then 200 with the result or 204.
    Location,
    /// No operation header: GET the resource until its `provisioningState` is terminal.
    ProvisioningState,
}

/// A running operation: what a step saves as its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LroPoller {
    /// How to poll.
    pub kind: LroKind,
    /// The URL to poll.
    pub poll_url: String,
    /// The resource the operation acts on (the final GET of a PUT).
    pub resource_url: String,
    /// The method that started the operation (`PUT`, `DELETE`, `POST`).
    pub method: String,
}

/// What starting a request achieved.
#[derive(Debug)]
pub enum Begun {
    /// Finished synchronously.
    Done(ArmResponse),
    /// Accepted: poll this after the delay.
    Pending(LroPoller, Duration),
}

/// What one poll found.
#[derive(Debug)]
pub enum LroStatus {
    /// Still running; poll again after this delay.
    InProgress(Duration),
    /// Finished; the final resource body when there is one.
    Succeeded(Option<Value>),
}

/// The terminal provisioning states.
pub(crate) fn is_terminal(state: &str) -> bool {
    ["succeeded", "failed", "canceled", "cancelled"].contains(&state.to_ascii_lowercase().as_str())
}

/// Decides whether a response to a write started an operation.
pub(crate) fn begun(method: &str, url: &str, resp: ArmResponse, default_wait: Duration) -> Begun {
    let after = resp.retry_after().unwrap_or(default_wait);
    if let Some(op) = resp.header("azure-asyncoperation") {
        return Begun::Pending(
            LroPoller {
                kind: LroKind::AsyncOperation,
                poll_url: op.to_string(),
                resource_url: url.to_string(),
                method: method.to_string(),
            },
            after,
        );
    }
    if resp.status == 202
        && let Some(loc) = resp.header("location")
    {
        return Begun::Pending(
            LroPoller {
                kind: LroKind::Location,
                poll_url: loc.to_string(),
                resource_url: url.to_string(),
                method: method.to_string(),
            },
            after,
        );
    }
    if method == "PUT"
        && let Some(state) = resp
            .json_value()
            .and_then(|v| v.pointer("/properties/provisioningState").cloned())
            .and_then(|v| v.as_str().map(str::to_string))
        && !is_terminal(&state)
    {
        return Begun::Pending(
            LroPoller {
                kind: LroKind::ProvisioningState,
                poll_url: url.to_string(),
                resource_url: url.to_string(),
                method: method.to_string(),
            },
            after,
        );
    }
    Begun::Done(resp)
}
