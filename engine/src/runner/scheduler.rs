//! The scheduler: a synchronous state machine over a plan's steps. It takes completions
//! and returns the writes to commit, the spawns to start and the events to report; it does
//! no I/O itself (the invocation commits, spawns and waits).

use super::event::RunEvent;
use crate::expr;
use crate::plan::{Plan, PlannedStep};
use crate::redact::{Redactor, has_secret_placeholder, secret_at};
use crate::state::{AttemptOutcome, RunStatus, StepRow, StepStatus, Write};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use siteflow_step::StepError;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Where a plan step stands in this invocation.
#[derive(Default)]
struct Node {
    state: NodeState,
    /// Instances (one, or one per `for_each` item).
    instances: Vec<Instance>,
    /// Instances not yet started, by index.
    queue: std::collections::VecDeque<usize>,
    running: usize,
    /// Outputs for expressions (secrets in clear, in memory only).
    outputs: Value,
    items: Value,
    failed: bool,
    cancelled: bool,
    /// Some instance ran in this invocation (its outputs may differ from the stored ones).
    ran: bool,
}

#[derive(Default, PartialEq, Clone, Copy, Debug)]
enum NodeState {
    #[default]
    Waiting,
    Active,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    /// A need failed: never starts in this invocation.
    Blocked,
}

impl NodeState {
    /// The status expressions see as `steps.<id>.status`.
    fn status(self) -> StepStatus {
        match self {
            NodeState::Waiting => StepStatus::Pending,
            NodeState::Active => StepStatus::Running,
            NodeState::Succeeded => StepStatus::Succeeded,
            NodeState::Failed => StepStatus::Failed,
            NodeState::Skipped => StepStatus::Skipped,
            NodeState::Cancelled => StepStatus::Cancelled,
            NodeState::Blocked => StepStatus::Blocked,
        }
    }
}

struct Instance {
    key: String,
    input: Value,
    input_hash: String,
    outputs: Option<Value>,
    persisted: Option<Value>,
    done: Option<StepStatus>,
}

/// What ended: an instance's attempts, or the re-observation of its secret outputs.
pub(super) enum Completion {
    /// The attempt loop of an instance ended.
    Attempt {
        /// The plan step.
        node: usize,
        /// The instance.
        inst: usize,
        /// Its last attempt.
        attempt: u32,
        /// Outputs (secrets in clear), or the error.
        result: Result<Value, StepError>,
        /// Whether `observe` found it done.
        satisfied: bool,
    },
    /// A secret-output recovery ended: the outputs in clear, or `None` (the step runs again).
    Recovered {
        /// The plan step.
        node: usize,
        /// The instance.
        inst: usize,
        /// The recovered outputs.
        outputs: Option<Value>,
    },
}

/// Something to run on a task of its own.
pub(super) enum Spawn {
    /// An instance's attempt loop (its `Started` write is in the same batch).
    Attempt(AttemptSpawn),
    /// Re-observe a succeeded instance whose secret outputs were not persisted.
    Recover(RecoverSpawn),
}

/// An instance to start.
pub(super) struct AttemptSpawn {
    /// The plan step.
    pub node: usize,
    /// The instance.
    pub inst: usize,
    /// Its key.
    pub key: String,
    /// Its resolved input.
    pub input: Value,
    /// Hash of the input (secrets redacted).
    pub input_hash: String,
    /// The first attempt's number.
    pub attempt: u32,
    /// Progress an earlier invocation saved.
    pub progress: Option<Value>,
}

/// An instance whose secret outputs are to be observed again.
pub(super) struct RecoverSpawn {
    /// The plan step.
    pub node: usize,
    /// The instance.
    pub inst: usize,
    /// Its key.
    pub key: String,
    /// Its resolved input.
    pub input: Value,
    /// Progress an earlier invocation saved.
    pub progress: Option<Value>,
}

/// What one turn of the scheduler asks of the invocation, in order.
#[derive(Default)]
pub(super) struct Effects {
    /// To commit (before any spawn starts).
    pub writes: Vec<Write>,
    /// To start once the writes are committed.
    pub spawns: Vec<Spawn>,
    /// To report.
    pub events: Vec<RunEvent>,
}

/// A finished scheduler's state (large for a large run), dropped on a blocking thread.
pub(super) struct Leftovers {
    _nodes: Vec<Node>,
    _prior: HashMap<String, StepRow>,
}

