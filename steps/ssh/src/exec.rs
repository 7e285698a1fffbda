//! Remote command execution on a connection: a request runs in a resident shell when it
//! can (see [`crate::resident`]), else on a channel of its own, with its output streamed
//! line by line, its remote timeout, cancellation, and a lost connection reported.

use crate::command::{
    ExecOutput, ExecRequest, LineSink, LineSplitter, capture, read_while_writing,
    sudo_wants_password,
};
use crate::pool::{Acquired, Connection};
use crate::resident::Resident;
use crate::{SshError, SshPool, SshTarget};
use russh::ChannelMsg;
use siteflow_step::LogStream;
use std::time::{Duration, Instant};

impl SshPool {
    /// Runs a command on `target`, streaming its output lines to `sink`.
    ///
    /// A non-zero exit is not an error here (see [`ExecOutput::check`]); a remote timeout,
    /// a sudo password prompt, a lost connection and cancellation are.
    pub async fn exec(
        &self,
        target: &SshTarget,
        req: &ExecRequest,
        sink: LineSink<'_>,
    ) -> Result<ExecOutput, SshError> {
        let conn = self.connection(target).await?;
        let result = exec_on(&conn, req, sink).await;
        if matches!(result, Err(SshError::ConnectionLost { .. })) {
            self.invalidate(target, conn.id);
        }
        result.and_then(|out| {
            if req.sudo && out.exit_status == Some(1) && sudo_wants_password(&out.stderr) {
                Err(SshError::SudoPasswordRequired {
                    user: conn.user.clone(),
                    host: target.host_port(),
                })
            } else {
                Ok(out)
            }
        })
    }

    /// [`SshPool::exec`], then [`ExecOutput::check`].
    pub async fn exec_checked(
        &self,
        target: &SshTarget,
        req: &ExecRequest,
        sink: LineSink<'_>,
    ) -> Result<ExecOutput, SshError> {
        self.exec(target, req, sink).await?.check(target)
    }
}

async fn exec_on(
    conn: &Connection,
    req: &ExecRequest,
    sink: LineSink<'_>,
) -> Result<ExecOutput, SshError> {
    if req.stdin.is_none() && req.timeout.is_none() && conn.residents_enabled() {
        let sink = if req.quiet { None } else { Some(sink) };
        return exec_resident(conn, req, sink).await;
    }
    let input = req.framed_input()?;

    let (channel, _permit) = conn.open_session().await?;
    channel
        .exec(true, req.command_line())
        .await
        .map_err(|e| conn.lost(e.to_string()))?;
    let (mut rx, tx) = channel.split();

    let sink = if req.quiet { None } else { Some(sink) };
    let started = Instant::now();
    // The host's `timeout` stops the command; this local bound only covers a host that
    // stops answering, and is generous on purpose.
    let local_deadline = req.timeout.map(|t| {
        tokio::time::Instant::now()
            + t
            + req.kill_grace.unwrap_or(Duration::from_secs(5))
            + Duration::from_secs(15)
    });
    let cancel = req.cancel.clone().unwrap_or_default();

    let writer = async {
        // Errors here surface on the reading side (lost connection) or do not matter
        // (the command exited without reading all its input).
        if tx.data(&input[..]).await.is_ok() {
            let _ = tx.eof().await;
        }
    };

    let reader = async {
        let mut out = ExecOutput {
            exit_status: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let mut lines_out = LineSplitter::new(LogStream::Stdout);
        let mut lines_err = LineSplitter::new(LogStream::Stderr);
        let mut closed = false;
        loop {
            let msg = tokio::select! {
                m = rx.wait() => m,
                () = cancel.cancelled() => return Err(SshError::Cancelled),
                () = sleep_until(local_deadline) => {
                    return Err(SshError::RemoteTimeout {
                        host: conn.label.clone(),
                        after: req.timeout.unwrap_or_default(),
                    });
                }
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    capture(&mut out.stdout, &data);
                    lines_out.push(&data, sink);
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    capture(&mut out.stderr, &data);
                    lines_err.push(&data, sink);
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => out.exit_status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    out.signal = Some(signal_label(&signal_name));
                }
                Some(ChannelMsg::Failure) => {
                    return Err(SshError::Channel {
                        host: conn.label.clone(),
                        reason: "the server refused to run the command".into(),
                    });
                }
                Some(ChannelMsg::Close) => {
                    closed = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        lines_out.finish(sink);
        lines_err.finish(sink);
        if out.exit_status.is_none() && out.signal.is_none() {
            return Err(conn.lost(if closed {
                "the channel closed without an exit status"
            } else {
                "the connection ended while the command ran"
            }));
        }
        Ok(out)
    };

    let out = read_while_writing(writer, reader).await?;
    if let Some(t) = req.timeout {
        let killed = out.signal.as_deref() == Some("KILL") || out.exit_status == Some(137);
        if out.exit_status == Some(124) || (killed && started.elapsed() >= t) {
            return Err(SshError::RemoteTimeout {
                host: conn.label.clone(),
                after: t,
            });
        }
    }
    Ok(out)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn signal_label(sig: &russh::Sig) -> String {
    let s = format!("{sig:?}");
    s.strip_prefix("Custom(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .map(str::to_string)
        .unwrap_or(s)
}

/// Runs `req` on an idle resident shell of `conn` (or a new one), and gives the shell back
/// to the connection when the command finished cleanly.
async fn exec_resident(
    conn: &Connection,
    req: &ExecRequest,
    sink: Option<LineSink<'_>>,
) -> Result<ExecOutput, SshError> {
    let mut shell = match conn.acquire(Some(req.sudo)).await? {
        Acquired::Shell(s) => s,
        Acquired::Permit(p) => {
            let (channel, permit) = conn.open_with(p).await?;
            Resident::start(channel, permit, req.sudo, &conn.label).await?
        }
    };
    let sudo = req.sudo;
    match shell
        .run(req, sink, &|stderr| resident_ended(conn, sudo, stderr))
        .await
    {
        Ok(out) => {
            conn.put_idle(shell);
            Ok(out)
        }
        Err(e) => {
            tokio::spawn(shell.close());
            Err(e)
        }
    }
}

/// Why a resident shell ended before its command's markers: sudo asking for a password,
/// the connection going away, or the shell itself exiting (the command killed it).
fn resident_ended(conn: &Connection, sudo: bool, stderr: &[u8]) -> SshError {
    if sudo && sudo_wants_password(stderr) {
        return SshError::SudoPasswordRequired {
            user: conn.user.clone(),
            host: conn.label.clone(),
        };
    }
    if conn.is_closed() {
        return conn.lost("the connection ended while the command ran");
    }
    SshError::Channel {
        host: conn.label.clone(),
        reason: "the remote shell ended while the command ran (did the command kill its parent?)"
            .into(),
    }
}
