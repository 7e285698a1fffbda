//! The runner: schedules a plan's steps as a DAG, persists every transition, retries,
//! waits, times out, cancels, and resumes.

use crate::diag::Diagnostics;
use crate::expr;
use crate::plan::{Plan, PlannedStep, Sources, compile, compile_effective};
use crate::redact::{Redactor, has_secret_placeholder, secret_at};
use crate::registry::Registry;
use crate::spec::SecretSource;
pub use crate::state::RunStatus;
use crate::state::{
    AttemptOutcome, Lease, LeaseError, RunRow, StateStore, StepRow, StepStatus, StoreError, Write,
};
use crate::telemetry;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use siteflow_step::{
    CancellationToken, DynStep, LogStream, Observed, Progress, StepContext, StepError, StepHost,
};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Bytes of step output kept in the event log per attempt (as the README promises): the
/// first half as it comes, the last half when the attempt ends, and between them a line
/// saying how many bytes were dropped.
const MAX_CAPTURE: usize = 256 * 1024;

/// How often a runner looks for a `siteflow cancel` of its run.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// Bytes of a step's outputs (serialized) a run keeps; more fails the step. A script's
/// `$SITEFLOW_OUTPUT` has its own, smaller limit; this one holds for every kind.
const MAX_OUTPUTS: usize = 2 * 1024 * 1024;

/// Errors that stop a run from starting or continuing.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sources are invalid.
    #[error("invalid workflow")]
    Invalid(Diagnostics),
    /// A secret has no value.
    #[error("secret `{name}` has no value: {why}")]
    Secret {
        /// The secret.
        name: String,
        /// Why.
        why: String,
    },
    /// Another runner holds the run.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A resume or rerun names something that does not exist.
    #[error("{0}")]
    Usage(String),
}

/// What happened, for progress displays.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run holds its lease and is about to schedule its steps.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// Whether an existing run goes on (`resume`, `rerun`) rather than a new one.
        resumed: bool,
    },
    /// An attempt started.
    Started {
        /// Instance key.
        key: String,
        /// Kind.
        kind: String,
        /// Attempt.
        attempt: u32,
    },
    /// An attempt failed and another follows after `delay`.
    Retrying {
        /// Instance key.
        key: String,
        /// The attempt that failed.
        attempt: u32,
        /// Delay.
        delay: Duration,
        /// Why.
        error: StepError,
    },
    /// The step waits for an operation in flight.
    Waiting {
        /// Instance key.
        key: String,
        /// Until the recheck.
        recheck_after: Duration,
    },
    /// A line of output (redacted).
    Log {
        /// Instance key.
        key: String,
        /// Stream.
        stream: LogStream,
        /// The line.
        line: String,
    },
    /// A step instance finished.
    Finished {
        /// Instance key.
        key: String,
        /// Final status.
        status: StepStatus,
        /// Note (reused, satisfied, skipped reason, error).
        note: Option<String>,
    },
}

/// Receives run events (the CLI's progress display).
pub trait RunObserver: Send + Sync {
    /// Called for each event, from any task.
    fn event(&self, e: &RunEvent);
}

/// An observer that ignores everything.
pub struct NoObserver;

impl RunObserver for NoObserver {
    fn event(&self, _: &RunEvent) {}
}

/// Stops a run: `drain` stops scheduling new steps; `abort` cancels running attempts.
#[derive(Clone, Default)]
pub struct Control {
    /// Stop starting steps.
    pub drain: CancellationToken,
    /// Cancel running attempts.
    pub abort: CancellationToken,
}

impl Control {
    /// Drains now and aborts after `grace` unless already done.
    pub fn stop(&self, grace: Duration) {
        self.drain.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abort.cancel();
        });
    }
}

/// Options of one invocation.
#[derive(Clone)]
pub struct RunOptions {
    /// Bound on concurrently running step instances.
    pub parallel: usize,
    /// How long running steps may finish after a stop before they are cancelled.
    pub grace: Duration,
    /// Where relative paths resolve and secret files are read.
    pub working_dir: PathBuf,
    /// Heartbeat interval of the lease (zero: no heartbeat, for tests on a paused clock).
    pub heartbeat: Duration,
    /// Files standing in for environment variables a secret names when they are unset (the
    /// sandbox's own credentials, e.g. `GIT_TOKEN`); a set variable always wins.
    pub env_files: std::collections::BTreeMap<String, PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallel: 32,
            grace: Duration::from_secs(30),
            working_dir: std::env::current_dir().unwrap_or_default(),
            heartbeat: Duration::from_secs(5),
            env_files: Default::default(),
        }
    }
}

/// The result of an invocation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run.
    pub run_id: String,
    /// Its status.
    pub status: RunStatus,
}

