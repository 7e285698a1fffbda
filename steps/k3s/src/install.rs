//! `k3s.install`: a k3s server (first or joining) or agent, configured through
//! `/etc/rancher/k3s/config.yaml` from typed inputs, the token as a 0600 `token-file`.
//! Satisfied when the version, the config, the token file and the service state match;
//! k3s is (re)started only when one of them changed.

use crate::host::{CONFIG_DIR, CONFIG_FILE, installed_unit, invalid, restart};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{Remote, SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError};
use siteflow_step::{blocking, sha256_file_hex, sha256_hex};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default install script.
const DEFAULT_SCRIPT_URL: &str = "https://get.k3s.io";
/// Where the token goes by default.
const DEFAULT_TOKEN_FILE: &str = "/etc/rancher/k3s/cluster-token";
/// Where an uploaded install script goes.
const UPLOADED_SCRIPT: &str = "/usr/local/lib/siteflow/k3s-install.sh";
/// Where the k3s binary lives.
const BIN: &str = "/usr/local/bin/k3s";
/// Where air-gap images go.
const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";

/// Server or agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A control-plane node (the first, or joining with `server_url`).
    #[default]
    Server,
    /// A worker joining `server_url`.
    Agent,
}

impl Role {
    fn unit(self) -> &'static str {
        match self {
            Role::Server => "k3s",
            Role::Agent => "k3s-agent",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// Input of `k3s.install`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sInstallInput {
    /// The host.
    pub ssh: SshTargetInput,
    /// `server` (default) or `agent`.
    #[serde(default)]
    pub role: Role,
    /// First server of an embedded-etcd HA cluster.
    #[serde(default)]
    pub cluster_init: bool,
    /// The server to join (`https://10.0.1.4:6443`); agents and joining servers.
    #[serde(default)]
    pub server_url: Option<String>,
    /// The cluster token: required to join; optional for the first server.
    #[serde(default)]
    pub token: Option<Secret<String>>,
    /// Where the token is written on the host (0600).
    #[serde(default)]
    pub token_file: Option<String>,
    /// Pin a version (`v1.31.4+k3s1`).
    #[serde(default)]
    pub version: Option<String>,
    /// Or a channel (`stable`, `latest`, `v1.31`).
    #[serde(default)]
    pub channel: Option<String>,
    /// Node name (default: the host name).
    #[serde(default)]
    pub node_name: Option<String>,
    /// Extra names and addresses in the API server certificate.
    #[serde(default)]
    pub tls_san: Vec<String>,
    /// Taints (`observability=true:NoSchedule`).
    #[serde(default)]
    pub node_taints: Vec<String>,
    /// Labels (`role=observability`).
    #[serde(default)]
    pub node_labels: Vec<String>,
    /// The node's private address.
    #[serde(default)]
    pub node_ip: Option<String>,
    /// The node's public address.
    #[serde(default)]
    pub node_external_ip: Option<String>,
    /// Packaged components not to deploy (`traefik`, `servicelb`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Mode of `/etc/rancher/k3s/k3s.yaml` (`0644`).
    #[serde(default)]
    pub write_kubeconfig_mode: Option<String>,
    /// Further `config.yaml` keys, as k3s names them.
    #[serde(default)]
    pub extra_config: BTreeMap<String, Value>,
    /// Download the install script from here (default `https://get.k3s.io`).
    #[serde(default)]
    pub install_script_url: Option<String>,
    /// Or run the install script already at this path on the host.
    #[serde(default)]
    pub install_script_path: Option<String>,
    /// Or upload this local install script and run it.
    #[serde(default)]
    pub install_script_file: Option<String>,
    /// Air gap: upload this local k3s binary and install without downloading.
    #[serde(default)]
    pub airgap_binary_file: Option<String>,
    /// Air gap: local image tarballs to upload to `/var/lib/rancher/k3s/agent/images/`.
    #[serde(default)]
    pub airgap_images: Vec<String>,
}

/// Output of `k3s.install`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sInstallOutput {
    /// The installed version (`v1.31.4+k3s1`).
    pub version: String,
    /// The node name.
    pub node_name: String,
    /// The node's address (`node_ip`, else the SSH host).
    pub address: String,
    /// The service unit (`k3s` or `k3s-agent`).
    pub unit: String,
    /// The API server URL on this node's address (servers only, else empty).
    pub server_url: String,
}

