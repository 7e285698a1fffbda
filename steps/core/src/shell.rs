//! `shell`: runs a local bash script; `check` (exit 0) means already done.

use crate::process::run_script;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
}

/// Output of `shell`: exit code, stdout (its last 64 KiB) and every `key=value` line the
/// script wrote to `$SITEFLOW_OUTPUT`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ShellOutput {
    /// The exit code.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: String,
    /// `key=value` lines from `$SITEFLOW_OUTPUT`.
    #[serde(flatten)]
    pub outputs: BTreeMap<String, String>,
}

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
        Ok(if r.exit_code == 0 {
            Observed::Satisfied(ShellOutput {
                exit_code: 0,
                stdout: r.stdout,
                outputs: r.outputs,
            })
        } else {
            Observed::NotSatisfied {
                reason: Some(format!("check exited {}", r.exit_code)),
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
        if r.exit_code != 0 {
            let tail = r.stderr_tail.join("\n");
            let mut msg = format!("script exited with status {}", r.exit_code);
            if !tail.is_empty() {
                msg.push_str(&format!("; last stderr lines:\n{tail}"));
            }
            return Err(StepError::retryable("ExitStatus", msg));
        }
        Ok(Progress::Done(ShellOutput {
            exit_code: 0,
            stdout: r.stdout,
            outputs: r.outputs,
        }))
    }
}
