//! Snapshots of `plan`, `graph` and `--help`: what users read, reviewed on change.

mod support;

use support::Sandbox;

fn site_setup() -> Sandbox {
    let sb = Sandbox::new();
    sb.write(
        "workflows/edge.yaml",
        r#"name: edge
inputs:
  site: { type: string, required: true }
  agents: { type: integer, default: 1 }
secrets:
  token: { env: EDGE_TOKEN }
defaults:
  retry: { max_attempts: 3, initial_interval: 1s }
steps:
  - id: server
    uses: shell
    with: { run: "echo server ${{ inputs.site }}" }
  - id: agents
    uses: shell
    for_each: ${{ range(inputs.agents) | list }}
    with: { run: "echo join ${{ steps.server.outputs.exit_code }} ${{ item }}" }
  - id: flux
    uses: noop
    needs: [agents]
"#,
    );
    sb.write(
        "sites/edge-7.yaml",
        r#"name: edge-7
workflow: edge
inputs: { site: edge-7, agents: 2 }
steps:
  server:
    retry: { max_attempts: 5 }
    timeout: 10m
  flux: { skip: true }
  smoke:
    uses: shell
    needs: [agents]
    with: { run: "echo smoke" }
"#,
    );
    sb
}

#[test]
fn plan_shows_the_layered_workflow() {
    let sb = site_setup();
    let r = sb.run(&["plan", "--site", "sites/edge-7.yaml", "--set", "agents=3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    insta::assert_snapshot!(r.stdout);
}

#[test]
fn graph_mermaid_and_dot() {
    let sb = site_setup();
    let m = sb.run(&["graph", "--site", "sites/edge-7.yaml"]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    insta::assert_snapshot!("graph_mermaid", m.stdout);
    let d = sb.run(&["graph", "--site", "sites/edge-7.yaml", "--format", "dot"]);
    insta::assert_snapshot!("graph_dot", d.stdout);
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let sb = Sandbox::new();
    let r = sb.run(&["--help"]);
    assert_eq!(r.code, 0);
    insta::assert_snapshot!(r.stdout);
}

#[test]
fn steps_and_schema_describe_the_kinds() {
    let sb = Sandbox::new();
    let r = sb.run(&["steps"]);
    assert!(
        r.stdout.contains("shell") && r.stdout.contains("wait_until"),
        "{}",
        r.stdout
    );
    let r = sb.run(&["steps", "shell"]);
    assert!(r.stdout.contains("\"working_directory\""), "{}", r.stdout);
    let r = sb.run(&["steps", "nope"]);
    assert_eq!(r.code, 2);
    let schema = sb.run(&["schema"]).json();
    assert_eq!(
        schema["workflow"]["required"],
        serde_json::json!(["name", "steps"])
    );
    assert!(
        schema["workflow"]["$defs"]["StepDoc"]["allOf"]
            .as_array()
            .unwrap()
            .len()
            >= 4
    );
    let r = sb.run(&["completions", "bash"]);
    assert!(r.stdout.contains("siteflow"), "{}", r.stdout);
}
