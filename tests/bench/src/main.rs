//! `siteflow-bench`: benchmarks of the siteflow engine that print figures beside their
//! targets. Not a test: nothing fails when a target is missed (see `README.md`).

mod ansible;
mod azure;
mod floor;
mod prefect;
mod provision;
mod ssh;
mod workload;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use floor::Stats;
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::RunStatus;
use siteflow_step::shell_quote;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Harness, Shape, step_id, workflow};

/// Benchmarks of the siteflow engine.
#[derive(Parser)]
#[command(name = "siteflow-bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scheduler and durable-state overhead with `noop` steps: fan-out, chain, resume.
    Engine(EngineArgs),
    /// `ssh.exec` steps on real OpenSSH test hosts (needs root), optionally against Ansible.
    Ssh(ssh::SshArgs),
    /// Many sites' networks and VMs against the Azure emulator under an ARM write limit.
    Azure(azure::AzureArgs),
    /// provision-site end to end in the local sandbox, against its critical chain.
    Provision(provision::ProvisionArgs),
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Numbers of steps, comma-separated; each runs as a fan-out and as a chain.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// `--parallel` of the runs (bound on concurrently running steps).
    #[arg(long, default_value_t = 1024)]
    parallel: usize,
    /// Steps of the resume case (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    resume_size: usize,
    /// Single-row transactions timed for the commit floor.
    #[arg(long, default_value_t = 300)]
    commit_samples: usize,
    /// Where the temporary state databases go (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Also run a peer engine on the same fan-out.
    #[arg(long, value_enum)]
    peer: Vec<Peer>,
    /// Tasks of the peer's fan-out.
    #[arg(long, default_value_t = 1000)]
    peer_tasks: usize,
    /// Which cases run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fan-out,chain,resume"
    )]
    cases: Vec<Case>,
    /// Times the resume case's cold resume and warm reruns are repeated (medians reported).
    #[arg(long, default_value_t = 3)]
    resume_reps: usize,
    /// Times each chain runs (each with its own floor beside it; the median ratio is the
    /// verdict, since a commit's cost swings with the disk).
    #[arg(long, default_value_t = 3)]
    chain_reps: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    /// `noop` steps, all independent.
    FanOut,
    /// `noop` steps, each needing the previous one.
    Chain,
    /// Resuming a fan-out after one step failed.
    Resume,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Peer {
    /// Prefect 3, ephemeral mode, in `<workspace>/.ci/prefect-venv`.
    Prefect,
}

/// Targets.
const FANOUT_TARGET: Duration = Duration::from_micros(100);
const CHAIN_TARGET_RATIO: f64 = 1.5;
const RESUME_TARGET: Duration = Duration::from_millis(50);

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Engine(args) => rt.block_on(engine(args)),
        Cmd::Ssh(args) => rt.block_on(ssh::ssh(args)),
        Cmd::Azure(args) => rt.block_on(azure::azure(args)),
        Cmd::Provision(args) => rt.block_on(provision::provision(args)),
    }
}

/// A duration in the unit that suits it.
fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// A difference of two measurements; zero means it is below their noise.
fn fmt_or_noise(d: Duration) -> String {
    if d.is_zero() {
        "≈0 (below noise)".into()
    } else {
        fmt_d(d)
    }
}

/// Milliseconds with three decimals.
fn fmt_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

struct Row {
    shape: Shape,
    steps: usize,
    compile: Duration,
    wall: Duration,
    cpu: Duration,
    commits: u64,
    /// For a chain: the commit floor measured just before and just after it.
    local_floor: Option<Stats>,
    /// For a chain: one step's writes through `StateStore::write` alone, measured beside it.
    store_step: Option<Stats>,
}

impl Row {
    fn per_step(&self) -> Duration {
        self.wall / self.steps.max(1) as u32
    }
}