/// The state machine of one invocation over a plan.
pub(super) struct Scheduler<'a> {
    run_id: String,
    site: Option<String>,
    plan: &'a Plan,
    /// The rows a resume found (moved, not copied, into a map sized up front).
    prior: HashMap<String, StepRow>,
    secrets: Map<String, Value>,
    redactor: Arc<Redactor>,
    nodes: Vec<Node>,
    force: BTreeSet<usize>,
    reload: bool,
    /// Bound on concurrently running instances.
    parallel: usize,
    running: usize,
    /// Secret-output recoveries in flight.
    recovering: usize,
    /// No more starts (Ctrl-C, `siteflow cancel`, a lost lease).
    drained: bool,
    out: Effects,
    /// Per node: needs not yet final.
    pending_deps: Vec<usize>,
    /// Per node: the nodes that need it.
    dependents: Vec<Vec<usize>>,
    /// Nodes whose needs are all final, not yet activated.
    ready: std::collections::VecDeque<usize>,
    /// Active nodes with instances not yet started, in file order.
    startable: Vec<usize>,
    /// Step id → node index.
    index: HashMap<&'a str, usize>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler over `plan`; `prior` are the rows an earlier invocation left, `force` the
    /// steps to run again, `reload` whether changed inputs run again.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: String,
        plan: &'a Plan,
        prior: Vec<StepRow>,
        secrets: Map<String, Value>,
        redactor: Arc<Redactor>,
        force: BTreeSet<usize>,
        reload: bool,
        parallel: usize,
    ) -> Self {
        let n = plan.steps.len();
        let mut dependents = vec![vec![]; n];
        for (i, s) in plan.steps.iter().enumerate() {
            for &d in &s.deps {
                dependents[d].push(i);
            }
        }
        let pending_deps: Vec<usize> = plan.steps.iter().map(|s| s.deps.len()).collect();
        Scheduler {
            run_id,
            site: plan.site.clone(),
            plan,
            prior: {
                let mut map = HashMap::with_capacity(prior.len());
                for mut r in prior {
                    map.insert(std::mem::take(&mut r.key), r);
                }
                map
            },
            secrets,
            redactor,
            nodes: plan.steps.iter().map(|_| Node::default()).collect(),
            force,
            reload,
            parallel: parallel.max(1),
            running: 0,
            recovering: 0,
            drained: false,
            out: Effects::default(),
            ready: (0..n).filter(|&i| pending_deps[i] == 0).collect(),
            pending_deps,
            dependents,
            startable: vec![],
            index: plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.spec.id.value.as_str(), i))
                .collect(),
        }
    }

    /// Records a node's final state and readies the dependents that no longer wait.
    fn set_final(&mut self, i: usize, state: NodeState) {
        self.nodes[i].state = state;
        for k in 0..self.dependents[i].len() {
            let j = self.dependents[i][k];
            self.pending_deps[j] -= 1;
            if self.pending_deps[j] == 0 {
                self.ready.push_back(j);
            }
        }
    }

    /// What is left of the run's state once it ended, to free off the runtime's threads.
    pub fn into_leftovers(self) -> Leftovers {
        Leftovers {
            _nodes: self.nodes,
            _prior: self.prior,
        }
    }

    /// Queues a write for the next commit.
    pub fn write(&mut self, w: Write) {
        self.out.writes.push(w);
    }

    /// What to commit, start and report now.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.out)
    }

    /// Stops starting instances (and recoveries): running ones end on their own.
    pub fn drain(&mut self) {
        self.drained = true;
    }

    /// Attempt loops and recoveries in flight.
    pub fn in_flight(&self) -> usize {
        self.running + self.recovering
    }

    /// The run's status from where every step stands (final once nothing is in flight).
    pub fn status(&self) -> RunStatus {
        // Steps that never got to run in a drained run are Cancelled (resumable).
        let mut status = RunStatus::Succeeded;
        for n in &self.nodes {
            match n.state {
                NodeState::Succeeded | NodeState::Skipped => {}
                NodeState::Failed if !n.cancelled => status = status.max_with(RunStatus::Failed),
                NodeState::Failed | NodeState::Cancelled => {
                    status = status.max_with(RunStatus::Cancelled)
                }
                NodeState::Blocked => status = status.max_with(RunStatus::Failed),
                NodeState::Waiting | NodeState::Active => {
                    status = status.max_with(if self.drained {
                        RunStatus::Cancelled
                    } else {
                        RunStatus::Failed
                    })
                }
            }
        }
        // A failure that continue_on_error tolerates does not fail the run.
        if status == RunStatus::Failed
            && self.nodes.iter().zip(&self.plan.steps).all(|(n, s)| {
                n.state != NodeState::Blocked
                    && !matches!(n.state, NodeState::Waiting | NodeState::Active)
                    && (n.state != NodeState::Failed || s.spec.continue_on_error)
            })
        {
            status = RunStatus::Succeeded;
        }
        status
    }

    /// Takes back the starts a [`Write::StartGate`] refused: their instances wait again.
    pub fn unstart(&mut self, refused: Vec<AttemptSpawn>) {
        for sp in refused {
            let n = &mut self.nodes[sp.node];
            n.queue.push_front(sp.inst);
            n.running -= 1;
            self.running -= 1;
            if !self.startable.contains(&sp.node) {
                self.startable.push(sp.node);
            }
        }
    }

    /// Whether something could still start (or be activated).
    pub fn can_progress(&self) -> bool {
        !self.ready.is_empty() || !self.startable.is_empty()
    }

    /// `Some(blocked)` when every need is final.
    fn deps_state(&self, i: usize) -> Option<DepsState> {
        let mut st = DepsState::default();
        for &d in &self.plan.steps[i].deps {
            let n = &self.nodes[d];
            st.ran |= n.ran;
            match n.state {
                NodeState::Succeeded => {}
                NodeState::Skipped => st.skipped = true,
                NodeState::Failed if self.plan.steps[d].spec.continue_on_error && !n.cancelled => {}
                NodeState::Failed | NodeState::Blocked | NodeState::Cancelled => st.blocked = true,
                NodeState::Waiting | NodeState::Active => return None,
            }
        }
        Some(st)
    }

    fn context(&self, step: &PlannedStep, item: Option<&Value>) -> Value {
        let mut steps = Map::new();
        for id in &step.reads {
            if let Some(&j) = self.index.get(id.as_str()) {
                let n = &self.nodes[j];
                steps.insert(
                    id.clone(),
                    json!({
                        "outputs": n.outputs,
                        "status": n.state.status().as_str(),
                        "items": n.items,
                    }),
                );
            }
        }
        json!({
            "inputs": self.plan.inputs,
            "secrets": self.secrets,
            "steps": steps,
            "run": {"id": self.run_id},
            "site": {"name": self.site},
            "item": item,
        })
    }

    fn finish_node(
        &mut self,
        i: usize,
        state: NodeState,
        note: Option<String>,
        error: Option<StepError>,
    ) {
        let spec = &self.plan.steps[i].spec;
        self.set_final(i, state);
        let status = match state {
            NodeState::Succeeded => StepStatus::Succeeded,
            NodeState::Skipped => StepStatus::Skipped,
            NodeState::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Failed,
        };
        // Called for a node that never got instances (skipped, or failed before it could
        // start), and for a `for_each` node's aggregate row once every item is final; a
        // single instance writes its own row in `complete`.
        let persisted = (state == NodeState::Succeeded).then(|| {
            Value::Array(
                self.nodes[i]
                    .instances
                    .iter()
                    .map(|x| x.persisted.clone().unwrap_or(Value::Null))
                    .collect(),
            )
        });
        self.out.writes.push(Write::Finished {
            key: spec.id.value.clone(),
            step_id: spec.id.value.clone(),
            kind: spec.uses.value.clone(),
            status,
            outputs: persisted,
            error,
            input_hash: None,
            note: note.clone(),
        });
        self.out.events.push(RunEvent::Finished {
            key: spec.id.value.clone(),
            status,
            note,
        });
    }

    /// Starts whatever can start; queues the writes and spawns. Nothing once drained.
    pub fn schedule(&mut self) {
        if self.drained {
            return;
        }
        while let Some(i) = self.ready.pop_front() {
            if self.nodes[i].state == NodeState::Waiting
                && let Some(deps) = self.deps_state(i)
            {
                // Reuse without `activate` (a resume goes through here once per step)
                // when there is nothing to evaluate.
                if !deps.blocked
                    && !deps.skipped
                    && self.plan.steps[i].spec.if_.is_none()
                    && self.reuse(i, &deps)
                {
                    continue;
                }
                self.activate(i, deps);
            }
        }
        let parallel = self.parallel;
        let mut emptied = false;
        for k in 0..self.startable.len() {
            if self.running >= parallel {
                break;
            }
            let i = self.startable[k];
            let limit = self.plan.steps[i]
                .spec
                .max_parallel
                .map_or(usize::MAX, |m| m as usize);
            while self.running < parallel && self.nodes[i].running < limit {
                let Some(inst) = self.nodes[i].queue.pop_front() else {
                    break;
                };
                self.start_instance(i, inst);
            }
            emptied |= self.nodes[i].queue.is_empty();
        }
        if emptied {
            let nodes = &self.nodes;
            self.startable.retain(|&i| !nodes[i].queue.is_empty());
        }
    }

    /// The common case of a resume: a single-instance step that succeeded in an earlier
    /// invocation is reused as it is (not forced, not `--reload`, none of its needs ran
    /// again, no secret outputs to recover). Nothing to render or hash; its outputs move
    /// out of the prior row.
    fn reuse(&mut self, i: usize, deps: &DepsState) -> bool {
        let step = &self.plan.steps[i];
        if step.for_each.is_some() || self.reload || deps.ran || self.force.contains(&i) {
            return false;
        }
        let id = step.spec.id.value.as_str();
        let Some(row) = self.prior.get_mut(id) else {
            return false;
        };
        if row.status != StepStatus::Succeeded
            || row.outputs.as_ref().is_some_and(has_secret_placeholder)
        {
            return false;
        }
        self.nodes[i].outputs = row.outputs.take().unwrap_or(Value::Null);
        self.out.events.push(RunEvent::Finished {
            key: id.to_string(),
            status: StepStatus::Succeeded,
            note: Some("reused from an earlier invocation".into()),
        });
        self.set_final(i, NodeState::Succeeded);
        true
    }

    /// A node whose needs are all final: skip it, reuse it, or queue its instances.
    fn activate(&mut self, i: usize, deps: DepsState) {
        let step = &self.plan.steps[i];
        let id = step.spec.id.value.clone();
        if deps.blocked {
            self.set_final(i, NodeState::Blocked);
            self.out.events.push(RunEvent::Finished {
                key: id,
                status: StepStatus::Blocked,
                note: Some("a step it needs did not succeed".into()),
            });
            return;
        }
        if deps.skipped && step.spec.if_.is_none() {
            self.finish_node(
                i,
                NodeState::Skipped,
                Some("a step it needs was skipped".into()),
                None,
            );
            return;
        }
        if let Some(cond) = &step.spec.if_ {
            let ctx = self.context(step, None);
            match step.condition_holds(&ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.finish_node(
                        i,
                        NodeState::Skipped,
                        Some(format!("`if: {}` is false", cond.value)),
                        None,
                    );
                    return;
                }
                Err(e) => {
                    let err = StepError::permanent(
                        "ExpressionError",
                        format!("`if` of step `{id}`: {e}"),
                    );
                    self.finish_node(i, NodeState::Failed, None, Some(err));
                    return;
                }
            }
        }
        // The instances: one, or one per item.
        let items: Option<Vec<Value>> = match &step.for_each {
            None => None,
            Some(_) => {
                let ctx = self.context(step, None);
                match step.render_for_each(&ctx).unwrap_or(Ok(Value::Null)) {
                    Ok(Value::Array(a)) => Some(a),
                    Ok(other) => {
                        let err = StepError::permanent(
                            "ExpressionError",
                            format!("`for_each` of step `{id}` must yield a list, got {other}"),
                        );
                        self.finish_node(i, NodeState::Failed, None, Some(err));
                        return;
                    }
                    Err(e) => {
                        let err = StepError::permanent(
                            "ExpressionError",
                            format!("`for_each` of step `{id}`: {e}"),
                        );
                        self.finish_node(i, NodeState::Failed, None, Some(err));
                        return;
                    }
                }
            }
        };
        let forced = self.force.contains(&i);
        if self.reuse(i, &deps) {
            return;
        }
        let secret_exprs = self.secret_exprs(i);
        let keyed: Vec<(String, Option<Value>)> = match &items {
            None => vec![(id.clone(), None)],
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(k, v)| (format!("{id}[{k}]"), Some(v.clone())))
                .collect(),
        };
        self.nodes[i].items = items.map(Value::Array).unwrap_or(Value::Null);
        let mut instances = vec![];
        for (key, item) in keyed {
            let input = if step.has_expr {
                let ctx = self.context(step, item.as_ref());
                self.register_derived_secrets(&secret_exprs, &ctx);
                match step.render_with(&ctx) {
                    Ok(v) => v,
                    Err(e) => {
                        let err = StepError::permanent(
                            "ExpressionError",
                            format!("`with` of step `{key}`: {e}"),
                        );
                        self.finish_node(i, NodeState::Failed, None, Some(err));
                        return;
                    }
                }
            } else {
                step.with.clone()
            };
            // Hashed lazily: a reused instance needs its hash only to detect a change.
            let input_hash = String::new();
            instances.push(Instance {
                key,
                input,
                input_hash,
                outputs: None,
                persisted: None,
                done: None,
            });
        }
        // Reuse what already succeeded (resume), unless forced or (with --reload) changed.
        let mut changed = false;
        let mut recover = vec![];
        for (k, inst) in instances.iter_mut().enumerate() {
            let Some(row) = self.prior.get(&inst.key) else {
                continue;
            };
            if row.status != StepStatus::Succeeded || forced {
                continue;
            }
            // With `--reload`, or when a need ran again, the input may have changed.
            if self.reload || deps.ran {
                inst.input_hash = hash_json(&self.redactor.redact_json(&inst.input));
                if row.input_hash.as_deref() != Some(inst.input_hash.as_str()) {
                    changed = true;
                    continue;
                }
            }
            let persisted = row.outputs.clone().unwrap_or(Value::Null);
            if has_secret_placeholder(&persisted) {
                // Its secret outputs are observed again on a task; until then it is
                // neither done nor queued.
                recover.push(k);
                continue;
            }
            inst.outputs = Some(persisted.clone());
            inst.persisted = Some(persisted);
            inst.done = Some(StepStatus::Succeeded);
        }
        for (_, inst) in instances
            .iter_mut()
            .enumerate()
            .filter(|(k, x)| x.done.is_none() && x.input_hash.is_empty() && !recover.contains(k))
        {
            inst.input_hash = hash_json(&self.redactor.redact_json(&inst.input));
        }
        if changed {
            // Inputs changed since it succeeded: it and its dependents run again.
            let deps = self.plan.dependents(i);
            self.force.extend(deps);
        }
        let n = &mut self.nodes[i];
        n.queue = instances
            .iter()
            .enumerate()
            .filter(|(k, x)| x.done.is_none() && !recover.contains(k))
            .map(|(k, _)| k)
            .collect();
        n.instances = instances;
        n.state = NodeState::Active;
        n.ran = !n.queue.is_empty();
        if !n.queue.is_empty() {
            self.startable.push(i);
        }
        for inst in n.instances.iter().filter(|x| x.done.is_some()) {
            self.out.events.push(RunEvent::Finished {
                key: inst.key.clone(),
                status: StepStatus::Succeeded,
                note: Some("reused from an earlier invocation".into()),
            });
        }
        for k in recover {
            let inst = &self.nodes[i].instances[k];
            self.out.spawns.push(Spawn::Recover(RecoverSpawn {
                node: i,
                inst: k,
                key: inst.key.clone(),
                input: inst.input.clone(),
                progress: self.prior.get(&inst.key).and_then(|r| r.progress.clone()),
            }));
            self.recovering += 1;
        }
        self.check_node_done(i);
    }

    /// The expressions of step `i`'s `with` that read a secret: a workflow secret, or a
    /// step output that is secret.
    fn secret_exprs(&self, i: usize) -> Vec<String> {
        fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
            match v {
                Value::String(s) => out.push(s),
                Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                Value::Object(m) => m.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let step = &self.plan.steps[i];
        if !step.has_expr {
            return vec![];
        }
        let mut texts = vec![];
        strings(&step.with, &mut texts);
        let reads_secret = |r: &expr::Reference| match r.root.as_str() {
            "secrets" => true,
            "steps" => {
                let Some(&j) = r.path.first().and_then(|id| self.index.get(id.as_str())) else {
                    return false;
                };
                let outputs = match r.path[1..].split_first() {
                    Some((o, tail)) if o == "outputs" => tail,
                    Some(_) => return false,
                    None => &[][..],
                };
                self.nodes[j]
                    .instances
                    .iter()
                    .any(|x| x.persisted.as_ref().is_some_and(|p| secret_at(p, outputs)))
            }
            _ => false,
        };
        texts
            .iter()
            .flat_map(|t| expr::expressions(t))
            .filter(|e| expr::references(e).iter().any(reads_secret))
            .map(str::to_string)
            .collect()
    }

    /// Registers the values of expressions computed from secrets (`upper`, `reverse`, a
    /// slice: copies the redactor would not know) as secrets themselves, so they are
    /// redacted from logs and never stored as outputs, like the secrets they come from.
    fn register_derived_secrets(&self, exprs: &[String], ctx: &Value) {
        fn add(r: &Redactor, v: &Value) {
            match v {
                Value::String(s) => r.add(s),
                Value::Array(a) => a.iter().for_each(|x| add(r, x)),
                Value::Object(m) => m.values().for_each(|x| add(r, x)),
                Value::Number(_) | Value::Bool(_) | Value::Null => {}
            }
        }
        for e in exprs {
            if let Ok(v) = expr::eval(e, ctx) {
                add(&self.redactor, &v);
            }
        }
    }

    fn start_instance(&mut self, i: usize, k: usize) {
        let step = &self.plan.steps[i];
        let inst = &self.nodes[i].instances[k];
        let attempt = self.prior.get(&inst.key).map_or(0, |r| r.attempts) + 1;
        self.out.writes.push(Write::Started {
            key: inst.key.clone(),
            step_id: step.spec.id.value.clone(),
            kind: step.spec.uses.value.clone(),
            attempt,
            input_hash: inst.input_hash.clone(),
            span_id: None,
        });
        self.out.spawns.push(Spawn::Attempt(AttemptSpawn {
            node: i,
            inst: k,
            key: inst.key.clone(),
            input: inst.input.clone(),
            input_hash: inst.input_hash.clone(),
            attempt,
            progress: self.prior.get(&inst.key).and_then(|r| r.progress.clone()),
        }));
        self.nodes[i].running += 1;
        self.running += 1;
    }

    /// Takes in what ended; its writes and events join the next effects.
    pub fn complete(&mut self, c: Completion) {
        match c {
            Completion::Attempt {
                node,
                inst,
                attempt,
                result,
                satisfied,
            } => self.attempt_ended(AttemptEnd {
                node,
                inst,
                attempt,
                result,
                satisfied,
            }),
            Completion::Recovered {
                node,
                inst,
                outputs,
            } => self.recovered(node, inst, outputs),
        }
    }

    /// A recovery ended: the instance is reused with its outputs, or queued to run again.
    fn recovered(&mut self, i: usize, k: usize, outputs: Option<Value>) {
        self.recovering -= 1;
        let inst = &mut self.nodes[i].instances[k];
        match outputs {
            Some(plain) => {
                inst.persisted = self.prior.get(&inst.key).and_then(|r| r.outputs.clone());
                inst.outputs = Some(plain);
                inst.done = Some(StepStatus::Succeeded);
                self.out.events.push(RunEvent::Finished {
                    key: inst.key.clone(),
                    status: StepStatus::Succeeded,
                    note: Some("reused from an earlier invocation".into()),
                });
                self.check_node_done(i);
            }
            None => {
                if inst.input_hash.is_empty() {
                    inst.input_hash = hash_json(&self.redactor.redact_json(&inst.input));
                }
                self.nodes[i].queue.push_back(k);
                if !self.startable.contains(&i) {
                    self.startable.push(i);
                }
            }
        }
    }

    fn attempt_ended(&mut self, c: AttemptEnd) {
        self.running -= 1;
        let step = &self.plan.steps[c.node];
        let n = &mut self.nodes[c.node];
        n.running -= 1;
        let inst = &mut n.instances[c.inst];
        match c.result {
            Ok(v) => {
                let (plain, persisted) = self.redactor.split_outputs(&v);
                inst.outputs = Some(plain);
                inst.persisted = Some(persisted.clone());
                inst.done = Some(StepStatus::Succeeded);
                self.out.writes.push(Write::AttemptEnded {
                    key: inst.key.clone(),
                    attempt: c.attempt,
                    outcome: if c.satisfied {
                        AttemptOutcome::Satisfied
                    } else {
                        AttemptOutcome::Succeeded
                    },
                    error: None,
                });
                let note = c.satisfied.then(|| "already satisfied".to_string());
                self.out.writes.push(Write::Finished {
                    key: inst.key.clone(),
                    step_id: step.spec.id.value.clone(),
                    kind: step.spec.uses.value.clone(),
                    status: StepStatus::Succeeded,
                    outputs: Some(persisted),
                    error: None,
                    input_hash: Some(inst.input_hash.clone()),
                    note: note.clone(),
                });
                self.out.events.push(RunEvent::Finished {
                    key: inst.key.clone(),
                    status: StepStatus::Succeeded,
                    note,
                });
            }
            Err(e) => {
                let cancelled = matches!(e.class, siteflow_step::ErrorClass::Cancelled);
                let status = if cancelled {
                    StepStatus::Cancelled
                } else {
                    StepStatus::Failed
                };
                inst.done = Some(status);
                n.failed = true;
                n.cancelled |= cancelled;
                self.out.writes.push(Write::AttemptEnded {
                    key: inst.key.clone(),
                    attempt: c.attempt,
                    outcome: if cancelled {
                        AttemptOutcome::Cancelled
                    } else {
                        AttemptOutcome::Failed
                    },
                    error: Some(e.clone()),
                });
                self.out.writes.push(Write::Finished {
                    key: inst.key.clone(),
                    step_id: step.spec.id.value.clone(),
                    kind: step.spec.uses.value.clone(),
                    status,
                    outputs: None,
                    error: Some(e.clone()),
                    input_hash: Some(inst.input_hash.clone()),
                    note: None,
                });
                self.out.events.push(RunEvent::Finished {
                    key: inst.key.clone(),
                    status,
                    note: Some(e.to_string()),
                });
            }
        }
        self.check_node_done(c.node);
    }

    fn check_node_done(&mut self, i: usize) {
        let n = &self.nodes[i];
        if n.state != NodeState::Active || n.running > 0 || !n.queue.is_empty() {
            return;
        }
        if n.instances.iter().any(|x| x.done.is_none()) {
            return;
        }
        let step = &self.plan.steps[i];
        let outputs = if step.spec.for_each.is_some() {
            Value::Array(
                n.instances
                    .iter()
                    .map(|x| x.outputs.clone().unwrap_or(Value::Null))
                    .collect(),
            )
        } else {
            n.instances
                .first()
                .and_then(|x| x.outputs.clone())
                .unwrap_or(Value::Null)
        };
        let (failed, cancelled) = (n.failed, n.cancelled);
        self.nodes[i].outputs = outputs;
        let state = if cancelled {
            NodeState::Cancelled
        } else if failed {
            NodeState::Failed
        } else {
            NodeState::Succeeded
        };
        if step.spec.for_each.is_some() {
            let err = failed.then(|| {
                StepError::permanent(
                    "ItemsFailed",
                    format!("some items of `{}` did not succeed", step.spec.id.value),
                )
            });
            self.finish_node(i, state, None, err);
        } else {
            self.set_final(i, state);
        }
    }
}

