//! The custom resource definitions of the built-in install, as the controllers Flux v2.7.5
//! pins ship them (`config/crd/bases` of source-controller v1.7.4, kustomize-controller
//! v1.7.3, helm-controller v1.4.5 and notification-controller v1.7.5): the same groups,
//! names, short names, scope, versions (served, storage, deprecated with upstream's warning),
//! status subresources, printer columns and schema defaults.
//!
//! What they leave out is the body of the OpenAPI schemas (several thousand lines upstream):
//! each version's schema is structural but open (`x-kubernetes-preserve-unknown-fields`),
//! carrying only the fields upstream gives a `default`, because the controllers read those
//! values as the API server fills them in (`status.observedGeneration: -1` among them, which
//! tells a new object from a reconciled one). Validation upstream's schemas do at admission
//! (enums, patterns, required fields, CEL rules) is therefore left to the controllers, which
//! report an invalid object as not Ready. Installs that want the full schemas give a release's
//! `install.yaml` as `components_file`.

use serde_json::{Map, Value, json};

/// A printer column: `(name, type, jsonPath)`.
type Column = (&'static str, &'static str, &'static str);

const AGE: Column = ("Age", "date", ".metadata.creationTimestamp");
const READY: Column = (
    "Ready",
    "string",
    ".status.conditions[?(@.type==\"Ready\")].status",
);
const STATUS: Column = (
    "Status",
    "string",
    ".status.conditions[?(@.type==\"Ready\")].message",
);
const URL: Column = ("URL", "string", ".spec.url");

const AGE_READY_STATUS: &[Column] = &[AGE, READY, STATUS];
const URL_AGE_READY_STATUS: &[Column] = &[URL, AGE, READY, STATUS];
const BUCKET_COLUMNS: &[Column] = &[("Endpoint", "string", ".spec.endpoint"), AGE, READY, STATUS];
const OCI_COLUMNS: &[Column] = &[URL, READY, STATUS, AGE];
const HELMCHART_COLUMNS: &[Column] = &[
    ("Chart", "string", ".spec.chart"),
    ("Version", "string", ".spec.version"),
    ("Source Kind", "string", ".spec.sourceRef.kind"),
    ("Source Name", "string", ".spec.sourceRef.name"),
    AGE,
    READY,
    STATUS,
];
const EXTERNAL_ARTIFACT_COLUMNS: &[Column] = &[
    AGE,
    READY,
    STATUS,
    ("Source", "string", ".spec.sourceRef.name"),
];

/// A schema default.
#[derive(Clone, Copy)]
pub enum Fill {
    Str(&'static str),
    Bool(bool),
    /// `status: {observedGeneration: -1}`.
    NewStatus,
}

impl Fill {
    fn value(self) -> Value {
        match self {
            Fill::Str(s) => json!(s),
            Fill::Bool(b) => json!(b),
            Fill::NewStatus => json!({"observedGeneration": -1}),
        }
    }

    fn schema_type(self) -> &'static str {
        match self {
            Fill::Str(_) => "string",
            Fill::Bool(_) => "boolean",
            Fill::NewStatus => "object",
        }
    }
}

/// A defaulted field: its path (`.`-separated, `[]` after an array's name) and default.
type Defaulted = (&'static str, Fill);

const NEW_STATUS: Defaulted = ("status", Fill::NewStatus);

/// One version of a CRD.
pub struct Version {
    pub name: &'static str,
    pub storage: bool,
    /// Deprecated in favour of this version.
    pub deprecated_for: Option<&'static str>,
    /// Whether it has the status subresource.
    pub status: bool,
    pub columns: &'static [Column],
    pub defaults: &'static [Defaulted],
}

/// A custom resource definition of the install.
pub struct Crd {
    /// The controller that ships it (its `app.kubernetes.io/component` label).
    pub controller: &'static str,
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    pub versions: &'static [Version],
}

const fn served(
    name: &'static str,
    columns: &'static [Column],
    defaults: &'static [Defaulted],
) -> Version {
    Version {
        name,
        storage: true,
        deprecated_for: None,
        status: true,
        columns,
        defaults,
    }
}

const fn deprecated(
    name: &'static str,
    for_: &'static str,
    columns: &'static [Column],
    defaults: &'static [Defaulted],
) -> Version {
    Version {
        name,
        storage: false,
        deprecated_for: Some(for_),
        status: true,
        columns,
        defaults,
    }
}

const SOURCE: &str = "source.toolkit.fluxcd.io";
const NOTIFICATION: &str = "notification.toolkit.fluxcd.io";

const BUCKET_DEFAULTS: &[Defaulted] = &[
    ("spec.provider", Fill::Str("generic")),
    ("spec.timeout", Fill::Str("60s")),
    NEW_STATUS,
];
const HELMCHART_DEFAULTS: &[Defaulted] = &[
    ("spec.reconcileStrategy", Fill::Str("ChartVersion")),
    ("spec.verify.provider", Fill::Str("cosign")),
    ("spec.version", Fill::Str("*")),
    NEW_STATUS,
];
const HELMREPOSITORY_DEFAULTS: &[Defaulted] =
    &[("spec.provider", Fill::Str("generic")), NEW_STATUS];
const OCIREPOSITORY_DEFAULTS: &[Defaulted] = &[
    ("spec.provider", Fill::Str("generic")),
    ("spec.timeout", Fill::Str("60s")),
    ("spec.verify.provider", Fill::Str("cosign")),
    NEW_STATUS,
];
const KUSTOMIZATION_DEFAULTS: &[Defaulted] = &[
    ("spec.force", Fill::Bool(false)),
    (
        "spec.postBuild.substituteFrom[].optional",
        Fill::Bool(false),
    ),
    NEW_STATUS,
];
const HELMRELEASE_DEFAULTS: &[Defaulted] = &[
    (
        "spec.chart.spec.reconcileStrategy",
        Fill::Str("ChartVersion"),
    ),
    ("spec.chart.spec.verify.provider", Fill::Str("cosign")),
    ("spec.chart.spec.version", Fill::Str("*")),
    (
        "spec.uninstall.deletionPropagation",
        Fill::Str("background"),
    ),
    NEW_STATUS,
];

/// The CRDs of source-, kustomize-, helm- and notification-controller, in their order.
pub const CRDS: &[Crd] = &[
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "GitRepository",
        plural: "gitrepositories",
        short_names: &["gitrepo"],
        versions: &[
            served(
                "v1",
                URL_AGE_READY_STATUS,
                &[
                    ("spec.timeout", Fill::Str("60s")),
                    ("spec.verify.mode", Fill::Str("HEAD")),
                    NEW_STATUS,
                ],
            ),
            deprecated(
                "v1beta2",
                "v1",
                URL_AGE_READY_STATUS,
                &[
                    ("spec.gitImplementation", Fill::Str("go-git")),
                    ("spec.timeout", Fill::Str("60s")),
                    NEW_STATUS,
                ],
            ),
        ],
    },
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "HelmRepository",
        plural: "helmrepositories",
        short_names: &["helmrepo"],
        versions: &[
            served("v1", URL_AGE_READY_STATUS, HELMREPOSITORY_DEFAULTS),
            deprecated(
                "v1beta2",
                "v1",
                URL_AGE_READY_STATUS,
                HELMREPOSITORY_DEFAULTS,
            ),
        ],
    },
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "HelmChart",
        plural: "helmcharts",
        short_names: &["hc"],
        versions: &[
            served("v1", HELMCHART_COLUMNS, HELMCHART_DEFAULTS),
            deprecated("v1beta2", "v1", HELMCHART_COLUMNS, HELMCHART_DEFAULTS),
        ],
    },
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "Bucket",
        plural: "buckets",
        short_names: &[],
        versions: &[
            served("v1", BUCKET_COLUMNS, BUCKET_DEFAULTS),
            deprecated("v1beta2", "v1", BUCKET_COLUMNS, BUCKET_DEFAULTS),
        ],
    },
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "OCIRepository",
        plural: "ocirepositories",
        short_names: &["ocirepo"],
        versions: &[
            served("v1", OCI_COLUMNS, OCIREPOSITORY_DEFAULTS),
            deprecated("v1beta2", "v1", OCI_COLUMNS, OCIREPOSITORY_DEFAULTS),
        ],
    },
    Crd {
        controller: "source-controller",
        group: SOURCE,
        kind: "ExternalArtifact",
        plural: "externalartifacts",
        short_names: &[],
        versions: &[served("v1", EXTERNAL_ARTIFACT_COLUMNS, &[])],
    },
    Crd {
        controller: "kustomize-controller",
        group: "kustomize.toolkit.fluxcd.io",
        kind: "Kustomization",
        plural: "kustomizations",
        short_names: &["ks"],
        versions: &[
            served("v1", AGE_READY_STATUS, KUSTOMIZATION_DEFAULTS),
            deprecated("v1beta2", "v1", AGE_READY_STATUS, KUSTOMIZATION_DEFAULTS),
        ],
    },
    Crd {
        controller: "helm-controller",
        group: "helm.toolkit.fluxcd.io",
        kind: "HelmRelease",
        plural: "helmreleases",
        short_names: &["hr"],
        versions: &[
            served("v2", AGE_READY_STATUS, HELMRELEASE_DEFAULTS),
            deprecated("v2beta2", "v2", AGE_READY_STATUS, HELMRELEASE_DEFAULTS),
        ],
    },
    Crd {
        controller: "notification-controller",
        group: NOTIFICATION,
        kind: "Provider",
        plural: "providers",
        short_names: &[],
        versions: &[
            deprecated("v1beta2", "v1beta3", AGE_READY_STATUS, &[NEW_STATUS]),
            // v1beta3 Alerts and Providers have no status (nor its subresource) upstream.
            Version {
                status: false,
                ..served("v1beta3", &[AGE], &[])
            },
        ],
    },
    Crd {
        controller: "notification-controller",
        group: NOTIFICATION,
        kind: "Alert",
        plural: "alerts",
        short_names: &[],
        versions: &[
            deprecated(
                "v1beta2",
                "v1beta3",
                AGE_READY_STATUS,
                &[("spec.eventSeverity", Fill::Str("info")), NEW_STATUS],
            ),
            Version {
                status: false,
                ..served(
                    "v1beta3",
                    &[AGE],
                    &[("spec.eventSeverity", Fill::Str("info"))],
                )
            },
        ],
    },
    Crd {
        controller: "notification-controller",
        group: NOTIFICATION,
        kind: "Receiver",
        plural: "receivers",
        short_names: &[],
        versions: &[
            served(
                "v1",
                AGE_READY_STATUS,
                &[("spec.interval", Fill::Str("10m")), NEW_STATUS],
            ),
            deprecated("v1beta2", "v1", AGE_READY_STATUS, &[NEW_STATUS]),
        ],
    },
];

