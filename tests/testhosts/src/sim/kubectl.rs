//! `k3s kubectl` (and `kubectl` through the symlink): the subset siteflow uses, talking to the
//! server named in the kubeconfig with its bearer token.

use std::io::Read;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::sim::http::call;

struct Client {
    server: String,
    token: String,
}

fn client(kubeconfig: Option<String>) -> Result<Client> {
    let path = kubeconfig
        .or_else(|| std::env::var("KUBECONFIG").ok().filter(|k| !k.is_empty()))
        .unwrap_or_else(|| crate::sim::server::KUBECONFIG.to_owned());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "error loading config file \"{path}\": open {path}: {}",
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
                _ => e.to_string(),
            }
        )
    })?;
    let cfg: Value = serde_saphyr::from_str(&text).context("invalid kubeconfig")?;
    let server = cfg
        .pointer("/clusters/0/cluster/server")
        .and_then(Value::as_str)
        .context("kubeconfig has no server")?
        .to_owned();
    let token = cfg
        .pointer("/users/0/user/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok(Client { server, token })
}

impl Client {
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, bytes) = call(
            &self.server,
            method,
            path,
            Some(format!("Bearer {}", self.token)),
            body,
        )
        .map_err(|e| anyhow::anyhow!("The connection to the server {} was refused - did you specify the right host or port? ({e:#})", self.server))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            if status == 401 {
                bail!("error: You must be logged in to the server (Unauthorized)");
            }
            bail!(
                "Error from server ({}): {}",
                v["reason"].as_str().unwrap_or("Error"),
                v["message"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }
}

