//! k3s's configuration: `config.yaml` plus `config.yaml.d/*.yaml` merged with k3s's rules, then
//! command-line flags, then `K3S_*` environment variables; and kube-apiserver arg merging.
//!
//! File merge (k3s `pkg/configfilearg`): files are read in order (config.yaml, then the
//! drop-ins sorted by name); a later value for a key replaces the earlier one, unless the key
//! ends in `+`, which appends to the accumulated value (lists are concatenated). Command-line
//! flags come after the files: list flags append, scalar flags override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// Flags that can be given many times (string slices in k3s).
const LIST_FLAGS: &[&str] = &[
    "node-label",
    "node-taint",
    "tls-san",
    "kube-apiserver-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kube-cloud-controller-manager-arg",
    "kubelet-arg",
    "kube-proxy-arg",
    "etcd-arg",
    "disable",
    "node-ip",
    "node-external-ip",
];

/// One option value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Opt {
    One(String),
    Many(Vec<String>),
}

impl Opt {
    fn into_list(self) -> Vec<String> {
        match self {
            Opt::One(s) => vec![s],
            Opt::Many(v) => v,
        }
    }
}

/// The effective options of a `k3s server` / `k3s agent` run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Options {
    pub values: BTreeMap<String, Opt>,
    /// Config files read, in order.
    pub files: Vec<PathBuf>,
}

impl Options {
    /// A scalar option (the last value of a list).
    pub fn get(&self, key: &str) -> Option<String> {
        match self.values.get(key)? {
            Opt::One(s) => Some(s.clone()),
            Opt::Many(v) => v.last().cloned(),
        }
    }

    /// A list option (empty if unset).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.values
            .get(key)
            .cloned()
            .map(Opt::into_list)
            .unwrap_or_default()
    }

    /// A boolean flag.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v == "true")
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn to_opt(v: &Value) -> Opt {
    match v {
        Value::Array(items) => Opt::Many(items.iter().map(scalar).collect()),
        other => Opt::One(scalar(other)),
    }
}

/// The files k3s reads for `config`: the file itself (if present), then `<config>.d/*.yaml`
/// (and `*.yml`) in lexical order.
pub fn config_files(config: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if config.exists() {
        files.push(config.to_owned());
    }
    let mut dropins_dir = config.as_os_str().to_owned();
    dropins_dir.push(".d");
    if let Ok(rd) = std::fs::read_dir(PathBuf::from(dropins_dir)) {
        let mut dropins: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
            })
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    files
}

/// Merges config files with k3s's rules into (ordered keys, values).
pub fn merge_files(files: &[PathBuf]) -> Result<BTreeMap<String, Opt>> {
    let mut values: BTreeMap<String, Opt> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read config file {}", file.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let doc: Value = serde_saphyr::from_str(&text)
            .with_context(|| format!("failed to parse config file {}", file.display()))?;
        let Value::Object(map) = doc else {
            if doc.is_null() {
                continue;
            }
            bail!("config file {} is not a YAML mapping", file.display());
        };
        for (key, v) in map {
            let (key, append) = match key.strip_suffix('+') {
                Some(k) => (k.to_owned(), true),
                None => (key, false),
            };
            let new = to_opt(&v);
            let merged = match (values.remove(&key), append) {
                (Some(old), true) => match (old, new) {
                    (Opt::One(a), Opt::One(b)) if !LIST_FLAGS.contains(&key.as_str()) => {
                        Opt::One(if a.is_empty() { b } else { format!("{a},{b}") })
                    }
                    (old, new) => {
                        let mut all = old.into_list();
                        all.extend(new.into_list());
                        Opt::Many(all)
                    }
                },
                (_, _) => new,
            };
            values.insert(key, merged);
        }
    }
    Ok(values)
}

/// Loads the options of `k3s <command> <args>`: config files, flags, then environment.
pub fn load(args: &[String]) -> Result<Options> {
    let flags = parse_flags(args)?;
    let config = flags
        .iter()
        .rev()
        .find(|(k, _)| k == "config" || k == "c")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("K3S_CONFIG_FILE").ok())
        .unwrap_or_else(|| DEFAULT_CONFIG.to_owned());
    let files = config_files(Path::new(&config));
    let mut values = merge_files(&files)?;
    for (key, value) in flags {
        if key == "config" || key == "c" {
            continue;
        }
        if LIST_FLAGS.contains(&key.as_str()) {
            let mut all = values.remove(&key).map(Opt::into_list).unwrap_or_default();
            all.push(value);
            values.insert(key, Opt::Many(all));
        } else {
            values.insert(key, Opt::One(value));
        }
    }
    for (key, env) in [
        ("token", "K3S_TOKEN"),
        ("token-file", "K3S_TOKEN_FILE"),
        ("server", "K3S_URL"),
        ("node-name", "K3S_NODE_NAME"),
        ("write-kubeconfig-mode", "K3S_KUBECONFIG_MODE"),
        ("write-kubeconfig", "K3S_KUBECONFIG_OUTPUT"),
        ("agent-token", "K3S_AGENT_TOKEN"),
        ("data-dir", "K3S_DATA_DIR"),
    ] {
        if !values.contains_key(key)
            && let Ok(v) = std::env::var(env)
            && !v.is_empty()
        {
            values.insert(key.to_owned(), Opt::One(v));
        }
    }
    Ok(Options { values, files })
}

