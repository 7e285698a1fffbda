//! The `systemctl` stand-in for the host's services: reads units from /etc/systemd/system,
//! starts `ExecStart` detached with the unit's environment files, and counts starts, stops and
//! restarts per unit in `/var/lib/systemd-sim/<unit>.json` (plus `<unit>.restarts`).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const UNIT_DIR: &str = "/etc/systemd/system";
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
const RUN_DIR: &str = "/run/systemd-sim";
/// Where the counters live (kept across reboots).
pub const STATS_DIR: &str = "/var/lib/systemd-sim";

fn unit_name(u: &str) -> String {
    let base = Path::new(u)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(u);
    if base.contains('.') {
        base.to_owned()
    } else {
        format!("{base}.service")
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Stats {
    starts: u64,
    stops: u64,
    restarts: u64,
}

fn bump(unit: &str, f: impl FnOnce(&mut Stats)) -> Result<()> {
    std::fs::create_dir_all(STATS_DIR)?;
    let path = Path::new(STATS_DIR).join(format!("{unit}.json"));
    let mut stats: Stats = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    f(&mut stats);
    std::fs::write(&path, serde_json::to_vec_pretty(&stats)?)?;
    std::fs::write(
        Path::new(STATS_DIR).join(format!("{unit}.restarts")),
        format!("{}\n", stats.restarts),
    )?;
    Ok(())
}

struct Unit {
    exec: Vec<String>,
    env: BTreeMap<String, String>,
    notify: bool,
}

fn load_unit(unit: &str) -> Result<Unit> {
    let path = Path::new(UNIT_DIR).join(unit);
    let text =
        std::fs::read_to_string(&path).map_err(|_| anyhow::anyhow!("Unit {unit} not found."))?;
    let joined = text.replace("\\\n", " ");
    let mut exec = Vec::new();
    let mut env = BTreeMap::new();
    let mut notify = false;
    let stem = unit.trim_end_matches(".service");
    for line in joined.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ExecStart=") {
            exec = split_words(v);
        } else if let Some(v) = line.strip_prefix("Type=") {
            notify = v.trim() == "notify";
        } else if let Some(v) = line.strip_prefix("Environment=") {
            for w in split_words(v) {
                if let Some((k, val)) = w.split_once('=') {
                    env.insert(k.to_owned(), val.to_owned());
                }
            }
        } else if let Some(v) = line.strip_prefix("EnvironmentFile=") {
            let (optional, file) = match v.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, v),
            };
            let file = file.replace("%N", stem);
            match std::fs::read_to_string(&file) {
                Ok(content) => {
                    for l in content.lines() {
                        let l = l.trim();
                        if l.is_empty() || l.starts_with('#') {
                            continue;
                        }
                        if let Some((k, val)) = l.split_once('=') {
                            let words = split_words(val);
                            env.insert(k.trim().to_owned(), words.join(" "));
                        }
                    }
                }
                Err(_) if optional => {}
                Err(e) => bail!("{unit}: cannot read environment file {file}: {e}"),
            }
        }
    }
    if exec.is_empty() {
        bail!("{unit} has no ExecStart");
    }
    Ok(Unit { exec, env, notify })
}

/// Shell-like word splitting with '...' and "..." quoting (what unit files use).
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                any = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                any = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                any = true;
                cur.push(c);
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn pid_file(unit: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{unit}.pid"))
}

fn ready_file(unit: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{unit}.ready"))
}

/// A process's state letter and start time (clock ticks since boot), from /proc.
fn proc_state(pid: i32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    // After the state come fields 4..; the start time is field 22 overall.
    let start = fields.nth(18)?.to_string();
    Some((state, start))
}

/// The main pid if it is alive (not a zombie) and still the process we started: the pid
/// file records its start time too, because pids are reused (pid_max can be small) and a
/// stale pid file must never make `stop` signal somebody else's process group.
fn main_pid(unit: &str) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file(unit)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: i32 = parts.next()?.parse().ok()?;
    let recorded_start = parts.next()?;
    let (state, start) = proc_state(pid)?;
    (state != "Z" && state != "X" && start == recorded_start).then_some(pid)
}

