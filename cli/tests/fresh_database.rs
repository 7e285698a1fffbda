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

#[test]
fn reading_commands_and_a_missing_secret_never_create_a_database() {
    let sb = Sandbox::new();
    let r = sb.run(&["runs", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = sb.run(&["runs", "list", "--output", "json"]);
    assert_eq!(r.stdout.trim(), "[]");
    for args in [
        vec!["runs", "show", "last"],
        vec!["logs", "r1"],
        vec!["cancel", "r1"],
        vec!["unlock", "r1"],
        vec!["resume", "r1"],
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("no state database"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let wf = sb.write(
        "wf.yaml",
        "name: s\nsecrets:\n  tok: { env: SITEFLOW_TEST_NOT_SET }\nsteps:\n  - id: a\n    uses: noop\n",
    );
    let r = sb.run(&["run", wf.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("SITEFLOW_TEST_NOT_SET"), "{}", r.stderr);
    assert!(
        !sb.db().exists(),
        "a command that ran nothing created the database"
    );
    assert!(!sb.path(".siteflow").exists());
}

#[test]
fn scripts_run_from_private_files_whatever_the_umask_and_leftovers_go() {
    let sb = Sandbox::new();
    // What a killed runner (a pid that does not run) left behind.
    let stale = std::env::temp_dir().join("siteflow-step-4194000-leftover");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("step.sh"), "echo secret").unwrap();
    let wf = sb.write(
        "wf.yaml",
        "name: perms\nsteps:\n  - id: a\n    uses: shell\n    with:\n      run: |\n        echo \"dir=$(stat -c %a \"$(dirname \"$SITEFLOW_OUTPUT\")\")\" >> perms.txt\n        echo \"out=$(stat -c %a \"$SITEFLOW_OUTPUT\")\" >> perms.txt\n        echo \"script=$(stat -c %a \"$0\")\" >> perms.txt\n",
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "umask 022; exec {} run {}",
            env!("CARGO_BIN_EXE_siteflow"),
            wf.display()
        ))
        .current_dir(sb.dir.path())
        .env_remove("SITEFLOW_STATE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.read("perms.txt"), "dir=700\nout=600\nscript=600\n");
    assert!(
        !stale.exists(),
        "a dead runner's script dir was left in place"
    );
}

#[test]
fn skip_bridges_needs_and_set_lists_keep_yaml_1_1_words_as_strings() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "wf.yaml",
        "name: w\ninputs:\n  names: { type: array, default: [] }\nsteps:\n  - id: a\n    uses: noop\n  - id: b\n    uses: noop\n    needs: [a]\n  - id: c\n    uses: noop\n    needs: [b]\n",
    );
    let site = sb.write("site.yaml", "name: s\nsteps:\n  b: { skip: true }\n");
    let r = sb.run(&[
        "plan",
        wf.to_str().unwrap(),
        "--site",
        site.to_str().unwrap(),
        "--set",
        "names=[no, on, yes, NO]",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = r.json();
    assert_eq!(
        d["inputs"]["names"],
        serde_json::json!(["no", "on", "yes", "NO"])
    );
    // `c` needed the skipped `b`, so it now needs what `b` needed: it runs after `a`.
    assert_eq!(d["layers"], serde_json::json!([["a"], ["c"]]));
    let c = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "c")
        .unwrap();
    assert_eq!(c["needs"], serde_json::json!(["a"]));
}

/// Reading commands open the database read-only: on an older schema they neither migrate it
/// nor fail obscurely; they say which commands upgrade it. A writing command does, and
/// then they read.
#[test]
fn reading_commands_never_migrate_an_old_database() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", "name: tiny\nsteps:\n  - id: a\n    uses: noop\n");
    assert_eq!(sb.run(&["run", "wf.yaml"]).code, 0);
    let version = || -> i64 {
        let conn = rusqlite::Connection::open(sb.db()).unwrap();
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let current = version();
    {
        // The database as the previous schema left it: the newest migration (4) added
        // `runs.lease_generation` (a new migration changes this line).
        assert_eq!(current, 4, "undo the newest migration here");
        let conn = rusqlite::Connection::open(sb.db()).unwrap();
        conn.execute_batch(&format!(
            "ALTER TABLE runs DROP COLUMN lease_generation; PRAGMA user_version = {};",
            current - 1
        ))
        .unwrap();
    }
    for args in [
        vec!["runs", "list"],
        vec!["runs", "show", "last"],
        vec!["logs", "last"],
        vec!["hosts", "list"],
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "has schema version {}, older than this siteflow's {current}",
                current - 1
            )) && r.stderr.contains("upgrades it"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(version(), current - 1, "{args:?} migrated the database");
    }
    let run = sb.last_run();
    assert_eq!(sb.run(&["cancel", &run]).code, 0);
    assert_eq!(version(), current, "a writing command upgrades it");
    let r = sb.run(&["runs", "list", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()[0]["run_id"], run.as_str());
}
