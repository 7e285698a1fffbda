//! What a remote command is: the request (a framed script on stdin holding environment,
//! `TRACEPARENT`, working directory and command, read by `bash`; `sudo -n`; a remote
//! `timeout` that really stops the process), its output, and the line splitting and
//! capture both ways of running it share ([`crate::exec`] on a channel of its own,
//! [`crate::resident`] in a resident shell).
//!
//! A command costs the host one process: the login shell sshd starts for the channel runs
//! the bootstrap itself when it is bash (else it `exec`s bash), and the bootstrap reads the
//! framed script with bash builtins (`read -N`, no `head`, no temp file).

use crate::quote::{is_env_name, shell_quote};
use crate::{SshError, SshTarget};
use siteflow_step::{CancellationToken, LogStream, Secret};
use std::time::Duration;

/// Receives each complete output line of a command (without its newline).
pub type LineSink<'a> = &'a (dyn Fn(LogStream, &str) + Send + Sync);

/// Reads the script length, then exactly that many bytes of script (`read -N` counts bytes
/// under `LC_ALL=C`, which applies to that one builtin only), from stdin and runs it;
/// whatever follows on stdin is the command's own input. bash reads only the bytes it was
/// asked for, in blocks, so nothing of that input is lost. Only this fixed text is on the
/// remote command line, so no value (secret or not) is visible in `ps`.
const BOOTSTRAP: &str = r#"IFS= read -r n || exit 125; LC_ALL=C IFS= read -r -N "$n" s || exit 125; eval "unset n s; $s""#;

/// The bash a command runs in when the command line does not start in one (sudo,
/// timeout, a login shell that is not bash): no startup files.
const BASH: [&str; 3] = ["bash", "--noprofile", "--norc"];

/// The words that run a command as root without ever prompting.
pub(crate) const SUDO: [&str; 3] = ["sudo", "-n", "--"];

/// A remote command line that runs the fixed bash text `body` behind `prefix` (sudo,
/// timeout). Without a prefix the login shell runs `body` itself when it is bash (no
/// extra process) and `exec`s bash otherwise. Every word is quoted.
pub(crate) fn bash_command_line(prefix: &[String], body: &str) -> String {
    let mut words: Vec<&str> = prefix.iter().map(String::as_str).collect();
    words.extend(BASH);
    words.extend(["-c", body]);
    let line = words
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if prefix.is_empty() {
        format!("[ -n \"${{BASH_VERSION-}}\" ] || exec {line}; {body}")
    } else {
        line
    }
}

/// Runs `writer` (a command's stdin) alongside `reader` (its output) and returns when the
/// reader is done: a command may exit without reading all its stdin, and the writer would
/// then wait for window space forever.
pub(crate) async fn read_while_writing<T>(
    writer: impl std::future::Future<Output = ()>,
    reader: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(writer, reader);
    let mut writer_done = false;
    loop {
        tokio::select! {
            r = &mut reader => break r,
            () = &mut writer, if !writer_done => writer_done = true,
        }
    }
}

/// Output captured per stream at most; further bytes are still logged but not kept.
const CAPTURE_LIMIT: usize = 32 * 1024 * 1024;

/// A command to run on a host.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    /// Shell text run by `bash`; interpolate values only through [`shell_quote`].
    pub command: String,
    /// Variables exported before the command runs; values may be secrets.
    pub env: Vec<(String, Secret<String>)>,
    /// Bytes fed to the command's stdin, then end of file.
    pub stdin: Option<Secret<Vec<u8>>>,
    /// Working directory on the host.
    pub cwd: Option<String>,
    /// Run as root through `sudo -n` (never prompts).
    pub sudo: bool,
    /// Stop the command on the host after this long (`timeout`, then `KILL` after `kill_grace`).
    pub timeout: Option<Duration>,
    /// How long after `TERM` the command gets `KILL` (default 5 s).
    pub kill_grace: Option<Duration>,
    /// W3C `traceparent`, exported as `TRACEPARENT`.
    pub traceparent: Option<String>,
    /// Send output lines to the sink (turn off when the output is a secret).
    pub quiet: bool,
    /// Stops the command early (the engine's attempt token).
    pub cancel: Option<CancellationToken>,
}

