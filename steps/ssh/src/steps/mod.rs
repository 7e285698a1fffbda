//! Step kinds over SSH (`ssh.exec`, `ssh.upload`) and the pieces every SSH-based step kind
//! shares: the [`SshTargetInput`] every kind takes, and [`Remote`], one target bound to a
//! pool and a step context.

mod exec;
mod upload;

pub use exec::{SshExec, SshExecInput, SshExecOutput, script_wrapper};
pub use upload::{SshUpload, SshUploadInput, SshUploadOutput, UploadFile};

use crate::{
    AuthMethod, ExecOutput, ExecRequest, HostKeyPolicy, HostKeyStore, RunStateHostKeyStore,
    SshPool, SshTarget, UploadSpec,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_step::{DynStep, LogStream, Secret, StepContext, StepError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The generic SSH step kinds over `pool`: the one the binary creates for every kind that
/// reaches hosts over SSH (`ssh.*`, `k3s.*`, `arc.*`, `flux.*`), so a run keeps one
/// connection per host however many crates' kinds act on it.
pub fn steps(pool: StepPool) -> Vec<Arc<dyn DynStep>> {
    vec![
        Arc::new(SshExec::new(pool.clone())),
        Arc::new(SshUpload::new(pool)),
    ]
}

/// How the host's key is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyMode {
    /// The key must be in `known_hosts` (default `~/.ssh/known_hosts`).
    #[default]
    Strict,
    /// Trust on first use; the learned key is kept in the run's state.
    AcceptNew,
    /// Only the key with `host_key_fingerprint`.
    Pinned,
}

/// Where and as whom a step connects: shared by every SSH-based step kind.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshTargetInput {
    /// Host name or address.
    pub host: String,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file (relative paths resolve against the working directory); without
    /// it, the ssh-agent at `$SSH_AUTH_SOCK` is used.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Passphrase of the private key.
    #[serde(default)]
    pub passphrase: Option<Secret<String>>,
    /// Host-key policy: `strict` (default), `accept-new` or `pinned`.
    #[serde(default)]
    pub host_key: HostKeyMode,
    /// known_hosts file for `strict`.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// `SHA256:…` fingerprint for `pinned`.
    #[serde(default)]
    pub host_key_fingerprint: Option<String>,
    /// Reach the host through this jump host.
    #[serde(default)]
    pub jump: Option<Box<SshTargetInput>>,
    /// Run commands and write files through `sudo -n` (each kind has its own default).
    #[serde(default)]
    pub sudo: Option<bool>,
}

fn default_port() -> u16 {
    22
}

impl SshTargetInput {
    /// Pure checks: the host-key policy has what it needs.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.host.trim().is_empty() {
            return Err(invalid("`host` is empty"));
        }
        if self.user.trim().is_empty() {
            return Err(invalid("`user` is empty"));
        }
        match (self.host_key, &self.host_key_fingerprint) {
            (HostKeyMode::Pinned, None) => {
                return Err(invalid(
                    "host_key `pinned` needs `host_key_fingerprint` (SHA256:…)",
                ));
            }
            (HostKeyMode::Pinned, Some(fp)) => {
                HostKeyPolicy::pinned(fp).map_err(|e| invalid(e.to_string()))?;
            }
            _ => {}
        }
        if let Some(j) = &self.jump {
            j.validate()?;
        }
        Ok(())
    }

    /// The transport's target, with the policy's store bound to this run.
    async fn target(&self, cx: &StepContext, pool: &StepPool) -> Result<SshTarget, StepError> {
        let host_key = match self.host_key {
            HostKeyMode::Strict => match &self.known_hosts {
                Some(p) => HostKeyPolicy::Strict {
                    known_hosts: cx.resolve_path(p),
                },
                None => HostKeyPolicy::strict_default(),
            },
            HostKeyMode::AcceptNew => HostKeyPolicy::AcceptNew {
                store: pool.store_for(cx),
            },
            HostKeyMode::Pinned => {
                HostKeyPolicy::pinned(self.host_key_fingerprint.as_deref().unwrap_or_default())
                    .map_err(StepError::from)?
            }
        };
        let auth = match &self.private_key_file {
            Some(p) => vec![AuthMethod::KeyFile {
                path: cx.resolve_path(p),
                passphrase: self.passphrase.clone(),
            }],
            None => vec![AuthMethod::agent()],
        };
        let mut t = SshTarget::new(self.host.clone(), self.user.clone())
            .with_port(self.port)
            .with_auth(auth)
            .with_host_key(host_key);
        if let Some(j) = &self.jump {
            t = t.via(Box::pin(j.target(cx, pool)).await?);
        }
        Ok(t)
    }
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

