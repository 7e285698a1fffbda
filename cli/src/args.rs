//! The command line's arguments (clap) and the exit-code text of `--help`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub(crate) const EXIT_CODES: &str = "Exit codes:
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
pub(crate) struct Cli {
    /// State database (default: .siteflow/state.db under the working directory).
    #[arg(long, global = true, env = "SITEFLOW_STATE")]
    pub(crate) state: Option<PathBuf>,
    /// Where workflow names are looked up (default: ./workflows).
    #[arg(long, global = true, env = "SITEFLOW_WORKFLOWS")]
    pub(crate) workflows: Option<PathBuf>,
    /// More log output on stderr.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(clap::Args)]
pub(crate) struct Target {
    /// A workflow file, or a name looked up in the workflows directory. May be omitted
    /// when the site file names its workflow.
    pub(crate) workflow: Option<String>,
    /// A site file layered over the workflow.
    #[arg(long)]
    pub(crate) site: Option<PathBuf>,
    /// Input values, `name=value` or `name.field=value` (highest precedence).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum HostsCommand {
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
pub(crate) enum SandboxCommand {
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
pub(crate) enum RunsCommand {
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
