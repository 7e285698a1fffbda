//! Secret outputs across a resume: a `$SITEFLOW_OUTPUT` value holding a secret (or a
//! transformed copy of one) is never stored in clear, and a resumed run recovers it (here
//! by running the producer again) instead of feeding the later step `[redacted]`.

mod support;

use support::Sandbox;

const TOKEN: &str = "s3cr3t-T0ken-value";

const WF: &str = r#"name: secret-outputs
secrets:
  tok: { env: SF_TEST_TOKEN }
steps:
  - id: a
    uses: shell
    with:
      run: |
        echo a >> log.txt
        echo "token=${{ secrets.tok }}" >> "$SITEFLOW_OUTPUT"
        echo "up=${{ secrets.tok | upper }}" >> "$SITEFLOW_OUTPUT"
        echo "rev=${{ secrets.tok | reverse }}" >> "$SITEFLOW_OUTPUT"
        echo "part=${{ secrets.tok[2:12] }}" >> "$SITEFLOW_OUTPUT"
  - id: b
    uses: shell
    with:
      env: { T: "${{ steps.a.outputs.token }}", U: "${{ steps.a.outputs.up }}" }
      run: |
        echo "$T $U" > got.txt
        test -f ok
"#;

/// The token and the copies of it the workflows make: upper case, reversed, a slice.
fn copies() -> [String; 4] {
    [
        TOKEN.to_string(),
        TOKEN.to_uppercase(),
        TOKEN.chars().rev().collect(),
        TOKEN[2..12].to_string(),
    ]
}

/// Every file of the state directory (database, WAL) holds none of the values.
fn assert_nothing_in_clear(sb: &Sandbox) {
    assert_none_stored(sb, &copies());
}

fn assert_none_stored(sb: &Sandbox, forbidden: &[String]) {
    for e in std::fs::read_dir(sb.path(".siteflow")).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        for f in forbidden {
            assert!(
                !bytes.windows(f.len()).any(|w| w == f.as_bytes()),
                "{} holds `{f}` in clear",
                p.display()
            );
        }
    }
}

#[test]
fn a_secret_output_survives_a_resume_and_is_never_stored() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", WF);
    let run = |args: &[&str]| {
        let out = sb
            .command(args)
            .env("SF_TEST_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, _) = run(&["run", "wf.yaml"]);
    assert_eq!(code, Some(1), "b fails the first time");
    assert_eq!(
        sb.read("got.txt"),
        format!("{TOKEN} {}\n", TOKEN.to_uppercase())
    );
    assert_nothing_in_clear(&sb);
    let id = sb.last_run();
    let shown = sb.run(&["runs", "show", &id, "--output", "json"]).json();
    let a = &shown["steps"][0];
    assert_eq!(a["id"], "a");
    for k in ["token", "up", "rev", "part"] {
        assert_eq!(a["outputs"][k], "[redacted]", "{a}");
    }

    std::fs::write(sb.path("ok"), "").unwrap();
    std::fs::remove_file(sb.path("got.txt")).unwrap();
    let (code, out) = run(&["resume", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        sb.read("got.txt"),
        format!("{TOKEN} {}\n", TOKEN.to_uppercase()),
        "b got the secret, not a placeholder"
    );
    // `a` cannot be observed (no `check`), so it ran again to recover its outputs.
    assert_eq!(sb.lines("log.txt"), ["a", "a"]);
    assert_nothing_in_clear(&sb);
}

/// Copies of a secret a step prints or outputs: those made by expressions (`upper`,
/// `reverse`, a slice) are recognised, in stdout as in `$SITEFLOW_OUTPUT`; one the script
/// makes itself (`rev`, `tr`) cannot be, so the step lists it in `secret_outputs`, and it
/// is then never stored either, while a later step still receives the value.
#[test]
fn transformed_copies_of_a_secret_are_never_stored() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        r#"name: transformed
secrets:
  tok: { env: SF_TEST_TOKEN }
steps:
  - id: copier
    uses: shell
    with:
      env: { TOK: "${{ secrets.tok }}" }
      secret_outputs: [shell_rev, pin]
      run: |
        echo "printed ${{ secrets.tok | upper }} and ${{ secrets.tok | reverse }}"
        echo "part ${{ secrets.tok[2:12] }}"
        echo "shell_rev=$(printf %s "$TOK" | rev | tr a-z A-Z)" >> "$SITEFLOW_OUTPUT"
        echo "pin=$(printf %s "$TOK" | cut -c1-3 | rev)" >> "$SITEFLOW_OUTPUT"
        echo "plain=not secret" >> "$SITEFLOW_OUTPUT"
  - id: b
    uses: shell
    with:
      env: { R: "${{ steps.copier.outputs.shell_rev }}", P: "${{ steps.copier.outputs.pin }}" }
      run: echo "$R $P" > got.txt
"#,
    );
    let r = sb.run_with_env(
        &["run", "wf.yaml", "--output", "json"],
        &[("SF_TEST_TOKEN", TOKEN)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let shell_rev: String = TOKEN.chars().rev().collect::<String>().to_uppercase();
    let pin: String = TOKEN[..3].chars().rev().collect();
    assert_eq!(sb.read("got.txt"), format!("{shell_rev} {pin}\n"));

    let mut forbidden = copies().to_vec();
    forbidden.push(shell_rev);
    assert_none_stored(&sb, &forbidden);
    // The 3-byte copy is too short to search for in text, but as an output it is a secret.
    let doc = r.json();
    assert_eq!(doc["steps"][0]["id"], "copier");
    let a = &doc["steps"][0]["outputs"];
    assert_eq!(a["shell_rev"], "[redacted]", "{a}");
    assert_eq!(a["pin"], "[redacted]", "{a}");
    assert_eq!(a["plain"], "not secret", "{a}");
    assert_eq!(a["stdout"], "[redacted]", "stdout holds copies: {a}");
    let logs = sb.run(&["logs", &sb.last_run()]);
    assert!(
        logs.stdout.contains("printed [redacted] and [redacted]"),
        "{}",
        logs.stdout
    );
}
