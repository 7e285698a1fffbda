//! The `siteflow` command line: thin over the engine; maps outcomes to documented exit codes.

mod gitserve;
mod progress;
mod sandbox;
mod telemetry;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use siteflow_engine::diag::Diagnostics;
use siteflow_engine::plan::{self, Plan, SourceText, Sources};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{Outcome, RunError, RunObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::{AttemptOutcome, LeaseError, StateStore, StepStatus, Unlock};
use siteflow_step::LogStream;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const EXIT_CODES: &str = "Exit codes:
  0    succeeded
  1    the run failed (resume it with `siteflow resume <run>`), or an operational error
  2    invalid input (workflow, site file, --set, arguments); nothing was run or stored
  3    the run is held by another runner (see `siteflow unlock`), or this runner lost it
       to another one (it stopped; the other continues the run)
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP) or cancelled (`siteflow cancel`); the run
       is resumable";

/// Durable, resumable workflows that provision edge Kubernetes sites.
#[derive(Parser)]
#[command(name = "siteflow", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// State database (default: .siteflow/state.db under the working directory).
    #[arg(long, global = true, env = "SITEFLOW_STATE")]
    state: Option<PathBuf>,
    /// Where workflow names are looked up (default: ./workflows).
    #[arg(long, global = true, env = "SITEFLOW_WORKFLOWS")]
    workflows: Option<PathBuf>,
    /// More log output on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(clap::Args)]
