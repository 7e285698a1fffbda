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
