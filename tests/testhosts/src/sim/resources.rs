//! The resources the simulated API server serves by REST path, with their discovery documents
//! (`/api/v1`, `/apis/{group}/{version}`), as clients that use discovery expect.

use serde_json::{Value, json};

/// `(groupVersion, plural, kind, namespaced)`.
pub const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "namespaces", "Namespace", false),
    ("v1", "nodes", "Node", false),
    ("v1", "secrets", "Secret", true),
    ("v1", "serviceaccounts", "ServiceAccount", true),
    ("v1", "configmaps", "ConfigMap", true),
    ("v1", "services", "Service", true),
    ("apps/v1", "deployments", "Deployment", true),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", true),
    (
        "rbac.authorization.k8s.io/v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    ("helm.cattle.io/v1", "helmcharts", "HelmChart", true),
    (
        "helm.cattle.io/v1",
        "helmchartconfigs",
        "HelmChartConfig",
        true,
    ),
];

/// The resource at `groupVersion` + `plural`.
pub fn find(group_version: &str, plural: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(gv, p, _, _)| *gv == group_version && *p == plural)
        .map(|(_, _, kind, ns)| (*kind, *ns))
}

/// `APIResourceList` of one group version; `None` when it is not served.
pub fn resource_list(group_version: &str) -> Option<Value> {
    let items: Vec<Value> = RESOURCES
        .iter()
        .filter(|(gv, ..)| *gv == group_version)
        .map(|(_, plural, kind, namespaced)| {
            json!({"name": plural, "singularName": kind.to_ascii_lowercase(), "namespaced": namespaced,
                   "kind": kind, "verbs": ["create", "delete", "get", "list", "patch", "update"]})
        })
        .collect();
    (!items.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": items})
    })
}

/// `APIGroupList` (`/apis`).
pub fn group_list() -> Value {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|(gv, ..)| *gv)
        .filter(|gv| gv.contains('/'))
        .collect();
    groups.dedup();
    let items: Vec<Value> = groups
        .iter()
        .map(|gv| {
            let (group, version) = gv.split_once('/').unwrap_or((gv, ""));
            let v = json!({"groupVersion": gv, "version": version});
            json!({"name": group, "versions": [v.clone()], "preferredVersion": v})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": items})
}

/// A REST path's parts: `(groupVersion, namespace, plural, name)`.
pub fn parse_path(segments: &[&str]) -> Option<(String, Option<String>, String, Option<String>)> {
    let (gv, rest) = match segments {
        ["api", v, rest @ ..] => ((*v).to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    match rest {
        [plural] => Some((gv, ns, (*plural).to_string(), None)),
        [plural, name] => Some((gv, ns, (*plural).to_string(), Some((*name).to_string()))),
        _ => None,
    }
}
