//! The manifests `flux.bootstrap` commits: `gotk-components.yaml` (Flux's install: the
//! built-in one, which follows what `flux install` generates for Flux v2.7.5, or a release's
//! install manifests given as a file), `gotk-sync.yaml` (the `flux-system` GitRepository and
//! Kustomization) and `kustomization.yaml`.

mod crds;

use serde_json::{Value, json};

/// The Flux release the built-in install follows.
pub const FLUX_VERSION: &str = "v2.7.5";

/// A controller of the built-in install: its image and how its Deployment differs from the
/// others' (the controller's `config/manager/deployment.yaml` with flux2's
/// `manifests/bases/<controller>/patch.yaml` and the flags `flux install` sets).
pub struct Controller {
    /// Its name: the Deployment's, the ServiceAccount's and the `app` label's.
    pub name: &'static str,
    /// The image Flux v2.7.5 pins.
    pub image: &'static str,
    /// Named container ports.
    ports: &'static [(&'static str, u16)],
    /// The readiness probe: `(path, port name)`.
    ready: (&'static str, &'static str),
    /// `terminationGracePeriodSeconds`.
    grace: u32,
    /// The CPU request.
    cpu_request: &'static str,
    /// Sends its events to notification-controller (`--events-addr`).
    events: bool,
    /// Runs at `system-cluster-critical` priority.
    critical: bool,
    /// Keeps and serves artifacts from `/data` (source-controller: `--storage-*`, the `data`
    /// volume, a `Recreate` rollout so that one pod at a time owns it).
    storage: bool,
}

const METRICS: (&str, u16) = ("http-prom", 8080);
const HEALTHZ: (&str, u16) = ("healthz", 9440);

/// The controllers of the built-in install (Flux v2.7.5's default components).
pub const CONTROLLERS: &[Controller] = &[
    Controller {
        name: "source-controller",
        image: "ghcr.io/fluxcd/source-controller:v1.7.4",
        ports: &[("http", 9090), METRICS, HEALTHZ],
        ready: ("/", "http"),
        grace: 10,
        cpu_request: "50m",
        events: true,
        critical: true,
        storage: true,
    },
    Controller {
        name: "kustomize-controller",
        image: "ghcr.io/fluxcd/kustomize-controller:v1.7.3",
        ports: &[METRICS, HEALTHZ],
        ready: ("/readyz", "healthz"),
        grace: 60,
        cpu_request: "100m",
        events: true,
        critical: true,
        storage: false,
    },
    Controller {
        name: "helm-controller",
        image: "ghcr.io/fluxcd/helm-controller:v1.4.5",
        ports: &[METRICS, HEALTHZ],
        ready: ("/readyz", "healthz"),
        grace: 600,
        cpu_request: "100m",
        events: true,
        critical: true,
        storage: false,
    },
    Controller {
        name: "notification-controller",
        image: "ghcr.io/fluxcd/notification-controller:v1.7.5",
        // 9090 receives the other controllers' events, 9292 the webhooks of Receivers.
        ports: &[("http", 9090), ("http-webhook", 9292), METRICS, HEALTHZ],
        ready: ("/readyz", "healthz"),
        grace: 10,
        cpu_request: "100m",
        events: false,
        critical: false,
        storage: false,
    },
];

/// The accounts Flux's `rbac.yaml` binds to the `crd-controller` role besides those of
/// [`CONTROLLERS`]: the optional controllers', so that adding them needs no RBAC change.
const OPTIONAL_ACCOUNTS: &[&str] = &[
    "image-reflector-controller",
    "image-automation-controller",
    "source-watcher",
];

/// The toolkit API groups (the `crd-controller`, `flux-view` and `flux-edit` roles').
const TOOLKIT_GROUPS: &[&str] = &[
    "source.toolkit.fluxcd.io",
    "kustomize.toolkit.fluxcd.io",
    "helm.toolkit.fluxcd.io",
    "notification.toolkit.fluxcd.io",
    "image.toolkit.fluxcd.io",
    "source.extensions.fluxcd.io",
];

const NAMESPACE: &str = "flux-system";

/// Where the controllers send events (what `flux install` sets: notification-controller's
/// Service in the namespace they run in, a fully qualified name so that `no_proxy` matches).
const EVENTS_ADDR: &str = "http://notification-controller.$(RUNTIME_NAMESPACE).svc.cluster.local./";

