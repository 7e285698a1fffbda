//! `flux.bootstrap`: Flux installed from a git repository, as `flux bootstrap git` does it but
//! without the flux CLI: the install and sync manifests are committed to
//! `<path>/flux-system/` (cloned and pushed with the local `git`, the token in its environment,
//! never on a command line), the `flux-system` Secret (the token, the CA) and the manifests are
//! applied to the cluster (a k3s server over SSH, or a kubeconfig), and the step waits until
//! the `flux-system` Kustomization has applied the commit. Idempotent: nothing is committed or
//! applied when the repository and the cluster already agree.

mod manifests;

pub use manifests::{CONTROLLERS, Controller, FLUX_VERSION};

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{
    Duration, DynStep, Observed, Progress, Secret, Step, StepContext, StepError, blocking,
};
use siteflow_steps_kube::{KubeClient, KubeconfigTarget, holds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The flux step kinds; SSH targets go through `pool`.
pub fn steps(pool: StepPool) -> Vec<Arc<dyn DynStep>> {
    vec![Arc::new(FluxBootstrap { pool })]
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

fn main_branch() -> String {
    "main".into()
}
fn edge_path() -> String {
    "./clusters/edge".into()
}
fn git_user() -> String {
    "git".into()
}
fn one_minute() -> Duration {
    std::time::Duration::from_secs(60).into()
}
fn two_s() -> Duration {
    std::time::Duration::from_secs(2).into()
}

/// The repository Flux is bootstrapped from: over https with a token, or over ssh with a
/// deploy key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// An https URL (`https://host/org/fleet.git`) or an ssh URL
    /// (`ssh://git@host[:port]/org/fleet.git`, with `ssh_key_file` and `known_hosts_file`).
    pub url: String,
    /// Branch.
    #[serde(default = "main_branch")]
    pub branch: String,
    /// The cluster's folder in the repository; Flux's own manifests go to `<path>/flux-system`.
    #[serde(default = "edge_path")]
    pub path: String,
    /// The https user name (for a token, any name the host accepts).
    #[serde(default = "git_user")]
    pub username: String,
    /// The access token (push rights for the bootstrap; read for Flux afterwards).
    #[serde(default)]
    pub token: Option<Secret<String>>,
    /// A PEM CA bundle the git host's certificate chains to (also given to Flux).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// For an ssh URL: the deploy key's private key (an OpenSSH key file without a
    /// passphrase, mode 0600), used for the push and given to Flux in its Secret.
    #[serde(default)]
    pub ssh_key_file: Option<String>,
    /// For an ssh URL: a known_hosts file with the git host's key (checked strictly, and
    /// given to Flux).
    #[serde(default)]
    pub known_hosts_file: Option<String>,
}

impl GitSource {
    fn is_ssh(&self) -> bool {
        self.url.starts_with("ssh://")
    }

    /// The deploy key and known_hosts, read (the key registered as a secret).
    async fn ssh_material(&self, cx: &StepContext) -> Result<Option<(String, String)>, StepError> {
        let (Some(key), Some(known)) = (&self.ssh_key_file, &self.known_hosts_file) else {
            return Ok(None);
        };
        let key = read_local(cx, key).await?;
        cx.add_secret(key.trim());
        Ok(Some((key, read_local(cx, known).await?)))
    }
}

/// A local file named in the input, read without blocking the runtime.
async fn read_local(cx: &StepContext, f: &str) -> Result<String, StepError> {
    let p = cx.resolve_path(f);
    tokio::fs::read_to_string(&p)
        .await
        .map_err(|e| StepError::permanent("SourceUnreadable", format!("{}: {e}", p.display())))
}

/// A k3s server reached over SSH.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sTarget {
    /// The server.
    pub ssh: SshTargetInput,
}

/// Input of `flux.bootstrap`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FluxBootstrapInput {
    /// The repository.
    pub git: GitSource,
    /// The cluster, as a k3s server over SSH ...
    #[serde(default)]
    pub k3s: Option<K3sTarget>,
    /// ... or through a kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigTarget>,
    /// A Flux release's install manifests (`install.yaml`, or `flux install --export`) to
    /// commit and apply instead of the built-in install.
    #[serde(default)]
    pub components_file: Option<String>,
    /// A registry mirroring ghcr.io for the built-in install's images (air-gapped sites).
    #[serde(default)]
    pub registry: Option<String>,
    /// How often Flux fetches the repository.
    #[serde(default = "one_minute")]
    pub sync_interval: Duration,
    /// How often the step checks whether Flux applied the commit.
    #[serde(default = "two_s")]
    pub interval: Duration,
}

