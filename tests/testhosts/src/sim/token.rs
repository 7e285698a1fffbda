//! k3s join tokens: the secure format `K10<sha256 of the cluster CA>::<user>:<secret>` and the
//! short format (just the secret).

use anyhow::{Context, Result};

/// A parsed join token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Hex SHA256 of the CA bundle the server serves at `/cacerts` (secure format only).
    pub ca_hash: Option<String>,
    /// `server` or `node` (`node` for short tokens).
    pub user: String,
    pub secret: String,
}

impl Token {
    pub fn parse(raw: &str) -> Token {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("K10")
            && let Some((hash, creds)) = rest.split_once("::")
            && let Some((user, secret)) = creds.split_once(':')
        {
            return Token {
                ca_hash: Some(hash.to_owned()),
                user: user.to_owned(),
                secret: secret.to_owned(),
            };
        }
        Token {
            ca_hash: None,
            user: "node".to_owned(),
            secret: raw.to_owned(),
        }
    }

    /// The secure format for `ca_hash`.
    pub fn format(ca_hash: &str, user: &str, secret: &str) -> String {
        format!("K10{ca_hash}::{user}:{secret}")
    }
}

/// The token given by `token` or read from `token-file`.
pub fn from_options(opts: &crate::sim::config::Options) -> Result<Option<String>> {
    if let Some(t) = opts.get("token").filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    if let Some(f) = opts.get("token-file").filter(|t| !t.is_empty()) {
        let t = std::fs::read_to_string(&f)
            .with_context(|| format!("failed to read token file {f}"))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(None)
}

/// A random hex secret of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut buf[..]);
    hex::encode(buf)
}