/// The pool a family of step kinds shares, plus one `accept-new` store per run (so the
/// pool keeps one connection per host, not one per step).
#[derive(Clone, Default)]
pub struct StepPool {
    pool: SshPool,
    stores: Arc<Mutex<HashMap<String, Arc<LatestContextStore>>>>,
}

/// The run's host keys (a [`RunStateHostKeyStore`]) reached through the context of the
/// latest step that connected, so one store (and so one pooled connection per host) serves
/// every step of a run, and a resumed run in the same process.
struct LatestContextStore {
    cx: Mutex<StepContext>,
}

impl LatestContextStore {
    fn set_context(&self, cx: &StepContext) {
        *self.cx.lock().unwrap_or_else(|p| p.into_inner()) = cx.clone();
    }

    fn current(&self) -> RunStateHostKeyStore {
        RunStateHostKeyStore::new(self.cx.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[async_trait::async_trait]
impl HostKeyStore for LatestContextStore {
    async fn load(&self, host: &str, port: u16) -> Result<Vec<String>, crate::SshError> {
        self.current().load(host, port).await
    }

    async fn save(&self, host: &str, port: u16, key: &str) -> Result<(), crate::SshError> {
        self.current().save(host, port, key).await
    }
}

impl StepPool {
    /// A new pool with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport pool.
    pub fn ssh(&self) -> &SshPool {
        &self.pool
    }

    fn store_for(&self, cx: &StepContext) -> Arc<dyn HostKeyStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        let store = stores
            .entry(cx.run_id.clone())
            .or_insert_with(|| {
                Arc::new(LatestContextStore {
                    cx: Mutex::new(cx.clone()),
                })
            })
            .clone();
        store.set_context(cx);
        store
    }

    /// Binds `input` to this pool and `cx`; `sudo_default` applies when the input says nothing.
    pub async fn remote(
        &self,
        cx: &StepContext,
        input: &SshTargetInput,
        sudo_default: bool,
    ) -> Result<Remote, StepError> {
        Ok(Remote {
            pool: self.pool.clone(),
            target: input.target(cx, self).await?,
            sudo: input.sudo.unwrap_or(sudo_default),
            cx: cx.clone(),
        })
    }
}

/// One host as a step sees it: a target on a pool, sudo or not, logging into the step.
#[derive(Clone)]
pub struct Remote {
    pool: SshPool,
    /// The connection target.
    pub target: SshTarget,
    /// Whether commands and writes go through sudo.
    pub sudo: bool,
    cx: StepContext,
}

impl Remote {
    /// A request for `script` with this remote's sudo, the attempt's cancel token and
    /// traceparent.
    pub fn request(&self, script: impl Into<String>) -> ExecRequest {
        let mut req = ExecRequest::new(script).sudo(self.sudo);
        req.cancel = Some(self.cx.cancel.clone());
        req.traceparent = self.cx.traceparent.clone();
        req
    }

    /// Runs a request, logging its output lines into the step (unless `quiet`).
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, StepError> {
        let cx = &self.cx;
        let sink = |s: LogStream, l: &str| cx.log(s, l);
        Ok(self.pool.exec(&self.target, req, &sink).await?)
    }

    /// Runs a request with its own line sink.
    pub async fn exec_with_sink(
        &self,
        req: &ExecRequest,
        sink: crate::LineSink<'_>,
    ) -> Result<ExecOutput, StepError> {
        Ok(self.pool.exec(&self.target, req, sink).await?)
    }

    /// Runs `script`; a non-zero exit is an `ExitStatus` error.
    pub async fn run(&self, script: &str) -> Result<ExecOutput, StepError> {
        Ok(self
            .exec(&self.request(script))
            .await?
            .check(&self.target)?)
    }

    /// Runs `script` without logging its output; a non-zero exit is an error.
    pub async fn run_quiet(&self, script: &str) -> Result<ExecOutput, StepError> {
        let mut req = self.request(script);
        req.quiet = true;
        Ok(self.exec(&req).await?.check(&self.target)?)
    }

    /// Reads a file (through sudo when this remote uses it); `None` when it does not exist.
    /// The content is never logged.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, StepError> {
        let q = crate::shell_quote(path);
        let out = self
            .run_quiet(&format!(
                "if [ -e {q} ]; then printf present; cat -- {q}; else printf absent; fi"
            ))
            .await?;
        Ok(out.stdout.strip_prefix(b"present").map(<[u8]>::to_vec))
    }

    /// Writes `content` to `path` (atomically, through sudo when this remote uses it).
    pub async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), StepError> {
        let spec = self.spec(path, mode, owner);
        Ok(self.pool.upload(&self.target, content, &spec).await?)
    }

