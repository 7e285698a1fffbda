//! Validation: every problem of a broken file reported at once, with file, line and column,
//! exit code 2, and nothing written to the state store.

mod support;

use support::Sandbox;

fn validate(name: &str) -> String {
    let sb = Sandbox::new();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = sb
        .command(&[
            "--state",
            sb.db().to_str().unwrap(),
            "validate",
            &format!("invalid/{name}"),
        ])
        .current_dir(fixtures)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name} must be rejected with exit code 2"
    );
    assert!(
        !sb.db().exists(),
        "validation must not create the state database"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

macro_rules! corpus {
    ($($test:ident => $file:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            insta::assert_snapshot!(validate($file));
        }
    )*};
}

corpus! {
    typo_key => "typo_key.yaml",
    unknown_kind => "unknown_kind.yaml",
    cycle => "cycle.yaml",
    bad_reference => "bad_reference.yaml",
    duplicate_key => "duplicate_key.yaml",
    wrong_type => "wrong_type.yaml",
    missing_input => "missing_input.yaml",
    site_unknown_step => "site_unknown_step.yaml",
    bad_duration => "bad_duration.yaml",
}

#[test]
fn an_unknown_kind_far_from_all_lists_the_known_ones() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: x\nsteps:\n  - id: a\n    uses: frobnicate\n",
    );
    let r = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown step kind `frobnicate`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("known kinds: ")
            && r.stderr.contains("noop")
            && r.stderr.contains("shell"),
        "{}",
        r.stderr
    );
}

#[test]
fn valid_site_and_workflow_pass() {
    let sb = Sandbox::new();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = sb
        .command(&["validate", "valid/base.yaml"])
        .current_dir(fixtures)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: valid/base.yaml (2 steps)"));
}

#[test]
fn run_with_invalid_set_is_rejected_before_anything_is_stored() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: x\ninputs:\n  n: { type: integer, default: 1 }\nsteps:\n  - id: a\n    uses: noop\n",
    );
    let r = sb.run(&["run", "wf.yaml", "--set", "n=abc"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("input `n` must be an integer"),
        "{}",
        r.stderr
    );
    assert!(!sb.db().exists());
    let r = sb.run(&["run", "wf.yaml", "--set", "m=1"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown input `m`"), "{}", r.stderr);
}

/// Every workflow and example site shipped in `workflows/` validates.
#[test]
fn shipped_workflows_and_sites_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows");
    let mut files = vec![];
    for dir in [root.to_string(), format!("{root}/sites")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p.display().to_string());
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    // From the repository root, where site files find their workflow by name.
    let sb = Sandbox::new();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = sb
        .command(&args)
        .current_dir(format!("{root}/.."))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let ok = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(ok, files.len());
}

/// Expression errors are found by `validate` (and `run` stores nothing): an unknown filter,
/// an unclosed `${{`, and an expression known before the run whose type does not fit.
#[test]
fn expression_errors_are_found_before_the_run() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: exprs
inputs:
  name: { type: string, default: edge }
  count: { type: integer, default: 3 }
steps:
  - id: a
    uses: shell
    with: { run: "echo ${{ inputs.name | lenght }}" }
  - id: b
    uses: shell
    with: { run: "echo ${{ inputs.name" }
  - id: c
    uses: shell
    with: { run: "${{ 42 }}" }
  - id: d
    uses: shell
    with: { run: "${{ inputs.count }}" }
  - id: e
    uses: shell
    if: ${{ inputs.name is stringy }}
    with: { run: "echo ${{ inputs.name | upper }} ${{ steps.a.outputs.stdout }}" }
"#,
    );
    let r = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for (at, what) in [
        (
            "wf.yaml:8:18",
            "unknown filter `lenght`; did you mean `length`?",
        ),
        ("wf.yaml:11:18", "`${{` is not closed: add `}}`"),
        // At the value that has the wrong type (the expression), not its key.
        (
            "wf.yaml:14:18",
            "at `run`: invalid type: integer `42`, expected a string",
        ),
        (
            "wf.yaml:17:18",
            "at `run`: invalid type: integer `3`, expected a string",
        ),
        ("wf.yaml:20:9", "unknown test `stringy`"),
    ] {
        let block = r
            .stderr
            .split("\n\n")
            .find(|b| b.contains(what))
            .unwrap_or_else(|| panic!("no error `{what}`:\n{}", r.stderr));
        assert!(block.contains(at), "`{what}` not at {at}:\n{block}");
    }
    assert!(r.stderr.contains("5 errors found"), "{}", r.stderr);
    let r = sb.run(&["run", "wf.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!sb.db().exists(), "run stored something");
}

/// An input without a default is required: `run` without it exits 2 naming every missing
/// input and stores nothing; `validate` of the workflow alone says what a run needs.
#[test]
fn inputs_without_a_default_are_required_by_run() {
    let sb = Sandbox::new();
    let workflows = concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows");
    let r = sb.run(&["run", "--workflows", workflows, "k3s-cluster"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("required input `server_host` has no value"),
        "{}",
        r.stderr
    );
    assert!(!sb.db().exists(), "run stored something");

    sb.write(
        "wf.yaml",
        r#"name: needs
inputs:
  a: { type: string }
  b: { type: integer }
  c: { type: string, required: false }
  d: { type: string, default: x }
steps:
  - id: s
    uses: shell
    with: { run: "echo ${{ inputs.a }} ${{ inputs.b }} ${{ inputs.d }} > out.txt" }
"#,
    );
    let r = sb.run(&["run", "wf.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("required input `a` has no value"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("required input `b` has no value"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("input `c`") && !r.stderr.contains("input `d`"));
    assert!(!sb.db().exists(), "run stored something");
    let r = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("a run needs inputs: a, b"),
        "{}",
        r.stdout
    );
    let r = sb.run(&["run", "wf.yaml", "--set", "a=hi", "--set", "b=2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("out.txt"), "hi 2 x\n");
}