/// The `k3s.install` kind.
pub struct K3sInstall {
    pool: StepPool,
}

impl K3sInstall {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

/// Keys the typed inputs own; `extra_config` may not set them.
const TYPED_KEYS: &[&str] = &[
    "cluster-init",
    "server",
    "token",
    "token-file",
    "node-name",
    "tls-san",
    "node-taint",
    "node-label",
    "node-ip",
    "node-external-ip",
    "disable",
    "write-kubeconfig-mode",
];

impl K3sInstallInput {
    fn token_file(&self) -> &str {
        self.token_file.as_deref().unwrap_or(DEFAULT_TOKEN_FILE)
    }

    /// The `config.yaml` text: deterministic (sorted keys), so its hash says whether it changed.
    fn config_yaml(&self) -> Result<String, StepError> {
        let mut m: Map<String, Value> = Map::new();
        for (k, v) in &self.extra_config {
            m.insert(k.clone(), v.clone());
        }
        if self.cluster_init {
            m.insert("cluster-init".into(), json!(true));
        }
        if let Some(url) = &self.server_url {
            m.insert("server".into(), json!(url));
        }
        if self.token.is_some() {
            m.insert("token-file".into(), json!(self.token_file()));
        }
        let mut put_list = |k: &str, v: &[String]| {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        };
        put_list("tls-san", &self.tls_san);
        put_list("node-taint", &self.node_taints);
        put_list("node-label", &self.node_labels);
        put_list("disable", &self.disable);
        for (k, v) in [
            ("node-name", &self.node_name),
            ("node-ip", &self.node_ip),
            ("node-external-ip", &self.node_external_ip),
            ("write-kubeconfig-mode", &self.write_kubeconfig_mode),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        let text = serde_saphyr::to_string(&Value::Object(m)).map_err(|e| {
            StepError::permanent("InvalidInput", format!("config.yaml not writable: {e}"))
        })?;
        Ok(format!(
            "# Written by siteflow (k3s.install); edits are replaced.\n{text}"
        ))
    }
}

/// What the host has now.
#[derive(Debug, Default)]
struct Probe {
    version: String,
    binary_sha: String,
    config_sha: String,
    token_sha: String,
    unit_present: bool,
    active: bool,
    hostname: String,
}

async fn probe(remote: &Remote, input: &K3sInstallInput) -> Result<Probe, StepError> {
    let unit = input.role.unit();
    let script = format!(
        "v=$({BIN} --version 2>/dev/null | head -n1 | cut -d' ' -f3) || true\n\
         echo \"version=$v\"\n\
         echo \"binary=$(sha256sum {BIN} 2>/dev/null | cut -d' ' -f1)\"\n\
         echo \"config=$(sha256sum {cfg} 2>/dev/null | cut -d' ' -f1)\"\n\
         echo \"token=$(sha256sum {tok} 2>/dev/null | cut -d' ' -f1)\"\n\
         [ -f /etc/systemd/system/{unit}.service ] && echo unit=yes\n\
         systemctl is-active --quiet {unit} 2>/dev/null && echo active=yes\n\
         echo \"hostname=$(hostname)\"\n",
        cfg = shell_quote(CONFIG_FILE),
        tok = shell_quote(input.token_file()),
    );
    let out = remote.run_quiet(&script).await?;
    let mut p = Probe::default();
    for line in out.stdout_text().lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k {
            "version" => p.version = v,
            "binary" => p.binary_sha = v,
            "config" => p.config_sha = v,
            "token" => p.token_sha = v,
            "unit" => p.unit_present = true,
            "active" => p.active = true,
            "hostname" => p.hostname = v,
            _ => {}
        }
    }
    Ok(p)
}

/// Why the host does not match, or `None` when it does.
fn drift(
    input: &K3sInstallInput,
    p: &Probe,
    config: &str,
    airgap_sha: Option<&str>,
) -> Option<String> {
    if p.version.is_empty() || !p.unit_present {
        return Some("k3s is not installed".into());
    }
    if let Some(sha) = airgap_sha {
        if p.binary_sha != sha {
            return Some("the k3s binary differs from the air-gap binary".into());
        }
    } else if let Some(v) = &input.version
        && &p.version != v
    {
        return Some(format!("k3s {} is installed, {v} wanted", p.version));
    }
    if p.config_sha != sha256_hex(config.as_bytes()) {
        return Some(format!("{CONFIG_FILE} differs"));
    }
    if let Some(t) = &input.token
        && p.token_sha != sha256_hex(t.expose().as_bytes())
    {
        return Some(format!("{} differs", input.token_file()));
    }
    if !p.active {
        return Some(format!("{} is not running", input.role.unit()));
    }
    None
}

fn output(input: &K3sInstallInput, p: &Probe) -> K3sInstallOutput {
    let address = input
        .node_ip
        .clone()
        .unwrap_or_else(|| input.ssh.host.clone());
    K3sInstallOutput {
        version: p.version.clone(),
        node_name: input
            .node_name
            .clone()
            .unwrap_or_else(|| p.hostname.clone()),
        server_url: match input.role {
            Role::Server => format!("https://{address}:6443"),
            Role::Agent => String::new(),
        },
        address,
        unit: input.role.unit().to_string(),
    }
}

fn unreadable(p: &Path, e: std::io::Error) -> StepError {
    StepError::permanent("SourceUnreadable", format!("read {}: {e}", p.display()))
}

/// A small local file (the install script), read without blocking the runtime.
async fn read_local(cx: &StepContext, path: &str) -> Result<Vec<u8>, StepError> {
    let p = cx.resolve_path(path);
    tokio::fs::read(&p).await.map_err(|e| unreadable(&p, e))
}

/// The hex SHA-256 of a local file (the air-gap binary, ~70 MB), streamed through the
/// hash on the blocking pool rather than read into memory.
async fn local_sha256(p: &Path) -> Result<String, StepError> {
    let p = p.to_path_buf();
    blocking(move || {
        sha256_file_hex(&p)
            .map(|(sha, _)| sha)
            .map_err(|e| unreadable(&p, e))
    })
    .await
}

impl Step for K3sInstall {
    const KIND: &'static str = "k3s.install";
    type Input = K3sInstallInput;
    type Output = K3sInstallOutput;

