//! Running the external tools the harness is built on (`ip`, `nsenter`, `unshare`, `ssh-keygen`).

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Runs `program args...` to completion (blocking) and returns its output, whatever its status.
pub(crate) fn run_output<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} {}", describe(&args)))
}

/// Runs `program args...` (blocking) and fails with its stderr unless it exits 0; returns stdout.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = run_output(program, &args)?;
    check(program, &args, out)
}

/// [`run`] without blocking the async runtime (`tokio::process`).
pub(crate) async fn run_async<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = tokio::process::Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program} {}", describe(&args)))?;
    check(program, &args, out)
}

/// Like [`run`], but ignores failures (for best-effort cleanup).
pub(crate) fn run_quiet<I, S>(program: &str, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let _ = run_output(program, args);
}

/// Turns a finished command into its stdout, or an error carrying its stderr.
pub(crate) fn check(program: &str, args: &[std::ffi::OsString], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}{}",
            describe(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(args: &[std::ffi::OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The project's one POSIX quoting function (from the SSH transport).
pub use siteflow_ssh::shell_quote;
