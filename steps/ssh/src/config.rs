//! Where and as whom to connect: [`SshTarget`], optionally resolved through an OpenSSH
//! client config file (`User`, `Port`, `HostName`, `IdentityFile`, `ProxyJump`).
//!
//! Parsing uses the `ssh2-config` crate: it is maintained, follows `ssh_config(5)`'s
//! first-match-wins semantics with `Host` patterns and `Include`, and expands `~`; we
//! only read the four or five fields above from it, so its lack of `Match exec` support
//! does not matter here. Unknown or unsupported keywords are tolerated, as `ssh` does.

use crate::{AuthMethod, HostKeyPolicy, SshError};
use ssh2_config::{ParseRule, SshConfig};
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// One SSH endpoint: host, port, login user, credentials, host-key policy, and the jump
/// host to reach it through, if any.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port (22).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Credentials, tried in order.
    pub auth: Vec<AuthMethod>,
    /// How the host key is trusted.
    pub host_key: HostKeyPolicy,
    /// Reach this host through a `direct-tcpip` channel on the jump host's connection.
    pub jump: Option<Box<SshTarget>>,
}

impl SshTarget {
    /// `user@host:22`, agent authentication, strict host keys, no jump host.
    pub fn new(host: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: 22,
            user: user.into(),
            auth: vec![AuthMethod::agent()],
            host_key: HostKeyPolicy::default(),
            jump: None,
        }
    }

    /// Sets the port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Replaces the credentials.
    pub fn with_auth(mut self, auth: Vec<AuthMethod>) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the host-key policy.
    pub fn with_host_key(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key = policy;
        self
    }

    /// Reaches the host through `jump`.
    pub fn via(mut self, jump: SshTarget) -> Self {
        self.jump = Some(Box::new(jump));
        self
    }

    /// `user@host:port`, as errors and logs name the target.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// `host:port`.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A parsed OpenSSH client config file.
#[derive(Debug)]
pub struct SshConfigFile {
    path: PathBuf,
    config: SshConfig,
}

impl SshConfigFile {
    /// Parses `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, SshError> {
        let err = |reason: String| SshError::SshConfig {
            path: path.display().to_string(),
            reason,
        };
        let config = match std::fs::File::open(path) {
            Ok(f) => SshConfig::default()
                .parse(
                    &mut BufReader::new(f),
                    ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
                )
                .map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SshConfig::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// Parses `~/.ssh/config`.
    pub fn load_default() -> Result<Self, SshError> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        Self::load(&home.join(".ssh").join("config"))
    }

    /// Resolves `alias` as `ssh alias` would: `HostName`, `Port`, `User` (else
    /// `default_user`), `IdentityFile` (tried before the agent) and `ProxyJump` (each hop
    /// resolved through this file too). Fields the caller sets explicitly afterwards win.
    pub fn resolve(
        &self,
        alias: &str,
        default_user: &str,
        host_key: HostKeyPolicy,
    ) -> Result<SshTarget, SshError> {
        self.resolve_depth(alias, None, None, default_user, host_key, 0)
    }

