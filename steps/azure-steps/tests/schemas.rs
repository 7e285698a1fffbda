//! Every request body the steps send validates against the SDK-derived wire schema of its
//! api-version (/work/shared/azure-specs/sdk-derived), strictly: known properties only, no
//! read-only properties, required ones present, JSON types and enum values respected.

mod common;

use common::Env;
use serde_json::{Map, Value};
use siteflow_engine::runner::RunStatus;

const PACK: &str = "/work/shared/azure-specs/sdk-derived";

struct Schema {
    defs: Map<String, Value>,
    enums: Map<String, Value>,
}

impl Schema {
    fn load(file: &str) -> Schema {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{PACK}/{file}")).unwrap())
                .unwrap();
        Schema {
            defs: v["definitions"].as_object().unwrap().clone(),
            enums: v["enums"].as_object().cloned().unwrap_or_default(),
        }
    }

    fn properties(&self, def: &str) -> Map<String, Value> {
        let d = &self.defs[def];
        let mut props = d["properties"].as_object().cloned().unwrap_or_default();
        if let Some(bases) = d.get("x-sdk-bases").and_then(Value::as_array) {
            for b in bases.iter().filter_map(Value::as_str) {
                if self.defs.contains_key(b) {
                    for (k, v) in self.properties(b) {
                        props.entry(k).or_insert(v);
                    }
                }
            }
        }
        props
    }

    fn check_def(&self, def: &str, v: &Value, at: &str, errs: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errs.push(format!("{at}: expected an object ({def})"));
            return;
        };
        let props = self.properties(def);
        for (k, val) in obj {
            match props.get(k) {
                None => errs.push(format!("{at}.{k}: not a property of {def}")),
                Some(p) if p.get("readOnly") == Some(&Value::Bool(true)) => {
                    errs.push(format!("{at}.{k}: read-only property sent"))
                }
                Some(p) => self.check(p, val, &format!("{at}.{k}"), errs),
            }
        }
        for (k, p) in &props {
            if p.get("required") == Some(&Value::Bool(true))
                && p.get("readOnly") != Some(&Value::Bool(true))
                && !obj.contains_key(k)
            {
                errs.push(format!("{at}.{k}: required by {def}"));
            }
        }
    }

    fn check(&self, s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            self.check_def(r.trim_start_matches("#/definitions/"), v, at, errs);
            return;
        }
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
        let ok = match ty {
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        };
        if !ok {
            errs.push(format!("{at}: expected {ty}, got {v}"));
            return;
        }
        let allowed = s
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| {
                s.get("x-enum")
                    .and_then(Value::as_str)
                    .and_then(|n| self.enums.get(n))
                    .and_then(Value::as_array)
                    .cloned()
            });
        if let (Some(allowed), Some(x)) = (allowed, v.as_str())
            && !allowed
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(x)))
        {
            errs.push(format!("{at}: {x} is not one of {allowed:?}"));
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                self.check(items, x, &format!("{at}[{i}]"), errs);
            }
        }
        if let (Some(ap), Some(obj)) = (s.get("additionalProperties"), v.as_object()) {
            for (k, x) in obj {
                self.check(ap, x, &format!("{at}.{k}"), errs);
            }
        }
    }
}

/// (schema file, api-version, root model) for a request path.
fn route(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let p = path.to_ascii_lowercase();
    Some(if p.contains("/secrets/") {
        ("schema-keyvault-secrets.json", "7.6", "SecretSetParameters")
    } else if p.contains("/networksecuritygroups/") {
        (
            "schema-network-2026-03-01.json",
            "2026-03-01",
            "NetworkSecurityGroup",
        )
    } else if p.contains("/virtualnetworks/") {
        (
            "schema-network-2026-03-01.json",
            "2026-03-01",
            "VirtualNetwork",
        )
    } else if p.contains("/publicipaddresses/") {
        (
            "schema-network-2026-03-01.json",
            "2026-03-01",
            "PublicIPAddress",
        )
    } else if p.contains("/networkinterfaces/") {
        (
            "schema-network-2026-03-01.json",
            "2026-03-01",
            "NetworkInterface",
        )
    } else if p.contains("/virtualmachinescalesets/") {
        (
            "schema-compute-2026-04-01.json",
            "2026-04-01",
            "VirtualMachineScaleSet",
        )
    } else if p.contains("/virtualmachines/") {
        (
            "schema-compute-2026-04-01.json",
            "2026-04-01",
            "VirtualMachine",
        )
    } else if p.contains("/resourcegroups/") && !p.contains("/providers/") {
        (
            "schema-resources-2025-04-01.json",
            "2025-04-01",
            "ResourceGroup",
        )
    } else {
        return None;
    })
}

