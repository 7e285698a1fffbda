//! Client authentication: private key files (ed25519, RSA with SHA-2 signatures,
//! passphrase-protected) and ssh-agent.

use crate::SshError;
use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use siteflow_step::Secret;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One way to prove who we are; a target lists them in the order to try.
#[derive(Clone, Debug)]
pub enum AuthMethod {
    /// An OpenSSH private key file.
    KeyFile {
        /// The key file (`~/.ssh/id_ed25519`).
        path: PathBuf,
        /// Its passphrase, if it is encrypted.
        passphrase: Option<Secret<String>>,
    },
    /// The identities of a running ssh-agent.
    Agent {
        /// The agent socket; `None` means `$SSH_AUTH_SOCK`.
        socket: Option<PathBuf>,
    },
}

impl AuthMethod {
    /// An unencrypted key file.
    pub fn key_file(path: impl Into<PathBuf>) -> Self {
        AuthMethod::KeyFile {
            path: path.into(),
            passphrase: None,
        }
    }

    /// The agent at `$SSH_AUTH_SOCK`.
    pub fn agent() -> Self {
        AuthMethod::Agent { socket: None }
    }
}

async fn load_key(
    path: &Path,
    passphrase: Option<&Secret<String>>,
) -> Result<PrivateKey, SshError> {
    let (p, pass) = (path.to_path_buf(), passphrase.map(|s| s.expose().clone()));
    // Reading the file and running the passphrase KDF (bcrypt) are blocking work.
    tokio::task::spawn_blocking(move || russh::keys::load_secret_key(&p, pass.as_deref()))
        .await
        .map_err(|e| SshError::Key {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .map_err(|e| SshError::Key {
            path: path.display().to_string(),
            reason: match e {
                russh::keys::Error::KeyIsEncrypted => {
                    "it is encrypted: give its passphrase as a secret".to_string()
                }
                other => other.to_string().to_lowercase(),
            },
        })
}

/// RSA keys sign with SHA-2 (`rsa-sha2-512`/`256`), never SHA-1 `ssh-rsa`.
async fn rsa_hash<H: Handler>(handle: &Handle<H>) -> Option<HashAlg> {
    match handle.best_supported_rsa_hash().await {
        Ok(Some(Some(h))) => Some(h),
        _ => Some(HashAlg::Sha256),
    }
}

/// Tries `methods` in order until the server accepts one; the error lists every attempt.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    user: &str,
    methods: &[AuthMethod],
    label: &str,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    for method in methods {
        match method {
            AuthMethod::KeyFile { path, passphrase } => {
                let key = load_key(path, passphrase.as_ref()).await?;
                let hash = match key.algorithm() {
                    Algorithm::Rsa { .. } => rsa_hash(handle).await,
                    _ => None,
                };
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                let res = handle
                    .authenticate_publickey(user, key)
                    .await
                    .map_err(|e| lost(label, e))?;
                if matches!(res, AuthResult::Success) {
                    return Ok(());
                }
                tried.push(format!("key {} refused", path.display()));
            }
            AuthMethod::Agent { socket } => {
                let socket = match socket
                    .clone()
                    .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
                {
                    Some(s) => s,
                    None => {
                        tried.push("ssh-agent not available (SSH_AUTH_SOCK unset)".into());
                        continue;
                    }
                };
                let mut agent = match AgentClient::connect_uds(&socket).await {
                    Ok(a) => a,
                    Err(e) => {
                        tried.push(format!(
                            "ssh-agent at {} unreachable: {e}",
                            socket.display()
                        ));
                        continue;
                    }
                };
                let identities = agent
                    .request_identities()
                    .await
                    .map_err(|e| SshError::Auth {
                        host: label.to_string(),
                        reason: format!("list ssh-agent identities: {e}"),
                    })?;
                if identities.is_empty() {
                    tried.push("ssh-agent holds no keys".into());
                }
                for id in identities {
                    let public = id.public_key().into_owned();
                    let hash = match public.algorithm() {
                        Algorithm::Rsa { .. } => rsa_hash(handle).await,
                        _ => None,
                    };
                    match handle
                        .authenticate_publickey_with(user, public.clone(), hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(_) => tried.push(format!(
                            "agent key {} refused",
                            crate::hostkey::fingerprint(&public)
                        )),
                        Err(e) => tried.push(format!("agent could not sign: {e}")),
                    }
                }
            }
        }
    }
    if methods.is_empty() {
        tried.push("no authentication method configured".into());
    }
    Err(SshError::Auth {
        host: label.to_string(),
        reason: format!(
            "the server accepted none of our credentials as this user ({}); check the user name \
             and that the public key is in the user's authorized_keys",
            tried.join("; ")
        ),
    })
}

fn lost(label: &str, e: russh::Error) -> SshError {
    SshError::ConnectionLost {
        host: label.to_string(),
        reason: e.to_string(),
    }
}
