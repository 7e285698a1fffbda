//! Expressions are bounded in size and work: a bomb fails its step (or validation) at once
//! with an error naming where the expression is and the limit, not gigabytes of memory.

mod support;

use support::Sandbox;

#[test]
fn a_join_bomb_fails_its_step_naming_the_step_field_and_limit() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: bomb
steps:
  - id: big
    uses: shell
    with:
      run: echo ${{ range(100000) | map("string") | join("x" * 10000) }}
"#,
    );
    let out = sb.run(&["run", "wf.yaml", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let step = &out.json()["steps"][0];
    assert_eq!(step["status"], "Failed");
    assert_eq!(step["error"]["code"], "ExpressionError");
    let msg = step["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("`with` of step `big`: at `run`: in `echo ${{ range(100000)"),
        "{msg}"
    );
    assert!(msg.contains("the limit is 10000"), "{msg}");
}

#[test]
fn a_huge_literal_repetition_is_rejected_by_validate_with_its_location() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: bomb
steps:
  - id: big
    uses: shell
    with:
      run: echo ${{ "x" * 100000000 ~ "y" }}
"#,
    );
    let out = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("wf.yaml:6:"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("repeating a string 100000000 times makes 100000000 bytes"),
        "{}",
        out.stderr
    );
    assert!(!sb.db().exists(), "validate stores nothing");
}
