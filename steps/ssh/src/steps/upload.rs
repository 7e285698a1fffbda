//! `ssh.upload`: files from inline content or local paths onto a host, with mode and owner;
//! already satisfied when every file has the wanted content, mode and owner.

use super::{SshTargetInput, StepPool, parse_mode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use siteflow_step::{blocking, sha256_file_hex, sha256_hex};
use std::path::PathBuf;

/// One file to put on the host.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    /// Absolute path on the host.
    pub path: String,
    /// The content, inline.
    #[serde(default)]
    pub content: Option<String>,
    /// Or a local file to copy (relative to the working directory).
    #[serde(default)]
    pub source: Option<String>,
    /// Octal mode (`0644` by default).
    #[serde(default)]
    pub mode: Option<String>,
    /// `user` or `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Input of `ssh.upload`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshUploadInput {
    /// The host.
    pub ssh: SshTargetInput,
    /// The files.
    pub files: Vec<UploadFile>,
}

/// Output of `ssh.upload`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SshUploadOutput {
    /// The paths on the host, in input order.
    pub files: Vec<String>,
    /// Hex SHA-256 of each file's content, in input order.
    pub sha256: Vec<String>,
}

/// The `ssh.upload` kind.
pub struct SshUpload {
    pool: StepPool,
}

impl SshUpload {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

/// Where a file's content comes from.
enum Content {
    Inline(Vec<u8>),
    /// A local file: hashed here, streamed to the host only when it must be uploaded.
    Local(PathBuf),
}

struct Wanted {
    path: String,
    content: Content,
    sha256: String,
    len: u64,
    mode: u32,
    owner: Option<String>,
}

/// The files as wanted, local sources hashed on the blocking pool (streamed through the
/// hash, not read into memory).
async fn wanted(cx: &StepContext, input: &SshUploadInput) -> Result<Vec<Wanted>, StepError> {
    let files: Vec<(UploadFile, Option<PathBuf>)> = input
        .files
        .iter()
        .map(|f| (f.clone(), f.source.as_deref().map(|s| cx.resolve_path(s))))
        .collect();
    blocking(move || files.into_iter().map(|(f, src)| want(f, src)).collect()).await
}

fn want(f: UploadFile, source: Option<PathBuf>) -> Result<Wanted, StepError> {
    let (content, sha256, len) = match (f.content, source) {
        (Some(c), None) => {
            let c = c.into_bytes();
            let (sha, len) = (sha256_hex(&c), c.len() as u64);
            (Content::Inline(c), sha, len)
        }
        (None, Some(p)) => {
            let (sha, len) = sha256_file_hex(&p).map_err(|e| {
                StepError::permanent(
                    "SourceUnreadable",
                    format!("read {} to upload it to {}: {e}", p.display(), f.path),
                )
            })?;
            (Content::Local(p), sha, len)
        }
        _ => {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("{}: give exactly one of `content` and `source`", f.path),
            ));
        }
    };
    Ok(Wanted {
        mode: f
            .mode
            .as_deref()
            .map(parse_mode)
            .transpose()?
            .unwrap_or(0o644),
        path: f.path,
        content,
        sha256,
        len,
        owner: f.owner,
    })
}

fn output(files: &[Wanted]) -> SshUploadOutput {
    SshUploadOutput {
        files: files.iter().map(|f| f.path.clone()).collect(),
        sha256: files.iter().map(|f| f.sha256.clone()).collect(),
    }
}

fn owner_matches(want: &Option<String>, have: &str) -> bool {
    match want {
        None => true,
        Some(w) if w.contains(':') => w == have,
        Some(w) => have.split(':').next() == Some(w.as_str()),
    }
}

impl Step for SshUpload {
    const KIND: &'static str = "ssh.upload";
    type Input = SshUploadInput;
    type Output = SshUploadOutput;

    fn description(&self) -> &'static str {
        "Upload files (inline content or local paths) to a host over SSH, with mode and owner"
    }

    fn validate(&self, input: &SshUploadInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.files.is_empty() {
            return Err(StepError::permanent("InvalidInput", "`files` is empty"));
        }
        for f in &input.files {
            if !f.path.starts_with('/') {
                return Err(StepError::permanent(
                    "InvalidInput",
                    format!("{}: the path on the host must be absolute", f.path),
                ));
            }
            if f.content.is_some() == f.source.is_some() {
                return Err(StepError::permanent(
                    "InvalidInput",
                    format!("{}: give exactly one of `content` and `source`", f.path),
                ));
            }
            if let Some(m) = &f.mode {
                parse_mode(m)?;
            }
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &SshUploadInput,
    ) -> Result<Observed<SshUploadOutput>, StepError> {
        let files = wanted(cx, input).await?;
        let remote = self.pool.remote(cx, &input.ssh, false).await?;
        for f in &files {
            match remote.file_state(&f.path).await? {
                Some(st)
                    if st.sha256 == f.sha256
                        && st.mode == f.mode
                        && owner_matches(&f.owner, &st.owner) => {}
                Some(_) => {
                    return Ok(Observed::NotSatisfied {
                        reason: Some(format!("{} differs", f.path)),
                    });
                }
                None => {
                    return Ok(Observed::NotSatisfied {
                        reason: Some(format!("{} is missing", f.path)),
                    });
                }
            }
        }
        Ok(Observed::Satisfied(output(&files)))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &SshUploadInput,
    ) -> Result<Progress<SshUploadOutput>, StepError> {
        let files = wanted(cx, input).await?;
        let remote = self.pool.remote(cx, &input.ssh, false).await?;
        for f in &files {
            let st = remote.file_state(&f.path).await?;
            let same = st.as_ref().is_some_and(|st| {
                st.sha256 == f.sha256 && st.mode == f.mode && owner_matches(&f.owner, &st.owner)
            });
            if !same {
                let owner = f.owner.as_deref();
                match &f.content {
                    Content::Inline(c) => remote.write_file(&f.path, c, f.mode, owner).await?,
                    Content::Local(p) => remote.write_local_file(&f.path, p, f.mode, owner).await?,
                }
                cx.info(&format!("uploaded {} ({} bytes)", f.path, f.len));
            }
        }
        Ok(Progress::Done(output(&files)))
    }
}
