//! The server's controllers: k3s's deploy controller (every manifest under
//! `<data-dir>/server/manifests` is applied, and re-applied when it changes) and the helm
//! controller (a `helm.cattle.io/v1` `HelmChart` is "installed": its values are merged from
//! `valuesContent` and `valuesSecrets`, and the Arc agents chart starts the Arc agent), and
//! Flux's source and kustomize controllers once `flux.bootstrap` installed them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest;

use crate::sim::server::Server;

/// How often the controllers look for changes.
const RESYNC: Duration = Duration::from_millis(500);

/// Runs the controllers until the process ends.
pub fn run(server: Arc<Server>, manifests: PathBuf) {
    let mut seen: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut agents: HashMap<String, (String, Arc<AtomicBool>)> = HashMap::new();
    let mut flux = crate::sim::flux::Controllers::default();
    loop {
        if let Err(e) = deploy(&server, &manifests, &mut seen) {
            eprintln!("level=error msg=\"deploy controller: {e:#}\"");
        }
        helm(&server, &mut agents);
        flux.reconcile(&server);
        std::thread::sleep(RESYNC);
    }
}

fn deploy(server: &Server, dir: &Path, seen: &mut HashMap<PathBuf, Vec<u8>>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        })
        .collect();
    files.sort();
    for file in files {
        let bytes = std::fs::read(&file)?;
        if seen.get(&file) == Some(&bytes) {
            continue;
        }
        let objects = crate::sim::kubectl::parse_manifests(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("{}", file.display()))?;
        server.apply_objects(objects);
        eprintln!("level=info msg=\"applied manifest {}\"", file.display());
        seen.insert(file, bytes);
    }
    Ok(())
}

/// Deep-merges `over` into `base` (objects merge, everything else replaces), as helm does.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn yaml_values(text: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let v: Value = serde_saphyr::from_str(text).context("values are not YAML")?;
    Ok(if v.is_null() { json!({}) } else { v })
}

/// The chart's values: `valuesContent`, then each `valuesSecrets` entry's keys in order.
fn chart_values(server: &Server, chart: &Value) -> Result<Value> {
    let mut values = yaml_values(
        chart
            .pointer("/spec/valuesContent")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )?;
    let ns = chart
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("kube-system");
    for s in chart
        .pointer("/spec/valuesSecrets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        let secret = server
            .object(&format!("Secret/{ns}/{name}"))
            .with_context(|| format!("values secret {ns}/{name} not found"))?;
        for k in s
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let k = k.as_str().unwrap_or_default();
            let text = match (
                secret.pointer(&format!("/data/{k}")),
                secret.pointer(&format!("/stringData/{k}")),
            ) {
                (Some(Value::String(b64)), _) => String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .context("secret data is not base64")?,
                )?,
                (_, Some(Value::String(plain))) => plain.clone(),
                _ => anyhow::bail!("values secret {ns}/{name} has no key {k}"),
            };
            merge(&mut values, yaml_values(&text)?);
        }
    }
    Ok(values)
}

fn helm(server: &Arc<Server>, agents: &mut HashMap<String, (String, Arc<AtomicBool>)>) {
    let charts: Vec<(String, Value)> = server.objects_of_kind("HelmChart");
    let mut live = Vec::new();
    for (key, chart) in charts {
        live.push(key.clone());
        let (status, values) = match chart_values(server, &chart) {
            Ok(v) => (
                json!({"jobName": format!("helm-install-{}", chart["metadata"]["name"].as_str().unwrap_or("")), "installed": true}),
                Some(v),
            ),
            Err(e) => (json!({"installed": false, "error": format!("{e:#}")}), None),
        };
        server.set_status(&key, status);
        let Some(values) = values else { continue };
        let is_arc = chart
            .pointer("/spec/chart")
            .and_then(Value::as_str)
            .is_some_and(|c| {
                c.contains("azure-arc-k8sagents") || c.contains("aks-extension-manager")
            });
        if !is_arc {
            continue;
        }
        let hash = hex::encode(sha2::Sha256::digest(values.to_string()));
        if agents.get(&key).is_some_and(|(h, _)| *h == hash) {
            continue;
        }
        if let Some((_, stop)) = agents.remove(&key) {
            stop.store(true, Ordering::SeqCst);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, flag) = (Arc::clone(server), Arc::clone(&stop));
        std::thread::spawn(move || crate::sim::arc::agent(srv, values, flag));
        agents.insert(key, (hash, stop));
    }
    agents.retain(|k, (_, stop)| {
        let keep = live.contains(k);
        if !keep {
            stop.store(true, Ordering::SeqCst);
        }
        keep
    });
}
