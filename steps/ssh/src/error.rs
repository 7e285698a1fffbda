//! The transport's error type and its classification into a [`StepError`].

use siteflow_step::StepError;
use std::time::Duration;

/// Everything that can go wrong talking to a host over SSH.
///
/// Messages are lowercase fragments that read after "failed to …"; none contains a
/// secret value. [`SshError::code`] is the stable code the engine sees.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The TCP connection or the SSH handshake did not complete.
    #[error("connect to {host}: {reason}")]
    Connect {
        /// `user@host:port`.
        host: String,
        /// What happened.
        reason: String,
    },
    /// Connecting or authenticating took longer than allowed.
    #[error("connect to {host}: no answer within {after:?}")]
    ConnectTimeout {
        /// `user@host:port`.
        host: String,
        /// The bound that elapsed.
        after: Duration,
    },
    /// The server refused every configured credential.
    #[error("authenticate to {host}: {reason}")]
    Auth {
        /// `user@host:port`.
        host: String,
        /// Which methods were tried and why they failed.
        reason: String,
    },
    /// A private key file could not be read or decrypted.
    #[error("load private key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The host presented a key other than the one we trust.
    #[error(
        "verify host key of {host}: it presented {presented}, but {expected} is expected; \
         if the host was legitimately re-installed, remove the old key ({source_hint}) and retry"
    )]
    HostKeyMismatch {
        /// `host:port`.
        host: String,
        /// Fingerprint the server presented (`SHA256:…`).
        presented: String,
        /// Fingerprint(s) we trust.
        expected: String,
        /// Where the trusted key came from (known_hosts path, run state, pin).
        source_hint: String,
    },
    /// Strict checking found no key for the host.
    #[error(
        "verify host key of {host}: no key for it in {known_hosts} (it presented {presented}); \
         add it with `ssh-keyscan -p PORT HOST >> {known_hosts}` after checking the fingerprint, \
         or use the `accept-new` or `pinned` host-key policy"
    )]
    HostKeyUnknown {
        /// `host:port`.
        host: String,
        /// The known_hosts file consulted.
        known_hosts: String,
        /// Fingerprint the server presented.
        presented: String,
    },
    /// The host-key store (run state) could not be read or written.
    #[error("access the host-key store: {0}")]
    HostKeyStore(String),
    /// The connection dropped while an operation was using it; the next call reconnects.
    #[error("use the connection to {host}: it was lost ({reason})")]
    ConnectionLost {
        /// `user@host:port`.
        host: String,
        /// What was observed.
        reason: String,
    },
    /// The server refused to open a channel.
    #[error("open a channel to {host}: {reason}")]
    Channel {
        /// `user@host:port`.
        host: String,
        /// Why.
        reason: String,
    },
    /// `sudo -n` wanted a password.
    #[error(
        "run sudo as {user} on {host}: sudo asks for a password, and siteflow only uses \
         non-interactive sudo; allow it with a drop-in such as \
         `echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-siteflow && chmod 0440 /etc/sudoers.d/90-siteflow`"
    )]
    SudoPasswordRequired {
        /// The login user.
        user: String,
        /// `host:port`.
        host: String,
    },
    /// The remote command ran longer than its timeout and was killed.
    #[error("run the command on {host}: it did not finish within {after:?} and was stopped")]
    RemoteTimeout {
        /// `user@host:port`.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// The remote command exited with a non-zero status or a signal.
    #[error("run the command on {host}: it exited with {status}{tail}")]
    ExitStatus {
        /// `user@host:port`.
        host: String,
        /// `status 3` or `signal KILL`.
        status: String,
        /// The last lines of stderr, prefixed with `: `, or empty.
        tail: String,
    },
    /// An SFTP operation failed.
    #[error("{op} {path} on {host} over SFTP: {reason}")]
    Sftp {
        /// `upload`, `download`, …
        op: &'static str,
        /// The remote path.
        path: String,
        /// `user@host:port`.
        host: String,
        /// What the server said.
        reason: String,
    },
    /// A local file to upload could not be read.
    #[error("read {path} to upload it to {dest}: {reason}")]
    LocalRead {
        /// The local file.
        path: String,
        /// The path on the host.
        dest: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller gave something we cannot use (bad fingerprint, relative path…).
    #[error("{0}")]
    InvalidInput(String),
    /// `~/.ssh/config` could not be read or parsed.
    #[error("read ssh config {path}: {reason}")]
    SshConfig {
        /// The config file.
        path: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The operation was cancelled by the engine.
    #[error("finish the SSH operation: it was cancelled")]
    Cancelled,
}

impl SshError {
    /// The stable code the engine persists and `retry.non_retryable_errors` matches.
    pub fn code(&self) -> &'static str {
        match self {
            SshError::Connect { .. } => "SshConnect",
            SshError::ConnectTimeout { .. } => "SshConnectTimeout",
            SshError::Auth { .. } => "SshAuthFailed",
            SshError::Key { .. } => "SshKeyUnreadable",
            SshError::HostKeyMismatch { .. } => "HostKeyMismatch",
            SshError::HostKeyUnknown { .. } => "HostKeyUnknown",
            SshError::HostKeyStore(_) => "HostKeyStore",
            SshError::ConnectionLost { .. } => "ConnectionLost",
            SshError::Channel { .. } => "SshChannel",
            SshError::SudoPasswordRequired { .. } => "SudoPasswordRequired",
            SshError::RemoteTimeout { .. } => "RemoteTimeout",
            SshError::ExitStatus { .. } => "ExitStatus",
            SshError::Sftp { .. } => "SftpFailed",
            SshError::LocalRead { .. } => "SourceUnreadable",
            SshError::InvalidInput(_) => "InvalidInput",
            SshError::SshConfig { .. } => "SshConfigInvalid",
            SshError::Cancelled => "Cancelled",
        }
    }

    /// Whether another attempt may help: network trouble yes, trust and credentials no.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SshError::Connect { .. }
                | SshError::ConnectTimeout { .. }
                | SshError::ConnectionLost { .. }
                | SshError::Channel { .. }
                | SshError::RemoteTimeout { .. }
                | SshError::HostKeyStore(_)
                | SshError::Sftp { .. }
        )
    }
}