fn start(unit: &str) -> Result<()> {
    if main_pid(unit).is_some() {
        return Ok(());
    }
    let u = load_unit(unit)?;
    std::fs::create_dir_all(RUN_DIR)?;
    let _ = std::fs::remove_file(ready_file(unit));
    let log_path = format!("/var/log/{}.log", unit.trim_end_matches(".service"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let child = std::process::Command::new(&u.exec[0])
        .args(&u.exec[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("SIM_NOTIFY_FILE", ready_file(unit))
        .envs(&u.env)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("{unit}: cannot execute {}", u.exec[0]))?;
    let pid = child.id() as i32;
    let start = proc_state(pid).map(|(_, s)| s).unwrap_or_default();
    std::fs::write(pid_file(unit), format!("{pid} {start}"))?;
    bump(unit, |s| s.starts += 1)?;
    if u.notify {
        // k3s's units say TimeoutStartSec=0 (wait for the notification as long as the
        // process lives); bounded here so a wedged simulator cannot hang a test forever.
        let deadline = Instant::now() + Duration::from_secs(300);
        while !ready_file(unit).exists() {
            if main_pid(unit).is_none() || Instant::now() > deadline {
                bail!(
                    "Job for {unit} failed because the control process exited with error code.\nSee \"{log_path}\" for details."
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn stop(unit: &str) -> Result<()> {
    if let Some(pid) = main_pid(unit) {
        // As systemd: SIGTERM, up to DefaultTimeoutStopSec (90 s) for the process to go,
        // then SIGKILL; either way the job ends only once the process is gone, so a start
        // that follows never races the old process for its port and its files.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        let gone = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while main_pid(unit).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            main_pid(unit).is_none()
        };
        // Only if it is still our process (its pid may be reused once it is gone).
        if !gone(Duration::from_secs(90)) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            if !gone(Duration::from_secs(30)) {
                bail!("Job for {unit} failed: its process {pid} did not die after SIGKILL.");
            }
        }
        bump(unit, |s| s.stops += 1)?;
    }
    let _ = std::fs::remove_file(pid_file(unit));
    let _ = std::fs::remove_file(ready_file(unit));
    Ok(())
}

fn enabled(unit: &str) -> bool {
    Path::new(WANTS_DIR).join(unit).exists()
}

/// Runs `systemctl <args>`; returns the exit code.
pub fn main(args: &[String]) -> Result<i32> {
    let mut now = false;
    let mut quiet = false;
    let mut words = Vec::new();
    for a in args {
        match a.as_str() {
            "--now" => now = true,
            "-q" | "--quiet" => quiet = true,
            a if a.starts_with('-') => {}
            a => words.push(a.to_owned()),
        }
    }
    let Some((verb, units)) = words.split_first() else {
        bail!("the systemctl stand-in needs a command");
    };
    let units: Vec<String> = units.iter().map(|u| unit_name(u)).collect();
    match verb.as_str() {
        "daemon-reload" | "reset-failed" => Ok(0),
        "start" => {
            units.iter().try_for_each(|u| start(u))?;
            Ok(0)
        }
        "stop" => {
            units.iter().try_for_each(|u| stop(u))?;
            Ok(0)
        }
        "restart" | "try-restart" | "reload-or-restart" | "force-reload" => {
            for u in &units {
                if verb == "try-restart" && main_pid(u).is_none() {
                    continue;
                }
                load_unit(u)?;
                stop(u)?;
                bump(u, |s| s.restarts += 1)?;
                start(u)?;
            }
            Ok(0)
        }
        "enable" => {
            for u in &units {
                load_unit(u)?;
                std::fs::create_dir_all(WANTS_DIR)?;
                let link = Path::new(WANTS_DIR).join(u);
                if !link.exists() {
                    std::os::unix::fs::symlink(Path::new(UNIT_DIR).join(u), &link)?;
                    if !quiet {
                        eprintln!("Created symlink {} → {}/{u}.", link.display(), UNIT_DIR);
                    }
                }
                if now {
                    start(u)?;
                }
            }
            Ok(0)
        }
        "disable" => {
            for u in &units {
                let _ = std::fs::remove_file(Path::new(WANTS_DIR).join(u));
                if now {
                    stop(u)?;
                }
            }
            Ok(0)
        }
        "is-active" => {
            let mut code = 0;
            for u in &units {
                let active = main_pid(u).is_some();
                if !quiet {
                    println!("{}", if active { "active" } else { "inactive" });
                }
                if !active {
                    code = 3;
                }
            }
            Ok(code)
        }
        "is-enabled" => {
            let mut code = 0;
            for u in &units {
                let e = enabled(u);
                if !quiet {
                    println!("{}", if e { "enabled" } else { "disabled" });
                }
                if !e {
                    code = 1;
                }
            }
            Ok(code)
        }
        "status" => {
            let mut code = 0;
            for u in &units {
                match main_pid(u) {
                    Some(pid) => {
                        println!("● {u}\n     Active: active (running)\n   Main PID: {pid}")
                    }
                    None => {
                        println!("○ {u}\n     Active: inactive (dead)");
                        code = 3;
                    }
                }
            }
            Ok(code)
        }
        "show" => {
            for u in &units {
                let pid = main_pid(u);
                println!(
                    "Id={u}\nActiveState={}\nMainPID={}\nUnitFileState={}",
                    if pid.is_some() { "active" } else { "inactive" },
                    pid.unwrap_or(0),
                    if enabled(u) { "enabled" } else { "disabled" }
                );
            }
            Ok(0)
        }
        "sim-boot" => {
            if let Ok(rd) = std::fs::read_dir(WANTS_DIR) {
                for e in rd.flatten() {
                    let u = e.file_name().to_string_lossy().into_owned();
                    if let Err(err) = start(&u) {
                        eprintln!("{err:#}");
                    }
                }
            }
            Ok(0)
        }
        other => bail!("the systemctl stand-in does not support {other:?}"),
    }
}
