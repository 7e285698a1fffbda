//! An invocation: starting, resuming or rerunning a run; its secrets, its lease (heartbeat,
//! cancel polling, fencing), driving the scheduler, and the final commit.

use super::attempt::{spawn_attempt, spawn_recovery};
use super::event::{RunEvent, RunObserver};
use super::host::RunScope;
use super::scheduler::{Completion, Effects, Scheduler, Spawn};
use crate::diag::Diagnostics;
use crate::plan::{Plan, Sources, compile, compile_effective};
use crate::redact::Redactor;
use crate::registry::Registry;
use crate::spec::SecretSource;
use crate::state::{Lease, LeaseError, RunRow, RunStatus, StateStore, StepRow, StoreError, Write};
use crate::telemetry;
use serde_json::{Map, Value};
use siteflow_step::CancellationToken;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// How often a runner looks for a `siteflow cancel` of its run.
const CANCEL_POLL: Duration = Duration::from_millis(200);

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
    /// A resume or rerun names something that does not exist, or a file it cannot read.
    #[error("{0}")]
    Usage(String),
    /// Something went wrong inside siteflow or its state (a task that panicked, a stored
    /// run it cannot read): not the user's input.
    #[error("{0}")]
    Internal(String),
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

    /// The plan's secrets, read now, and a redactor that knows their values.
    fn secrets(&self, plan: &Plan) -> Result<(Map<String, Value>, Arc<Redactor>), RunError> {
        let redactor = Arc::new(Redactor::default());
        let secrets = read_secrets(
            plan,
            &self.opts.working_dir,
            &self.opts.env_files,
            &redactor,
        )?;
        Ok((secrets, redactor))
    }

    /// The handle that stops this runner's run.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Starts a new run of a compiled plan.
    pub async fn start(&self, plan: Plan, sources: Sources) -> Result<Outcome, RunError> {
        let (secrets, redactor) = self.secrets(&plan)?;
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
                RunError::Internal(format!("run {run_id} has unreadable sources: {e}"))
            })?;
            if reload {
                sources = tokio::task::spawn_blocking(move || reload_sources(sources))
                    .await
                    .map_err(|e| RunError::Internal(format!("reading the sources: {e}")))??;
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
            .map_err(|e| {
                RunError::Internal(format!("compiling the run's workflow failed: {e}"))
            })??;
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
            let (secrets, redactor) = self.secrets(&plan)?;
            let prior = prior_rows.await.map_err(|e| {
                RunError::Internal(format!("loading the run's steps failed: {e}"))
            })??;
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
        let scope = RunScope {
            store: self.store.clone(),
            fence: fence.clone(),
            run_id: run.id.clone(),
            site: plan.site.clone(),
            working_dir: self.opts.working_dir.clone(),
            redactor: redactor.clone(),
            observer: self.observer.clone(),
            abort: self.control.abort.clone(),
        };
        let mut sched = Scheduler::new(
            run.id.clone(),
            &plan,
            prior,
            secrets,
            redactor,
            force,
            reload,
            self.opts.parallel,
        );
        // `Running` goes out with the first steps' writes (one commit, still before any
        // step's side effect).
        sched.write(Write::RunStatus(RunStatus::Running));
        let status = self
            .drive(&mut sched, &scope, &plan)
            .instrument(span.clone())
            .await;
        let leftovers = sched.into_leftovers();
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

    /// Runs the scheduler: commits its writes (starts behind the start gate), spawns what it
    /// asks for, and feeds it what ends, until nothing is in flight and nothing can start.
    async fn drive(
        &self,
        sched: &mut Scheduler<'_>,
        scope: &RunScope,
        plan: &Plan,
    ) -> Result<RunStatus, RunError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        let drain = self.control.drain.clone();
        loop {
            if drain.is_cancelled() {
                sched.drain();
            }
            sched.schedule();
            let Effects {
                mut writes,
                mut spawns,
                events,
            } = sched.take_effects();
            for e in &events {
                self.observer.event(e);
            }
            if !writes.is_empty() {
                writes.insert(0, scope.fence.clone());
                if !spawns.iter().any(|s| matches!(s, Spawn::Attempt(_))) {
                    self.store.write(&scope.run_id, writes).await?;
                } else {
                    // The starts commit only if no cancel is committed before them.
                    writes.insert(1, Write::StartGate);
                    if self.store.write_starts(&scope.run_id, writes).await? {
                        tracing::warn!("cancel requested through the state store");
                        let (refused, rest) = spawns
                            .into_iter()
                            .partition::<Vec<_>, _>(|s| matches!(s, Spawn::Attempt(_)));
                        sched.unstart(
                            refused
                                .into_iter()
                                .filter_map(|s| match s {
                                    Spawn::Attempt(a) => Some(a),
                                    Spawn::Recover(_) => None,
                                })
                                .collect(),
                        );
                        spawns = rest;
                        self.control.stop(self.opts.grace);
                    }
                }
            }
            for s in spawns {
                match s {
                    Spawn::Attempt(a) => {
                        let step = &plan.steps[a.node];
                        let kind = self.registry.get(&step.spec.uses.value).cloned();
                        spawn_attempt(scope, step, kind, a, tx.clone());
                    }
                    Spawn::Recover(r) => {
                        let step = &plan.steps[r.node];
                        let kind = self.registry.get(&step.spec.uses.value).cloned();
                        spawn_recovery(scope, step, kind, r, tx.clone());
                    }
                }
            }
            if sched.in_flight() == 0 {
                // Nothing in flight: either everything is final, or nothing more can start.
                if drain.is_cancelled() || !sched.can_progress() {
                    break;
                }
                continue;
            }
            let first = tokio::select! {
                c = rx.recv() => c,
                _ = drain.cancelled(), if !drain.is_cancelled() => None,
            };
            if let Some(c) = first {
                sched.complete(c);
                while let Ok(c) = rx.try_recv() {
                    sched.complete(c);
                }
            }
        }
        if drain.is_cancelled() {
            sched.drain();
        }
        Ok(sched.status())
    }
}

/// The run's files read again (`resume --reload`): the workflow, the site file and the group
/// files the site file lists now.
fn reload_sources(mut sources: Sources) -> Result<Sources, RunError> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| RunError::Usage(format!("--reload: cannot read {path}: {e}")))
    };
    sources.workflow.text = read(&sources.workflow.path)?;
    if let Some(site) = &mut sources.site {
        site.text = read(&site.path)?;
        sources.groups = crate::plan::site_groups(site, &mut |p| std::fs::read_to_string(p))
            .map_err(RunError::Invalid)?;
    }
    Ok(sources)
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
