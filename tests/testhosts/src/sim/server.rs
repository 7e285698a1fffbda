//! `k3s server`: writes the node token and kubeconfig, records the kube-apiserver args, keeps
//! the datastore and serves the join and (small) Kubernetes API on port 6443 (plain HTTP).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest;

use crate::sim::config::{self, Options};
use crate::sim::http::{Request, Response};
use crate::sim::state::{NodeRecord, State, now};
use crate::sim::token::{self, Token};

/// Default data dir.
pub const DATA_DIR: &str = "/var/lib/rancher/k3s";
/// Default kubeconfig.
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

pub struct Server {
    dir: PathBuf,
    ca_pem: String,
    ca_hash: String,
    secret: String,
    agent_secret: Option<String>,
    admin_token: String,
    apiserver_args: Vec<(String, Vec<String>)>,
    state: Mutex<State>,
}

/// Runs `k3s server <args>` until killed.
pub fn run(args: &[String]) -> Result<()> {
    let opts = config::load(args)?;
    let data_dir = PathBuf::from(opts.get("data-dir").unwrap_or_else(|| DATA_DIR.into()));
    let dir = data_dir.join("server");
    std::fs::create_dir_all(dir.join("tls"))?;
    std::fs::create_dir_all(dir.join("cred"))?;

    let ca_pem = crate::sim::tls::ensure_ca(&dir.join("tls"))?;
    let ca_hash = hex::encode(sha2::Sha256::digest(ca_pem.as_bytes()));

    // The token: given, or kept from an earlier start, or generated.
    let token_path = dir.join("token");
    let stored = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| Token::parse(&t).secret);
    let secret = match (token::from_options(&opts)?, stored) {
        (Some(given), Some(stored)) => {
            let given = Token::parse(&given);
            if given.secret != stored {
                bail!(
                    "starting kubernetes: preparing server: bootstrap data already found and encrypted with different token"
                );
            }
            if given.ca_hash.as_ref().is_some_and(|h| *h != ca_hash) {
                bail!("token CA hash does not match the cluster CA certificate hash");
            }
            stored
        }
        (Some(given), None) => Token::parse(&given).secret,
        (None, Some(stored)) => stored,
        (None, None) => token::random_hex(16),
    };
    let full = Token::format(&ca_hash, "server", &secret);
    write_secret(&token_path, &format!("{full}\n"))?;
    write_secret(&dir.join("node-token"), &format!("{full}\n"))?;
    let agent_secret = opts.get("agent-token").map(|t| Token::parse(&t).secret);
    if let Some(a) = &agent_secret {
        write_secret(
            &dir.join("agent-token"),
            &format!("{}\n", Token::format(&ca_hash, "node", a)),
        )?;
    }

    let admin_path = dir.join("cred/admin-token");
    let admin_token = match std::fs::read_to_string(&admin_path) {
        Ok(t) => t.trim().to_owned(),
        Err(_) => {
            let t = token::random_hex(24);
            write_secret(&admin_path, &t)?;
            t
        }
    };
    let port: u16 = opts
        .get("https-listen-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(6443);
    let node_ip = opts
        .get("node-ip")
        .or_else(|| opts.get("advertise-address"))
        .unwrap_or_else(primary_ip);
    let apiserver_args = config::merge_component_args(
        config::apiserver_defaults(&node_ip),
        &opts.list("kube-apiserver-arg"),
    );
    write_kubeconfig(&opts, &ca_pem, &admin_token, port)?;
    record(&dir, &opts, &apiserver_args)?;

    let mut state = State::load(&dir)?;
    if !opts.flag("disable-agent") {
        let node = own_node(&opts, &node_ip);
        state.nodes.insert(node.name.clone(), node);
    }
    state.save(&dir)?;

    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("listen tcp 0.0.0.0:{port}: address already in use?"))?;
    let tls = {
        let mut ips: Vec<std::net::IpAddr> = local_ips();
        ips.extend(node_ip.parse::<std::net::IpAddr>().ok());
        let mut names = Vec::new();
        for san in opts.list("tls-san") {
            match san.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(san),
            }
        }
        crate::sim::tls::server_config(&dir.join("tls"), &ips, &names)?
    };
    let server = Arc::new(Server {
        dir,
        ca_pem,
        ca_hash,
        secret,
        agent_secret,
        admin_token,
        apiserver_args,
        state: Mutex::new(state),
    });
    {
        let server = server.clone();
        let manifests = data_dir.join("server/manifests");
        std::thread::spawn(move || crate::sim::addons::run(server, manifests));
    }
    eprintln!("level=info msg=\"k3s is up and running\"");
    crate::sim::notify_ready();
    let handler = {
        let server = server.clone();
        Arc::new(move |req: Request| server.handle(req))
    };
    crate::sim::http::serve(listener, handler, Some(tls));
    Ok(())
}

