//! Group files: layers shared by many sites, between the workflow's defaults and the site file.

mod support;

use support::{Sandbox, counts};

const EDGE: &str = r#"name: edge
inputs:
  region: { type: string, default: nowhere }
  size: { type: string, default: small }
steps:
  - id: server
    uses: shell
    with: { run: "echo server-${{ inputs.region }}-${{ inputs.size }} >> log.txt" }
  - id: gate
    uses: shell
    needs: [server]
    with: { run: "test -f open" }
"#;

/// A group for Europe naming the workflow, adding a step; a site layering it.
fn setup() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("workflows/edge.yaml", EDGE);
    sb.write(
        "groups/europe.yaml",
        r#"workflow: edge
inputs: { region: europe, size: medium }
steps:
  after:
    uses: shell
    needs: [gate]
    with: { run: "echo after-${{ inputs.region }} >> log.txt" }
"#,
    );
    sb.write(
        "sites/edge-7.yaml",
        "name: edge-7\ngroups: [../groups/europe.yaml]\ninputs: { size: large }\n",
    );
    sb
}

#[test]
fn plan_shows_the_group_files_and_the_merged_inputs() {
    let sb = setup();
    let r = sb.run(&["plan", "--site", "sites/edge-7.yaml", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["workflow"], "edge", "the group names the workflow");
    assert_eq!(doc["site"], "edge-7");
    assert_eq!(
        doc["groups"],
        serde_json::json!(["sites/../groups/europe.yaml"])
    );
    assert_eq!(doc["inputs"]["region"], "europe");
    assert_eq!(doc["inputs"]["size"], "large", "the site file wins");
    let ids: Vec<&str> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["server", "gate", "after"]);
    let r = sb.run(&["validate", "sites/edge-7.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("(3 steps)"), "{}", r.stdout);
}

#[test]
fn a_resume_uses_the_group_files_as_they_were_unless_reloaded() {
    let sb = setup();
    let r = sb.run(&["run", "--site", "sites/edge-7.yaml", "--output", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let run = r.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(sb.lines("log.txt"), ["server-europe-large"]);

    // The group changes after the run started: a resume keeps the stored layers.
    let europe = sb.read("groups/europe.yaml");
    sb.write(
        "groups/europe.yaml",
        &europe.replace("region: europe", "region: nordics"),
    );
    std::fs::write(sb.path("open"), "").unwrap();
    let r = sb.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.lines("log.txt"), ["server-europe-large", "after-europe"]);

    // --reload reads the site file and its groups again: the steps whose input changed run.
    let r = sb.run(&["resume", &run, "--reload"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = counts(&sb.lines("log.txt"));
    assert_eq!(c.get("server-nordics-large"), Some(&1), "{c:?}");
    assert_eq!(c.get("after-nordics"), Some(&1), "{c:?}");
    assert_eq!(c.get("server-europe-large"), Some(&1), "{c:?}");
}

#[test]
fn a_bad_group_file_is_reported_in_that_file_and_nothing_is_stored() {
    let sb = setup();
    sb.write(
        "groups/europe.yaml",
        "workflow: edge\nname: europe\nsteps:\n  servr: { timeout: 5m }\n",
    );
    let r = sb.run(&["run", "--site", "sites/edge-7.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "error: a group file does not name the site\n  --> sites/../groups/europe.yaml:2:1"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(
            "error: group file customises step `servr`, which the workflow does not have\n  --> sites/../groups/europe.yaml:4:3"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("did you mean `server`?"), "{}", r.stderr);
    assert!(!sb.db().exists(), "nothing stored");

    // A missing group: the entry that names it.
    sb.write(
        "sites/edge-7.yaml",
        "groups: [../groups/europe.yaml, ../groups/retail.yaml]\n",
    );
    let r = sb.run(&["validate", "sites/edge-7.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "error: cannot read group file sites/../groups/retail.yaml: No such file or directory"
        ) && r.stderr.contains("  --> sites/edge-7.yaml:1:33"),
        "{}",
        r.stderr
    );
    assert!(!sb.db().exists());
}
