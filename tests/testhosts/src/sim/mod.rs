//! `k3s-sim`: a pure-Rust stand-in for the k3s binary on test hosts (k3s cannot be downloaded
//! here). Answers as `k3s` (`--version`, `server`, `agent`, `kubectl`), as `kubectl` and as
//! `systemctl` depending on the name it is run by. See the crate README for what it models.
//! The `k3s-sim` binary runs [`main`]; so does any binary that embeds the simulator (the
//! `siteflow` CLI's sandbox) when it is started under one of the simulator's names.

mod addons;
mod agent;
mod arc;
mod config;
mod flux;
mod http;
mod https;
mod jwt;
mod kubectl;
mod resources;
mod server;
mod state;
mod systemctl;
mod tls;
mod token;
mod version;

/// Tells the `systemctl` stand-in that a `Type=notify` service is ready (sd_notify READY=1).
pub fn notify_ready() {
    if let Ok(path) = std::env::var("SIM_NOTIFY_FILE") {
        let _ = std::fs::write(path, "READY=1\n");
    }
}

/// The names the simulator answers to (as the file name of `argv[0]`).
pub const NAMES: &[&str] = &["k3s", "k3s-sim", "kubectl", "systemctl"];

/// Whether a program started as `argv0` is the simulator.
pub fn is_sim_name(argv0: &str) -> bool {
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    NAMES.contains(&name)
}

/// Runs the simulator with the process's arguments and exits.
pub fn main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = std::path::Path::new(args.first().map(String::as_str).unwrap_or("k3s"))
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("k3s")
        .to_owned();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match argv0.as_str() {
        "systemctl" => systemctl::main(rest),
        "kubectl" => kubectl::main(rest),
        _ => k3s(rest),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}

fn k3s(args: &[String]) -> anyhow::Result<i32> {
    match args.first().map(String::as_str) {
        Some("--version" | "-v" | "version") => {
            version::print();
            Ok(0)
        }
        Some("server") => server::run(&args[1..]).map(|_| 0),
        Some("agent") => agent::run(&args[1..]).map(|_| 0),
        Some("kubectl") => kubectl::main(&args[1..]),
        Some("systemctl") => systemctl::main(&args[1..]),
        _ => {
            eprintln!("usage: k3s [--version | server | agent | kubectl] [flags]");
            Ok(1)
        }
    }
}