/// The IPv4 addresses of this host's interfaces (`hostname -I`).
fn local_ips() -> Vec<std::net::IpAddr> {
    std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_secret(path: &Path, content: &str) -> Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The host's first global IPv4 address (what k3s picks as node IP).
pub fn primary_ip() -> String {
    std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = s.lines().next()?.to_owned();
            let mut it = line.split_whitespace();
            it.position(|w| w == "inet")?;
            Some(it.next()?.split('/').next()?.to_owned())
        })
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// The node name k3s uses: `node-name`, else the host name.
pub fn node_name(opts: &Options) -> String {
    opts.get("node-name").unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into())
    })
}

/// Labels every node gets plus `node-label`s.
pub fn node_labels(opts: &Options, name: &str, server: bool) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("beta.kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("beta.kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/hostname".into(), name.to_owned()),
        ("node.kubernetes.io/instance-type".into(), "k3s".into()),
    ]);
    if server {
        labels.insert(
            "node-role.kubernetes.io/control-plane".into(),
            "true".into(),
        );
        labels.insert("node-role.kubernetes.io/master".into(), "true".into());
    }
    for l in opts.list("node-label") {
        let (k, v) = l.split_once('=').unwrap_or((&l, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    labels
}

fn own_node(opts: &Options, ip: &str) -> NodeRecord {
    let name = node_name(opts);
    NodeRecord {
        labels: node_labels(opts, &name, true),
        taints: opts.list("node-taint"),
        internal_ip: ip.to_owned(),
        hostname: name.clone(),
        created: now(),
        last_heartbeat: now(),
        version: crate::sim::version::version(),
        is_server: true,
        unschedulable: false,
        drained_at: None,
        name,
    }
}

fn write_kubeconfig(opts: &Options, ca_pem: &str, admin_token: &str, port: u16) -> Result<()> {
    let path = opts
        .get("write-kubeconfig")
        .unwrap_or_else(|| KUBECONFIG.to_owned());
    let mode = opts
        .get("write-kubeconfig-mode")
        .map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8))
        .transpose()
        .context("write-kubeconfig-mode is not an octal mode")?
        .unwrap_or(0o600);
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://127.0.0.1:{port}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    token: {admin_token}\n"
    );
    if let Some(parent) = Path::new(&path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes what this start ran with: `<server>/sim/effective-config.json` and
/// `<server>/sim/kube-apiserver-args` (one `--flag=value` a line, as kube-apiserver got them).
fn record(dir: &Path, opts: &Options, apiserver: &[(String, Vec<String>)]) -> Result<()> {
    let sim = dir.join("sim");
    std::fs::create_dir_all(&sim)?;
    std::fs::write(
        sim.join("effective-config.json"),
        serde_json::to_vec_pretty(opts)?,
    )?;
    let mut lines = String::new();
    for (k, vs) in apiserver {
        for v in vs {
            lines.push_str(&format!("--{k}={v}\n"));
        }
    }
    std::fs::write(sim.join("kube-apiserver-args"), lines)?;
    Ok(())
}

impl Server {
    /// Server-side applies objects (those without a kind or name are skipped) and returns
    /// one result per object applied.
    pub fn apply_objects(&self, objects: Vec<Value>) -> Vec<Value> {
        let mut state = self.state.lock().expect("state");
        let results = objects
            .into_iter()
            .filter_map(|obj| state.upsert(obj))
            .collect();
        self.token_controller(&mut state);
        let _ = state.save(&self.dir);
        results
    }

    /// kube-controller-manager's token controller: a `kubernetes.io/service-account-token`
    /// Secret of an existing service account gets `token`, `ca.crt` and `namespace`.
    fn token_controller(&self, state: &mut State) {
        let key = hex::decode(&state.sa_key).unwrap_or_default();
        let kid = state.sa_key[..16.min(state.sa_key.len())].to_string();
        let pending: Vec<(String, String, String, String)> = state
            .objects
            .iter()
            .filter(|(k, v)| {
                k.starts_with("Secret/")
                    && v["type"] == "kubernetes.io/service-account-token"
                    && v.pointer("/data/token").is_none()
            })
            .filter_map(|(k, v)| {
                let ns = v.pointer("/metadata/namespace")?.as_str()?.to_string();
                let name = v.pointer("/metadata/name")?.as_str()?.to_string();
                let sa = v
                    .pointer("/metadata/annotations/kubernetes.io~1service-account.name")?
                    .as_str()?
                    .to_string();
                Some((k.clone(), ns, name, sa))
            })
            .collect();
        for (k, ns, name, sa) in pending {
            let Some(account) = state.objects.get(&format!("ServiceAccount/{ns}/{sa}")) else {
                continue;
            };
            let uid = account
                .pointer("/metadata/uid")
                .cloned()
                .unwrap_or(Value::Null);
            let claims = json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": ns,
                "kubernetes.io/serviceaccount/secret.name": name,
                "kubernetes.io/serviceaccount/service-account.name": sa,
                "kubernetes.io/serviceaccount/service-account.uid": uid,
                "sub": format!("system:serviceaccount:{ns}:{sa}"),
            });
            let token = crate::sim::jwt::sign(&key, &kid, &claims);
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            if let Some(secret) = state.objects.get_mut(&k) {
                secret["data"] = json!({
                    "token": b64(&token),
                    "ca.crt": b64(&self.ca_pem),
                    "namespace": b64(&ns),
                });
            }
        }
    }

    /// Creates or replaces one object.
    pub fn put_object(&self, obj: Value) {
        self.apply_objects(vec![obj]);
    }

    /// The object with this `Kind/namespace/name` key.
    pub fn object(&self, key: &str) -> Option<Value> {
        self.state.lock().expect("state").objects.get(key).cloned()
    }

    /// Every object of a kind, with its key.
    pub fn objects_of_kind(&self, kind: &str) -> Vec<(String, Value)> {
        let prefix = format!("{kind}/");
        self.state
            .lock()
            .expect("state")
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets an object's `status` (saved only when it changed).
    pub fn set_status(&self, key: &str, status: Value) {
        let mut state = self.state.lock().expect("state");
        let Some(obj) = state.objects.get_mut(key) else {
            return;
        };
        if obj.get("status") == Some(&status) {
            return;
        }
        obj["status"] = status;
        let _ = state.save(&self.dir);
    }

    /// How many nodes the cluster has.
    pub fn node_count(&self) -> usize {
        self.state.lock().expect("state").nodes.len()
    }

    fn handle(&self, req: Request) -> Response {
        let path = req.path.split('?').next().unwrap_or("").to_owned();
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/cacerts") => Response::text(200, &self.ca_pem),
            ("GET", "/ping") => Response::text(200, "pong"),
            ("POST", "/v1-k3s/sim/join") | ("POST", "/v1-k3s/sim/heartbeat") => {
                if !self.node_auth(&req) {
                    return Response::text(401, "Unauthorized");
                }
                self.join(&req)
            }
            _ => {
                let authorized = req
                    .bearer()
                    .is_some_and(|t| t == self.admin_token || self.service_account_admin(t));
                if !authorized {
                    return Response::status(401, "Unauthorized", "Unauthorized");
                }
                let ct = req.header("content-type").unwrap_or("").to_owned();
                if (req.method == "PATCH" || path.starts_with("/api/") || path.starts_with("/apis"))
                    && let Some(resp) = self.rest(&req.method, &path, &req.body, &ct)
                {
                    return resp;
                }
                self.api(&req.method, &path, &req.body)
            }
        }
    }

    /// Whether `token` is a service-account token this server signed for an account bound to
    /// `cluster-admin` (a token Secret's token only while the Secret exists).
    fn service_account_admin(&self, token: &str) -> bool {
        let state = self.state.lock().expect("state");
        let key = hex::decode(&state.sa_key).unwrap_or_default();
        let Some(claims) = crate::sim::jwt::verify(&key, token) else {
            return false;
        };
        let Some((ns, sa)) = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("system:serviceaccount:"))
            .and_then(|s| s.split_once(':'))
        else {
            return false;
        };
        if let Some(secret) = claims
            .get("kubernetes.io/serviceaccount/secret.name")
            .and_then(Value::as_str)
            && !state.objects.contains_key(&format!("Secret/{ns}/{secret}"))
        {
            return false;
        }
        state.objects.iter().any(|(k, b)| {
            k.starts_with("ClusterRoleBinding/")
                && b.pointer("/roleRef/name").and_then(Value::as_str) == Some("cluster-admin")
                && b.get("subjects")
                    .and_then(Value::as_array)
                    .is_some_and(|subs| {
                        subs.iter().any(|s| {
                            s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns
                        })
                    })
        })
    }

    /// The REST paths of the resources in [`crate::sim::resources`]: discovery, GET, list,
    /// server-side apply (PATCH `application/apply-patch+yaml`) and DELETE. `None`: not one
    /// of them.
    fn rest(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> Option<Response> {
        use crate::sim::resources;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["api"]) => {
                return Some(Response::json(
                    200,
                    &json!({"kind": "APIVersions", "versions": ["v1"]}),
                ));
            }
            ("GET", ["apis"]) => return Some(Response::json(200, &resources::group_list())),
            ("GET", ["api", v]) => {
                return resources::resource_list(v).map(|l| Response::json(200, &l));
            }
            ("GET", ["apis", g, v]) => {
                return resources::resource_list(&format!("{g}/{v}"))
                    .map(|l| Response::json(200, &l));
            }
            ("GET", ["api", "v1", "nodes"]) => return None,
            _ => {}
        }
        let (gv, ns, plural, name) = resources::parse_path(&segments)?;
        if plural == "nodes" {
            // Nodes are the kubelets' records, served by `api`.
            return None;
        }
        let (kind, namespaced) = resources::find(&gv, &plural)?;
        if namespaced != ns.is_some() && name.is_some() {
            return Some(Response::status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        let ns = ns.unwrap_or_default();
        let not_found = |name: &str| {
            Response::status(404, "NotFound", &format!("{plural} \"{name}\" not found"))
        };
        Some(match (method, name) {
            ("GET", Some(name)) => match self.object(&format!("{kind}/{ns}/{name}")) {
                Some(obj) => Response::json(200, &obj),
                None => not_found(&name),
            },
            ("GET", None) => {
                let items: Vec<Value> = self
                    .objects_of_kind(kind)
                    .into_iter()
                    .filter(|(k, _)| ns.is_empty() || k.starts_with(&format!("{kind}/{ns}/")))
                    .map(|(_, v)| v)
                    .collect();
                Response::json(
                    200,
                    &json!({"kind": format!("{kind}List"), "apiVersion": gv, "items": items, "metadata": {}}),
                )
            }
            ("PATCH", Some(name)) => {
                if !content_type.starts_with("application/apply-patch+yaml") {
                    return Some(Response::status(
                        415,
                        "UnsupportedMediaType",
                        &format!(
                            "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (got {content_type:?})"
                        ),
                    ));
                }
                let text = String::from_utf8_lossy(body);
                let mut obj: Value = match serde_saphyr::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Response::status(
                            400,
                            "BadRequest",
                            &format!("error decoding YAML: {e}"),
                        ));
                    }
                };
                if obj["kind"] != kind || obj["apiVersion"] != gv.as_str() {
                    return Some(Response::status(
                        400,
                        "BadRequest",
                        &format!(
                            "the object is {} {}, the path is for {gv} {kind}",
                            obj["apiVersion"], obj["kind"]
                        ),
                    ));
                }
                if obj.pointer("/metadata/name").and_then(Value::as_str) != Some(name.as_str()) {
                    return Some(Response::status(
                        400,
                        "BadRequest",
                        "the name of the object does not match the name on the URL",
                    ));
                }
                if namespaced {
                    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                        Some(n) if n != ns => {
                            return Some(Response::status(
                                400,
                                "BadRequest",
                                "the namespace of the object does not match the namespace on the URL",
                            ));
                        }
                        _ => obj["metadata"]["namespace"] = json!(ns),
                    }
                }
                self.apply_objects(vec![obj]);
                match self.object(&format!("{kind}/{ns}/{name}")) {
                    Some(o) => Response::json(200, &o),
                    None => not_found(&name),
                }
            }
            ("DELETE", Some(name)) => {
                let key = format!("{kind}/{ns}/{name}");
                let mut state = self.state.lock().expect("state");
                match state.objects.remove(&key) {
                    Some(_) => {
                        let _ = state.save(&self.dir);
                        Response::json(
                            200,
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        )
                    }
                    None => not_found(&name),
                }
            }
            _ => Response::status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not supported here"),
            ),
        })
    }

    fn node_auth(&self, req: &Request) -> bool {
        let Some((_user, password)) = req.basic_auth() else {
            return false;
        };
        password == self.secret || self.agent_secret.as_deref() == Some(password.as_str())
    }

    fn join(&self, req: &Request) -> Response {
        let Ok(info) = serde_json::from_slice::<NodeRecord>(&req.body) else {
            return Response::text(400, "bad node info");
        };
        let mut state = self.state.lock().expect("state");
        let created = state
            .nodes
            .get(&info.name)
            .map(|n| n.created)
            .unwrap_or(now());
        let (unschedulable, drained_at) = state
            .nodes
            .get(&info.name)
            .map(|n| (n.unschedulable, n.drained_at))
            .unwrap_or_default();
        let node = NodeRecord {
            created,
            last_heartbeat: now(),
            is_server: false,
            unschedulable,
            drained_at,
            ..info
        };
        state.nodes.insert(node.name.clone(), node);
        let _ = state.save(&self.dir);
        Response::json(200, &json!({"ok": true, "caHash": self.ca_hash}))
    }

    fn api(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["readyz"]) | ("GET", ["livez"]) | ("GET", ["healthz"]) => {
                Response::text(200, "ok")
            }
            ("GET", ["version"]) => {
                let v = crate::sim::version::version();
                let (major, minor) = crate::sim::version::major_minor(&v);
                Response::json(
                    200,
                    &json!({"major": major, "minor": minor, "gitVersion": v, "platform": "linux/amd64"}),
                )
            }
            ("GET", ["api", "v1", "nodes"]) => {
                let state = self.state.lock().expect("state");
                let items: Vec<Value> = state.nodes.values().map(NodeRecord::to_json).collect();
                Response::json(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}),
                )
            }
            ("DELETE", ["api", "v1", "nodes", name]) => {
                let mut state = self.state.lock().expect("state");
                match state.nodes.remove(*name) {
                    Some(_) => {
                        let _ = state.save(&self.dir);
                        Response::json(
                            200,
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        )
                    }
                    None => {
                        Response::status(404, "NotFound", &format!("nodes \"{name}\" not found"))
                    }
                }
            }
            ("POST", ["sim", "nodes", name, "drain"]) => {
                let mut state = self.state.lock().expect("state");
                match state.nodes.get_mut(*name) {
                    Some(n) => {
                        n.unschedulable = true;
                        n.drained_at = Some(now());
                        let _ = state.save(&self.dir);
                        Response::json(200, &json!({"drained": name}))
                    }
                    None => {
                        Response::status(404, "NotFound", &format!("nodes \"{name}\" not found"))
                    }
                }
            }
            ("GET", ["sim", "apiserver-args"]) => Response::json(200, &json!(self.apiserver_args)),
            ("GET", ["sim", "objects"]) => {
                let state = self.state.lock().expect("state");
                let items: Vec<Value> = state.objects.values().cloned().collect();
                Response::json(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "items": items}),
                )
            }
            ("POST", ["sim", "apply"]) => self.apply(body),
            (
                "POST",
                [
                    "api",
                    "v1",
                    "namespaces",
                    ns,
                    "serviceaccounts",
                    sa,
                    "token",
                ],
            ) => self.create_token(ns, sa, body),
            _ => Response::status(
                404,
                "NotFound",
                &format!("the server could not find the requested resource ({method} {path})"),
            ),
        }
    }

    fn apply(&self, body: &[u8]) -> Response {
        let Ok(Value::Array(objects)) = serde_json::from_slice::<Value>(body) else {
            return Response::status(400, "BadRequest", "expected a JSON array of objects");
        };
        for obj in &objects {
            if State::object_key(obj).is_none() {
                return Response::status(400, "BadRequest", "object has no kind or metadata.name");
            }
        }
        let results = self.apply_objects(objects);
        Response::json(200, &json!(results))
    }

    fn create_token(&self, ns: &str, sa: &str, body: &[u8]) -> Response {
        let state = self.state.lock().expect("state");
        let exists = sa == "default"
            || state
                .objects
                .contains_key(&format!("ServiceAccount/{ns}/{sa}"));
        if !exists {
            return Response::status(
                404,
                "NotFound",
                &format!("serviceaccounts \"{sa}\" not found"),
            );
        }
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut ttl = req
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let arg = |name: &str| -> Vec<String> {
            self.apiserver_args
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if let Some(max) = arg("service-account-max-token-expiration").first()
            && let Some(secs) = parse_duration(max)
        {
            ttl = ttl.min(secs);
        }
        // kube-apiserver issues with the first --service-account-issuer.
        let iss = arg("service-account-issuer")
            .first()
            .cloned()
            .unwrap_or_else(|| "https://kubernetes.default.svc.cluster.local".into());
        let audiences: Vec<String> = req
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| {
                arg("api-audiences")
                    .first()
                    .map(|a| a.split(',').map(String::from).collect())
                    .unwrap_or_default()
            });
        let iat = now();
        let claims = json!({
            "aud": audiences, "exp": iat + ttl, "iat": iat, "nbf": iat, "iss": iss,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": crate::sim::state::uuidish(&format!("{ns}/{sa}"))}},
        });
        let key = hex::decode(&state.sa_key).unwrap_or_default();
        let token =
            crate::sim::jwt::sign(&key, &state.sa_key[..16.min(state.sa_key.len())], &claims);
        Response::json(
            201,
            &json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa, "namespace": ns},
                "status": {"token": token, "expirationTimestamp": crate::sim::state::rfc3339(iat + ttl)}}),
        )
    }
}

/// Seconds of a Go duration like `24h`, `90m`, `3600s`, `1h30m`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
        }
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}