/// Output of `flux.bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FluxBootstrapOutput {
    /// The commit Flux applied.
    pub commit: String,
    /// Flux's revision (`<branch>@sha1:<commit>`).
    pub revision: String,
    /// The folder of Flux's manifests in the repository.
    pub manifests_path: String,
}

/// `flux.bootstrap`.
pub struct FluxBootstrap {
    pool: StepPool,
}

/// The files of `<path>/flux-system`, by name.
async fn files(
    cx: &StepContext,
    input: &FluxBootstrapInput,
) -> Result<Vec<(String, String)>, StepError> {
    let components = match &input.components_file {
        Some(f) => read_local(cx, f).await?,
        None => manifests::to_yaml(
            &format!(
                "Flux {FLUX_VERSION} components, written by siteflow (flux.bootstrap). Do not edit."
            ),
            &manifests::components(FLUX_VERSION, input.registry.as_deref()),
        ),
    };
    let sync = manifests::to_yaml(
        "Flux sync, written by siteflow (flux.bootstrap). Do not edit.",
        &manifests::sync(
            &input.git.url,
            &input.git.branch,
            &input.git.path,
            &input.sync_interval.to_string(),
        ),
    );
    Ok(vec![
        ("gotk-components.yaml".into(), components),
        ("gotk-sync.yaml".into(), sync),
        ("kustomization.yaml".into(), manifests::kustomization()),
    ])
}

/// The objects applied to the cluster (the Secret first).
async fn objects(
    cx: &StepContext,
    input: &FluxBootstrapInput,
    files: &[(String, String)],
) -> Result<Vec<Value>, StepError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = serde_json::Map::new();
    if let Some(t) = &input.git.token {
        data.insert("username".into(), json!(b64(&input.git.username)));
        data.insert("password".into(), json!(b64(t.expose())));
    }
    if let Some((key, known_hosts)) = input.git.ssh_material(cx).await? {
        data.insert("identity".into(), json!(b64(&key)));
        data.insert("known_hosts".into(), json!(b64(&known_hosts)));
    }
    if let Some(ca) = &input.git.ca_file {
        let pem = read_local(cx, ca).await?;
        data.insert("ca.crt".into(), json!(b64(&pem)));
    }
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "flux-system", "namespace": "flux-system"}, "data": data}),
    ];
    for (name, text) in files.iter().filter(|(n, _)| n != "kustomization.yaml") {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| StepError::permanent("InvalidManifests", format!("{name}: {e}")))?;
        out.extend(docs.into_iter().filter(|d| d.get("kind").is_some()));
    }
    // The namespace before what lives in it.
    out.sort_by_key(|o| o["kind"] != "Namespace");
    Ok(out)
}

/// The local git, with the token and CA in its environment.
struct Git {
    env: Vec<(String, String)>,
}