struct Target {
    /// A workflow file, or a name looked up in the workflows directory. May be omitted
    /// when the site file names its workflow.
    workflow: Option<String>,
    /// A site file layered over the workflow.
    #[arg(long)]
    site: Option<PathBuf>,
    /// Input values, `name=value` or `name.field=value` (highest precedence).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow.
    Run {
        #[command(flatten)]
        target: Target,
        /// Bound on concurrently running steps.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Seconds running steps get to finish after Ctrl-C before they are cancelled.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Continue a run: every step not Succeeded runs; succeeded steps are not run again.
    Resume {
        /// The run id.
        run: String,
        /// Read the workflow and site files again; steps whose inputs changed run again.
        #[arg(long)]
        reload: bool,
        /// Bound on concurrently running steps.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Seconds running steps get to finish after Ctrl-C.
        #[arg(long, default_value_t = 30)]
        grace: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run one step of a run again (and optionally everything after it).
    Rerun {
        /// The run id.
        run: String,
        /// The step id.
        #[arg(long)]
        step: String,
        /// Also run the steps that depend on it again.
        #[arg(long)]
        with_dependents: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the effective workflow (site and --set applied), inputs and execution layers.
    Plan {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check workflow and site files; report every problem.
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the step graph.
    Graph {
        #[command(flatten)]
        target: Target,
        /// mermaid or dot.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Runs in the state database.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Print a run's event log (step output included).
    Logs {
        /// The run id.
        run: String,
        /// Only this step.
        #[arg(long)]
        step: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ask the runner holding a run to stop (as Ctrl-C would).
    Cancel {
        /// The run id.
        run: String,
    },
    /// Break a dead runner's lease on a run (a live one's only with --force).
    Unlock {
        /// The run id.
        run: String,
        /// Break it even though its runner is alive (it may still be running steps).
        #[arg(long)]
        force: bool,
    },
    /// List step kinds, or show one kind's input schema.
    Steps {
        /// A kind.
        kind: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the JSON Schema of workflow and site files.
    Schema,
    /// SSH host keys learned by `accept-new`, shared by every run of the state database.
    Hosts {
        #[command(subcommand)]
        command: HostsCommand,
    },
    /// The local sandbox (Azure emulator + test hosts) used when no subscription is set.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum HostsCommand {
    /// Every host and the key(s) trusted for it.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Forget the keys of a host (`HOST`, `HOST:PORT` or `[IPV6]:PORT`), so the next
    /// connection learns its key again.
    Forget {
        /// The host.
        host: String,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Start it (if it is not running) and print where things are.
    Up,
    /// Print where things are.
    Status,
    /// Stop it and remove its hosts.
    Down,
    /// The daemon itself (started by `up`).
    #[command(hide = true)]
    Serve {
        /// Its directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The newest runs.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One run's steps.
    Show {
        /// The run id.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

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
    let info = sandbox::up(&sandbox::dir()).await?;
    eprint!("{}", sandbox::describe(&info));
    Ok(Some(sandbox::sets(&info, &declared)))
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
            .ok_or_else(|| Failure::new(2, "error: there are no runs yet"));
    }
    let ids = store.run_ids_with_prefix(arg, 6).await?;
    if ids.iter().any(|i| i == arg) {
        return Ok(arg.to_string());
    }
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::new(
            2,
            format!("error: no run `{arg}` (see `siteflow runs list`)"),
        )),
        many => Err(Failure::new(
            2,
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
                return Ok(1);
            }
        }
        return Ok(0);
    }
    // Listing only reads (never migrates); forgetting writes.
    let store = match command {
        HostsCommand::List { .. } => StateStore::open_read_only(&path)?,
        HostsCommand::Forget { .. } => StateStore::open(&path)?,
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
                    json!({"host": host, "keys": keys, "learned_at": ts(*at), "run": run})
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
            Ok(0)
        }
        HostsCommand::Forget { host } => {
            let key = host_store_key(host);
            if store.delete_shared_value(NS, &key).await? {
                println!("forgot the key(s) of {key}: the next connection learns its key again");
                Ok(0)
            } else {
                println!("no key is known for {key}");
                Ok(1)
            }
        }
    }
}

/// The step kinds this binary knows.
fn registry() -> Registry {
    // One SSH pool for the kinds that act on k3s hosts.
    let ssh_pool = siteflow_ssh::steps::StepPool::new();
    Registry::new()
        .with(siteflow_steps_core::steps())
        .with(siteflow_ssh::steps())
        .with(siteflow_steps_k3s::steps_with_pool(ssh_pool.clone()))
        .with(siteflow_steps_azure::steps())
        .with(siteflow_steps_arc::steps(ssh_pool.clone()))
        .with(siteflow_steps_flux::steps(ssh_pool))
        .with(siteflow_steps_kube::steps())
}

/// A failure with its exit code and report.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::new(2, d.to_string())
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(d) => d.into(),
            RunError::Secret { .. } | RunError::Usage(_) => Failure::new(2, format!("error: {e}")),
            RunError::Lease(l @ LeaseError::Held { .. }) => Failure::new(3, format!("error: {l}")),
            RunError::Store(l @ siteflow_engine::state::StoreError::LeaseLost) => {
                Failure::new(3, format!("error: {l}"))
            }
            other => Failure::new(1, format!("error: {}", chain(&other))),
        }
    }
}

impl From<siteflow_engine::state::StoreError> for Failure {
    fn from(e: siteflow_engine::state::StoreError) -> Self {
        let code = if matches!(e, siteflow_engine::state::StoreError::NoSuchRun(_)) {
            2
        } else {
            1
        };
        Failure::new(code, format!("error: {}", chain(&e)))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn main() -> ExitCode {
    // Output into a closed pipe (`siteflow schema | head -1`) ends the program quietly, as
    // for other command-line tools, instead of panicking.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    // Installed on a sandbox host as k3s (and kubectl, systemctl), this binary is the
    // k3s simulator.
    if std::env::args()
        .next()
        .is_some_and(|a| siteflow_testhosts::sim::is_sim_name(&a))
    {
        siteflow_testhosts::sim::main();
    }
    let cli = Cli::parse();
    // HTTP clients (OTLP export, ARM) use rustls without choosing a crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let telemetry = rt.block_on(async { telemetry::Telemetry::init(cli.verbose) });
    let result = rt.block_on(dispatch(cli));
    // Whatever ended the command, no script it started keeps running.
    siteflow_steps_core::kill_running_scripts();
    telemetry.shutdown();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("{}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}

/// The state database for a command that only reads: opened read-only, never created or
/// migrated (an older schema is a clear error naming the commands that upgrade it).
fn read_state(cli: &Cli) -> Result<StateStore, Failure> {
    Ok(StateStore::open_read_only(&existing_state_path(cli)?)?)
}

/// The state database for a command that changes an existing run: it is never created by
/// such a command.
fn existing_state(cli: &Cli) -> Result<StateStore, Failure> {
    Ok(StateStore::open(&existing_state_path(cli)?)?)
}

fn existing_state_path(cli: &Cli) -> Result<PathBuf, Failure> {
    let path = state_path(cli);
    if !path.exists() {
        return Err(Failure::new(
            2,
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
        .map_err(|e| Failure::new(2, format!("error: cannot read {}: {e}", path.display())))
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

fn sources(cli: &Cli, t: &Target) -> Result<Sources, Failure> {
    let site = t.site.as_deref().map(read_source).transpose()?;
    let wf_name = match (&t.workflow, &site) {
        (Some(w), _) => w.clone(),
        (None, Some(s)) => match plan::site_workflow(s)? {
            Some(w) => w.value,
            None => {
                return Err(Failure::new(
                    2,
                    "error: give a workflow, or name one in the site file's `workflow:`",
                ));
            }
        },
        (None, None) => {
            return Err(Failure::new(
                2,
                "error: give a workflow (a file or a name) or --site FILE",
            ));
        }
    };
    let base = t.site.as_deref().and_then(Path::parent);
    let path = find_workflow(cli, &wf_name, base)?;
    Ok(Sources {
        workflow: read_source(&path)?,
        site,
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
        .map_err(|e| Failure::new(1, format!("error: install signal handlers: {e}")))?;
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
        std::process::exit(130);
    });
    let outcome = f(&runner).await?;
    report(&store, &outcome, output).await?;
    // The WAL goes back into the database file now that the answer is out, so the next
    // command (a resume) does not pay for this run's checkpoint.
    if let Err(e) = store.checkpoint().await {
        tracing::debug!(error = %e, "final checkpoint");
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => 130,
        RunStatus::Failed | RunStatus::Queued | RunStatus::Running => 1,
    })
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

/// The run as one JSON document (secrets redacted).
async fn run_document(store: &StateStore, run_id: &str) -> Result<Value, Failure> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "id": s.key,
                "kind": s.kind,
                "status": s.status,
                "attempts": s.attempts,
                "outputs": s.outputs.as_ref().map(show_secrets),
                "error": s.error.as_ref().map(|e| json!({"class": e.class.name(), "code": e.code, "message": e.message})),
            })
        })
        .collect();
    Ok(json!({
        "run_id": run.id,
        "workflow": run.workflow,
        "site": run.site,
        "status": run.status,
        "trace_id": run.trace_id,
        "inputs": run.inputs,
        "steps": steps,
    }))
}

/// Persisted secret placeholders shown as `[redacted]`.
fn show_secrets(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key(siteflow_step::SECRET_MARKER) => {
            json!("[redacted]")
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), show_secrets(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(show_secrets).collect()),
        other => other.clone(),
    }
}

async fn report(store: &StateStore, outcome: &Outcome, output: Output) -> Result<(), Failure> {
    let doc = run_document(store, &outcome.run_id).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        Output::Text => {
            print_steps(&doc);
            print_failed_stderr(store, &doc).await?;
            let hint = match outcome.status {
                RunStatus::Succeeded => String::new(),
                _ => format!(" — resume with: siteflow resume {}", outcome.run_id),
            };
            println!(
                "run {} {}{hint}",
                outcome.run_id,
                outcome.status.as_str().to_lowercase()
            );
        }
    }
    Ok(())
}

fn print_steps(doc: &Value) {
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    let w = steps
        .iter()
        .filter_map(|s| s["id"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<w$}  {:<12}  {:>8}  ERROR", "STEP", "STATUS", "ATTEMPTS");
    for s in steps {
        let err = s["error"]["message"].as_str().unwrap_or("");
        let err: String = err.lines().next().unwrap_or("").chars().take(100).collect();
        println!(
            "{:<w$}  {:<12}  {:>8}  {}",
            s["id"].as_str().unwrap_or(""),
            s["status"].as_str().unwrap_or(""),
            s["attempts"].to_string(),
            err
        );
    }
}

/// Stderr lines of a failed step shown in the summary: the last few of its last attempt.
const SUMMARY_STDERR_LINES: u32 = 10;
/// Characters of one such line shown (lines are stored up to 16 KiB).
const SUMMARY_LINE_CHARS: usize = 200;

/// The last stderr lines of each failed step's last attempt, as the event log holds them
/// (secrets redacted).
async fn print_failed_stderr(store: &StateStore, doc: &Value) -> Result<(), Failure> {
    let run_id = doc["run_id"].as_str().unwrap_or_default();
    for s in doc["steps"].as_array().into_iter().flatten() {
        let (Some(key), Some(attempt)) = (s["id"].as_str(), s["attempts"].as_u64()) else {
            continue;
        };
        if s["status"] != StepStatus::Failed.as_str() || attempt == 0 {
            continue;
        }
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        let tail = store
            .log_tail(
                run_id,
                key,
                attempt,
                LogStream::Stderr,
                SUMMARY_STDERR_LINES,
            )
            .await?;
        if tail.is_empty() {
            continue;
        }
        println!("\n{key}: last stderr lines (attempt {attempt}):");
        for line in tail {
            let mut shown: String = line.chars().take(SUMMARY_LINE_CHARS).collect();
            if shown.len() < line.len() {
                shown.push('…');
            }
            println!("  {shown}");
        }
    }
    Ok(())
}

fn plan_document(p: &Plan) -> Value {
    let steps: Vec<Value> = p
        .steps
        .iter()
        .map(|s| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(s.spec.id.value));
            m.insert("uses".into(), json!(s.spec.uses.value));
            let needs: Vec<&str> = s
                .deps
                .iter()
                .map(|&d| p.steps[d].spec.id.value.as_str())
                .collect();
            if !needs.is_empty() {
                m.insert("needs".into(), json!(needs));
            }
            if let Some(c) = &s.spec.if_ {
                m.insert("if".into(), json!(c.value));
            }
            if let Some(fe) = &s.for_each {
                m.insert("for_each".into(), fe.clone());
            }
            if let Some(mp) = s.spec.max_parallel {
                m.insert("max_parallel".into(), json!(mp));
            }
            m.insert("with".into(), s.with.clone());
            if let Some(t) = s.timeout {
                m.insert(
                    "timeout".into(),
                    json!(humantime::format_duration(t).to_string()),
                );
            }
            m.insert("retry".into(), json!(s.retry));
            if s.spec.continue_on_error {
                m.insert("continue_on_error".into(), json!(true));
            }
            Value::Object(m)
        })
        .collect();
    let secrets: Vec<Value> = p
        .secrets
        .iter()
        .map(|s| match &s.source {
            siteflow_engine::spec::SecretSource::Env(v) => json!({"name": s.name, "env": v}),
            siteflow_engine::spec::SecretSource::File(f) => json!({"name": s.name, "file": f}),
        })
        .collect();
    let layers: Vec<Vec<String>> = p
        .layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|&i| p.steps[i].spec.id.value.clone())
                .collect()
        })
        .collect();
    json!({
        "workflow": p.workflow.name,
        "site": p.site,
        "inputs": p.inputs,
        "secrets": secrets,
        "layers": layers,
        "steps": steps,
    })
}

