//! The `siteflow` command line: thin over the engine; maps outcomes to documented exit codes.

mod args;
mod dispatch;
mod exit;
mod first_boot;
mod gitserve;
mod progress;
mod sandbox;
mod sandbox_aks;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

pub(crate) use exit::Failure;

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
    let cli = args::Cli::parse();
    // HTTP clients (OTLP export, ARM) use rustls without choosing a crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let telemetry = rt.block_on(async { telemetry::Telemetry::init(cli.verbose) });
    let result = rt.block_on(dispatch::dispatch(cli));
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