/// The labels Flux's install gives every object (`app.kubernetes.io/{instance,part-of,version}`),
/// with `app.kubernetes.io/component` on a controller's own objects and `extra` first.
fn labels(version: &str, component: Option<&str>, extra: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    for (k, v) in extra {
        l.insert((*k).into(), json!(v));
    }
    if let Some(c) = component {
        l.insert("app.kubernetes.io/component".into(), json!(c));
    }
    l.insert("app.kubernetes.io/instance".into(), json!(NAMESPACE));
    l.insert("app.kubernetes.io/part-of".into(), json!("flux"));
    l.insert("app.kubernetes.io/version".into(), json!(version));
    Value::Object(l)
}

/// Metadata of a namespaced object of the install.
fn meta(name: &str, labels: Value) -> Value {
    json!({"name": name, "namespace": NAMESPACE, "labels": labels})
}

fn deployment(c: &Controller, version: &str, registry: Option<&str>) -> Value {
    let mut args = Vec::new();
    if c.events {
        args.push(format!("--events-addr={EVENTS_ADDR}"));
    }
    args.extend(
        [
            "--watch-all-namespaces=true",
            "--log-level=info",
            "--log-encoding=json",
            "--enable-leader-election",
        ]
        .map(String::from),
    );
    let mut env = vec![json!({"name": "RUNTIME_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})];
    // readOnlyRootFilesystem: what a controller writes goes to emptyDirs.
    let mut volumes = vec![];
    if c.storage {
        args.push("--storage-path=/data".into());
        args.push(format!(
            "--storage-adv-addr={}.$(RUNTIME_NAMESPACE).svc.cluster.local.",
            c.name
        ));
        // Sigstore's trust root, for verifying artifacts' signatures.
        env.push(json!({"name": "TUF_ROOT", "value": "/tmp/.sigstore"}));
        volumes.push(("data", "/data"));
        volumes.push(("tmp", "/tmp"));
    } else {
        volumes.push(("temp", "/tmp"));
    }
    env.push(json!({"name": "GOMEMLIMIT",
        "valueFrom": {"resourceFieldRef": {"containerName": "manager", "resource": "limits.memory"}}}));
    let image = match registry {
        Some(r) => c.image.replacen("ghcr.io", r.trim_end_matches('/'), 1),
        None => c.image.to_string(),
    };
    let container = json!({
        "name": "manager", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": args, "env": env,
        "ports": c.ports.iter()
            .map(|(name, port)| json!({"containerPort": port, "name": name, "protocol": "TCP"}))
            .collect::<Vec<_>>(),
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}},
        "readinessProbe": {"httpGet": {"path": c.ready.0, "port": c.ready.1}},
        // Upstream's limits are `cpu: 1000m`; "1" is how the API server stores it, so that
        // a kubeconfig target's live object holds what was applied.
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                      "requests": {"cpu": c.cpu_request, "memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true, "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": volumes.iter()
            .map(|(name, path)| json!({"mountPath": path, "name": name}))
            .collect::<Vec<_>>(),
    });
    let mut pod = json!({
        "containers": [container],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "securityContext": {"fsGroup": 1337},
        "serviceAccountName": c.name,
        "terminationGracePeriodSeconds": c.grace,
        "volumes": volumes.iter().map(|(name, _)| json!({"emptyDir": {}, "name": name})).collect::<Vec<_>>(),
    });
    if c.critical {
        pod["priorityClassName"] = json!("system-cluster-critical");
    }
    let mut spec = json!({
        "replicas": 1,
        "selector": {"matchLabels": {"app": c.name}},
        "template": {
            "metadata": {
                "annotations": {"prometheus.io/port": METRICS.1.to_string(), "prometheus.io/scrape": "true"},
                "labels": labels(version, Some(c.name), &[("app", c.name)]),
            },
            "spec": pod,
        },
    });
    if c.storage {
        spec["strategy"] = json!({"type": "Recreate"});
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(c.name, labels(version, Some(c.name), &[("control-plane", "controller")])),
        "spec": spec})
}

/// A ClusterIP Service on port 80 (`http`) to a controller's named port.
fn service(name: &str, controller: &str, target: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": meta(name, labels(version, Some(controller), &[("control-plane", "controller")])),
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": target}],
                 "selector": {"app": controller}, "type": "ClusterIP"}})
}