fn graph(p: &Plan, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (i, s) in p.steps.iter().enumerate() {
                out.push_str(&format!(
                    "    s{i}[\"{}<br/><small>{}</small>\"]\n",
                    s.spec.id.value, s.spec.uses.value
                ));
            }
            for (i, s) in p.steps.iter().enumerate() {
                for d in &s.deps {
                    out.push_str(&format!("    s{d} --> s{i}\n"));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str("digraph workflow {\n    rankdir=LR;\n    node [shape=box];\n");
            for s in &p.steps {
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n{}\"];\n",
                    s.spec.id.value, s.spec.id.value, s.spec.uses.value
                ));
            }
            for s in &p.steps {
                for &d in &s.deps {
                    out.push_str(&format!(
                        "    \"{}\" -> \"{}\";\n",
                        p.steps[d].spec.id.value, s.spec.id.value
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}

fn ts(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
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
            let store = StateStore::open(&state_path(&cli))?;
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
            let store = existing_state(&cli)?;
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
            let store = existing_state(&cli)?;
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
                Ok(0)
            }
            SandboxCommand::Status => match sandbox::running(&sandbox::dir()) {
                Some(info) => {
                    print!("{}", sandbox::describe(&info));
                    Ok(0)
                }
                None => {
                    println!("no sandbox is running here (`siteflow sandbox up` starts one)");
                    Ok(1)
                }
            },
            SandboxCommand::Down => {
                if sandbox::down(&sandbox::dir()).await? {
                    println!("sandbox stopped; its hosts are gone");
                } else {
                    println!("no sandbox was running here");
                }
                Ok(0)
            }
            SandboxCommand::Serve { dir } => {
                sandbox::serve(dir).await?;
                Ok(0)
            }
        },
        Command::Plan { target, output } => {
            let src = sources(&cli, target)?;
            let p = plan::compile(&src, &reg)?;
            let doc = plan_document(&p);
            match output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                }
                Output::Text => print!("{}", serde_saphyr::to_string(&doc).unwrap_or_default()),
            }
            Ok(0)
        }
        Command::Validate { files } => {
            let mut failed = false;
            for f in files {
                let text = read_source(f)?;
                let is_site = plan::site_workflow(&text).ok().flatten();
                let src = match is_site {
                    Some(w) => {
                        let wf = find_workflow(&cli, &w.value, f.parent())?;
                        Sources {
                            workflow: read_source(&wf)?,
                            site: Some(text),
                            sets: vec![],
                        }
                    }
                    None => Sources {
                        workflow: text,
                        site: None,
                        sets: vec![],
                    },
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
            Ok(if failed { 2 } else { 0 })
        }
        Command::Graph { target, format } => {
            let src = sources(&cli, target)?;
            let p = plan::compile(&src, &reg)?;
            print!("{}", graph(&p, *format));
            Ok(0)
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
            Ok(0)
        }
        Command::Runs { command } => {
            let store = read_state(&cli)?;
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
                                   "status": r.status, "created_at": ts(r.created_at),
                                   "updated_at": ts(r.updated_at)})
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
                            ts(r.created_at)
                        );
                    }
                }
                RunsCommand::Show { run, output } => {
                    let run = resolve_run(&store, run).await?;
                    let doc = run_document(&store, &run).await?;
                    match output {
                        Output::Json => {
                            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
                        }
                        Output::Text => {
                            println!(
                                "run {}  workflow {}  site {}  status {}  trace {}",
                                doc["run_id"].as_str().unwrap_or(""),
                                doc["workflow"].as_str().unwrap_or(""),
                                doc["site"].as_str().unwrap_or("-"),
                                doc["status"].as_str().unwrap_or(""),
                                doc["trace_id"].as_str().unwrap_or("")
                            );
                            print_steps(&doc);
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Logs { run, step, output } => {
            let store = read_state(&cli)?;
            let run = &resolve_run(&store, run).await?;
            store.run(run).await?;
            // (at, order, step, attempt, kind, message). Attempt starts and plain
            // successes live in the attempts table; merge them in.
            let mut entries: Vec<(i64, i64, String, Option<u32>, String, String)> = vec![];
            for a in store.attempts(run).await? {
                let wanted = step
                    .as_deref()
                    .is_none_or(|s| a.step_key == s || a.step_key.starts_with(&format!("{s}[")));
                if !wanted {
                    continue;
                }
                let (key, n) = (&a.step_key, a.attempt);
                entries.push((
                    a.started_at,
                    -1,
                    key.clone(),
                    Some(n),
                    "started".into(),
                    format!("attempt {n} started"),
                ));
                if let (
                    Some(end),
                    Some(outcome @ (AttemptOutcome::Succeeded | AttemptOutcome::Satisfied)),
                ) = (a.finished_at, a.outcome)
                {
                    // On a tie (one commit ends a step and starts the next), the end comes first.
                    entries.push((
                        end,
                        -2,
                        key.clone(),
                        Some(n),
                        outcome.as_str().into(),
                        format!("attempt {n} {outcome}"),
                    ));
                }
            }
            for e in store.events(run, step.as_deref()).await? {
                let who = e.step_key.unwrap_or_else(|| "run".into());
                entries.push((e.at, e.seq, who, e.attempt, e.kind, e.message));
            }
            entries.sort_by_key(|e| (e.0, e.1));
            match output {
                Output::Json => {
                    let docs: Vec<Value> = entries
                        .into_iter()
                        .map(|(at, _, who, attempt, kind, message)| {
                            json!({"at": ts(at), "step": who, "attempt": attempt,
                                   "kind": kind, "message": message})
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&docs).unwrap_or_default()
                    );
                }
                Output::Text => {
                    for (at, _, who, attempt, kind, message) in entries {
                        let att = attempt.map(|a| format!("#{a} ")).unwrap_or_default();
                        for line in message.lines() {
                            println!("{} [{who}] {att}{kind:<9} {line}", ts(at));
                        }
                    }
                }
            }
            Ok(0)
        }
        Command::Cancel { run } => {
            let store = existing_state(&cli)?;
            let run = &resolve_run(&store, run).await?;
            match store.request_cancel(run).await? {
                Some(h) => println!("asked {h} to stop run {run}"),
                None => println!("run {run} has no runner; it stays as it is (resumable)"),
            }
            Ok(0)
        }
        Command::Unlock { run, force } => {
            let store = existing_state(&cli)?;
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
                        3,
                        format!(
                            "error: run {run} is held by {holder}, and {why}; stop it (`siteflow cancel {run}`), or `siteflow unlock --force {run}` if you are sure it no longer runs steps"
                        ),
                    ));
                }
            }
            Ok(0)
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
                            2,
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
            Ok(0)
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&siteflow_engine::schema::schemas(&reg))
                    .unwrap_or_default()
            );
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "siteflow",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}
