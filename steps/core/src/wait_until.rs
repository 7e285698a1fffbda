//! `wait_until`: polls a check script until it succeeds or a deadline passes.

use crate::process::run_script;
use crate::sleep::Empty;
use schemars::JsonSchema;
use serde::Deserialize;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Polls a check until it succeeds.
pub struct WaitUntil;

/// Input of `wait_until`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitUntilInput {
    /// A bash script; exit 0 means the condition holds.
    pub check: String,
    /// Time between checks (default `5s`).
    #[serde(default = "default_interval")]
    pub interval: siteflow_step::Duration,
    /// Give up after this long (default `5m`), counted from the first check, across resumes.
    #[serde(default = "default_timeout")]
    pub timeout: siteflow_step::Duration,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_interval() -> siteflow_step::Duration {
    std::time::Duration::from_secs(5).into()
}

fn default_timeout() -> siteflow_step::Duration {
    std::time::Duration::from_secs(300).into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Step for WaitUntil {
    const KIND: &'static str = "wait_until";
    type Input = WaitUntilInput;
    type Output = Empty;

    fn description(&self) -> &'static str {
        "Poll a check script at an interval until it exits 0, or fail after a timeout"
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &WaitUntilInput,
    ) -> Result<Observed<Empty>, StepError> {
        let r = run_script(cx, &input.check, &input.env, None).await?;
        Ok(if r.output.exit_code == 0 {
            Observed::Satisfied(Empty {})
        } else {
            Observed::NotSatisfied {
                reason: Some(format!("check exited {}", r.output.exit_code)),
            }
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &WaitUntilInput,
    ) -> Result<Progress<Empty>, StepError> {
        let interval = input.interval.get();
        let timeout = input.timeout.get();
        // The deadline survives retries and resumes through the step's saved progress.
        let started = match cx
            .progress()
            .and_then(|p| p.get("started_at").and_then(|v| v.as_u64()))
        {
            Some(t) => t,
            None => {
                let t = now_ms();
                cx.save_progress(serde_json::json!({ "started_at": t }))
                    .await?;
                t
            }
        };
        if now_ms().saturating_sub(started) >= timeout.as_millis() as u64 {
            return Err(StepError::permanent(
                "WaitTimeout",
                format!("the check did not succeed within {}", input.timeout),
            ));
        }
        Ok(Progress::Wait {
            recheck_after: interval,
        })
    }
}