impl Git {
    fn new(cx: &StepContext, source: &GitSource) -> Self {
        let mut config: Vec<(String, String)> = Vec::new();
        if let Some(t) = &source.token {
            cx.add_secret(t.expose());
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                source.username,
                t.expose()
            ));
            cx.add_secret(&basic);
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {basic}"),
            ));
        }
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("GIT_AUTHOR_NAME".into(), "siteflow".into()),
            ("GIT_AUTHOR_EMAIL".into(), "siteflow@localhost".into()),
            ("GIT_COMMITTER_NAME".into(), "siteflow".into()),
            ("GIT_COMMITTER_EMAIL".into(), "siteflow@localhost".into()),
            ("GIT_CONFIG_COUNT".into(), config.len().to_string()),
        ];
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
        if let (Some(key), Some(known)) = (&source.ssh_key_file, &source.known_hosts_file) {
            // Paths only: the key itself stays in its 0600 file.
            env.push((
                "GIT_SSH_COMMAND".into(),
                format!(
                    "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                    shell_quote(&cx.resolve_path(key).display().to_string()),
                    shell_quote(&cx.resolve_path(known).display().to_string()),
                ),
            ));
        }
        // (`http.sslCAInfo` from GIT_CONFIG_* is not honoured by Debian's git; this is.)
        if let Some(ca) = &source.ca_file {
            env.push((
                "GIT_SSL_CAINFO".into(),
                cx.resolve_path(ca).display().to_string(),
            ));
        }
        Self { env }
    }

    async fn run(
        &self,
        cx: &StepContext,
        dir: Option<&Path>,
        args: &[&str],
    ) -> Result<String, StepError> {
        let mut cmd = tokio::process::Command::new("git");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("GIT_DIR")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::select! {
            out = cmd.output() => out.map_err(|e| StepError::permanent("GitMissing", format!("running git: {e}")))?,
            _ = cx.cancel.cancelled() => return Err(StepError::cancelled("git was cancelled")),
        };
        if !out.status.success() {
            // The engine redacts the token (registered as a secret) from stored errors.
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let what = args.first().copied().unwrap_or("");
            let class_auth = err.contains("Authentication failed")
                || err.contains("could not read Username")
                || err.contains(" 401")
                || err.contains(" 403")
                || err.contains("Permission denied (publickey");
            return Err(if err.contains("Host key verification failed") {
                StepError::permanent(
                    "GitHostKeyUnknown",
                    format!(
                        "git {what}: {err}; put the git host's key in `git.known_hosts_file` (ssh-keyscan it once and check its fingerprint)"
                    ),
                )
            } else if class_auth {
                StepError::permanent(
                    "GitAuthFailed",
                    format!(
                        "git {what}: {err}; check the token or deploy key (it needs push rights)"
                    ),
                )
            } else {
                StepError::retryable("GitFailed", format!("git {what}: {err}"))
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A checkout's temporary directory, removed on the blocking pool when dropped (a clone
/// may hold many files), whichever way observe or apply ends.
struct CheckoutDir(Option<tempfile::TempDir>);

impl CheckoutDir {
    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |t| t.path())
    }
}

impl Drop for CheckoutDir {
    fn drop(&mut self) {
        if let Some(tmp) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Were the task never to run, dropping it still drops (removes) the directory.
            drop(runtime.spawn_blocking(move || drop(tmp)));
        }
    }
}

/// A fresh clone of the branch (an empty repository or a missing branch: a new one).
async fn checkout(
    cx: &StepContext,
    git: &Git,
    source: &GitSource,
) -> Result<(CheckoutDir, bool), StepError> {
    let tmp = CheckoutDir(Some(
        blocking(|| {
            tempfile::Builder::new()
                .prefix("siteflow-flux-")
                .tempdir()
                .map_err(|e| StepError::retryable("TempDir", e.to_string()))
        })
        .await?,
    ));
    let dir = tmp.path().join("repo");
    let dir_s = dir.display().to_string();
    let heads = git
        .run(
            cx,
            None,
            &["ls-remote", "--heads", "--", &source.url, &source.branch],
        )
        .await?;
    if heads.is_empty() {
        git.run(cx, None, &["init", "-q", "-b", &source.branch, &dir_s])
            .await?;
        git.run(cx, Some(&dir), &["remote", "add", "origin", &source.url])
            .await?;
        return Ok((tmp, false));
    }
    git.run(
        cx,
        None,
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            &source.branch,
            "--",
            &source.url,
            &dir_s,
        ],
    )
    .await?;
    Ok((tmp, true))
}

fn flux_dir(source: &GitSource) -> String {
    format!(
        "{}/flux-system",
        source.path.trim_start_matches("./").trim_end_matches('/')
    )
}

/// Whether the checkout holds these files; the HEAD commit when it does.
async fn repo_matches(
    cx: &StepContext,
    git: &Git,
    dir: &Path,
    has_head: bool,
    source: &GitSource,
    files: &[(String, String)],
) -> Result<Option<String>, StepError> {
    if !has_head {
        return Ok(None);
    }
    let base: PathBuf = dir.join(flux_dir(source));
    for (name, text) in files {
        let have = tokio::fs::read_to_string(base.join(name)).await.ok();
        if have.as_deref() != Some(text.as_str()) {
            return Ok(None);
        }
    }
    git.run(cx, Some(dir), &["rev-parse", "HEAD"])
        .await
        .map(Some)
}

/// What the cluster says: the flux-system Kustomization's applied revision when Ready.
enum ClusterView {
    Applied(String),
    Pending(String),
}