/// `--key=value`, `--key value` and bare `--flag` (= `true`) pairs, in order.
fn parse_flags(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            bail!("unexpected argument {arg:?}");
        };
        if let Some((k, v)) = name.split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        } else if i + 1 < args.len() && !args[i + 1].starts_with('-') {
            out.push((name.to_owned(), args[i + 1].clone()));
            i += 1;
        } else {
            out.push((name.to_owned(), "true".to_owned()));
        }
        i += 1;
    }
    Ok(out)
}

/// k3s's defaults for kube-apiserver flags the simulator reports.
pub fn apiserver_defaults(advertise: &str) -> Vec<(String, String)> {
    vec![
        ("advertise-address".into(), advertise.into()),
        ("secure-port".into(), "6444".into()),
        (
            "service-account-issuer".into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ),
        (
            "api-audiences".into(),
            "https://kubernetes.default.svc.cluster.local,k3s".into(),
        ),
        ("service-cluster-ip-range".into(), "10.43.0.0/16".into()),
        ("authorization-mode".into(), "Node,RBAC".into()),
    ]
}

/// k3s's `GetArgs`: merges `key=value` extra args into defaults. `key=v` replaces the default
/// (repeats accumulate), `key+=v` appends to the default, `key-=v` prepends to it.
/// Returns each flag with all its values, in first-seen order.
pub fn merge_component_args(
    defaults: Vec<(String, String)>,
    extra: &[String],
) -> Vec<(String, Vec<String>)> {
    let mut initial: BTreeMap<String, String> = defaults.iter().cloned().collect();
    let mut order: Vec<String> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let mut multi: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for raw in extra {
        let raw = raw.trim_start_matches("--");
        let (arg, value) = raw.split_once('=').unwrap_or((raw, "true"));
        let clean = arg.trim_end_matches(['+', '-']).to_owned();
        let init = initial.remove(&clean);
        let existing = multi.remove(&clean).unwrap_or_default();
        let mut values = Vec::new();
        if arg.ends_with('+') {
            values.extend(init);
            values.extend(existing);
            values.push(value.to_owned());
        } else if arg.ends_with('-') {
            values.push(value.to_owned());
            values.extend(init);
            values.extend(existing);
        } else {
            values.extend(existing);
            values.push(value.to_owned());
        }
        if !order.contains(&clean) {
            order.push(clean.clone());
        }
        multi.insert(clean, values);
    }
    order
        .into_iter()
        .map(|k| {
            let v = multi
                .remove(&k)
                .or_else(|| initial.remove(&k).map(|v| vec![v]))
                .unwrap_or_default();
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropins_replace_unless_plus_appends() {
        let dir = std::env::temp_dir().join(format!("k3s-sim-cfg-{}", std::process::id()));
        let d = dir.join("config.yaml.d");
        std::fs::create_dir_all(&d).unwrap();
        let main = dir.join("config.yaml");
        std::fs::write(
            &main,
            "token: boop\nnode-label:\n  - foo=bar\nkube-apiserver-arg:\n  - a=1\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.yaml"),
            "write-kubeconfig-mode: \"600\"\nnode-taint:\n  - alice=bob:NoExecute\n",
        )
        .unwrap();
        std::fs::write(d.join("20-b.yaml"), "write-kubeconfig-mode: \"777\"\nnode-label:\n  - other=what\nnode-taint+:\n  - charlie=delta:NoSchedule\nkube-apiserver-arg+:\n  - b=2\n").unwrap();
        std::fs::write(d.join("30-ignored.txt"), "token: nope\n").unwrap();
        let files = config_files(&main);
        assert_eq!(files.len(), 3);
        let v = merge_files(&files).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(v["token"], Opt::One("boop".into()));
        assert_eq!(v["write-kubeconfig-mode"], Opt::One("777".into()));
        assert_eq!(v["node-label"], Opt::Many(vec!["other=what".into()]));
        assert_eq!(
            v["node-taint"],
            Opt::Many(vec![
                "alice=bob:NoExecute".into(),
                "charlie=delta:NoSchedule".into()
            ])
        );
        assert_eq!(
            v["kube-apiserver-arg"],
            Opt::Many(vec!["a=1".into(), "b=2".into()])
        );
    }

    #[test]
    fn component_args_replace_append_prepend() {
        let d = || vec![("service-account-issuer".to_owned(), "default".to_owned())];
        let get = |r: Vec<(String, Vec<String>)>| {
            r.into_iter()
                .find(|(k, _)| k == "service-account-issuer")
                .unwrap()
                .1
        };
        assert_eq!(
            get(merge_component_args(
                d(),
                &["service-account-issuer=x".into()]
            )),
            ["x"]
        );
        assert_eq!(
            get(merge_component_args(
                d(),
                &["service-account-issuer+=x".into()]
            )),
            ["default", "x"]
        );
        assert_eq!(
            get(merge_component_args(
                d(),
                &["service-account-issuer-=x".into()]
            )),
            ["x", "default"]
        );
        assert_eq!(
            get(merge_component_args(
                d(),
                &[
                    "service-account-issuer=x".into(),
                    "service-account-issuer=y".into()
                ]
            )),
            ["x", "y"]
        );
    }
}
