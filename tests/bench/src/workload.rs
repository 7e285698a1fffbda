//! The benchmark workflows, generated in memory, and the harness that runs them against a
//! fresh durable state database.

use crate::floor::Stats;
use anyhow::{Context, Result, bail};
use siteflow_engine::diag::{Diagnostics, Loc};
use siteflow_engine::plan::{SourceText, Sources, compile, compile_effective};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, Outcome, RunOptions, Runner};
use siteflow_engine::state::StateStore;
use siteflow_engine::{spec, yaml};
use siteflow_step::shell_quote;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How the `noop` steps depend on each other.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// All independent.
    FanOut,
    /// Each step needs the previous one.
    Chain,
}

impl Shape {
    /// The name used in workflow names and the report.
    pub fn name(self) -> &'static str {
        match self {
            Shape::FanOut => "fan-out",
            Shape::Chain => "chain",
        }
    }
}

/// The id of step `i`.
pub fn step_id(i: usize) -> String {
    format!("s{i}")
}

/// A workflow of `n` `noop` steps in `shape`. With `failing = Some((k, marker))`, step `k`
/// is instead a `shell` step that fails (one attempt, no retry) until `marker` exists.
pub fn workflow(shape: Shape, n: usize, failing: Option<(usize, &Path)>) -> String {
    let mut y = String::with_capacity(n * 48 + 256);
    let _ = writeln!(y, "name: bench-{}-{n}", shape.name());
    let _ = writeln!(
        y,
        "description: siteflow-bench workload ({n} steps, {})",
        shape.name()
    );
    y.push_str("steps:\n");
    for i in 0..n {
        let id = step_id(i);
        match failing {
            Some((k, marker)) if k == i => {
                let _ = writeln!(y, "  - id: {id}\n    uses: shell");
                if shape == Shape::Chain && i > 0 {
                    let _ = writeln!(y, "    needs: [{}]", step_id(i - 1));
                }
                let _ = writeln!(
                    y,
                    "    retry:\n      max_attempts: 1\n    with:\n      run: |\n        test -f {}",
                    shell_quote(&marker.to_string_lossy())
                );
            }
            _ => {
                let _ = writeln!(y, "  - id: {id}\n    uses: noop");
                if shape == Shape::Chain && i > 0 {
                    let _ = writeln!(y, "    needs: [{}]", step_id(i - 1));
                }
            }
        }
    }
    y
}

/// The sources of a generated workflow.
pub fn sources(name: &str, yaml: String) -> Sources {
    Sources {
        workflow: SourceText {
            path: format!("{name}.yaml"),
            text: yaml,
        },
        site: None,
        groups: vec![],
        sets: vec![],
    }
}

/// A fresh state database in its own temporary directory, and a runner over it.
pub struct Harness {
    /// The directory (removed on drop); also the runs' working directory.
    pub dir: TempDir,
    /// The store.
    pub store: StateStore,
    registry: Arc<Registry>,
    runner: Runner,
}

