//! The version this copy of the simulator reports: baked into the executable by the install
//! script as a trailer line `#K3S-SIM-VERSION=<v>` appended to the file.

use std::io::{Read, Seek, SeekFrom};

/// Version reported when no trailer was baked in.
pub const DEFAULT_VERSION: &str = "v1.31.4+k3s1";
const TRAILER: &str = "#K3S-SIM-VERSION=";

/// The baked version, `$K3S_SIM_VERSION`, or [`DEFAULT_VERSION`].
pub fn version() -> String {
    baked().unwrap_or_else(|| {
        std::env::var("K3S_SIM_VERSION").unwrap_or_else(|_| DEFAULT_VERSION.to_owned())
    })
}

fn baked() -> Option<String> {
    let mut f = std::fs::File::open("/proc/self/exe").ok()?;
    let len = f.metadata().ok()?.len();
    let tail = len.min(256);
    f.seek(SeekFrom::Start(len - tail)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().find(|l| l.starts_with(TRAILER))?;
    Some(line[TRAILER.len()..].trim().to_owned())
}

/// `k3s --version` output: `k3s version <v> (<commit>)` and the Go line.
pub fn print() {
    let v = version();
    let commit = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(v.as_bytes()))[..8];
    println!("k3s version {v} ({commit})");
    println!("go version go1.23.4");
}

/// `1.31` style major/minor of a `v1.31.4+k3s1` version.
pub fn major_minor(v: &str) -> (String, String) {
    let mut it = v.trim_start_matches('v').split(['.', '+']);
    (
        it.next().unwrap_or("1").to_owned(),
        it.next().unwrap_or("31").to_owned(),
    )
}
