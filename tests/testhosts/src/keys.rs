//! Generating ed25519 SSH key pairs with `ssh-keygen` and computing their SHA256 fingerprints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::command::run;

/// An ed25519 key pair on disk.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Path of the private key (OpenSSH format, no passphrase, mode 0600).
    pub private_key_path: PathBuf,
    /// The public key line, e.g. `ssh-ed25519 AAAA... comment`.
    pub public_key: String,
    /// `SHA256:<base64 without padding>`, as `ssh-keygen -l` and OpenSSH clients print it.
    pub fingerprint: String,
}

/// Generates a new ed25519 key pair at `path` (and `path.pub`), replacing any existing one.
pub fn generate(path: &Path, comment: &str) -> Result<KeyPair> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(public_key_path(path));
    run(
        "ssh-keygen",
        [
            "-q".as_ref(),
            "-t".as_ref(),
            "ed25519".as_ref(),
            "-N".as_ref(),
            "".as_ref(),
            "-C".as_ref(),
            comment.as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
        ],
    )?;
    let pub_path = public_key_path(path);
    let public_key = std::fs::read_to_string(&pub_path)
        .with_context(|| format!("cannot read {}", pub_path.display()))?
        .trim()
        .to_owned();
    let fingerprint = fingerprint(&public_key)?;
    Ok(KeyPair {
        private_key_path: path.to_owned(),
        public_key,
        fingerprint,
    })
}

/// Installs a given ed25519 private key (OpenSSH format) at `path` (mode 0600) and derives
/// its public half, as cloud-init's `ssh_keys` does on a VM.
pub fn install(path: &Path, private_key: &str, comment: &str) -> Result<KeyPair> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = private_key.trim_end().to_string();
    text.push('\n');
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let out = crate::command::run_output(
        "ssh-keygen",
        ["-y".as_ref(), "-f".as_ref(), path.as_os_str()],
    )?;
    if !out.status.success() {
        bail!(
            "not an OpenSSH private key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let public_key = format!("{public} {comment}");
    std::fs::write(public_key_path(path), format!("{public_key}\n"))?;
    Ok(KeyPair {
        private_key_path: path.to_owned(),
        fingerprint: fingerprint(&public_key)?,
        public_key,
    })
}

/// `<path>.pub`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The SHA256 fingerprint (`SHA256:...`) of an OpenSSH public key line.
pub fn fingerprint(public_key_line: &str) -> Result<String> {
    let Some(blob) = public_key_line.split_whitespace().nth(1) else {
        bail!("not an OpenSSH public key line: {public_key_line:?}");
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .context("public key is not base64")?;
    let digest = Sha256::digest(&raw);
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}