/// A ClusterRole; `aggregate_to`: the built-in roles (`view`, `edit`, `admin`) it adds to.
fn cluster_role(name: &str, version: &str, aggregate_to: &[&str], rules: Value) -> Value {
    let mut labels = labels(version, None, &[]);
    for to in aggregate_to {
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{to}")] = json!("true");
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("{name}-{NAMESPACE}"), "labels": labels},
        "rules": rules})
}

fn binding(name: &str, role: &str, accounts: &[&str], version: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{name}-{NAMESPACE}"), "labels": labels(version, None, &[])},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": accounts.iter()
            .map(|a| json!({"kind": "ServiceAccount", "name": a, "namespace": NAMESPACE}))
            .collect::<Vec<_>>()})
}

/// Flux's `rbac.yaml` (named `<name>-flux-system`, as `flux install` names them): the
/// `crd-controller` role every controller runs with, cluster-admin for the reconcilers
/// (`cluster-reconciler`), the `flux-view` and `flux-edit` roles aggregated to the built-in
/// view/edit/admin roles, and the quota that lets pods of critical priority run here.
fn rbac(version: &str) -> Vec<Value> {
    let crd_rules = {
        let mut r: Vec<Value> = TOOLKIT_GROUPS
            .iter()
            .map(|g| json!({"apiGroups": [g], "resources": ["*"], "verbs": ["*"]}))
            .collect();
        r.extend([
            json!({"apiGroups": [""], "resources": ["namespaces", "secrets", "configmaps", "serviceaccounts"],
                   "verbs": ["get", "list", "watch"]}),
            json!({"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}),
            // Leader election.
            json!({"apiGroups": [""], "resources": ["configmaps"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}),
            json!({"apiGroups": [""], "resources": ["configmaps/status"], "verbs": ["get", "update", "patch"]}),
            json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}),
            // Object-level workload identity.
            json!({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}),
            // Flow control.
            json!({"nonResourceURLs": ["/livez/ping"], "verbs": ["head"]}),
        ]);
        Value::Array(r)
    };
    let accounts: Vec<&str> = CONTROLLERS
        .iter()
        .map(|c| c.name)
        .chain(OPTIONAL_ACCOUNTS.iter().copied())
        .collect();
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": meta(&format!("critical-pods-{NAMESPACE}"), labels(version, None, &[])),
            "spec": {"hard": {"pods": "1000"}, "scopeSelector": {"matchExpressions": [{
                "operator": "In", "scopeName": "PriorityClass",
                "values": ["system-node-critical", "system-cluster-critical"]}]}}}),
        cluster_role("crd-controller", version, &[], crd_rules),
    ];
    for (name, to, verbs) in [
        (
            "flux-edit",
            &["edit", "admin"][..],
            &["create", "delete", "deletecollection", "patch", "update"][..],
        ),
        (
            "flux-view",
            &["admin", "edit", "view"],
            &["get", "list", "watch"],
        ),
    ] {
        let rules = json!([{"apiGroups": TOOLKIT_GROUPS, "resources": ["*"], "verbs": verbs}]);
        out.push(cluster_role(name, version, to, rules));
    }
    out.push(binding(
        "cluster-reconciler",
        "cluster-admin",
        &["kustomize-controller", "helm-controller"],
        version,
    ));
    out.push(binding(
        "crd-controller",
        &format!("crd-controller-{NAMESPACE}"),
        &accounts,
        version,
    ));
    out
}

