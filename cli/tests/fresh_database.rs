//! Ten runs started at once on a database that does not exist yet all succeed: the schema
//! is created once, whoever comes first, and the others wait for it (issue #9, item 5).

mod support;

use support::Sandbox;

#[test]
fn ten_concurrent_runs_on_a_new_database_all_succeed() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "wf.yaml",
        "name: tiny\nsteps:\n  - id: a\n    uses: noop\n  - id: b\n    uses: noop\n    needs: [a]\n",
    );
    let wf = wf.to_str().unwrap().to_string();
    let children: Vec<_> = (0..10).map(|_| sb.spawn(&["run", &wf])).collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'Succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 10);
}
