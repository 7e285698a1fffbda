//! Scheduling: diamonds, `if` skips, `for_each` with `max_parallel`, `continue_on_error`.

mod support;

use support::Sandbox;

/// Parses `start X t` / `end X t` lines (t in ms) into intervals.
fn intervals(lines: &[String]) -> std::collections::BTreeMap<String, (u128, u128)> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        let p: Vec<&str> = l.split_whitespace().collect();
        let t: u128 = p[2].parse().unwrap();
        let e = m.entry(p[1].to_string()).or_insert((0, 0));
        if p[0] == "start" {
            e.0 = t;
        } else {
            e.1 = t;
        }
    }
    m
}

const STAMP: &str = r#"stamp() { echo "$1 $2 $(date +%s%3N)" >> "$LOG"; }"#;

#[test]
fn diamond_runs_branches_in_parallel_and_joins_after_both() {
    let sb = Sandbox::new();
    let step = |id: &str, needs: &str| {
        format!(
            "  - id: {id}\n    uses: shell\n    needs: [{needs}]\n    with:\n      env: {{ LOG: log.txt }}\n      run: |\n        {STAMP}\n        stamp start {id}; sleep 0.3; stamp end {id}\n"
        )
    };
    let wf = format!(
        "name: diamond\nsteps:\n{}{}{}{}",
        step("a", ""),
        step("b", "a"),
        step("c", "a"),
        step("d", "b, c")
    );
    sb.write("wf.yaml", &wf);
    let r = sb.run(&["run", "wf.yaml"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let iv = intervals(&sb.lines("log.txt"));
    assert_eq!(iv.len(), 4);
    assert!(
        iv["b"].0 >= iv["a"].1 && iv["c"].0 >= iv["a"].1,
        "b and c start after a ends: {iv:?}"
    );
    assert!(
        iv["d"].0 >= iv["b"].1 && iv["d"].0 >= iv["c"].1,
        "d starts after b and c: {iv:?}"
    );
    assert!(
        iv["b"].0 < iv["c"].1 && iv["c"].0 < iv["b"].1,
        "b and c overlap: {iv:?}"
    );
}

#[test]
fn if_false_skips_the_step_and_its_dependents_unless_they_decide() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: cond
inputs:
  arc: { type: boolean, default: false }
steps:
  - id: arc
    uses: shell
    if: ${{ inputs.arc }}
    with: { run: "echo arc >> log.txt" }
  - id: issuer
    uses: shell
    needs: [arc]
    with: { run: "echo issuer >> log.txt" }
  - id: report
    uses: shell
    needs: [arc]
    if: ${{ steps.arc.status == 'Skipped' }}
    with: { run: "echo report >> log.txt" }
"#,
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.json();
    let status = |id: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("arc"), "Skipped");
    assert_eq!(status("issuer"), "Skipped");
    assert_eq!(status("report"), "Succeeded");
    assert_eq!(sb.lines("log.txt"), vec!["report"]);

    let r = sb.run(&["run", "wf.yaml", "--set", "arc=true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.lines("log.txt"), vec!["report", "arc", "issuer"]);
}

#[test]
fn for_each_respects_max_parallel_and_exposes_item_outputs() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        &format!(
            r#"name: fan
inputs:
  n: {{ type: integer, default: 6 }}
steps:
  - id: items
    uses: shell
    for_each: ${{{{ range(inputs.n) | list }}}}
    max_parallel: 2
    with:
      env: {{ LOG: log.txt }}
      run: |
        {STAMP}
        stamp start i${{{{ item }}}}; sleep 0.2; stamp end i${{{{ item }}}}
        echo "square=$(( ${{{{ item }}}} * ${{{{ item }}}} ))" >> "$SITEFLOW_OUTPUT"
  - id: sum
    uses: shell
    with:
      run: echo "total=$(( ${{{{ steps.items.outputs | map(attribute='square') | map('int') | sum }}}} ))" >> "$SITEFLOW_OUTPUT"
"#
        ),
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let iv = intervals(&sb.lines("log.txt"));
    assert_eq!(iv.len(), 6);
    // Concurrency at every start instant.
    let max = iv
        .values()
        .map(|(s, _)| iv.values().filter(|(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap();
    assert_eq!(max, 2, "exactly max_parallel instances at once: {iv:?}");
    let doc = r.json();
    let sum = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "sum")
        .unwrap();
    assert_eq!(sum["outputs"]["total"], "55");
    let items: Vec<_> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().unwrap().starts_with("items["))
        .collect();
    assert_eq!(items.len(), 6);
}

#[test]
fn continue_on_error_lets_dependents_run_and_the_run_succeed() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: tolerant
steps:
  - id: flaky
    uses: shell
    continue_on_error: true
    with: { run: "echo boom >&2; exit 3" }
  - id: after
    uses: shell
    needs: [flaky]
    with: { run: "echo after >> log.txt" }
  - id: strict
    uses: shell
    with: { run: "exit 4" }
  - id: blocked
    uses: shell
    needs: [strict]
    with: { run: "echo blocked >> log.txt" }
  - id: independent
    uses: shell
    with: { run: "echo independent >> log.txt" }
"#,
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 1, "strict failed, so the run fails: {}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["status"], "Failed");
    let step = |id: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    };
    assert_eq!(step("flaky").unwrap()["status"], "Failed");
    assert_eq!(step("flaky").unwrap()["error"]["code"], "ExitStatus");
    assert!(
        step("flaky").unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom")
    );
    assert_eq!(step("after").unwrap()["status"], "Succeeded");
    assert!(
        step("blocked").is_none(),
        "a step whose need failed never starts"
    );
    let mut lines = sb.lines("log.txt");
    lines.sort();
    assert_eq!(lines, vec!["after", "independent"]);
}

#[test]
fn each_attempt_logs_under_its_own_number() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: retried
steps:
  - id: flaky
    uses: shell
    retry: { max_attempts: 3, initial_interval: 50ms }
    with:
      run: |
        echo "try $SITEFLOW_ATTEMPT"
        test "$SITEFLOW_ATTEMPT" -ge 3
"#,
    );
    let r = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["steps"][0]["attempts"], 3);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    let logs = sb.run(&["logs", &run, "--step", "flaky"]).stdout;
    for n in 1..=3 {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("#{n} stdout")) && l.ends_with(&format!("try {n}"))),
            "attempt {n} output under #{n}:\n{logs}"
        );
        assert!(
            logs.contains(&format!("#{n} started"))
                || logs.lines().any(|l| l.contains(&format!("#{n} "))
                    && l.contains(
                        "attempt {n} started"
                            .replace("{n}", &n.to_string())
                            .as_str()
                    )),
            "attempt {n} start shown:\n{logs}"
        );
    }
    assert!(logs.contains("retry"), "{logs}");
}
