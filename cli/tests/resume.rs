//! Resume, rerun, lease and secrets, driven through the real binary.

mod support;

use support::{Sandbox, counts};

const GATED: &str = r#"name: gated
steps:
  - id: a
    uses: shell
    with: { run: "echo a >> log.txt" }
  - id: b
    uses: shell
    needs: [a]
    with: { run: "echo b >> log.txt; echo value=42 >> $SITEFLOW_OUTPUT" }
  - id: side
    uses: shell
    with: { run: "echo side >> log.txt" }
  - id: gate
    uses: shell
    needs: [b]
    with: { run: "echo gate >> log.txt; test -f open" }
  - id: after
    uses: shell
    needs: [gate, side]
    with: { run: "echo after-${{ steps.b.outputs.value }} >> log.txt" }
"#;

#[test]
fn resume_finishes_without_redoing_what_succeeded() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", GATED);
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["status"], "Failed");

    // Still failing: resume fails again, and only the failed step re-runs.
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 1);

    std::fs::write(sb.path("open"), "").unwrap();
    let r = sb.run(&["resume", &run, "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "Succeeded");
    let c = counts(&sb.lines("log.txt"));
    assert_eq!(c["a"], 1);
    assert_eq!(c["b"], 1);
    assert_eq!(c["side"], 1);
    assert_eq!(c["gate"], 3, "the failed step ran once per invocation");
    assert_eq!(
        c["after-42"], 1,
        "outputs of b were reused from the state store"
    );
    let gate = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "gate")
        .unwrap();
    assert_eq!(gate["attempts"], 3);

    // A succeeded run resumes to nothing.
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 0);
    assert_eq!(sb.lines("log.txt").len(), 7);

    // rerun one step with its dependents.
    let r = sb.run(&["rerun", &run, "--step", "b", "--with-dependents"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = counts(&sb.lines("log.txt"));
    assert_eq!(
        (c["a"], c["b"], c["gate"], c["after-42"], c["side"]),
        (1, 2, 4, 2, 1)
    );
}

#[test]
fn resume_reload_reruns_changed_steps_and_dependents() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", GATED);
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    std::fs::write(sb.path("open"), "").unwrap();
    // Change b's script; without --reload the snapshot is used.
    sb.write("wf.yaml", &GATED.replace("value=42", "value=43"));
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(sb.lines("log.txt").contains(&"after-42".to_string()));
    let r = sb.run(&["resume", &run, "--reload"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = counts(&sb.lines("log.txt"));
    assert_eq!(c["a"], 1, "unchanged step is reused");
    assert_eq!(c["b"], 2, "changed step runs again");
    assert_eq!(
        c["after-43"], 1,
        "its dependents run again with the new output"
    );
    assert_eq!(c["side"], 1);
}

/// A step that ran again in this invocation with different outputs runs the steps whose
/// resolved input changed because of it; the others are reused.
#[test]
fn rerun_runs_the_dependents_whose_input_changed_and_reuses_the_rest() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: outputs
steps:
  - id: counter
    uses: shell
    with: { run: "echo n >> count.txt; echo n=$(wc -l < count.txt) >> $SITEFLOW_OUTPUT" }
  - id: reader
    uses: shell
    needs: [counter]
    with: { run: "echo reader-${{ steps.counter.outputs.n }} >> log.txt" }
  - id: plain
    uses: shell
    needs: [counter]
    with: { run: "echo plain >> log.txt" }
  - id: stable
    uses: shell
    with: { run: "echo v=1 >> $SITEFLOW_OUTPUT" }
  - id: stable-reader
    uses: shell
    needs: [stable]
    with: { run: "echo stable-${{ steps.stable.outputs.v }} >> log.txt" }
"#,
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    for step in ["counter", "stable"] {
        let r = sb.run(&["rerun", &run, "--step", step]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let c = counts(&sb.lines("log.txt"));
    assert_eq!(
        (c["reader-1"], c["reader-2"], c["plain"], c["stable-1"]),
        (1, 1, 1, 1),
        "reader ran again with n=2; plain and stable-reader (same input) were reused: {c:?}"
    );
}

#[test]
fn two_concurrent_resumes_one_proceeds_the_other_exits_3() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: held
steps:
  - id: gate
    uses: shell
    with: { run: "test -f open" }
  - id: slow
    uses: shell
    needs: [gate]
    with: { run: "sleep 1.5; echo slow >> log.txt" }
"#,
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 1);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    std::fs::write(sb.path("open"), "").unwrap();
    let a = sb.spawn(&["resume", &run]);
    let b = sb.spawn(&["resume", &run]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(
        codes,
        [0, 3],
        "a: {}\nb: {}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if a.status.code() == Some(3) { &a } else { &b };
    let msg = String::from_utf8_lossy(&loser.stderr);
    assert!(
        msg.contains("is held by") && msg.contains("siteflow unlock"),
        "{msg}"
    );
    assert_eq!(sb.lines("log.txt"), vec!["slow"]);
}

#[test]
fn secrets_appear_nowhere_persisted_or_shown() {
    const SECRET: &str = "s3cr3t-T0ken-Zq9";
    let sb = Sandbox::new();
    sb.write("token.txt", &format!("{SECRET}\n"));
    sb.write(
        "wf.yaml",
        r#"name: secretive
secrets:
  token: { env: API_TOKEN }
  from_file: { file: token.txt }
steps:
  - id: echo
    uses: shell
    with:
      env: { TOKEN: "${{ secrets.token }}" }
      run: |
        echo "token is $TOKEN"
        echo "tok=$TOKEN" >> "$SITEFLOW_OUTPUT"
  - id: use
    uses: shell
    with:
      run: |
        echo "file ${{ secrets.from_file }} and output ${{ steps.echo.outputs.tok }}"
        test "${{ steps.echo.outputs.tok }}" = "${{ secrets.from_file }}"
  - id: fails
    uses: shell
    needs: [use]
    with: { run: "echo \"bad ${{ secrets.token }}\" >&2; exit 1" }
"#,
    );
    let r = sb
        .command(&["run", "wf.yaml", "--output", "json"])
        .env("API_TOKEN", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let use_step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "use")
        .unwrap();
    assert_eq!(
        use_step["status"], "Succeeded",
        "the secret reached the step intact"
    );
    assert!(stdout.contains("[redacted]"));
    let run = doc["run_id"].as_str().unwrap().to_string();
    for out in [
        sb.run(&["logs", &run]),
        sb.run(&["runs", "show", &run, "--output", "json"]),
        sb.run(&["runs", "show", &run]),
    ] {
        assert!(
            !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
            "{}",
            out.stdout
        );
    }
    assert!(
        sb.run(&["logs", &run])
            .stdout
            .contains("token is [redacted]")
    );
    for (what, text) in [
        ("stdout", stdout.to_string()),
        ("stderr", stderr.to_string()),
    ] {
        assert!(!text.contains(SECRET), "secret in {what}: {text}");
    }
    for f in std::fs::read_dir(sb.path(".siteflow")).unwrap() {
        let f = f.unwrap().path();
        let bytes = std::fs::read(&f).unwrap();
        let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
        assert!(!found, "secret found in {}", f.display());
    }
}