impl From<SshError> for StepError {
    fn from(e: SshError) -> Self {
        let code = e.code();
        if matches!(e, SshError::Cancelled) {
            StepError::cancelled(e.to_string())
        } else if e.is_retryable() {
            StepError::retryable(code, e.to_string())
        } else {
            StepError::permanent(code, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteflow_step::ErrorClass;

    #[test]
    fn classifies_into_step_errors() {
        let lost: StepError = SshError::ConnectionLost {
            host: "u@h:22".into(),
            reason: "eof".into(),
        }
        .into();
        assert_eq!(lost.code, "ConnectionLost");
        assert!(lost.class.is_retryable());

        let mismatch: StepError = SshError::HostKeyMismatch {
            host: "h:22".into(),
            presented: "SHA256:aaa".into(),
            expected: "SHA256:bbb".into(),
            source_hint: "pin".into(),
        }
        .into();
        assert_eq!(mismatch.code, "HostKeyMismatch");
        assert_eq!(mismatch.class, ErrorClass::Permanent);
        assert!(mismatch.message.contains("SHA256:aaa"));
        assert!(mismatch.message.contains("SHA256:bbb"));
        assert!(mismatch.message.contains("h:22"));

        let sudo: StepError = SshError::SudoPasswordRequired {
            user: "deploy".into(),
            host: "h:22".into(),
        }
        .into();
        assert_eq!(sudo.class, ErrorClass::Permanent);
        assert!(sudo.message.contains("deploy ALL=(ALL) NOPASSWD: ALL"));
        assert!(sudo.message.contains("/etc/sudoers.d/"));

        let cancelled: StepError = SshError::Cancelled.into();
        assert_eq!(cancelled.class, ErrorClass::Cancelled);
    }
}
