//! The Prefect 3 peer: the same fan-out of no-op tasks, timed by the peer script itself.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// What the issue reports for Prefect on this machine (ms per task).
pub const ISSUE_REFERENCE_MS: f64 = 34.0;

/// The peer's own figures.
pub struct PeerResult {
    /// Prefect's version.
    pub version: String,
    /// Tasks submitted.
    pub tasks: usize,
    /// Seconds from the first `.submit()` until every future is done.
    pub tasks_s: f64,
    /// Seconds of the whole measured flow call.
    pub flow_s: f64,
    /// Seconds of the warm-up flow (ephemeral server start).
    pub warmup_s: f64,
}

/// The workspace root (this crate is `tests/bench`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

async fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().await.with_context(|| format!("run {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// `<workspace>/.ci/prefect-venv` with Prefect 3 installed; created if missing.
pub async fn ensure_venv() -> Result<PathBuf> {
    let venv = workspace_root().join(".ci/prefect-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("creating {} …", venv.display());
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )
        .await?;
    }
    let has_prefect = Command::new(&python)
        .args([
            "-c",
            "import sys, prefect, prefect.server.api.server; sys.exit(0 if prefect.__version__.startswith('3.') else 1)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_prefect {
        eprintln!("installing prefect>=3,<4 into {} …", venv.display());
        run(
            Command::new(venv.join("bin/pip"))
                // FastAPI 0.155 dropped `Body(min_items=…)`, which Prefect 3.8's server
                // still uses: the ephemeral server fails to import with a newer FastAPI.
                .args(["install", "--quiet", "prefect>=3,<4", "fastapi<0.155"])
                .stdout(Stdio::null()),
            "pip install prefect",
        )
        .await?;
    }
    Ok(python)
}

/// Runs the peer script with `tasks` no-op tasks in ephemeral mode.
pub async fn fanout(tasks: usize, timeout: Duration) -> Result<PeerResult> {
    let python = ensure_venv().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/prefect_fanout.py");
    let home = tempfile::Builder::new()
        .prefix("siteflow-bench-prefect-")
        .tempdir()?;
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--tasks")
        .arg(tasks.to_string())
        .current_dir(home.path())
        // Ephemeral mode: the client starts its own server on 127.0.0.1; no API URL, no
        // profile or database from elsewhere, nothing sent off the machine.
        .env("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        .env("PREFECT_HOME", home.path())
        .env_remove("PREFECT_API_URL")
        .env_remove("PREFECT_API_KEY")
        .env_remove("PREFECT_PROFILE")
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        .env("PREFECT_UI_ENABLED", "false")
        .env("DO_NOT_TRACK", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().context("start the Prefect peer")?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("the Prefect peer did not finish within {timeout:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("PEER_RESULT "));
    let Some(line) = line.filter(|_| out.status.success()) else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the Prefect peer failed ({}):\n{}\n{}",
            out.status,
            stdout.trim(),
            tail.join("\n")
        );
    };
    let v: Value = serde_json::from_str(line).context("parse the peer's JSON")?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    Ok(PeerResult {
        version: v
            .get("prefect_version")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        tasks: v.get("tasks").and_then(Value::as_u64).unwrap_or(0) as usize,
        tasks_s: f("tasks_s"),
        flow_s: f("flow_s"),
        warmup_s: f("warmup_s"),
    })
}