impl FluxBootstrap {
    async fn live(
        &self,
        cx: &StepContext,
        input: &FluxBootstrapInput,
        objects: &[Value],
    ) -> Result<(ClusterView, bool), StepError> {
        let ks_ref = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "flux-system", "namespace": "flux-system"}});
        let (ks, in_place) = match (&input.k3s, &input.kubeconfig) {
            (_, Some(target)) => {
                let kube = KubeClient::new(cx, target).await?;
                let mut in_place = true;
                for o in objects {
                    let live = match kube.get(o).await {
                        Ok(l) => l,
                        Err(e) if e.code == "KindNotServed" => None,
                        Err(e) => return Err(e),
                    };
                    if !live.as_ref().is_some_and(|l| holds(o, l)) {
                        in_place = false;
                        break;
                    }
                }
                let ks = match kube.get(&ks_ref).await {
                    Ok(k) => k,
                    Err(e) if e.code == "KindNotServed" => None,
                    Err(e) => return Err(e),
                };
                (ks, in_place)
            }
            (Some(k3s), None) => {
                let remote = self.pool.remote(cx, &k3s.ssh, true).await?;
                let out = remote
                    .run_quiet("k3s kubectl get kustomization flux-system -n flux-system -o json 2>/dev/null || true")
                    .await?;
                let ks: Option<Value> = serde_json::from_slice(&out.stdout).ok();
                // Objects are compared through the Kustomization alone over SSH: its spec
                // names the sync, and it is Ready only once the install is in place.
                let in_place = ks.as_ref().is_some_and(|k| {
                    objects
                        .iter()
                        .find(|o| o["kind"] == "Kustomization")
                        .is_some_and(|want| holds(&want["spec"], &k["spec"]))
                });
                (ks, in_place)
            }
            (None, None) => return Err(invalid("give `k3s` or `kubeconfig`")),
        };
        let Some(ks) = ks else {
            return Ok((ClusterView::Pending("Flux is not installed".into()), false));
        };
        let ready = ks
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or(Value::Null);
        let applied = ks
            .pointer("/status/lastAppliedRevision")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(if ready["status"] == "True" && !applied.is_empty() {
            (ClusterView::Applied(applied), in_place)
        } else {
            (
                ClusterView::Pending(format!(
                    "the flux-system Kustomization is not ready: {}",
                    ready["message"].as_str().unwrap_or("no status yet")
                )),
                in_place,
            )
        })
    }

    async fn apply_objects(
        &self,
        cx: &StepContext,
        input: &FluxBootstrapInput,
        objects: &[Value],
    ) -> Result<(), StepError> {
        match (&input.k3s, &input.kubeconfig) {
            (_, Some(target)) => {
                let kube = KubeClient::new(cx, target).await?;
                for o in objects {
                    kube.apply(o).await?;
                }
            }
            (Some(k3s), None) => {
                let remote = self.pool.remote(cx, &k3s.ssh, true).await?;
                let stdin: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
                // Over stdin: the Secret's token never reaches a command line.
                let req = remote
                    .request(format!(
                        "KUBECONFIG={} k3s kubectl apply --server-side --field-manager=siteflow -f -",
                        shell_quote("/etc/rancher/k3s/k3s.yaml")
                    ))
                    .stdin(stdin.into_bytes());
                remote.exec(&req).await?.check(&remote.target)?;
            }
            (None, None) => return Err(invalid("give `k3s` or `kubeconfig`")),
        }
        Ok(())
    }
}

fn output(source: &GitSource, commit: &str) -> FluxBootstrapOutput {
    FluxBootstrapOutput {
        commit: commit.to_string(),
        revision: format!("{}@sha1:{commit}", source.branch),
        manifests_path: flux_dir(source),
    }
}

impl Step for FluxBootstrap {
    const KIND: &'static str = "flux.bootstrap";
    type Input = FluxBootstrapInput;
    type Output = FluxBootstrapOutput;

