//! Ctrl-C and `siteflow cancel`: the first stops scheduling and lets running steps finish
//! within the grace period, then cancels them; the run stays resumable.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use support::Sandbox;

const WF: &str = r#"name: interruptible
steps:
  - id: work
    uses: shell
    with:
      run: |
        echo started >> log.txt
        for i in $(seq 300); do test -f go && break; sleep 0.05; done
        test -f go
        echo work >> log.txt
  - id: next
    uses: shell
    needs: [work]
    with: { run: "echo next >> log.txt" }
"#;

fn wait_for(sb: &Sandbox, line: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !sb.lines("log.txt").iter().any(|l| l == line) {
        assert!(Instant::now() < until, "timed out waiting for {line}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_of(sb: &Sandbox, run: &str) -> serde_json::Value {
    sb.run(&["runs", "show", run, "--output", "json"]).json()
}

/// A process of nobody's step, in its own process group: cancelling a step must not touch it.
fn sentinel() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap()
}

#[test]
fn first_ctrl_c_drains_then_cancels_after_grace_and_resume_finishes() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", WF);
    let mut bystander = sentinel();
    let child = sb.spawn(&["run", "wf.yaml", "--grace", "1"]);
    wait_for(&sb, "started");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = sb.last_run();
    let doc = status_of(&sb, &run);
    assert_eq!(doc["status"], "Cancelled");
    let work = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "work")
        .unwrap();
    assert_eq!(work["status"], "Cancelled");
    assert_eq!(sb.lines("log.txt"), vec!["started"], "`next` never started");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "cancelling the step killed an unrelated process"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    std::fs::write(sb.path("go"), "").unwrap();
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        sb.lines("log.txt"),
        vec!["started", "started", "work", "next"]
    );
}

#[test]
fn running_step_finishes_within_grace_and_nothing_new_starts() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", WF);
    let child = sb.spawn(&["run", "wf.yaml", "--grace", "20"]);
    wait_for(&sb, "started");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(sb.path("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let doc = status_of(&sb, &sb.last_run());
    let status = |id: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["status"].clone())
    };
    assert_eq!(
        status("work").unwrap(),
        "Succeeded",
        "the running step was allowed to finish"
    );
    assert!(status("next").is_none(), "no new step starts after Ctrl-C");
    assert_eq!(doc["status"], "Cancelled");
}

#[test]
fn cancel_command_reaches_the_holder_through_the_state_store() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", WF);
    let child = sb
        .command(&["run", "wf.yaml", "--grace", "0"])
        .env("SITEFLOW_HEARTBEAT_MS", "100")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&sb, "started");
    let run = sb.last_run();
    let r = sb.run(&["cancel", &run]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("asked"), "{}", r.stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "a cancelled run exits 130, as an interrupted one does"
    );
    assert_eq!(status_of(&sb, &run)["status"], "Cancelled");
    // The lease was released: another runner may resume at once.
    std::fs::write(sb.path("go"), "").unwrap();
    assert_eq!(sb.run(&["resume", &run]).code, 0);
}

/// Attempt rows of a run (one per step start).
fn attempt_rows(sb: &Sandbox, run: &str) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let mut st = conn
        .prepare("SELECT step_key, attempt FROM attempts WHERE run_id = ?1 ORDER BY step_key")
        .unwrap();
    st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn no_step_starts_once_a_cancel_is_committed_and_the_run_exits_130() {
    // A long chain of short steps: before the fix, steps kept starting for a heartbeat
    // (5 s) after `siteflow cancel` returned.
    let mut wf = String::from("name: chain\nsteps:\n");
    for i in 0..400 {
        wf.push_str(&format!(
            "  - id: s{i}\n    uses: shell\n{}    with: {{ run: \"echo s{i} >> log.txt; sleep 0.02\" }}\n",
            if i == 0 {
                String::new()
            } else {
                format!("    needs: [s{}]\n", i - 1)
            }
        ));
    }
    let sb = Sandbox::new();
    sb.write("wf.yaml", &wf);
    let child = sb.spawn(&["run", "wf.yaml", "--grace", "0"]);
    wait_for(&sb, "s5");
    let run = sb.last_run();
    let r = sb.run(&["cancel", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The cancel is committed: every start from now on would be a row not yet here.
    let at_cancel = attempt_rows(&sb, &run);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = attempt_rows(&sb, &run);
    assert_eq!(
        after, at_cancel,
        "steps started after the cancel was committed"
    );
    assert!(after.len() < 400, "the chain ran to its end");
    let doc = status_of(&sb, &run);
    assert_eq!(doc["status"], "Cancelled");
    assert!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] != "Running"),
        "a step is left Running: {doc}"
    );
}

const SLEEPER: &str = r#"name: sleeper
steps:
  - id: nap
    uses: shell
    with:
      run: |
        sleep 300 &
        echo $! > sleep.pid
        echo started >> log.txt
        wait
"#;

/// Whether a process runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Runs SLEEPER, sends `signals` to siteflow (one by one), and checks the outcome: exit
/// 130, the step's `sleep` gone, the step's state committed as Cancelled.
fn stop_with(signals: &[Signal], grace: &str) {
    let sb = Sandbox::new();
    sb.write("wf.yaml", SLEEPER);
    let child = sb.spawn(&["run", "wf.yaml", "--grace", grace]);
    wait_for(&sb, "started");
    let sleep_pid: i32 = sb.read("sleep.pid").trim().parse().unwrap();
    assert!(alive(sleep_pid));
    for s in signals {
        kill(Pid::from_raw(child.id() as i32), *s).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    // Killed with its process group; bounded wait for the kernel to finish it.
    let until = Instant::now() + Duration::from_secs(5);
    while alive(sleep_pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(sleep_pid),
        "the step's sleep {sleep_pid} outlived siteflow"
    );
    let doc = status_of(&sb, &sb.last_run());
    assert_eq!(doc["status"], "Cancelled", "{doc}");
    assert_eq!(doc["steps"][0]["status"], "Cancelled", "{doc}");
}

#[test]
fn sigterm_drains_like_ctrl_c_kills_the_steps_process_group_and_commits_its_state() {
    stop_with(&[Signal::SIGTERM], "1");
}

#[test]
fn sighup_drains_like_ctrl_c_kills_the_steps_process_group_and_commits_its_state() {
    stop_with(&[Signal::SIGHUP], "1");
}

#[test]
fn a_second_ctrl_c_kills_the_steps_process_group_and_commits_its_state() {
    // The grace period (300 s) would outlast the test: only the second Ctrl-C ends it.
    stop_with(&[Signal::SIGINT, Signal::SIGINT], "300");
}