    /// Copies the local file `local` to `path` like [`Remote::write_file`], streaming it
    /// (memory stays bounded however large the file); an unreadable file is a permanent
    /// `SourceUnreadable` error.
    pub async fn write_local_file(
        &self,
        path: &str,
        local: &Path,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), StepError> {
        let spec = self.spec(path, mode, owner);
        Ok(self.pool.upload_file(&self.target, local, &spec).await?)
    }

    fn spec(&self, path: &str, mode: u32, owner: Option<&str>) -> UploadSpec {
        let spec = UploadSpec::new(path).mode(mode).sudo(self.sudo);
        match owner {
            Some(o) => spec.owner(o),
            None => spec,
        }
    }

    /// Writes secret content to `path` with mode 0600.
    pub async fn write_secret(
        &self,
        path: &str,
        content: &Secret<String>,
    ) -> Result<(), StepError> {
        let spec = UploadSpec::new(path).mode(0o600).sudo(self.sudo);
        self.pool
            .upload_secret(&self.target, content, &spec)
            .await
            .map_err(StepError::from)
    }

    /// `sha256 mode owner:group` of a file, or `None` when it does not exist.
    pub async fn file_state(&self, path: &str) -> Result<Option<FileState>, StepError> {
        let q = crate::shell_quote(path);
        let out = self
            .run_quiet(&format!(
                "if [ -f {q} ]; then s=$(sha256sum -- {q} | cut -d' ' -f1); \
                 printf '%s %s\\n' \"$s\" \"$(stat -c '%a %U:%G' -- {q})\"; fi"
            ))
            .await?;
        let text = out.stdout_text();
        let mut it = text.split_whitespace();
        Ok(match (it.next(), it.next(), it.next()) {
            (Some(sha), Some(mode), Some(owner)) => Some(FileState {
                sha256: sha.to_string(),
                mode: u32::from_str_radix(mode, 8).unwrap_or(0),
                owner: owner.to_string(),
            }),
            _ => None,
        })
    }

    /// The step context.
    pub fn cx(&self) -> &StepContext {
        &self.cx
    }
}

/// What [`Remote::file_state`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
}

/// Parses an octal mode such as `0600` or `644`.
pub fn parse_mode(s: &str) -> Result<u32, StepError> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| invalid(format!("mode {s:?} is not an octal mode like 0644")))
}
