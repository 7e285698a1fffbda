//! ARM path parsing (case-insensitive): subscriptions, groups, providers, operation
//! endpoints, resources, child resources and extension resources.

use super::kinds;

/// A resource (or collection, or action) path under a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResPath {
    pub(crate) sub: String,
    pub(crate) rg: Option<String>,
    /// For extension resources: the parent resource's path as written.
    pub(crate) scope: Option<String>,
    pub(crate) ns: String,
    pub(crate) types: Vec<String>,
    pub(crate) names: Vec<String>,
    /// A trailing action (`start`, `instanceView`, ...).
    pub(crate) action: Option<String>,
}

impl ResPath {
    /// `Namespace/type[/child]` as written.
    pub(crate) fn full_type(&self) -> String {
        let mut t = self.ns.clone();
        for ty in &self.types {
            t.push('/');
            t.push_str(ty);
        }
        t
    }

    pub(crate) fn is_collection(&self) -> bool {
        self.types.len() > self.names.len()
    }

    pub(crate) fn name(&self) -> &str {
        self.names.last().map(String::as_str).unwrap_or("")
    }

    /// The id prefix this resource hangs off: extension scope, group, or subscription.
    pub(crate) fn base(&self) -> String {
        match (&self.scope, &self.rg) {
            (Some(scope), _) => scope.clone(),
            (None, Some(rg)) => format!("/subscriptions/{}/resourceGroups/{rg}", self.sub),
            (None, None) => format!("/subscriptions/{}", self.sub),
        }
    }

    /// The resource id with canonical type spellings from `kind`.
    pub(crate) fn id_with(&self, kind: &kinds::Kind, names: &[String]) -> String {
        let mut id = format!("{}/providers/{}", self.base(), kind.namespace());
        for (ty, name) in kind.type_segments().iter().zip(names) {
            id.push('/');
            id.push_str(ty);
            id.push('/');
            id.push_str(name);
        }
        id
    }

    /// The `type/name` pairs for messages: `Microsoft.Network/virtualNetworks/vnet1`.
    pub(crate) fn type_and_name(&self, kind: &kinds::Kind) -> String {
        let mut s = kind.namespace().to_string();
        for (ty, name) in kind.type_segments().iter().zip(&self.names) {
            s.push('/');
            s.push_str(ty);
            s.push('/');
            s.push_str(name);
        }
        s
    }
}

/// What an ARM path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    SubscriptionList,
    Subscription {
        sub: String,
    },
    TenantList,
    GroupList {
        sub: String,
    },
    Group {
        sub: String,
        rg: String,
    },
    ProviderList {
        sub: String,
    },
    Provider {
        sub: String,
        ns: String,
    },
    ProviderAction {
        sub: String,
        ns: String,
        action: String,
    },
    /// `.../providers/{ns}/locations/{loc}/operations/{id}` (or `operationResults` when
    /// `result` is true: the Location-header flavour).
    Operation {
        sub: String,
        op: String,
        result: bool,
    },
    Resource(ResPath),
    Unknown,
}

impl Route {
    /// Subscription the request is scoped to, if any.
    pub(crate) fn subscription(&self) -> Option<&str> {
        match self {
            Route::Subscription { sub }
            | Route::GroupList { sub }
            | Route::Group { sub, .. }
            | Route::ProviderList { sub }
            | Route::Provider { sub, .. }
            | Route::ProviderAction { sub, .. }
            | Route::Operation { sub, .. } => Some(sub),
            Route::Resource(p) => Some(&p.sub),
            _ => None,
        }
    }

