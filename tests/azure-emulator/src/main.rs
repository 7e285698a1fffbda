//! `siteflow-azure-emulator`: serves the emulator on a port until killed.
//!
//! Prints one JSON line on stdout once listening:
//! `{"baseUrl":...,"caPemPath":...,"tenantId":...,"subscriptionId":...,"clientId":...,"clientSecret":...}`.

use std::process::ExitCode;

use siteflow_azure_emulator::{Emulator, EmulatorConfig};

const USAGE: &str = "usage: siteflow-azure-emulator [--port N] [--time-scale F] [--config FILE.json] [--ca-out FILE.pem]";

fn parse() -> Result<(u16, f64, EmulatorConfig), String> {
    let mut port = 0u16;
    let mut scale = 1.0f64;
    let mut config = EmulatorConfig::default();
    let mut ca_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--time-scale" => {
                scale = value("--time-scale")?
                    .parse()
                    .map_err(|e| format!("--time-scale: {e}"))?
            }
            "--config" => {
                let path = value("--config")?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                config = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--ca-out" => ca_out = Some(std::path::PathBuf::from(value("--ca-out")?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    if ca_out.is_some() {
        config.ca_pem_path = ca_out;
    }
    Ok((port, scale, config))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (port, scale, config) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let emu = match Emulator::builder()
        .config(config)
        .time_scale(scale)
        .port(port)
        .start()
        .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("siteflow-azure-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let principal = emu.config().principals.first();
    let line = serde_json::json!({
        "baseUrl": emu.base_url(),
        "caPemPath": emu.ca_pem_path(),
        "tenantId": emu.tenant_id(),
        "subscriptionId": emu.subscription_id(),
        "clientId": principal.map(|p| p.client_id.clone()),
        "clientSecret": principal.map(|p| p.client_secret.clone()),
    });
    println!("{line}");
    let _ = tokio::signal::ctrl_c().await;
    emu.shutdown().await;
    ExitCode::SUCCESS
}
