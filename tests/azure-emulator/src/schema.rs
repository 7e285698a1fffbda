//! Request-body validation against the SDK-derived wire schemas in `schemas/`.
//!
//! Checks JSON types, `required` properties and `enum` values (case-insensitively, as ARM
//! does; VM sizes by their naming convention instead, see `arm/vm_size.rs`); read-only
//! properties are ignored. Unknown properties are allowed, except by
//! Compute, which (like the real service) refuses a member its types do not have.

use std::sync::OnceLock;

use serde_json::Value;

/// The schema files, one per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaFile {
    Resources,
    Network,
    Compute,
    HybridKubernetes,
    Extensions,
    Flux,
    KeyVault,
    Authorization,
    Msi,
    ContainerService,
    Storage,
}

impl SchemaFile {
    fn text(self) -> &'static str {
        match self {
            Self::Resources => include_str!("../schemas/schema-resources-2025-04-01.json"),
            Self::Network => include_str!("../schemas/schema-network-2026-03-01.json"),
            Self::Compute => include_str!("../schemas/schema-compute-2026-04-01.json"),
            Self::HybridKubernetes => {
                include_str!("../schemas/schema-hybridkubernetes-2026-05-01.json")
            }
            Self::Extensions => {
                include_str!("../schemas/schema-k8sconfig-extensions-2025-03-01.json")
            }
            Self::Flux => include_str!("../schemas/schema-k8sconfig-flux-2025-04-01.json"),
            Self::KeyVault => include_str!("../schemas/schema-keyvault-secrets.json"),
            Self::Authorization => include_str!("../schemas/schema-authorization-2022-04-01.json"),
            Self::Msi => include_str!("../schemas/schema-msi-2024-11-30.json"),
            Self::ContainerService => {
                include_str!("../schemas/schema-containerservice-2026-08-01.json")
            }
            Self::Storage => include_str!("../schemas/schema-storage-2026-09-01.json"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn parsed(self) -> &'static Value {
        static CELLS: [OnceLock<Value>; 11] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        CELLS[self.index()].get_or_init(|| serde_json::from_str(self.text()).unwrap_or(Value::Null))
    }
}

/// Why a body does not match the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A required property is absent or null.
    Missing { path: String },
    /// A value is not one of the enum's values.
    BadEnum {
        path: String,
        value: String,
        allowed: Vec<String>,
    },
    /// A value has the wrong JSON type.
    BadType { path: String, expected: String },
    /// A member the object's type does not have (Compute only).
    UnknownMember {
        path: String,
        member: String,
        type_name: String,
    },
}