/// One timed invocation.
pub struct Measured {
    /// Wall time of `start`/`resume`/`rerun` (compilation excluded for `start`).
    pub wall: Duration,
    /// Durable commits made during it.
    pub commits: u64,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Harness {
    /// A new database under `base`.
    pub fn new(base: &Path, registry: Arc<Registry>, parallel: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("siteflow-bench-")
            .tempdir_in(base)
            .with_context(|| format!("create a temp dir in {}", base.display()))?;
        let store = StateStore::open(&dir.path().join("state.db"))?;
        let opts = RunOptions {
            parallel,
            working_dir: dir.path().to_path_buf(),
            ..RunOptions::default()
        };
        let runner = Runner::new(registry.clone(), store.clone(), opts, Arc::new(NoObserver));
        Ok(Harness {
            dir,
            store,
            registry,
            runner,
        })
    }

    /// Compiles `yaml` (timed separately) and times a new run of it.
    pub async fn start(&self, name: &str, yaml: String) -> Result<(Duration, Measured)> {
        let sources = sources(name, yaml);
        let t = Instant::now();
        let plan = compile(&sources, &self.registry).map_err(|d| anyhow::anyhow!("{d}"))?;
        let compile_time = t.elapsed();
        let c0 = self.store.commits();
        let t = Instant::now();
        let outcome = self.runner.start(plan, sources).await?;
        let wall = t.elapsed();
        Ok((
            compile_time,
            Measured {
                wall,
                commits: self.store.commits() - c0,
                outcome,
            },
        ))
    }

    /// Times `Runner::resume` of a run.
    pub async fn resume(&self, run_id: &str) -> Result<Measured> {
        let c0 = self.store.commits();
        let t = Instant::now();
        let outcome = self.runner.resume(run_id, false).await?;
        Ok(Measured {
            wall: t.elapsed(),
            commits: self.store.commits() - c0,
            outcome,
        })
    }

    /// What a CLI command does after printing its answer, before its process exits: the
    /// finished run's state is freed (`Runner::settle`, the runtime's shutdown in the CLI)
    /// and the WAL is checkpointed (`StateStore::checkpoint`). Run between two timed
    /// commands, so each starts like a new `siteflow` process; returns how long it took.
    pub async fn end_of_command(&self) -> Result<Duration> {
        let t = Instant::now();
        self.runner.settle().await;
        self.store.checkpoint().await?;
        Ok(t.elapsed())
    }

    /// Times `Runner::rerun` of one step (no dependents) of a finished run.
    pub async fn rerun(&self, run_id: &str, step: &str) -> Result<Measured> {
        let c0 = self.store.commits();
        let t = Instant::now();
        let outcome = self.runner.rerun(run_id, step, false).await?;
        Ok(Measured {
            wall: t.elapsed(),
            commits: self.store.commits() - c0,
            outcome,
        })
    }

    /// Times, apart and `reps` times each (medians), the pieces of work a resume of
    /// `run_id` does before its scheduler, with the same public calls `Runner::resume` makes.
    pub async fn resume_pieces(&self, run_id: &str, reps: usize) -> Result<Pieces> {
        let mut p = Pieces::default();
        let (mut run, mut effective, mut json, mut node, mut spec, mut compile_t, mut steps) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut rows = 0;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let row = self.store.run(run_id).await?;
            let src: Sources = serde_json::from_str(&row.sources)?;
            run.push(t.elapsed());

            let t = Instant::now();
            let text = self
                .store
                .run_effective(run_id)
                .await?
                .context("the run has no stored layered workflow")?;
            effective.push(t.elapsed());
            p.effective_bytes = text.len();

            let t = Instant::now();
            let value: serde_json::Value = serde_json::from_str(&text)?;
            json.push(t.elapsed());

            let t = Instant::now();
            let tree = yaml::Node::from_json(&value, &Loc::default());
            node.push(t.elapsed());
            let t = Instant::now();
            let mut diags = Diagnostics::default();
            let wf = spec::parse_workflow(&tree, &mut diags);
            spec.push(t.elapsed());
            drop((wf, tree));

            let t = Instant::now();
            let plan = compile_effective(value, &src, &self.registry);
            compile_t.push(t.elapsed());
            if let Err(d) = plan {
                bail!("{d}");
            }

            let t = Instant::now();
            rows = self.store.steps_for_resume(run_id).await?.len();
            steps.push(t.elapsed());
        }
        p.run_row = Stats::of(run).median;
        p.effective = Stats::of(effective).median;
        p.effective_json = Stats::of(json).median;
        p.from_json = Stats::of(node).median;
        p.spec_parse = Stats::of(spec).median;
        p.compile = Stats::of(compile_t).median;
        p.load_steps = Stats::of(steps).median;
        p.step_rows = rows;
        Ok(p)
    }
}

/// Pieces of a resume, timed apart (medians).
#[derive(Default)]
pub struct Pieces {
    /// `StateStore::run` and parsing its stored sources.
    pub run_row: Duration,
    /// `StateStore::run_effective`: the stored layered workflow (JSON text).
    pub effective: Duration,
    /// Its size.
    pub effective_bytes: usize,
    /// Parsing that JSON (part of the compile's thread).
    pub effective_json: Duration,
    /// `yaml::Node::from_json` (part of `compile_effective`).
    pub from_json: Duration,
    /// `spec::parse_workflow` of the tree (part of `compile_effective`).
    pub spec_parse: Duration,
    /// `plan::compile_effective` in all (JSON parse excluded).
    pub compile: Duration,
    /// `StateStore::steps_for_resume`: every step row (loads while the plan compiles).
    pub load_steps: Duration,
    /// How many rows.
    pub step_rows: usize,
}
