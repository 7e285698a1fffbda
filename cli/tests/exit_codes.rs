//! Exit codes: an error inside siteflow or its state is not "invalid input" (2); the user's
//! own mistakes are.

mod support;

use support::Sandbox;

#[test]
fn an_unreadable_stored_run_exits_1_not_2() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "wf.yaml",
        "name: w\nsteps:\n  - id: a\n    uses: shell\n    with: { run: 'exit 1' }\n",
    );
    assert_eq!(sb.run(&["run", wf.to_str().unwrap()]).code, 1);
    let run = sb.last_run();
    // A mistake of the user's is invalid input.
    let r = sb.run(&["rerun", &run, "--step", "nope"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    // Damage the stored sources: the run can no longer be read back.
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let n = conn
        .execute("UPDATE runs SET sources = 'not json' WHERE id = ?1", [&run])
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("unreadable sources"), "{}", r.stderr);
}
