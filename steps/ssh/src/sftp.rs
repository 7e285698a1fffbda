//! File transfer over SFTP: uploads written to a temporary name beside the target and
//! renamed into place, with mode and (through sudo) owner; secrets as 0600 files; local
//! files streamed in chunks; downloads.

use crate::pool::Connection;
use crate::quote::shell_quote;
use crate::{ExecRequest, SshError, SshPool, SshTarget};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use siteflow_step::Secret;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;

/// Bytes per SFTP write or read request (OpenSSH accepts up to 255 KiB).
const CHUNK: usize = 64 * 1024;
/// Requests in flight at once on one transfer.
const IN_FLIGHT: usize = 16;
/// Seconds one SFTP request may take.
const REQUEST_TIMEOUT_SECS: u64 = 60;

/// Where and how an uploaded file lands.
#[derive(Clone, Debug)]
pub struct UploadSpec {
    /// Absolute path on the host.
    pub path: String,
    /// Permission bits (default `0o644`; secrets are always `0o600`).
    pub mode: Option<u32>,
    /// `user` or `user:group` to `chown` the file to (needs `sudo` unless it is the login user).
    pub owner: Option<String>,
    /// Write through `sudo -n` (for root-owned directories such as `/etc/rancher/k3s`).
    pub sudo: bool,
}

impl UploadSpec {
    /// A file at `path`, mode 0644, owned by the login user.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            mode: None,
            owner: None,
            sudo: false,
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the owner (`user` or `user:group`).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Writes through sudo.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }
}

/// What an upload writes: bytes in memory, or a local file read chunk by chunk as it is
/// sent, so a large file is never held in memory whole.
#[derive(Clone, Copy)]
enum Content<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl<'a> Content<'a> {
    /// The chunks to send; a local file is opened here.
    async fn chunks(self, dest: &str) -> Result<Chunks<'a>, SshError> {
        Ok(match self {
            Content::Bytes(b) => Chunks::Bytes(b),
            Content::File(local) => Chunks::File(
                tokio::fs::File::open(local)
                    .await
                    .map_err(|e| self.unreadable(dest, e))?,
            ),
        })
    }

    fn unreadable(self, dest: &str, e: std::io::Error) -> SshError {
        SshError::LocalRead {
            path: match self {
                Content::File(local) => local.display().to_string(),
                Content::Bytes(_) => "the content".into(),
            },
            dest: dest.to_string(),
            reason: e.to_string(),
        }
    }
}

/// A [`Content`]'s chunks, produced as the transfer asks for them.
enum Chunks<'a> {
    Bytes(&'a [u8]),
    File(tokio::fs::File),
}

impl Chunks<'_> {
    /// The next `CHUNK` bytes (fewer only at the end), or `None` at the end.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let chunk = match self {
            Chunks::Bytes(rest) => {
                let (chunk, tail) = rest.split_at(CHUNK.min(rest.len()));
                *rest = tail;
                chunk.to_vec()
            }
            Chunks::File(f) => {
                let mut buf = Vec::with_capacity(CHUNK);
                f.take(CHUNK as u64).read_to_end(&mut buf).await?;
                buf
            }
        };
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// Why writing chunks stopped.
enum WriteFailure {
    Local(std::io::Error),
    Remote(SftpError),
}

