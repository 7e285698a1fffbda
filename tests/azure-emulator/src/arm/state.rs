//! In-memory ARM state: subscriptions, groups, provider registrations, resources and
//! operations, advanced lazily to the current (scaled) time before every request.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::kinds::{Family, Kind};
use crate::hook::{ClusterBacking, ManagedClusterSpec, PowerChange, VmBacking, VmCreated};
use crate::lro::{OpAction, Operation, Outcome};

pub(crate) struct ProviderReg {
    pub(crate) namespace: String,
    pub(crate) state: &'static str,
    /// A pending transition: (when, to).
    pub(crate) pending: Option<(Instant, &'static str)>,
    /// Until when the resource provider's own front end still answers
    /// `MissingSubscriptionRegistration` after the registration completed (ARM's registration
    /// propagates to the RP a little later).
    pub(crate) propagating_until: Option<Instant>,
}

pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) location: String,
    pub(crate) tags: Option<Value>,
    pub(crate) managed_by: Option<String>,
    pub(crate) deleting: bool,
}

pub(crate) struct Subscription {
    pub(crate) id: String,
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) providers: BTreeMap<String, ProviderReg>,
}

#[derive(Clone)]
pub(crate) struct Resource {
    pub(crate) id: String,
    pub(crate) kind: &'static Kind,
    pub(crate) body: Value,
    /// False while a `202 Accepted` create runs.
    pub(crate) visible: bool,
    /// The running operation, if any.
    pub(crate) op: Option<String>,
    /// VMs: `PowerState/...` code suffix.
    pub(crate) power_state: &'static str,
}

impl Resource {
    pub(crate) fn props_mut(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.body.get("properties").is_some_and(Value::is_object) {
            self.body["properties"] = json!({});
        }
        self.body["properties"]
            .as_object_mut()
            .expect("properties is an object")
    }

    pub(crate) fn set_provisioning_state(&mut self, s: &str) {
        self.props_mut()
            .insert("provisioningState".into(), Value::String(s.into()));
    }

    pub(crate) fn provisioning_state(&self) -> Option<&str> {
        self.body
            .pointer("/properties/provisioningState")
            .and_then(Value::as_str)
    }
}

/// A hook call to make once the state lock is released.
pub(crate) struct HookJob {
    pub(crate) op_id: String,
    pub(crate) resource_key: String,
    pub(crate) what: HookWhat,
}

/// What a hook job asks for.
pub(crate) enum HookWhat {
    /// Back a created VM.
    Vm(VmCreated),
    /// Create or reconcile a managed cluster.
    Cluster(ManagedClusterSpec),
}

/// A power change to tell the VM hook about once the state lock is released; the operation
/// waits for it.
pub(crate) struct PowerJob {
    pub(crate) op_id: String,
    pub(crate) resource_id: String,
    pub(crate) change: PowerChange,
}

/// Values `advance` needs from the configuration.
pub(crate) struct AdvanceCtx<'a> {
    pub(crate) registration_propagation: std::time::Duration,
    pub(crate) base_url: &'a str,
    pub(crate) tenant: &'a str,
}

#[derive(Default)]
pub(crate) struct ArmState {
    pub(crate) subs: BTreeMap<String, Subscription>,
    pub(crate) resources: BTreeMap<String, Resource>,
    pub(crate) ops: HashMap<String, Operation>,
    pub(crate) pending_hooks: Vec<HookJob>,
    /// Power changes of backed VMs, for the hook.
    pub(crate) pending_power: Vec<PowerJob>,
    /// Storage account keys (key1, key2) by account resource key: never in a body.
    pub(crate) storage_keys: HashMap<String, Value>,
    /// Backed VMs and clusters deleted since the last request: their hosts are released
    /// after it; with an operation id, that operation waits for the release.
    pub(crate) released: Vec<(String, Option<String>)>,
    /// Hook results per VM resource key.
    pub(crate) backings: HashMap<String, VmBacking>,
    /// Cluster hook results per managed-cluster resource key.
    pub(crate) cluster_backings: HashMap<String, ClusterBacking>,
    /// Next host number per subnet key.
    pub(crate) subnet_next: HashMap<String, u32>,
    pub(crate) next_public_ip: u32,
    /// Arc agents: the nonce each cluster's agent must sign next, by cluster key.
    pub(crate) agent_nonces: HashMap<String, String>,
    /// Arc agents: the tokens connected agents call with, to their cluster key.
    pub(crate) agent_tokens: HashMap<String, String>,
}

pub(crate) fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

impl ArmState {
    pub(crate) fn sub(&self, sub: &str) -> Option<&Subscription> {
        self.subs.get(&key(sub))
    }