/// A secret file's text without its final newline; the error names the file.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.strip_suffix('\n').unwrap_or(&t).to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads every declared secret from its source (file paths relative to `working_dir`); a
/// required one that cannot be read is an error. Each value is registered with `redactor`.
pub fn read_secrets(
    plan: &Plan,
    working_dir: &std::path::Path,
    env_files: &std::collections::BTreeMap<String, PathBuf>,
    redactor: &Redactor,
) -> Result<Map<String, Value>, RunError> {
    let mut out = Map::new();
    for s in &plan.secrets {
        let value = match &s.source {
            SecretSource::Env(var) => match (std::env::var(var), env_files.get(var)) {
                (Ok(v), _) => Ok(v),
                (Err(_), Some(path)) => {
                    read_secret_file(path).map_err(|e| format!("`{var}` is not set, and {e}"))
                }
                (Err(_), None) => Err(format!("environment variable `{var}` is not set")),
            },
            SecretSource::File(p) => {
                read_secret_file(&working_dir.join(p)).map_err(|e| format!("cannot read {e}"))
            }
        };
        match value {
            Ok(v) => {
                redactor.add(&v);
                out.insert(s.name.clone(), Value::String(v));
            }
            Err(why) if s.required => {
                return Err(RunError::Secret {
                    name: s.name.clone(),
                    why,
                });
            }
            Err(_) => {
                out.insert(s.name.clone(), Value::Null);
            }
        }
    }
    Ok(out)
}

