//! Step output is bounded while it streams: a huge line is cut as it is read, an attempt's
//! stored output keeps its first and last part with a marker of what was dropped, and a
//! `$SITEFLOW_OUTPUT` over its limit fails the step with an error naming the limit.

mod support;

use support::Sandbox;

/// The README's promise: up to 256 KiB of output per attempt (plus marker lines).
const PER_ATTEMPT: usize = 256 * 1024;

fn events(sb: &Sandbox, key: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let mut st = conn
        .prepare("SELECT kind, message FROM events WHERE step_key = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_20_mb_line_and_a_flood_of_lines_are_stored_bounded_and_the_run_goes_on() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: chatty
steps:
  - id: big
    uses: shell
    with:
      run: |
        echo first-line
        head -c 20000000 /dev/zero | tr '\0' x; echo
        for i in $(seq 6000); do echo "line $i ................................................................................"; done
        echo the-end
        echo "ok=1" >> "$SITEFLOW_OUTPUT"
  - id: after
    uses: shell
    with:
      run: test "${{ steps.big.outputs.ok }}" = 1 && echo after-ran
"#,
    );
    let out = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["status"], "Succeeded");
    let ev = events(&sb, "big");
    let stored: usize = ev.iter().map(|(_, m)| m.len() + 1).sum();
    assert!(
        stored <= PER_ATTEMPT + 1024,
        "stored {stored} bytes of output for one attempt"
    );
    let longest = ev.iter().map(|(_, m)| m.len()).max().unwrap();
    assert!(longest < 17 * 1024, "a stored line has {longest} bytes");
    let messages: Vec<&str> = ev.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(messages[0], "first-line", "the head is kept");
    assert_eq!(*messages.last().unwrap(), "the-end", "the tail is kept");
    assert!(
        messages[1].ends_with(&format!(
            "[… {} bytes of this line dropped …]",
            20_000_000 - 16 * 1024
        )),
        "the huge line is cut and says so: …{}",
        &messages[1][messages[1].len().saturating_sub(80)..]
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("[… ") && m.contains(" bytes dropped")),
        "no marker of the dropped middle"
    );
    // The `stdout` output is its own bounded tail (64 KiB).
    let big = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "big")
        .unwrap();
    assert!(big["outputs"]["stdout"].as_str().unwrap().len() <= 64 * 1024);
    assert!(events(&sb, "after").iter().any(|(_, m)| m == "after-ran"));
}

#[test]
fn an_output_file_over_the_limit_fails_the_step_naming_the_limit() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: big-output
steps:
  - id: big
    uses: shell
    with:
      run: |
        printf 'blob=' >> "$SITEFLOW_OUTPUT"
        head -c 3000000 /dev/zero | tr '\0' y >> "$SITEFLOW_OUTPUT"
        echo >> "$SITEFLOW_OUTPUT"
"#,
    );
    let out = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc = out.json();
    let step = &doc["steps"][0];
    assert_eq!(step["status"], "Failed");
    assert_eq!(step["error"]["code"], "OutputTooLarge");
    let msg = step["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("3000006 bytes") && msg.contains("1 MiB"),
        "{msg}"
    );
    // A permanent error: one attempt, no retries of a script that will write as much again.
    assert_eq!(step["attempts"], 1);
}