/// CPU time used so far by this process's live threads (user + system), from
/// `/proc/self/task/*/schedstat` (ns).
fn cpu_time() -> Duration {
    let mut ns: u64 = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn engine(args: EngineArgs) -> Result<()> {
    let base = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let registry = Arc::new(Registry::new().with(siteflow_steps_core::steps()));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let began = Instant::now();

    println!("siteflow-bench engine");
    println!(
        "  machine: {workers} CPU(s), load average {}; tokio multi-thread runtime ({workers} workers); release build: {}",
        load_average(),
        !cfg!(debug_assertions)
    );
    println!(
        "  state: a fresh SQLite file per case in {} (WAL, synchronous=FULL); --parallel {}",
        base.display(),
        args.parallel
    );
    println!();

    // The floor: one durable commit.
    let floor_at = |samples: usize| -> Result<Stats> {
        let scratch = tempfile::Builder::new()
            .prefix("siteflow-bench-floor-")
            .tempdir_in(&base)?;
        floor::commit_floor(scratch.path(), samples)
    };
    let floor = floor_at(args.commit_samples)?;
    println!(
        "durable commit (floor): mean {}  median {}  p95 {}  min {}  ({} single-row insert transactions)",
        fmt_ms(floor.mean),
        fmt_ms(floor.median),
        fmt_ms(floor.p95),
        fmt_ms(floor.min),
        floor.n
    );
    println!();

    // Fan-out and chain per size.
    let mut rows = vec![];
    for &n in &args.sizes {
        let chain_reps = args.chain_reps.max(1);
        let shapes = std::iter::once((Shape::FanOut, Case::FanOut))
            .chain(std::iter::repeat_n((Shape::Chain, Case::Chain), chain_reps));
        for (shape, case) in shapes {
            if !args.cases.contains(&case) {
                continue;
            }
            // A chain is bound by commits: the floor is measured again right beside it.
            let side = (args.commit_samples / 3).max(20);
            let before = (shape == Shape::Chain)
                .then(|| floor_at(side))
                .transpose()?;
            let h = Harness::new(&base, registry.clone(), args.parallel)?;
            let name = format!("bench-{}-{n}", shape.name());
            let cpu0 = cpu_time();
            let (compile, m) = h.start(&name, workflow(shape, n, None)).await?;
            let cpu = cpu_time().saturating_sub(cpu0).saturating_sub(compile);
            if m.outcome.status != RunStatus::Succeeded {
                bail!(
                    "{name}: run {} ended {:?}",
                    m.outcome.run_id,
                    m.outcome.status
                );
            }
            drop(h);
            let store_step = if shape == Shape::Chain {
                let scratch = tempfile::Builder::new()
                    .prefix("siteflow-bench-store-")
                    .tempdir_in(&base)?;
                Some(floor::store_step_cost(scratch.path(), side).await?)
            } else {
                None
            };
            let local_floor = match before {
                Some(b) => {
                    let a = floor_at(side)?;
                    Some(Stats {
                        n: b.n + a.n,
                        mean: (b.mean + a.mean) / 2,
                        median: (b.median + a.median) / 2,
                        p95: b.p95.max(a.p95),
                        min: b.min.min(a.min),
                    })
                }
                None => None,
            };
            rows.push(Row {
                shape,
                steps: n,
                compile,
                wall: m.wall,
                cpu,
                commits: m.commits,
                local_floor,
                store_step,
            });
        }
    }
    if !rows.is_empty() {
        println!(
            "{:<8} {:>6}  {:>9}  {:>10}  {:>10}  {:>8}  {:>9}  target",
            "case", "steps", "wall", "per step", "cpu/step", "commits", "compile"
        );
    }
    for r in &rows {
        let target = match r.shape {
            Shape::FanOut => format!(
                "per step ≤ {}: {}",
                fmt_ms(FANOUT_TARGET),
                verdict(r.per_step() <= FANOUT_TARGET)
            ),
            Shape::Chain => {
                let f = r.local_floor.unwrap_or(floor);
                let floor_total = f.mean * r.steps as u32;
                let ratio = r.wall.as_secs_f64() / floor_total.as_secs_f64();
                format!(
                    "{ratio:.2}× floor ({} × {} = {}); ≤ {CHAIN_TARGET_RATIO}×: {}",
                    r.steps,
                    fmt_ms(f.mean),
                    fmt_d(floor_total),
                    verdict(ratio <= CHAIN_TARGET_RATIO)
                )
            }
        };
        println!(
            "{:<8} {:>6}  {:>9}  {:>10}  {:>10}  {:>8}  {:>9}  {target}",
            r.shape.name(),
            r.steps,
            fmt_d(r.wall),
            fmt_ms(r.per_step()),
            fmt_ms(r.cpu / r.steps.max(1) as u32),
            r.commits,
            fmt_d(r.compile),
        );
    }
    for &n in &args.sizes {
        let mut ratios: Vec<f64> = rows
            .iter()
            .filter(|r| r.shape == Shape::Chain && r.steps == n)
            .map(|r| {
                let f = r.local_floor.unwrap_or(floor);
                r.wall.as_secs_f64() / (f.mean * r.steps as u32).as_secs_f64()
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "  chain {n}: median of {} runs {median:.2}× its floor (runs: {})   target ≤ {CHAIN_TARGET_RATIO}×: {}",
            ratios.len(),
            ratios
                .iter()
                .map(|r| format!("{r:.2}×"))
                .collect::<Vec<_>>()
                .join(", "),
            verdict(median <= CHAIN_TARGET_RATIO)
        );
    }
    for r in rows.iter().filter(|r| r.shape == Shape::Chain) {
        if let (Some(f), Some(s)) = (r.local_floor, r.store_step) {
            println!(
                "  chain {}: per step {} = the step's own writes via StateStore::write alone {} (single-row commit floor {}) + scheduler/tasks {}",
                r.steps,
                fmt_ms(r.per_step()),
                fmt_ms(s.mean),
                fmt_ms(f.mean),
                fmt_ms(r.per_step().saturating_sub(s.mean)),
            );
        }
    }
    if !rows.is_empty() {
        println!(
            "  wall: Runner::start until the run's final commit; cpu: CPU time of all threads in that span"
        );
        println!(
            "  compile: YAML → plan (not in wall); chain floor: commits timed just before and after that chain"
        );
        println!();
    }

    if args.resume_size > 0 && args.cases.contains(&Case::Resume) {
        resume_case(&args, &base, registry.clone(), &floor).await?;
    }

    for peer in &args.peer {
        match peer {
            Peer::Prefect => prefect_peer(&args, &base, registry.clone(), &rows).await?,
        }
    }
    println!(
        "total benchmark time: {}; load average now {}",
        fmt_d(began.elapsed()),
        load_average()
    );
    Ok(())
}

/// Resuming a large fan-out after one step failed.
async fn resume_case(
    args: &EngineArgs,
    base: &std::path::Path,
    registry: Arc<Registry>,
    floor: &Stats,
) -> Result<()> {
    let n = args.resume_size;
    let k = n / 2;
    let failing = step_id(k);
    println!(
        "resume: {n}-step fan-out whose step `{failing}` is `shell: test -f <marker>` (retry max_attempts 1)"
    );

    // The real thing, `--resume-reps` times over, each in a fresh database: run (fails),
    // end that command as the CLI does, create the marker, resume (timed, cold: the
    // first continuation of that run).
    let reps = args.resume_reps.max(1);
    let (mut resumes, mut firsts, mut ends, mut attempt_ms) = (vec![], vec![], vec![], vec![]);
    let mut resume_commits = 0;
    let mut last = None;
    for _ in 0..reps {
        let h = Harness::new(base, registry.clone(), args.parallel)?;
        let marker = h.dir.path().join("marker");
        let yaml = workflow(Shape::FanOut, n, Some((k, &marker)));
        let (_, first) = h.start("bench-resume", yaml).await?;
        if first.outcome.status != RunStatus::Failed {
            bail!(
                "the first run should fail at `{failing}` but ended {:?}",
                first.outcome.status
            );
        }
        firsts.push(first.wall);
        // What the CLI does once a command has printed its result (state freed, WAL
        // checkpointed), so the resume starts like a new `siteflow resume` process.
        ends.push(h.end_of_command().await?);
        std::fs::write(&marker, "")?;
        let run_id = first.outcome.run_id.clone();
        let resumed = h.resume(&run_id).await?;
        if resumed.outcome.status != RunStatus::Succeeded {
            bail!("the resume ended {:?}", resumed.outcome.status);
        }
        resumes.push(resumed.wall);
        resume_commits = resumed.commits;
        // The failed step's attempt as the state database recorded it (ms resolution).
        let attempts = h.store.attempts(&run_id).await?;
        if let Some(ms) = attempts
            .iter()
            .find(|a| a.step_key == failing && a.attempt == 2)
            .and_then(|a| a.finished_at.map(|f| f - a.started_at))
        {
            attempt_ms.push(ms);
        }
        h.end_of_command().await?;
        last = Some((h, run_id, marker));
    }
    let Some((h, run_id, marker)) = last else {
        bail!("no resume ran");
    };
    let resumed = Stats::of(resumes);
    let firsts = Stats::of(firsts);
    let ends = Stats::of(ends);
    attempt_ms.sort_unstable();
    let attempt_median = attempt_ms.get(attempt_ms.len() / 2).copied();
    // The same continuation again, warm: rerun of that (now passing) shell step.
    let mut shell = vec![];
    for _ in 0..reps {
        h.end_of_command().await?;
        shell.push(h.rerun(&run_id, &failing).await?.wall);
    }
    let shell = Stats::of(shell);
    // The shell step's own work: a bash process running `test -f`, alone.
    let bash = bash_test_cost(&marker, 5).await?;

    // The baseline: an identical run where that step is a noop too; it succeeds, and
    // `rerun` of that one step (no dependents) continues the run like a resume with one
    // step to do, minus the shell process.
    let h2 = Harness::new(base, registry, args.parallel)?;
    let (_, ok) = h2
        .start("bench-resume-noop", workflow(Shape::FanOut, n, None))
        .await?;
    if ok.outcome.status != RunStatus::Succeeded {
        bail!("the noop run ended {:?}", ok.outcome.status);
    }
    let mut noop = vec![];
    let mut noop_commits = 0;
    for _ in 0..reps {
        h2.end_of_command().await?;
        let m = h2.rerun(&ok.outcome.run_id, &failing).await?;
        noop_commits = m.commits;
        noop.push(m.wall);
    }
    let noop = Stats::of(noop);

    println!(
        "  first runs: median {} (Failed, as meant); the end of that command (state freed, WAL checkpointed): median {}",
        fmt_d(firsts.median),
        fmt_d(ends.median),
    );
    println!(
        "  resume (cold, each the first continuation of its run; {} runs): median {}  min {}  p95 {}; {} commits (Succeeded)",
        resumed.n,
        fmt_d(resumed.median),
        fmt_d(resumed.min),
        fmt_d(resumed.p95),
        resume_commits
    );
    println!(
        "  failed step's own execution: median {} attempt row (ms resolution); a bash `test -f` alone: median {}",
        attempt_median.map_or("?".into(), |ms| format!("{ms} ms")),
        fmt_d(bash.median)
    );
    println!(
        "  the same continuation repeated warm (rerun of the shell step; median of {}): {}",
        shell.n,
        fmt_d(shell.median)
    );
    let minus_bash = resumed.median.saturating_sub(bash.median);
    println!(
        "  resume (median) minus the bash process: {}   target < {} + failed step: {}",
        fmt_d(minus_bash),
        fmt_d(RESUME_TARGET),
        verdict(minus_bash < RESUME_TARGET)
    );
    println!(
        "  identical run, that step a noop too (rerun of it; median of {}): {}, {} commits   target < {}: {}",
        noop.n,
        fmt_d(noop.median),
        noop_commits,
        fmt_d(RESUME_TARGET),
        verdict(noop.median < RESUME_TARGET)
    );
    println!(
        "  → the failed step's own cost: {} (shell rerun − noop rerun); resume overhead without it ≈ {}",
        fmt_or_noise(shell.median.saturating_sub(noop.median)),
        fmt_d(noop.median)
    );
    // Where a resume's time goes: its pieces, timed apart with the same public calls.
    let p = h.resume_pieces(&run_id, reps).await?;
    println!("  where it goes (pieces timed apart, medians of {reps}):");
    println!(
        "    run row + its sources, then the stored layered workflow ({} KiB)   {:>9}",
        p.effective_bytes / 1024,
        fmt_d(p.run_row + p.effective)
    );
    println!(
        "    on a blocking thread: parse that JSON {}, compile_effective {} (Node::from_json {}, parse_workflow {}, checks/plan {})",
        fmt_d(p.effective_json),
        fmt_d(p.compile),
        fmt_d(p.from_json),
        fmt_d(p.spec_parse),
        fmt_or_noise(p.compile.saturating_sub(p.from_json + p.spec_parse))
    );
    println!(
        "    meanwhile on the store thread: {} step rows (steps_for_resume)   {}",
        p.step_rows,
        fmt_d(p.load_steps)
    );
    let before = p.run_row + p.effective + p.effective_json + p.compile.max(p.load_steps);
    println!(
        "    the rest: scheduler over {n} nodes, {} commits (floor {} each), release  ≈ {}",
        noop_commits,
        fmt_ms(floor.mean),
        fmt_or_noise(noop.median.saturating_sub(before))
    );
    println!();
    Ok(())
}

/// Times `bash -eo pipefail -c 'test -f marker'` (what the failed step runs), `n` times.
async fn bash_test_cost(marker: &std::path::Path, n: usize) -> Result<Stats> {
    let mut out = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let status = tokio::process::Command::new("bash")
            .arg("-eo")
            .arg("pipefail")
            .arg("-c")
            .arg(format!(
                "test -f {}",
                shell_quote(&marker.to_string_lossy())
            ))
            .status()
            .await?;
        if !status.success() {
            bail!("bash test -f failed: {status}");
        }
        out.push(t.elapsed());
    }
    Ok(Stats::of(out))
}

/// Prefect 3's fan-out beside siteflow's.
async fn prefect_peer(
    args: &EngineArgs,
    base: &std::path::Path,
    registry: Arc<Registry>,
    rows: &[Row],
) -> Result<()> {
    let n = args.peer_tasks;
    // siteflow's fan-out of the same size (measured above, or now).
    let ours = match rows
        .iter()
        .find(|r| r.shape == Shape::FanOut && r.steps == n)
    {
        Some(r) => r.per_step(),
        None => {
            let h = Harness::new(base, registry, args.parallel)?;
            let (_, m) = h
                .start("bench-fan-out-peer", workflow(Shape::FanOut, n, None))
                .await?;
            m.wall / n.max(1) as u32
        }
    };
    println!(
        "peer: Prefect 3, {n} no-op tasks (@task .submit() in one @flow, then wait), ephemeral mode"
    );
    let p = prefect::fanout(n, Duration::from_secs(600)).await?;
    let theirs = Duration::from_secs_f64(p.tasks_s / p.tasks.max(1) as f64);
    let theirs_flow = Duration::from_secs_f64(p.flow_s / p.tasks.max(1) as f64);
    println!(
        "  prefect {}: submit→all done {} ({} per task); whole flow call {} ({} per task); warm-up flow (server start) {}",
        p.version,
        fmt_d(Duration::from_secs_f64(p.tasks_s)),
        fmt_ms(theirs),
        fmt_d(Duration::from_secs_f64(p.flow_s)),
        fmt_ms(theirs_flow),
        fmt_d(Duration::from_secs_f64(p.warmup_s)),
    );
    println!(
        "  per task/step: siteflow {} vs prefect {} → prefect is {:.0}× slower (issue reference for prefect: ~{:.0} ms per task)",
        fmt_ms(ours),
        fmt_ms(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64(),
        prefect::ISSUE_REFERENCE_MS
    );
    println!();
    Ok(())
}
