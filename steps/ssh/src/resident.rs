//! Resident shells: a bash per channel that stays up between commands, so a command costs
//! the host one `fork` of that bash instead of a new SSH session (sshd forks a session
//! process and execs the login shell for every channel).
//!
//! The shell reads a random marker, then one framed script after another from stdin (the
//! same frame as [`ExecRequest::framed_input`]), runs each in a subshell with stdin from
//! `/dev/null` (variables, `cd`, `exit` and traps stay in the subshell), and after each
//! prints `\n<marker> <status>` on stdout and `\n<marker>` on stderr. The client reads
//! both streams up to their markers, so a command's output never mixes with the next
//! one's. Only requests without stdin and without a remote timeout run here; the others
//! get a channel of their own ([`crate::exec`], which also hands shells to their
//! connection and takes them back; this module knows only the shell and its channel). A connection keeps idle resident shells
//! (with or without sudo) for the next command; each holds one of the connection's
//! channel permits, and a request that needs a fresh channel when none is left closes an
//! idle shell first.
//!
//! Caveat, as with any shared shell: a background process a command leaves behind that
//! keeps writing to its stdout or stderr writes into the output of a later command on
//! the same shell. Such processes should redirect their output (`nohup … >log 2>&1 &`);
//! a command that needs to be alone can set a remote `timeout`, which runs it on a
//! channel of its own.

use crate::SshError;
use crate::command::{
    ExecOutput, ExecRequest, LineSink, LineSplitter, SUDO, bash_command_line, capture,
    read_while_writing,
};
use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use siteflow_step::LogStream;
use tokio::sync::OwnedSemaphorePermit;

/// The resident loop (fixed text, on the command line; values only ever come on stdin).
const LOOP: &str = concat!(
    "IFS= read -r m || exit 125; ",
    "while IFS= read -r n; do ",
    "LC_ALL=C IFS= read -r -N \"$n\" s || exit 125; ",
    "(eval \"unset m n s; $s\") </dev/null; ",
    "printf '\\n%s %s\\n' \"$m\" \"$?\"; ",
    "printf '\\n%s\\n' \"$m\" >&2; ",
    "done"
);

/// One resident shell: its channel, marker, and the channel permit it holds.
pub(crate) struct Resident {
    rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    marker: String,
    sudo: bool,
    _permit: OwnedSemaphorePermit,
}

impl Resident {
    /// Starts a resident shell on `channel`, a new channel of the connection `host`
    /// (`user@host:port`) that `permit` counts.
    pub(crate) async fn start(
        channel: Channel<Msg>,
        permit: OwnedSemaphorePermit,
        sudo: bool,
        host: &str,
    ) -> Result<Self, SshError> {
        let lost = |e: russh::Error| SshError::ConnectionLost {
            host: host.to_string(),
            reason: e.to_string(),
        };
        let prefix: Vec<String> = if sudo {
            SUDO.map(String::from).to_vec()
        } else {
            vec![]
        };
        let line = bash_command_line(&prefix, LOOP);
        channel.exec(true, line).await.map_err(lost)?;
        let (rx, tx) = channel.split();
        let mut token = [0u8; 16];
        rand::fill(&mut token);
        let marker = format!("--siteflow-end-{}--", hex::encode(token));
        tx.data(format!("{marker}\n").as_bytes())
            .await
            .map_err(lost)?;
        Ok(Self {
            rx,
            tx,
            marker,
            sudo,
            _permit: permit,
        })
    }

    /// Whether this shell runs through sudo.
    pub(crate) fn sudo(&self) -> bool {
        self.sudo
    }

    /// Whether the shell is still there: an idle shell whose channel already reported its
    /// end (the server closed it, the shell was killed) is not used again.
    pub(crate) fn alive(&mut self) -> bool {
        use futures::FutureExt;
        loop {
            match self.rx.wait().now_or_never() {
                None => return true,
                Some(
                    None
                    | Some(ChannelMsg::Eof | ChannelMsg::Close | ChannelMsg::ExitStatus { .. }),
                ) => {
                    return false;
                }
                // Anything else (a window adjustment) is not a sign of life or death.
                Some(Some(_)) => {}
            }
        }
    }

    /// Ends the shell: end of its input makes the loop exit; then the channel closes.
    pub(crate) async fn close(self) {
        let _ = self.tx.eof().await;
        let _ = self.tx.close().await;
    }

    /// Runs one request. On success the shell is ready for the next; on any error it must
    /// be dropped (its state is unknown). When the shell ends before the command's markers,
    /// `ended` turns what it wrote on stderr into the error.
    pub(crate) async fn run(
        &mut self,
        req: &ExecRequest,
        sink: Option<LineSink<'_>>,
        ended: &(dyn Fn(&[u8]) -> SshError + Sync),
    ) -> Result<ExecOutput, SshError> {
        let input = req.framed_input()?;
        let cancel = req.cancel.clone().unwrap_or_default();
        let marker = self.marker.as_bytes();
        let writer = async {
            // An error surfaces on the reading side (the channel ends).
            let _ = self.tx.data(&input[..]).await;
        };
        let rx = &mut self.rx;
        let reader = async {
            let mut out = Marked::new(LogStream::Stdout, marker);
            let mut err = Marked::new(LogStream::Stderr, marker);
            loop {
                let msg = tokio::select! {
                    m = rx.wait() => m,
                    () = cancel.cancelled() => return Err(SshError::Cancelled),
                };
                match msg {
                    Some(ChannelMsg::Data { data }) => out.push(&data, sink),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => err.push(&data, sink),
                    Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::Eof | ChannelMsg::Close)
                    | None => {
                        return Err(ended(&err.captured));
                    }
                    Some(_) => {}
                }
                if let (Some(status), true) = (out.status, err.status.is_some()) {
                    return Ok(ExecOutput {
                        exit_status: Some(status),
                        signal: None,
                        stdout: out.finish(sink),
                        stderr: err.finish(sink),
                    });
                }
            }
        };
        read_while_writing(writer, reader).await
    }
}

