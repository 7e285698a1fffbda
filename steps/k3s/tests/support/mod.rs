//! Test support: test hosts with the k3s simulator, an in-process runner over a real state
//! store, a step context for calling kinds directly, and a `/proc` cmdline sampler.

#![allow(dead_code)]

use serde_json::Value;
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, Outcome, RunOptions, Runner};
use siteflow_engine::state::StateStore;
use siteflow_step::{LogStream, StepContext, StepError, StepHost};
use siteflow_testhosts::TestNet;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fails the test if `f` takes longer than `secs`.
pub async fn bounded<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test took longer than {secs} s"))
}

/// `n` test hosts, each with the k3s simulator.
pub async fn net_with_k3s(n: usize) -> TestNet {
    let net = TestNet::new(n).await.expect("test hosts (needs root)");
    for h in &net.hosts {
        h.install_k3s_simulator().await.expect("k3s simulator");
    }
    net
}

/// The registry the `siteflow` binary uses.
pub fn registry() -> Arc<Registry> {
    let pool = siteflow_ssh::steps::StepPool::new();
    Arc::new(
        Registry::new()
            .with(siteflow_steps_core::steps())
            .with(siteflow_ssh::steps(pool.clone()))
            .with(siteflow_steps_k3s::steps(pool)),
    )
}

/// The workspace's `workflows/` directory.
pub fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

/// A state store and working directory, running workflows in process.
pub struct Engine {
    pub dir: tempfile::TempDir,
    pub store: StateStore,
    pub registry: Arc<Registry>,
}

impl Engine {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state.db")).unwrap();
        Engine {
            dir,
            store,
            registry: registry(),
        }
    }

    fn runner(&self) -> Runner {
        let opts = RunOptions {
            working_dir: self.dir.path().to_path_buf(),
            ..RunOptions::default()
        };
        Runner::new(
            self.registry.clone(),
            self.store.clone(),
            opts,
            Arc::new(NoObserver),
        )
    }

    /// Starts a run of `workflow` (text, with its file name) with a site file text.
    pub async fn start(&self, workflow: (&str, &str), site: Option<&str>) -> Outcome {
        let sources = Sources {
            workflow: SourceText {
                path: workflow.0.into(),
                text: workflow.1.into(),
            },
            site: site.map(|s| SourceText {
                path: "site.yaml".into(),
                text: s.into(),
            }),
            groups: vec![],
            sets: vec![],
        };
        let plan = compile(&sources, &self.registry)
            .unwrap_or_else(|d| panic!("workflow does not compile: {d:?}"));
        self.runner().start(plan, sources).await.expect("run")
    }

    pub async fn resume(&self, run_id: &str) -> Outcome {
        self.runner().resume(run_id, false).await.expect("resume")
    }

    /// `step key -> outcomes of its attempts` for a run.
    pub async fn outcomes(&self, run_id: &str) -> HashMap<String, Vec<String>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for a in self.store.attempts(run_id).await.unwrap() {
            m.entry(a.step_key)
                .or_default()
                .push(a.outcome.map(|o| o.to_string()).unwrap_or_default());
        }
        m
    }

    /// Every event message of a run, joined.
    pub async fn log_text(&self, run_id: &str) -> String {
        let events = self.store.events(run_id, None).await.unwrap();
        events
            .iter()
            .map(|e| format!("{} {:?} {}: {}", e.kind, e.step_key, e.seq, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The bytes of the state database and its WAL.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            if let Ok(b) = std::fs::read(self.dir.path().join(name)) {
                out.extend(b);
            }
        }
        out
    }
}

/// Samples every process's command line on the machine (the test hosts share the PID
/// namespace) until stopped.
pub struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CmdlineSampler {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let task = tokio::task::spawn_blocking(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(rd) = std::fs::read_dir("/proc") {
                    for e in rd.flatten() {
                        if let Ok(b) = std::fs::read(e.path().join("cmdline"))
                            && !b.is_empty()
                        {
                            let line = String::from_utf8_lossy(&b).replace('\0', " ");
                            v.lock().unwrap().insert(line);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        CmdlineSampler { stop, seen, task }
    }

    pub async fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// A step host for calling kinds directly: logs and run values in memory.
#[derive(Default)]
pub struct MemHost {
    pub lines: Mutex<Vec<(String, String)>>,
    pub values: Mutex<HashMap<String, Value>>,
    pub progress: Mutex<Option<Value>>,
}

#[siteflow_step::async_trait]
impl StepHost for MemHost {
    fn log(&self, stream: LogStream, line: &str) {
        self.lines
            .lock()
            .unwrap()
            .push((stream.name().to_string(), line.to_string()));
    }
    fn progress(&self) -> Option<Value> {
        self.progress.lock().unwrap().clone()
    }
    async fn save_progress(&self, progress: Value) -> Result<(), StepError> {
        *self.progress.lock().unwrap() = Some(progress);
        Ok(())
    }
    async fn run_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        Ok(self
            .values
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{key}"))
            .cloned())
    }
    async fn set_run_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        self.values
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{key}"), value);
        Ok(())
    }
    fn add_secret(&self, _value: &str) {}
}

/// A context over a [`MemHost`].
pub fn context(host: Arc<MemHost>, dir: &Path) -> StepContext {
    StepContext::new(
        "run-test",
        Some("test-site".into()),
        "step",
        "test",
        1,
        dir.to_path_buf(),
        siteflow_step::CancellationToken::new(),
        host,
    )
}