/// Runs `kubectl <args>`; returns the exit code.
pub fn main(args: &[String]) -> Result<i32> {
    let mut kubeconfig = None;
    let mut namespace = "default".to_owned();
    let mut output = None;
    let mut files = Vec::new();
    let mut duration = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with('-') => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value =
            |inline: Option<String>| inline.or_else(|| it.next().cloned()).unwrap_or_default();
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(value(inline)),
            "-n" | "--namespace" => namespace = value(inline),
            "-o" | "--output" => output = Some(value(inline)),
            "-f" | "--filename" => files.push(value(inline)),
            "--duration" => duration = Some(value(inline)),
            "--server-side" | "--force-conflicts" => {}
            "--field-manager" => {
                value(inline);
            }
            f if f.starts_with('-') => {}
            _ => positional.push(a.clone()),
        }
    }
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version", ..] => {
            let v = crate::sim::version::version();
            println!("Client Version: {v}\nKustomize Version: v5.4.2");
            if let Ok(c) = client(kubeconfig)
                && let Ok(sv) = c.send("GET", "/version", None)
            {
                println!(
                    "Server Version: {}",
                    sv["gitVersion"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        ["drain", name] => {
            let c = client(kubeconfig)?;
            c.send("POST", &format!("/sim/nodes/{name}/drain"), None)?;
            println!("node/{name} cordoned\nnode/{name} drained");
            Ok(0)
        }
        ["delete", "node" | "nodes" | "no", names @ ..] if !names.is_empty() => {
            let c = client(kubeconfig)?;
            for name in names {
                c.send("DELETE", &format!("/api/v1/nodes/{name}"), None)?;
                println!("node \"{name}\" deleted");
            }
            Ok(0)
        }
        ["get", "nodes" | "node" | "no", rest @ ..] => {
            let c = client(kubeconfig)?;
            let list = c.send("GET", "/api/v1/nodes", None)?;
            let items: Vec<Value> = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| {
                    rest.is_empty() || rest.contains(&n["metadata"]["name"].as_str().unwrap_or(""))
                })
                .collect();
            if let [name] = rest
                && items.is_empty()
            {
                bail!("Error from server (NotFound): nodes \"{name}\" not found");
            }
            match output.as_deref() {
                Some("json") if rest.len() == 1 => {
                    println!("{}", serde_json::to_string_pretty(&items[0])?)
                }
                Some("json") => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
                    )?
                ),
                Some("name") => items.iter().for_each(|n| {
                    println!("node/{}", n["metadata"]["name"].as_str().unwrap_or(""))
                }),
                _ => {
                    println!("NAME\tSTATUS\tROLES\tAGE\tVERSION");
                    for n in &items {
                        let ready = n
                            .pointer("/status/conditions/0/status")
                            .and_then(Value::as_str)
                            == Some("True");
                        let labels = n["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        let roles: Vec<&str> = labels
                            .keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .collect();
                        println!(
                            "{}\t{}\t{}\t1m\t{}",
                            n["metadata"]["name"].as_str().unwrap_or(""),
                            if ready { "Ready" } else { "NotReady" },
                            if roles.is_empty() {
                                "<none>".to_owned()
                            } else {
                                roles.join(",")
                            },
                            n.pointer("/status/nodeInfo/kubeletVersion")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        );
                    }
                }
            }
            Ok(0)
        }
        ["get", kind, rest @ ..] => {
            let c = client(kubeconfig)?;
            let list = c.send("GET", "/sim/objects", None)?;
            let kind_l = kind.to_lowercase();
            let items: Vec<Value> = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| {
                    let k = o["kind"].as_str().unwrap_or("").to_lowercase();
                    (k == kind_l || format!("{k}s") == kind_l || kind_l.starts_with(&k))
                        && (crate::sim::state::cluster_scoped(o["kind"].as_str().unwrap_or(""))
                            || o["metadata"]["namespace"] == json!(namespace))
                        && (rest.is_empty()
                            || rest.contains(&o["metadata"]["name"].as_str().unwrap_or("")))
                })
                .collect();
            if items.is_empty() && !rest.is_empty() {
                bail!(
                    "Error from server (NotFound): {kind} \"{}\" not found",
                    rest[0]
                );
            }
            if rest.len() == 1 && output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&items[0])?);
            } else if output.as_deref() == Some("json") {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"apiVersion": "v1", "kind": "List", "items": items})
                    )?
                );
            } else {
                println!("NAME");
                items
                    .iter()
                    .for_each(|o| println!("{}", o["metadata"]["name"].as_str().unwrap_or("")));
            }
            Ok(0)
        }
        ["apply"] => {
            if files.is_empty() {
                bail!("error: must specify one of -f and -k");
            }
            let mut objects = Vec::new();
            for f in &files {
                let text = if f == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                } else {
                    std::fs::read_to_string(f)
                        .with_context(|| format!("error: the path \"{f}\" does not exist"))?
                };
                objects.extend(parse_manifests(&text)?);
            }
            for o in objects.iter_mut() {
                if o.pointer("/metadata/namespace").is_none()
                    && !crate::sim::state::cluster_scoped(o["kind"].as_str().unwrap_or(""))
                {
                    o["metadata"]["namespace"] = json!(namespace);
                }
            }
            let c = client(kubeconfig)?;
            let results = c.send("POST", "/sim/apply", Some(&Value::Array(objects)))?;
            for r in results.as_array().cloned().unwrap_or_default() {
                println!(
                    "{}/{} {}",
                    r["kind"].as_str().unwrap_or("").to_lowercase(),
                    r["name"].as_str().unwrap_or(""),
                    r["action"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        ["create", "token", sa] => {
            let c = client(kubeconfig)?;
            let mut spec = json!({});
            if let Some(d) = &duration {
                let secs = crate::sim::server::parse_duration(d).context("invalid --duration")?;
                spec["expirationSeconds"] = json!(secs);
            }
            let resp = c.send(
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
                Some(&json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": spec})),
            )?;
            println!("{}", resp["status"]["token"].as_str().unwrap_or(""));
            Ok(0)
        }
        other => bail!("error: the simulator's kubectl does not support {other:?}"),
    }
}

/// Objects in a YAML or JSON manifest stream (`---`-separated documents; `List`s expanded).
pub fn parse_manifests(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = if text.trim_start().starts_with(['{', '[']) {
        vec![serde_json::from_str(text).context("error: invalid JSON")?]
    } else {
        serde_saphyr::from_multiple(text).context("error: error parsing YAML")?
    };
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Array(items) => out.extend(items),
            v if v["kind"].as_str().is_some_and(|k| k.ends_with("List"))
                && v["items"].is_array() =>
            {
                out.extend(v["items"].as_array().cloned().unwrap_or_default())
            }
            v => out.push(v),
        }
    }
    Ok(out)
}