impl ExecRequest {
    /// A command with defaults: no sudo, no timeout, output logged.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            ..Self::default()
        }
    }

    /// Adds an exported variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), Secret::new(value.into())));
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Secret::new(bytes.into()));
        self
    }

    /// Runs through `sudo -n`.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Sets the remote timeout.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Sets the `traceparent` to export.
    pub fn traceparent(mut self, tp: impl Into<String>) -> Self {
        self.traceparent = Some(tp.into());
        self
    }

    /// The remote command line: fixed words only, each quoted. Without sudo and timeout it
    /// is the bootstrap itself when the login shell is bash (one process per command), and
    /// an `exec` of bash otherwise.
    pub fn command_line(&self) -> String {
        let mut argv: Vec<String> = Vec::new();
        if self.sudo {
            argv.extend(SUDO.map(String::from));
        }
        if let Some(t) = self.timeout {
            let grace = self.kill_grace.unwrap_or(Duration::from_secs(5));
            argv.extend([
                "timeout".to_string(),
                "-k".to_string(),
                seconds(grace),
                seconds(t),
            ]);
        }
        bash_command_line(&argv, BOOTSTRAP)
    }

    /// What the command reads on stdin: the script's length in bytes, a newline, the
    /// script, then [`ExecRequest::stdin`].
    pub fn framed_input(&self) -> Result<Vec<u8>, SshError> {
        let script = self.script()?;
        let mut input = format!("{}\n", script.len()).into_bytes();
        input.extend_from_slice(script.as_bytes());
        if let Some(stdin) = &self.stdin {
            input.extend_from_slice(stdin.expose());
        }
        Ok(input)
    }

    /// The script sent on stdin: exports, `cd`, then the command.
    pub(crate) fn script(&self) -> Result<String, SshError> {
        let mut s = String::new();
        let mut vars: Vec<(&str, &str)> = Vec::new();
        if let Some(tp) = &self.traceparent {
            vars.push(("TRACEPARENT", tp));
        }
        for (k, v) in &self.env {
            if !is_env_name(k) {
                return Err(SshError::InvalidInput(format!(
                    "export {k:?}: environment variable names are letters, digits and `_`, \
                     not starting with a digit"
                )));
            }
            vars.push((k, v.expose()));
        }
        for (k, v) in vars {
            s.push_str(&format!("{k}={}; export {k}\n", shell_quote(v)));
        }
        if let Some(dir) = &self.cwd {
            s.push_str(&format!("cd -- {} || exit 1\n", shell_quote(dir)));
        }
        s.push_str(&self.command);
        s.push('\n');
        Ok(s)
    }
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// How a command ended and what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status, when it exited normally.
    pub exit_status: Option<u32>,
    /// Signal name (`KILL`), when a signal ended it.
    pub signal: Option<String>,
    /// Everything it wrote to stdout (up to 32 MiB).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (up to 32 MiB).
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0) && self.signal.is_none()
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok` on status 0, else an [`SshError::ExitStatus`] quoting the end of stderr.
    pub fn check(self, target: &SshTarget) -> Result<Self, SshError> {
        if self.success() {
            return Ok(self);
        }
        let status = match (&self.signal, self.exit_status) {
            (Some(sig), _) => format!("signal {sig}"),
            (None, Some(code)) => format!("status {code}"),
            (None, None) => "no status".to_string(),
        };
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        Err(SshError::ExitStatus {
            host: target.label(),
            status,
            tail: if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            },
        })
    }
}

/// Splits a byte stream into lines for the sink.
pub(crate) struct LineSplitter {
    stream: LogStream,
    pending: Vec<u8>,
    /// Bytes of the pending line dropped past `LINE_LIMIT` (a huge line is never held).
    dropped: usize,
}

impl LineSplitter {
    pub(crate) fn new(stream: LogStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8], sink: Option<LineSink<'_>>) {
        let Some(sink) = sink else { return };
        self.pending.extend_from_slice(bytes);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            emit(sink, self.stream, &line[..line.len() - 1], self.dropped);
            self.dropped = 0;
        }
        let limit = siteflow_step::script::LINE_LIMIT;
        if self.pending.len() > limit {
            self.dropped += self.pending.len() - limit;
            self.pending.truncate(limit);
        }
    }

    pub(crate) fn finish(&mut self, sink: Option<LineSink<'_>>) {
        if let Some(sink) = sink
            && !self.pending.is_empty()
        {
            emit(
                sink,
                self.stream,
                &std::mem::take(&mut self.pending),
                std::mem::take(&mut self.dropped),
            );
        }
    }
}

fn emit(sink: LineSink<'_>, stream: LogStream, line: &[u8], dropped: usize) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    sink(
        stream,
        &siteflow_step::script::bounded_line(&String::from_utf8_lossy(line), dropped),
    );
}

pub(crate) fn capture(buf: &mut Vec<u8>, bytes: &[u8]) {
    let room = CAPTURE_LIMIT.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

pub(crate) fn sudo_wants_password(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("sudo: a password is required") || text.contains("sudo: a terminal is required")
}

/// Test helper: runs `req`'s command line and framed stdin through a local login shell
/// (`bash` or `sh`), as a host would, with `env` set (`Some`) or removed (`None`).
/// Returns (exit code, stdout, stderr).
#[cfg(test)]
pub(crate) fn run_locally(
    shell: &str,
    req: &ExecRequest,
    env: &[(&str, Option<&str>)],
) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(shell);
    cmd.arg("-c").arg(req.command_line());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = req.framed_input().unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_locally(shell: &str, req: &ExecRequest) -> (i32, String) {
        let (code, out, _) =
            super::run_locally(shell, req, &[("LANG", Some("C.UTF-8")), ("LC_ALL", None)]);
        (code, out)
    }

    #[test]
    fn command_line_holds_no_values() {
        let req = ExecRequest::new("echo hi")
            .env("K3S_TOKEN", "s3cret-value")
            .sudo(true)
            .timeout(Duration::from_millis(1500))
            .traceparent("00-abc-def-01");
        let line = req.command_line();
        assert!(!line.contains("s3cret"));
        assert!(!line.contains("echo hi"));
        assert!(
            line.starts_with("sudo -n -- timeout -k 5s 1.500s bash --noprofile --norc -c "),
            "{line}"
        );
        assert!(
            req.script()
                .unwrap()
                .contains("K3S_TOKEN=s3cret-value; export K3S_TOKEN\n")
        );
    }

    #[test]
    fn framed_script_runs_and_stdin_follows() {
        // Multi-byte characters in the script: its length is in bytes, and a UTF-8 locale
        // must not make the bootstrap read characters (it would eat the command's stdin).
        let req = ExecRequest::new(r#"printf '%s|%s|é|' "$V" "$TRACEPARENT"; cat; exit 7"#)
            .env("V", "a'b $x; `y`\nz ü")
            .traceparent("00-t-s-01")
            .stdin(b"payload\nline2".to_vec());
        for shell in ["bash", "sh"] {
            let (code, out) = run_locally(shell, &req);
            assert_eq!(code, 7, "login shell {shell}");
            assert_eq!(
                out, "a'b $x; `y`\nz ü|00-t-s-01|é|payload\nline2",
                "login shell {shell}"
            );
        }
    }

    #[test]
    fn large_script_and_large_stdin_arrive_whole() {
        let body = "x=1\n".repeat(50_000);
        let req =
            ExecRequest::new(format!("{body}printf '%s' \"$(wc -c)\"")).stdin(vec![b'Z'; 200_000]);
        let (code, out) = run_locally("bash", &req);
        assert_eq!((code, out.as_str()), (0, "200000"));
    }

    #[test]
    fn bash_login_shell_runs_the_bootstrap_itself() {
        let line = ExecRequest::new("true").command_line();
        assert!(
            line.starts_with("[ -n \"${BASH_VERSION-}\" ] || exec bash"),
            "{line}"
        );
        // The bootstrap's own variables do not leak into the command.
        let req = ExecRequest::new(r#"printf '%s,%s' "${n-unset}" "${s-unset}""#);
        assert_eq!(run_locally("bash", &req), (0, "unset,unset".to_string()));
    }

    #[test]
    fn rejects_bad_env_names() {
        let req = ExecRequest::new("true").env("A B", "x");
        assert!(matches!(req.script(), Err(SshError::InvalidInput(_))));
    }

    #[test]
    fn splits_lines_across_chunks() {
        let got = std::sync::Mutex::new(Vec::new());
        let sink = |s: LogStream, l: &str| got.lock().unwrap().push(format!("{}:{l}", s.name()));
        let mut sp = LineSplitter::new(LogStream::Stderr);
        sp.push(b"ab", Some(&sink));
        sp.push(b"c\r\nd\n\ne", Some(&sink));
        sp.finish(Some(&sink));
        assert_eq!(
            *got.lock().unwrap(),
            ["stderr:abc", "stderr:d", "stderr:", "stderr:e"]
        );
    }

    #[test]
    fn sudo_prompt_detection() {
        assert!(sudo_wants_password(b"sudo: a password is required\n"));
        assert!(!sudo_wants_password(b"permission denied\n"));
    }
}
