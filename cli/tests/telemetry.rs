//! The real `siteflow` binary exports its spans over OTLP to a receiver started here:
//! a run that fails and its resume form one trace (the run's persisted trace id), with a
//! run span per invocation, a span per step attempt under it, retries as span events and
//! `TRACEPARENT` pointing at the attempt's span.

#[path = "common/otlp.rs"]
mod otlp;

use otlp::{Protocol, Receiver, Span};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKFLOW_NAME: &str = "telemetry-test";

/// `a` records its `TRACEPARENT`; `b` fails once and is retried; `c` fails until
/// `c.ready` exists (one attempt per invocation), so the first invocation fails.
const WORKFLOW: &str = r#"name: telemetry-test
steps:
  - id: a
    uses: shell
    with:
      run: echo "tp=$TRACEPARENT" >> "$SITEFLOW_OUTPUT"
  - id: b
    uses: shell
    needs: [a]
    retry:
      max_attempts: 2
      initial_interval: 100ms
    with:
      run: |
        if [ ! -f b.failed-once ]; then
          touch b.failed-once
          echo "b: the first attempt fails" >&2
          exit 3
        fi
        echo "b: ok"
  - id: c
    uses: shell
    needs: [b]
    retry:
      max_attempts: 1
    with:
      run: |
        test -f c.ready || { echo "c: not ready" >&2; exit 4; }
"#;

/// Bound on one `siteflow` invocation.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);
/// Bound on waiting for spans that are expected to arrive.
const SPAN_WAIT: Duration = Duration::from_secs(10);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary in `dir` with the OTLP exporter pointed at `receiver`; kills it after
/// `PROCESS_LIMIT`.
fn siteflow(dir: &Path, receiver: &Receiver, protocol: Protocol, args: &[&str]) -> Run {
    siteflow_with(dir, receiver, protocol, args, &[])
}

/// `siteflow run wf.yaml` in `dir`, exporting over OTLP/HTTP to a new receiver.
fn run_over_http(dir: &Path, vars: &[(&str, &str)]) -> (Run, Receiver) {
    let receiver = Receiver::start(Protocol::HttpProtobuf);
    let run = siteflow_with(
        dir,
        &receiver,
        Protocol::HttpProtobuf,
        &["run", "wf.yaml"],
        vars,
    );
    (run, receiver)
}

/// [`siteflow`] with more environment variables.
fn siteflow_with(
    dir: &Path,
    receiver: &Receiver,
    protocol: Protocol,
    args: &[&str],
    vars: &[(&str, &str)],
) -> Run {
    let state = dir.join("state.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_siteflow"))
        .arg("--state")
        .arg(&state)
        .args(args)
        .current_dir(dir)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.env_value())
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("SITEFLOW_STATE")
        .env_remove("SITEFLOW_WORKFLOWS")
        .env_remove("SITEFLOW_LOG")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start siteflow");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + PROCESS_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for siteflow") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "siteflow {args:?} did not finish within {PROCESS_LIMIT:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn json(run: &Run, what: &str) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} trace={} span={} parent={} status={} attrs={:?} events={:?}",
                s.name,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.status_code,
                s.attributes,
                s.events
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one span named `name` with `attempt` (when given) among `spans`.
fn one<'a>(spans: &'a [Span], name: &str, attempt: Option<i64>) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && (attempt.is_none() || s.num_attr("attempt") == attempt))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span `{name}` attempt {attempt:?}; spans:\n{}",
        describe(spans)
    );
    found[0]
}

const STATUS_OK: i32 = 1;
const STATUS_ERROR: i32 = 2;

/// Checks a step attempt span: name, parent, the run's attributes, outcome and status.
fn check_attempt(
    span: &Span,
    run_span: &Span,
    run_id: &str,
    step: &str,
    attempt: i64,
    outcome: &str,
    error_code: Option<&str>,
) {
    let ctx = format!("step {step} attempt {attempt}: {span:?}");
    assert_eq!(span.name, format!("step {step}"), "{ctx}");
    assert_eq!(
        span.parent_span_id, run_span.span_id,
        "parent is the run span; {ctx}"
    );
    assert_eq!(span.str_attr("run.id"), Some(run_id), "{ctx}");
    assert_eq!(span.str_attr("step.id"), Some(step), "{ctx}");
    assert_eq!(span.str_attr("step.kind"), Some("shell"), "{ctx}");
    assert_eq!(span.num_attr("attempt"), Some(attempt), "{ctx}");
    assert_eq!(span.str_attr("outcome"), Some(outcome), "{ctx}");
    assert_eq!(span.str_attr("error.code"), error_code, "{ctx}");
    let status = if error_code.is_some() {
        STATUS_ERROR
    } else {
        STATUS_OK
    };
    assert_eq!(span.status_code, status, "{ctx}");
    assert_eq!(span.service_name.as_deref(), Some("siteflow"), "{ctx}");
}