    fn resolve_depth(
        &self,
        alias: &str,
        user: Option<&str>,
        port: Option<u16>,
        default_user: &str,
        host_key: HostKeyPolicy,
        depth: usize,
    ) -> Result<SshTarget, SshError> {
        if depth > 8 {
            return Err(SshError::SshConfig {
                path: self.path.display().to_string(),
                reason: format!("ProxyJump chain through {alias} is longer than 8 hops or loops"),
            });
        }
        let params = self.config.query(alias);
        let mut auth: Vec<AuthMethod> = params
            .identity_file
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.exists())
            .map(AuthMethod::key_file)
            .collect();
        auth.push(AuthMethod::agent());
        let mut target = SshTarget {
            host: params
                .host_name
                .clone()
                .unwrap_or_else(|| alias.to_string()),
            port: port.or(params.port).unwrap_or(22),
            user: user
                .map(str::to_string)
                .or_else(|| params.user.clone())
                .unwrap_or_else(|| default_user.to_string()),
            auth,
            host_key: host_key.clone(),
            jump: None,
        };
        let hops: Vec<String> = params
            .proxy_jump
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|h| !h.eq_ignore_ascii_case("none") && !h.is_empty())
            .collect();
        // `ProxyJump a,b`: connect to a, through it to b, through b to the target.
        let mut via: Option<SshTarget> = None;
        for hop in hops {
            let (hop_user, hop_host, hop_port) =
                parse_jump_spec(&hop).map_err(|reason| SshError::SshConfig {
                    path: self.path.display().to_string(),
                    reason,
                })?;
            let mut t = self.resolve_depth(
                &hop_host,
                hop_user.as_deref(),
                hop_port,
                default_user,
                host_key.clone(),
                depth + 1,
            )?;
            if let Some(prev) = via.take() {
                // The hop's own ProxyJump is ignored when it is part of a chain, as ssh does.
                t.jump = Some(Box::new(prev));
            }
            via = Some(t);
        }
        target.jump = via.map(Box::new);
        Ok(target)
    }
}

/// Splits `[user@]host[:port]` (IPv6 literals in brackets).
fn parse_jump_spec(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, spec),
    };
    let bad_port = |p: &str| format!("ProxyJump {spec:?}: port {p:?} is not a number");
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, tail) = inner
            .split_once(']')
            .ok_or_else(|| format!("ProxyJump {spec:?}: unclosed `[`"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad_port(p))?),
            None => None,
        };
        return Ok((user, host.to_string(), port));
    }
    match rest.split_once(':') {
        Some((h, p)) => Ok((
            user,
            h.to_string(),
            Some(p.parse().map_err(|_| bad_port(p))?),
        )),
        None => Ok((user, rest.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump_spec("bastion").unwrap(),
            (None, "bastion".into(), None)
        );
        assert_eq!(
            parse_jump_spec("ops@bastion:2200").unwrap(),
            (Some("ops".into()), "bastion".into(), Some(2200))
        );
        assert_eq!(
            parse_jump_spec("[::1]:22").unwrap(),
            (None, "::1".into(), Some(22))
        );
        assert!(parse_jump_spec("h:port").is_err());
    }

    #[test]
    fn resolves_user_port_identity_and_jump() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_site");
        std::fs::write(&key, "not really a key").unwrap();
        let cfg = dir.path().join("config");
        std::fs::write(
            &cfg,
            format!(
                "Host site1\n  HostName 10.0.1.4\n  User azureuser\n  Port 2222\n  \
                 IdentityFile {}\n  ProxyJump ops@bastion:2200\n\n\
                 Host bastion\n  HostName bastion.example.net\n  User nobody\n  \
                 UnknownThing yes\n",
                key.display()
            ),
        )
        .unwrap();
        let file = SshConfigFile::load(&cfg).unwrap();
        let t = file
            .resolve("site1", "fallback", HostKeyPolicy::strict_default())
            .unwrap();
        assert_eq!(t.host, "10.0.1.4");
        assert_eq!(t.port, 2222);
        assert_eq!(t.user, "azureuser");
        assert!(matches!(&t.auth[0], AuthMethod::KeyFile { path, .. } if path == &key));
        assert!(matches!(t.auth.last(), Some(AuthMethod::Agent { .. })));
        let jump = t.jump.expect("jump host");
        assert_eq!(jump.host, "bastion.example.net");
        assert_eq!(
            jump.user, "ops",
            "the user in ProxyJump wins over the config's User"
        );
        assert_eq!(jump.port, 2200);

        let plain = file
            .resolve("other", "fallback", HostKeyPolicy::strict_default())
            .unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.user.as_str()),
            ("other", 22, "fallback")
        );
        assert!(plain.jump.is_none());
    }

    #[test]
    fn missing_file_is_empty_config() {
        let file = SshConfigFile::load(Path::new("/nonexistent/siteflow/ssh_config")).unwrap();
        let t = file
            .resolve("h", "u", HostKeyPolicy::strict_default())
            .unwrap();
        assert_eq!(t.label(), "u@h:22");
    }
}
