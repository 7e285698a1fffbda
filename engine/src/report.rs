//! What a stored run looks like to its user: the run document, the step table, the
//! failed steps' last stderr lines, the closing summary and the log timeline.

use crate::state::{AttemptOutcome, RunStatus, StateStore, StepStatus, StoreError};
use serde_json::{Value, json};
use siteflow_step::LogStream;
use std::fmt::Write as _;
use std::time::Duration;

/// Stderr lines of a failed step shown in the summary: the last few of its last attempt.
const SUMMARY_STDERR_LINES: u32 = 10;
/// Characters of one such line shown (lines are stored up to 16 KiB).
const SUMMARY_LINE_CHARS: usize = 200;

/// A time (ms since the epoch) as RFC 3339 to the second.
pub fn timestamp(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The run as one JSON document (secrets redacted).
pub async fn run_document(store: &StateStore, run_id: &str) -> Result<Value, StoreError> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "id": s.key,
                "kind": s.kind,
                "status": s.status,
                "attempts": s.attempts,
                "outputs": s.outputs.as_ref().map(show_secrets),
                "error": s.error.as_ref().map(|e| json!({"class": e.class.name(), "code": e.code, "message": e.message})),
            })
        })
        .collect();
    Ok(json!({
        "run_id": run.id,
        "workflow": run.workflow,
        "site": run.site,
        "status": run.status,
        "trace_id": run.trace_id,
        "inputs": run.inputs,
        "steps": steps,
    }))
}

/// Persisted secret placeholders shown as `[redacted]`.
fn show_secrets(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key(siteflow_step::SECRET_MARKER) => {
            json!("[redacted]")
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), show_secrets(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(show_secrets).collect()),
        other => other.clone(),
    }
}

/// The text report at the end of a run: the step table, the failed steps' last stderr
/// lines, and a line with the run's status (and how to resume it).
pub async fn run_report(
    store: &StateStore,
    doc: &Value,
    status: RunStatus,
) -> Result<String, StoreError> {
    let mut out = step_table(doc);
    out.push_str(&failed_stderr(store, doc).await?);
    let run_id = doc["run_id"].as_str().unwrap_or_default();
    let hint = match status {
        RunStatus::Succeeded => String::new(),
        _ => format!(" — resume with: siteflow resume {run_id}"),
    };
    let _ = writeln!(out, "run {run_id} {}{hint}", status.as_str().to_lowercase());
    Ok(out)
}

/// The one-line header of `runs show`.
pub fn run_header(doc: &Value) -> String {
    format!(
        "run {}  workflow {}  site {}  status {}  trace {}\n",
        doc["run_id"].as_str().unwrap_or(""),
        doc["workflow"].as_str().unwrap_or(""),
        doc["site"].as_str().unwrap_or("-"),
        doc["status"].as_str().unwrap_or(""),
        doc["trace_id"].as_str().unwrap_or("")
    )
}

/// The steps of a run document as a table (one line each, first error line).
pub fn step_table(doc: &Value) -> String {
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    let w = steps
        .iter()
        .filter_map(|s| s["id"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<12}  {:>8}  ERROR\n",
        "STEP", "STATUS", "ATTEMPTS"
    );
    for s in steps {
        let err = s["error"]["message"].as_str().unwrap_or("");
        let err: String = err.lines().next().unwrap_or("").chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:<w$}  {:<12}  {:>8}  {}",
            s["id"].as_str().unwrap_or(""),
            s["status"].as_str().unwrap_or(""),
            s["attempts"].to_string(),
            err
        );
    }
    out
}

