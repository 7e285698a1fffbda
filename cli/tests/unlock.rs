//! `siteflow unlock` refuses to break a live runner's lease (issue #9, item 6): only a dead
//! holder's lease is broken, or a live one's with `--force`.

mod support;

use std::time::{Duration, Instant};
use support::Sandbox;

fn holder(sb: &Sandbox) -> Option<String> {
    let conn = rusqlite::Connection::open(sb.db()).ok()?;
    conn.query_row("SELECT lease_holder FROM runs LIMIT 1", [], |r| r.get(0))
        .ok()
        .flatten()
}

#[test]
fn unlock_refuses_a_live_holder_and_breaks_a_dead_ones() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "wf.yaml",
        "name: slow\nsteps:\n  - id: wait\n    uses: sleep\n    with: { duration: 30s }\n",
    );
    let mut child = sb.spawn(&["run", wf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder(&sb).is_none() {
        assert!(Instant::now() < deadline, "the run never took its lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = sb.last_run();
    let r = sb.run(&["unlock", &run]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("alive"), "{}", r.stderr);
    assert!(holder(&sb).is_some(), "the live lease was broken");

    // Dead: the lease is broken.
    child.kill().unwrap();
    child.wait().unwrap();
    let r = sb.run(&["unlock", "last"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("broke the lease"), "{}", r.stdout);
    assert!(holder(&sb).is_none());

    // --force breaks a live one.
    let mut child = sb.spawn(&["resume", &run]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder(&sb).is_none() {
        assert!(Instant::now() < deadline, "the resume never took the lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = sb.run(&["unlock", "--force", &run]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A runner that lost its lease (stopped past it, another runner took the run over) writes
/// nothing more once it continues and stops at once: the step after the one both ran is
/// run once, by the new holder.
#[test]
fn a_runner_that_lost_its_lease_stops_and_writes_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: fenced
steps:
  - id: a
    uses: shell
    with:
      run: |
        echo a-started >> log.txt
        for i in $(seq 600); do test -f go && break; sleep 0.05; done
        test -f go
  - id: b
    uses: shell
    needs: [a]
    with: { run: "echo b >> log.txt" }
"#,
    );
    let wait_for = |what: &str, n: usize| {
        let until = Instant::now() + Duration::from_secs(20);
        while sb.lines("log.txt").iter().filter(|l| *l == what).count() < n {
            assert!(Instant::now() < until, "timed out waiting for {what} x{n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let first = sb.spawn(&["run", "wf.yaml"]);
    let first_pid = Pid::from_raw(first.id() as i32);
    wait_for("a-started", 1);
    let run = sb.last_run();
    // Paused past its lease: another runner takes the run over.
    kill(first_pid, Signal::SIGSTOP).unwrap();
    let r = sb.run(&["unlock", "--force", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let second = sb.spawn(&["resume", &run]);
    wait_for("a-started", 2);
    std::fs::write(sb.path("go"), "").unwrap();
    let out = second.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first runner goes on: its `a` has finished meanwhile.
    kill(first_pid, Signal::SIGCONT).unwrap();
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("lost the run's lease"), "{stderr}");
    let b_runs = sb.lines("log.txt").iter().filter(|l| *l == "b").count();
    assert_eq!(b_runs, 1, "step b ran {b_runs} times");
    let doc = sb.run(&["runs", "show", &run, "--output", "json"]).json();
    assert_eq!(
        doc["status"], "Succeeded",
        "the old runner overwrote the run: {doc}"
    );
}