/// Flux's network policies: pods of the namespace talk to each other and to anything
/// outside, metrics can be scraped from any namespace, and notification-controller takes
/// webhooks from any namespace.
fn policies(version: &str) -> Vec<Value> {
    let policy = |name: &str, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(name, labels(version, None, &[])), "spec": spec})
    };
    vec![
        policy(
            "allow-egress",
            json!({"egress": [{}], "ingress": [{"from": [{"podSelector": {}}]}],
                   "podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        policy(
            "allow-scraping",
            json!({"ingress": [{"from": [{"namespaceSelector": {}}],
                                "ports": [{"port": METRICS.1, "protocol": "TCP"}]}],
                   "podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        policy(
            "allow-webhooks",
            json!({"ingress": [{"from": [{"namespaceSelector": {}}]}],
                   "podSelector": {"matchLabels": {"app": "notification-controller"}},
                   "policyTypes": ["Ingress"]}),
        ),
    ]
}

/// The built-in install, as `flux install` (Flux v2.7.5, its default components and
/// options) generates it: the namespace (with Flux's pod-security labels), the controllers'
/// CRDs (see [`crds`] for what their schemas leave out), service accounts, RBAC, the
/// source-controller and notification-controller Services, one Deployment per controller
/// with the images of [`CONTROLLERS`] (on `registry` instead of ghcr.io when given: an
/// air-gapped mirror), and the network policies.
pub fn components(version: &str, registry: Option<&str>) -> Vec<Value> {
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace",
    "metadata": {"name": NAMESPACE, "labels": labels(version, None, &[
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/warn-version", "latest"),
    ])}})];
    let mut rbac = rbac(version);
    // The quota first, as kustomize orders them.
    out.push(rbac.remove(0));
    out.extend(crds::objects(|c| labels(version, Some(c), &[])));
    for c in CONTROLLERS {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(c.name, labels(version, Some(c.name), &[]))}));
    }
    out.extend(rbac);
    out.push(service(
        "source-controller",
        "source-controller",
        "http",
        version,
    ));
    out.push(service(
        "notification-controller",
        "notification-controller",
        "http",
        version,
    ));
    out.push(service(
        "webhook-receiver",
        "notification-controller",
        "http-webhook",
        version,
    ));
    for c in CONTROLLERS {
        out.push(deployment(c, version, registry));
    }
    out.extend(policies(version));
    out
}

/// The `flux-system` GitRepository and Kustomization.
pub fn sync(url: &str, branch: &str, path: &str, interval: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": "flux-system"},
            "spec": {"interval": interval, "ref": {"branch": branch},
                     "secretRef": {"name": "flux-system"}, "url": url}}),
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "flux-system", "namespace": "flux-system"},
            "spec": {"interval": "10m0s", "path": path, "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}}),
    ]
}

/// Objects as one multi-document YAML file (JSON documents are YAML).
pub fn to_yaml(header: &str, objects: &[Value]) -> String {
    let mut s = format!("# {header}\n");
    for o in objects {
        s.push_str("---\n");
        s.push_str(&serde_json::to_string_pretty(o).unwrap_or_default());
        s.push('\n');
    }
    s
}

