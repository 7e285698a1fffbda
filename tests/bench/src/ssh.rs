//! `siteflow-bench ssh`: N commands on H real OpenSSH test hosts through `ssh.exec` steps,
//! against the same work done by Ansible (issue #3).

use crate::ansible;
use crate::floor::Stats;
use crate::workload::Harness;
use crate::{cpu_time, fmt_d, fmt_ms, load_average, verdict};
use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::RunStatus;
use siteflow_ssh::steps::{SshExec, SshUpload, StepPool, script_wrapper};
use siteflow_ssh::{AuthMethod, ExecRequest, HostKeyPolicy, PoolOptions, SshPool, SshTarget};
use siteflow_step::DynStep;
use siteflow_testhosts::TestNet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The issue's target: siteflow at least this many times faster than Ansible.
const TARGET_RATIO: f64 = 100.0;

#[derive(clap::Args)]
pub struct SshArgs {
    /// Test hosts to bring up (real sshd, one network namespace each).
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// Commands (`true`) per host: one `ssh.exec` step each, `for_each` over the hosts.
    #[arg(long, default_value_t = 50)]
    commands: usize,
    /// `--parallel` of the runs (bound on concurrently running step instances).
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Repetitions of each siteflow run (each with a fresh pool and database; medians used).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Dependency shapes to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "independent,lockstep"
    )]
    orders: Vec<Order>,
    /// Skip the breakdown (engine alone, transport alone).
    #[arg(long)]
    no_breakdown: bool,
    /// Where the temporary state databases go (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Also run a peer tool on the same hosts and commands.
    #[arg(long, value_enum)]
    peer: Vec<SshPeer>,
    /// Bound on the peer's run, in seconds.
    #[arg(long, default_value_t = 900)]
    peer_timeout: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Order {
    /// All command-host instances independent: only `--parallel` and the pool bound them.
    Independent,
    /// Command i+1 `needs` command i (on every host): Ansible's default `linear` strategy.
    Lockstep,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Independent => "independent",
            Order::Lockstep => "lockstep",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SshPeer {
    /// ansible-core in `<workspace>/.ci/ansible-venv`, default settings.
    Ansible,
}

/// The hosts as the workflow's `for_each` items: `[{ip, fp}, …]` (JSON flow style).
fn host_items(net: &TestNet) -> String {
    let items: Vec<String> = net
        .hosts
        .iter()
        .map(|h| {
            format!(
                "{{\"ip\": \"{}\", \"fp\": \"{}\"}}",
                h.ip, h.host_key_fingerprint
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// A workflow of `commands` steps, each `for_each` over the hosts. `kind` is `ssh.exec`
/// (the measured thing) or `noop` (the engine alone, same shape).
fn workflow(net: &TestNet, commands: usize, order: Order, kind: &str) -> String {
    let mut y = String::with_capacity(commands * 400 + 1024);
    let _ = writeln!(y, "name: bench-ssh");
    let _ = writeln!(
        y,
        "description: siteflow-bench ssh ({commands} commands × {} hosts, {})",
        net.hosts.len(),
        order.name()
    );
    let _ = writeln!(
        y,
        "inputs:\n  hosts:\n    type: array\n    default: {}",
        host_items(net)
    );
    y.push_str("steps:\n");
    for i in 0..commands {
        let _ = writeln!(y, "  - id: c{i}\n    uses: {kind}");
        if order == Order::Lockstep && i > 0 {
            let _ = writeln!(y, "    needs: [c{}]", i - 1);
        }
        y.push_str("    for_each: ${{ inputs.hosts }}\n");
        if kind == "ssh.exec" {
            let _ = writeln!(
                y,
                "    with:\n      ssh:\n        host: ${{{{ item.ip }}}}\n        user: {}\n        \
                 private_key_file: '{}'\n        host_key: pinned\n        \
                 host_key_fingerprint: ${{{{ item.fp }}}}\n      run: 'true'",
                net.hosts[0].user_nopasswd,
                net.client_key_path.display()
            );
        }
    }
    y
}

/// `Accepted publickey` lines in every host's sshd log: authenticated connections so far.
fn sshd_accepted(net: &TestNet) -> usize {
    net.hosts
        .iter()
        .map(|h| {
            std::fs::read_to_string(h.dir().join("log/sshd.log"))
                .map(|s| s.matches("Accepted publickey").count())
                .unwrap_or(0)
        })
        .sum()
}

/// Busy CPU time of the whole machine (every process, the hosts' sshd and shells
/// included), from `/proc/stat`.
fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().next() else {
        return Duration::ZERO;
    };
    // cpu user nice system idle iowait irq softirq steal …
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(busy * 10)
}

/// Processes created on the whole machine since boot (`processes` in `/proc/stat`).
fn machine_forks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("processes "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One timed siteflow run.
struct RunFigures {
    order: Order,
    wall: Duration,
    compile: Duration,
    commits: u64,
    /// Connections sshd accepted during the run.
    sshd_conns: usize,
    /// Connections the pool held at the end.
    pool_conns: usize,
    /// Attempt durations from the state database (ms resolution).
    attempts: Stats,
    /// The longest attempt.
    attempt_max: Duration,
    cpu_self: Duration,
    cpu_machine: Duration,
    /// Processes created on the machine during the run.
    forks: u64,
}

async fn siteflow_run(
    net: &TestNet,
    args: &SshArgs,
    base: &Path,
    order: Order,
    kind: &str,
) -> Result<RunFigures> {
    let pool = StepPool::new();
    let ssh_steps: Vec<Arc<dyn DynStep>> = vec![
        Arc::new(SshExec::new(pool.clone())),
        Arc::new(SshUpload::new(pool.clone())),
    ];
    let registry = Arc::new(
        Registry::new()
            .with(siteflow_steps_core::steps())
            .with(ssh_steps),
    );
    let h = Harness::new(base, registry, args.parallel)?;
    let yaml = workflow(net, args.commands, order, kind);
    let conns0 = sshd_accepted(net);
    let (cpu0, busy0, forks0) = (cpu_time(), machine_busy(), machine_forks());
    let (compile, m) = h.start("bench-ssh", yaml).await?;
    let forks = machine_forks() - forks0;
    let cpu_self = cpu_time().saturating_sub(cpu0).saturating_sub(compile);
    let cpu_machine = machine_busy().saturating_sub(busy0);
    let pool_conns = pool.ssh().open_connections();
    pool.ssh().close_all().await;
    // sshd writes its log line right after authentication; no wait needed.
    let sshd_conns = sshd_accepted(net) - conns0;
    if m.outcome.status != RunStatus::Succeeded {
        let failed: Vec<String> = h
            .store
            .attempts(&m.outcome.run_id)
            .await?
            .into_iter()
            .filter(|a| a.outcome.as_deref() != Some("succeeded"))
            .take(3)
            .map(|a| {
                format!(
                    "{}: {}",
                    a.step_key,
                    a.error_message.unwrap_or_else(|| "?".into())
                )
            })
            .collect();
        bail!(
            "run {} ended {:?}: {}",
            m.outcome.run_id,
            m.outcome.status,
            failed.join("; ")
        );
    }
    let attempts: Vec<Duration> = h
        .store
        .attempts(&m.outcome.run_id)
        .await?
        .iter()
        .filter_map(|a| a.finished_at.map(|f| f - a.started_at))
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
        .collect();
    Ok(RunFigures {
        order,
        wall: m.wall,
        compile,
        commits: m.commits,
        sshd_conns,
        pool_conns,
        attempt_max: attempts.iter().max().copied().unwrap_or_default(),
        attempts: Stats::of(attempts),
        cpu_self,
        cpu_machine,
        forks,
    })
}

/// What the transport-only case sends per command.
#[derive(Clone, Copy)]
enum Payload {
    /// `true`, as a bare `ExecRequest`.
    Bare,
    /// The wrapper `ssh.exec` sends (`script_wrapper`: private `$SITEFLOW_OUTPUT`, the
    /// script in a `set -eo pipefail` subshell, marker) around `true`.
    StepWrapper,
}

/// The request `ssh.exec` sends for `run: 'true'` (steps/ssh/src/steps/exec.rs,
/// `run_script`: the same wrapper and environment).
fn step_request(i: usize) -> ExecRequest {
    ExecRequest::new(script_wrapper("true", None, "--siteflow-output-bench--"))
        .env("SITEFLOW_RUN_ID", "bench")
        .env("SITEFLOW_STEP_ID", format!("c{i}"))
        .env("SITEFLOW_ATTEMPT", "1")
}

/// The request for one pair.
fn request(payload: Payload, i: usize) -> ExecRequest {
    match payload {
        Payload::Bare => ExecRequest::new("true"),
        Payload::StepWrapper => step_request(i),
    }
}

/// The same command-host pairs straight through `SshPool::exec`, `parallel` at a time, on
/// a fresh pool (connections included), with resident shells (the default) or a channel
/// per command.
async fn transport_only(
    net: &TestNet,
    commands: usize,
    parallel: usize,
    payload: Payload,
    resident_shells: bool,
) -> Result<(Duration, Duration, usize, u64)> {
    let pool = SshPool::new(PoolOptions {
        resident_shells,
        ..PoolOptions::default()
    });
    let mut targets = vec![];
    for h in &net.hosts {
        targets.push(
            SshTarget::new(h.ip.to_string(), h.user_nopasswd.clone())
                .with_port(h.port)
                .with_auth(vec![AuthMethod::key_file(&h.client_key_path)])
                .with_host_key(HostKeyPolicy::pinned(&h.host_key_fingerprint)?),
        );
    }
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let conns0 = sshd_accepted(net);
    let (busy0, forks0) = (machine_busy(), machine_forks());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..commands {
        for target in &targets {
            let (pool, target, sem) = (pool.clone(), target.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let req = request(payload, i);
                let sink = |_: siteflow_step::LogStream, _: &str| {};
                pool.exec_checked(&target, &req, &sink).await?;
                anyhow::Ok(())
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r.context("transport task")??;
    }
    let wall = t.elapsed();
    let busy = machine_busy().saturating_sub(busy0);
    let forks = machine_forks() - forks0;
    pool.close_all().await;
    Ok((wall, busy, sshd_accepted(net) - conns0, forks))
}

/// CPU time of this process's reaped children (`cutime + cstime` in `/proc/self/stat`).
fn children_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the `(comm)`: state is field 3; cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The remote side's shell work alone, run here without SSH: what sshd's session runs per
/// channel (`bash -c <ExecRequest::command_line>`, the login shell being bash), fed the
/// same framed input, `pairs` times, `parallel` at a time. Returns (wall, children's CPU, processes).
async fn shells_only(
    pairs: usize,
    parallel: usize,
    payload: Payload,
) -> Result<(Duration, Duration, u64)> {
    let req = request(payload, 0);
    let input = Arc::new(req.framed_input()?);
    let command_line = req.command_line();
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let (cpu0, forks0) = (children_cpu(), machine_forks());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..pairs {
        let (sem, input, command_line) = (sem.clone(), input.clone(), command_line.clone());
        set.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _permit = sem.acquire_owned().await?;
            let mut child = tokio::process::Command::new("bash")
                .arg("-c")
                .arg(&command_line)
                .current_dir("/")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let mut w = child.stdin.take().context("stdin")?;
            w.write_all(&input).await?;
            drop(w);
            let out = child.wait_with_output().await?;
            if !out.status.success() {
                bail!("the local shell chain exited {}", out.status);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("shell task")??;
    }
    Ok((
        t.elapsed(),
        children_cpu().saturating_sub(cpu0),
        machine_forks() - forks0,
    ))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub async fn ssh(args: SshArgs) -> Result<()> {
    let base = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pairs = args.commands * args.hosts;
    let began = Instant::now();
    println!("siteflow-bench ssh");
    println!(
        "  started {} UTC; machine: {cpus} CPU(s), load average {}; tokio multi-thread runtime ({cpus} workers); release build: {}",
        utc_now(),
        load_average(),
        !cfg!(debug_assertions)
    );

    let t = Instant::now();
    let net = TestNet::new(args.hosts)
        .await
        .context("bring up the test hosts (needs root)")?;
    println!(
        "  test net: {} hosts on {} (up in {}): real OpenSSH sshd, each in its own network namespace on this machine (they share its CPUs with the client)",
        net.hosts.len(),
        net.subnet,
        fmt_d(t.elapsed())
    );
    println!(
        "  workflow: {} ssh.exec steps, each `for_each` over the {} hosts = {pairs} instances; `run: 'true'`; user {}; key file; host_key pinned (each host's fingerprint); no sudo",
        args.commands, args.hosts, net.hosts[0].user_nopasswd
    );
    println!(
        "  --parallel {}; a fresh StepPool (one connection per host, ≤ {} channels each) and a fresh SQLite state file (WAL, synchronous=FULL) in {} per run",
        args.parallel,
        PoolOptions::default().max_channels,
        base.display()
    );
    println!(
        "  orders: independent = no needs; lockstep = c<i+1> needs c<i> (Ansible's linear strategy)"
    );
    println!();

    // A warm-up run: page cache, sshd's first forks, the binary's code.
    let warm = siteflow_run(&net, &args, &base, Order::Independent, "ssh.exec").await?;
    println!(
        "warm-up run (not counted): {} ({} per command-host)",
        fmt_d(warm.wall),
        fmt_ms(warm.wall / pairs.max(1) as u32)
    );
    println!();

    println!(
        "{:<12} {:>3}  {:>9}  {:>12}  {:>7}  {:>17}  {:>19}  {:>21}  {:>8}",
        "order",
        "rep",
        "wall",
        "per cmd-host",
        "commits",
        "ssh conns sshd/pool",
        "attempt p50/p95/max",
        "cpu bench/machine",
        "compile"
    );
    let mut runs = vec![];
    for &order in &args.orders {
        for rep in 1..=args.reps.max(1) {
            let r = siteflow_run(&net, &args, &base, order, "ssh.exec").await?;
            println!(
                "{:<12} {:>3}  {:>9}  {:>12}  {:>7}  {:>17}  {:>19}  {:>21}  {:>8}",
                order.name(),
                rep,
                fmt_d(r.wall),
                fmt_ms(r.wall / pairs.max(1) as u32),
                r.commits,
                format!("{} / {}", r.sshd_conns, r.pool_conns),
                format!(
                    "{} / {} / {} ms",
                    r.attempts.median.as_millis(),
                    r.attempts.p95.as_millis(),
                    r.attempt_max.as_millis()
                ),
                format!(
                    "{:.2} / {:.2} s ({:.0}%)",
                    r.cpu_self.as_secs_f64(),
                    r.cpu_machine.as_secs_f64(),
                    100.0 * r.cpu_machine.as_secs_f64()
                        / (r.wall.as_secs_f64() * cpus as f64).max(1e-9)
                ),
                fmt_d(r.compile)
            );
            runs.push(r);
        }
    }
    println!(
        "  wall: Runner::start until the run's final commit (compile excluded); ssh conns: `Accepted publickey` lines the hosts' sshd logged during the run / connections open in the pool at its end"
    );
    println!(
        "  attempt: one instance's attempt in the state db (ms resolution, includes waiting for a channel); cpu: this process / the whole machine (sshd and remote shells included; % of {cpus} CPUs over the wall)"
    );
    let med = |o: Order| -> Option<Duration> {
        let v: Vec<Duration> = runs
            .iter()
            .filter(|r| r.order == o)
            .map(|r| r.wall)
            .collect();
        (!v.is_empty()).then(|| median(v))
    };
    for &o in &args.orders {
        if let Some(m) = med(o) {
            println!(
                "  median {}: {} = {} per command-host",
                o.name(),
                fmt_d(m),
                fmt_ms(m / pairs.max(1) as u32)
            );
        }
    }
    println!();

    if !args.no_breakdown {
        println!(
            "where the time goes ({pairs} command-host pairs, {} at a time, fresh connections each):",
            args.parallel
        );
        let e = siteflow_run(&net, &args, &base, Order::Independent, "noop").await?;
        println!(
            "  {:<62}{:>9}  ({} per instance, {} commits)",
            "engine alone: the same workflow with `noop` steps",
            fmt_d(e.wall),
            fmt_ms(e.wall / pairs.max(1) as u32),
            e.commits
        );
        for (what, payload, resident) in [
            (
                "transport alone: SshPool::exec of `true`",
                Payload::Bare,
                true,
            ),
            (
                "transport alone: ssh.exec's wrapper around `true`",
                Payload::StepWrapper,
                true,
            ),
            (
                "  same, a channel per command: `true`",
                Payload::Bare,
                false,
            ),
            (
                "  same, a channel per command: ssh.exec's wrapper",
                Payload::StepWrapper,
                false,
            ),
        ] {
            let (wall, busy, conns, forks) =
                transport_only(&net, args.commands, args.parallel, payload, resident).await?;
            println!(
                "  {what:<62}{:>9}  ({} per pair; machine cpu {:.2} s = {:.1} ms and {:.1} new processes per pair; {conns} connections)",
                fmt_d(wall),
                fmt_ms(wall / pairs.max(1) as u32),
                busy.as_secs_f64(),
                busy.as_secs_f64() * 1e3 / pairs.max(1) as f64,
                forks as f64 / pairs.max(1) as f64
            );
        }
        for (what, payload) in [
            (
                "a login shell per command, here, no SSH: `true`",
                Payload::Bare,
            ),
            (
                "a login shell per command, here, no SSH: ssh.exec's wrapper",
                Payload::StepWrapper,
            ),
        ] {
            let (wall, cpu, forks) = shells_only(pairs, args.parallel, payload).await?;
            println!(
                "  {what:<62}{:>9}  ({} per pair; their cpu {:.2} s = {:.1} ms and {:.1} new processes per pair)",
                fmt_d(wall),
                fmt_ms(wall / pairs.max(1) as u32),
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e3 / pairs.max(1) as f64,
                forks as f64 / pairs.max(1) as f64
            );
        }
        if let Some(r) = runs.iter().find(|r| r.order == Order::Independent) {
            println!(
                "  (siteflow independent, for comparison: machine cpu {:.1} ms and {:.1} new processes per pair; this process {:.2} ms cpu per pair)",
                r.cpu_machine.as_secs_f64() * 1e3 / pairs.max(1) as f64,
                r.forks as f64 / pairs.max(1) as f64,
                r.cpu_self.as_secs_f64() * 1e3 / pairs.max(1) as f64
            );
        }
        println!();
    }

    for peer in &args.peer {
        match peer {
            SshPeer::Ansible => {
                println!(
                    "peer: Ansible, {} tasks `ansible.builtin.command: true` on the same {} hosts (gather_facts: false; default forks 5, linear strategy, ssh plugin with ControlPersist)",
                    args.commands, args.hosts
                );
                let a =
                    ansible::run_peer(&net, args.commands, Duration::from_secs(args.peer_timeout))
                        .await?;
                let full = a
                    .ok_per_host
                    .iter()
                    .filter(|(_, ok)| *ok as usize == args.commands)
                    .count();
                println!(
                    "  {}: {} wall ({} per task-host); recap: ok={} on {full}/{} hosts, failed/unreachable on {}; ControlPersist masters stopped after it: {}",
                    a.version,
                    fmt_d(a.wall),
                    fmt_ms(a.wall / pairs.max(1) as u32),
                    args.commands,
                    a.ok_per_host.len(),
                    a.failed_hosts.len(),
                    a.masters_stopped
                );
                println!(
                    "  issue's figure for Ansible: {:.1} s ({:.2} s per task-host)",
                    ansible::ISSUE_SECONDS,
                    ansible::ISSUE_SECONDS / 500.0
                );
                for &o in &args.orders {
                    if let Some(ours) = med(o) {
                        let ratio = a.wall.as_secs_f64() / ours.as_secs_f64();
                        println!(
                            "  siteflow ({}, median) {} vs ansible {} → ansible / siteflow = {ratio:.0}×   target ≥ {TARGET_RATIO:.0}×: {}",
                            o.name(),
                            fmt_d(ours),
                            fmt_d(a.wall),
                            verdict(ratio >= TARGET_RATIO)
                        );
                    }
                }
                println!();
            }
        }
    }
    drop(net);
    println!(
        "total benchmark time: {}; load average now {}",
        fmt_d(began.elapsed()),
        load_average()
    );
    Ok(())
}

/// Now as `YYYY-MM-DD HH:MM:SS` (UTC), from `date`.
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