/// The last stderr lines of each failed step's last attempt, as the event log holds them
/// (secrets redacted).
async fn failed_stderr(store: &StateStore, doc: &Value) -> Result<String, StoreError> {
    let mut out = String::new();
    let run_id = doc["run_id"].as_str().unwrap_or_default();
    for s in doc["steps"].as_array().into_iter().flatten() {
        let (Some(key), Some(attempt)) = (s["id"].as_str(), s["attempts"].as_u64()) else {
            continue;
        };
        if s["status"] != StepStatus::Failed.as_str() || attempt == 0 {
            continue;
        }
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        let tail = store
            .log_tail(
                run_id,
                key,
                attempt,
                LogStream::Stderr,
                SUMMARY_STDERR_LINES,
            )
            .await?;
        if tail.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{key}: last stderr lines (attempt {attempt}):");
        for line in tail {
            let mut shown: String = line.chars().take(SUMMARY_LINE_CHARS).collect();
            if shown.len() < line.len() {
                shown.push('…');
            }
            let _ = writeln!(out, "  {shown}");
        }
    }
    Ok(out)
}

/// One line of a run's log timeline.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// When (ms).
    pub at: i64,
    /// Order among entries at the same time.
    order: i64,
    /// The step instance, or `run`.
    pub step: String,
    /// The attempt, if about one.
    pub attempt: Option<u32>,
    /// `started`, `succeeded`, `stdout`, `retry`, …
    pub kind: String,
    /// The text (secrets redacted).
    pub message: String,
}

/// A run's event log merged with its attempts' starts and plain successes (which live in
/// the attempts table), in time order; only `step` (and its items) when given.
pub async fn log_timeline(
    store: &StateStore,
    run: &str,
    step: Option<&str>,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut entries = vec![];
    for a in store.attempts(run).await? {
        let wanted =
            step.is_none_or(|s| a.step_key == s || a.step_key.starts_with(&format!("{s}[")));
        if !wanted {
            continue;
        }
        let (key, n) = (&a.step_key, a.attempt);
        entries.push(LogEntry {
            at: a.started_at,
            order: -2,
            step: key.clone(),
            attempt: Some(n),
            kind: "started".into(),
            message: format!("attempt {n} started"),
        });
        if let (
            Some(end),
            Some(outcome @ (AttemptOutcome::Succeeded | AttemptOutcome::Satisfied)),
        ) = (a.finished_at, a.outcome)
        {
            // On a tie (one commit ends a step and starts the next), the end comes first
            // (orders: events 2 × seq, an attempt's end after its own events, below).
            entries.push(LogEntry {
                at: end,
                order: -4,
                step: key.clone(),
                attempt: Some(n),
                kind: outcome.as_str().into(),
                message: format!("attempt {n} {outcome}"),
            });
        }
    }
    let events = store.events(run, step).await?;
    // An attempt's end comes after its own output, even within one millisecond.
    for end in entries.iter_mut().filter(|e| e.order == -4) {
        let last_own = events
            .iter()
            .filter(|e| {
                e.at == end.at
                    && e.step_key.as_deref() == Some(end.step.as_str())
                    && e.attempt == end.attempt
            })
            .map(|e| e.seq)
            .max();
        if let Some(seq) = last_own {
            end.order = seq * 2 + 1;
        }
    }
    for e in events {
        entries.push(LogEntry {
            at: e.at,
            order: e.seq * 2,
            step: e.step_key.unwrap_or_else(|| "run".into()),
            attempt: e.attempt,
            kind: e.kind,
            message: e.message,
        });
    }
    entries.sort_by_key(|e| (e.at, e.order));
    Ok(entries)
}

/// The timeline as JSON documents.
pub fn timeline_json(entries: &[LogEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({"at": timestamp(e.at), "step": e.step, "attempt": e.attempt,
                       "kind": e.kind, "message": e.message})
            })
            .collect(),
    )
}

/// The timeline as text, one line per message line.
pub fn timeline_text(entries: &[LogEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let att = e.attempt.map(|a| format!("#{a} ")).unwrap_or_default();
        for line in e.message.lines() {
            let _ = writeln!(
                out,
                "{} [{}] {att}{:<9} {line}",
                timestamp(e.at),
                e.step,
                e.kind
            );
        }
    }
    out
}
