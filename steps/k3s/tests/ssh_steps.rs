//! `ssh.exec` and `ssh.upload` against a real OpenSSH test host: `check`, sudo (and a
//! password-sudo user refused cleanly), `$SITEFLOW_OUTPUT`, a value with quotes, `$` and
//! newlines arriving intact, `accept-new` learning into the run state, and uploads with
//! mode and owner that are satisfied afterwards.

mod support;

use serde_json::{Value, json};
use siteflow_step::{DynStep, ErrorClass, Observed, Progress};
use siteflow_testhosts::TestNet;
use std::sync::Arc;
use support::{MemHost, bounded, context};

fn kind(name: &str) -> Arc<dyn DynStep> {
    siteflow_ssh::steps(siteflow_ssh::steps::StepPool::new())
        .into_iter()
        .find(|s| s.kind() == name)
        .unwrap()
}

fn ssh(net: &TestNet, user: &str, sudo: bool) -> Value {
    let h = net.host(0);
    json!({
        "host": h.ip.to_string(),
        "user": user,
        "private_key_file": net.client_key_path,
        "host_key": "pinned",
        "host_key_fingerprint": h.host_key_fingerprint,
        "sudo": sudo,
    })
}

const AWKWARD: &str = "it's \"quoted\" $HOME `id` $(id) \\ back\nsecond line\n\ttab";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_check_sudo_outputs_and_awkward_values() {
    bounded(90, async {
        let net = TestNet::new(1).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(MemHost::default());
        let cx = context(host.clone(), dir.path());
        let exec = kind("ssh.exec");

        let input = json!({
            "ssh": ssh(&net, "azureuser", false),
            "env": {"VALUE": AWKWARD},
            "check": "test -f \"$HOME/done\" && echo marker=found >> \"$SITEFLOW_OUTPUT\"",
            "run": "printf '%s' \"$VALUE\" > \"$HOME/value\"\nprintf '%s' \"$VALUE\"\n\
                    echo \"len=${#VALUE}\" >> \"$SITEFLOW_OUTPUT\"\necho \"user=$(id -un)\" >> \"$SITEFLOW_OUTPUT\"\n\
                    touch \"$HOME/done\"",
        });
        exec.check_input(&input).unwrap();
        assert!(matches!(
            exec.observe(&cx, &input).await.unwrap(),
            Observed::NotSatisfied { .. }
        ));
        let Progress::Done(out) = exec.apply(&cx, &input).await.unwrap() else {
            panic!("not done")
        };
        assert_eq!(out["exit_code"], 0);
        assert_eq!(out["stdout"], AWKWARD);
        assert_eq!(out["len"], AWKWARD.chars().count().to_string());
        assert_eq!(out["user"], "azureuser");
        let written = net.host(0).read_file("/home/azureuser/value").await.unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), AWKWARD);
        // The value never reached the log as an output line, and the marker is not in stdout.
        let lines = host.lines.lock().unwrap().clone();
        assert!(!lines.iter().any(|(_, l)| l.contains("siteflow-output")), "{lines:?}");
        // Now the check says done, with its own outputs.
        match exec.observe(&cx, &input).await.unwrap() {
            Observed::Satisfied(o) => assert_eq!(o["marker"], "found"),
            other => panic!("{other:?}"),
        }

        // sudo as the passwordless user.
        let root = json!({"ssh": ssh(&net, "azureuser", true), "run": "id -u"});
        let Progress::Done(out) = exec.apply(&cx, &root).await.unwrap() else {
            panic!()
        };
        assert_eq!(out["stdout"], "0\n");
        // sudo as the user that needs a password: refused at once, permanently.
        let ops = json!({"ssh": ssh(&net, "opsuser", true), "run": "id -u"});
        let err = exec.apply(&cx, &ops).await.unwrap_err();
        assert_eq!(err.code, "SudoPasswordRequired", "{err:?}");
        assert_eq!(err.class, ErrorClass::Permanent);
        // A failing script is a retryable ExitStatus.
        let fail = json!({"ssh": ssh(&net, "azureuser", false), "run": "echo about to fail; exit 3"});
        let err = exec.apply(&cx, &fail).await.unwrap_err();
        assert_eq!(err.code, "ExitStatus");
        assert!(err.message.contains("status 3"), "{err:?}");
        // pinned without a fingerprint is caught at validation.
        let bad = json!({"ssh": {"host": "h", "user": "u", "host_key": "pinned"}, "run": "true"});
        assert!(exec.check_input(&bad).is_err());

        // accept-new: the first connection learns the key into the run state.
        let learn = json!({
            "ssh": {"host": net.host(0).ip.to_string(), "user": "azureuser",
                    "private_key_file": net.client_key_path, "host_key": "accept-new"},
            "run": "true"
        });
        exec.apply(&cx, &learn).await.unwrap();
        let values = host.values.lock().unwrap().clone();
        assert!(
            values.keys().any(|k| k.starts_with("ssh.host_keys/")),
            "{values:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_mode_and_owner_is_idempotent() {
    bounded(90, async {
        let net = TestNet::new(1).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local.txt"), AWKWARD).unwrap();
        let host = Arc::new(MemHost::default());
        let cx = context(host.clone(), dir.path());
        let upload = kind("ssh.upload");
        let input = json!({
            "ssh": ssh(&net, "azureuser", true),
            "files": [
                {"path": "/etc/siteflow-test.conf", "content": "a: 1\n", "mode": "0640", "owner": "root:root"},
                {"path": "/home/azureuser/copied.txt", "source": "local.txt", "mode": "0600", "owner": "azureuser:azureuser"}
            ]
        });
        upload.check_input(&input).unwrap();
        assert!(matches!(
            upload.observe(&cx, &input).await.unwrap(),
            Observed::NotSatisfied { .. }
        ));
        let Progress::Done(out) = upload.apply(&cx, &input).await.unwrap() else {
            panic!()
        };
        assert_eq!(out["files"][1], "/home/azureuser/copied.txt");
        let st = net
            .host(0)
            .exec_local_ok("stat -c '%a %U:%G' /etc/siteflow-test.conf /home/azureuser/copied.txt")
            .await
            .unwrap();
        assert_eq!(st, "640 root:root\n600 azureuser:azureuser\n");
        let copied = net.host(0).read_file("/home/azureuser/copied.txt").await.unwrap();
        assert_eq!(String::from_utf8(copied).unwrap(), AWKWARD);
        assert!(matches!(
            upload.observe(&cx, &input).await.unwrap(),
            Observed::Satisfied(_)
        ));
        // A drifted mode is noticed.
        net.host(0)
            .exec_local_ok("chmod 0644 /etc/siteflow-test.conf")
            .await
            .unwrap();
        assert!(matches!(
            upload.observe(&cx, &input).await.unwrap(),
            Observed::NotSatisfied { .. }
        ));
        // Exactly one of content and source.
        let both = json!({"ssh": ssh(&net, "azureuser", true),
            "files": [{"path": "/x", "content": "a", "source": "b"}]});
        assert!(upload.check_input(&both).is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_through_a_jump_host() {
    bounded(60, async {
        let net = TestNet::new(2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cx = context(Arc::new(MemHost::default()), dir.path());
        let (jump, target) = (net.host(0), net.host(1));
        let input = json!({
            "ssh": {
                "host": target.ip.to_string(), "user": "azureuser",
                "private_key_file": net.client_key_path,
                "host_key": "pinned", "host_key_fingerprint": target.host_key_fingerprint,
                "jump": {
                    "host": jump.ip.to_string(), "user": "azureuser",
                    "private_key_file": net.client_key_path,
                    "host_key": "pinned", "host_key_fingerprint": jump.host_key_fingerprint,
                }
            },
            "run": "echo \"from=${SSH_CONNECTION%% *}\" >> \"$SITEFLOW_OUTPUT\"; hostname",
        });
        let Progress::Done(out) = kind("ssh.exec").apply(&cx, &input).await.unwrap() else {
            panic!()
        };
        // The target saw the connection come from the jump host.
        assert_eq!(out["from"], jump.ip.to_string(), "{out}");
        assert_eq!(out["stdout"].as_str().unwrap().trim(), target.name);
    })
    .await;
}
