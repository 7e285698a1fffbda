//! What a run shows as it goes (issue #9, item 14): its id at the start, the attempt of a
//! retried step, one line per retry when stderr is not a terminal, and a failed step's last
//! stderr lines (redacted, the last few only) in the summary. The live countdown on a
//! terminal is tested beside the renderer (`progress::tests`), on paused time.

mod support;

use support::{Ran, Sandbox};

const WF: &str = r#"name: display
secrets:
  tok: { env: SF_TEST_TOKEN }
steps:
  - id: flaky
    uses: shell
    retry: { max_attempts: 2, initial_interval: 1s }
    with:
      run: |
        for i in $(seq -w 1 15); do echo "err-$i of ${{ secrets.tok }}" >&2; done
        exit 1
"#;

const TOKEN: &str = "display-s3cr3t";

#[test]
fn a_run_names_itself_counts_attempts_and_ends_with_the_failed_steps_stderr() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", WF);
    let secret = [("SF_TEST_TOKEN", TOKEN)];
    let Ran {
        code,
        stdout,
        stderr,
    } = sb.run_with_env(&["run", "wf.yaml"], &secret);
    assert_eq!(code, 1, "{stdout}{stderr}");

    // The first line names the run, as `runs list` does.
    let listed = sb.run(&["runs", "list", "--output", "json"]).json();
    let id = listed[0]["run_id"]
        .as_str()
        .expect("a listed run")
        .to_string();
    assert_eq!(
        stderr.lines().next(),
        Some(format!("run {id} started (resume with: siteflow resume {id})").as_str()),
        "{stderr}"
    );

    // Not a terminal: one line per retry, then the second attempt named.
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retrying in"))
        .collect();
    assert_eq!(retries.len(), 1, "{stderr}");
    assert!(
        retries[0].starts_with("[flaky] attempt 1 failed (ExitStatus: ")
            && retries[0].contains("); retrying in "),
        "{stderr}"
    );
    assert!(
        stderr.contains("[flaky] started shell (attempt 2)"),
        "{stderr}"
    );

    // The summary: the last ten stderr lines of the last attempt, secrets redacted.
    let header = "flaky: last stderr lines (attempt 2):";
    let tail: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let want: Vec<String> = (6..=15)
        .map(|i| format!("err-{i:02} of [redacted]"))
        .collect();
    assert_eq!(tail, want, "{stdout}");
    assert!(!stdout.contains("err-05"), "only the last lines: {stdout}");
    assert!(!stdout.contains(TOKEN), "{stdout}");
    assert!(
        stdout.contains(&format!("resume with: siteflow resume {id}")),
        "{stdout}"
    );

    // A resume names the run again.
    let again = sb.run_with_env(&["resume", &id], &secret);
    assert_eq!(
        again.stderr.lines().next(),
        Some(format!("run {id} resumed (resume with: siteflow resume {id})").as_str()),
        "{}",
        again.stderr
    );
}