/// A name unlikely to collide, for temporary files (created exclusively anyway).
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn split_path(path: &str) -> Result<(&str, &str), SshError> {
    let bad = || {
        SshError::InvalidInput(format!(
            "upload to {path:?}: give an absolute path to a file, such as /etc/rancher/k3s/config.yaml"
        ))
    };
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(bad());
    }
    let (dir, name) = path.rsplit_once('/').ok_or_else(bad)?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad());
    }
    Ok((if dir.is_empty() { "/" } else { dir }, name))
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// An open SFTP subsystem on one channel; errors name the operation and path.
struct Sftp<'c> {
    conn: &'c Connection,
    raw: RawSftpSession,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<'c> Sftp<'c> {
    async fn open(conn: &'c Connection) -> Result<Self, SshError> {
        let (channel, permit) = conn.open_session().await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| conn.lost(e.to_string()))?;
        let raw = RawSftpSession::new(channel.into_stream());
        raw.set_timeout(REQUEST_TIMEOUT_SECS);
        let s = Self {
            conn,
            raw,
            _permit: permit,
        };
        s.raw
            .init()
            .await
            .map_err(|e| s.err("start SFTP for", "", e))?;
        Ok(s)
    }

    fn err(&self, op: &'static str, path: &str, e: SftpError) -> SshError {
        if self.conn.is_closed() {
            return self.conn.lost(format!("during SFTP: {e}"));
        }
        let reason = match &e {
            SftpError::Status(st) if st.error_message.is_empty() => st.status_code.to_string(),
            SftpError::Status(st) => format!("{} ({})", st.status_code, st.error_message),
            other => other.to_string(),
        }
        .to_lowercase();
        SshError::Sftp {
            op,
            path: path.to_string(),
            host: self.conn.label.clone(),
            reason,
        }
    }

    /// Creates `path` exclusively as 0600, writes `content`, then sets `mode`.
    async fn write_new(&self, path: &str, content: Content<'_>, mode: u32) -> Result<(), SshError> {
        // Before the remote file exists: an unreadable local file creates nothing.
        let mut chunks = content.chunks(path).await?;
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..FileAttributes::empty()
        };
        let handle = self
            .raw
            .open(
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE | OpenFlags::TRUNCATE,
                attrs,
            )
            .await
            .map_err(|e| self.err("create", path, e))?
            .handle;
        let written = self.write_chunks(handle.as_str(), &mut chunks).await;
        let chmod = async {
            // SETSTAT is not subject to the umask, unlike the mode given at creation.
            let attrs = FileAttributes {
                permissions: Some(mode & 0o7777),
                ..FileAttributes::empty()
            };
            self.raw.fsetstat(handle.as_str(), attrs).await
        };
        let result = match written {
            Ok(()) => chmod.await.map(|_| ()).map_err(WriteFailure::Remote),
            Err(e) => Err(e),
        };
        let closed = self.raw.close(handle.as_str()).await;
        result.map_err(|e| match e {
            WriteFailure::Local(e) => content.unreadable(path, e),
            WriteFailure::Remote(e) => self.err("write", path, e),
        })?;
        closed.map_err(|e| self.err("close", path, e))?;
        Ok(())
    }

    /// Writes `chunks` at their offsets, up to `IN_FLIGHT` requests at once; only those
    /// chunks are in memory.
    async fn write_chunks(
        &self,
        handle: &str,
        chunks: &mut Chunks<'_>,
    ) -> Result<(), WriteFailure> {
        let mut in_flight = FuturesUnordered::new();
        let mut offset = 0u64;
        let mut more = true;
        loop {
            while more && in_flight.len() < IN_FLIGHT {
                match chunks.next().await.map_err(WriteFailure::Local)? {
                    Some(chunk) => {
                        let at = offset;
                        offset += chunk.len() as u64;
                        in_flight.push(self.raw.write(handle, at, chunk));
                    }
                    None => more = false,
                }
            }
            match in_flight.next().await {
                Some(written) => {
                    written.map_err(WriteFailure::Remote)?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Atomically replaces `to` with `from` (OpenSSH's `posix-rename@openssh.com`; plain
    /// SFTP rename refuses to overwrite).
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), SshError> {
        let mut data = Vec::with_capacity(from.len() + to.len() + 8);
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match self.raw.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(st)) if st.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(st)) if st.status_code == StatusCode::OpUnsupported => {
                // Not OpenSSH: remove, then rename (briefly without the file).
                let _ = self.raw.remove(to).await;
                self.raw
                    .rename(from, to)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.err("rename into", to, e))
            }
            Ok(Packet::Status(st)) => Err(self.err("rename into", to, SftpError::Status(st))),
            Ok(_) => Err(self.err("rename into", to, SftpError::UnexpectedPacket)),
            Err(e) => Err(self.err("rename into", to, e)),
        }
    }

    async fn read_all(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let handle = self
            .raw
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| self.err("open", path, e))?
            .handle;
        let result = self.read_handle(handle.as_str()).await;
        let _ = self.raw.close(handle.as_str()).await;
        result.map_err(|e| self.err("read", path, e))
    }

    async fn read_handle(&self, handle: &str) -> Result<Vec<u8>, SftpError> {
        let size = self.raw.fstat(handle).await?.attrs.size.unwrap_or(0) as usize;
        let chunks = size.div_ceil(CHUNK);
        let mut out: Vec<u8> = futures::stream::iter(0..chunks)
            .map(|i| self.read_at(handle, (i * CHUNK) as u64, CHUNK.min(size - i * CHUNK)))
            .buffered(IN_FLIGHT)
            .try_concat()
            .await?;
        // The file may have grown since the stat (or the size was not reported).
        loop {
            let more = self.read_at(handle, out.len() as u64, CHUNK).await?;
            if more.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&more);
        }
    }

    /// Reads up to `len` bytes at `offset`, fewer only at end of file.
    async fn read_at(&self, handle: &str, offset: u64, len: usize) -> Result<Vec<u8>, SftpError> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let want = (len - buf.len()) as u32;
            match self.raw.read(handle, offset + buf.len() as u64, want).await {
                Ok(d) if d.data.is_empty() => break,
                Ok(d) => buf.extend_from_slice(&d.data),
                Err(SftpError::Status(st)) if st.status_code == StatusCode::Eof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(buf)
    }
}