    pub(crate) fn sub_mut(&mut self, sub: &str) -> Option<&mut Subscription> {
        self.subs.get_mut(&key(sub))
    }

    pub(crate) fn group(&self, sub: &str, rg: &str) -> Option<&Group> {
        self.sub(sub)?.groups.get(&key(rg))
    }

    /// Whether the RP of `ns` still refuses requests at `now`: registered a moment ago.
    pub(crate) fn provider_propagating(&self, sub: &str, ns: &str, now: Instant) -> bool {
        self.sub(sub)
            .and_then(|s| s.providers.get(&key(ns)))
            .and_then(|p| p.propagating_until)
            .is_some_and(|until| now < until)
    }

    pub(crate) fn provider_registered(&self, sub: &str, ns: &str) -> bool {
        if ns.eq_ignore_ascii_case("Microsoft.Resources") {
            return true;
        }
        self.sub(sub)
            .and_then(|s| s.providers.get(&key(ns)))
            .is_some_and(|p| p.state == "Registered")
    }

    /// Resources (visible) whose key starts with `prefix` and whose kind is `kind`.
    pub(crate) fn children_of<'a>(
        &'a self,
        parent_key: &str,
        kind_ty: &str,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        let prefix = format!("{parent_key}/");
        let ty = kind_ty.to_string();
        self.resources
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r)
            .filter(move |r| r.visible && r.kind.ty.eq_ignore_ascii_case(&ty))
    }

    /// Removes a resource and everything under its id; backed VMs among them are released.
    pub(crate) fn remove_tree(&mut self, rkey: &str) {
        let prefix = format!("{rkey}/");
        self.release_backings(|k| k == rkey || k.starts_with(&prefix));
        self.resources
            .retain(|k, _| k != rkey && !k.starts_with(&prefix));
    }

    /// A delete of everything matching was accepted as operation `op_id`: the backed hosts
    /// among it are released now and the operation ends only once they are (a deleted VM's
    /// host is off when its delete reports Succeeded, as the VM is gone on Azure).
    pub(crate) fn release_for_delete(&mut self, op_id: &str, matches: impl Fn(&str) -> bool) {
        let before = self.released.len();
        self.release_backings(matches);
        let n = self.released.len() - before;
        for r in &mut self.released[before..] {
            r.1 = Some(op_id.to_string());
        }
        if let Some(op) = self.ops.get_mut(op_id) {
            op.hooks_pending += n as u32;
        }
    }

    /// Forgets the backings whose resource key matches, queueing their hosts' release.
    fn release_backings(&mut self, matches: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .backings
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for k in gone {
            self.backings.remove(&k);
            if let Some(r) = self.resources.get(&k) {
                self.released.push((r.id.clone(), None));
            }
        }
        let clusters: Vec<String> = self
            .cluster_backings
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for k in clusters {
            self.cluster_backings.remove(&k);
            if let Some(r) = self.resources.get(&k) {
                self.released.push((r.id.clone(), None));
            }
        }
    }

    /// Brings providers and operations up to `now`.
    pub(crate) fn advance(&mut self, now: Instant, ctx: &AdvanceCtx<'_>) {
        for sub in self.subs.values_mut() {
            for p in sub.providers.values_mut() {
                if let Some((at, to)) = p.pending
                    && now >= at
                {
                    p.state = to;
                    p.pending = None;
                    p.propagating_until = (to == "Registered")
                        .then(|| at + ctx.registration_propagation)
                        .filter(|until| *until > at);
                }
            }
        }
        let mut due: Vec<(Instant, String)> = self
            .ops
            .values()
            .filter(|o| !o.is_done() && o.due(now))
            .map(|o| (o.start, o.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            self.finish_op(&id, ctx);
        }
        let running: Vec<(String, &'static str)> = self
            .ops
            .values()
            .filter(|o| !o.is_done())
            .map(|o| (o.resource_key.clone(), o.stage(now)))
            .collect();
        for (rkey, stage) in running {
            if let Some(r) = self.resources.get_mut(&rkey)
                && r.op.is_some()
                && r.provisioning_state() != Some("Deleting")
            {
                r.set_provisioning_state(stage);
            }
        }
    }

    fn finish_op(&mut self, id: &str, ctx: &AdvanceCtx<'_>) {
        let Some(op) = self.ops.get(id) else {
            return;
        };
        let outcome = if let Some(e) = &op.hook_error {
            if op
                .namespace
                .eq_ignore_ascii_case("Microsoft.ContainerService")
            {
                Outcome::Failed {
                    code: "ReconcileManagedClusterFailed".into(),
                    message: format!("The managed cluster's backing cluster failed: {e}"),
                }
            } else {
                Outcome::Failed {
                    code: "VMProvisioningFailed".into(),
                    message: format!("The VM backing hook failed: {e}"),
                }
            }
        } else if let Some((code, message)) = &op.planned_failure {
            Outcome::Failed {
                code: code.clone(),
                message: message.clone(),
            }
        } else {
            Outcome::Succeeded
        };
        let action = op.action;
        let rkey = op.resource_key.clone();
        let resource_id = op.resource_id.clone();
        let succeeded = outcome == Outcome::Succeeded;
        if let Some(op) = self.ops.get_mut(id) {
            op.finish(outcome);
        }
        match action {
            OpAction::Create | OpAction::Update => {
                let family = match self.resources.get_mut(&rkey) {
                    Some(r) => {
                        r.op = None;
                        if succeeded {
                            r.visible = true;
                            r.set_provisioning_state("Succeeded");
                            Some(r.kind.family)
                        } else if !r.visible {
                            None
                        } else {
                            r.set_provisioning_state("Failed");
                            None
                        }
                    }
                    None => None,
                };
                if !succeeded && self.resources.get(&rkey).is_some_and(|r| !r.visible) {
                    self.remove_tree(&rkey);
                }
                match family {
                    Some(Family::Compute) => super::compute::on_succeeded(self, &rkey, action),
                    Some(Family::Cluster) => {
                        super::kubernetes::on_cluster_succeeded(self, &rkey, ctx)
                    }
                    Some(Family::K8sConfig) => super::kubernetes::on_config_succeeded(self, &rkey),
                    Some(
                        Family::Network
                        | Family::Authorization
                        | Family::ManagedIdentity
                        | Family::Aks
                        | Family::Storage,
                    )
                    | None => {}
                }
            }
            OpAction::Delete => {
                if succeeded {
                    self.remove_tree(&rkey);
                } else if let Some(r) = self.resources.get_mut(&rkey) {
                    r.op = None;
                    r.set_provisioning_state("Failed");
                }
            }
            OpAction::Action(power) => {
                let targets = self
                    .ops
                    .get(id)
                    .map(|o| o.targets.clone())
                    .unwrap_or_default();
                for (t, before) in targets {
                    if let Some(r) = self.resources.get_mut(&t) {
                        r.power_state = if succeeded { power } else { before };
                    }
                }
                if let Some(r) = self.resources.get_mut(&rkey) {
                    r.op = None;
                    if succeeded {
                        r.power_state = power;
                    }
                    r.set_provisioning_state(if succeeded { "Succeeded" } else { "Failed" });
                }
            }
            OpAction::ResourceGroupDelete => {
                // resource_id is /subscriptions/{s}/resourceGroups/{rg}
                let parts: Vec<&str> = resource_id.split('/').collect();
                if let (Some(sub), Some(rg)) = (parts.get(2), parts.get(4)) {
                    if succeeded {
                        let prefix = format!("{rkey}/");
                        self.release_backings(|k| k.starts_with(&prefix));
                        self.resources.retain(|k, _| !k.starts_with(&prefix));
                        if let Some(s) = self.sub_mut(sub) {
                            s.groups.remove(&key(rg));
                        }
                    } else if let Some(g) =
                        self.sub_mut(sub).and_then(|s| s.groups.get_mut(&key(rg)))
                    {
                        g.deleting = false;
                    }
                }
            }
        }
    }

    /// Allocates the next private address in a subnet (Azure reserves the first four).
    pub(crate) fn allocate_private_ip(&mut self, subnet_key: &str, prefix: &str) -> String {
        let n = self.subnet_next.entry(subnet_key.to_string()).or_insert(4);
        let ip = nth_host(prefix, *n).unwrap_or_else(|| format!("10.0.0.{}", *n));
        *n += 1;
        ip
    }

    /// Allocates a public address from 203.0.113.0/24 (TEST-NET-3).
    pub(crate) fn allocate_public_ip(&mut self) -> String {
        self.next_public_ip += 1;
        format!("203.0.113.{}", 9 + (self.next_public_ip % 240))
    }
}

/// The `n`th address of an IPv4 CIDR prefix.
fn nth_host(prefix: &str, n: u32) -> Option<String> {
    let (addr, _) = prefix.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    match ip {
        IpAddr::V4(v4) => Some(std::net::Ipv4Addr::from(u32::from(v4).wrapping_add(n)).to_string()),
        IpAddr::V6(_) => None,
    }
}
