//! The step host: what a running step sees of the engine (logs, saved progress, run and
//! shared values, secrets), each write fenced with the run's lease.

use super::event::{RunEvent, RunObserver};
use crate::redact::Redactor;
use crate::state::{StateStore, StoreError, Write};
use serde_json::Value;
use siteflow_step::{CancellationToken, LogStream, StepContext, StepError, StepHost};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of step output kept in the event log per attempt (as the README promises): the
/// first half as it comes, the last half when the attempt ends, and between them a line
/// saying how many bytes were dropped.
const MAX_CAPTURE: usize = 256 * 1024;

/// What every step of one invocation shares: where its state goes and who hears of it.
pub(super) struct RunScope {
    /// The state store.
    pub store: StateStore,
    /// The lease fence every write of this invocation carries.
    pub fence: Write,
    /// The run's id.
    pub run_id: String,
    /// The site, if any.
    pub site: Option<String>,
    /// Where relative paths resolve.
    pub working_dir: PathBuf,
    /// Secret values to redact.
    pub redactor: Arc<Redactor>,
    /// Receives the run's events.
    pub observer: Arc<dyn RunObserver>,
    /// Cancels running attempts.
    pub abort: CancellationToken,
}

impl RunScope {
    /// A step context for instance `key` of `kind`, with a host of its own; `progress` is
    /// what an earlier invocation saved.
    pub fn step_context(
        &self,
        key: &str,
        kind: &str,
        attempt: u32,
        progress: Option<Value>,
    ) -> (StepContext, Arc<EngineHost>) {
        let host = Arc::new(EngineHost {
            store: self.store.clone(),
            fence: self.fence.clone(),
            run_id: self.run_id.clone(),
            key: key.to_string(),
            attempt: AtomicU32::new(attempt),
            redactor: self.redactor.clone(),
            observer: self.observer.clone(),
            capture: std::sync::Mutex::new(Capture::default()),
            progress: std::sync::Mutex::new(progress),
        });
        let cx = StepContext::new(
            self.run_id.clone(),
            self.site.clone(),
            key,
            kind.to_string(),
            attempt,
            self.working_dir.clone(),
            CancellationToken::new(),
            host.clone(),
        );
        (cx, host)
    }
}

/// `writes` behind the run's lease fence ([`Write::Fence`]).
pub(super) fn fenced(fence: &Write, mut writes: Vec<Write>) -> Vec<Write> {
    writes.insert(0, fence.clone());
    writes
}

/// The engine's side of a running step's context.
pub(super) struct EngineHost {
    store: StateStore,
    fence: Write,
    run_id: String,
    key: String,
    pub(super) attempt: AtomicU32,
    redactor: Arc<Redactor>,
    observer: Arc<dyn RunObserver>,
    capture: std::sync::Mutex<Capture>,
    progress: std::sync::Mutex<Option<Value>>,
}

/// One attempt's output budget: the head goes to the event log as it comes; the tail waits
/// in a window of at most half the budget until the attempt ends.
#[derive(Default)]
struct Capture {
    head: usize,
    tail: std::collections::VecDeque<(&'static str, String)>,
    tail_bytes: usize,
    dropped: u64,
}

impl Capture {
    /// Whether `line` is stored now; otherwise it joins the tail window (which may push
    /// older lines out).
    fn keep(&mut self, kind: &'static str, line: &str) -> bool {
        let len = line.len() + 1;
        if self.tail.is_empty() && self.dropped == 0 && self.head + len <= MAX_CAPTURE / 2 {
            self.head += len;
            return true;
        }
        self.tail.push_back((kind, line.to_string()));
        self.tail_bytes += len;
        while self.tail_bytes > MAX_CAPTURE / 2
            && let Some((_, old)) = self.tail.pop_front()
        {
            self.tail_bytes -= old.len() + 1;
            self.dropped += old.len() as u64 + 1;
        }
        false
    }

    /// The events still to store when the attempt ends: the marker of the dropped middle
    /// (if any) and the tail. The budget starts again.
    fn finish(&mut self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(self.tail.len() + 1);
        if self.dropped > 0 {
            out.push((
                "output",
                format!(
                    "[… {} bytes dropped: an attempt keeps the first and last {} KiB of its output …]",
                    self.dropped,
                    MAX_CAPTURE / 2 / 1024
                ),
            ));
        }
        out.extend(std::mem::take(&mut self.tail));
        *self = Capture::default();
        out
    }
}

impl EngineHost {
    /// Commits `write` behind the run's lease fence, in one transaction: a runner that lost
    /// its lease gets the permanent `LeaseLost` error and nothing is written.
    async fn write_fenced(&self, write: Write) -> Result<(), StepError> {
        self.store
            .write(&self.run_id, fenced(&self.fence, vec![write]))
            .await
            .map_err(|e| match e {
                StoreError::LeaseLost => StepError::permanent("LeaseLost", e.to_string()),
                e => StepError::retryable("StateStore", e.to_string()),
            })
    }

    /// Stores what the attempt's output budget held back (see [`Capture`]).
    pub(super) fn end_attempt(&self) {
        let rest = self
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish();
        if rest.is_empty() {
            return;
        }
        let attempt = Some(self.attempt.load(Ordering::Relaxed));
        let writes = rest
            .into_iter()
            .map(|(kind, message)| Write::Event {
                key: Some(self.key.clone()),
                attempt,
                kind,
                message,
            })
            .collect();
        self.store
            .write_later(&self.run_id, fenced(&self.fence, writes));
    }
}

#[async_trait::async_trait]
impl StepHost for EngineHost {
    fn log(&self, stream: LogStream, line: &str) {
        let line = self.redactor.redact(line);
        // Every kind's lines are bounded here too, not only those the built-in kinds cut.
        let line = siteflow_step::script::bounded_line(&line, 0).into_owned();
        let keep_now = {
            let mut c = self.capture.lock().unwrap_or_else(|e| e.into_inner());
            c.keep(stream.name(), &line)
        };
        if keep_now {
            self.store.write_later(
                &self.run_id,
                fenced(
                    &self.fence,
                    vec![Write::Event {
                        key: Some(self.key.clone()),
                        attempt: Some(self.attempt.load(Ordering::Relaxed)),
                        kind: stream.name(),
                        message: line.clone(),
                    }],
                ),
            );
        }
        self.observer.event(&RunEvent::Log {
            key: self.key.clone(),
            stream,
            line,
        });
    }

    fn progress(&self) -> Option<Value> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn save_progress(&self, progress: Value) -> Result<(), StepError> {
        let progress = self.redactor.redact_json(&progress);
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
        self.write_fenced(Write::Progress {
            key: self.key.clone(),
            progress,
        })
        .await
    }

    async fn run_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.store
            .run_value(&self.run_id, namespace, key)
            .await
            .map_err(|e| StepError::retryable("StateStore", e.to_string()))
    }

    async fn set_run_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        let value = self.redactor.redact_json(&value);
        self.write_fenced(Write::RunValue {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn shared_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.store
            .shared_value(namespace, key)
            .await
            .map_err(|e| StepError::retryable("StateStore", e.to_string()))
    }

    async fn set_shared_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        let value = self.redactor.redact_json(&value);
        self.write_fenced(Write::SharedValue {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        })
        .await
    }

    fn add_secret(&self, value: &str) {
        self.redactor.add(value);
    }
}