/// One output stream of a resident shell: lines to the sink, bytes captured, up to the
/// marker line that ends the command.
struct Marked<'m> {
    lines: LineSplitter,
    captured: Vec<u8>,
    marker: &'m [u8],
    /// Raw bytes of the current, unfinished line.
    line: Vec<u8>,
    /// An empty line not yet passed on: the newline the loop prints before its marker
    /// shows up as one when the output ended with a newline of its own.
    held_empty: bool,
    status: Option<u32>,
}

impl<'m> Marked<'m> {
    fn new(stream: LogStream, marker: &'m [u8]) -> Self {
        Self {
            lines: LineSplitter::new(stream),
            captured: Vec::new(),
            marker,
            line: Vec::new(),
            held_empty: false,
            status: None,
        }
    }

    fn push(&mut self, mut data: &[u8], sink: Option<LineSink<'_>>) {
        while self.status.is_none() && !data.is_empty() {
            let (chunk, rest, complete) = match data.iter().position(|&b| b == b'\n') {
                Some(p) => (&data[..=p], &data[p + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            self.line.extend_from_slice(chunk);
            if !complete {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let body = &line[..line.len() - 1];
            if let Some(status) = self.end(body) {
                self.status = Some(status);
                return;
            }
            if self.held_empty {
                self.held_empty = false;
                self.emit(b"\n", sink);
            }
            if body.is_empty() {
                self.held_empty = true;
            } else {
                self.emit(&line, sink);
            }
        }
    }

    /// The status when `body` is the marker line (`<marker> <status>` on stdout, `<marker>`
    /// on stderr, where the status is reported as 0).
    fn end(&self, body: &[u8]) -> Option<u32> {
        let rest = body.strip_prefix(self.marker)?;
        if rest.is_empty() {
            return Some(0);
        }
        std::str::from_utf8(rest.strip_prefix(b" ")?)
            .ok()?
            .parse()
            .ok()
    }

    fn emit(&mut self, bytes: &[u8], sink: Option<LineSink<'_>>) {
        capture(&mut self.captured, bytes);
        self.lines.push(bytes, sink);
    }

    /// The stream's bytes without the loop's newline before the marker. A last line
    /// without its own newline was ended by that newline, which is removed here.
    fn finish(mut self, sink: Option<LineSink<'_>>) -> Vec<u8> {
        if !self.held_empty && self.captured.last() == Some(&b'\n') {
            // The line before the marker was the command's last, unterminated line.
            self.captured.pop();
        }
        self.lines.finish(sink);
        self.captured
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn marked(chunks: &[&[u8]]) -> (Vec<u8>, Option<u32>, Vec<String>) {
        let got = std::sync::Mutex::new(Vec::new());
        let sink = |_: LogStream, l: &str| got.lock().unwrap().push(l.to_string());
        let mut m = Marked::new(LogStream::Stdout, b"--M--");
        for c in chunks {
            m.push(c, Some(&sink));
        }
        let status = m.status;
        let bytes = m.finish(Some(&sink));
        (bytes, status, got.into_inner().unwrap())
    }

    #[test]
    fn output_is_cut_at_the_marker_whatever_its_last_newline() {
        let (b, s, l) = marked(&[b"a\nb", b"c\n\n--M-- 3\n"]);
        assert_eq!((b.as_slice(), s), (&b"a\nbc\n"[..], Some(3)));
        assert_eq!(l, ["a", "bc"]);
        let (b, s, l) = marked(&[b"a\nno newline", b"\n--M-- 0\n"]);
        assert_eq!((b.as_slice(), s), (&b"a\nno newline"[..], Some(0)));
        assert_eq!(l, ["a", "no newline"]);
        let (b, _, l) = marked(&[b"x\n\n\n", b"\n--M-- 0\n"]);
        assert_eq!(b.as_slice(), b"x\n\n\n");
        assert_eq!(l, ["x", "", ""]);
        let (b, s, l) = marked(&[b"\n--M-- 0\n"]);
        assert_eq!((b.as_slice(), s, l.len()), (&b""[..], Some(0), 0));
        // A line that only starts like the marker is output.
        let (b, s, _) = marked(&[b"--M--x\n\n--M-- 1\n"]);
        assert_eq!((b.as_slice(), s), (&b"--M--x\n"[..], Some(1)));
    }

    /// The loop, run by a local bash, given two commands: each one's output and status
    /// come back separately, and state does not carry over.
    #[test]
    fn the_loop_runs_commands_one_after_another_in_isolation() {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(LOOP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let first =
            ExecRequest::new("X=1; cd /; echo \"$X $PWD\"; echo oops >&2; exit 4").env("E", "v'1");
        let second =
            ExecRequest::new("echo \"${X-unset} ${m-unset} $E\"; cat; trap 'echo trapped' EXIT");
        let mut input = b"--M--\n".to_vec();
        input.extend(first.framed_input().unwrap());
        input.extend(second.framed_input().unwrap());
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "1 /\n\n--M-- 4\nunset unset \ntrapped\n\n--M-- 0\n"
        );
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            "oops\n\n--M--\n\n--M--\n"
        );
    }
}
