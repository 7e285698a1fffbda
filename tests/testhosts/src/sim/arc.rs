//! The Arc agents a `HelmChart` of `azure-arc-k8sagents` starts. With the chart's values
//! (`global.resourceId`, `global.onboardingPrivateKey`, `global.agentDataPlaneEndpoint`,
//! `global.proxyCert`) the agent proves the onboarding key to the Arc data plane (it signs a
//! nonce; nothing else connects the cluster), then pulls the cluster's configurations every
//! few seconds. For each Flux configuration it really fetches the git source (`git ls-remote`
//! and `git clone` over the network), applies the kustomizations' manifests to the cluster and
//! reports the revision and compliance.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::sim::server::Server;

const POLL: Duration = Duration::from_secs(2);
const FLUX_DIR: &str = "/var/lib/rancher/k3s/sim/flux";

struct Agent {
    server: Arc<Server>,
    resource_id: String,
    endpoint: String,
    ca: Option<String>,
    /// The onboarding key (Arc); `None` for AKS's extension manager, which holds a token.
    key: Option<ring::signature::RsaKeyPair>,
    token: Option<String>,
    /// Last report per configuration id, and the revision applied.
    reported: HashMap<String, Value>,
}

fn pem_body(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .context("the onboarding key is not PEM")
}

/// Runs the agent until `stop` is set.
pub fn agent(server: Arc<Server>, values: Value, stop: Arc<AtomicBool>) {
    let g = &values["global"];
    let s = |k: &str| g.get(k).and_then(Value::as_str).map(str::to_string);
    let setup = (|| -> Result<Agent> {
        // AKS's extension manager: the cluster is Azure's own, it holds a token from the start.
        let token = s("extensionAgentToken");
        let key = match (&token, s("onboardingPrivateKey")) {
            (Some(_), _) => None,
            (None, Some(key_pem)) => Some(
                ring::signature::RsaKeyPair::from_der(&pem_body(&key_pem)?)
                    .map_err(|e| anyhow::anyhow!("the onboarding key is not an RSA key: {e}"))?,
            ),
            (None, None) => bail!("global.onboardingPrivateKey is missing"),
        };
        Ok(Agent {
            resource_id: s("resourceId").context("global.resourceId is missing")?,
            endpoint: s("agentDataPlaneEndpoint")
                .context("global.agentDataPlaneEndpoint is missing")?,
            ca: s("proxyCert"),
            key,
            token,
            reported: HashMap::new(),
            server: Arc::clone(&server),
        })
    })();
    let mut agent = match setup {
        Ok(a) => a,
        Err(e) => {
            server.put_object(status_object("Failed", &format!("{e:#}"), ""));
            return;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        if agent.token.is_none() {
            match agent.connect() {
                Ok(t) => {
                    agent.token = Some(t);
                    server.put_object(status_object("Connected", "", &agent.resource_id));
                }
                Err(e) => {
                    server.put_object(status_object(
                        "Connecting",
                        &format!("{e:#}"),
                        &agent.resource_id,
                    ));
                }
            }
        } else if let Err(e) = agent.reconcile() {
            eprintln!("level=error msg=\"arc agent: {e:#}\"");
        }
        std::thread::sleep(POLL);
    }
}

fn status_object(state: &str, error: &str, id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "azure-clusterconfig", "namespace": "azure-arc"},
           "data": {"connectivity": state, "lastError": error, "resourceId": id}})
}

