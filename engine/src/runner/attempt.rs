//! The attempt loop: one step instance's attempts (observe, apply, waits, timeouts,
//! retries), and the spawns that run it or re-observe a step's secret outputs.

use super::event::{RunEvent, RunObserver};
use super::host::{EngineHost, RunScope, fenced};
use super::scheduler::{AttemptSpawn, Completion, RecoverSpawn};
use crate::plan::PlannedStep;
use crate::redact::Redactor;
use crate::state::{AttemptOutcome, StateStore, Write};
use crate::telemetry;
use serde_json::Value;
use siteflow_step::{CancellationToken, DynStep, Observed, Progress, StepContext, StepError};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Bytes of a step's outputs (serialized) a run keeps; more fails the step. A script's
/// `$SITEFLOW_OUTPUT` has its own, smaller limit; this one holds for every kind.
const MAX_OUTPUTS: usize = 2 * 1024 * 1024;

/// Starts an instance's attempt loop on its own task; its end goes to `tx`.
pub(super) fn spawn_attempt(
    scope: &RunScope,
    step: &PlannedStep,
    kind: Option<Arc<dyn DynStep>>,
    s: AttemptSpawn,
    tx: mpsc::UnboundedSender<Completion>,
) {
    let Some(kind) = kind else {
        let _ = tx.send(Completion::Attempt {
            node: s.node,
            inst: s.inst,
            attempt: s.attempt,
            result: Err(StepError::permanent(
                "UnknownKind",
                format!("unknown step kind `{}`", step.spec.uses.value),
            )),
            satisfied: false,
        });
        return;
    };
    let (base, host) = scope.step_context(&s.key, &step.spec.uses.value, s.attempt, s.progress);
    let attempt_run = AttemptLoop {
        fence: scope.fence.clone(),
        host: host.clone(),
        kind,
        key: s.key,
        step_id: step.spec.id.value.clone(),
        kind_name: step.spec.uses.value.clone(),
        retry: step.retry.clone(),
        timeout: step.timeout,
        abort: scope.abort.clone(),
        store: scope.store.clone(),
        run_id: scope.run_id.clone(),
        site: scope.site.clone().unwrap_or_default(),
        observer: scope.observer.clone(),
        input_hash: s.input_hash,
        redactor: scope.redactor.clone(),
    };
    let make_cx = move |attempt: u32, cancel: CancellationToken, tp: Option<String>| {
        // Each attempt logs under its own number, with its own output budget (the
        // attempt loop ends each budget).
        host.attempt.store(attempt, Ordering::Relaxed);
        let mut cx = base.clone();
        cx.attempt = attempt;
        cx.cancel = cancel;
        cx.traceparent = tp;
        cx
    };
    let (node, inst, first, input) = (s.node, s.inst, s.attempt, s.input);
    tokio::spawn(
        async move {
            let (attempt, result, satisfied) = attempt_run.run(first, &input, make_cx).await;
            let _ = tx.send(Completion::Attempt {
                node,
                inst,
                attempt,
                result,
                satisfied,
            });
        }
        .in_current_span(),
    );
}

/// Observes again, on its own task, a succeeded instance whose secret outputs were not
/// persisted; `None` goes to `tx` when they cannot be recovered (the step runs again).
pub(super) fn spawn_recovery(
    scope: &RunScope,
    step: &PlannedStep,
    kind: Option<Arc<dyn DynStep>>,
    s: RecoverSpawn,
    tx: mpsc::UnboundedSender<Completion>,
) {
    let (node, inst) = (s.node, s.inst);
    let Some(kind) = kind else {
        let _ = tx.send(Completion::Recovered {
            node,
            inst,
            outputs: None,
        });
        return;
    };
    let (cx, host) = scope.step_context(&s.key, &step.spec.uses.value, 0, s.progress);
    let redactor = scope.redactor.clone();
    tokio::spawn(
        async move {
            let observed = kind.observe(&cx, &s.input).await;
            host.end_attempt();
            let outputs = match observed {
                Ok(Observed::Satisfied(v)) => Some(redactor.split_outputs(&v).0),
                _ => {
                    tracing::warn!(step = %s.key, "secret outputs could not be re-observed; the step runs again");
                    None
                }
            };
            let _ = tx.send(Completion::Recovered {
                node,
                inst,
                outputs,
            });
        }
        .in_current_span(),
    );
}

/// One step instance's attempts: observe, apply, waits, timeouts, retries.
struct AttemptLoop {
    kind: Arc<dyn DynStep>,
    fence: Write,
    host: Arc<EngineHost>,
    key: String,
    step_id: String,
    kind_name: String,
    retry: crate::retry::RetryPolicy,
    timeout: Option<Duration>,
    abort: CancellationToken,
    store: StateStore,
    run_id: String,
    site: String,
    observer: Arc<dyn RunObserver>,
    input_hash: String,
    redactor: Arc<Redactor>,
}

