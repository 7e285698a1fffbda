//! Each command of the command line, over the engine: what it reads, runs and prints.

use crate::args::{
    Cli, Command, GraphFormat, HostsCommand, Output, RunsCommand, SandboxCommand, Target,
};
use crate::exit::{self, Failure};
use crate::{progress, sandbox};
use clap::CommandFactory;
use serde_json::{Value, json};
use siteflow_engine::plan::{self, Plan, SourceText, Sources};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{Outcome, RunError, RunObserver, RunOptions, Runner};
use siteflow_engine::state::{StateStore, Unlock};
use siteflow_engine::{plan_view, report};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// When the workflow talks to Azure (it declares an `azure` input) and no subscription is
/// configured (`AZURE_SUBSCRIPTION_ID`, or `azure.subscription` from the site or `--set`),
/// starts the local sandbox and returns the `--set` values that point the workflow at it.
async fn sandbox_sets(plan: &Plan) -> Result<Option<Vec<String>>, Failure> {
    let declared: Vec<String> = plan
        .workflow
        .inputs
        .iter()
        .map(|i| i.name.clone())
        .collect();
    if !declared.iter().any(|n| n == "azure") {
        return Ok(None);
    }
    let configured = std::env::var("AZURE_SUBSCRIPTION_ID").is_ok_and(|s| !s.is_empty())
        || plan
            .inputs
            .get("azure")
            .and_then(|a| a.get("subscription"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
    if configured {
        return Ok(None);
    }
    let profile = match az_profile_path() {
        Some(p) => tokio::fs::read_to_string(p).await.ok(),
        None => None,
    };
    eprintln!("{}", sandbox_notice(profile.as_deref()));
    let info = sandbox::up(&sandbox::dir()).await?;
    eprint!("{}", sandbox::describe(&info));
    Ok(Some(sandbox::sets(&info, &declared)))
}

/// The Azure CLI's profile (`$AZURE_CONFIG_DIR`, else `~/.azure`).
fn az_profile_path() -> Option<PathBuf> {
    let dir = std::env::var_os("AZURE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".azure")))?;
    Some(dir.join("azureProfile.json"))
}

/// What a run that falls back to the sandbox says first: that it does, why, and, when the
/// Azure CLI is signed in (`profile`: its `azureProfile.json`), how to use that subscription
/// instead.
fn sandbox_notice(profile: Option<&str>) -> String {
    let mut notice = "no Azure subscription configured (AZURE_SUBSCRIPTION_ID, or the workflow's `azure.subscription` input): running in the local sandbox".to_string();
    let default = profile
        .and_then(|text| serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')).ok())
        .and_then(|doc| {
            doc["subscriptions"].as_array()?.iter().find_map(|s| {
                (s["isDefault"] == true).then(|| {
                    (
                        s["id"].as_str().unwrap_or_default().to_string(),
                        s["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
            })
        })
        .filter(|(id, _)| !id.is_empty());
    if let Some((id, name)) = default {
        notice.push_str(&format!(
            "\n  the Azure CLI is signed in to {name:?} ({id}): to provision there, run with AZURE_SUBSCRIPTION_ID={id}"
        ));
    }
    notice
}

/// A run id as the user gave it: the id, a unique prefix of one, or `last` (the newest run).
async fn resolve_run(store: &StateStore, arg: &str) -> Result<String, Failure> {
    if arg == "last" {
        return store
            .runs(1)
            .await?
            .into_iter()
            .next()
            .map(|r| r.id)
            .ok_or_else(|| Failure::new(exit::INVALID_INPUT, "error: there are no runs yet"));
    }
    let ids = store.run_ids_with_prefix(arg, 6).await?;
    if ids.iter().any(|i| i == arg) {
        return Ok(arg.to_string());
    }
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::new(
            exit::INVALID_INPUT,
            format!("error: no run `{arg}` (see `siteflow runs list`)"),
        )),
        many => Err(Failure::new(
            exit::INVALID_INPUT,
            format!(
                "error: `{arg}` matches several runs ({}{}); give more of the id",
                many[..many.len().min(5)].join(", "),
                if many.len() > 5 { ", …" } else { "" }
            ),
        )),
    }
}

/// `HOST`, `HOST:PORT` or `[IPV6]:PORT` as the host-key store names it.
fn host_store_key(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((h, port)) = rest.split_once("]:")
    {
        return siteflow_ssh::store_key(h, port.parse().unwrap_or(22));
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => {
            siteflow_ssh::store_key(h, port.parse().unwrap_or(22))
        }
        _ => siteflow_ssh::store_key(host, 22),
    }
}

async fn hosts(cli: &Cli, command: &HostsCommand) -> Result<u8, Failure> {
    const NS: &str = siteflow_ssh::RunStateHostKeyStore::NAMESPACE;
    let path = state_path(cli);
    // Reading never creates a database.
    if !path.exists() {
        match command {
            HostsCommand::List {
                output: Output::Json,
            } => println!("[]"),
            HostsCommand::List { .. } => {
                println!("no host keys learned ({} does not exist)", path.display())
            }
            HostsCommand::Forget { host } => {
                println!("no key is known for {}", host_store_key(host));
                return Ok(exit::FAILED);
            }
        }
        return Ok(exit::OK);
    }
    // Listing only reads (never migrates); forgetting writes.
    let store = match command {
        HostsCommand::List { .. } => off_runtime(move || StateStore::open_read_only(&path)).await?,
        HostsCommand::Forget { .. } => off_runtime(move || StateStore::open(&path)).await?,
    };
    match command {
        HostsCommand::List { output } => {
            let rows = store.shared_values(NS).await?;
            let docs: Vec<Value> = rows
                .iter()
                .map(|(host, keys, at, run)| {
                    let keys: Vec<Value> = keys
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|k| {
                            json!({
                                "fingerprint": siteflow_ssh::line_fingerprint(k),
                                "type": k.split_whitespace().next(),
                            })
                        })
                        .collect();
                    json!({"host": host, "keys": keys, "learned_at": report::timestamp(*at), "run": run})
                })
                .collect();
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&docs).unwrap_or_default()
                ),
                Output::Text => {
                    if docs.is_empty() {
                        println!("no host keys learned");
                    }
                    for d in &docs {
                        for k in d["keys"].as_array().into_iter().flatten() {
                            println!(
                                "{:<24} {:<12} {}  (learned {} by run {})",
                                d["host"].as_str().unwrap_or(""),
                                k["type"].as_str().unwrap_or(""),
                                k["fingerprint"].as_str().unwrap_or("?"),
                                d["learned_at"].as_str().unwrap_or(""),
                                d["run"].as_str().unwrap_or("-")
                            );
                        }
                    }
                }
            }
            Ok(exit::OK)
        }
        HostsCommand::Forget { host } => {
            let key = host_store_key(host);
            if store.delete_shared_value(NS, &key).await? {
                println!("forgot the key(s) of {key}: the next connection learns its key again");
                Ok(exit::OK)
            } else {
                println!("no key is known for {key}");
                Ok(exit::FAILED)
            }
        }
    }
}

/// The step kinds this binary knows.
fn registry() -> Registry {
    // One SSH pool for every kind that reaches hosts over SSH, so a run holds one connection
    // per host. ARM clients are shared through `siteflow_steps_azure`'s process-wide cache,
    // keyed by each step's connection input (see ARCHITECTURE.md, "Shared transports").
    let ssh_pool = siteflow_ssh::steps::StepPool::new();
    Registry::new()
        .with(siteflow_steps_core::steps())
        .with(siteflow_ssh::steps(ssh_pool.clone()))
        .with(siteflow_steps_k3s::steps(ssh_pool.clone()))
        .with(siteflow_steps_azure::steps())
        .with(siteflow_steps_arc::steps(ssh_pool.clone()))
        .with(siteflow_steps_flux::steps(ssh_pool))
        .with(siteflow_steps_kube::steps())
}

/// The state database for a command that only reads: opened read-only, never created or
/// migrated (an older schema is a clear error naming the commands that upgrade it).
async fn read_state(cli: &Cli) -> Result<StateStore, Failure> {
    let path = existing_state_path(cli)?;
    Ok(off_runtime(move || StateStore::open_read_only(&path)).await?)
}

/// The state database for a command that changes an existing run: it is never created by
/// such a command.
async fn existing_state(cli: &Cli) -> Result<StateStore, Failure> {
    let path = existing_state_path(cli)?;
    Ok(off_runtime(move || StateStore::open(&path)).await?)
}

/// Opening the store reads, may migrate and may wait for a busy database: file work that
/// runs on a blocking thread, not on the runtime.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn existing_state_path(cli: &Cli) -> Result<PathBuf, Failure> {
    let path = state_path(cli);
    if !path.exists() {
        return Err(Failure::new(
            exit::INVALID_INPUT,
            format!(
                "error: no state database at {} (no runs yet here; --state or SITEFLOW_STATE names another)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

fn state_path(cli: &Cli) -> PathBuf {
    cli.state
        .clone()
        .unwrap_or_else(|| PathBuf::from(".siteflow/state.db"))
}

fn read_source(path: &Path) -> Result<SourceText, Failure> {
    std::fs::read_to_string(path)
        .map(|text| SourceText {
            path: path.display().to_string(),
            text,
        })
        .map_err(|e| {
            Failure::new(
                exit::INVALID_INPUT,
                format!("error: cannot read {}: {e}", path.display()),
            )
        })
}

/// Finds a workflow by path or by name in the workflows directory.
fn find_workflow(cli: &Cli, name: &str, base: Option<&Path>) -> Result<PathBuf, Failure> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    if let Some(b) = base {
        let rel = b.join(name);
        if rel.is_file() {
            return Ok(rel);
        }
    }
    let dir = cli
        .workflows
        .clone()
        .unwrap_or_else(|| PathBuf::from("workflows"));
    for ext in ["yaml", "yml"] {
        let p = dir.join(format!("{name}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    let known: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    Err(Failure::new(
        2,
        format!(
            "error: no workflow file `{name}` and no workflow named `{name}` in {}{}",
            dir.display(),
            if known.is_empty() {
                String::new()
            } else {
                format!(" (there: {})", known.join(", "))
            }
        ),
    ))
}

/// A site file and its group files (lowest first), read.
fn read_site(path: &Path) -> Result<(SourceText, Vec<SourceText>), Failure> {
    let site = read_source(path)?;
    let groups = plan::site_groups(&site, &mut |p| std::fs::read_to_string(p))?;
    Ok((site, groups))
}

/// The workflow a site's layers name, found relative to the file that names it.
fn site_named_workflow(
    cli: &Cli,
    site: &SourceText,
    groups: &[SourceText],
) -> Result<Option<PathBuf>, Failure> {
    let Some(w) = plan::site_workflow(site, groups)? else {
        return Ok(None);
    };
    let named_in = w.loc.file.as_ref().map(|f| PathBuf::from(&f.name));
    let base = named_in.as_deref().and_then(Path::parent);
    find_workflow(cli, &w.value, base).map(Some)
}

fn sources(cli: &Cli, t: &Target) -> Result<Sources, Failure> {
    let (site, groups) = match t.site.as_deref() {
        Some(p) => {
            let (s, g) = read_site(p)?;
            (Some(s), g)
        }
        None => (None, vec![]),
    };
    let path = match (&t.workflow, &site) {
        (Some(w), _) => find_workflow(cli, w, t.site.as_deref().and_then(Path::parent))?,
        (None, Some(s)) => match site_named_workflow(cli, s, &groups)? {
            Some(p) => p,
            None => {
                return Err(Failure::new(
                    exit::INVALID_INPUT,
                    "error: give a workflow, or name one in the site file's `workflow:`",
                ));
            }
        },
        (None, None) => {
            return Err(Failure::new(
                exit::INVALID_INPUT,
                "error: give a workflow (a file or a name) or --site FILE",
            ));
        }
    };
    Ok(Sources {
        workflow: read_source(&path)?,
        site,
        groups,
        sets: t.sets.clone(),
    })
}

fn observer(output: Output) -> Arc<dyn RunObserver> {
    if output == Output::Text && std::io::stderr().is_terminal() {
        Arc::new(progress::Spinners::new())
    } else {
        Arc::new(progress::PlainLines {
            show_output: output == Output::Text,
        })
    }
}

async fn execute(
    store: StateStore,
    output: Output,
    parallel: usize,
    grace: u64,
    f: impl AsyncFnOnce(&Runner) -> Result<Outcome, RunError>,
) -> Result<u8, Failure> {
    let mut opts = RunOptions {
        parallel,
        grace: Duration::from_secs(grace),
        // While a sandbox runs, its own credentials (the git server's token) stand in for the
        // environment variables secrets name, when those are unset.
        env_files: sandbox::running(&sandbox::dir())
            .map(|i| i.env_files)
            .unwrap_or_default(),
        ..RunOptions::default()
    };
    // How often the lease is renewed and `siteflow cancel` is noticed.
    if let Some(ms) = std::env::var("SITEFLOW_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.heartbeat = Duration::from_millis(ms);
    }
    let runner = Runner::new(
        Arc::new(registry()),
        store.clone(),
        opts.clone(),
        observer(output),
    );
    let control = runner.control();
    let mut signals = StopSignals::new()
        .map_err(|e| Failure::new(exit::FAILED, format!("error: install signal handlers: {e}")))?;
    tokio::spawn(async move {
        use std::io::Write as _;
        // Messages never panic on a closed terminal (SIGHUP).
        let say = |m: &str| {
            let _ = writeln!(std::io::stderr(), "{m}");
        };
        let name = signals.next().await;
        say(&format!(
            "\nstopping ({name}): no new steps start; running steps get {grace}s to finish. Press Ctrl-C again to abort now."
        ));
        control.stop(Duration::from_secs(grace));
        let name = signals.next().await;
        // Abort: running steps are cancelled now (their process groups killed) and their
        // state committed; the run then ends as Cancelled (exit 130).
        say(&format!(
            "aborting ({name}): running steps are cancelled now"
        ));
        control.abort.cancel();
        // Should that hang, a third signal (or a bounded wait) ends the process anyway.
        tokio::select! {
            _ = signals.next() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        say("aborted; `siteflow resume` continues the run");
        siteflow_steps_core::kill_running_scripts();
        std::process::exit(exit::CANCELLED.into());
    });
    let outcome = f(&runner).await?;
    report(&store, &outcome, output).await?;
    // The WAL goes back into the database file now that the answer is out, so the next
    // command (a resume) does not pay for this run's checkpoint.
    if let Err(e) = store.checkpoint().await {
        tracing::debug!(error = %e, "final checkpoint");
    }
    Ok(exit::for_run(outcome.status))
}

/// The signals that stop a run: Ctrl-C (SIGINT), SIGTERM and SIGHUP, all alike.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "Ctrl-C",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

async fn report(store: &StateStore, outcome: &Outcome, output: Output) -> Result<(), Failure> {
    let doc = report::run_document(store, &outcome.run_id).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        Output::Text => print!("{}", report::run_report(store, &doc, outcome.status).await?),
    }
    Ok(())
}

/// Runs the command; the exit code, or the failure to report.
pub(crate) async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    let reg = registry();
    match &cli.command {
        Command::Run {
            target,
            parallel,
            grace,
            output,
        } => {
            let mut src = sources(&cli, target)?;
            let mut plan = plan::compile(&src, &reg)?;
            // A secret that cannot be read stops the run before anything is stored.
            let cwd = std::env::current_dir().unwrap_or_default();
            siteflow_engine::runner::read_secrets(
                &plan,
                &cwd,
                &Default::default(),
                &siteflow_engine::redact::Redactor::default(),
            )?;
            if let Some(extra) = sandbox_sets(&plan).await? {
                src.sets.splice(0..0, extra);
                plan = plan::compile(&src, &reg)?;
            }
            let path = state_path(&cli);
            let store = off_runtime(move || StateStore::open(&path)).await?;
            execute(store, *output, *parallel, *grace, async |r| {
                r.start(plan, src).await
            })
            .await
        }
        Command::Resume {
            run,
            reload,
            parallel,
            grace,
            output,
        } => {
            let store = existing_state(&cli).await?;
            let run = resolve_run(&store, run).await?;
            execute(store, *output, *parallel, *grace, async |r| {
                r.resume(&run, *reload).await
            })
            .await
        }
        Command::Rerun {
            run,
            step,
            with_dependents,
            output,
        } => {
            let store = existing_state(&cli).await?;
            let run = resolve_run(&store, run).await?;
            execute(store, *output, 32, 30, async |r| {
                r.rerun(&run, step, *with_dependents).await
            })
            .await
        }
        Command::Hosts { command } => hosts(&cli, command).await,
        Command::Sandbox { command } => match command {
            SandboxCommand::Up => {
                let info = sandbox::up(&sandbox::dir()).await?;
                print!("{}", sandbox::describe(&info));
                Ok(exit::OK)
            }
            SandboxCommand::Status => match sandbox::running(&sandbox::dir()) {
                Some(info) => {
                    print!("{}", sandbox::describe(&info));
                    Ok(exit::OK)
                }
                None => {
                    println!("no sandbox is running here (`siteflow sandbox up` starts one)");
                    Ok(exit::FAILED)
                }
            },
            SandboxCommand::Down => {
                if sandbox::down(&sandbox::dir()).await? {
                    println!("sandbox stopped; its hosts are gone");
                } else {
                    println!("no sandbox was running here");
                }
                Ok(exit::OK)
            }
            SandboxCommand::Serve { dir } => {
                sandbox::serve(dir).await?;
                Ok(exit::OK)
            }
        },
        Command::Plan { target, output } => {
            let src = sources(&cli, target)?;
            let p = plan::compile(&src, &reg)?;
            let doc = plan_view::plan_document(&p);
            match output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                }
                Output::Text => print!("{}", serde_saphyr::to_string(&doc).unwrap_or_default()),
            }
            Ok(exit::OK)
        }
        Command::Validate { files } => {
            let mut failed = false;
            for f in files {
                let text = read_source(f)?;
                // A file that names a workflow, itself or through its groups, is a site file.
                let is_site = plan::site_workflow(&text, &[]).ok().flatten().is_some()
                    || plan::site_groups(&text, &mut |_| Ok(String::new()))
                        .is_ok_and(|g| !g.is_empty());
                let src = if is_site {
                    let (site, groups) = read_site(f)?;
                    let Some(wf) = site_named_workflow(&cli, &site, &groups)? else {
                        return Err(Failure::new(
                            exit::INVALID_INPUT,
                            format!(
                                "error: {}: neither the site file nor its groups name a `workflow:`",
                                f.display()
                            ),
                        ));
                    };
                    Sources {
                        workflow: read_source(&wf)?,
                        site: Some(site),
                        groups,
                        sets: vec![],
                    }
                } else {
                    Sources {
                        workflow: text,
                        site: None,
                        groups: vec![],
                        sets: vec![],
                    }
                };
                match plan::compile_for_validate(&src, &reg) {
                    Ok(p) => {
                        for w in plan::unquoted_interpolations(&p) {
                            eprintln!("{w}");
                        }
                        let missing = p.missing_inputs();
                        let needs = if missing.is_empty() {
                            String::new()
                        } else {
                            format!("; a run needs inputs: {}", missing.join(", "))
                        };
                        println!("ok: {} ({} steps{needs})", f.display(), p.steps.len())
                    }
                    Err(d) => {
                        failed = true;
                        eprintln!("{d}");
                    }
                }
            }
            Ok(if failed {
                exit::INVALID_INPUT
            } else {
                exit::OK
            })
        }
        Command::Graph { target, format } => {
            let src = sources(&cli, target)?;
            let p = plan::compile(&src, &reg)?;
            let format = match format {
                GraphFormat::Mermaid => plan_view::GraphFormat::Mermaid,
                GraphFormat::Dot => plan_view::GraphFormat::Dot,
            };
            print!("{}", plan_view::graph(&p, format));
            Ok(exit::OK)
        }
        Command::Runs {
            command: RunsCommand::List { output, .. },
        } if !state_path(&cli).exists() => {
            if *output == Output::Json {
                println!("[]");
            } else {
                println!(
                    "no runs yet ({} does not exist)",
                    state_path(&cli).display()
                );
            }
            Ok(exit::OK)
        }
        Command::Runs { command } => {
            let store = read_state(&cli).await?;
            match command {
                RunsCommand::List {
                    limit,
                    output: Output::Json,
                } => {
                    let runs: Vec<Value> = store
                        .runs(*limit)
                        .await?
                        .into_iter()
                        .map(|r| {
                            json!({"run_id": r.id, "workflow": r.workflow, "site": r.site,
                                   "status": r.status, "created_at": report::timestamp(r.created_at),
                                   "updated_at": report::timestamp(r.updated_at)})
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&runs).unwrap_or_default()
                    );
                }
                RunsCommand::List { limit, .. } => {
                    println!(
                        "{:<18}  {:<20}  {:<12}  {:<10}  CREATED",
                        "RUN", "WORKFLOW", "SITE", "STATUS"
                    );
                    for r in store.runs(*limit).await? {
                        println!(
                            "{:<18}  {:<20}  {:<12}  {:<10}  {}",
                            r.id,
                            r.workflow,
                            r.site.unwrap_or_default(),
                            r.status,
                            report::timestamp(r.created_at)
                        );
                    }
                }
                RunsCommand::Show { run, output } => {
                    let run = resolve_run(&store, run).await?;
                    let doc = report::run_document(&store, &run).await?;
                    match output {
                        Output::Json => {
                            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                        }
                        Output::Text => {
                            print!("{}", report::run_header(&doc));
                            print!("{}", report::step_table(&doc));
                        }
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Logs { run, step, output } => {
            let store = read_state(&cli).await?;
            let run = &resolve_run(&store, run).await?;
            store.run(run).await?;
            let entries = report::log_timeline(&store, run, step.as_deref()).await?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report::timeline_json(&entries))
                        .unwrap_or_default()
                ),
                Output::Text => print!("{}", report::timeline_text(&entries)),
            }
            Ok(exit::OK)
        }
        Command::Cancel { run } => {
            let store = existing_state(&cli).await?;
            let run = &resolve_run(&store, run).await?;
            match store.request_cancel(run).await? {
                Some(h) => println!("asked {h} to stop run {run}"),
                None => println!("run {run} has no runner; it stays as it is (resumable)"),
            }
            Ok(exit::OK)
        }
        Command::Unlock { run, force } => {
            let store = existing_state(&cli).await?;
            let run = &resolve_run(&store, run).await?;
            match store.unlock(run, *force).await? {
                Unlock::Broken(h) => println!("broke the lease of {h} on run {run}"),
                Unlock::NotLocked => println!("run {run} was not locked"),
                Unlock::Live {
                    holder,
                    expires_in,
                    same_host,
                } => {
                    let why = if same_host {
                        "its process is alive on this host".to_string()
                    } else {
                        format!(
                            "its lease is renewed (expires in {}s without a heartbeat)",
                            expires_in.as_secs()
                        )
                    };
                    return Err(Failure::new(
                        exit::HELD,
                        format!(
                            "error: run {run} is held by {holder}, and {why}; stop it (`siteflow cancel {run}`), or `siteflow unlock --force {run}` if you are sure it no longer runs steps"
                        ),
                    ));
                }
            }
            Ok(exit::OK)
        }
        Command::Steps { kind, output } => {
            let doc = |k: &dyn siteflow_step::DynStep, schemas: bool| {
                let mut d = json!({"kind": k.kind(), "description": k.description()});
                if schemas {
                    d["input_schema"] = k.input_schema();
                    d["output_schema"] = k.output_schema();
                }
                d
            };
            match kind {
                None => match output {
                    Output::Json => {
                        let all: Vec<Value> = reg.kinds().map(|k| doc(k.as_ref(), false)).collect();
                        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                    }
                    Output::Text => {
                        for k in reg.kinds() {
                            println!("{:<20} {}", k.kind(), k.description());
                        }
                    }
                },
                Some(name) => {
                    let k = reg.get(name).ok_or_else(|| {
                        Failure::new(
                            exit::INVALID_INPUT,
                            format!(
                                "error: unknown step kind `{name}`; known: {}",
                                reg.names().join(", ")
                            ),
                        )
                    })?;
                    match output {
                        Output::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&doc(k.as_ref(), true))
                                .unwrap_or_default()
                        ),
                        Output::Text => {
                            println!("{} — {}", k.kind(), k.description());
                            println!(
                                "input schema:\n{}",
                                serde_json::to_string_pretty(&k.input_schema()).unwrap_or_default()
                            );
                            println!(
                                "output schema:\n{}",
                                serde_json::to_string_pretty(&k.output_schema())
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&siteflow_engine::schema::schemas(&reg))
                    .unwrap_or_default()
            );
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "siteflow",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_notice_points_at_a_signed_in_azure_cli() {
        let plain = sandbox_notice(None);
        assert!(plain.contains("running in the local sandbox"), "{plain}");
        assert!(!plain.contains("Azure CLI"), "{plain}");
        // As `az login` writes it: a byte order mark, then JSON.
        let profile = "\u{feff}{\"installationId\": \"x\", \"subscriptions\": [
            {\"id\": \"11111111-1111-1111-1111-111111111111\", \"name\": \"Dev\", \"isDefault\": false},
            {\"id\": \"22222222-2222-2222-2222-222222222222\", \"name\": \"Edge Prod\", \"isDefault\": true}]}";
        let notice = sandbox_notice(Some(profile));
        assert!(
            notice.contains("signed in to \"Edge Prod\" (22222222-2222-2222-2222-222222222222)")
                && notice.contains("AZURE_SUBSCRIPTION_ID=22222222-2222-2222-2222-222222222222"),
            "{notice}"
        );
        assert_eq!(sandbox_notice(Some("not json")), plain);
        assert_eq!(sandbox_notice(Some("{\"subscriptions\": []}")), plain);
    }
}