    fn description(&self) -> &'static str {
        "Bootstrap Flux from a git repository without the flux CLI: commit its manifests, apply them, wait until it applied the commit"
    }

    fn validate(&self, input: &FluxBootstrapInput) -> Result<(), StepError> {
        match (&input.k3s, &input.kubeconfig) {
            (Some(k), None) => k.ssh.validate()?,
            (None, Some(t)) => t.validate()?,
            _ => return Err(invalid("give exactly one cluster: `k3s` or `kubeconfig`")),
        }
        let g = &input.git;
        if g.is_ssh() {
            if g.ssh_key_file.is_none() || g.known_hosts_file.is_none() {
                return Err(invalid(
                    "an ssh `git.url` needs `git.ssh_key_file` (the deploy key) and `git.known_hosts_file`",
                ));
            }
            if g.token.is_some() || g.ca_file.is_some() {
                return Err(invalid(
                    "`git.token` and `git.ca_file` are for https URLs; an ssh URL uses `git.ssh_key_file`",
                ));
            }
        } else if g.url.starts_with("https://") || g.url.starts_with("http://") {
            if g.ssh_key_file.is_some() || g.known_hosts_file.is_some() {
                return Err(invalid(
                    "`git.ssh_key_file` and `git.known_hosts_file` need an ssh URL (`ssh://git@host/org/repo.git`)",
                ));
            }
        } else {
            return Err(invalid(format!(
                "`git.url` must be an https URL or an ssh:// URL (got {:?}); scp-like `git@host:repo` is not accepted by Flux either",
                g.url
            )));
        }
        if input.git.branch.is_empty() || input.git.path.is_empty() {
            return Err(invalid("`git.branch` and `git.path` must not be empty"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &FluxBootstrapInput,
    ) -> Result<Observed<FluxBootstrapOutput>, StepError> {
        let files = files(cx, input).await?;
        let objects = objects(cx, input, &files).await?;
        let git = Git::new(cx, &input.git);
        let (tmp, has_head) = checkout(cx, &git, &input.git).await?;
        let Some(head) = repo_matches(
            cx,
            &git,
            &tmp.path().join("repo"),
            has_head,
            &input.git,
            &files,
        )
        .await?
        else {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!(
                    "{} differs in the repository",
                    flux_dir(&input.git)
                )),
            });
        };
        let want = format!("{}@sha1:{head}", input.git.branch);
        match self.live(cx, input, &objects).await? {
            (ClusterView::Applied(rev), true) if rev == want => {
                Ok(Observed::Satisfied(output(&input.git, &head)))
            }
            (ClusterView::Applied(rev), _) => Ok(Observed::NotSatisfied {
                reason: Some(format!("Flux applied {rev}, the branch is at {want}")),
            }),
            (ClusterView::Pending(why), _) => Ok(Observed::NotSatisfied { reason: Some(why) }),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &FluxBootstrapInput,
    ) -> Result<Progress<FluxBootstrapOutput>, StepError> {
        let interval = input.interval.get();
        let files = files(cx, input).await?;
        let objects = objects(cx, input, &files).await?;
        let git = Git::new(cx, &input.git);
        let (tmp, has_head) = checkout(cx, &git, &input.git).await?;
        let dir = tmp.path().join("repo");
        let head = match repo_matches(cx, &git, &dir, has_head, &input.git, &files).await? {
            Some(h) => h,
            None => {
                let base = dir.join(flux_dir(&input.git));
                let failed = |e: std::io::Error| StepError::retryable("Checkout", e.to_string());
                tokio::fs::create_dir_all(&base).await.map_err(failed)?;
                for (name, text) in &files {
                    tokio::fs::write(base.join(name), text)
                        .await
                        .map_err(failed)?;
                }
                let rel = flux_dir(&input.git);
                git.run(cx, Some(&dir), &["add", "--", &rel]).await?;
                git.run(
                    cx,
                    Some(&dir),
                    &[
                        "commit",
                        "-q",
                        "-m",
                        "siteflow: bootstrap Flux (flux.bootstrap)",
                    ],
                )
                .await?;
                git.run(
                    cx,
                    Some(&dir),
                    &[
                        "push",
                        "-q",
                        "origin",
                        &format!("HEAD:refs/heads/{}", input.git.branch),
                    ],
                )
                .await?;
                let head = git.run(cx, Some(&dir), &["rev-parse", "HEAD"]).await?;
                cx.info(&format!(
                    "pushed {head} to {} ({})",
                    input.git.branch,
                    flux_dir(&input.git)
                ));
                head
            }
        };
        let want = format!("{}@sha1:{head}", input.git.branch);
        let (view, in_place) = self.live(cx, input, &objects).await?;
        if let ClusterView::Applied(rev) = &view
            && *rev == want
            && in_place
        {
            return Ok(Progress::Done(output(&input.git, &head)));
        }
        if !in_place {
            self.apply_objects(cx, input, &objects).await?;
        }
        cx.info(&match view {
            ClusterView::Applied(rev) => {
                format!("waiting for Flux to apply {want} (it applied {rev})")
            }
            ClusterView::Pending(why) => format!("waiting for Flux to apply {want}: {why}"),
        });
        Ok(Progress::Wait {
            recheck_after: interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_checkout_dir_is_removed() {
        let tmp = tempfile::Builder::new()
            .prefix("siteflow-flux-test-")
            .tempdir()
            .unwrap();
        let path = tmp.path().to_path_buf();
        std::fs::create_dir_all(path.join("repo/clusters")).unwrap();
        std::fs::write(path.join("repo/clusters/a.yaml"), "a: 1\n").unwrap();
        drop(CheckoutDir(Some(tmp)));
        // Removed on the blocking pool, so shortly after the drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} is still there",
                path.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
