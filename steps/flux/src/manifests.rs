//! The manifests `flux.bootstrap` commits: `gotk-components.yaml` (Flux's install: a built-in
//! minimal one, or a release's install manifests given as a file), `gotk-sync.yaml` (the
//! `flux-system` GitRepository and Kustomization) and `kustomization.yaml`.

use serde_json::{Value, json};

/// The Flux release the built-in install follows.
pub const FLUX_VERSION: &str = "v2.7.5";

/// The controllers of the built-in install and their images (Flux v2.7.5's components).
pub const CONTROLLERS: &[(&str, &str)] = &[
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

/// The custom resources of the built-in install: `(group, kind, plural)`.
const CRDS: &[(&str, &str, &str)] = &[
    (
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "gitrepositories",
    ),
    (
        "source.toolkit.fluxcd.io",
        "HelmRepository",
        "helmrepositories",
    ),
    (
        "source.toolkit.fluxcd.io",
        "OCIRepository",
        "ocirepositories",
    ),
    (
        "kustomize.toolkit.fluxcd.io",
        "Kustomization",
        "kustomizations",
    ),
    ("helm.toolkit.fluxcd.io", "HelmRelease", "helmreleases"),
    ("notification.toolkit.fluxcd.io", "Alert", "alerts"),
    ("notification.toolkit.fluxcd.io", "Provider", "providers"),
];

fn labels(version: &str) -> Value {
    json!({"app.kubernetes.io/instance": "flux-system", "app.kubernetes.io/part-of": "flux",
           "app.kubernetes.io/version": version})
}

/// The built-in install: the namespace, the CRDs (schemas open: the controllers validate),
/// service accounts, the reconcilers' cluster-admin binding and one Deployment per
/// controller, with the images of [`CONTROLLERS`] (on `registry` instead of ghcr.io when given:
/// an air-gapped mirror).
pub fn components(version: &str, registry: Option<&str>) -> Vec<Value> {
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "flux-system", "labels": labels(version)}})];
    for (group, kind, plural) in CRDS {
        out.push(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}"), "labels": labels(version)},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }));
    }
    for (name, _) in CONTROLLERS {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "flux-system", "labels": labels(version)}}));
    }
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-reconciler-flux-system", "labels": labels(version)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "kustomize-controller", "namespace": "flux-system"},
            {"kind": "ServiceAccount", "name": "helm-controller", "namespace": "flux-system"}
        ]
    }));
    for (name, image) in CONTROLLERS {
        out.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "flux-system", "labels": labels(version)},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"serviceAccountName": name, "terminationGracePeriodSeconds": 10,
                        "containers": [{"name": "manager", "image": match registry {
                                Some(r) => image.replacen("ghcr.io", r.trim_end_matches('/'), 1),
                                None => image.to_string(),
                            },
                            "args": ["--events-addr=", "--watch-all-namespaces=true", "--log-level=info"],
                            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}}]}}}
        }));
    }
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
