//! Long-running operations: timing, status documents (`Azure-AsyncOperation`), `Location`
//! polling answers, and the `Retry-After` headers on both.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::clock::{retry_after_secs, rfc3339_now};
use crate::http::Resp;

/// What an operation does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpAction {
    Create,
    Update,
    Delete,
    /// POST action on a resource (start, powerOff, ...), with the power state it sets.
    Action(&'static str),
    ResourceGroupDelete,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed { code: String, message: String },
}

#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) id: String,
    pub(crate) sub: String,
    pub(crate) namespace: String,
    pub(crate) location: String,
    pub(crate) resource_key: String,
    pub(crate) resource_id: String,
    pub(crate) action: OpAction,
    /// `provisioningState` values while running, spread evenly over the duration.
    pub(crate) stages: Vec<&'static str>,
    pub(crate) start: Instant,
    pub(crate) start_wall: String,
    pub(crate) duration: Duration,
    pub(crate) planned_failure: Option<(String, String)>,
    pub(crate) hooks_pending: u32,
    pub(crate) hook_error: Option<String>,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) end_wall: Option<String>,
    pub(crate) api_version: String,
    /// Status URL under the resource (extensions, flux) instead of the location.
    pub(crate) status_under_resource: bool,
    /// Power actions: the VMs or scale-set instances (resource keys) whose power state the
    /// action sets when it succeeds, each with the state it goes back to if the action fails.
    pub(crate) targets: Vec<(String, &'static str)>,
}

impl Operation {
    pub(crate) fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// Whether the time (and any VM hook) allows it to finish now.
    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.start + self.duration && self.hooks_pending == 0
    }

    /// The stage for `now`.
    pub(crate) fn stage(&self, now: Instant) -> &'static str {
        if self.stages.is_empty() {
            return "Updating";
        }
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let total = self.duration.as_secs_f64().max(1e-9);
        let idx = ((elapsed / total) * self.stages.len() as f64) as usize;
        self.stages[idx.min(self.stages.len() - 1)]
    }

    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        (self.start + self.duration).saturating_duration_since(now)
    }

    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.end_wall = Some(rfc3339_now());
    }

    /// Path of the `Azure-AsyncOperation` status document.
    pub(crate) fn status_path(&self) -> String {
        if self.status_under_resource {
            format!("{}/operations/{}", self.resource_id, self.id)
        } else {
            format!(
                "/subscriptions/{}/providers/{}/locations/{}/operations/{}",
                self.sub, self.namespace, self.location, self.id
            )
        }
    }

    /// Path polled through the `Location` header.
    pub(crate) fn result_path(&self) -> String {
        format!(
            "/subscriptions/{}/providers/{}/locations/{}/operationResults/{}",
            self.sub, self.namespace, self.location, self.id
        )
    }

    /// The operation status document (always served with 200).
    pub(crate) fn status_body(&self, now: Instant) -> Value {
        let (status, error) = match &self.outcome {
            None => ("InProgress", None),
            Some(Outcome::Succeeded) => ("Succeeded", None),
            Some(Outcome::Failed { code, message }) => (
                "Failed",
                Some(json!({"code": code, "message": message, "details": []})),
            ),
        };
        let mut body = json!({
            "id": self.status_path(),
            "name": self.id,
            "status": status,
            "startTime": self.start_wall,
        });
        if let Some(end) = &self.end_wall {
            body["endTime"] = json!(end);
        }
        if self.outcome.is_none() {
            let total = self.duration.as_secs_f64().max(1e-9);
            let done = now.saturating_duration_since(self.start).as_secs_f64();
            body["percentComplete"] = json!(((done / total) * 100.0).clamp(0.0, 99.0).floor());
        }
        if let Some(e) = error {
            body["error"] = e;
        }
        body
    }
}

/// How LRO responses say when to poll again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WaitHint {
    /// `Retry-After: n`, always.
    Fixed(u64),
    /// As real ARM: `Retry-After` only, the remaining time but at least `min` seconds.
    Arm { min: u64 },
    /// A time-scaled emulator: `retry-after-ms` with the remaining (scaled) time.
    Scaled,
}

impl WaitHint {
    /// The hint for a configuration and time scale.
    pub(crate) fn new(fixed: Option<u64>, min: u64, time_scale: f64) -> Self {
        match fixed {
            Some(n) => WaitHint::Fixed(n),
            None if time_scale >= 1.0 => WaitHint::Arm { min },
            None => WaitHint::Scaled,
        }
    }
}

/// Adds the polling delay for a running operation. Scaled: `retry-after-ms` with the remaining
/// (scaled) time, plus `Retry-After` in whole seconds only when at least a second remains:
/// azure-core prefers `Retry-After` over `retry-after-ms`, so a rounded-up `Retry-After: 1`
/// would slow time-scaled runs down.
pub(crate) fn add_retry_after(resp: &mut Resp, remaining: Duration, hint: WaitHint) {
    match hint {
        WaitHint::Fixed(secs) => resp.set_header("Retry-After", secs.to_string()),
        WaitHint::Arm { min } => resp.set_header(
            "Retry-After",
            retry_after_secs(remaining).max(min).to_string(),
        ),
        WaitHint::Scaled => {
            let ms = remaining.as_millis().clamp(10, 600_000);
            resp.set_header("retry-after-ms", ms.to_string());
            if remaining >= Duration::from_secs(1) {
                resp.set_header("Retry-After", retry_after_secs(remaining).to_string());
            }
        }
    }
}
