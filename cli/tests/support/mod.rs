//! Test sandbox: a temp working directory, files in it, and the real `siteflow` binary.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A temp working directory with its own state database.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// What a `siteflow` invocation did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    pub fn db(&self) -> PathBuf {
        self.path(".siteflow/state.db")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_siteflow"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("SITEFLOW_STATE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        self.run_with_env(args, &[])
    }

    /// Like [`Sandbox::run`], with extra environment variables (secrets).
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out: Output = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run siteflow");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn siteflow")
    }

    /// The id of the newest run.
    pub fn last_run(&self) -> String {
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.query_row(
            "SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Lines of a side-effect log file.
    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().map(str::to_string).collect()
    }
}

/// How often each line occurs.
pub fn counts(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        *m.entry(l.clone()).or_default() += 1;
    }
    m
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
