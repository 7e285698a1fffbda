//! `k3s agent`: checks the server's CA against the token, joins with the token (retrying like
//! k3s while it is refused or the server is unreachable) and then heartbeats every 2 s.

use std::time::Duration;

use anyhow::{Result, bail};
use sha2::Digest;

use crate::sim::config;
use crate::sim::http::{basic, call};
use crate::sim::server::{node_labels, node_name, primary_ip};
use crate::sim::state::{NodeRecord, now};
use crate::sim::token::{self, Token};

/// Runs `k3s agent <args>` until killed.
pub fn run(args: &[String]) -> Result<()> {
    let opts = config::load(args)?;
    let Some(url) = opts.get("server").filter(|s| !s.is_empty()) else {
        bail!("--server is required");
    };
    if !url.starts_with("https://") {
        bail!("--server must be an https:// URL (have {url})");
    }
    let Some(raw) = token::from_options(&opts)? else {
        bail!("--token is required");
    };
    let tok = Token::parse(&raw);
    let name = node_name(&opts);
    let ip = opts.get("node-ip").unwrap_or_else(primary_ip);
    let node = NodeRecord {
        labels: node_labels(&opts, &name, false),
        taints: opts.list("node-taint"),
        internal_ip: ip,
        hostname: name.clone(),
        created: now(),
        last_heartbeat: now(),
        version: crate::sim::version::version(),
        is_server: false,
        unschedulable: false,
        drained_at: None,
        name,
    };
    let body = serde_json::to_value(&node)?;
    let auth = basic(&tok.user, &tok.secret);
    let mut joined = false;
    loop {
        match attempt(&url, &tok, &auth, &body, joined) {
            Ok(()) => {
                if !joined {
                    eprintln!("level=info msg=\"k3s agent is up and running\" server={url}");
                    crate::sim::notify_ready();
                    joined = true;
                }
            }
            Err(e) => eprintln!(
                "level=error msg=\"Failed to validate connection to cluster at {url}: {e:#}\""
            ),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn attempt(
    url: &str,
    tok: &Token,
    auth: &str,
    body: &serde_json::Value,
    joined: bool,
) -> Result<()> {
    if !joined {
        let (status, ca) = call(url, "GET", "/cacerts", None, None)?;
        if status != 200 {
            bail!("failed to get CA certs: {status}");
        }
        if let Some(want) = &tok.ca_hash {
            let have = hex::encode(sha2::Sha256::digest(&ca));
            if *want != have {
                bail!(
                    "token CA hash does not match the Cluster CA certificate hash: {want} != {have}"
                );
            }
        }
    }
    let path = if joined {
        "/v1-k3s/sim/heartbeat"
    } else {
        "/v1-k3s/sim/join"
    };
    let (status, _) = call(url, "POST", path, Some(auth.to_owned()), Some(body))?;
    match status {
        200 => Ok(()),
        401 => bail!("token is not valid: 401 Unauthorized"),
        s => bail!("unexpected status {s}"),
    }
}
