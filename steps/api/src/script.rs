//! What a script step returns, local (`shell`) or remote (`ssh.exec`): its exit code, the
//! tail of its stdout, and the `key=value` lines it wrote to `$SITEFLOW_OUTPUT`.

use crate::StepError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bytes of stdout kept as the `stdout` output (the tail).
pub const STDOUT_LIMIT: usize = 64 * 1024;

/// Bytes of one output line kept: a longer line keeps its first `LINE_LIMIT` bytes and a
/// note of how many were dropped (so a script printing one huge line never has the whole
/// line in memory).
pub const LINE_LIMIT: usize = 16 * 1024;

/// Bytes a script may write to `$SITEFLOW_OUTPUT`, all values together: outputs are small
/// results passed to later steps (large data belongs in a file whose path is the output).
pub const OUTPUT_FILE_LIMIT: u64 = 1024 * 1024;

/// The error of a script whose `$SITEFLOW_OUTPUT` holds more than [`OUTPUT_FILE_LIMIT`].
pub fn output_file_too_large(len: u64, where_: &str) -> StepError {
    StepError::permanent(
        "OutputTooLarge",
        format!(
            "the script{where_} wrote {len} bytes to $SITEFLOW_OUTPUT; the limit is {OUTPUT_FILE_LIMIT} bytes (1 MiB) for all its values together: write large data to a file and output its path"
        ),
    )
}

/// A line cut to [`LINE_LIMIT`] bytes (at a character boundary), with a note of how many
/// bytes were dropped (`dropped` counts bytes already dropped while reading). A line that
/// was cut already (its note fits in the slack) passes unchanged.
pub fn bounded_line(line: &str, dropped: usize) -> std::borrow::Cow<'_, str> {
    const NOTE_ROOM: usize = 64;
    if dropped == 0 && line.len() <= LINE_LIMIT + NOTE_ROOM {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = LINE_LIMIT.min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = dropped + (line.len() - end);
    std::borrow::Cow::Owned(format!(
        "{} [… {dropped} bytes of this line dropped …]",
        &line[..end]
    ))
}

/// Output of a script step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScriptOutput {
    /// The exit code.
    pub exit_code: i32,
    /// Standard output (its last 64 KiB).
    pub stdout: String,
    /// `key=value` lines written to `$SITEFLOW_OUTPUT`.
    #[serde(flatten)]
    pub outputs: BTreeMap<String, String>,
}

impl ScriptOutput {
    /// A finished script's output: `stdout` cut to its tail, `output_file` parsed.
    pub fn new(exit_code: i32, stdout: &str, output_file: &str) -> Self {
        ScriptOutput {
            exit_code,
            stdout: tail(stdout, STDOUT_LIMIT).to_string(),
            outputs: parse_output_lines(output_file),
        }
    }

    /// Registers the values of the outputs named in `secret` (a step's `secret_outputs`) as
    /// secrets: they are redacted from what follows and never stored (nor is `stdout` when
    /// it holds one). How a script transforms a secret cannot be recognised, so the workflow
    /// says which outputs are secret.
    pub fn mark_secrets(self, cx: &crate::StepContext, secret: &[String]) -> Self {
        for name in secret {
            if let Some(v) = self.outputs.get(name) {
                cx.add_secret(v);
            }
        }
        self
    }
}

/// The `key=value` lines of an output file (blank keys ignored; later lines win).
pub fn parse_output_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    let start = s.len().saturating_sub(max);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// The retryable `ExitStatus` error of a script that exited non-zero, with the last
/// stderr lines (already redacted by the engine when stored).
pub fn exit_status_error(exit_code: i32, where_: &str, stderr_tail: &[String]) -> StepError {
    let mut msg = format!("script{where_} exited with status {exit_code}");
    if !stderr_tail.is_empty() {
        msg.push_str("; last stderr lines:\n");
        msg.push_str(&stderr_tail.join("\n"));
    }
    StepError::retryable("ExitStatus", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs_and_cuts_stdout() {
        let o = ScriptOutput::new(0, "héllo\nworld\n", "a=1\n=x\nb = two=2\nno-equals\na=3\n");
        assert_eq!(o.outputs.get("a").map(String::as_str), Some("3"));
        assert_eq!(o.outputs.get("b").map(String::as_str), Some(" two=2"));
        assert_eq!(o.outputs.len(), 2);
        assert_eq!(tail("héllo", 4), "llo");
        let long = "é".repeat(LINE_LIMIT);
        let cut = bounded_line(&long, 5);
        assert!(cut.len() < LINE_LIMIT + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!(
            "[… {} bytes of this line dropped …]",
            long.len() - LINE_LIMIT + 5
        )));
        assert_eq!(bounded_line("short", 0), "short");
        assert_eq!(bounded_line(&cut, 0), cut, "a cut line is not cut again");
        let e = exit_status_error(3, " on node1", &["boom".into()]);
        assert_eq!(e.code, "ExitStatus");
        assert!(e.class.is_retryable());
        assert_eq!(
            e.message,
            "script on node1 exited with status 3; last stderr lines:\nboom"
        );
    }
}
