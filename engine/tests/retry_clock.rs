//! Retry delays follow the policy, measured on a paused Tokio clock with a real store.

use serde::{Deserialize, Serialize};
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::StateStore;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Fails with the configured code until attempt `succeed_on`, recording when each attempt began.
struct Flaky {
    starts: Arc<Mutex<Vec<Instant>>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FlakyInput {
    succeed_on: u32,
    code: String,
    retry_after_ms: Option<u64>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct FlakyOutput {
    attempt: u32,
}

impl Step for Flaky {
    const KIND: &'static str = "test.flaky";
    type Input = FlakyInput;
    type Output = FlakyOutput;

    fn description(&self) -> &'static str {
        "fails until an attempt number"
    }

    async fn observe(
        &self,
        _: &StepContext,
        _: &FlakyInput,
    ) -> Result<Observed<FlakyOutput>, StepError> {
        Ok(Observed::missing())
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &FlakyInput,
    ) -> Result<Progress<FlakyOutput>, StepError> {
        self.starts.lock().unwrap().push(Instant::now());
        if cx.attempt >= input.succeed_on {
            return Ok(Progress::Done(FlakyOutput {
                attempt: cx.attempt,
            }));
        }
        let e = StepError::retryable(input.code.clone(), "not yet");
        Err(match input.retry_after_ms {
            Some(ms) => e.with_after(Duration::from_millis(ms)),
            None => e,
        })
    }
}

async fn run_flaky(yaml: &str) -> (RunStatus, Vec<Duration>, StateStore, String) {
    let dir = tempfile::tempdir().unwrap();
    let starts = Arc::new(Mutex::new(vec![]));
    let flaky: Arc<dyn siteflow_step::DynStep> = Arc::new(Flaky {
        starts: starts.clone(),
    });
    let registry = Arc::new(Registry::new().with(vec![flaky]));
    let sources = Sources {
        workflow: SourceText {
            path: "wf.yaml".into(),
            text: yaml.into(),
        },
        site: None,
        groups: vec![],
        sets: vec![],
    };
    let plan = compile(&sources, &registry).unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let opts = RunOptions {
        heartbeat: Duration::ZERO,
        working_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let runner = Runner::new(registry, store.clone(), opts, Arc::new(NoObserver));
    let out = runner.start(plan, sources).await.unwrap();
    let s = starts.lock().unwrap();
    let gaps = s.windows(2).map(|w| w[1] - w[0]).collect();
    std::mem::forget(dir);
    (out.status, gaps, store, out.run_id)
}

fn secs(d: &[Duration]) -> Vec<f64> {
    d.iter()
        .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delays_follow_exponential_backoff_with_cap() {
    let (status, gaps, store, run) = run_flaky(r#"
name: t
steps:
  - id: s
    uses: test.flaky
    with: { succeed_on: 5, code: Busy }
    retry: { max_attempts: 5, initial_interval: 2s, backoff_coefficient: 3, maximum_interval: 10s, jitter: 0 }
"#)
    .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(secs(&gaps), vec![2.0, 6.0, 10.0, 10.0]);
    let attempts = store.attempts(&run).await.unwrap();
    assert_eq!(attempts.len(), 5);
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.outcome.as_deref() == Some("failed"))
            .count(),
        4
    );
    assert_eq!(attempts[0].error_code.as_deref(), Some("Busy"));
}

#[tokio::test(start_paused = true)]
async fn retry_after_overrides_the_computed_delay() {
    let (status, gaps, ..) = run_flaky(
        r#"
name: t
steps:
  - id: s
    uses: test.flaky
    with: { succeed_on: 3, code: Throttled, retry_after_ms: 7500 }
    retry: { max_attempts: 3, initial_interval: 1s, jitter: 0 }
"#,
    )
    .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(secs(&gaps), vec![7.5, 7.5]);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_and_max_attempts_stop_retrying() {
    let (status, gaps, store, run) = run_flaky(
        r#"
name: t
steps:
  - id: s
    uses: test.flaky
    with: { succeed_on: 9, code: QuotaExceeded }
    retry: { max_attempts: 5, initial_interval: 1s, non_retryable_errors: [QuotaExceeded] }
"#,
    )
    .await;
    assert_eq!(status, RunStatus::Failed);
    assert!(
        gaps.is_empty(),
        "no retry after a non-retryable code: {gaps:?}"
    );
    let steps = store.steps(&run).await.unwrap();
    assert_eq!(steps[0].status, "Failed");
    assert_eq!(steps[0].error.as_ref().unwrap().code, "QuotaExceeded");

    let (status, gaps, ..) = run_flaky(
        r#"
name: t
steps:
  - id: s
    uses: test.flaky
    with: { succeed_on: 9, code: Busy }
    retry: { max_attempts: 3, initial_interval: 1s, backoff_coefficient: 2, jitter: 0 }
"#,
    )
    .await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(secs(&gaps), vec![1.0, 2.0]);
}

#[tokio::test(start_paused = true)]
async fn max_duration_bounds_the_whole_step() {
    let (status, gaps, ..) = run_flaky(r#"
name: t
steps:
  - id: s
    uses: test.flaky
    with: { succeed_on: 99, code: Busy }
    retry: { max_attempts: 50, initial_interval: 4s, backoff_coefficient: 1, jitter: 0, max_duration: 10s }
"#)
    .await;
    assert_eq!(status, RunStatus::Failed);
    // Attempts at 0 s, 4 s and 8 s; another would start at 12 s, past the 10 s bound.
    assert_eq!(secs(&gaps), vec![4.0, 4.0]);
}
