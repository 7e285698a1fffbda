//! Flux's source and kustomize controllers, as `flux.bootstrap` installs them: while the
//! `flux-system` namespace has the `source-controller` and `kustomize-controller` Deployments,
//! a `GitRepository` is fetched with `git` (https, with the username/password and `ca.crt`
//! of its `secretRef`) when its spec changes and every `interval`, and a `Kustomization` applies
//! the manifests under its `path` at the source's revision, reporting `Ready` and
//! `lastAppliedRevision` only after it did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::sim::arc::{collect_manifests, git_env};
use crate::sim::server::Server;
use crate::sim::state::{now, rfc3339};

const DIR: &str = "/var/lib/rancher/k3s/server/sim/flux-controllers";

/// What the controllers remember between passes.
#[derive(Default)]
pub struct Controllers {
    /// GitRepository key → (spec it was fetched with, when).
    fetched: HashMap<String, (Value, Instant)>,
}

fn ready(revision: &str, message: &str, ok: bool) -> Value {
    json!({
        "type": "Ready",
        "status": if ok { "True" } else { "False" },
        "reason": if ok { "Succeeded" } else { "Failed" },
        "message": message,
        "lastTransitionTime": rfc3339(now()),
        "observedRevision": revision,
    })
}

fn installed(server: &Server) -> bool {
    ["source-controller", "kustomize-controller"]
        .iter()
        .all(|d| {
            server
                .object(&format!("Deployment/flux-system/{d}"))
                .is_some()
        })
}