    fn description(&self) -> &'static str {
        "Install k3s (server or agent) over SSH with config.yaml from typed inputs; restarts only on change"
    }

    fn validate(&self, input: &K3sInstallInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.role == Role::Agent && input.server_url.is_none() {
            return Err(invalid("an agent needs `server_url`"));
        }
        if input.server_url.is_some() && input.token.is_none() {
            return Err(invalid("joining `server_url` needs `token`"));
        }
        if input.cluster_init && (input.role == Role::Agent || input.server_url.is_some()) {
            return Err(invalid(
                "`cluster_init` is for the first server only (no `server_url`, role server)",
            ));
        }
        if let Some(url) = &input.server_url
            && !url.starts_with("https://")
        {
            return Err(invalid(format!(
                "`server_url` {url:?} must be https://<server>:6443"
            )));
        }
        if input.version.is_some() && input.channel.is_some() {
            return Err(invalid("give `version` or `channel`, not both"));
        }
        let sources = [
            input.install_script_url.is_some(),
            input.install_script_path.is_some(),
            input.install_script_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                "give one of `install_script_url`, `install_script_path`, `install_script_file`",
            ));
        }
        if !input.token_file().starts_with('/') {
            return Err(invalid("`token_file` must be an absolute path"));
        }
        for k in input.extra_config.keys() {
            if TYPED_KEYS.contains(&k.trim_end_matches(['+', '-'])) {
                return Err(invalid(format!(
                    "`extra_config.{k}` has a typed input; use that instead"
                )));
            }
        }
        input.config_yaml()?;
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sInstallInput,
    ) -> Result<Observed<K3sInstallOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let config = input.config_yaml()?;
        let airgap = match &input.airgap_binary_file {
            Some(f) => Some(local_sha256(&cx.resolve_path(f)).await?),
            None => None,
        };
        let p = probe(&remote, input).await?;
        Ok(match drift(input, &p, &config, airgap.as_deref()) {
            None => Observed::Satisfied(output(input, &p)),
            Some(reason) => Observed::NotSatisfied {
                reason: Some(reason),
            },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sInstallInput,
    ) -> Result<Progress<K3sInstallOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let config = input.config_yaml()?;
        // Hashed once here; uploaded (streamed) only when the host's binary differs.
        let airgap_bin: Option<PathBuf> = input
            .airgap_binary_file
            .as_deref()
            .map(|f| cx.resolve_path(f));
        let airgap_sha = match &airgap_bin {
            Some(p) => Some(local_sha256(p).await?),
            None => None,
        };
        let before = probe(&remote, input).await?;

        let token_dir = input
            .token_file()
            .rsplit_once('/')
            .map(|(d, _)| d)
            .filter(|d| !d.is_empty())
            .unwrap_or("/");
        remote
            .run_quiet(&format!(
                "mkdir -p -m 0755 {} {}",
                shell_quote(CONFIG_DIR),
                shell_quote(token_dir)
            ))
            .await?;
        let mut changed: Vec<&str> = Vec::new();
        if let Some(t) = &input.token
            && before.token_sha != sha256_hex(t.expose().as_bytes())
        {
            remote.write_secret(input.token_file(), t).await?;
            changed.push("token");
        }
        if before.config_sha != sha256_hex(config.as_bytes()) {
            remote
                .write_file(CONFIG_FILE, config.as_bytes(), 0o600, None)
                .await?;
            changed.push("config.yaml");
        }

        let installed = !before.version.is_empty() && before.unit_present;
        let right_binary = match &airgap_sha {
            Some(sha) => &before.binary_sha == sha,
            None => input.version.as_ref().is_none_or(|v| v == &before.version),
        };
        let unit = input.role.unit();
        if !installed || !right_binary {
            if let Some(bin) = &airgap_bin
                && !right_binary
            {
                remote.write_local_file(BIN, bin, 0o755, None).await?;
            }
            if !input.airgap_images.is_empty() {
                remote
                    .run_quiet(&format!("mkdir -p {}", shell_quote(IMAGES_DIR)))
                    .await?;
                for img in &input.airgap_images {
                    let name = Path::new(img)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .ok_or_else(|| {
                            invalid(format!("air-gap image {img:?} has no file name"))
                        })?;
                    // Streamed: image tarballs run to hundreds of MB.
                    remote
                        .write_local_file(
                            &format!("{IMAGES_DIR}/{name}"),
                            &cx.resolve_path(img),
                            0o644,
                            None,
                        )
                        .await?;
                }
            }
            let script = if let Some(p) = &input.install_script_path {
                format!("sh {} {}", shell_quote(p), input.role.command())
            } else if let Some(f) = &input.install_script_file {
                let bytes = read_local(cx, f).await?;
                remote
                    .run_quiet(&format!(
                        "mkdir -p {}",
                        shell_quote("/usr/local/lib/siteflow")
                    ))
                    .await?;
                remote
                    .write_file(UPLOADED_SCRIPT, &bytes, 0o755, None)
                    .await?;
                format!("sh {UPLOADED_SCRIPT} {}", input.role.command())
            } else {
                let url = input
                    .install_script_url
                    .as_deref()
                    .unwrap_or(DEFAULT_SCRIPT_URL);
                format!(
                    "set -e\nf=$(mktemp)\ntrap 'rm -f \"$f\"' EXIT\n\
                     curl -sfL --retry 3 -o \"$f\" {}\nsh \"$f\" {}",
                    shell_quote(url),
                    input.role.command()
                )
            };
            let mut req = remote.request(script);
            if let Some(v) = &input.version {
                req = req.env("INSTALL_K3S_VERSION", v);
            }
            if let Some(c) = &input.channel {
                req = req.env("INSTALL_K3S_CHANNEL", c);
            }
            if airgap_bin.is_some() {
                req = req.env("INSTALL_K3S_SKIP_DOWNLOAD", "true");
            }
            if !changed.is_empty() {
                // The script does not notice config changes; make it restart.
                req = req.env("INSTALL_K3S_FORCE_RESTART", "true");
            }
            cx.info(&format!(
                "installing k3s {} on {}",
                input.role.command(),
                input.ssh.host
            ));
            remote.exec(&req).await?.check(&remote.target)?;
        } else if !changed.is_empty() {
            restart(&remote, unit, &format!("{} changed", changed.join(" and "))).await?;
        } else if !before.active {
            cx.info(&format!("starting {unit} on {}", input.ssh.host));
            remote
                .run(&format!("systemctl enable --now {unit}"))
                .await?;
        }
        if let Some(other) = installed_unit(&remote).await?
            && other != unit
        {
            cx.info(&format!(
                "note: {other} is also installed on {}",
                input.ssh.host
            ));
        }
        let after = probe(&remote, input).await?;
        if let Some(reason) = drift(input, &after, &config, airgap_sha.as_deref()) {
            return Err(StepError::retryable(
                "K3sInstallIncomplete",
                format!("after installing, {reason} on {}", input.ssh.host),
            ));
        }
        Ok(Progress::Done(output(input, &after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> K3sInstallInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn config_from_typed_inputs_is_sorted_and_has_no_token() {
        let i = input(json!({
            "ssh": {"host": "h", "user": "u"},
            "role": "agent",
            "server_url": "https://10.0.1.4:6443",
            "token": "s3cr3t-token",
            "node_taints": ["observability=true:NoSchedule"],
            "node_labels": ["role=observability"],
            "extra_config": {"kubelet-arg": ["max-pods=50"]}
        }));
        let c = i.config_yaml().unwrap();
        assert!(!c.contains("s3cr3t"), "{c}");
        assert!(
            c.contains("token-file: /etc/rancher/k3s/cluster-token"),
            "{c}"
        );
        assert!(c.contains("observability=true:NoSchedule"), "{c}");
        assert!(c.find("kubelet-arg").unwrap() < c.find("node-label").unwrap());
        assert_eq!(c, i.config_yaml().unwrap());
        K3sInstall::new(StepPool::new()).validate(&i).unwrap();
    }

    #[test]
    fn validation_catches_bad_combinations() {
        let k = K3sInstall::new(StepPool::new());
        let agent_without_url = input(json!({"ssh": {"host": "h", "user": "u"}, "role": "agent"}));
        assert!(k.validate(&agent_without_url).is_err());
        let typed_in_extra = input(json!({
            "ssh": {"host": "h", "user": "u"}, "extra_config": {"node-label": ["a=b"]}}));
        assert!(k.validate(&typed_in_extra).is_err());
        let both = input(json!({
            "ssh": {"host": "h", "user": "u"}, "version": "v1", "channel": "stable"}));
        assert!(k.validate(&both).is_err());
    }
}
