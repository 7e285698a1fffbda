//! Test harness: the emulator, a state store and a runner with the Azure steps, and YAML
//! helpers that point steps at the emulator.

#![allow(dead_code)]

use siteflow_azure_emulator::{Emulator, EmulatorHandle};
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{Control, NoObserver, Outcome, RunOptions, Runner};
use siteflow_engine::state::StateStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The client secret of the emulator's default principal.
pub const SECRET: &str = "fake-secret";

pub struct Env {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub store: StateStore,
    pub registry: Arc<Registry>,
}

impl Env {
    /// An ARM client of the emulator's cloud, logged in with its client secret.
    pub fn client(&self) -> siteflow_azure::ArmClient {
        let mut o = siteflow_azure::ClientOptions::new(
            siteflow_azure::CloudConfig::custom(
                self.emu.base_url(),
                self.emu.ca_pem_path().to_str(),
            ),
            siteflow_azure::CredentialConfig {
                kind: siteflow_azure::CredentialKind::ClientSecret,
                tenant_id: Some(self.emu.tenant_id().into()),
                client_id: Some("22222222-2222-2222-2222-222222222222".into()),
                client_secret: Some(siteflow_step::Secret::new(SECRET.into())),
                ..Default::default()
            },
            self.emu.subscription_id(),
        );
        o.env = Some(Default::default());
        siteflow_azure::ArmClient::new(o).unwrap()
    }

    pub async fn new() -> Env {
        Self::with(Emulator::builder().time_scale(0.01)).await
    }

    pub async fn with(builder: siteflow_azure_emulator::EmulatorBuilder) -> Env {
        let emu = builder.start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sp-secret"), SECRET).unwrap();
        let store = StateStore::open(&dir.path().join("state.db")).unwrap();
        let registry = Arc::new(Registry::new().with(siteflow_steps_azure::steps()));
        Env {
            emu,
            dir,
            store,
            registry,
        }
    }

    /// This environment with the core kinds (`shell`) registered too.
    pub fn with_core_steps(self) -> Env {
        let registry = Registry::new()
            .with(siteflow_steps_azure::steps())
            .with(siteflow_steps_core::steps());
        Env {
            registry: Arc::new(registry),
            ..self
        }
    }

    /// The `azure:` connection block (flow style) for step inputs.
    pub fn azure(&self) -> String {
        format!(
            "{{ subscription: \"{sub}\", cloud: {{ name: custom, arm_url: \"{b}\", authority_host: \"{b}\", graph_url: \"{b}\", ca_pem_file: \"{ca}\" }}, credential: {{ kind: client_secret, tenant_id: \"{t}\", client_id: 22222222-2222-2222-2222-222222222222, client_secret: \"${{{{ secrets.sp }}}}\" }} }}",
            sub = self.emu.subscription_id(),
            b = self.emu.base_url(),
            ca = self.emu.ca_pem_path().display(),
            t = self.emu.tenant_id(),
        )
    }

    /// A workflow with the `sp` secret declared, and the given steps (YAML list items).
    pub fn workflow(&self, steps: &str) -> String {
        format!(
            "name: t\nsecrets:\n  sp: {{ file: {} }}\nsteps:\n{steps}",
            self.dir.path().join("sp-secret").display()
        )
    }

    pub fn sources(&self, yaml: &str, site: Option<&str>) -> Sources {
        Sources {
            workflow: SourceText {
                path: "wf.yaml".into(),
                text: yaml.into(),
            },
            site: site.map(|s| SourceText {
                path: "site.yaml".into(),
                text: format!("name: {s}\n"),
            }),
            groups: vec![],
            sets: vec![],
        }
    }

    pub fn runner(&self) -> Runner {
        let opts = RunOptions {
            heartbeat: Duration::ZERO,
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

    /// Runs a workflow to the end (bounded).
    pub async fn run(&self, yaml: &str, site: Option<&str>) -> Outcome {
        let sources = self.sources(yaml, site);
        let plan = compile(&sources, &self.registry).unwrap_or_else(|e| panic!("{e:?}"));
        tokio::time::timeout(Duration::from_secs(120), self.runner().start(plan, sources))
            .await
            .expect("the run finishes in bounded time")
            .unwrap()
    }

    /// Starts a run, with its control handle.
    pub fn start(
        &self,
        yaml: &str,
        site: Option<&str>,
    ) -> (Control, tokio::task::JoinHandle<Outcome>) {
        let sources = self.sources(yaml, site);
        let plan = compile(&sources, &self.registry).unwrap_or_else(|e| panic!("{e:?}"));
        let runner = self.runner();
        let control = runner.control();
        (
            control,
            tokio::spawn(async move { runner.start(plan, sources).await.unwrap() }),
        )
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Requests with this method whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.emu
            .request_log()
            .matching(needle)
            .iter()
            .filter(|e| e.method == method)
            .count()
    }

    /// Everything persisted about a run, as one string (steps, attempts, events).
    pub async fn persisted(&self, run: &str) -> String {
        let steps = self.store.steps(run).await.unwrap();
        let attempts = self.store.attempts(run).await.unwrap();
        let events = self.store.events(run, None).await.unwrap();
        let mut s = format!("{steps:?}\n{attempts:?}\n");
        for e in events {
            s.push_str(&e.message);
            s.push('\n');
        }
        s.push_str(&String::from_utf8_lossy(
            &std::fs::read(self.dir.path().join("state.db")).unwrap(),
        ));
        if let Ok(wal) = std::fs::read(self.dir.path().join("state.db-wal")) {
            s.push_str(&String::from_utf8_lossy(&wal));
        }
        s
    }

    pub async fn step_status(
        &self,
        run: &str,
        id: &str,
    ) -> (
        String,
        Option<serde_json::Value>,
        Option<siteflow_step::StepError>,
    ) {
        let steps = self.store.steps(run).await.unwrap();
        let s = steps
            .into_iter()
            .find(|s| s.step_id == id)
            .unwrap_or_else(|| panic!("no step {id}"));
        (s.status.to_string(), s.outputs, s.error)
    }
}
