//! `shell`: runs a local bash script; `check` (exit 0) means already done.

use crate::process::run_script;
use schemars::JsonSchema;
use serde::Deserialize;
use siteflow_step::script::{ScriptOutput, exit_status_error};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::collections::BTreeMap;

/// Runs a local script.
pub struct Shell;

/// Input of `shell`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellInput {
    /// The bash script (run with `-eo pipefail`).
    pub run: String,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directory to run in (default: where siteflow was started).
    pub working_directory: Option<String>,
    /// A script whose exit 0 means "already done": `run` is then skipped.
    pub check: Option<String>,
    /// Outputs whose values are secrets (say a transformed copy of one): redacted from logs
    /// and never stored.
    #[serde(default)]
    pub secret_outputs: Vec<String>,
}

/// Output of `shell`: exit code, stdout (its last 64 KiB) and every `key=value` line the
/// script wrote to `$SITEFLOW_OUTPUT`.
pub type ShellOutput = ScriptOutput;

impl Step for Shell {
    const KIND: &'static str = "shell";
    type Input = ShellInput;
    type Output = ShellOutput;

    fn description(&self) -> &'static str {
        "Run a local bash script; outputs exit_code, stdout and key=value lines written to $SITEFLOW_OUTPUT"
    }

    fn validate(&self, input: &ShellInput) -> Result<(), StepError> {
        if input.run.trim().is_empty() {
            return Err(StepError::permanent("InvalidInput", "`run` is empty"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ShellInput,
    ) -> Result<Observed<ShellOutput>, StepError> {
        let Some(check) = &input.check else {
            return Ok(Observed::missing());
        };
        let r = run_script(cx, check, &input.env, input.working_directory.as_deref()).await?;
        Ok(if r.output.exit_code == 0 {
            Observed::Satisfied(r.output.mark_secrets(cx, &input.secret_outputs))
        } else {
            Observed::NotSatisfied {
                reason: Some(format!("check exited {}", r.output.exit_code)),
            }
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ShellInput,
    ) -> Result<Progress<ShellOutput>, StepError> {
        let r = run_script(
            cx,
            &input.run,
            &input.env,
            input.working_directory.as_deref(),
        )
        .await?;
        if r.output.exit_code != 0 {
            return Err(exit_status_error(r.output.exit_code, "", &r.stderr_tail));
        }
        Ok(Progress::Done(
            r.output.mark_secrets(cx, &input.secret_outputs),
        ))
    }
}