/// `kustomization.yaml` of the flux-system folder.
pub fn kustomization() -> String {
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - gotk-components.yaml\n  - gotk-sync.yaml\n".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> Vec<Value> {
        components(FLUX_VERSION, None)
    }

    fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn strs(v: &Value) -> Vec<&str> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn deployments(objs: &[Value]) -> Vec<&Value> {
        objs.iter().filter(|o| o["kind"] == "Deployment").collect()
    }

    fn manager(d: &Value) -> &Value {
        &d["spec"]["template"]["spec"]["containers"][0]
    }

    #[test]
    fn every_controller_account_is_bound_to_the_crd_controller_role() {
        let objs = install();
        let role = find(&objs, "ClusterRole", "crd-controller-flux-system");
        let rules = role["rules"].as_array().unwrap();
        let allows = |group: &str, resource: &str, verb: &str| {
            rules.iter().any(|r| {
                strs(&r["apiGroups"]).contains(&group)
                    && (strs(&r["resources"]).contains(&resource) || strs(&r["resources"]) == ["*"])
                    && (strs(&r["verbs"]).contains(&verb) || strs(&r["verbs"]) == ["*"])
            })
        };
        for g in [
            "source.toolkit.fluxcd.io",
            "kustomize.toolkit.fluxcd.io",
            "helm.toolkit.fluxcd.io",
            "notification.toolkit.fluxcd.io",
        ] {
            assert!(allows(g, "anything", "update"), "{g}");
        }
        for (res, verb) in [
            ("secrets", "watch"),
            ("configmaps", "create"),
            ("namespaces", "list"),
            ("serviceaccounts", "get"),
            ("events", "create"),
            ("serviceaccounts/token", "create"),
        ] {
            assert!(allows("", res, verb), "{res} {verb}");
        }
        assert!(allows("coordination.k8s.io", "leases", "update"));
        let binding = find(&objs, "ClusterRoleBinding", "crd-controller-flux-system");
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], "crd-controller-flux-system");
        let subjects = binding["subjects"].as_array().unwrap();
        for c in CONTROLLERS {
            assert!(
                subjects.iter().any(|s| s["kind"] == "ServiceAccount"
                    && s["name"] == c.name
                    && s["namespace"] == "flux-system"),
                "{} is not bound",
                c.name
            );
            // ... and the account exists and runs the Deployment.
            find(&objs, "ServiceAccount", c.name);
            let d = find(&objs, "Deployment", c.name);
            assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], c.name);
        }
        // The reconcilers apply anything: cluster-admin.
        let rec = find(
            &objs,
            "ClusterRoleBinding",
            "cluster-reconciler-flux-system",
        );
        assert_eq!(rec["roleRef"]["name"], "cluster-admin");
        let names: Vec<&str> = rec["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(names, ["kustomize-controller", "helm-controller"]);
        // The aggregated roles.
        let view = find(&objs, "ClusterRole", "flux-view-flux-system");
        assert_eq!(
            view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        assert_eq!(strs(&view["rules"][0]["verbs"]), ["get", "list", "watch"]);
        let edit = find(&objs, "ClusterRole", "flux-edit-flux-system");
        assert_eq!(
            edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        assert!(
            edit["metadata"]["labels"]
                .get("rbac.authorization.k8s.io/aggregate-to-view")
                .is_none()
        );
        // Pods of critical priority may run in flux-system.
        let quota = find(&objs, "ResourceQuota", "critical-pods-flux-system");
        assert!(
            strs(&quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"])
                .contains(&"system-cluster-critical")
        );
    }

    /// The port a Service's `targetPort` names on the Deployment its selector picks.
    fn service_backend(objs: &[Value], name: &str) -> (u64, u64) {
        let svc = find(objs, "Service", name);
        let selector = svc["spec"]["selector"].as_object().unwrap();
        let backends: Vec<&Value> = deployments(objs)
            .into_iter()
            .filter(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| labels[k] == *v)
            })
            .collect();
        assert_eq!(backends.len(), 1, "{name} selects {backends:?}");
        let port = &svc["spec"]["ports"][0];
        let target = port["targetPort"].as_str().unwrap();
        let container_port = manager(backends[0])["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == target)
            .unwrap_or_else(|| panic!("{name}: no container port {target}"))["containerPort"]
            .as_u64()
            .unwrap();
        (port["port"].as_u64().unwrap(), container_port)
    }

    #[test]
    fn services_reach_the_controllers_named_ports() {
        let objs = install();
        // kustomize- and helm-controller download artifacts from http://source-controller.../
        assert_eq!(service_backend(&objs, "source-controller"), (80, 9090));
        assert_eq!(
            find(&objs, "Service", "source-controller")["spec"]["ports"][0]["targetPort"],
            "http"
        );
        // Events go to notification-controller's 9090, webhooks to its 9292.
        assert_eq!(
            service_backend(&objs, "notification-controller"),
            (80, 9090)
        );
        assert_eq!(service_backend(&objs, "webhook-receiver"), (80, 9292));
    }

    #[test]
    fn read_only_root_filesystems_write_to_empty_dirs() {
        let objs = install();
        assert_eq!(deployments(&objs).len(), CONTROLLERS.len());
        for d in deployments(&objs) {
            let name = d["metadata"]["name"].as_str().unwrap();
            let c = manager(d);
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
            let empty_dir_at = |path: &str| {
                c["volumeMounts"].as_array().unwrap().iter().any(|m| {
                    m["mountPath"] == path
                        && volumes
                            .iter()
                            .any(|v| v["name"] == m["name"] && v["emptyDir"].is_object())
                })
            };
            assert!(empty_dir_at("/tmp"), "{name}: no emptyDir at /tmp");
            let args = strs(&c["args"]);
            if name == "source-controller" {
                assert!(empty_dir_at("/data"), "{name}: no emptyDir at /data");
                assert!(args.contains(&"--storage-path=/data"), "{args:?}");
            }
        }
    }

    #[test]
    fn args_use_only_variables_the_env_defines() {
        let objs = install();
        for d in deployments(&objs) {
            let name = d["metadata"]["name"].as_str().unwrap();
            let c = manager(d);
            let env = c["env"].as_array().unwrap();
            let ns = env
                .iter()
                .find(|e| e["name"] == "RUNTIME_NAMESPACE")
                .unwrap_or_else(|| panic!("{name}: no RUNTIME_NAMESPACE"));
            assert_eq!(
                ns["valueFrom"]["fieldRef"]["fieldPath"],
                "metadata.namespace"
            );
            for arg in strs(&c["args"]) {
                let mut rest = arg;
                while let Some(i) = rest.find("$(") {
                    let var = &rest[i + 2..];
                    let end = var.find(')').unwrap();
                    assert!(
                        env.iter().any(|e| e["name"] == var[..end]),
                        "{name}: {arg} uses {} which its env lacks",
                        &var[..end]
                    );
                    rest = &var[end..];
                }
            }
        }
    }

    #[test]
    fn controller_flags_are_flux_installs() {
        let objs = install();
        let args = |name: &str| -> Vec<String> {
            strs(&manager(find(&objs, "Deployment", name))["args"])
                .into_iter()
                .map(String::from)
                .collect()
        };
        let common = [
            "--watch-all-namespaces=true",
            "--log-level=info",
            "--log-encoding=json",
            "--enable-leader-election",
        ];
        let events =
            "--events-addr=http://notification-controller.$(RUNTIME_NAMESPACE).svc.cluster.local./";
        for name in ["kustomize-controller", "helm-controller"] {
            let mut want = vec![events];
            want.extend(common);
            assert_eq!(args(name), want, "{name}");
        }
        let mut want = vec![events];
        want.extend(common);
        want.extend([
            "--storage-path=/data",
            "--storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.cluster.local.",
        ]);
        assert_eq!(args("source-controller"), want);
        // notification-controller's --events-addr is where it listens: left at its default.
        assert_eq!(args("notification-controller"), common);
        // The addresses name Services of the install.
        find(&objs, "Service", "notification-controller");
        find(&objs, "Service", "source-controller");
    }

    #[test]
    fn ports_and_probes_are_upstreams() {
        let objs = install();
        for d in deployments(&objs) {
            let name = d["metadata"]["name"].as_str().unwrap();
            let c = manager(d);
            let ports: Vec<(&str, u64)> = c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert!(ports.contains(&("http-prom", 8080)), "{name}");
            assert!(ports.contains(&("healthz", 9440)), "{name}");
            for probe in ["livenessProbe", "readinessProbe"] {
                let port = c[probe]["httpGet"]["port"].as_str().unwrap();
                assert!(
                    ports.iter().any(|(n, _)| *n == port),
                    "{name}: {probe} on {port}"
                );
            }
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
            let annotations = &d["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/port"], "8080");
        }
        let src = manager(find(&objs, "Deployment", "source-controller"));
        assert_eq!(src["readinessProbe"]["httpGet"]["port"], "http");
        assert!(
            src["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "http" && p["containerPort"] == 9090)
        );
        let nc = manager(find(&objs, "Deployment", "notification-controller"));
        assert!(
            nc["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "http-webhook" && p["containerPort"] == 9292)
        );
    }

    /// `(version, storage, status subresource)`.
    type UpstreamVersion = (&'static str, bool, bool);

    /// Upstream's CRDs (`config/crd/bases` of the controllers Flux v2.7.5 pins): name, and
    /// per version whether it is the storage one and has the status subresource.
    const UPSTREAM_CRDS: &[(&str, &[UpstreamVersion])] = &[
        (
            "gitrepositories.source.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "helmrepositories.source.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "helmcharts.source.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "buckets.source.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "ocirepositories.source.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "externalartifacts.source.toolkit.fluxcd.io",
            &[("v1", true, true)],
        ),
        (
            "kustomizations.kustomize.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
        (
            "helmreleases.helm.toolkit.fluxcd.io",
            &[("v2", true, true), ("v2beta2", false, true)],
        ),
        (
            "providers.notification.toolkit.fluxcd.io",
            &[("v1beta2", false, true), ("v1beta3", true, false)],
        ),
        (
            "alerts.notification.toolkit.fluxcd.io",
            &[("v1beta2", false, true), ("v1beta3", true, false)],
        ),
        (
            "receivers.notification.toolkit.fluxcd.io",
            &[("v1", true, true), ("v1beta2", false, true)],
        ),
    ];

    #[test]
    fn crds_serve_upstreams_versions() {
        let objs = install();
        let crds: Vec<&Value> = objs
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect();
        let names: Vec<&str> = crds
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str())
            .collect();
        let want: Vec<&str> = UPSTREAM_CRDS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, want);
        for (crd, (name, versions)) in crds.iter().zip(UPSTREAM_CRDS) {
            let spec = &crd["spec"];
            assert_eq!(
                format!(
                    "{}.{}",
                    spec["names"]["plural"].as_str().unwrap(),
                    spec["group"].as_str().unwrap()
                ),
                *name
            );
            assert_eq!(spec["scope"], "Namespaced");
            let have: Vec<(&str, bool, bool)> = spec["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    assert_eq!(v["served"], true, "{name}");
                    // Only older versions are deprecated.
                    assert_eq!(v["deprecated"] == true, v["storage"] == false, "{name}");
                    (
                        v["name"].as_str().unwrap(),
                        v["storage"].as_bool().unwrap(),
                        v["subresources"].get("status").is_some(),
                    )
                })
                .collect();
            assert_eq!(have, *versions, "{name}");
        }
        // What the sync and the step use is served.
        let served = |crd: &str, version: &str| {
            crds.iter().any(|c| {
                c["metadata"]["name"] == crd
                    && c["spec"]["versions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v["name"] == version && v["served"] == true)
            })
        };
        for o in sync(
            "https://git.example/fleet.git",
            "main",
            "./clusters/edge",
            "1m0s",
        ) {
            let (group, version) = o["apiVersion"].as_str().unwrap().split_once('/').unwrap();
            let plural = format!("{}s", o["kind"].as_str().unwrap().to_ascii_lowercase())
                .replace("ys", "ies");
            assert!(served(&format!("{plural}.{group}"), version), "{o}");
        }
        assert!(served("helmreleases.helm.toolkit.fluxcd.io", "v2"));
        assert!(served(
            "ocirepositories.source.toolkit.fluxcd.io",
            "v1beta2"
        ));
    }

    /// Every node of a structural schema has a type; objects without properties keep
    /// unknown fields; defaults match their node's type.
    fn check_structural(node: &Value, at: &str) {
        let ty = node["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no type"));
        if let Some(d) = node.get("default") {
            let ok = match ty {
                "string" => d.is_string(),
                "boolean" => d.is_boolean(),
                "object" => d.is_object(),
                _ => false,
            };
            assert!(ok, "{at}: default {d} is not a {ty}");
        }
        match ty {
            "object" => {
                assert_eq!(node["x-kubernetes-preserve-unknown-fields"], true, "{at}");
                if let Some(props) = node.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        check_structural(v, &format!("{at}.{k}"));
                    }
                }
            }
            "array" => check_structural(&node["items"], &format!("{at}[]")),
            _ => assert!(node.get("properties").is_none(), "{at}"),
        }
    }

    #[test]
    fn crd_schemas_are_open_structural_and_carry_upstreams_defaults() {
        let objs = install();
        for crd in objs
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
        {
            for v in crd["spec"]["versions"].as_array().unwrap() {
                let schema = &v["schema"]["openAPIV3Schema"];
                check_structural(schema, crd["metadata"]["name"].as_str().unwrap());
                if v["subresources"].get("status").is_some()
                    && crd["metadata"]["name"] != "externalartifacts.source.toolkit.fluxcd.io"
                {
                    assert_eq!(
                        schema.pointer("/properties/status/default/observedGeneration"),
                        Some(&json!(-1)),
                        "{}",
                        crd["metadata"]["name"]
                    );
                }
            }
        }
        let version = |crd: &str, v: &str| -> Value {
            find(&objs, "CustomResourceDefinition", crd)["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == v)
                .unwrap()["schema"]["openAPIV3Schema"]
                .clone()
        };
        let git = version("gitrepositories.source.toolkit.fluxcd.io", "v1");
        assert_eq!(
            git.pointer("/properties/spec/properties/timeout/default"),
            Some(&json!("60s"))
        );
        let ks = version("kustomizations.kustomize.toolkit.fluxcd.io", "v1");
        assert_eq!(
            ks.pointer("/properties/spec/properties/postBuild/properties/substituteFrom/items/properties/optional/default"),
            Some(&json!(false))
        );
        let hr = version("helmreleases.helm.toolkit.fluxcd.io", "v2");
        assert_eq!(
            hr.pointer(
                "/properties/spec/properties/chart/properties/spec/properties/version/default"
            ),
            Some(&json!("*"))
        );
    }

    #[test]
    fn namespace_objects_and_labels_are_flux_installs() {
        let objs = install();
        let ns = find(&objs, "Namespace", "flux-system");
        let labels = &ns["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], "flux-system");
        assert_eq!(labels["app.kubernetes.io/part-of"], "flux");
        assert_eq!(labels["app.kubernetes.io/version"], FLUX_VERSION);
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/warn-version"], "latest");
        let cluster_scoped = [
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ];
        for o in &objs {
            let kind = o["kind"].as_str().unwrap();
            let what = format!("{kind} {}", o["metadata"]["name"]);
            let ns = &o["metadata"]["namespace"];
            if cluster_scoped.contains(&kind) {
                assert!(ns.is_null(), "{what}");
            } else {
                assert_eq!(ns, "flux-system", "{what}");
            }
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/instance"], "flux-system",
                "{what}"
            );
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/version"], FLUX_VERSION,
                "{what}"
            );
        }
        // The pods carry them too, and select on `app` alone.
        for d in deployments(&objs) {
            let name = d["metadata"]["name"].as_str().unwrap();
            assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": name}}));
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["app"], name);
            assert_eq!(labels["app.kubernetes.io/component"], name);
            assert_eq!(labels["app.kubernetes.io/part-of"], "flux");
        }
    }

    #[test]
    fn network_policies_are_flux_installs() {
        let objs = install();
        let egress = find(&objs, "NetworkPolicy", "allow-egress");
        assert_eq!(egress["spec"]["egress"], json!([{}]));
        assert_eq!(
            egress["spec"]["ingress"],
            json!([{"from": [{"podSelector": {}}]}])
        );
        let scraping = find(&objs, "NetworkPolicy", "allow-scraping");
        assert_eq!(scraping["spec"]["ingress"][0]["ports"][0]["port"], 8080);
        assert_eq!(
            scraping["spec"]["ingress"][0]["from"],
            json!([{"namespaceSelector": {}}])
        );
        let webhooks = find(&objs, "NetworkPolicy", "allow-webhooks");
        assert_eq!(
            webhooks["spec"]["podSelector"],
            json!({"matchLabels": {"app": "notification-controller"}})
        );
    }

    #[test]
    fn images_are_the_pinned_ones_or_the_mirrors() {
        let pinned = [
            (
                "source-controller",
                "ghcr.io/fluxcd/source-controller:v1.7.4",
            ),
            (
                "kustomize-controller",
                "ghcr.io/fluxcd/kustomize-controller:v1.7.3",
            ),
            ("helm-controller", "ghcr.io/fluxcd/helm-controller:v1.4.5"),
            (
                "notification-controller",
                "ghcr.io/fluxcd/notification-controller:v1.7.5",
            ),
        ];
        let objs = install();
        for (name, image) in pinned {
            assert_eq!(manager(find(&objs, "Deployment", name))["image"], image);
        }
        let mirrored = components(FLUX_VERSION, Some("registry.site.local:5000/"));
        for (name, image) in pinned {
            let want = image.replacen("ghcr.io", "registry.site.local:5000", 1);
            assert_eq!(manager(find(&mirrored, "Deployment", name))["image"], want);
        }
    }

    #[test]
    fn the_simulators_controllers_find_their_deployments() {
        // tests/testhosts' k3s simulator runs Flux once these exist.
        let objs = install();
        for name in ["source-controller", "kustomize-controller"] {
            let d = find(&objs, "Deployment", name);
            assert_eq!(d["metadata"]["namespace"], "flux-system");
        }
    }

    #[test]
    fn quantities_are_in_the_form_the_api_server_stores() {
        // A kubeconfig target compares live objects with these: "1000m" would read back "1".
        for d in deployments(&install()) {
            let r = &manager(d)["resources"];
            for q in [&r["limits"]["cpu"], &r["requests"]["cpu"]] {
                let q = q.as_str().unwrap();
                assert!(!(q.ends_with("000m")), "{q}");
            }
        }
    }

    #[test]
    fn the_yaml_reads_back_as_the_objects() {
        let objs = install();
        let text = to_yaml("header", &objs);
        let back: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let back: Vec<Value> = back
            .into_iter()
            .filter(|d| d.get("kind").is_some())
            .collect();
        assert_eq!(back, objs);
    }
}