impl Controllers {
    /// One pass of both controllers.
    pub fn reconcile(&mut self, server: &Server) {
        if !installed(server) {
            return;
        }
        for (key, repo) in server.objects_of_kind("GitRepository") {
            let spec = repo.get("spec").cloned().unwrap_or(Value::Null);
            let interval = spec["interval"]
                .as_str()
                .and_then(crate::sim::server::parse_duration)
                .unwrap_or(60)
                .max(1);
            let due = match self.fetched.get(&key) {
                Some((s, at)) => *s != spec || at.elapsed() >= Duration::from_secs(interval),
                None => true,
            };
            if !due && repo.pointer("/status/artifact/revision").is_some() {
                continue;
            }
            let status = match fetch(server, &repo) {
                Ok(revision) => json!({
                    "artifact": {"revision": revision, "lastUpdateTime": rfc3339(now())},
                    "conditions": [ready(&revision, &format!("stored artifact for revision '{revision}'"), true)],
                }),
                Err(e) => json!({"conditions": [ready("", &format!("{e:#}"), false)]}),
            };
            server.set_status(&key, status);
            self.fetched.insert(key, (spec, Instant::now()));
        }
        for (key, ks) in server.objects_of_kind("Kustomization") {
            if ks["apiVersion"]
                .as_str()
                .is_none_or(|v| !v.starts_with("kustomize.toolkit.fluxcd.io/"))
            {
                continue;
            }
            let ns = ks
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("flux-system");
            let src_name = ks
                .pointer("/spec/sourceRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let src_key = format!("GitRepository/{ns}/{src_name}");
            let Some(revision) = server
                .object(&src_key)
                .and_then(|s| s.pointer("/status/artifact/revision").cloned())
                .and_then(|r| r.as_str().map(str::to_string))
            else {
                server.set_status(
                    &key,
                    json!({"conditions": [ready("", &format!("source '{src_key}' is not ready"), false)]}),
                );
                continue;
            };
            if ks
                .pointer("/status/lastAppliedRevision")
                .and_then(Value::as_str)
                == Some(revision.as_str())
            {
                continue;
            }
            let path = ks
                .pointer("/spec/path")
                .and_then(Value::as_str)
                .unwrap_or("./");
            let status = match apply(server, &checkout(ns, src_name), path) {
                Ok(n) => json!({
                    "lastAppliedRevision": revision,
                    "lastAttemptedRevision": revision,
                    "conditions": [ready(&revision, &format!("Applied revision: {revision} ({n} objects)"), true)],
                }),
                Err(e) => json!({
                    "lastAttemptedRevision": revision,
                    "conditions": [ready(&revision, &format!("{e:#}"), false)],
                }),
            };
            server.set_status(&key, status);
        }
    }
}

fn checkout(ns: &str, name: &str) -> PathBuf {
    Path::new(DIR).join(format!("{ns}-{name}"))
}

/// Fetches a GitRepository; returns `branch@sha1:<sha>`.
fn fetch(server: &Server, repo: &Value) -> Result<String> {
    let ns = repo
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("flux-system");
    let name = repo
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let url = repo
        .pointer("/spec/url")
        .and_then(Value::as_str)
        .context("spec.url is missing")?;
    if !["https://", "http://", "git://", "ssh://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        bail!("the simulator's source-controller fetches https, http, ssh and git URLs, not {url}");
    }
    let branch = repo
        .pointer("/spec/ref/branch")
        .and_then(Value::as_str)
        .unwrap_or("master");
    let mut basic = None;
    let mut ca_file = None;
    let mut ssh = None;
    if let Some(secret) = repo.pointer("/spec/secretRef/name").and_then(Value::as_str) {
        let s = server
            .object(&format!("Secret/{ns}/{secret}"))
            .with_context(|| format!("secret '{ns}/{secret}' not found"))?;
        let field = |k: &str| -> Option<String> {
            let v = s.get("data")?.get(k)?.as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
            String::from_utf8(bytes).ok()
        };
        if let Some(password) = field("password") {
            basic = Some((field("username").unwrap_or_else(|| "git".into()), password));
        }
        if let Some(ca) = field("ca.crt") {
            std::fs::create_dir_all(DIR)?;
            let path = Path::new(DIR).join(format!("{ns}-{name}-ca.crt"));
            std::fs::write(&path, ca)?;
            ca_file = Some(path);
        }
        // Like source-controller: an ssh URL takes `identity` and `known_hosts`.
        if url.starts_with("ssh://") {
            let identity = field("identity")
                .with_context(|| format!("secret '{ns}/{secret}' has no `identity`"))?;
            let known = field("known_hosts")
                .with_context(|| format!("secret '{ns}/{secret}' has no `known_hosts`"))?;
            ssh = Some(ssh_files(ns, name, &identity, &known)?);
        }
    }
    if url.starts_with("ssh://") && ssh.is_none() {
        bail!("an ssh URL needs spec.secretRef with `identity` and `known_hosts`");
    }
    let mut env = git_env(
        basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        ca_file.as_deref(),
    );
    if let Some((key, known)) = ssh {
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                key.display(),
                known.display()
            ),
        ));
    }
    let sha = crate::sim::arc::fetch(&env, url, branch, &checkout(ns, name))?;
    Ok(format!("{branch}@sha1:{sha}"))
}

/// The Secret's deploy key (0600) and known_hosts as files for ssh.
fn ssh_files(
    ns: &str,
    name: &str,
    identity: &str,
    known_hosts: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(DIR)?;
    let key = Path::new(DIR).join(format!("{ns}-{name}-identity"));
    let known = Path::new(DIR).join(format!("{ns}-{name}-known_hosts"));
    let _ = std::fs::remove_file(&key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)?;
    f.write_all(identity.as_bytes())?;
    if !identity.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    std::fs::write(&known, known_hosts)?;
    Ok((key, known))
}

fn apply(server: &Server, checkout: &Path, path: &str) -> Result<usize> {
    let root = checkout.join(path.trim_start_matches("./"));
    if !root.is_dir() {
        bail!("kustomization path not found: {path}");
    }
    let mut objects = Vec::new();
    collect_manifests(&root, &mut objects)?;
    let n = objects.len();
    server.apply_objects(objects);
    Ok(n)
}
