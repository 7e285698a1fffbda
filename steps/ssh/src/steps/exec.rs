//! `ssh.exec`: a bash script on a host, like the built-in `shell` step but remote.

use super::{Remote, SshTargetInput, StepPool, parse_duration};
use crate::shell_quote;
use schemars::JsonSchema;
use serde::Deserialize;
use siteflow_step::script::{ScriptOutput, exit_status_error};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Input of `ssh.exec`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshExecInput {
    /// The host.
    pub ssh: SshTargetInput,
    /// The script (bash, `-eo pipefail`).
    pub run: String,
    /// A script whose exit 0 means the work is already done.
    #[serde(default)]
    pub check: Option<String>,
    /// Environment variables for both scripts.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory on the host.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Stop the script on the host after this long (`30s`, `5m`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Output of `ssh.exec`: the same shape as the local `shell` step's.
pub type SshExecOutput = ScriptOutput;

/// The `ssh.exec` kind.
pub struct SshExec {
    pool: StepPool,
}

impl SshExec {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

/// Runs `script` from a 0600 temp file on the host, with `$SITEFLOW_OUTPUT` pointing at a
/// file whose `key=value` lines come back after a random marker.
async fn run_script(
    remote: &Remote,
    cx: &StepContext,
    input: &SshExecInput,
    script: &str,
) -> Result<(ScriptOutput, Vec<String>), StepError> {
    let marker = format!(
        "--siteflow-output-{}--",
        super::sha256_hex(format!("{}{:?}", cx.run_id, std::time::SystemTime::now()).as_bytes())
    );
    let mut wrapper = String::from(
        "umask 077\nd=$(mktemp -d)\ntrap 'rm -rf -- \"$d\"' EXIT\ncat > \"$d/script\"\n\
         SITEFLOW_OUTPUT=\"$d/output\"; : > \"$SITEFLOW_OUTPUT\"; export SITEFLOW_OUTPUT\n",
    );
    if let Some(dir) = &input.working_directory {
        wrapper.push_str(&format!("cd -- {} || exit 1\n", shell_quote(dir)));
    }
    wrapper.push_str(&format!(
        "rc=0; bash -eo pipefail \"$d/script\" </dev/null || rc=$?\n\
         printf '\\n%s\\n' {}\ncat -- \"$SITEFLOW_OUTPUT\"\nexit $rc\n",
        shell_quote(&marker)
    ));
    let mut req = remote.request(wrapper);
    for (k, v) in [
        ("SITEFLOW_RUN_ID", cx.run_id.as_str()),
        ("SITEFLOW_STEP_ID", cx.step_id.as_str()),
    ] {
        req = req.env(k, v);
    }
    req = req.env("SITEFLOW_ATTEMPT", cx.attempt.to_string());
    for (k, v) in &input.env {
        req = req.env(k, v);
    }
    req = req.stdin(script.as_bytes().to_vec());
    if let Some(t) = &input.timeout {
        req = req.timeout(parse_duration("timeout", t)?);
    }
    // Log lines until the marker; what follows is the output file.
    let past_marker = AtomicBool::new(false);
    let sink = |s: siteflow_step::LogStream, l: &str| {
        if s == siteflow_step::LogStream::Stdout && l == marker {
            past_marker.store(true, Ordering::Relaxed);
        } else if !(s == siteflow_step::LogStream::Stdout && past_marker.load(Ordering::Relaxed)) {
            cx.log(s, l);
        }
    };
    let out = remote.exec_with_sink(&req, &sink).await?;
    if out.signal.is_some() || out.exit_status.is_none() {
        return Err(StepError::retryable(
            "ExitStatus",
            format!(
                "the script on {} was stopped by signal {}",
                remote.target.label(),
                out.signal.as_deref().unwrap_or("?")
            ),
        ));
    }
    let text = out.stdout_text();
    let needle = format!("\n{marker}\n");
    let (stdout, tail) = match text.rfind(&needle) {
        Some(pos) => (&text[..pos], &text[pos + needle.len()..]),
        None => (text.as_str(), ""),
    };
    let stderr = out.stderr_text();
    let lines: Vec<&str> = stderr.lines().collect();
    let stderr_tail: Vec<String> = lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    let code = out.exit_status.map(|c| c as i32).unwrap_or(-1);
    Ok((ScriptOutput::new(code, stdout, tail), stderr_tail))
}

impl Step for SshExec {
    const KIND: &'static str = "ssh.exec";
    type Input = SshExecInput;
    type Output = SshExecOutput;

    fn description(&self) -> &'static str {
        "Run a bash script on a host over SSH; outputs exit_code, stdout and key=value lines written to $SITEFLOW_OUTPUT"
    }

    fn validate(&self, input: &SshExecInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.run.trim().is_empty() {
            return Err(StepError::permanent("InvalidInput", "`run` is empty"));
        }
        if let Some(t) = &input.timeout {
            parse_duration("timeout", t)?;
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &SshExecInput,
    ) -> Result<Observed<SshExecOutput>, StepError> {
        let Some(check) = &input.check else {
            return Ok(Observed::missing());
        };
        let remote = self.pool.remote(cx, &input.ssh, false).await?;
        let (r, _) = run_script(&remote, cx, input, check).await?;
        Ok(if r.exit_code == 0 {
            Observed::Satisfied(r)
        } else {
            Observed::NotSatisfied {
                reason: Some(format!("check exited {}", r.exit_code)),
            }
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &SshExecInput,
    ) -> Result<Progress<SshExecOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, false).await?;
        let (r, stderr_tail) = run_script(&remote, cx, input, &input.run).await?;
        if r.exit_code != 0 {
            let on = format!(" on {}", remote.target.label());
            return Err(exit_status_error(r.exit_code, &on, &stderr_tail));
        }
        Ok(Progress::Done(r))
    }
}