impl AttemptLoop {
    async fn run(
        self,
        first: u32,
        input: &Value,
        make_cx: impl Fn(u32, CancellationToken, Option<String>) -> StepContext,
    ) -> (u32, Result<Value, StepError>, bool) {
        let started = Instant::now();
        let mut attempt = first;
        loop {
            let span = tracing::info_span!(
                "siteflow.step",
                otel.name = format!("step {}", self.key),
                run.id = %self.run_id,
                site = %self.site,
                step.id = %self.key,
                step.kind = %self.kind_name,
                attempt = i64::from(attempt),
                outcome = tracing::field::Empty,
                error.code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let tp = telemetry::traceparent(&span);
            // The first attempt's Running row was committed by the scheduler (its span id
            // follows); later ones are committed here, before the side effect.
            if attempt == first
                && let Some(span_id) = telemetry::span_id(&span)
            {
                self.store.write_later(
                    &self.run_id,
                    fenced(
                        &self.fence,
                        vec![Write::AttemptSpan {
                            key: self.key.clone(),
                            attempt,
                            span_id,
                        }],
                    ),
                );
            }
            if attempt > first {
                let started = self
                    .store
                    .write_starts(
                        &self.run_id,
                        vec![
                            self.fence.clone(),
                            Write::StartGate,
                            Write::Started {
                                key: self.key.clone(),
                                step_id: self.step_id.clone(),
                                kind: self.kind_name.clone(),
                                attempt,
                                input_hash: self.input_hash.clone(),
                                span_id: telemetry::span_id(&span),
                            },
                        ],
                    )
                    .await;
                match started {
                    Ok(false) => {}
                    Ok(true) => {
                        return (
                            attempt - 1,
                            Err(StepError::cancelled("the run was cancelled")),
                            false,
                        );
                    }
                    Err(e) => {
                        return (
                            attempt,
                            Err(StepError::permanent("StateStore", e.to_string())),
                            false,
                        );
                    }
                }
            }
            self.observer.event(&RunEvent::Started {
                key: self.key.clone(),
                kind: self.kind_name.clone(),
                attempt,
            });
            let cancel = self.abort.child_token();
            let cx = make_cx(attempt, cancel.clone(), tp);
            let fut = self.once(&cx, input);
            let result = async {
                tokio::select! {
                    r = async {
                        match self.timeout {
                            Some(t) => match tokio::time::timeout(t, fut).await {
                                Ok(r) => r,
                                Err(_) => Err(StepError::retryable(
                                    "Timeout",
                                    format!("attempt timed out after {}", humantime::format_duration(t)),
                                )),
                            },
                            None => fut.await,
                        }
                    } => r,
                    _ = cancel.cancelled() => Err(StepError::cancelled("the run was cancelled")),
                }
            }
            .instrument(span.clone())
            .await
            // Error messages carry remote output: no secret may pass through them.
            .map_err(|mut e| {
                e.message = self.redactor.redact(&e.message).into_owned();
                e
            })
            .and_then(|(v, satisfied)| outputs_within_limit(v).map(|v| (v, satisfied)));
            cancel.cancel();
            self.host.end_attempt();
            match result {
                Ok((v, satisfied)) => {
                    let outcome = if satisfied {
                        AttemptOutcome::Satisfied
                    } else {
                        AttemptOutcome::Succeeded
                    };
                    span.record("outcome", outcome.as_str());
                    span.record("otel.status_code", "OK");
                    return (attempt, Ok(v), satisfied);
                }
                Err(e) => {
                    span.record("outcome", AttemptOutcome::Failed.as_str());
                    span.record("error.code", e.code.as_str());
                    span.record("otel.status_code", "ERROR");
                    let unit: f64 = rand::random();
                    let Some(delay) =
                        self.retry
                            .next_delay(&e, attempt - first + 1, started.elapsed(), unit)
                    else {
                        return (attempt, Err(e), false);
                    };
                    span.in_scope(|| {
                        tracing::info!(delay_ms = delay.as_millis() as i64, error.code = %e.code, "retry scheduled")
                    });
                    self.store.write_later(
                        &self.run_id,
                        fenced(
                            &self.fence,
                            vec![
                                Write::AttemptEnded {
                                    key: self.key.clone(),
                                    attempt,
                                    outcome: AttemptOutcome::Failed,
                                    error: Some(e.clone()),
                                },
                                Write::WaitingRetry {
                                    key: self.key.clone(),
                                    attempt,
                                    delay,
                                },
                            ],
                        ),
                    );
                    self.observer.event(&RunEvent::Retrying {
                        key: self.key.clone(),
                        attempt,
                        delay,
                        error: e.clone(),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abort.cancelled() => return (attempt, Err(StepError::cancelled("the run was cancelled")), false),
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: observe; apply until done, rechecking after each `Wait`.
    /// The input is deserialized and validated once for the whole attempt.
    async fn once(&self, cx: &StepContext, input: &Value) -> Result<(Value, bool), StepError> {
        let input = &self.kind.prepare(input)?;
        if let Observed::Satisfied(v) = self.kind.observe_prepared(cx, input).await? {
            return Ok((v, true));
        }
        loop {
            match self.kind.apply_prepared(cx, input).await? {
                Progress::Done(v) => return Ok((v, false)),
                Progress::Wait { recheck_after } => {
                    tracing::info!(recheck_ms = recheck_after.as_millis() as i64, "waiting");
                    self.observer.event(&RunEvent::Waiting {
                        key: self.key.clone(),
                        recheck_after,
                    });
                    tokio::time::sleep(recheck_after).await;
                    if let Observed::Satisfied(v) = self.kind.observe_prepared(cx, input).await? {
                        return Ok((v, false));
                    }
                }
            }
        }
    }
}

/// A step's outputs, unless they serialize to more than [`MAX_OUTPUTS`] bytes.
fn outputs_within_limit(v: Value) -> Result<Value, StepError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, &v);
    if n.0 > MAX_OUTPUTS {
        return Err(StepError::permanent(
            "OutputTooLarge",
            format!(
                "the step's outputs are {} bytes; the limit is {MAX_OUTPUTS} bytes (2 MiB): pass large data through a file",
                n.0
            ),
        ));
    }
    Ok(v)
}