/// The persisted root span id of the run and the span id of each recorded attempt.
fn persisted_ids(state: &Path, run_id: &str) -> (String, Vec<(String, i64, Option<String>)>) {
    let db = rusqlite::Connection::open(state).expect("open the state db");
    let root: String = db
        .query_row(
            "SELECT root_span_id FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .expect("root_span_id");
    let mut q = db
        .prepare(
            "SELECT step_key, attempt, span_id FROM attempts WHERE run_id = ?1 ORDER BY step_key, attempt",
        )
        .expect("attempts query");
    let attempts = q
        .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("attempts")
        .collect::<Result<Vec<_>, _>>()
        .expect("attempt rows");
    (root, attempts)
}

fn run_and_resume_form_one_trace(protocol: Protocol) {
    let receiver = Receiver::start(protocol);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("wf.yaml"), WORKFLOW).expect("write the workflow");

    // 1. The run: a succeeds, b succeeds on its second attempt, c fails.
    let first = siteflow(
        dir,
        &receiver,
        protocol,
        &["run", "wf.yaml", "--output", "json"],
    );
    // Everything the first invocation exported was received before it exited.
    let at_exit = receiver.spans();
    assert_eq!(
        first.code,
        Some(1),
        "the run fails; stdout:\n{}\nstderr:\n{}",
        first.stdout,
        first.stderr
    );
    let doc = json(&first, "run");
    let run_id = doc["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(doc["status"], "Failed", "{doc}");

    let show = siteflow(
        dir,
        &receiver,
        protocol,
        &["runs", "show", &run_id, "--output", "json"],
    );
    assert_eq!(show.code, Some(0), "runs show: {}", show.stderr);
    let shown = json(&show, "runs show");
    let trace_id = shown["trace_id"].as_str().expect("trace_id").to_owned();
    assert_eq!(trace_id.len(), 32, "{shown}");
    assert_eq!(
        doc["trace_id"],
        trace_id.as_str(),
        "run output and runs show agree"
    );

    let first_spans = receiver.wait_for(SPAN_WAIT, |s| s.len() >= 5);
    assert_eq!(
        first_spans.len(),
        5,
        "the run exports a run span and 4 attempt spans (a, b×2, c); got:\n{}",
        describe(&first_spans)
    );
    assert_eq!(
        at_exit.len(),
        5,
        "the failed run's spans were all exported before the process exited; at exit:\n{}",
        describe(&at_exit)
    );

    // 2. The resume: only c runs (its second attempt), and succeeds.
    std::fs::write(dir.join("c.ready"), "").expect("create c.ready");
    let resumed = siteflow(
        dir,
        &receiver,
        protocol,
        &["resume", &run_id, "--output", "json"],
    );
    assert_eq!(
        resumed.code,
        Some(0),
        "the resume succeeds; stdout:\n{}\nstderr:\n{}",
        resumed.stdout,
        resumed.stderr
    );
    assert_eq!(json(&resumed, "resume")["status"], "Succeeded");
    let all = receiver.wait_for(SPAN_WAIT, |s| s.len() >= 7);
    assert_eq!(
        all.len(),
        7,
        "the resume exports a run span and c's attempt span; got:\n{}",
        describe(&all)
    );
    let second_spans = &all[5..];
    assert!(
        receiver.errors().is_empty(),
        "malformed export requests: {:?}",
        receiver.errors()
    );

    // Every span of both invocations is in the run's trace.
    for s in &all {
        assert_eq!(s.trace_id, trace_id, "span not in the run's trace:\n{s:?}");
    }

    let (root_span_id, attempts) = persisted_ids(&dir.join("state.db"), &run_id);
    let run_name = format!("run {WORKFLOW_NAME}");

    // The first invocation: its run span under the persisted root, attempts under it.
    let run1 = one(&first_spans, &run_name, None);
    assert_eq!(
        run1.parent_span_id, root_span_id,
        "run span's parent: {run1:?}"
    );
    assert_eq!(run1.str_attr("run.id"), Some(run_id.as_str()), "{run1:?}");
    assert_eq!(run1.str_attr("workflow"), Some(WORKFLOW_NAME), "{run1:?}");

    let a = one(&first_spans, "step a", Some(1));
    check_attempt(a, run1, &run_id, "a", 1, "succeeded", None);
    let b1 = one(&first_spans, "step b", Some(1));
    check_attempt(b1, run1, &run_id, "b", 1, "failed", Some("ExitStatus"));
    let b2 = one(&first_spans, "step b", Some(2));
    check_attempt(b2, run1, &run_id, "b", 2, "succeeded", None);
    let c1 = one(&first_spans, "step c", Some(1));
    check_attempt(c1, run1, &run_id, "c", 1, "failed", Some("ExitStatus"));

    // The retry of b is an event on its first attempt's span, and only there.
    let retry: Vec<_> = b1
        .events
        .iter()
        .filter(|e| e.name == "retry scheduled")
        .collect();
    assert_eq!(retry.len(), 1, "one retry event on b's attempt 1: {b1:?}");
    assert_eq!(
        retry[0]
            .attributes
            .get("error.code")
            .and_then(|v| v.as_str()),
        Some("ExitStatus"),
        "{:?}",
        retry[0]
    );
    assert!(
        retry[0]
            .attributes
            .get("delay_ms")
            .and_then(|v| v.as_num())
            .is_some(),
        "{:?}",
        retry[0]
    );
    for s in [a, b2, c1] {
        assert!(
            s.events.iter().all(|e| e.name != "retry scheduled"),
            "no retry event expected: {s:?}"
        );
    }

    // The second invocation: a new run span, same trace, same persisted parent.
    let run2 = one(second_spans, &run_name, None);
    assert_ne!(
        run2.span_id, run1.span_id,
        "each invocation has its own run span"
    );
    assert_eq!(
        run2.parent_span_id, root_span_id,
        "resume's run span: {run2:?}"
    );
    let c2 = one(second_spans, "step c", Some(2));
    check_attempt(c2, run2, &run_id, "c", 2, "succeeded", None);

    // The state store links each attempt to its exported span.
    let exported = |step: &str, attempt: i64| -> String {
        [a, b1, b2, c1, c2]
            .iter()
            .find(|s| s.str_attr("step.id") == Some(step) && s.num_attr("attempt") == Some(attempt))
            .map(|s| s.span_id.clone())
            .unwrap()
    };
    let expected: Vec<(String, i64, Option<String>)> =
        [("a", 1), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
            .iter()
            .map(|&(k, n)| (k.to_owned(), n, Some(exported(k, n))))
            .collect();
    assert_eq!(attempts, expected, "attempts.span_id in the state store");

    // `TRACEPARENT` given to a's script names a's attempt span.
    let show = siteflow(
        dir,
        &receiver,
        protocol,
        &["runs", "show", &run_id, "--output", "json"],
    );
    let shown = json(&show, "runs show");
    assert_eq!(shown["trace_id"], trace_id.as_str(), "the trace id stays");
    let step_a = shown["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == "a"))
        .unwrap_or_else(|| panic!("step a in {shown}"));
    assert_eq!(
        step_a["outputs"]["tp"].as_str(),
        Some(format!("00-{trace_id}-{}-01", a.span_id).as_str()),
        "{step_a}"
    );
    assert_eq!(receiver.spans().len(), 7, "runs show exports no spans");

    // The run span's status tells the invocation's outcome.
    assert_eq!(run1.status_code, STATUS_ERROR, "the run failed: {run1:?}");
    assert_eq!(
        run2.status_code, STATUS_OK,
        "the resume succeeded: {run2:?}"
    );
}

#[test]
fn otlp_http_run_and_resume_export_one_trace() {
    run_and_resume_form_one_trace(Protocol::HttpProtobuf);
}

#[test]
fn otlp_grpc_run_and_resume_export_one_trace() {
    run_and_resume_form_one_trace(Protocol::Grpc);
}

/// A secret read by a step, echoed to its output and put in its error message, reaches no
/// exported span, attribute or event.
#[test]
fn secrets_never_reach_exported_spans() {
    const SECRET: &str = "tr4ce-S3cret-value-81";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok.txt"), SECRET).unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"name: secret-spans
secrets:
  tok: { file: tok.txt }
steps:
  - id: leaky
    uses: shell
    retry: { max_attempts: 2, initial_interval: 50ms }
    with:
      run: |
        echo "the token is ${{ secrets.tok }}"
        echo "out=${{ secrets.tok }}" >> "$SITEFLOW_OUTPUT"
        echo "failing with ${{ secrets.tok }}" >&2
        exit 1
"#,
    )
    .unwrap();
    let (run, receiver) = run_over_http(dir.path(), &[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let spans = receiver.wait_for(Duration::from_secs(10), |s| s.len() >= 3);
    assert!(
        spans.len() >= 3,
        "run span and two attempts: {}",
        describe(&spans)
    );
    let all = format!("{spans:?}");
    assert!(!all.contains(SECRET), "secret found in exported spans");
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));
}

/// `OTEL_SERVICE_NAME` names the exported service; `OTEL_SDK_DISABLED=true` and
/// `OTEL_TRACES_EXPORTER=none` export nothing, whatever the endpoint says.
#[test]
fn the_standard_otel_variables_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        "name: otel-env\nsteps:\n  - id: a\n    uses: noop\n",
    )
    .unwrap();
    let (run, receiver) = run_over_http(dir.path(), &[("OTEL_SERVICE_NAME", "edge-controller")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let spans = receiver.wait_for(Duration::from_secs(10), |s| s.len() >= 2);
    assert!(spans.len() >= 2, "{}", describe(&spans));
    assert!(
        spans
            .iter()
            .all(|s| s.service_name.as_deref() == Some("edge-controller")),
        "{}",
        describe(&spans)
    );
    for off in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let (run, receiver) = run_over_http(dir.path(), &[off]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        // The exporter flushes before the process exits: nothing now means nothing at all.
        let spans = receiver.wait_for(Duration::from_millis(300), |s| !s.is_empty());
        assert!(spans.is_empty(), "{off:?}: {}", describe(&spans));
    }
}