/// An open object schema (`type: object`, unknown fields kept).
fn open_object() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    m
}

/// The open, structural schema of a version with its defaulted fields: every object on the
/// way to a default is an open object, an array's items too.
fn schema(defaults: &[Defaulted]) -> Value {
    let mut root = open_object();
    for (path, default) in defaults {
        let mut node = &mut root;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (name, array) = match part.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (part, false),
            };
            let props = node
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("properties is an object");
            let last = parts.peek().is_none();
            let child = props.entry(name).or_insert_with(|| {
                Value::Object(if last && !array {
                    let mut leaf = Map::new();
                    leaf.insert("type".into(), json!(default.schema_type()));
                    if default.schema_type() == "object" {
                        leaf.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
                    }
                    leaf
                } else if array {
                    let mut a = Map::new();
                    a.insert("type".into(), json!("array"));
                    a.insert("items".into(), Value::Object(open_object()));
                    a
                } else {
                    open_object()
                })
            });
            if last && !array {
                child["default"] = default.value();
                break;
            }
            let child = child.as_object_mut().expect("a schema node is an object");
            node = if array {
                child
                    .get_mut("items")
                    .and_then(Value::as_object_mut)
                    .expect("an array schema has items")
            } else {
                child
            };
        }
    }
    Value::Object(root)
}

