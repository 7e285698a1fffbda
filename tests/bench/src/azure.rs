//! `siteflow-bench azure`: many sites' networks and VMs provisioned concurrently in one
//! process against the Azure emulator under an ARM write limit (issue #4). Every run shares
//! the process-wide ARM client and its per-subscription limiter; the figure of merit is the
//! wall time against the floor the write limit imposes.

use crate::{fmt_d, load_average, verdict};
use anyhow::{Context, Result, bail};
use siteflow_azure_emulator::{Emulator, EmulatorConfig, LogEntry, WriteLimit};
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::StateStore;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The target: wall time at most this many times the write-limit floor.
const TARGET_RATIO: f64 = 1.2;

/// The client secret of the emulator's default principal.
const SECRET: &str = "fake-secret";
/// Its client id.
const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
/// An admin key for every VM (so no admin key pair is generated per VM).
const ADMIN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d bench";

#[derive(clap::Args)]
pub struct AzureArgs {
    /// Sites, each its own run (all concurrent, in this process).
    #[arg(long, default_value_t = 100)]
    sites: usize,
    /// VMs per site (one `azure.vm` step each, in parallel after the network).
    #[arg(long, default_value_t = 2)]
    vms: usize,
    /// ARM writes allowed per window and subscription (the emulator's write limit).
    #[arg(long, default_value_t = 50)]
    writes: u32,
    /// The write-limit window, in real time (`10s`, `500ms`, `1m`; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = siteflow_step::parse_duration)]
    window: Duration,
    /// The emulator's time scale: multiplies its operation durations (the write window is
    /// compensated so it stays `--window` of real time).
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// The emulator's base LRO duration in emulated seconds (network ×0.5, compute ×1.5).
    #[arg(long, default_value_t = 20.0)]
    lro_secs: f64,
    /// Leave out the per-site `azure.resource-group` step (its PUT is a write).
    #[arg(long)]
    no_resource_group: bool,
    /// `--parallel` of each run.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Bound on the whole provisioning, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Where the temporary state database and keys go (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
}

