//! Running a local script: its lines streamed to the step log, `key=value` outputs collected.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use siteflow_step::script::{
    LINE_LIMIT, OUTPUT_FILE_LIMIT, STDOUT_LIMIT, ScriptOutput, bounded_line, output_file_too_large,
};
use siteflow_step::{LogStream, StepContext, StepError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// What a script did, and the last lines of its stderr (for the error message).
pub(crate) struct ScriptResult {
    pub output: ScriptOutput,
    pub stderr_tail: Vec<String>,
}

/// Prefix of the temp dirs scripts run from: `siteflow-step-<pid>-<random>`.
const DIR_PREFIX: &str = "siteflow-step-";

/// Guards the sweep of stale script dirs: once per process.
static SWEEP: std::sync::Once = std::sync::Once::new();

/// Removes the script dirs a killed siteflow left behind (their pid no longer runs), once
/// per process: they may hold rendered secrets. Blocking (it scans the temp dir and removes
/// trees): async code calls [`remove_stale_script_dirs_async`].
pub fn remove_stale_script_dirs() {
    SWEEP.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(DIR_PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let mine = e.metadata().is_ok_and(|m| {
                std::os::unix::fs::MetadataExt::uid(&m) == nix::unistd::geteuid().as_raw()
            });
            if mine && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// [`remove_stale_script_dirs`] on the blocking pool; returns once the sweep is done (at
/// once after the first time).
pub async fn remove_stale_script_dirs_async() {
    if !SWEEP.is_completed() {
        // An error only means the runtime is shutting down (the sweep did not start; a
        // later call makes it); a panic in the sweep resumes here, as it would inline.
        let _ = siteflow_step::blocking(|| {
            remove_stale_script_dirs();
            Ok(())
        })
        .await;
    }
}

/// Process groups of the scripts running now (each script leads its own group).
static RUNNING_GROUPS: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

/// Kills (SIGKILL) the process groups of every script still running. For the exits that run
/// no destructors (`std::process::exit`): otherwise a dropped script kills its own group.
pub fn kill_running_scripts() {
    let groups = std::mem::take(&mut *RUNNING_GROUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// A running script's process group: registered while it runs, killed if the script is
/// abandoned (cancelled, timed out, its future dropped) before it exits. A script that
/// exits leaves what it started in the background alone.
struct GroupGuard {
    pgid: Option<i32>,
    exited: bool,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        let pgid = pid.and_then(|p| i32::try_from(p).ok());
        if let Some(g) = pgid {
            RUNNING_GROUPS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(g);
        }
        GroupGuard {
            pgid,
            exited: false,
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(g) = self.pgid else { return };
        RUNNING_GROUPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&g);
        if !self.exited {
            // killpg, never an external `kill -KILL -<pgid>` (procps kill reads `-<n>`
            // without `--` as an option).
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
    }
}

/// Runs `script` with bash from a 0600 temp file (so rendered values, secrets included,
/// never appear in a process's argv), streaming its output to the step's log.
pub(crate) async fn run_script(
    cx: &StepContext,
    script: &str,
    env: &BTreeMap<String, String>,
    working_directory: Option<&str>,
) -> Result<ScriptResult, StepError> {
    let io = |what: &str, e: std::io::Error| StepError::retryable("Io", format!("{what}: {e}"));
    remove_stale_script_dirs_async().await;
    // 0700 and 0600 whatever the umask: the rendered script may hold secrets.
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| io("create temp dir", e))?;
    let script_path = dir.path().join("step.sh");
    let out_path = dir.path().join("output");
    {
        let private = |p: &std::path::Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        };
        let mut f = private(&script_path).map_err(|e| io("write script", e))?;
        f.write_all(script.as_bytes())
            .map_err(|e| io("write script", e))?;
        private(&out_path).map_err(|e| io("create output file", e))?;
    }
    let cwd: PathBuf =
        working_directory.map_or_else(|| cx.working_dir.clone(), |d| cx.resolve_path(d));
    let mut cmd = Command::new("bash");
    cmd.arg("-eo")
        .arg("pipefail")
        .arg(&script_path)
        .current_dir(&cwd)
        .envs(env)
        .env("SITEFLOW_OUTPUT", &out_path)
        .env("SITEFLOW_RUN_ID", &cx.run_id)
        .env("SITEFLOW_STEP_ID", &cx.step_id)
        .env("SITEFLOW_ATTEMPT", cx.attempt.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    match &cx.traceparent {
        Some(tp) => cmd.env("TRACEPARENT", tp),
        None => cmd.env_remove("TRACEPARENT"),
    };
    let mut child = cmd.spawn().map_err(|e| {
        StepError::permanent(
            "SpawnFailed",
            format!("cannot start bash in {}: {e}", cwd.display()),
        )
    })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut group = GroupGuard::new(child.id());
    let out_task = async {
        let mut kept = String::new();
        read_bounded_lines(stdout, |line| {
            cx.log(LogStream::Stdout, line);
            kept.push_str(line);
            kept.push('\n');
            // Keep memory bounded on chatty scripts; the exact tail is cut at the end.
            if kept.len() > 2 * STDOUT_LIMIT {
                kept = siteflow_step::script::tail(&kept, STDOUT_LIMIT).to_string();
            }
        })
        .await;
        kept
    };
    let err_task = async {
        let mut tail: Vec<String> = vec![];
        read_bounded_lines(stderr, |line| {
            cx.log(LogStream::Stderr, line);
            tail.push(line.to_string());
            if tail.len() > 5 {
                tail.remove(0);
            }
        })
        .await;
        tail
    };
    let (stdout, stderr_tail, status) = tokio::select! {
        r = async { tokio::join!(out_task, err_task, child.wait()) } => r,
        _ = cx.cancel.cancelled() => {
            // Dropping the guard kills the whole process group, not just bash.
            drop(group);
            let _ = child.kill().await;
            return Err(StepError::cancelled("the step was cancelled"));
        }
    };
    group.exited = true;
    let status = status.map_err(|e| io("wait for script", e))?;
    let exit_code = status.code().unwrap_or(-1);
    // Checked before reading: the file is read whole, and a script may write gigabytes.
    let len = tokio::fs::metadata(&out_path).await.map_or(0, |m| m.len());
    if len > OUTPUT_FILE_LIMIT {
        return Err(output_file_too_large(len, ""));
    }
    let output_file = tokio::fs::read(&out_path)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(ScriptResult {
        output: ScriptOutput::new(exit_code, &stdout, &output_file),
        stderr_tail,
    })
}

/// Calls `on_line` for each line of `r` (without its `\n` or `\r\n`), reading in chunks so a
/// line longer than [`LINE_LIMIT`] is never held whole: its first `LINE_LIMIT` bytes are
/// kept, the rest counted and noted at the line's end.
async fn read_bounded_lines(r: impl AsyncRead + Unpin, mut on_line: impl FnMut(&str)) {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut dropped = 0usize;
    let mut emit = |line: &mut Vec<u8>, dropped: &mut usize| {
        if line.last() == Some(&b'\r') && *dropped == 0 {
            line.pop();
        }
        let text = String::from_utf8_lossy(line);
        on_line(&bounded_line(&text, *dropped));
        line.clear();
        *dropped = 0;
    };
    // A read error ends the stream like EOF does.
    while let Ok(buf) = r.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() || dropped > 0 {
                emit(&mut line, &mut dropped);
            }
            break;
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        let take = LINE_LIMIT.saturating_sub(line.len()).min(chunk.len());
        line.extend_from_slice(&chunk[..take]);
        dropped += chunk.len() - take;
        let used = chunk.len() + usize::from(newline.is_some());
        r.consume(used);
        if newline.is_some() {
            emit(&mut line, &mut dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut out = vec![];
        read_bounded_lines(input, |l| out.push(l.to_string())).await;
        out
    }

    #[tokio::test]
    async fn long_lines_are_cut_while_reading() {
        let mut input = b"a\r\nb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * LINE_LIMIT + 7));
        input.extend(b"\nlast");
        let lines = lines_of(&input).await;
        assert_eq!(lines[..2], ["a", "b"]);
        assert_eq!(lines.len(), 4);
        assert!(lines[2].starts_with(&"x".repeat(LINE_LIMIT)));
        assert!(
            lines[2].ends_with(&format!(
                "[… {} bytes of this line dropped …]",
                2 * LINE_LIMIT + 7
            )),
            "{}",
            &lines[2][LINE_LIMIT..]
        );
        assert_eq!(lines[3], "last");
    }
}
