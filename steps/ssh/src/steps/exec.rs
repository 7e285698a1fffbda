//! `ssh.exec`: a bash script on a host, like the built-in `shell` step but remote.

use super::{Remote, SshTargetInput, StepPool};
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
    pub timeout: Option<siteflow_step::Duration>,
    /// Outputs whose values are secrets (say a transformed copy of one): redacted from logs
    /// and never stored.
    #[serde(default)]
    pub secret_outputs: Vec<String>,
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

/// The text `ssh.exec` runs on the host around a user's `script` (it travels inside the
/// framed stdin, like every value, never on a command line):
///
/// * `$SITEFLOW_OUTPUT` names a file that does not exist yet, in a directory only this
///   user can write (`$XDG_RUNTIME_DIR`, else `~/.cache/siteflow`, made 0700 once);
/// * the script runs with `set -eo pipefail` in a subshell (a fork of this bash, no new
///   program) with stdin from `/dev/null`, in `working_directory` when given. As in any
///   subshell, `$$` is the pid of the shell around it (`$BASHPID` is the script's own):
///   `kill $$` ends that shell, and the step fails with a retryable `SshChannel` error;
/// * then `marker` is printed on stdout, followed by the output file's lines if the script
///   wrote any, and the file is removed.
///
/// A script that writes no outputs costs no process beyond the subshell; one that does,
/// one `rm`.
pub fn script_wrapper(script: &str, working_directory: Option<&str>, marker: &str) -> String {
    let mut w = String::with_capacity(script.len() + 1024);
    w.push_str(concat!(
        "__sf_d=${XDG_RUNTIME_DIR-}\n",
        "if ! [[ -n $__sf_d && -d $__sf_d && -O $__sf_d && -w $__sf_d ]]; then\n",
        "  __sf_d=${HOME-}/.cache/siteflow\n",
        "  if ! [[ -d $__sf_d && -O $__sf_d ]]; then\n",
        "    mkdir -p -m 700 -- \"$__sf_d\" || { echo \"siteflow: cannot create $__sf_d for \\$SITEFLOW_OUTPUT (set HOME or XDG_RUNTIME_DIR)\" >&2; exit 125; }\n",
        "  fi\n",
        "fi\n",
        "SITEFLOW_OUTPUT=$__sf_d/output.$BASHPID.$RANDOM$RANDOM; export SITEFLOW_OUTPUT\n",
        "if [[ -e $SITEFLOW_OUTPUT || -L $SITEFLOW_OUTPUT ]]; then rm -f -- \"$SITEFLOW_OUTPUT\"; fi\n",
    ));
    if let Some(dir) = working_directory {
        w.push_str(&format!("cd -- {} || exit 1\n", shell_quote(dir)));
    }
    // The script text goes through `eval` after `unset`ting the wrapper's own variables,
    // in a subshell that is a statement of its own: `set -e` is honoured there (it would
    // not be on the left of `||`). A subshell is a fork of this bash, not a new program:
    // on a resident shell the whole command then costs the host no `exec` at all.
    w.push_str(&format!(
        "__sf_s={}\n(eval \"unset __sf_d __sf_s; set -eo pipefail; $__sf_s\") </dev/null\n",
        shell_quote(script)
    ));
    w.push_str(&format!(
        concat!(
            "__sf_rc=$?\n",
            "printf '\\n%s\\n' {marker}\n",
            "if [[ -e $SITEFLOW_OUTPUT ]]; then\n",
            "  while IFS= read -r __sf_l || [[ -n $__sf_l ]]; do printf '%s\\n' \"$__sf_l\"; done < \"$SITEFLOW_OUTPUT\"\n",
            "  rm -f -- \"$SITEFLOW_OUTPUT\"\n",
            "fi\n",
            "exit $__sf_rc\n",
        ),
        marker = shell_quote(marker)
    ));
    w
}

/// Runs `script` on the host through [`script_wrapper`]; the `key=value` lines it writes to
/// `$SITEFLOW_OUTPUT` come back after a random marker.
async fn run_script(
    remote: &Remote,
    cx: &StepContext,
    input: &SshExecInput,
    script: &str,
) -> Result<(ScriptOutput, Vec<String>), StepError> {
    let marker = format!(
        "--siteflow-output-{}--",
        siteflow_step::sha256_hex(
            format!("{}{:?}", cx.run_id, std::time::SystemTime::now()).as_bytes()
        )
    );
    let wrapper = script_wrapper(script, input.working_directory.as_deref(), &marker);
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
    if let Some(t) = input.timeout {
        req = req.timeout(t.get());
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
    if tail.len() as u64 > siteflow_step::script::OUTPUT_FILE_LIMIT {
        return Err(siteflow_step::script::output_file_too_large(
            tail.len() as u64,
            &format!(" on {}", remote.target.label()),
        ));
    }
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
            Observed::Satisfied(r.mark_secrets(cx, &input.secret_outputs))
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
        Ok(Progress::Done(r.mark_secrets(cx, &input.secret_outputs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecRequest;

    /// Runs the wrapper as the host's login shell (bash) would, with `home` as `$HOME` and
    /// no `$XDG_RUNTIME_DIR`. Returns (exit code, stdout, stderr).
    fn run(script: &str, cwd: Option<&str>, home: &std::path::Path) -> (i32, String, String) {
        let req = ExecRequest::new(script_wrapper(script, cwd, "--m--")).env("E", "v a'l");
        let home = home.to_str().unwrap();
        crate::command::run_locally(
            "bash",
            &req,
            &[("HOME", Some(home)), ("XDG_RUNTIME_DIR", None)],
        )
    }

    fn leftovers(home: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(home.join(".cache/siteflow"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn outputs_come_back_after_the_marker_and_the_file_is_removed() {
        let home = tempfile::tempdir().unwrap();
        let (code, out, _) = run(
            "echo hello\necho \"a=1\" >> \"$SITEFLOW_OUTPUT\"\nprintf 'b=%s' \"$E\" >> \"$SITEFLOW_OUTPUT\"",
            None,
            home.path(),
        );
        assert_eq!(code, 0);
        assert_eq!(out, "hello\n\n--m--\na=1\nb=v a'l\n");
        assert!(
            leftovers(home.path()).is_empty(),
            "{:?}",
            leftovers(home.path())
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(home.path().join(".cache/siteflow"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn errexit_and_pipefail_hold_and_the_status_comes_back() {
        let home = tempfile::tempdir().unwrap();
        let (code, out, _) = run("echo one\nfalse\necho two", None, home.path());
        assert_eq!((code, out.as_str()), (1, "one\n\n--m--\n"));
        let (code, out, _) = run("false | true\necho after", None, home.path());
        assert_eq!((code, out.as_str()), (1, "\n--m--\n"));
        let (code, _, _) = run("exit 7", None, home.path());
        assert_eq!(code, 7);
        // The script killed by a signal: the wrapper still reports its status.
        let (code, out, _) = run("kill -TERM $BASHPID", None, home.path());
        assert_eq!((code, out.as_str()), (143, "\n--m--\n"));
    }

    #[test]
    fn stdin_is_empty_cwd_applies_and_wrapper_variables_do_not_leak() {
        let home = tempfile::tempdir().unwrap();
        let (code, out, err) = run(
            "printf '%s|%s|%s|' \"$(cat)\" \"$PWD\" \"${__sf_d-unset}${__sf_s-unset}\"",
            Some("/"),
            home.path(),
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "|/|unsetunset|\n--m--\n");
    }
}
