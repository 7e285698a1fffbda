//! Every listing command speaks JSON with `--output json`: `steps`, `steps KIND`, `logs`,
//! `runs list`, `runs show`, `hosts list`.

mod support;

use support::Sandbox;

#[test]
fn steps_and_logs_list_as_json() {
    let sb = Sandbox::new();
    let kinds = sb.run(&["steps", "--output", "json"]);
    assert_eq!(kinds.code, 0, "{}", kinds.stderr);
    let kinds = kinds.json();
    let shell = kinds
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "shell")
        .expect("shell is listed");
    assert!(shell["description"].as_str().unwrap().contains("bash"));
    assert!(kinds.as_array().unwrap().len() >= 4);

    let one = sb.run(&["steps", "shell", "--output", "json"]).json();
    assert_eq!(one["kind"], "shell");
    assert!(
        one["input_schema"]["properties"]["run"].is_object(),
        "{one}"
    );
    assert!(one["output_schema"].is_object(), "{one}");
    let bad = sb.run(&["steps", "shel", "--output", "json"]);
    assert_eq!(bad.code, 2);

    sb.write(
        "wf.yaml",
        "name: w\nsteps:\n  - id: a\n    uses: shell\n    with: { run: echo hello-json }\n",
    );
    assert_eq!(sb.run(&["run", "wf.yaml"]).code, 0);
    let logs = sb.run(&["logs", "last", "--output", "json"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    let logs = logs.json();
    let entries = logs.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "stdout", "succeeded"], "{logs}");
    assert_eq!(entries[1]["message"], "hello-json");
    assert_eq!(entries[1]["step"], "a");
    assert_eq!(entries[1]["attempt"], 1);
    // The text form says the same.
    let text = sb.run(&["logs", "last"]);
    assert!(
        text.stdout.contains("[a] #1 stdout    hello-json"),
        "{}",
        text.stdout
    );

    for args in [
        vec!["runs", "list", "--output", "json"],
        vec!["runs", "show", "last", "--output", "json"],
        vec!["hosts", "list", "--output", "json"],
    ] {
        let r = sb.run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r.json();
    }
}
