//! `k3s.apply`: Kubernetes manifests (inline or local files) applied on a server with
//! `k3s kubectl apply --server-side -f -`, the manifests on stdin.

use crate::host::{KUBECONFIG, invalid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};

/// Input of `k3s.apply`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sApplyInput {
    /// A server.
    pub ssh: SshTargetInput,
    /// Inline manifests (YAML, `---`-separated documents allowed).
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Local manifest files (relative to the working directory).
    #[serde(default)]
    pub files: Vec<String>,
    /// The server-side apply field manager.
    #[serde(default)]
    pub field_manager: Option<String>,
}

/// Output of `k3s.apply`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sApplyOutput {
    /// `kind/name` of every object, in manifest order.
    pub objects: Vec<String>,
}

/// The `k3s.apply` kind.
pub struct K3sApply {
    pool: StepPool,
}

impl K3sApply {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

fn documents(cx: Option<&StepContext>, input: &K3sApplyInput) -> Result<String, StepError> {
    let mut docs: Vec<String> = input.manifests.clone();
    if let Some(cx) = cx {
        for f in &input.files {
            let p = cx.resolve_path(f);
            docs.push(std::fs::read_to_string(&p).map_err(|e| {
                StepError::permanent("SourceUnreadable", format!("read {}: {e}", p.display()))
            })?);
        }
    }
    Ok(docs.join("\n---\n"))
}

fn objects(text: &str) -> Result<Vec<Value>, StepError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| invalid(format!("manifests are not valid YAML: {e}")))?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            v if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                out.extend(v["items"].as_array().cloned().unwrap_or_default())
            }
            v => out.push(v),
        }
    }
    for o in &out {
        if o["kind"].as_str().is_none() || o["metadata"]["name"].as_str().is_none() {
            return Err(invalid("every manifest needs `kind` and `metadata.name`"));
        }
    }
    Ok(out)
}

fn name_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("").to_lowercase(),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Whether every field set in `want` has the same value in `have`.
fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| subset(a, b))
        }
        _ => want == have,
    }
}

impl Step for K3sApply {
    const KIND: &'static str = "k3s.apply";
    type Input = K3sApplyInput;
    type Output = K3sApplyOutput;

    fn description(&self) -> &'static str {
        "Apply Kubernetes manifests on a k3s server with server-side apply"
    }

    fn validate(&self, input: &K3sApplyInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.manifests.is_empty() && input.files.is_empty() {
            return Err(invalid("give `manifests` or `files`"));
        }
        if !input.manifests.is_empty() {
            objects(&documents(None, input)?)?;
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sApplyInput,
    ) -> Result<Observed<K3sApplyOutput>, StepError> {
        let objs = objects(&documents(Some(cx), input)?)?;
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        for o in &objs {
            let mut cmd = format!(
                "KUBECONFIG={} k3s kubectl get {} {} -o json",
                shell_quote(KUBECONFIG),
                shell_quote(o["kind"].as_str().unwrap_or("")),
                shell_quote(o["metadata"]["name"].as_str().unwrap_or(""))
            );
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                cmd.push_str(&format!(" -n {}", shell_quote(ns)));
            }
            let mut req = remote.request(cmd);
            req.quiet = true;
            let out = remote.exec(&req).await?;
            let live: Option<Value> = out
                .success()
                .then(|| serde_json::from_slice(&out.stdout).ok())
                .flatten();
            if !live.is_some_and(|l| subset(o, &l)) {
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!("{} is missing or differs", name_of(o))),
                });
            }
        }
        Ok(Observed::Satisfied(K3sApplyOutput {
            objects: objs.iter().map(name_of).collect(),
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sApplyInput,
    ) -> Result<Progress<K3sApplyOutput>, StepError> {
        let text = documents(Some(cx), input)?;
        let objs = objects(&text)?;
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let manager = input.field_manager.as_deref().unwrap_or("siteflow");
        let req = remote
            .request(format!(
                "KUBECONFIG={} k3s kubectl apply --server-side --field-manager={} -f -",
                shell_quote(KUBECONFIG),
                shell_quote(manager)
            ))
            .stdin(text.into_bytes());
        remote.exec(&req).await?.check(&remote.target)?;
        Ok(Progress::Done(K3sApplyOutput {
            objects: objs.iter().map(name_of).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_compares() {
        let o =
            objects("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\n")
                .unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(name_of(&o[0]), "configmap/a");
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "uid": "x"}, "data": {"k": "v"}});
        assert!(subset(&o[0], &live));
        assert!(!subset(&json!({"data": {"k": "w"}}), &live));
    }
}