impl SshPool {
    /// Writes `content` to `spec.path` atomically: a temporary file in the same directory,
    /// created 0600, given its mode (and owner), then renamed over the target.
    pub async fn upload(
        &self,
        target: &SshTarget,
        content: &[u8],
        spec: &UploadSpec,
    ) -> Result<(), SshError> {
        self.upload_content(target, Content::Bytes(content), spec)
            .await
    }

    /// [`SshPool::upload`] of a local file, read as it is sent: memory stays bounded
    /// however large the file. An unreadable file is [`SshError::LocalRead`].
    pub async fn upload_file(
        &self,
        target: &SshTarget,
        local: &Path,
        spec: &UploadSpec,
    ) -> Result<(), SshError> {
        self.upload_content(target, Content::File(local), spec)
            .await
    }

    async fn upload_content(
        &self,
        target: &SshTarget,
        content: Content<'_>,
        spec: &UploadSpec,
    ) -> Result<(), SshError> {
        let (dir, name) = split_path(&spec.path)?;
        let mode = spec.mode.unwrap_or(0o644);
        let conn = self.connection(target).await?;
        let result = if spec.sudo || spec.owner.is_some() {
            self.upload_staged(target, &conn, content, spec, dir, name, mode)
                .await
        } else {
            upload_direct(&conn, content, &spec.path, dir, name, mode).await
        };
        if matches!(result, Err(SshError::ConnectionLost { .. })) {
            self.invalidate(target, conn.id);
        }
        result
    }

    /// [`SshPool::upload`] for secret content: always mode 0600, content never logged.
    pub async fn upload_secret<T: AsRef<[u8]>>(
        &self,
        target: &SshTarget,
        content: &Secret<T>,
        spec: &UploadSpec,
    ) -> Result<(), SshError> {
        if let Some(m) = spec.mode
            && m != 0o600
        {
            return Err(SshError::InvalidInput(format!(
                "upload secret to {}: secrets are written with mode 0600, not {m:o}",
                spec.path
            )));
        }
        let spec = spec.clone().mode(0o600);
        self.upload(target, content.expose().as_ref(), &spec).await
    }