/// The CustomResourceDefinition objects, labelled with `labels(component)`.
pub fn objects(labels: impl Fn(&str) -> Value) -> Vec<Value> {
    CRDS.iter()
        .map(|c| {
            let versions: Vec<Value> = c
                .versions
                .iter()
                .map(|v| {
                    let mut o = json!({
                        "additionalPrinterColumns": v.columns.iter()
                            .map(|(name, ty, path)| json!({"jsonPath": path, "name": name, "type": ty}))
                            .collect::<Vec<_>>(),
                        "name": v.name,
                        "schema": {"openAPIV3Schema": schema(v.defaults)},
                        "served": true,
                        "storage": v.storage,
                        "subresources": if v.status { json!({"status": {}}) } else { json!({}) },
                    });
                    if let Some(to) = v.deprecated_for {
                        o["deprecated"] = json!(true);
                        o["deprecationWarning"] =
                            json!(format!("{} {} is deprecated, upgrade to {to}", v.name, c.kind));
                    }
                    o
                })
                .collect();
            let mut names = json!({"kind": c.kind, "listKind": format!("{}List", c.kind),
                "plural": c.plural, "singular": c.kind.to_ascii_lowercase()});
            if !c.short_names.is_empty() {
                names["shortNames"] = json!(c.short_names);
            }
            json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{}.{}", c.plural, c.group), "labels": labels(c.controller)},
                "spec": {"group": c.group, "names": names, "scope": "Namespaced", "versions": versions}
            })
        })
        .collect()
}
