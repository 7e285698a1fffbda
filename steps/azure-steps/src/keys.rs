//! SSH key pairs the VM step generates (the admin key when none is given, and the VM's host
//! key), kept in 0600 files under the working directory, never in the state database. The
//! public functions are async: the file work (create, fsync, link) runs on the blocking pool.

use rand::RngCore;
use siteflow_step::{Secret, StepContext, StepError, blocking};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};
use std::io::Write;
use std::path::PathBuf;

/// A generated key pair.
pub struct KeyPair {
    /// OpenSSH private key (PEM-like text).
    pub private: Secret<String>,
    /// `ssh-ed25519 AAAA… comment`.
    pub public: String,
    /// `SHA256:…`.
    pub fingerprint: String,
}

fn parse(text: &str) -> Result<KeyPair, StepError> {
    let key = PrivateKey::from_openssh(text)
        .map_err(|e| StepError::permanent("KeyUnreadable", format!("stored key: {e}")))?;
    Ok(KeyPair {
        public: key
            .public_key()
            .to_openssh()
            .map_err(|e| StepError::permanent("KeyUnreadable", e.to_string()))?,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        private: Secret::new(text.to_string()),
    })
}

fn generate(comment: &str) -> Result<KeyPair, StepError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| StepError::permanent("KeyGeneration", e.to_string()))?;
    parse(&private)
}

/// The directory of a step's keys: `.siteflow/keys/{site}/{step}` (`_nosite` for runs without
/// a site file), the same for every run of the site, so a later run finds the keys of the
/// resources an earlier run created.
pub fn dir(cx: &StepContext) -> PathBuf {
    site_dir(cx).join(safe_name(&cx.step_id))
}

/// The directory of every step's keys of the run's site: `.siteflow/keys/{site}`.
pub fn site_dir(cx: &StepContext) -> PathBuf {
    let owner = cx.site.clone().unwrap_or_else(|| "_nosite".to_string());
    cx.working_dir
        .join(".siteflow")
        .join("keys")
        .join(safe_name(&owner))
}

/// A site or step id as a directory name.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads a stored key of this step (`admin`, `host`), if there is one.
pub async fn load(cx: &StepContext, name: &str) -> Result<Option<KeyPair>, StepError> {
    let (cx, name) = (cx.clone(), name.to_string());
    blocking(move || load_sync(&cx, &name)).await
}

/// The stored key, or a new one written (0600) before it is used anywhere.
pub async fn load_or_create(
    cx: &StepContext,
    name: &str,
    comment: &str,
) -> Result<KeyPair, StepError> {
    let (cx, name, comment) = (cx.clone(), name.to_string(), comment.to_string());
    blocking(move || load_or_create_sync(&cx, &name, &comment)).await
}

/// Reads a private key file of this step, if there is one.
pub async fn read_private(cx: &StepContext, file: &str) -> Result<Option<String>, StepError> {
    let path = dir(cx).join(file);
    blocking(move || read_private_sync(&path)).await
}

/// Writes a private key file of this step; see [`write_private_sync`].
pub async fn write_private(
    cx: &StepContext,
    file: &str,
    text: &str,
) -> Result<Option<String>, StepError> {
    let (cx, file, text) = (cx.clone(), file.to_string(), text.to_string());
    blocking(move || write_private_sync(&cx, &file, &text)).await
}

fn read_private_sync(path: &std::path::Path) -> Result<Option<String>, StepError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepError::permanent(
            "KeyUnreadable",
            format!("{}: {e}", path.display()),
        )),
    }
}

fn load_sync(cx: &StepContext, name: &str) -> Result<Option<KeyPair>, StepError> {
    let Some(text) = read_private_sync(&dir(cx).join(format!("{name}_ed25519")))? else {
        return Ok(None);
    };
    let k = parse(&text)?;
    cx.add_secret(k.private.expose());
    Ok(Some(k))
}

fn load_or_create_sync(cx: &StepContext, name: &str, comment: &str) -> Result<KeyPair, StepError> {
    if let Some(k) = load_sync(cx, name)? {
        return Ok(k);
    }
    let k = generate(comment)?;
    cx.add_secret(k.private.expose());
    match write_private_sync(cx, &format!("{name}_ed25519"), k.private.expose())? {
        None => Ok(k),
        Some(theirs) => {
            let k = parse(&theirs)?;
            cx.add_secret(k.private.expose());
            Ok(k)
        }
    }
}

/// Writes a private key file of this step (mode 0600, synced) before the key is used
/// anywhere, so a resumed run finds the same key. The file is created only if it does not
/// exist yet: when another run created it meanwhile, that key wins and is returned
/// (`Some(text)`), so concurrent runs never use two different keys for one file.
/// Blocking: async code calls [`write_private`].
pub fn write_private_sync(
    cx: &StepContext,
    file: &str,
    text: &str,
) -> Result<Option<String>, StepError> {
    let d = dir(cx);
    let io = |e: std::io::Error| StepError::permanent("KeyStore", format!("{}: {e}", d.display()));
    std::fs::create_dir_all(&d).map_err(io)?;
    let path = d.join(file);
    let mut nonce = [0u8; 8];
    rand::rng().fill_bytes(&mut nonce);
    let tmp = d.join(format!(".{file}.{}.tmp", hex::encode(nonce)));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    // A hard link creates the name only if it is free: the first writer wins.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(&path).map(Some).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHost;

    #[async_trait::async_trait]
    impl siteflow_step::StepHost for NoHost {
        fn log(&self, _: siteflow_step::LogStream, _: &str) {}
        fn progress(&self) -> Option<serde_json::Value> {
            None
        }
        async fn save_progress(&self, _: serde_json::Value) -> Result<(), StepError> {
            Ok(())
        }
        async fn run_value(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<serde_json::Value>, StepError> {
            Ok(None)
        }
        async fn set_run_value(
            &self,
            _: &str,
            _: &str,
            _: serde_json::Value,
        ) -> Result<(), StepError> {
            Ok(())
        }
        fn add_secret(&self, _: &str) {}
    }

    #[test]
    fn concurrent_runs_converge_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let cx = |run: &str| {
            StepContext::new(
                run,
                None,
                "server",
                "azure.vm",
                1,
                dir.path().to_path_buf(),
                siteflow_step::CancellationToken::new(),
                std::sync::Arc::new(NoHost),
            )
        };
        let (a, b) = (cx("r1"), cx("r2"));
        let keys: Vec<KeyPair> = std::thread::scope(|s| {
            let h1 = s.spawn(|| load_or_create_sync(&a, "admin", "a").unwrap());
            let h2 = s.spawn(|| load_or_create_sync(&b, "admin", "b").unwrap());
            vec![h1.join().unwrap(), h2.join().unwrap()]
        });
        assert_eq!(keys[0].fingerprint, keys[1].fingerprint);
        // A later writer keeps the first key too.
        let third = load_or_create_sync(&cx("r3"), "admin", "c").unwrap();
        assert_eq!(third.fingerprint, keys[0].fingerprint);
        assert_eq!(
            write_private_sync(&cx("r4"), "admin_ed25519", "other")
                .unwrap()
                .as_deref(),
            Some(keys[0].private.expose().as_str())
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(".siteflow/keys/_nosite/server"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn generated_keys_round_trip() {
        let k = generate("host").unwrap();
        assert!(k.public.starts_with("ssh-ed25519 "));
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert!(k.private.expose().contains("BEGIN OPENSSH PRIVATE KEY"));
        let again = parse(k.private.expose()).unwrap();
        assert_eq!(again.fingerprint, k.fingerprint);
    }
}