#[test]
fn the_validator_rejects_what_it_should() {
    let s = Schema::load("schema-network-2026-03-01.json");
    let mut errs = vec![];
    s.check_def("NetworkSecurityGroup", &serde_json::json!({"location": "x", "etag": "e", "bogus": 1, "properties": {"securityRules": [{"name": "r", "properties": {"protocol": "Icmpv9", "access": "Allow", "direction": "Inbound", "priority": "high"}}]}}), "$", &mut errs);
    let all = errs.join("\n");
    assert!(all.contains("$.etag: read-only"), "{all}");
    assert!(all.contains("$.bogus: not a property"), "{all}");
    assert!(all.contains("Icmpv9 is not one of"), "{all}");
    assert!(all.contains("priority: expected integer"), "{all}");
}

#[tokio::test]
async fn every_request_body_matches_its_api_version_schema() {
    let env = Env::new().await;
    let a = env.azure();
    let wf = env.workflow(&format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg1, location: westeurope, tags: {{ env: test }} }}\n\
         \x20 - id: providers\n    uses: azure.register-providers\n    with: {{ azure: {a}, poll_interval_secs: 0.05 }}\n\
         \x20 - id: net\n    uses: azure.network\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: edge, admin_cidr: 203.0.113.0/24, public_ips: [server] }}\n\
         \x20 - id: vm\n    uses: azure.vm\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: vm1, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", public_ip_id: \"${{{{ steps.net.outputs.public_ip_ids.server }}}}\", custom_data: \"#cloud-config\\n\", spot: true, eviction_policy: Deallocate, zone: \"2\", os_disk_size_gb: 64, os_disk_type: StandardSSD_LRS }}\n\
         \x20 - id: vm2\n    uses: azure.vm\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: vm2, managed_identity: false, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d t\" }}\n\
         \x20 - id: pool\n    uses: azure.vmss\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: pool, capacity: 2, custom_data: \"#cloud-config\\n\", subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d t\" }}\n\
         \x20 - id: kv\n    uses: azure.keyvault-secret\n    with: {{ azure: {a}, vault_url: \"{b}\", name: s1, mode: ensure, content_type: text/plain }}\n",
        b = env.emu.base_url()
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let mut checked = std::collections::BTreeSet::new();
    let mut errs = vec![];
    for e in env.emu.request_log().entries() {
        if !matches!(e.method.as_str(), "PUT" | "PATCH" | "POST") {
            continue;
        }
        let Some((file, version, root)) = route(&e.path) else {
            assert!(
                e.body.is_none() || e.path.contains("/oauth2/"),
                "unrouted body for {} {}",
                e.method,
                e.path
            );
            continue;
        };
        assert_eq!(
            e.api_version.as_deref(),
            Some(version),
            "{} {}",
            e.method,
            e.path
        );
        let body = e
            .body
            .clone()
            .unwrap_or_else(|| panic!("{} {} has a body", e.method, e.path));
        Schema::load(file).check_def(root, &body, root, &mut errs);
        checked.insert(root);
    }
    assert!(errs.is_empty(), "schema violations:\n{}", errs.join("\n"));
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        vec![
            "NetworkInterface",
            "NetworkSecurityGroup",
            "PublicIPAddress",
            "ResourceGroup",
            "SecretSetParameters",
            "VirtualMachine",
            "VirtualMachineScaleSet",
            "VirtualNetwork"
        ]
    );
    env.emu.shutdown().await;
}
