//! `ssh.upload`: files from inline content or local paths onto a host, with mode and owner;
//! already satisfied when every file has the wanted content, mode and owner.

use super::{SshTargetInput, StepPool, parse_mode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_step::sha256_hex;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};

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

struct Wanted {
    path: String,
    content: Vec<u8>,
    sha256: String,
    mode: u32,
    owner: Option<String>,
}

fn wanted(cx: &StepContext, input: &SshUploadInput) -> Result<Vec<Wanted>, StepError> {
    input
        .files
        .iter()
        .map(|f| {
            let content = match (&f.content, &f.source) {
                (Some(c), None) => c.clone().into_bytes(),
                (None, Some(src)) => {
                    let p = cx.resolve_path(src);
                    std::fs::read(&p).map_err(|e| {
                        StepError::permanent(
                            "SourceUnreadable",
                            format!("read {} to upload it to {}: {e}", p.display(), f.path),
                        )
                    })?
                }
                _ => {
                    return Err(StepError::permanent(
                        "InvalidInput",
                        format!("{}: give exactly one of `content` and `source`", f.path),
                    ));
                }
            };
            Ok(Wanted {
                path: f.path.clone(),
                sha256: sha256_hex(&content),
                content,
                mode: f
                    .mode
                    .as_deref()
                    .map(parse_mode)
                    .transpose()?
                    .unwrap_or(0o644),
                owner: f.owner.clone(),
            })
        })
        .collect()
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
        let files = wanted(cx, input)?;
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
        let files = wanted(cx, input)?;
        let remote = self.pool.remote(cx, &input.ssh, false).await?;
        for f in &files {
            let st = remote.file_state(&f.path).await?;
            let same = st.as_ref().is_some_and(|st| {
                st.sha256 == f.sha256 && st.mode == f.mode && owner_matches(&f.owner, &st.owner)
            });
            if !same {
                remote
                    .write_file(&f.path, &f.content, f.mode, f.owner.as_deref())
                    .await?;
                cx.info(&format!("uploaded {} ({} bytes)", f.path, f.content.len()));
            }
        }
        Ok(Progress::Done(output(&files)))
    }
}