/// Runs, resumes and reruns workflows.
pub struct Runner {
    registry: Arc<Registry>,
    store: StateStore,
    opts: RunOptions,
    observer: Arc<dyn RunObserver>,
    control: Control,
    /// Runs' states being freed on blocking threads (see [`Runner::settle`]).
    teardown: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A new run id: time-ordered (the UUIDv7 millisecond timestamp first) and unique (32 more
/// random bits, so runs started in the same millisecond, in one process or several, differ).
pub fn new_run_id() -> String {
    let u = uuid::Uuid::now_v7().simple().to_string();
    format!("r{}{:08x}", &u[..12], rand::random::<u32>())
}

fn hash_json(v: &Value) -> String {
    let mut h = Sha256::new();
    h.update(v.to_string().as_bytes());
    hex::encode(&h.finalize()[..16])
}

impl Runner {
    /// A runner over a registry and a store.
    pub fn new(
        registry: Arc<Registry>,
        store: StateStore,
        opts: RunOptions,
        observer: Arc<dyn RunObserver>,
    ) -> Self {
        Runner {
            registry,
            store,
            opts,
            observer,
            control: Control::default(),
            teardown: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Waits until the state of the runs this runner finished has been freed (that
    /// happens on blocking threads, after a run's answer is out). A process waits for it
    /// when its runtime shuts down; a caller that keeps the process for more runs and wants
    /// them measured apart calls this.
    pub async fn settle(&self) {
        let pending = std::mem::take(&mut *self.teardown.lock().unwrap_or_else(|p| p.into_inner()));
        for h in pending {
            let _ = h.await;
        }
    }

    /// The handle that stops this runner's run.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Starts a new run of a compiled plan.
    pub async fn start(&self, plan: Plan, sources: Sources) -> Result<Outcome, RunError> {
        let redactor = Arc::new(Redactor::default());
        let secrets = read_secrets(
            &plan,
            &self.opts.working_dir,
            &self.opts.env_files,
            &redactor,
        )?;
        let run_id = new_run_id();
        let (trace_id, root_span_id) = telemetry::new_trace_ids();
        let mut lease = Lease::this_process();
        let row = RunRow {
            id: run_id.clone(),
            workflow: plan.workflow.name.clone(),
            site: plan.site.clone(),
            status: RunStatus::Running,
            created_at: 0,
            updated_at: 0,
            sources: serde_json::to_string(&sources).unwrap_or_default(),
            sources_hash: sources.hash(),
            inputs: redactor.redact_json(&Value::Object(plan.inputs.clone())),
            working_dir: self.opts.working_dir.display().to_string(),
            trace_id,
            root_span_id,
            lease_holder: None,
            effective: Some(plan.effective.to_string()),
        };
        lease.generation = self.store.create_run(row.clone(), lease.clone()).await?;
        self.observer.event(&RunEvent::RunStarted {
            run_id: run_id.clone(),
            resumed: false,
        });
        self.execute(
            row,
            plan,
            vec![],
            secrets,
            redactor,
            lease,
            BTreeSet::new(),
            false,
        )
        .await
    }

    /// Continues a run: everything not Succeeded runs; succeeded steps are reused.
    /// With `reload`, the workflow and site files are read again and steps whose resolved
    /// input changed (and their dependents) run again.
    pub async fn resume(&self, run_id: &str, reload: bool) -> Result<Outcome, RunError> {
        self.continue_run(run_id, reload, None).await
    }

    /// Runs one step of a finished run again (optionally with its dependents), then
    /// whatever else is not Succeeded.
    pub async fn rerun(
        &self,
        run_id: &str,
        step: &str,
        with_dependents: bool,
    ) -> Result<Outcome, RunError> {
        self.continue_run(run_id, false, Some((step.to_string(), with_dependents)))
            .await
    }

    async fn continue_run(
        &self,
        run_id: &str,
        reload: bool,
        rerun: Option<(String, bool)>,
    ) -> Result<Outcome, RunError> {
        let row = self.store.run(run_id).await?;
        let mut lease = Lease::this_process();
        lease.generation = self.store.acquire_lease(run_id, lease.clone()).await?;
        self.observer.event(&RunEvent::RunStarted {
            run_id: run_id.to_string(),
            resumed: true,
        });
        let result = async {
            let mut sources: Sources = serde_json::from_str(&row.sources).map_err(|e| {
                RunError::Usage(format!("run {run_id} has unreadable sources: {e}"))
            })?;
            if reload {
                sources.workflow.text =
                    std::fs::read_to_string(&sources.workflow.path).map_err(|e| {
                        RunError::Usage(format!(
                            "--reload: cannot read {}: {e}",
                            sources.workflow.path
                        ))
                    })?;
                if let Some(site) = &mut sources.site {
                    site.text = std::fs::read_to_string(&site.path).map_err(|e| {
                        RunError::Usage(format!("--reload: cannot read {}: {e}", site.path))
                    })?;
                }
            }
            // The step rows load on the store thread while the plan compiles on a blocking
            // thread. The persisted layered workflow spares a resume the YAML parse; the
            // sources give the located report if it no longer compiles (or with --reload).
            // The stored workflow first: a quick read that would otherwise queue behind
            // the step rows on the store thread and hold up the compile.
            let effective = match reload {
                false => self.store.run_effective(run_id).await?,
                true => None,
            };
            let prior_rows = {
                let (store, id) = (self.store.clone(), run_id.to_string());
                tokio::spawn(async move { store.steps_for_resume(&id).await })
            };
            let registry = self.registry.clone();
            let plan = tokio::task::spawn_blocking(move || {
                let effective = effective.and_then(|t| serde_json::from_str::<Value>(&t).ok());
                match effective.map(|e| compile_effective(e, &sources, &registry)) {
                    Some(Ok(p)) => Ok(p),
                    _ => compile(&sources, &registry).map_err(RunError::Invalid),
                }
            })
            .await
            .map_err(|e| RunError::Usage(format!("compiling the run's workflow failed: {e}")))??;
            let mut force = BTreeSet::new();
            if let Some((step, deps)) = &rerun {
                let idx = plan
                    .index_of(step)
                    .ok_or_else(|| RunError::Usage(format!("run {run_id} has no step `{step}`")))?;
                force.insert(idx);
                if *deps {
                    force.extend(plan.dependents(idx));
                }
            }
            let redactor = Arc::new(Redactor::default());
            let secrets = read_secrets(
                &plan,
                &self.opts.working_dir,
                &self.opts.env_files,
                &redactor,
            )?;
            let prior = prior_rows
                .await
                .map_err(|e| RunError::Usage(format!("loading the run's steps failed: {e}")))??;
            Ok::<_, RunError>((plan, prior, secrets, redactor, force))
        }
        .await;
        let (plan, prior, secrets, redactor, force) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = self.store.release_lease(run_id, &lease.holder).await;
                return Err(e);
            }
        };
        self.execute(row, plan, prior, secrets, redactor, lease, force, reload)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        run: RunRow,
        plan: Plan,
        prior: Vec<StepRow>,
        secrets: Map<String, Value>,
        redactor: Arc<Redactor>,
        lease: Lease,
        force: BTreeSet<usize>,
        reload: bool,
    ) -> Result<Outcome, RunError> {
        let span = tracing::info_span!(
            "siteflow.run",
            otel.name = format!("run {}", plan.workflow.name),
            run.id = %run.id,
            site = plan.site.as_deref().unwrap_or(""),
            workflow = %plan.workflow.name,
            otel.status_code = tracing::field::Empty,
        );
        telemetry::attach_to_run_trace(&span, &run.trace_id, &run.root_span_id);

        // Every write of this run is fenced with the lease: once another runner takes the
        // run over, nothing more of this one is written, and it stops at once.
        let fence = Write::Fence {
            holder: lease.holder.clone(),
            generation: lease.generation,
        };
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_lost = {
            let (control, lost) = (self.control.clone(), lost.clone());
            move || {
                if !lost.swap(true, Ordering::SeqCst) {
                    tracing::error!("the run's lease was taken over by another runner: stopping");
                }
                control.drain.cancel();
                control.abort.cancel();
            }
        };
        // The lease heartbeat.
        let hb_stop = CancellationToken::new();
        let hb = {
            let (store, id, lease, every, stop, on_lost) = (
                self.store.clone(),
                run.id.clone(),
                lease.clone(),
                self.opts.heartbeat,
                hb_stop.clone(),
                on_lost.clone(),
            );
            tokio::spawn(async move {
                if every.is_zero() {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(StoreError::LeaseLost) = store.heartbeat(&id, &lease).await {
                        on_lost();
                        break;
                    }
                }
            })
        };
        // `siteflow cancel` (and a lost lease) is noticed within CANCEL_POLL; the start gate
        // makes sure no step starts once a cancel is committed, whenever it is noticed.
        let poll = {
            let (store, id, lease, control, grace, stop, on_lost) = (
                self.store.clone(),
                run.id.clone(),
                lease.clone(),
                self.control.clone(),
                self.opts.grace,
                hb_stop.clone(),
                on_lost.clone(),
            );
            let enabled = !self.opts.heartbeat.is_zero();
            tokio::spawn(async move {
                if !enabled {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(CANCEL_POLL) => {}
                    }
                    match store.cancel_requested(&id, &lease).await {
                        Ok(true) if !control.drain.is_cancelled() => {
                            tracing::warn!("cancel requested through the state store");
                            control.stop(grace);
                        }
                        Err(StoreError::LeaseLost) => {
                            on_lost();
                            break;
                        }
                        _ => {}
                    }
                }
            })
        };
        let mut sched = Scheduler::new(
            self,
            fence.clone(),
            run.id.clone(),
            &plan,
            prior,
            secrets,
            redactor,
            force,
            reload,
        );
        // `Running` goes out with the first steps' writes (one commit, still before any
        // step's side effect).
        sched.writes.push(Write::RunStatus(RunStatus::Running));
        let status = sched.run().instrument(span.clone()).await;
        let leftovers = (
            std::mem::take(&mut sched.nodes),
            std::mem::take(&mut sched.prior),
        );
        drop(sched);
        // The heartbeat stops at once; one in flight finds the lease released and changes
        // nothing.
        hb_stop.cancel();
        hb.abort();
        poll.abort();
        // The answer first: the final status and the lease's release in one commit. Only
        // then is a large run's state freed, on a blocking thread, so that work never
        // competes with the commit for the CPUs.
        let status = match status {
            _ if lost.load(Ordering::SeqCst) => Err(RunError::Store(StoreError::LeaseLost)),
            Err(RunError::Store(StoreError::LeaseLost)) => {
                on_lost();
                Err(RunError::Store(StoreError::LeaseLost))
            }
            other => other,
        };
        let finished = match status {
            Err(e @ RunError::Store(StoreError::LeaseLost)) => Err(e),
            Ok(status) => {
                span.record(
                    "otel.status_code",
                    if status == RunStatus::Succeeded {
                        "OK"
                    } else {
                        "ERROR"
                    },
                );
                self.store
                    .write(
                        &run.id,
                        vec![
                            fence.clone(),
                            Write::RunStatus(status),
                            Write::ReleaseLease {
                                holder: lease.holder.clone(),
                            },
                        ],
                    )
                    .await
                    .map(|()| status)
                    .map_err(RunError::from)
            }
            Err(e) => {
                let _ = self.store.release_lease(&run.id, &lease.holder).await;
                Err(e)
            }
        };
        let freeing = tokio::task::spawn_blocking(move || drop((leftovers, plan)));
        {
            let mut pending = self.teardown.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|h| !h.is_finished());
            pending.push(freeing);
        }
        let status = finished?;
        Ok(Outcome {
            run_id: run.id,
            status,
        })
    }
}

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

struct Completion {
    node: usize,
    inst: usize,
    attempt: u32,
    result: Result<Value, StepError>,
    satisfied: bool,
}

struct Spawn {
    node: usize,
    inst: usize,
    input: Value,
    attempt: u32,
}

struct Scheduler<'a> {
    runner: &'a Runner,
    fence: Write,
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
    running: usize,
    writes: Vec<Write>,
    spawns: Vec<Spawn>,
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
    #[allow(clippy::too_many_arguments)]
    fn new(
        runner: &'a Runner,
        fence: Write,
        run_id: String,
        plan: &'a Plan,
        prior: Vec<StepRow>,
        secrets: Map<String, Value>,
        redactor: Arc<Redactor>,
        force: BTreeSet<usize>,
        reload: bool,
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
            runner,
            fence,
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
            running: 0,
            writes: vec![],
            spawns: vec![],
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

    async fn run(&mut self) -> Result<RunStatus, RunError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        let drain = self.runner.control.drain.clone();
        loop {
            if !drain.is_cancelled() {
                self.schedule().await?;
            }
            if !self.writes.is_empty() {
                let mut w = std::mem::take(&mut self.writes);
                w.insert(0, self.fence.clone());
                if self.spawns.is_empty() {
                    self.runner.store.write(&self.run_id, w).await?;
                } else {
                    // The starts commit only if no cancel is committed before them.
                    w.insert(1, Write::StartGate);
                    if self.runner.store.write_starts(&self.run_id, w).await? {
                        tracing::warn!("cancel requested through the state store");
                        self.unstart();
                        self.runner.control.stop(self.runner.opts.grace);
                    }
                }
            }
            for s in std::mem::take(&mut self.spawns) {
                self.spawn(s, tx.clone());
            }
            if self.running == 0 {
                // Nothing in flight: either everything is final, or nothing more can start.
                if drain.is_cancelled() || !self.can_progress() {
                    break;
                }
                continue;
            }
            let first = tokio::select! {
                c = rx.recv() => c,
                _ = drain.cancelled(), if !drain.is_cancelled() => None,
            };
            if let Some(c) = first {
                self.complete(c);
                while let Ok(c) = rx.try_recv() {
                    self.complete(c);
                }
            }
        }
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
                    status = status.max_with(if drain.is_cancelled() {
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
        Ok(status)
    }

    /// Takes back the starts a [`Write::StartGate`] refused: their instances wait again.
    fn unstart(&mut self) {
        for sp in std::mem::take(&mut self.spawns) {
            let n = &mut self.nodes[sp.node];
            n.queue.push_front(sp.inst);
            n.running -= 1;
            self.running -= 1;
            if !self.startable.contains(&sp.node) {
                self.startable.push(sp.node);
            }
        }
    }

    fn can_progress(&self) -> bool {
        !self.ready.is_empty() || !self.startable.is_empty()
    }

    /// `Some(blocked)` when every need is final.
    fn deps_state(&self, i: usize) -> Option<DepsState> {
        let mut st = DepsState::default();
        for &d in &self.plan.steps[i].deps {
            let n = &self.nodes[d];
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
        self.writes.push(Write::Finished {
            key: spec.id.value.clone(),
            step_id: spec.id.value.clone(),
            kind: spec.uses.value.clone(),
            status,
            outputs: persisted,
            error,
            input_hash: None,
            note: note.clone(),
        });
        self.runner.observer.event(&RunEvent::Finished {
            key: spec.id.value.clone(),
            status,
            note,
        });
    }

    /// Starts whatever can start; queues the writes and spawns.
    async fn schedule(&mut self) -> Result<(), RunError> {
        while let Some(i) = self.ready.pop_front() {
            if self.nodes[i].state == NodeState::Waiting
                && let Some(deps) = self.deps_state(i)
            {
                // Reuse without the async `activate` (its future is large, and a resume
                // goes through here once per step) when there is nothing to evaluate.
                if !deps.blocked
                    && !deps.skipped
                    && self.plan.steps[i].spec.if_.is_none()
                    && self.reuse(i)
                {
                    continue;
                }
                self.activate(i, deps).await;
            }
        }
        let parallel = self.runner.opts.parallel.max(1);
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
        Ok(())
    }

    /// The common case of a resume: a single-instance step that succeeded in an earlier
    /// invocation is reused as it is (not forced, not `--reload`, no secret outputs to
    /// recover). Nothing to render or hash; its outputs move out of the prior row.
    fn reuse(&mut self, i: usize) -> bool {
        let step = &self.plan.steps[i];
        if step.for_each.is_some() || self.reload || self.force.contains(&i) {
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
        self.runner.observer.event(&RunEvent::Finished {
            key: id.to_string(),
            status: StepStatus::Succeeded,
            note: Some("reused from an earlier invocation".into()),
        });
        self.set_final(i, NodeState::Succeeded);
        true
    }

    /// A node whose needs are all final: skip it, reuse it, or queue its instances.
    async fn activate(&mut self, i: usize, deps: DepsState) {
        let step = &self.plan.steps[i];
        let id = step.spec.id.value.clone();
        if deps.blocked {
            self.set_final(i, NodeState::Blocked);
            self.runner.observer.event(&RunEvent::Finished {
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
            match expr::eval_condition(&cond.value, &ctx) {
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
            Some(fe) => {
                let ctx = self.context(step, None);
                match expr::render_value(fe, &ctx) {
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
        if self.reuse(i) {
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
                match expr::render_value(&step.with, &ctx) {
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
        for inst in &mut instances {
            let Some(row) = self.prior.get(&inst.key) else {
                continue;
            };
            if row.status != StepStatus::Succeeded || forced {
                continue;
            }
            if self.reload {
                inst.input_hash = hash_json(&self.redactor.redact_json(&inst.input));
                if row.input_hash.as_deref() != Some(inst.input_hash.as_str()) {
                    changed = true;
                    continue;
                }
            }
            let persisted = row.outputs.clone().unwrap_or(Value::Null);
            let plain = if has_secret_placeholder(&persisted) {
                match self.recover_secrets(i, inst).await {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                persisted.clone()
            };
            inst.outputs = Some(plain);
            inst.persisted = Some(persisted);
            inst.done = Some(StepStatus::Succeeded);
        }
        for inst in instances
            .iter_mut()
            .filter(|x| x.done.is_none() && x.input_hash.is_empty())
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
            .filter(|(_, x)| x.done.is_none())
            .map(|(k, _)| k)
            .collect();
        n.instances = instances;
        n.state = NodeState::Active;
        if !n.queue.is_empty() {
            self.startable.push(i);
        }
        for inst in n.instances.iter().filter(|x| x.done.is_some()) {
            self.runner.observer.event(&RunEvent::Finished {
                key: inst.key.clone(),
                status: StepStatus::Succeeded,
                note: Some("reused from an earlier invocation".into()),
            });
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

    /// A succeeded step whose secret outputs were not persisted: observe it again.
    async fn recover_secrets(&self, i: usize, inst: &Instance) -> Option<Value> {
        let step = &self.plan.steps[i];
        let kind = self.runner.registry.get(&step.spec.uses.value)?;
        let (cx, host) = self.step_context(i, &inst.key, 0, CancellationToken::new(), None);
        let observed = kind.observe(&cx, &inst.input).await;
        host.end_attempt();
        match observed {
            Ok(Observed::Satisfied(v)) => Some(self.redactor.split_outputs(&v).0),
            _ => {
                tracing::warn!(step = %inst.key, "secret outputs could not be re-observed; the step runs again");
                None
            }
        }
    }

    fn start_instance(&mut self, i: usize, k: usize) {
        let step = &self.plan.steps[i];
        let inst = &self.nodes[i].instances[k];
        let attempt = self.prior.get(&inst.key).map_or(0, |r| r.attempts) + 1;
        self.writes.push(Write::Started {
            key: inst.key.clone(),
            step_id: step.spec.id.value.clone(),
            kind: step.spec.uses.value.clone(),
            attempt,
            input_hash: inst.input_hash.clone(),
            span_id: None,
        });
        self.spawns.push(Spawn {
            node: i,
            inst: k,
            input: inst.input.clone(),
            attempt,
        });
        self.nodes[i].running += 1;
        self.running += 1;
    }

    fn step_context(
        &self,
        i: usize,
        key: &str,
        attempt: u32,
        cancel: CancellationToken,
        traceparent: Option<String>,
    ) -> (StepContext, Arc<EngineHost>) {
        let step = &self.plan.steps[i];
        let host = Arc::new(EngineHost {
            store: self.runner.store.clone(),
            fence: self.fence.clone(),
            run_id: self.run_id.clone(),
            key: key.to_string(),
            attempt: AtomicU32::new(attempt),
            redactor: self.redactor.clone(),
            observer: self.runner.observer.clone(),
            capture: std::sync::Mutex::new(Capture::default()),
            progress: std::sync::Mutex::new(self.prior.get(key).and_then(|r| r.progress.clone())),
        });
        let mut cx = StepContext::new(
            self.run_id.clone(),
            self.site.clone(),
            key,
            step.spec.uses.value.clone(),
            attempt,
            self.runner.opts.working_dir.clone(),
            cancel,
            host.clone(),
        );
        cx.traceparent = traceparent;
        (cx, host)
    }

    fn spawn(&self, s: Spawn, tx: mpsc::UnboundedSender<Completion>) {
        let step = &self.plan.steps[s.node];
        let Some(kind) = self.runner.registry.get(&step.spec.uses.value).cloned() else {
            let _ = tx.send(Completion {
                node: s.node,
                inst: s.inst,
                attempt: s.attempt,
                result: Err(StepError::permanent(
                    "UnknownKind",
                    format!("unknown step kind `{}`", step.spec.uses.value),
                )),
                satisfied: false,
            });
            return;
        };
        let key = self.nodes[s.node].instances[s.inst].key.clone();
        let (base, host) =
            self.step_context(s.node, &key, s.attempt, CancellationToken::new(), None);
        let attempt_run = AttemptLoop {
            fence: self.fence.clone(),
            host: host.clone(),
            kind,
            key: key.clone(),
            step_id: step.spec.id.value.clone(),
            kind_name: step.spec.uses.value.clone(),
            retry: step.retry.clone(),
            timeout: step.timeout,
            abort: self.runner.control.abort.clone(),
            store: self.runner.store.clone(),
            run_id: self.run_id.clone(),
            site: self.site.clone().unwrap_or_default(),
            observer: self.runner.observer.clone(),
            input_hash: self.nodes[s.node].instances[s.inst].input_hash.clone(),
            redactor: self.redactor.clone(),
        };
        let make_cx = {
            move |attempt: u32, cancel: CancellationToken, tp: Option<String>| {
                // Each attempt logs under its own number, with its own output budget (the
                // attempt loop ends each budget).
                host.attempt.store(attempt, Ordering::Relaxed);
                let mut cx = base.clone();
                cx.attempt = attempt;
                cx.cancel = cancel;
                cx.traceparent = tp;
                cx
            }
        };
        let (node, inst, first) = (s.node, s.inst, s.attempt);
        let input = s.input;
        tokio::spawn(
            async move {
                let (attempt, result, satisfied) = attempt_run.run(first, &input, make_cx).await;
                let _ = tx.send(Completion {
                    node,
                    inst,
                    attempt,
                    result,
                    satisfied,
                });
            }
            .in_current_span(),
        );
    }

    fn complete(&mut self, c: Completion) {
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
                self.writes.push(Write::AttemptEnded {
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
                self.writes.push(Write::Finished {
                    key: inst.key.clone(),
                    step_id: step.spec.id.value.clone(),
                    kind: step.spec.uses.value.clone(),
                    status: StepStatus::Succeeded,
                    outputs: Some(persisted),
                    error: None,
                    input_hash: Some(inst.input_hash.clone()),
                    note: note.clone(),
                });
                self.runner.observer.event(&RunEvent::Finished {
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
                self.writes.push(Write::AttemptEnded {
                    key: inst.key.clone(),
                    attempt: c.attempt,
                    outcome: if cancelled {
                        AttemptOutcome::Cancelled
                    } else {
                        AttemptOutcome::Failed
                    },
                    error: Some(e.clone()),
                });
                self.writes.push(Write::Finished {
                    key: inst.key.clone(),
                    step_id: step.spec.id.value.clone(),
                    kind: step.spec.uses.value.clone(),
                    status,
                    outputs: None,
                    error: Some(e.clone()),
                    input_hash: Some(inst.input_hash.clone()),
                    note: None,
                });
                self.runner.observer.event(&RunEvent::Finished {
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

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_started_together_differ_and_sort_by_time() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_run_id()).collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "run ids collide");
        assert!(
            ids.windows(2).all(|w| w[0][..13] <= w[1][..13]),
            "time prefix not ordered"
        );
        assert_eq!(ids[0].len(), 21);
    }
}

#[derive(Default, Clone, Copy)]
struct DepsState {
    blocked: bool,
    skipped: bool,
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

/// One step instance's attempts: observe, apply, waits, timeouts, retries.
struct AttemptLoop {
    kind: Arc<dyn DynStep>,
    fence: Write,
    host: Arc<EngineHost>,
    key: String,
    step_id: String,
    kind_name: String,
    retry: crate::retry::RetryPolicy,
    timeout: Option<Duration>,
    abort: CancellationToken,
    store: StateStore,
    run_id: String,
    site: String,
    observer: Arc<dyn RunObserver>,
    input_hash: String,
    redactor: Arc<Redactor>,
}

impl AttemptLoop {
    async fn run(
        self,
        first: u32,
        input: &Value,
        make_cx: impl Fn(u32, CancellationToken, Option<String>) -> StepContext,
    ) -> (u32, Result<Value, StepError>, bool) {
        let started = Instant::now();
        let mut attempt = first;
        loop {
            let span = tracing::info_span!(
                "siteflow.step",
                otel.name = format!("step {}", self.key),
                run.id = %self.run_id,
                site = %self.site,
                step.id = %self.key,
                step.kind = %self.kind_name,
                attempt = i64::from(attempt),
                outcome = tracing::field::Empty,
                error.code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let tp = telemetry::traceparent(&span);
            // The first attempt's Running row was committed by the scheduler (its span id
            // follows); later ones are committed here, before the side effect.
            if attempt == first
                && let Some(span_id) = telemetry::span_id(&span)
            {
                self.store.write_later(
                    &self.run_id,
                    fenced(
                        &self.fence,
                        vec![Write::AttemptSpan {
                            key: self.key.clone(),
                            attempt,
                            span_id,
                        }],
                    ),
                );
            }
            if attempt > first {
                let started = self
                    .store
                    .write_starts(
                        &self.run_id,
                        vec![
                            self.fence.clone(),
                            Write::StartGate,
                            Write::Started {
                                key: self.key.clone(),
                                step_id: self.step_id.clone(),
                                kind: self.kind_name.clone(),
                                attempt,
                                input_hash: self.input_hash.clone(),
                                span_id: telemetry::span_id(&span),
                            },
                        ],
                    )
                    .await;
                match started {
                    Ok(false) => {}
                    Ok(true) => {
                        return (
                            attempt - 1,
                            Err(StepError::cancelled("the run was cancelled")),
                            false,
                        );
                    }
                    Err(e) => {
                        return (
                            attempt,
                            Err(StepError::permanent("StateStore", e.to_string())),
                            false,
                        );
                    }
                }
            }
            self.observer.event(&RunEvent::Started {
                key: self.key.clone(),
                kind: self.kind_name.clone(),
                attempt,
            });
            let cancel = self.abort.child_token();
            let cx = make_cx(attempt, cancel.clone(), tp);
            let fut = self.once(&cx, input);
            let result = async {
                tokio::select! {
                    r = async {
                        match self.timeout {
                            Some(t) => match tokio::time::timeout(t, fut).await {
                                Ok(r) => r,
                                Err(_) => Err(StepError::retryable(
                                    "Timeout",
                                    format!("attempt timed out after {}", humantime::format_duration(t)),
                                )),
                            },
                            None => fut.await,
                        }
                    } => r,
                    _ = cancel.cancelled() => Err(StepError::cancelled("the run was cancelled")),
                }
            }
            .instrument(span.clone())
            .await
            // Error messages carry remote output: no secret may pass through them.
            .map_err(|mut e| {
                e.message = self.redactor.redact(&e.message).into_owned();
                e
            })
            .and_then(|(v, satisfied)| outputs_within_limit(v).map(|v| (v, satisfied)));
            cancel.cancel();
            self.host.end_attempt();
            match result {
                Ok((v, satisfied)) => {
                    let outcome = if satisfied {
                        AttemptOutcome::Satisfied
                    } else {
                        AttemptOutcome::Succeeded
                    };
                    span.record("outcome", outcome.as_str());
                    span.record("otel.status_code", "OK");
                    return (attempt, Ok(v), satisfied);
                }
                Err(e) => {
                    span.record("outcome", AttemptOutcome::Failed.as_str());
                    span.record("error.code", e.code.as_str());
                    span.record("otel.status_code", "ERROR");
                    let unit: f64 = rand::random();
                    let Some(delay) =
                        self.retry
                            .next_delay(&e, attempt - first + 1, started.elapsed(), unit)
                    else {
                        return (attempt, Err(e), false);
                    };
                    span.in_scope(|| {
                        tracing::info!(delay_ms = delay.as_millis() as i64, error.code = %e.code, "retry scheduled")
                    });
                    self.store.write_later(
                        &self.run_id,
                        fenced(
                            &self.fence,
                            vec![
                                Write::AttemptEnded {
                                    key: self.key.clone(),
                                    attempt,
                                    outcome: AttemptOutcome::Failed,
                                    error: Some(e.clone()),
                                },
                                Write::WaitingRetry {
                                    key: self.key.clone(),
                                    attempt,
                                    delay,
                                },
                            ],
                        ),
                    );
                    self.observer.event(&RunEvent::Retrying {
                        key: self.key.clone(),
                        attempt,
                        delay,
                        error: e.clone(),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abort.cancelled() => return (attempt, Err(StepError::cancelled("the run was cancelled")), false),
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: observe; apply until done, rechecking after each `Wait`.
    async fn once(&self, cx: &StepContext, input: &Value) -> Result<(Value, bool), StepError> {
        if let Observed::Satisfied(v) = self.kind.observe(cx, input).await? {
            return Ok((v, true));
        }
        loop {
            match self.kind.apply(cx, input).await? {
                Progress::Done(v) => return Ok((v, false)),
                Progress::Wait { recheck_after } => {
                    tracing::info!(recheck_ms = recheck_after.as_millis() as i64, "waiting");
                    self.observer.event(&RunEvent::Waiting {
                        key: self.key.clone(),
                        recheck_after,
                    });
                    tokio::time::sleep(recheck_after).await;
                    if let Observed::Satisfied(v) = self.kind.observe(cx, input).await? {
                        return Ok((v, false));
                    }
                }
            }
        }
    }
}

/// `writes` behind the run's lease fence ([`Write::Fence`]).
fn fenced(fence: &Write, mut writes: Vec<Write>) -> Vec<Write> {
    writes.insert(0, fence.clone());
    writes
}

/// A step's outputs, unless they serialize to more than [`MAX_OUTPUTS`] bytes.
fn outputs_within_limit(v: Value) -> Result<Value, StepError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, &v);
    if n.0 > MAX_OUTPUTS {
        return Err(StepError::permanent(
            "OutputTooLarge",
            format!(
                "the step's outputs are {} bytes; the limit is {MAX_OUTPUTS} bytes (2 MiB): pass large data through a file",
                n.0
            ),
        ));
    }
    Ok(v)
}

/// The engine's side of a running step's context.
struct EngineHost {
    store: StateStore,
    fence: Write,
    run_id: String,
    key: String,
    attempt: AtomicU32,
    redactor: Arc<Redactor>,
    observer: Arc<dyn RunObserver>,
    capture: std::sync::Mutex<Capture>,
    progress: std::sync::Mutex<Option<Value>>,
}

/// One attempt's output budget: the head goes to the event log as it comes; the tail waits
/// in a window of at most half the budget until the attempt ends.
#[derive(Default)]
struct Capture {
    head: usize,
    tail: std::collections::VecDeque<(&'static str, String)>,
    tail_bytes: usize,
    dropped: u64,
}

impl Capture {
    /// Whether `line` is stored now; otherwise it joins the tail window (which may push
    /// older lines out).
    fn keep(&mut self, kind: &'static str, line: &str) -> bool {
        let len = line.len() + 1;
        if self.tail.is_empty() && self.dropped == 0 && self.head + len <= MAX_CAPTURE / 2 {
            self.head += len;
            return true;
        }
        self.tail.push_back((kind, line.to_string()));
        self.tail_bytes += len;
        while self.tail_bytes > MAX_CAPTURE / 2
            && let Some((_, old)) = self.tail.pop_front()
        {
            self.tail_bytes -= old.len() + 1;
            self.dropped += old.len() as u64 + 1;
        }
        false
    }

    /// The events still to store when the attempt ends: the marker of the dropped middle
    /// (if any) and the tail. The budget starts again.
    fn finish(&mut self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(self.tail.len() + 1);
        if self.dropped > 0 {
            out.push((
                "output",
                format!(
                    "[… {} bytes dropped: an attempt keeps the first and last {} KiB of its output …]",
                    self.dropped,
                    MAX_CAPTURE / 2 / 1024
                ),
            ));
        }
        out.extend(std::mem::take(&mut self.tail));
        *self = Capture::default();
        out
    }
}

impl EngineHost {
    /// Commits `write` behind the run's lease fence, in one transaction: a runner that lost
    /// its lease gets the permanent `LeaseLost` error and nothing is written.
    async fn write_fenced(&self, write: Write) -> Result<(), StepError> {
        self.store
            .write(&self.run_id, fenced(&self.fence, vec![write]))
            .await
            .map_err(|e| match e {
                StoreError::LeaseLost => StepError::permanent("LeaseLost", e.to_string()),
                e => StepError::retryable("StateStore", e.to_string()),
            })
    }

    /// Stores what the attempt's output budget held back (see [`Capture`]).
    fn end_attempt(&self) {
        let rest = self
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        if rest.is_empty() {
            return;
        }
        let attempt = Some(self.attempt.load(Ordering::Relaxed));
        let writes = rest
            .into_iter()
            .map(|(kind, message)| Write::Event {
                key: Some(self.key.clone()),
                attempt,
                kind,
                message,
            })
            .collect();
        self.store
            .write_later(&self.run_id, fenced(&self.fence, writes));
    }
}

#[async_trait::async_trait]
impl StepHost for EngineHost {
    fn log(&self, stream: LogStream, line: &str) {
        let line = self.redactor.redact(line);
        // Every kind's lines are bounded here too, not only those the built-in kinds cut.
        let line = siteflow_step::script::bounded_line(&line, 0).into_owned();
        let keep_now = {
            let mut c = self.capture.lock().unwrap_or_else(|e| e.into_inner());
            c.keep(stream.name(), &line)
        };
        if keep_now {
            self.store.write_later(
                &self.run_id,
                fenced(
                    &self.fence,
                    vec![Write::Event {
                        key: Some(self.key.clone()),
                        attempt: Some(self.attempt.load(Ordering::Relaxed)),
                        kind: stream.name(),
                        message: line.clone(),
                    }],
                ),
            );
        }
        self.observer.event(&RunEvent::Log {
            key: self.key.clone(),
            stream,
            line,
        });
    }

    fn progress(&self) -> Option<Value> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn save_progress(&self, progress: Value) -> Result<(), StepError> {
        let progress = self.redactor.redact_json(&progress);
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
        self.write_fenced(Write::Progress {
            key: self.key.clone(),
            progress,
        })
        .await
    }

    async fn run_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.store
            .run_value(&self.run_id, namespace, key)
            .await
            .map_err(|e| StepError::retryable("StateStore", e.to_string()))
    }

    async fn set_run_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        let value = self.redactor.redact_json(&value);
        self.write_fenced(Write::RunValue {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn shared_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.store
            .shared_value(namespace, key)
            .await
            .map_err(|e| StepError::retryable("StateStore", e.to_string()))
    }

    async fn set_shared_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        let value = self.redactor.redact_json(&value);
        self.write_fenced(Write::SharedValue {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        })
        .await
    }

    fn add_secret(&self, value: &str) {
        self.redactor.add(value);
    }
}
