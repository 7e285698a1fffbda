//! `siteflow-testhosts`: brings up N test hosts, prints them as JSON and stays until Ctrl-C;
//! `siteflow-testhosts cleanup` removes what killed runs left behind.

use anyhow::{Context, Result, bail};
use siteflow_testhosts::{TestNet, cleanup_stale};

const USAGE: &str = "usage: siteflow-testhosts [up] [-n HOSTS] [--k3s] | cleanup";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut hosts = 2usize;
    let mut k3s = false;
    let mut command = "up";
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "up" | "cleanup" => command = if arg == "up" { "up" } else { "cleanup" },
            "-n" | "--hosts" => {
                hosts = it
                    .next()
                    .context(USAGE)?
                    .parse()
                    .context("-n takes a number")?
            }
            "--k3s" => k3s = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if command == "cleanup" {
        let cleaned = cleanup_stale()?;
        println!("{}", serde_json::json!({ "cleaned_slots": cleaned }));
        return Ok(());
    }
    let net = TestNet::new(hosts).await?;
    if k3s {
        for host in &net.hosts {
            host.install_k3s_simulator().await?;
        }
    }
    println!("{}", serde_json::to_string_pretty(&net)?);
    eprintln!("test hosts are up; press Ctrl-C to tear them down");
    tokio::signal::ctrl_c().await?;
    drop(net);
    Ok(())
}
