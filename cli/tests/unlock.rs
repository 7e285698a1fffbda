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