/// An attempt loop's end, as [`Completion::Attempt`] carries it.
struct AttemptEnd {
    node: usize,
    inst: usize,
    attempt: u32,
    result: Result<Value, StepError>,
    satisfied: bool,
}

#[derive(Default, Clone, Copy)]
struct DepsState {
    blocked: bool,
    skipped: bool,
    /// A need ran in this invocation: a reused step's input must be compared.
    ran: bool,
}

impl RunStatus {
    fn max_with(self, other: RunStatus) -> RunStatus {
        // Only final statuses are combined; the others rank lowest.
        let rank = |s: RunStatus| match s {
            RunStatus::Queued | RunStatus::Running | RunStatus::Succeeded => 0,
            RunStatus::Cancelled => 1,
            RunStatus::Failed => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// A short hash of a JSON value (the input hash of an instance).
fn hash_json(v: &Value) -> String {
    let mut h = Sha256::new();
    h.update(v.to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::compile;
    use crate::registry::Registry;
    use crate::test_kind::{Inert, KindInput, workflow_sources};
    use siteflow_step::schemars;

    /// A kind the scheduler never runs (it does no I/O); the plan only needs it to exist.
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct NoInput {}

    impl KindInput for NoInput {
        const KIND: &'static str = "test.noop";
    }

    fn plan(yaml: &str) -> Plan {
        let registry = Registry::new().with(vec![Arc::new(Inert::<NoInput>::new())]);
        let sources = workflow_sources(yaml);
        compile(&sources, &registry).unwrap_or_else(|d| panic!("{d}"))
    }

    fn scheduler(plan: &Plan, parallel: usize) -> Scheduler<'_> {
        Scheduler::new(
            "r1".into(),
            plan,
            vec![],
            Map::new(),
            Arc::new(Redactor::default()),
            BTreeSet::new(),
            false,
            parallel,
        )
    }

    /// Schedules, then returns the attempts to start and the effects.
    fn turn(s: &mut Scheduler<'_>) -> (Vec<AttemptSpawn>, Effects) {
        s.schedule();
        let mut fx = s.take_effects();
        let starts = std::mem::take(&mut fx.spawns)
            .into_iter()
            .map(|sp| match sp {
                Spawn::Attempt(a) => a,
                Spawn::Recover(r) => panic!("unexpected recovery of {}", r.key),
            })
            .collect();
        (starts, fx)
    }

    fn keys(starts: &[AttemptSpawn]) -> Vec<&str> {
        starts.iter().map(|a| a.key.as_str()).collect()
    }

    fn end(s: &mut Scheduler<'_>, a: &AttemptSpawn, result: Result<Value, StepError>) {
        s.complete(Completion::Attempt {
            node: a.node,
            inst: a.inst,
            attempt: a.attempt,
            result,
            satisfied: false,
        });
    }

    fn finished(fx: &Effects) -> Vec<(String, StepStatus)> {
        fx.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::Finished { key, status, .. } => Some((key.clone(), *status)),
                _ => None,
            })
            .collect()
    }

    const STEPS: &str = "name: w
steps:
  - { id: a, uses: test.noop }
  - { id: b, uses: test.noop, needs: [a] }
  - { id: c, uses: test.noop }
";

    #[test]
    fn ready_steps_start_in_file_order_and_dependents_follow() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 32);
        let (starts, fx) = turn(&mut s);
        assert_eq!(keys(&starts), ["a", "c"]);
        let started: Vec<&str> = fx
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Started {
                    key, attempt: 1, ..
                } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(started, ["a", "c"], "a start is written with its spawn");
        assert_eq!(s.in_flight(), 2);