impl Agent {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}/{path}", self.endpoint.trim_end_matches('/'));
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let (status, bytes) =
            crate::sim::https::request(&url, method, auth.as_deref(), body, self.ca.as_deref())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    fn connect(&self) -> Result<String> {
        let Some(key) = &self.key else {
            bail!("the extension manager's token was refused");
        };
        let (status, ch) = self.call(
            "POST",
            "challenge",
            Some(&json!({"resourceId": self.resource_id})),
        )?;
        if status != 200 {
            bail!("challenge: {status} {ch}");
        }
        let nonce = ch["nonce"].as_str().context("no nonce")?.to_string();
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            nonce.as_bytes(),
            &mut sig,
        )
        .map_err(|_| anyhow::anyhow!("signing failed"))?;
        let nodes = self.server.node_count();
        let body = json!({
            "resourceId": self.resource_id,
            "nonce": nonce,
            "signature": base64::engine::general_purpose::STANDARD.encode(sig),
            "agentVersion": "1.21.10",
            "kubernetesVersion": crate::sim::version::version(),
            "totalNodeCount": nodes,
            "totalCoreCount": nodes * 2,
        });
        let (status, r) = self.call("POST", "connect", Some(&body))?;
        if status != 200 {
            bail!("connect: {status} {r}");
        }
        r["agentToken"]
            .as_str()
            .map(str::to_string)
            .context("no agent token")
    }

    fn reconcile(&mut self) -> Result<()> {
        let (status, conf) = self.call("GET", "configurations", None)?;
        if status == 401 {
            if self.key.is_some() {
                self.token = None;
            }
            bail!("the agent token was refused; connecting again");
        }
        if status != 200 {
            bail!("configurations: {status} {conf}");
        }
        let flux_installed = conf["extensions"].as_array().is_some_and(|e| {
            e.iter().any(|x| {
                x.pointer("/properties/extensionType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("microsoft.flux"))
            })
        });
        if flux_installed {
            self.server.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}));
        }
        let mut reports = Vec::new();
        for fc in conf["fluxConfigurations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let id = fc["id"].as_str().unwrap_or_default().to_string();
            let report = if flux_installed {
                match self.sync(&fc) {
                    Ok(revision) => {
                        json!({"id": id, "complianceState": "Compliant", "revision": revision})
                    }
                    Err(e) => {
                        json!({"id": id, "complianceState": "Non-Compliant", "message": format!("{e:#}")})
                    }
                }
            } else {
                json!({"id": id, "complianceState": "Non-Compliant",
                       "message": "the microsoft.flux extension is not installed on the cluster"})
            };
            // Sent when it changed, or when the service lost it (a new PUT of the
            // configuration sets it back to Pending until the agent reports again).
            let service_has =
                fc.pointer("/properties/complianceState") == report.get("complianceState");
            if self.reported.get(&id) != Some(&report) || !service_has {
                reports.push(report.clone());
                self.reported.insert(id, report);
            }
        }
        if !reports.is_empty() {
            let (status, r) = self.call(
                "POST",
                "status",
                Some(&json!({"fluxConfigurations": reports})),
            )?;
            if status != 200 {
                self.reported.clear();
                bail!("status: {status} {r}");
            }
        }
        Ok(())
    }

    /// Fetches the configuration's source and applies its kustomizations; returns the revision.
    fn sync(&self, fc: &Value) -> Result<String> {
        let props = &fc["properties"];
        let name = fc["name"].as_str().unwrap_or("flux");
        let repo = &props["gitRepository"];
        let url = repo["url"]
            .as_str()
            .context("gitRepository.url is missing")?;
        if url.starts_with("ssh://") || url.starts_with("git@") {
            bail!("ssh git sources are not supported by the simulator");
        }
        let branch = repo
            .pointer("/repositoryRef/branch")
            .and_then(Value::as_str)
            .unwrap_or("master");
        let key = props
            .pointer("/configurationProtectedSettings/httpsKey")
            .and_then(Value::as_str);
        let user = repo["httpsUser"].as_str().unwrap_or("git");
        let env = git_env(key.map(|k| (user, k)), None);
        let dir = Path::new(FLUX_DIR).join(name);
        let sha = fetch(&env, url, branch, &dir)?;
        let revision = format!("{branch}@sha1:{sha}");
        let applied = self
            .reported
            .get(fc["id"].as_str().unwrap_or_default())
            .and_then(|r| r["revision"].as_str())
            == Some(revision.as_str());
        if applied {
            return Ok(revision);
        }
        let kustomizations = props["kustomizations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (kname, k) in kustomizations {
            let path = k["path"].as_str().unwrap_or("./");
            let root = dir.join(path.trim_start_matches("./"));
            if !root.is_dir() {
                bail!("kustomization '{kname}' path not found: {path}");
            }
            let mut objects = Vec::new();
            collect_manifests(&root, &mut objects)?;
            self.server.apply_objects(objects);
        }
        Ok(revision)
    }
}

/// git's environment for an https source: Basic credentials as an extra header and a CA file
/// (on the environment, never on a command line).
pub(crate) fn git_env(
    basic: Option<(&str, &str)>,
    ca_file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("GIT_TERMINAL_PROMPT".into(), "0".into())];
    if let Some((user, password)) = basic {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        env.extend([
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!("Authorization: Basic {b}"),
            ),
        ]);
    }
    if let Some(ca) = ca_file {
        env.push(("GIT_SSL_CAINFO".into(), ca.display().to_string()));
    }
    env
}

/// Brings `dir` to the head of `branch` (a shallow clone, kept while the branch has not
/// moved); returns the commit.
pub(crate) fn fetch(
    env: &[(String, String)],
    url: &str,
    branch: &str,
    dir: &Path,
) -> Result<String> {
    let remote = git(
        env,
        None,
        &["ls-remote", "--", url, &format!("refs/heads/{branch}")],
    )?;
    let sha = remote
        .split_whitespace()
        .next()
        .with_context(|| format!("branch '{branch}' not found in {url}"))?
        .to_string();
    let head = git(env, Some(dir), &["rev-parse", "HEAD"]).unwrap_or_default();
    if head.trim() != sha {
        let _ = std::fs::remove_dir_all(dir);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let dir_s = dir.to_string_lossy().to_string();
        git(
            env,
            None,
            &[
                "clone", "--quiet", "--depth", "1", "--branch", branch, "--", url, &dir_s,
            ],
        )?;
        let head = git(env, Some(dir), &["rev-parse", "HEAD"])?;
        if head.trim() != sha {
            bail!("fetched {} but the branch is at {sha}", head.trim());
        }
    }
    Ok(sha)
}

pub(crate) fn collect_manifests(dir: &Path, out: &mut Vec<Value>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_manifests(&p, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            if name == "kustomization.yaml" {
                continue;
            }
            let text = std::fs::read_to_string(&p)?;
            out.extend(
                crate::sim::kubectl::parse_manifests(&text)
                    .with_context(|| format!("{}", p.display()))?,
            );
        }
    }
    Ok(())
}

pub(crate) fn git(env: &[(String, String)], dir: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