    /// Reads a whole file as the login user.
    pub async fn download(&self, target: &SshTarget, path: &str) -> Result<Vec<u8>, SshError> {
        let conn = self.connection(target).await?;
        let result = async {
            let sftp = Sftp::open(&conn).await?;
            sftp.read_all(path).await
        }
        .await;
        if matches!(result, Err(SshError::ConnectionLost { .. })) {
            self.invalidate(target, conn.id);
        }
        result
    }

    /// Stages the file in `/tmp` as the login user (0600), then installs it with `sudo`.
    /// The staged copy (secret content, often) is removed whatever happens: by the install
    /// script, else over SFTP when the upload fails or is abandoned.
    #[allow(clippy::too_many_arguments)]
    async fn upload_staged(
        &self,
        target: &SshTarget,
        conn: &Arc<Connection>,
        content: Content<'_>,
        spec: &UploadSpec,
        dir: &str,
        name: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        let staged = format!("/tmp/.siteflow-upload-{}", nonce());
        // Armed before the write: a write that fails half-way leaves a file too.
        let guard = StagedFile {
            conn: conn.clone(),
            path: Some(staged.clone()),
        };
        let result = async {
            {
                let sftp = Sftp::open(conn).await?;
                sftp.write_new(&staged, content, 0o600).await?;
            }
            let tmp = join(dir, &format!(".{name}.siteflow-{}", nonce()));
            let mut script = format!(
                "set -e\nstaged={}\ntmp={}\ndest={}\n\
                 trap 'rm -f -- \"$staged\" \"$tmp\"' EXIT\n\
                 cp -- \"$staged\" \"$tmp\"\n",
                shell_quote(&staged),
                shell_quote(&tmp),
                shell_quote(&spec.path)
            );
            if let Some(owner) = &spec.owner {
                script.push_str(&format!("chown -- {} \"$tmp\"\n", shell_quote(owner)));
            }
            // After chown, which clears set-id bits.
            script.push_str(&format!("chmod {:o} \"$tmp\"\n", mode & 0o7777));
            script.push_str("mv -f -- \"$tmp\" \"$dest\"\n");
            let mut req = ExecRequest::new(script).sudo(spec.sudo);
            req.quiet = true;
            self.exec(target, &req, &|_, _| {}).await?.check(target)?;
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => guard.disarm(),
            Err(_) => guard.remove().await,
        }
        result
    }
}

/// A file staged in `/tmp` for a sudo upload, removed over SFTP unless the install script
/// took care of it: awaited on failure, spawned when the upload is dropped half-way.
struct StagedFile {
    conn: Arc<Connection>,
    path: Option<String>,
}

impl StagedFile {
    /// The install script removed it.
    fn disarm(mut self) {
        self.path = None;
    }

    /// Removes it now, best effort (the connection may be gone).
    async fn remove(mut self) {
        if let Some(path) = self.path.take() {
            remove_best_effort(&self.conn, &path).await;
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let conn = self.conn.clone();
            runtime.spawn(async move { remove_best_effort(&conn, &path).await });
        }
    }
}

async fn remove_best_effort(conn: &Connection, path: &str) {
    if let Ok(sftp) = Sftp::open(conn).await {
        let _ = sftp.raw.remove(path).await;
    }
}

async fn upload_direct(
    conn: &Connection,
    content: Content<'_>,
    path: &str,
    dir: &str,
    name: &str,
    mode: u32,
) -> Result<(), SshError> {
    let sftp = Sftp::open(conn).await?;
    let tmp = join(dir, &format!(".{name}.siteflow-{}", nonce()));
    let result = async {
        sftp.write_new(&tmp, content, mode).await?;
        sftp.rename_over(&tmp, path).await
    }
    .await;
    if result.is_err() {
        let _ = sftp.raw.remove(tmp.as_str()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/etc/x.yaml").unwrap(), ("/etc", "x.yaml"));
        assert_eq!(split_path("/x").unwrap(), ("/", "x"));
        assert!(split_path("relative/x").is_err());
        assert!(split_path("/etc/").is_err());
        assert!(split_path("/etc/..").is_err());
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/etc", "a"), "/etc/a");
        assert_ne!(nonce(), nonce());
    }
}
