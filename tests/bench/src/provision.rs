//! `siteflow-bench provision`: `workflows/provision-site.yaml` end to end in the local sandbox
//! (the Azure emulator, a real OpenSSH test host per VM with the k3s simulator), with one or
//! more sites running concurrently in this process over one engine (issue #8).
//!
//! The figure of merit is the wall time against the time the steps on the run's critical
//! chain themselves took (each step's first start to its last end: the emulator's operations,
//! the hosts' commands, the agents' connection). What is left is siteflow's own cost: process
//! and run start, scheduling gaps between a step and the next, state commits, recheck delays
//! that overshoot.

use crate::{fmt_d, load_average, verdict};
use anyhow::{Context, Result, bail};
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::{AttemptRow, StateStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The target: wall time at most this many times the critical chain.
const TARGET_RATIO: f64 = 1.1;

#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// Sites, each its own run of provision-site (all concurrent, in this process); every
    /// site has two VMs, so two test hosts.
    #[arg(long, default_value_t = 1)]
    sites: usize,
    /// Agents per site.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// The `siteflow` binary that runs the sandbox daemon (default: next to this one).
    #[arg(long)]
    siteflow: Option<PathBuf>,
    /// Bound on the whole run, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

fn siteflow_bin(args: &ProvisionArgs) -> Result<PathBuf> {
    if let Some(p) = &args.siteflow {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("siteflow");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "no siteflow binary next to {}: `cargo build --release -p siteflow` (or --siteflow PATH)",
        exe.display()
    )
}

/// Starts (or stops) the sandbox of `dir` with the siteflow binary.
fn sandbox(bin: &Path, dir: &Path, verb: &str) -> Result<()> {
    let out = std::process::Command::new(bin)
        .args(["sandbox", verb])
        .current_dir(dir)
        .env_remove("AZURE_SUBSCRIPTION_ID")
        .output()
        .context("running siteflow sandbox")?;
    if !out.status.success() {
        bail!(
            "siteflow sandbox {verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `--set` values that point provision-site at the sandbox, as its daemon records them
/// for `siteflow run`, for the inputs the workflow declares (as `siteflow run` filters them).
fn sandbox_sets(dir: &Path, wf_path: &Path, wf_text: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(".siteflow/sandbox/sandbox.json"))?;
    let info: serde_json::Value = serde_json::from_str(&text)?;
    let sets: Vec<String> = serde_json::from_value(info["sets"].clone())?;
    if sets.is_empty() {
        bail!("sandbox.json lists no `sets`: is the siteflow binary older than this benchmark?");
    }
    let file = Arc::new(siteflow_engine::diag::SourceFile {
        name: wf_path.display().to_string(),
        text: wf_text.to_string(),
    });
    let root = siteflow_engine::yaml::parse(&file).map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut diags = siteflow_engine::diag::Diagnostics::default();
    let workflow = siteflow_engine::spec::parse_workflow(&root, &mut diags);
    Ok(sets
        .into_iter()
        .filter(|s| {
            let name = s.split(['=', '.']).next().unwrap_or_default();
            workflow.inputs.iter().any(|i| i.name == name)
        })
        .collect())
}

/// One step instance's span: its first attempt's start to its last attempt's end (ms).
#[derive(Debug, Clone)]
struct Span {
    key: String,
    start: i64,
    end: i64,
}

/// The chain of steps that decided when the run ended: from the step that ended last, back
/// through the step that ended last before each one started.
fn critical_chain(attempts: &[AttemptRow]) -> Vec<Span> {
    let mut spans: BTreeMap<String, Span> = BTreeMap::new();
    for a in attempts {
        let end = a.finished_at.unwrap_or(a.started_at);
        let s = spans.entry(a.step_key.clone()).or_insert(Span {
            key: a.step_key.clone(),
            start: a.started_at,
            end,
        });
        s.start = s.start.min(a.started_at);
        s.end = s.end.max(end);
    }
    let mut chain = Vec::new();
    let Some(mut cur) = spans.values().max_by_key(|s| s.end).cloned() else {
        return chain;
    };
    loop {
        chain.push(cur.clone());
        // A step starts once its last need has finished (1 ms of clock granularity).
        let pred = spans
            .values()
            .filter(|s| s.end <= cur.start + 1 && s.key != cur.key)
            .max_by_key(|s| s.end)
            .cloned();
        match pred {
            Some(p) => cur = p,
            None => break,
        }
    }
    chain.reverse();
    chain
}

pub async fn provision(args: ProvisionArgs) -> Result<()> {
    // One host of the sandbox is its existing (non-Azure) cluster.
    let most = siteflow_testhosts::layout::MAX_HOSTS - 1;
    if args.sites == 0 || args.sites * (args.agents + 1) > most {
        bail!("a sandbox holds at most {most} VMs: --sites × (--agents + 1) ≤ {most}");
    }
    let bin = siteflow_bin(&args)?;
    let dir = tempfile::tempdir()?;
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let wf_path = workflows.join("provision-site.yaml");
    let wf_text = std::fs::read_to_string(&wf_path)?;

    println!("siteflow-bench provision");
    println!(
        "  machine: {} CPU(s), load average {}; release build: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average(),
        !cfg!(debug_assertions)
    );
    println!(
        "  {} site(s) of provision-site, each a server and {} agent(s), concurrently in one process",
        args.sites, args.agents
    );
    let t = Instant::now();
    sandbox(&bin, dir.path(), "up")?;
    println!("  sandbox up in {}", fmt_d(t.elapsed()));
    let result = run_sites(&args, dir.path(), &wf_path, &wf_text).await;
    let down = sandbox(&bin, dir.path(), "down");
    result?;
    down
}

async fn run_sites(args: &ProvisionArgs, dir: &Path, wf_path: &Path, wf_text: &str) -> Result<()> {
    let pool = siteflow_ssh::steps::StepPool::new();
    let registry = Arc::new(
        Registry::new()
            .with(siteflow_steps_core::steps())
            .with(siteflow_ssh::steps(pool.clone()))
            .with(siteflow_steps_k3s::steps(pool.clone()))
            .with(siteflow_steps_azure::steps())
            .with(siteflow_steps_arc::steps(pool.clone()))
            .with(siteflow_steps_flux::steps(pool))
            .with(siteflow_steps_kube::steps()),
    );
    let store = StateStore::open(&dir.join("state.db"))?;
    let sets = sandbox_sets(dir, wf_path, wf_text)?;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.sites {
        let mut s = sets.clone();
        s.push(format!("name=bench-{i}"));
        s.push(format!("agents={}", args.agents));
        let sources = Sources {
            workflow: SourceText {
                path: wf_path.display().to_string(),
                text: wf_text.to_string(),
            },
            site: None,
            groups: vec![],
            sets: s,
        };
        let plan = compile(&sources, &registry).map_err(|d| anyhow::anyhow!("{d}"))?;
        let runner = Runner::new(
            registry.clone(),
            store.clone(),
            RunOptions {
                working_dir: dir.to_path_buf(),
                parallel: 64,
                ..RunOptions::default()
            },
            Arc::new(NoObserver),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let out = runner.start(plan, sources).await;
            (out, t.elapsed())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        let r = tokio::time::timeout(Duration::from_secs(args.timeout), task)
            .await
            .context("the sites did not finish in --timeout")??;
        results.push(r);
    }
    let wall = began.elapsed();
    let mut failed = 0;
    let mut ratios = Vec::new();
    for (i, (out, took)) in results.iter().enumerate() {
        let out = out.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        if out.status != RunStatus::Succeeded {
            failed += 1;
            for st in store.steps(&out.run_id).await? {
                if let Some(e) = st.error.filter(|_| st.status != "Succeeded") {
                    println!(
                        "  site {i}: {} {}: {}: {}",
                        st.key, st.status, e.code, e.message
                    );
                }
            }
            continue;
        }
        let attempts = store.attempts(&out.run_id).await?;
        let chain = critical_chain(&attempts);
        let floor: i64 = chain.iter().map(|s| s.end - s.start).sum();
        let floor = Duration::from_millis(floor.max(1) as u64);
        let ratio = took.as_secs_f64() / floor.as_secs_f64();
        ratios.push(ratio);
        if i == 0 {
            println!("  site 0's critical chain (each step's own time):");
            let t0 = chain.first().map_or(0, |s| s.start);
            for s in &chain {
                println!(
                    "    {:<16} {:>9}  (at +{:.2} s)",
                    s.key,
                    fmt_d(Duration::from_millis((s.end - s.start) as u64)),
                    (s.start - t0) as f64 / 1e3
                );
            }
            println!(
                "  site 0: wall {} against its chain's {} → {:.3}× (target ≤ {TARGET_RATIO}×: {})",
                fmt_d(*took),
                fmt_d(floor),
                ratio,
                verdict(ratio <= TARGET_RATIO)
            );
        }
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "  {} site(s): all done in {}, {failed} failed; wall / critical chain per site: median {:.3}×, worst {:.3}×",
        args.sites,
        fmt_d(wall),
        median,
        ratios.last().copied().unwrap_or(f64::NAN)
    );
    if failed > 0 {
        bail!("{failed} site(s) failed");
    }
    Ok(())
}
