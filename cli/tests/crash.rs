//! Crash safety: SIGKILL the runner at random moments; `resume` always completes, no step
//! recorded Succeeded runs again, and the database stays sound.
//!
//! Trials: `SITEFLOW_CRASH_TRIALS` (default 25).

mod support;

use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{Sandbox, counts};

/// ~30 shell steps: a fan-out of chains that join, each appending its id to a log.
fn workflow() -> String {
    let mut s = String::from(
        "name: crashy\nsteps:\n  - id: start\n    uses: shell\n    with: { run: \"echo start >> log.txt\" }\n",
    );
    for branch in 0..4 {
        for i in 0..7 {
            let id = format!("b{branch}s{i}");
            let need = if i == 0 {
                "start".to_string()
            } else {
                format!("b{branch}s{}", i - 1)
            };
            s.push_str(&format!(
                "  - id: {id}\n    uses: shell\n    needs: [{need}]\n    with: {{ run: \"echo {id} >> log.txt; sleep 0.06\" }}\n"
            ));
        }
    }
    s.push_str("  - id: join\n    uses: shell\n    needs: [b0s6, b1s6, b2s6, b3s6]\n    with: { run: \"echo join >> log.txt\" }\n");
    s
}

fn succeeded(db: &std::path::Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare("SELECT key FROM steps WHERE status = 'Succeeded'")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn sigkill_at_random_moments_then_resume() {
    let trials: usize = std::env::var("SITEFLOW_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let mut rng = rand::rng();
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let sb = Sandbox::new();
        sb.write("wf.yaml", &workflow());
        let mut child = sb.spawn(&["run", "wf.yaml"]);
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !sb.db().exists() || sb.run(&["runs", "list"]).stdout.lines().count() < 2 {
            continue; // killed before the run was created: nothing to resume
        }
        if !status.success() {
            killed_mid_run += 1;
        }
        let run = sb.last_run();
        let done_before = succeeded(&sb.db());
        let counts_before: BTreeMap<String, usize> = counts(&sb.lines("log.txt"));

        let r = sb.run(&["resume", &run, "--output", "json"]);
        assert_eq!(r.code, 0, "trial {trial}: resume failed: {}", r.stderr);
        assert_eq!(r.json()["status"], "Succeeded");

        let counts_after = counts(&sb.lines("log.txt"));
        for id in &done_before {
            assert_eq!(
                counts_after.get(id),
                counts_before.get(id),
                "trial {trial}: step {id} was Succeeded before the crash but ran again"
            );
        }
        assert_eq!(
            counts_after.len(),
            30,
            "trial {trial}: every step ran: {counts_after:?}"
        );
        let conn = rusqlite::Connection::open(sb.db()).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "trial {trial}");
        let running: i64 = conn
            .query_row(
                "SELECT count(*) FROM steps WHERE status != 'Succeeded'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(running, 0);
    }
    assert!(
        killed_mid_run >= trials / 2,
        "most trials must kill a run in flight ({killed_mid_run}/{trials})"
    );
}
