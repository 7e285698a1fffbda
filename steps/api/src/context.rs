//! What a step sees of the run while it executes: identity, cancellation, log, progress.

use crate::StepError;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A message from the step itself.
    Info,
}

impl LogStream {
    /// `stdout`, `stderr` or `info`.
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Info => "info",
        }
    }
}

/// The engine's side of a step context: durable storage and the log.
#[async_trait::async_trait]
pub trait StepHost: Send + Sync {
    /// Records a line of the step's output (the engine redacts secrets and bounds size).
    fn log(&self, stream: LogStream, line: &str);
    /// The progress saved most recently (in this attempt, an earlier one, or an earlier run).
    fn progress(&self) -> Option<Value>;
    /// Durably records the step's progress (e.g. an operation's poll URL) before returning,
    /// so a resumed run continues the same operation.
    async fn save_progress(&self, progress: Value) -> Result<(), StepError>;
    /// Reads a run-scoped value saved by any step (e.g. a learned SSH host key).
    async fn run_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError>;
    /// Durably saves a run-scoped value.
    async fn set_run_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError>;
    /// Reads a value every run of the state database shares (e.g. SSH host keys learned by
    /// `accept-new`, like a known_hosts file). Hosts without such storage fall back to the run.
    async fn shared_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.run_value(namespace, key).await
    }
    /// Durably saves a shared value.
    async fn set_shared_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        self.set_run_value(namespace, key, value).await
    }
    /// Registers a value discovered at run time as secret, so the engine redacts it.
    fn add_secret(&self, value: &str);
}

/// A host that keeps nothing: no log, no progress, no values, no redaction. For unit tests
/// of steps and clients that need a [`StepContext`] but no engine.
pub struct NoopHost;

#[async_trait::async_trait]
impl StepHost for NoopHost {
    fn log(&self, _: LogStream, _: &str) {}
    fn progress(&self) -> Option<Value> {
        None
    }
    async fn save_progress(&self, _: Value) -> Result<(), StepError> {
        Ok(())
    }
    async fn run_value(&self, _: &str, _: &str) -> Result<Option<Value>, StepError> {
        Ok(None)
    }
    async fn set_run_value(&self, _: &str, _: &str, _: Value) -> Result<(), StepError> {
        Ok(())
    }
    fn add_secret(&self, _: &str) {}
}

/// Everything a step may know about the run it is part of.
#[derive(Clone)]
pub struct StepContext {
    /// The run's id.
    pub run_id: String,
    /// The site name, when the run has one.
    pub site: Option<String>,
    /// The step instance id (`agents[2]` for a `for_each` item).
    pub step_id: String,
    /// The step kind.
    pub kind: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// W3C `traceparent` of this attempt's span, to pass to child processes.
    pub traceparent: Option<String>,
    /// The directory relative paths resolve against (the invocation's working directory).
    pub working_dir: PathBuf,
    /// Cancelled when the attempt must stop (timeout, Ctrl-C, `siteflow cancel`).
    pub cancel: CancellationToken,
    host: Arc<dyn StepHost>,
}

impl StepContext {
    /// Builds a context; the engine (or a test) supplies the host.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: impl Into<String>,
        site: Option<String>,
        step_id: impl Into<String>,
        kind: impl Into<String>,
        attempt: u32,
        working_dir: PathBuf,
        cancel: CancellationToken,
        host: Arc<dyn StepHost>,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            site,
            step_id: step_id.into(),
            kind: kind.into(),
            attempt,
            traceparent: None,
            working_dir,
            cancel,
            host,
        }
    }

    /// Records a line of output.
    pub fn log(&self, stream: LogStream, line: &str) {
        self.host.log(stream, line);
    }

    /// Records an informational message.
    pub fn info(&self, message: &str) {
        self.host.log(LogStream::Info, message);
    }

    /// The progress saved most recently, if any (survives retries and resumes).
    pub fn progress(&self) -> Option<Value> {
        self.host.progress()
    }

    /// Durably saves progress for a later attempt or resume.
    pub async fn save_progress(&self, progress: Value) -> Result<(), StepError> {
        self.host.save_progress(progress).await
    }

    /// Reads a run-scoped value.
    pub async fn run_value(&self, namespace: &str, key: &str) -> Result<Option<Value>, StepError> {
        self.host.run_value(namespace, key).await
    }

    /// Durably saves a run-scoped value.
    pub async fn set_run_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        self.host.set_run_value(namespace, key, value).await
    }

    /// Reads a value shared by every run of the state database.
    pub async fn shared_value(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Value>, StepError> {
        self.host.shared_value(namespace, key).await
    }

    /// Durably saves a value shared by every run of the state database.
    pub async fn set_shared_value(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
    ) -> Result<(), StepError> {
        self.host.set_shared_value(namespace, key, value).await
    }

    /// Registers a run-time secret value for redaction.
    pub fn add_secret(&self, value: &str) {
        self.host.add_secret(value);
    }

    /// Resolves a path given in a step input against the working directory.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.working_dir.join(p)
        }
    }
}