/// Validates `body` against definition `root` of `file`.
pub(crate) fn validate(file: SchemaFile, root: &str, body: &Value) -> Result<(), Violation> {
    let defs = &file.parsed()["definitions"];
    let strict = file == SchemaFile::Compute;
    check_def(defs, root, body, "", 0, strict)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

fn check_def(
    defs: &Value,
    name: &str,
    v: &Value,
    path: &str,
    depth: usize,
    strict: bool,
) -> Result<(), Violation> {
    if depth > 40 {
        return Ok(());
    }
    let Some(def) = defs.get(name) else {
        return Ok(());
    };
    let Some(obj) = v.as_object() else {
        if v.is_null() {
            return Ok(());
        }
        return Err(Violation::BadType {
            path: if path.is_empty() {
                "body".into()
            } else {
                path.to_string()
            },
            expected: "object".into(),
        });
    };
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    if strict && let Some(unknown) = obj.keys().find(|k| !props.contains_key(*k)) {
        return Err(Violation::UnknownMember {
            path: join(path, unknown),
            member: unknown.clone(),
            type_name: name.to_string(),
        });
    }
    for (pname, pschema) in props {
        if pschema.get("readOnly").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let ppath = join(path, pname);
        match obj.get(pname) {
            None | Some(Value::Null) => {
                if pschema.get("required").and_then(Value::as_bool) == Some(true) {
                    return Err(Violation::Missing { path: ppath });
                }
            }
            Some(val) => check_prop(defs, pschema, val, &ppath, depth, strict)?,
        }
    }
    Ok(())
}

fn check_prop(
    defs: &Value,
    schema: &Value,
    v: &Value,
    path: &str,
    depth: usize,
    strict: bool,
) -> Result<(), Violation> {
    if v.is_null() {
        return Ok(());
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return check_def(defs, ref_name(r), v, path, depth + 1, strict);
    }
    // VM sizes are an extensible enum the service stopped listing in 2023 (each region has its
    // own sizes): Compute checks them against the naming convention (arm/vm_size.rs).
    if schema.get("x-enum").and_then(Value::as_str) == Some("VirtualMachineSizeTypes") {
        return match v.as_str() {
            Some(_) => Ok(()),
            None => Err(Violation::BadType {
                path: path.into(),
                expected: "string".into(),
            }),
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        let allowed: Vec<String> = allowed
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        let Some(s) = v.as_str() else {
            return Err(Violation::BadType {
                path: path.into(),
                expected: "string".into(),
            });
        };
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) {
            return Err(Violation::BadEnum {
                path: path.into(),
                value: s.into(),
                allowed,
            });
        }
        return Ok(());
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !ok {
        return Err(Violation::BadType {
            path: path.into(),
            expected: ty.into(),
        });
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check_prop(
                defs,
                items,
                item,
                &format!("{path}[{i}]"),
                depth + 1,
                strict,
            )?;
        }
    }
    if let (Some(ap), Some(map)) = (schema.get("additionalProperties"), v.as_object())
        && ap.is_object()
    {
        for (k, item) in map {
            check_prop(defs, ap, item, &join(path, k), depth + 1, strict)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn security_rule_protocol_enum_and_required() {
        let ok = json!({"location":"eastus","properties":{"securityRules":[{"name":"ssh","properties":{
            "protocol":"tcp","access":"Allow","direction":"Inbound","priority":100}}]}});
        assert_eq!(
            validate(SchemaFile::Network, "NetworkSecurityGroup", &ok),
            Ok(())
        );
        let bad = json!({"properties":{"securityRules":[{"properties":{
            "protocol":"Carrier-Pigeon","access":"Allow","direction":"Inbound","priority":100}}]}});
        assert!(matches!(
            validate(SchemaFile::Network, "NetworkSecurityGroup", &bad),
            Err(Violation::BadEnum { ref path, .. }) if path == "properties.securityRules[0].properties.protocol"
        ));
        let missing = json!({"properties":{"securityRules":[{"properties":{
            "protocol":"Tcp","access":"Allow","direction":"Inbound"}}]}});
        assert_eq!(
            validate(SchemaFile::Network, "NetworkSecurityGroup", &missing),
            Err(Violation::Missing {
                path: "properties.securityRules[0].properties.priority".into()
            })
        );
    }

    #[test]
    fn connected_cluster_requires_identity_and_key() {
        let body = json!({"location":"eastus","properties":{"agentPublicKeyCertificate":"x"}});
        assert_eq!(
            validate(SchemaFile::HybridKubernetes, "ConnectedCluster", &body),
            Err(Violation::Missing {
                path: "identity".into()
            })
        );
    }

    #[test]
    fn compute_refuses_unknown_members_network_does_not() {
        let vm = json!({"location":"eastus","properties":{"hardwareProfile":{"vmSize":"Standard_B2s"},
            "osProfile":{"computerName":"a","adminUsername":"u","linuxConfiguration":{"disablePasswordAuthentication":true}}}});
        assert_eq!(validate(SchemaFile::Compute, "VirtualMachine", &vm), Ok(()));
        let mut typo = vm.clone();
        typo["properties"]["osProfile"]["adminUserName2"] = json!("u");
        assert_eq!(
            validate(SchemaFile::Compute, "VirtualMachine", &typo),
            Err(Violation::UnknownMember {
                path: "properties.osProfile.adminUserName2".into(),
                member: "adminUserName2".into(),
                type_name: "OSProfile".into()
            })
        );
        let nsg = json!({"location":"eastus","properties":{"whatever": 1}});
        assert_eq!(
            validate(SchemaFile::Network, "NetworkSecurityGroup", &nsg),
            Ok(())
        );
    }

    #[test]
    fn every_schema_file_parses() {
        for f in [
            SchemaFile::Resources,
            SchemaFile::Network,
            SchemaFile::Compute,
            SchemaFile::HybridKubernetes,
            SchemaFile::Extensions,
            SchemaFile::Flux,
            SchemaFile::KeyVault,
            SchemaFile::Authorization,
            SchemaFile::Msi,
        ] {
            assert!(f.parsed()["definitions"].is_object(), "{f:?}");
        }
    }
}