    /// The resource type the request targets, for fault matching.
    pub(crate) fn resource_type(&self) -> String {
        match self {
            Route::SubscriptionList | Route::Subscription { .. } => {
                "Microsoft.Resources/subscriptions".into()
            }
            Route::TenantList => "Microsoft.Resources/tenants".into(),
            Route::GroupList { .. } | Route::Group { .. } => {
                "Microsoft.Resources/resourceGroups".into()
            }
            Route::ProviderList { .. } | Route::Provider { .. } | Route::ProviderAction { .. } => {
                "Microsoft.Resources/providers".into()
            }
            Route::Operation { .. } => "Microsoft.Resources/operations".into(),
            Route::Resource(p) => p.full_type(),
            Route::Unknown => String::new(),
        }
    }
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Parses decoded path segments (first is `subscriptions` or `tenants`).
pub(crate) fn parse(segs: &[String]) -> Route {
    let l: Vec<String> = segs.iter().map(|s| lc(s)).collect();
    match l.first().map(String::as_str) {
        Some("tenants") if segs.len() == 1 => return Route::TenantList,
        Some("subscriptions") => {}
        _ => return Route::Unknown,
    }
    if segs.len() == 1 {
        return Route::SubscriptionList;
    }
    let sub = segs[1].clone();
    let rest = &segs[2..];
    let lrest = &l[2..];
    match lrest.first().map(String::as_str) {
        None => Route::Subscription { sub },
        Some("resourcegroups") => match rest.len() {
            1 => Route::GroupList { sub },
            2 => Route::Group {
                sub,
                rg: rest[1].clone(),
            },
            n if n >= 4 && lrest[2] == "providers" => {
                parse_resource(sub, Some(rest[1].clone()), &rest[3..])
            }
            _ => Route::Unknown,
        },
        Some("providers") => match rest.len() {
            1 => Route::ProviderList { sub },
            2 => Route::Provider {
                sub,
                ns: rest[1].clone(),
            },
            3 if lrest[2] == "register" || lrest[2] == "unregister" => Route::ProviderAction {
                sub,
                ns: rest[1].clone(),
                action: lrest[2].clone(),
            },
            6 if lrest[2] == "locations" => match lrest[4].as_str() {
                "operations" | "operationstatuses" | "asyncoperations" => Route::Operation {
                    sub,
                    op: rest[5].clone(),
                    result: false,
                },
                "operationresults" => Route::Operation {
                    sub,
                    op: rest[5].clone(),
                    result: true,
                },
                _ => Route::Unknown,
            },
            _ => parse_resource(sub, None, &rest[1..]),
        },
        _ => Route::Unknown,
    }
}

/// `rest` starts at the namespace (after `providers`).
fn parse_resource(sub: String, rg: Option<String>, rest: &[String]) -> Route {
    if rest.len() < 2 {
        return Route::Unknown;
    }
    let mut ns = rest[0].clone();
    let mut scope: Option<String> = None;
    let mut types: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut prefix = match &rg {
        Some(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}"),
        None => format!("/subscriptions/{sub}/providers/{ns}"),
    };
    let mut i = 1;
    while i < rest.len() {
        if lc(&rest[i]) == "providers"
            && i + 2 < rest.len()
            && !types.is_empty()
            && types.len() == names.len()
        {
            scope = Some(prefix.clone());
            ns = rest[i + 1].clone();
            prefix = format!("{prefix}/providers/{ns}");
            types.clear();
            names.clear();
            i += 2;
            continue;
        }
        types.push(rest[i].clone());
        prefix = format!("{prefix}/{}", rest[i]);
        i += 1;
        if i < rest.len() {
            names.push(rest[i].clone());
            prefix = format!("{prefix}/{}", rest[i]);
            i += 1;
        }
    }
    let mut action = None;
    if types.len() > names.len() {
        let full = std::iter::once(ns.as_str())
            .chain(types.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("/");
        let is_collection = kinds::lookup(&full).is_some()
            || lc(types.last().map(String::as_str).unwrap_or("")) == "networkinterfaces";
        if !is_collection && !names.is_empty() {
            action = types.pop();
        }
    }
    Route::Resource(ResPath {
        sub,
        rg,
        scope,
        ns,
        types,
        names,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        crate::http::split_path(p)
    }

    #[test]
    fn extension_resource_under_cluster() {
        let r = parse(&segs(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/c1/providers/Microsoft.KubernetesConfiguration/extensions/flux",
        ));
        let Route::Resource(p) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            p.full_type(),
            "Microsoft.KubernetesConfiguration/extensions"
        );
        assert_eq!(p.names, vec!["flux".to_string()]);
        assert_eq!(
            p.scope.as_deref(),
            Some(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/c1"
            )
        );
    }

    #[test]
    fn actions_collections_and_groups_case_insensitive() {
        let r = parse(&segs(
            "/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1/start",
        ));
        let Route::Resource(p) = r else { panic!() };
        assert_eq!(p.action.as_deref(), Some("start"));
        let r = parse(&segs(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets",
        ));
        let Route::Resource(p) = r else { panic!() };
        assert!(p.is_collection());
        assert_eq!(
            parse(&segs("/subscriptions/s/resourcegroups/rg")),
            Route::Group {
                sub: "s".into(),
                rg: "rg".into()
            }
        );
    }
}