        end(&mut s, &starts[0], Ok(json!({"x": 1})));
        let (next, fx) = turn(&mut s);
        assert_eq!(keys(&next), ["b"]);
        assert_eq!(finished(&fx), [("a".into(), StepStatus::Succeeded)]);
        end(&mut s, &starts[1], Ok(Value::Null));
        end(&mut s, &next[0], Ok(Value::Null));
        let (none, _) = turn(&mut s);
        assert!(none.is_empty());
        assert_eq!(s.in_flight(), 0);
        assert!(!s.can_progress());
        assert_eq!(s.status(), RunStatus::Succeeded);
    }

    #[test]
    fn parallel_bounds_the_instances_running_at_once() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 1);
        let (first, _) = turn(&mut s);
        assert_eq!(keys(&first), ["a"]);
        let (none, _) = turn(&mut s);
        assert!(none.is_empty(), "a second start while one runs");
        end(&mut s, &first[0], Ok(Value::Null));
        let (second, _) = turn(&mut s);
        // c was ready (activated) before b, so it starts first.
        assert_eq!(keys(&second), ["c"]);
    }

    #[test]
    fn a_false_if_skips_the_step_and_the_steps_that_need_it() {
        let p = plan(
            "name: w
inputs:
  go: { type: boolean, default: false }
steps:
  - { id: a, uses: test.noop, if: '${{ inputs.go }}' }
  - { id: b, uses: test.noop, needs: [a] }
  - { id: c, uses: test.noop, if: \"${{ steps.a.status == 'Skipped' }}\" }
",
        );
        let mut s = scheduler(&p, 32);
        let (starts, fx) = turn(&mut s);
        assert_eq!(
            keys(&starts),
            ["c"],
            "only the step whose own `if` holds runs"
        );
        assert_eq!(
            finished(&fx),
            [
                ("a".into(), StepStatus::Skipped),
                ("b".into(), StepStatus::Skipped)
            ]
        );
        assert!(
            fx.writes.iter().any(|w| matches!(
                w,
                Write::Finished { key, status: StepStatus::Skipped, .. } if key == "b"
            )),
            "the skip is stored"
        );
        end(&mut s, &starts[0], Ok(Value::Null));
        turn(&mut s);
        assert_eq!(s.status(), RunStatus::Succeeded);
    }

    #[test]
    fn a_failure_blocks_the_steps_that_need_it_and_fails_the_run() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 32);
        let (starts, _) = turn(&mut s);
        end(&mut s, &starts[0], Err(StepError::permanent("Boom", "no")));
        end(&mut s, &starts[1], Ok(Value::Null));
        let (next, fx) = turn(&mut s);
        assert!(
            next.is_empty(),
            "b started after a failed: {:?}",
            keys(&next)
        );
        assert!(finished(&fx).contains(&("a".into(), StepStatus::Failed)));
        assert!(finished(&fx).contains(&("b".into(), StepStatus::Blocked)));
        assert!(!s.can_progress());
        assert_eq!(s.status(), RunStatus::Failed);
    }

    #[test]
    fn continue_on_error_lets_dependents_run_and_the_run_succeed() {
        let p = plan(
            "name: w
steps:
  - { id: a, uses: test.noop, continue_on_error: true }
  - { id: b, uses: test.noop, if: \"${{ steps.a.status == 'Failed' }}\" }
",
        );
        let mut s = scheduler(&p, 32);
        let (starts, _) = turn(&mut s);
        end(&mut s, &starts[0], Err(StepError::permanent("Boom", "no")));
        let (next, _) = turn(&mut s);
        assert_eq!(keys(&next), ["b"], "`steps.a.status` reads `Failed`");
        end(&mut s, &next[0], Ok(Value::Null));
        turn(&mut s);
        assert_eq!(s.status(), RunStatus::Succeeded);
    }

    #[test]
    fn a_drained_scheduler_starts_nothing_more_and_the_run_is_cancelled() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 1);
        let (starts, _) = turn(&mut s);
        assert_eq!(keys(&starts), ["a"]);
        s.drain();
        end(&mut s, &starts[0], Ok(Value::Null));
        let (next, fx) = turn(&mut s);
        assert!(next.is_empty(), "started after drain: {:?}", keys(&next));
        assert!(
            fx.writes
                .iter()
                .any(|w| matches!(w, Write::Finished { key, .. } if key == "a")),
            "the running step's end is still written"
        );
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.status(), RunStatus::Cancelled);
    }

    #[test]
    fn a_refused_start_waits_and_starts_again() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 32);
        let (starts, _) = turn(&mut s);
        s.unstart(starts);
        assert_eq!(s.in_flight(), 0);
        let (again, _) = turn(&mut s);
        assert_eq!(keys(&again), ["a", "c"]);
    }

    #[test]
    fn a_cancelled_attempt_cancels_the_run() {
        let p = plan(STEPS);
        let mut s = scheduler(&p, 32);
        let (starts, _) = turn(&mut s);
        s.drain();
        end(&mut s, &starts[0], Err(StepError::cancelled("stop")));
        end(&mut s, &starts[1], Ok(Value::Null));
        let (_, fx) = turn(&mut s);
        assert!(finished(&fx).contains(&("a".into(), StepStatus::Cancelled)));
        assert_eq!(s.status(), RunStatus::Cancelled);
    }
}