/// The site workflow: resource group, network, then the VMs in parallel.
fn workflow(args: &AzureArgs, azure: &str, secret_file: &std::path::Path) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "name: bench-azure-site");
    let _ = writeln!(
        y,
        "secrets:\n  sp: {{ file: \"{}\" }}",
        secret_file.display()
    );
    // 429s that outlast the client's inline retries come back to the engine as `Throttled`
    // with the Retry-After, which overrides the computed delay.
    let _ = writeln!(
        y,
        "defaults:\n  retry: {{ max_attempts: 30, initial_interval: 1s, backoff_coefficient: 2, maximum_interval: 20s }}"
    );
    y.push_str("steps:\n");
    let rg = if args.no_resource_group {
        // The group is created once, before the sites run (not counted).
        "bench-rg-shared".to_string()
    } else {
        let _ = writeln!(
            y,
            "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {azure}, name: \"${{{{ site.name }}}}-rg\", location: westeurope }}"
        );
        "${{ steps.rg.outputs.name }}".to_string()
    };
    // With a shared group, names must differ per site.
    let prefix = if args.no_resource_group {
        "${{ site.name }}-"
    } else {
        ""
    };
    let _ = writeln!(
        y,
        "  - id: net\n    uses: azure.network\n    with: {{ azure: {azure}, resource_group: \"{rg}\", location: westeurope, name: \"{prefix}edge\", admin_cidr: 203.0.113.0/24 }}"
    );
    for i in 0..args.vms {
        let _ = writeln!(
            y,
            "  - id: vm-{i}\n    uses: azure.vm\n    with: {{ azure: {azure}, resource_group: \"{rg}\", location: westeurope, name: \"{prefix}vm-{i}\", size: Standard_B2s, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"{ADMIN_KEY}\" }}"
        );
    }
    y
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Seconds since midnight (UTC) of an RFC 3339 timestamp `…THH:MM:SS[.frac]Z`.
fn day_secs(ts: &str) -> Option<f64> {
    let t = ts.split_once('T')?.1;
    let t = t.trim_end_matches('Z');
    let t = t.split(['+', '-']).next()?;
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn is_write(e: &LogEntry) -> bool {
    e.service == "arm" && matches!(e.method.as_str(), "PUT" | "POST" | "DELETE" | "PATCH")
}

/// The emulator's fixed windows reconstructed from the accepted writes' arrival times
/// (seconds, sorted): a window opens at the first write after the previous one expired.
fn windows(times: &[f64], window: f64) -> Vec<(f64, usize)> {
    let mut out: Vec<(f64, usize)> = Vec::new();
    for &t in times {
        match out.last_mut() {
            Some((start, n)) if t - *start < window => *n += 1,
            _ => out.push((t, 1)),
        }
    }
    out
}

pub async fn azure(args: AzureArgs) -> Result<()> {
    let began = Instant::now();
    if args.sites == 0 {
        bail!("--sites must be at least 1");
    }
    let scale = args.time_scale;
    if !(scale.is_finite() && scale > 0.0) {
        bail!("--time-scale must be positive");
    }
    let window = args.window;
    let base = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("siteflow-bench-azure-")
        .tempdir_in(&base)
        .with_context(|| format!("create a temp dir in {}", base.display()))?;

    // The emulator: operation durations scaled; the read window kept at ARM's real hour and
    // the write window at `--window` of real time (the emulator scales rate windows too).
    let config = EmulatorConfig {
        lro_secs: args.lro_secs,
        rate_window_secs: 3600.0 / scale,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::builder()
        .time_scale(scale)
        .config(config)
        .start()
        .await?;
    emu.faults().set_write_limit(Some(WriteLimit {
        writes: args.writes,
        window_secs: window.as_secs_f64() / scale,
    }));
    let secret_file = dir.path().join("sp-secret");
    std::fs::write(&secret_file, SECRET)?;
    let azure = format!(
        "{{ subscription: \"{sub}\", cloud: {{ name: custom, arm_url: \"{b}\", authority_host: \"{b}\", graph_url: \"{b}\", ca_pem_file: \"{ca}\" }}, credential: {{ kind: client_secret, tenant_id: \"{t}\", client_id: {CLIENT_ID}, client_secret: \"${{{{ secrets.sp }}}}\" }} }}",
        sub = emu.subscription_id(),
        b = emu.base_url(),
        ca = emu.ca_pem_path().display(),
        t = emu.tenant_id(),
    );
    let yaml = workflow(&args, &azure, &secret_file);

    let registry = Arc::new(
        Registry::new()
            .with(siteflow_steps_core::steps())
            .with(siteflow_steps_azure::steps()),
    );
    let store = StateStore::open(&dir.path().join("state.db"))?;
    let runner = Arc::new(Runner::new(
        registry.clone(),
        store.clone(),
        RunOptions {
            parallel: args.parallel,
            working_dir: dir.path().to_path_buf(),
            ..RunOptions::default()
        },
        Arc::new(NoObserver),
    ));

    let vm_secs = args.lro_secs * 1.5;
    let net_secs = args.lro_secs * 0.5;
    println!("siteflow-bench azure");
    println!(
        "  machine: {} CPU(s), load average {}; tokio multi-thread runtime; release build: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        !cfg!(debug_assertions)
    );
    println!(
        "  {} sites × ({}azure.network [NSG + VNet], {} × azure.vm [NIC + VM] in parallel), each its own run; {} runs concurrently in this process",
        args.sites,
        if args.no_resource_group {
            ""
        } else {
            "azure.resource-group, "
        },
        args.vms,
        args.sites
    );
    println!(
        "  state: one shared SQLite state DB (WAL, synchronous=FULL) in {}; one Runner, --parallel {} per run",
        base.display(),
        args.parallel
    );
    println!(
        "  emulator (in process, same runtime): write limit {} writes / {} real per subscription (429 + Retry-After beyond it); \
         time scale {scale} on operations: network LRO {net_secs:.0} s → {}, VM LRO {vm_secs:.0} s → {}; the limit window is not scaled",
        args.writes,
        fmt_d(window),
        fmt_d(Duration::from_secs_f64(net_secs * scale)),
        fmt_d(Duration::from_secs_f64(vm_secs * scale)),
    );
    println!();

    if args.no_resource_group {
        // One shared group, created before the clock starts and outside the write count.
        let mut y = String::new();
        let _ = writeln!(y, "name: bench-azure-rg");
        let _ = writeln!(
            y,
            "secrets:\n  sp: {{ file: \"{}\" }}",
            secret_file.display()
        );
        let _ = writeln!(
            y,
            "steps:\n  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {azure}, name: bench-rg-shared, location: westeurope }}"
        );
        let src = sources("rg.yaml", y, None);
        let plan = compile(&src, &registry).map_err(|d| anyhow::anyhow!("{d}"))?;
        let out = runner.start(plan, src).await?;
        if out.status != RunStatus::Succeeded {
            bail!("the shared resource group run ended {:?}", out.status);
        }
    }

    // Compile every site's run first (not timed), then start them all at once.
    let mut plans = Vec::with_capacity(args.sites);
    for i in 0..args.sites {
        let src = sources(
            "site.yaml",
            yaml.clone(),
            Some(format!("name: site-{i:03}\n")),
        );
        let plan = compile(&src, &registry).map_err(|d| anyhow::anyhow!("{d}"))?;
        plans.push((plan, src));
    }
    let log = emu.request_log();
    log.clear();
    let t0 = Instant::now();
    let collisions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (plan, src) in plans {
        let runner = runner.clone();
        let registry = registry.clone();
        let collisions = collisions.clone();
        set.spawn(async move {
            let t = Instant::now();
            let mut plan = Some(plan);
            loop {
                let p = match plan.take() {
                    Some(p) => p,
                    None => match compile(&src, &registry) {
                        Ok(p) => p,
                        Err(d) => break (Err(anyhow::anyhow!("{d}")), t.elapsed()),
                    },
                };
                match runner.start(p, src.clone()).await {
                    // `new_run_id` (engine/src/runner.rs) keeps only the first 16 hex digits
                    // of a UUIDv7: runs started in the same millisecond get the same id, and
                    // all but one fail to insert their row before anything ran. Start again.
                    Err(e) if format!("{e:?}").contains("UNIQUE constraint failed: runs.id") => {
                        collisions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    r => break (r.map_err(anyhow::Error::from), t.elapsed()),
                }
            }
        });
    }
    let mut outcomes = Vec::new();
    let deadline = Duration::from_secs(args.timeout);
    loop {
        let left = deadline.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, set.join_next()).await {
            Ok(Some(joined)) => outcomes.push(joined?),
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                bail!(
                    "the runs did not finish within {} s ({} of {} done)",
                    args.timeout,
                    outcomes.len(),
                    args.sites
                );
            }
        }
    }
    let wall = t0.elapsed();

    // The runs.
    let mut failed = 0;
    let mut errors = 0;
    let mut run_ids = vec![];
    let mut per_run: Vec<Duration> = vec![];
    for (r, d) in outcomes {
        per_run.push(d);
        match r {
            Ok(o) => {
                if o.status != RunStatus::Succeeded {
                    failed += 1;
                }
                run_ids.push(o.run_id);
            }
            Err(e) => {
                errors += 1;
                eprintln!("run error: {e:?}");
            }
        }
    }
    per_run.sort();

    // The attempts table.
    let mut attempts = 0usize;
    let mut retried = 0usize;
    let mut failed_by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_steps: Vec<String> = vec![];
    for id in &run_ids {
        for a in store.attempts(id).await? {
            attempts += 1;
            if a.attempt > 1 {
                retried += 1;
            }
            if a.outcome.as_deref() == Some("failed") {
                *failed_by_code
                    .entry(format!(
                        "{} ({})",
                        a.error_code.unwrap_or_default(),
                        a.error_class.unwrap_or_default()
                    ))
                    .or_default() += 1;
            }
        }
        for s in store.steps(id).await? {
            if s.status != "Succeeded" {
                failed_steps.push(format!(
                    "{id}/{}: {} {:?}",
                    s.step_id,
                    s.status,
                    s.error.map(|e| format!("{}: {}", e.code, e.message))
                ));
            }
        }
    }

    // The emulator's request log.
    let entries = log.entries();
    let arm: Vec<&LogEntry> = entries.iter().filter(|e| e.service == "arm").collect();
    let writes: Vec<&LogEntry> = arm.iter().copied().filter(|e| is_write(e)).collect();
    let accepted: Vec<&LogEntry> = writes.iter().copied().filter(|e| e.status != 429).collect();
    let write_429 = writes.len() - accepted.len();
    let reads = arm.len() - writes.len();
    let read_429 = arm
        .iter()
        .filter(|e| !is_write(e) && e.status == 429)
        .count();
    let polls = arm
        .iter()
        .filter(|e| {
            !is_write(e)
                && (e.path.contains("/operations/") || e.path.contains("/operationResults/"))
        })
        .count();
    let tokens = entries.iter().filter(|e| e.service == "entra").count();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for e in &accepted {
        let segs: Vec<&str> = e.path.split('/').collect();
        let kind = if segs.len() <= 5 {
            "resourceGroups".to_string()
        } else {
            segs[segs.len() - 2].to_string()
        };
        *by_kind.entry(format!("{} {kind}", e.method)).or_default() += 1;
    }
    let errors_5xx = arm.iter().filter(|e| e.status >= 500).count();
    let other_4xx = arm
        .iter()
        .filter(|e| (400..500).contains(&e.status) && e.status != 429 && e.status != 404)
        .count();

    // The floor.
    let n = accepted.len();
    let l = args.writes.max(1) as usize;
    let w = window.as_secs_f64();
    let windows_needed = n.div_ceil(l);
    let floor = Duration::from_secs_f64(windows_needed as f64 * w);
    let strict = Duration::from_secs_f64(windows_needed.saturating_sub(1) as f64 * w);
    let ratio = wall.as_secs_f64() / floor.as_secs_f64().max(1e-9);

    // Where the time went: the windows the emulator actually opened.
    let mut times: Vec<f64> = accepted
        .iter()
        .filter_map(|e| day_secs(&e.timestamp))
        .collect();
    if let Some(&first) = times.first() {
        for t in times.iter_mut() {
            if *t < first - 43_200.0 {
                *t += 86_400.0; // past midnight
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let wins = windows(&times, w);
    let start_secs = {
        // t0 on the same clock as the log timestamps.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            % 86_400.0;
        now - began.elapsed().as_secs_f64() + (t0 - began).as_secs_f64()
    };

    println!(
        "runs: {} started, {} succeeded, {} failed, {} errors   target 0 failed: {}",
        args.sites,
        args.sites - failed - errors,
        failed,
        errors,
        verdict(failed + errors == 0)
    );
    println!(
        "run-id collisions at start (retried; 0 since run ids carry 32 random bits): {}",
        collisions.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "writes the emulator accepted (PUT/POST/DELETE/PATCH on ARM, 429s excluded): {n}  ({})",
        by_kind
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "floor: ceil({n} / {l}) × {} = {windows_needed} windows × {} = {}   (strict bound (windows − 1) × window + ε = {})",
        fmt_d(window),
        fmt_d(window),
        fmt_d(floor),
        fmt_d(strict)
    );
    println!(
        "wall: {}   wall / floor = {ratio:.2}×   target ≤ {TARGET_RATIO}×: {}{}",
        fmt_d(wall),
        verdict(ratio <= TARGET_RATIO && failed + errors == 0),
        if strict.is_zero() {
            String::new()
        } else {
            format!(
                "   (wall / strict bound = {:.2}×)",
                wall.as_secs_f64() / strict.as_secs_f64()
            )
        }
    );
    println!(
        "per run: min {}  median {}  max {}",
        fmt_d(per_run.first().copied().unwrap_or_default()),
        fmt_d(per_run[per_run.len() / 2]),
        fmt_d(per_run.last().copied().unwrap_or_default())
    );
    println!(
        "429s: {} on writes, {read_429} on reads (emulator log); the process-wide limiter recorded {}",
        write_429,
        siteflow_azure::limiter_for(&format!("{}|{}", emu.base_url(), emu.subscription_id()))
            .throttled_count()
    );
    println!(
        "other requests: {reads} ARM reads ({polls} LRO polls), {tokens} token requests, {errors_5xx} 5xx, {other_4xx} other 4xx (404s not counted)"
    );
    println!(
        "attempts table: {attempts} attempts, {retried} of them retries (attempt > 1); failed attempts: {}",
        if failed_by_code.is_empty() {
            "none".to_string()
        } else {
            failed_by_code
                .iter()
                .map(|(k, v)| format!("{v} × {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for s in failed_steps.iter().take(10) {
        println!("  not succeeded: {s}");
    }
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        println!(
            "where the time goes: first accepted write at +{:.2} s, last at +{:.2} s, last run done at +{:.2} s",
            first - start_secs,
            last - start_secs,
            wall.as_secs_f64()
        );
        let counts: Vec<String> = wins
            .iter()
            .map(|(s, c)| format!("+{:.1}s:{c}", s - start_secs))
            .collect();
        println!(
            "  the emulator's write windows (opened at: accepted writes): {} windows, {} (a full window holds {l})",
            wins.len(),
            counts.join(" ")
        );
        let gaps: Vec<String> = wins
            .windows(2)
            .map(|p| format!("{:.2}", p[1].0 - p[0].0 - w))
            .collect();
        println!(
            "  idle time between a window's end and the next window's first write (s): {}",
            gaps.join(" ")
        );
    }
    let rss = peak_rss_kib().map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("peak RSS (VmHWM, whole process incl. the in-process emulator): {rss}");
    println!(
        "total benchmark time: {}; load average now {}",
        fmt_d(began.elapsed()),
        load_average()
    );
    emu.shutdown().await;
    Ok(())
}

fn sources(path: &str, text: String, site: Option<String>) -> Sources {
    Sources {
        workflow: SourceText {
            path: path.into(),
            text,
        },
        site: site.map(|text| SourceText {
            path: "site.yaml".into(),
            text,
        }),
        groups: vec![],
        sets: vec![],
    }
}
