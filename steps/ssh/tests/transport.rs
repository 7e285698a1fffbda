//! The SSH transport against real OpenSSH servers started by the fixture.

mod fixture;

use fixture::{PASSWORD_SUDO_USER, RSA_PASSPHRASE, SUDO_USER, Sshd, client_keys, pgrep};
use rand::RngCore;
use sha2::{Digest, Sha256};
use siteflow_ssh::{
    AuthMethod, ExecRequest, HostKeyPolicy, HostKeyStore, MemoryHostKeyStore, SshConfigFile,
    SshError, SshPool, SshTarget, UploadSpec, shell_quote,
};
use siteflow_step::{ErrorClass, LogStream, Secret, StepError};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every test finishes within 30 s or fails.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test exceeded 30 s");
}

fn quiet(_: LogStream, _: &str) {}

async fn run(pool: &SshPool, target: &SshTarget, cmd: &str) -> String {
    run_req(pool, target, ExecRequest::new(cmd)).await
}

async fn run_sudo(pool: &SshPool, target: &SshTarget, cmd: &str) -> String {
    run_req(pool, target, ExecRequest::new(cmd).sudo(true)).await
}

async fn run_req(pool: &SshPool, target: &SshTarget, req: ExecRequest) -> String {
    pool.exec_checked(target, &req, &quiet)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", req.command))
        .stdout_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_stderr_and_exit_code() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let lines = Mutex::new(Vec::new());
        let sink = |s: LogStream, l: &str| lines.lock().unwrap().push(format!("{}:{l}", s.name()));
        let out = pool
            .exec(
                &target,
                &ExecRequest::new("echo out1; echo err1 >&2; printf 'out2'; exit 3"),
                &sink,
            )
            .await
            .unwrap();
        assert_eq!(out.exit_status, Some(3));
        assert_eq!(out.signal, None);
        assert_eq!(out.stdout_text(), "out1\nout2");
        assert_eq!(out.stderr_text(), "err1\n");
        let lines = lines.into_inner().unwrap();
        assert!(lines.contains(&"stdout:out1".to_string()), "{lines:?}");
        assert!(lines.contains(&"stdout:out2".to_string()), "{lines:?}");
        assert!(lines.contains(&"stderr:err1".to_string()), "{lines:?}");

        let err = out.check(&target).unwrap_err();
        assert_eq!(err.code(), "ExitStatus");
        assert!(err.to_string().contains("status 3") && err.to_string().contains("err1"));

        // stdin, signals and the traceparent.
        let out = pool
            .exec(
                &target,
                &ExecRequest::new("cat; printf '|%s' \"$TRACEPARENT\"")
                    .stdin(b"from stdin\n".to_vec())
                    .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                &quiet,
            )
            .await
            .unwrap();
        assert_eq!(
            out.stdout_text(),
            "from stdin\n|00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let out = pool
            .exec(&target, &ExecRequest::new("kill -TERM $BASHPID"), &quiet)
            .await
            .unwrap();
        assert!(
            out.signal.as_deref() == Some("TERM") || out.exit_status == Some(143),
            "{out:?}"
        );
    })
    .await;
}

/// Commands without stdin or timeout run in resident shells: one after another they reuse
/// the same remote bash (one session in sshd's eyes), each in a subshell of its own, with
/// or without sudo; a command that kills that shell fails retryably and the next one gets
/// a new shell. Turned off, each command has its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_shells_are_reused_isolated_and_replaced() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let first = run(&pool, &target, "X=leak; cd /tmp; echo $$").await;
        let second = run(&pool, &target, "echo \"${X-unset} $PWD\"; echo $$").await;
        let (state, pid2) = second.split_once('\n').unwrap();
        assert_eq!(
            pid2, first,
            "the second command ran in the same resident shell"
        );
        assert_ne!(state, "leak /tmp", "state leaked between commands: {state}");
        assert!(state.starts_with("unset /home/"), "{state}");
        // sudo gets a resident shell of its own.
        let req = ExecRequest::new("id -u; echo $$").sudo(true);
        let root = pool.exec_checked(&target, &req, &quiet).await.unwrap();
        let again = pool.exec_checked(&target, &req, &quiet).await.unwrap();
        assert!(root.stdout_text().starts_with("0\n"));
        assert_eq!(root.stdout, again.stdout);
        assert_ne!(root.stdout_text().lines().nth(1), Some(first.trim_end()));

        let err = pool
            .exec(&target, &ExecRequest::new("kill -KILL $$"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SshChannel", "{err}");
        assert_eq!(
            StepError::from(err).class,
            ErrorClass::Retryable { after: None }
        );
        let third = run(&pool, &target, "echo $$").await;
        assert_ne!(third, first, "a killed shell is not used again");
        assert_eq!(pool.open_connections(), 1);
        assert_eq!(sshd.established(), 1);

        let classic = SshPool::new(siteflow_ssh::PoolOptions {
            resident_shells: false,
            ..Default::default()
        });
        let a = run(&classic, &target, "echo $$").await;
        let b = run(&classic, &target, "echo $$").await;
        assert_ne!(
            a, b,
            "without resident shells every command has its own shell"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_commands_share_one_connection() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (pool, target) = (pool.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                pool.exec_checked(
                    &target,
                    &ExecRequest::new(format!("sleep 0.7; echo {i}")),
                    &quiet,
                )
                .await
                .map(|o| o.stdout_text())
            }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let during = sshd.established();
        let mut outputs = Vec::new();
        for t in tasks {
            outputs.push(t.await.unwrap().expect("command failed"));
        }
        for (i, out) in outputs.iter().enumerate() {
            assert_eq!(out, &format!("{i}\n"));
        }
        assert_eq!(
            during, 1,
            "expected one TCP connection while 20 commands ran"
        );
        assert_eq!(sshd.established(), 1);
        assert_eq!(pool.open_connections(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_integrity_mode_and_sudo_owner() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let dir = format!("/home/{SUDO_USER}/up-{}", sshd.port);
        run(&pool, &target, &format!("mkdir -p {}", shell_quote(&dir))).await;

        let mut data = vec![0u8; 1024 * 1024];
        rand::rng().fill_bytes(&mut data);
        let path = format!("{dir}/data.bin");
        pool.upload(&target, &data, &UploadSpec::new(&path).mode(0o640))
            .await
            .unwrap();
        let back = pool.download(&target, &path).await.unwrap();
        assert_eq!(back.len(), data.len());
        assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
        let remote_sum = run(&pool, &target, &format!("sha256sum {}", shell_quote(&path))).await;
        assert!(remote_sum.starts_with(&hex::encode(Sha256::digest(&data))));
        assert_eq!(run(&pool, &target, &format!("stat -c %a {}", shell_quote(&path))).await, "640\n");

        // Replacing an existing file works, leaves no temporary files, and secrets are 0600.
        pool.upload_secret(&target, &Secret::new("token-value\n"), &UploadSpec::new(&path))
            .await
            .unwrap();
        assert_eq!(pool.download(&target, &path).await.unwrap(), b"token-value\n");
        assert_eq!(run(&pool, &target, &format!("stat -c %a {}", shell_quote(&path))).await, "600\n");
        assert_eq!(run(&pool, &target, &format!("ls -A {}", shell_quote(&dir))).await, "data.bin\n");
        let wrong_mode = pool
            .upload_secret(&target, &Secret::new("x"), &UploadSpec::new(&path).mode(0o644))
            .await;
        assert!(matches!(wrong_mode, Err(SshError::InvalidInput(_))));

        // Through sudo into a root-only directory, with an owner.
        let root_path = format!("/root/siteflow-test-{}.conf", sshd.port);
        pool.upload(
            &target,
            b"root: yes\n",
            &UploadSpec::new(&root_path)
                .mode(0o640)
                .owner(format!("root:{SUDO_USER}"))
                .sudo(true),
        )
        .await
        .unwrap();
        let meta = run_sudo(
            &pool,
            &target,
            &format!(
                "stat -c '%a %U %G' {p}; cat {p}; rm -f {p}; ls /tmp | grep -c siteflow-upload || true",
                p = shell_quote(&root_path)
            ),
        )
        .await;
        assert_eq!(meta, format!("640 root {SUDO_USER}\nroot: yes\n0\n"));

        let missing = pool.download(&target, &format!("{dir}/nope")).await.unwrap_err();
        assert_eq!(missing.code(), "SftpFailed");
        run(&pool, &target, &format!("rm -rf {}", shell_quote(&dir))).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_file_streams_a_local_file_and_refuses_an_unreadable_one() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let dir = format!("/home/{SUDO_USER}/upfile-{}", sshd.port);
        run(&pool, &target, &format!("mkdir -p {}", shell_quote(&dir))).await;
        let local = tempfile::tempdir().unwrap();
        // Many chunks, more than are in flight at once, and a short last one.
        let mut data = vec![0u8; 3 * 1024 * 1024 + 12345];
        rand::rng().fill_bytes(&mut data);
        let src = local.path().join("big.bin");
        std::fs::write(&src, &data).unwrap();

        let path = format!("{dir}/big.bin");
        pool.upload_file(&target, &src, &UploadSpec::new(&path).mode(0o600))
            .await
            .unwrap();
        let remote = run(
            &pool,
            &target,
            &format!("sha256sum {p}; stat -c %a {p}", p = shell_quote(&path)),
        )
        .await;
        assert_eq!(
            remote,
            format!("{}  {path}\n600\n", hex::encode(Sha256::digest(&data)))
        );

        // Through sudo (staged in /tmp), an empty file.
        let empty = local.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let root_path = format!("/root/siteflow-upfile-{}", sshd.port);
        pool.upload_file(&target, &empty, &UploadSpec::new(&root_path).sudo(true))
            .await
            .unwrap();
        let meta = run_sudo(
            &pool,
            &target,
            &format!(
                "stat -c '%s %a %U' {p}; rm -f {p}",
                p = shell_quote(&root_path)
            ),
        )
        .await;
        assert_eq!(meta, "0 644 root\n");

        let missing = local.path().join("missing.bin");
        let err = pool
            .upload_file(
                &target,
                &missing,
                &UploadSpec::new(format!("{dir}/missing.bin")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SourceUnreadable", "{err}");
        assert!(err.to_string().contains("missing.bin"), "{err}");
        let step: StepError = err.into();
        assert_eq!(step.class, ErrorClass::Permanent);
        // Nothing was created for it, not even a temporary file.
        assert_eq!(
            run(&pool, &target, &format!("ls -A {}", shell_quote(&dir))).await,
            "big.bin\n"
        );
        run(&pool, &target, &format!("rm -rf {}", shell_quote(&dir))).await;
    })
    .await;
}

/// The files staged in `/tmp` for sudo uploads that `user` owns.
fn staged_uploads_of(user: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let uid: u32 = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().parse().unwrap())
        .unwrap();
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".siteflow-upload-")
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sudo_upload_leaves_no_staged_secret() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        // This user's sudo wants a password: the content is staged, then sudo -n refuses.
        let target = sshd.target(PASSWORD_SUDO_USER);
        let before = staged_uploads_of(PASSWORD_SUDO_USER);
        let err = pool
            .upload_secret(
                &target,
                &Secret::new("k3s-token-value"),
                &UploadSpec::new("/etc/siteflow-refused-token").sudo(true),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SudoPasswordRequired", "{err}");
        let left: Vec<String> = staged_uploads_of(PASSWORD_SUDO_USER)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        assert!(left.is_empty(), "staged files left in /tmp: {left:?}");
        assert!(!std::path::Path::new("/etc/siteflow-refused-token").exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_strict_refuses_mismatch_and_unknown() {
    bounded(async {
        let sshd = Sshd::start();
        let keys = client_keys();
        let other = std::fs::read_to_string(keys.other_host_key.with_extension("pub")).unwrap();
        let known_hosts = sshd.dir.path().join("known_hosts");
        let host = format!("[127.0.0.1]:{}", sshd.port);
        let strict = HostKeyPolicy::Strict {
            known_hosts: known_hosts.clone(),
        };
        let target = sshd.target(SUDO_USER).with_host_key(strict);

        // Unknown host.
        let err = SshPool::default()
            .exec(&target, &ExecRequest::new("true"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "HostKeyUnknown", "{err}");

        // A different key recorded for the host.
        std::fs::write(&known_hosts, format!("{host} {other}")).unwrap();
        let err = SshPool::default()
            .exec(&target, &ExecRequest::new("true"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "HostKeyMismatch", "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{}", sshd.port)), "{msg}");
        assert!(msg.contains(&sshd.host_fingerprint), "{msg}");
        let other_fp = siteflow_ssh::fingerprint(
            &siteflow_ssh::PublicKey::from_openssh(other.trim()).unwrap(),
        );
        assert!(msg.contains(&other_fp), "{msg}");
        let step: StepError = err.into();
        assert_eq!(step.class, ErrorClass::Permanent);

        // The right key.
        std::fs::write(&known_hosts, format!("{host} {}\n", sshd.host_key_line)).unwrap();
        let pool = SshPool::default();
        assert_eq!(run(&pool, &target, "echo ok").await, "ok\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_accept_new_learns_then_demands() {
    bounded(async {
        let first = Sshd::start();
        let second = Sshd::start();
        let store = Arc::new(MemoryHostKeyStore::new());
        let policy = HostKeyPolicy::AcceptNew {
            store: store.clone(),
        };

        let target = first.target(SUDO_USER).with_host_key(policy.clone());
        assert_eq!(
            run(&SshPool::default(), &target, "echo learned").await,
            "learned\n"
        );
        let learned = store.load("127.0.0.1", first.port).await.unwrap();
        assert_eq!(learned.len(), 1);
        assert!(
            learned[0].starts_with(
                first
                    .host_key_line
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_str()
            )
        );
        // A fresh connection trusts the learned key and learns nothing more.
        assert_eq!(
            run(&SshPool::default(), &target, "echo again").await,
            "again\n"
        );
        assert_eq!(store.load("127.0.0.1", first.port).await.unwrap().len(), 1);

        // The second host "was re-installed": the store holds a different key of another
        // algorithm (RSA) for it; its ed25519 key is refused all the same.
        let rsa_pub = std::fs::read_to_string(client_keys().rsa.with_extension("pub")).unwrap();
        store
            .save("127.0.0.1", second.port, rsa_pub.trim())
            .await
            .unwrap();
        let err = SshPool::default()
            .exec(
                &second.target(SUDO_USER).with_host_key(policy),
                &ExecRequest::new("true"),
                &quiet,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "HostKeyMismatch", "{err}");
        assert!(err.to_string().contains(&second.host_fingerprint));
        assert_eq!(store.load("127.0.0.1", second.port).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_pinned_accepts_and_refuses() {
    bounded(async {
        let sshd = Sshd::start();
        let target = sshd.target(SUDO_USER);
        assert_eq!(
            run(&SshPool::default(), &target, "echo pinned").await,
            "pinned\n"
        );

        let other =
            std::fs::read_to_string(client_keys().other_host_key.with_extension("pub")).unwrap();
        let other_fp = siteflow_ssh::fingerprint(
            &siteflow_ssh::PublicKey::from_openssh(other.trim()).unwrap(),
        );
        let wrong = target.with_host_key(HostKeyPolicy::pinned(&other_fp).unwrap());
        let err = SshPool::default()
            .exec(&wrong, &ExecRequest::new("true"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "HostKeyMismatch");
        assert!(
            err.to_string().contains(&other_fp) && err.to_string().contains(&sshd.host_fingerprint)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_without_and_with_password() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let out = pool
            .exec_checked(
                &sshd.target(SUDO_USER),
                &ExecRequest::new("id -u; echo \"$V\"")
                    .env("V", "kept")
                    .sudo(true),
                &quiet,
            )
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "0\nkept\n");

        let err = pool
            .exec(
                &sshd.target(PASSWORD_SUDO_USER),
                &ExecRequest::new("id -u").sudo(true),
                &quiet,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SudoPasswordRequired", "{err}");
        let step: StepError = err.into();
        assert_eq!(step.class, ErrorClass::Permanent);
        assert!(
            step.message
                .contains(&format!("{PASSWORD_SUDO_USER} ALL=(ALL) NOPASSWD: ALL"))
        );
        assert!(step.message.contains("/etc/sudoers.d/"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_timeout_kills_the_remote_process() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let marker = format!("31.{}", sshd.port);
        // The command ignores TERM, so only the KILL after the grace period stops it.
        let mut req = ExecRequest::new(format!("trap '' TERM; sleep {marker}; echo survived"))
            .timeout(Duration::from_secs(1));
        req.kill_grace = Some(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let err = pool
            .exec(&sshd.target(SUDO_USER), &req, &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "RemoteTimeout", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !pgrep(&format!("sleep {marker}")),
            "the remote sleep survived the timeout"
        );

        // Same through sudo.
        let mut req = ExecRequest::new(format!("sleep {marker}1"))
            .timeout(Duration::from_secs(1))
            .sudo(true);
        req.kill_grace = Some(Duration::from_secs(1));
        let err = pool
            .exec(&sshd.target(SUDO_USER), &req, &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "RemoteTimeout", "{err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pgrep(&format!("sleep {marker}1")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_retryable_and_next_call_reconnects() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        assert_eq!(run(&pool, &target, "echo before").await, "before\n");

        let running = {
            let (pool, target) = (pool.clone(), target.clone());
            tokio::spawn(async move {
                pool.exec(&target, &ExecRequest::new("sleep 20"), &quiet)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            sshd.kill_connections() > 0,
            "no per-connection sshd process to kill"
        );
        let err = running.await.unwrap().unwrap_err();
        assert_eq!(err.code(), "ConnectionLost", "{err}");
        let step: StepError = err.into();
        assert!(step.class.is_retryable());

        assert_eq!(run(&pool, &target, "echo after").await, "after\n");
        assert_eq!(sshd.established(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_values_reach_the_host_intact() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let values = [
            "it's",
            "\"double\" and 'single'",
            "$HOME ${PATH} $(id) `id`",
            "a; echo injected",
            "line1\nline2\n",
            "",
            "grüße 🚀",
            "back\\slash * ? ~",
        ];
        for v in values {
            let out = pool
                .exec_checked(
                    &target,
                    &ExecRequest::new(format!(
                        "printf '%s' {}; printf '|'; printf '%s' \"$V\"",
                        shell_quote(v)
                    ))
                    .env("V", v),
                    &quiet,
                )
                .await
                .unwrap();
            assert_eq!(out.stdout_text(), format!("{v}|{v}"), "value {v:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_tunnels_through_direct_tcpip() {
    bounded(async {
        let jump = Sshd::start();
        let inner = Sshd::start();
        let pool = SshPool::default();
        let target = inner.target(SUDO_USER).via(jump.target(SUDO_USER));
        assert_eq!(run(&pool, &target, "echo inside").await, "inside\n");
        assert_eq!(
            pool.open_connections(),
            2,
            "jump connection plus the tunnelled one"
        );
        assert_eq!(jump.our_connections(), 1);
        assert_eq!(
            inner.our_connections(),
            0,
            "the inner host must be reached through the jump host"
        );
        assert_eq!(inner.established(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_with_passphrase_and_agent() {
    bounded(async {
        let sshd = Sshd::start();
        let keys = client_keys();
        let rsa = |pass: &str| {
            sshd.target(SUDO_USER).with_auth(vec![AuthMethod::KeyFile {
                path: keys.rsa.clone(),
                passphrase: Some(Secret::new(pass.to_string())),
            }])
        };
        assert_eq!(
            run(&SshPool::default(), &rsa(RSA_PASSPHRASE), "echo rsa").await,
            "rsa\n"
        );
        // OpenSSH 8.8+ refuses SHA-1 `ssh-rsa` signatures, so this login used rsa-sha2.
        assert!(
            sshd.log()
                .contains("Accepted publickey for sfdeploy from 127.0.0.1")
        );
        assert!(sshd.log().contains(": RSA SHA256:"), "{}", sshd.log());
        let err = SshPool::default()
            .exec(&rsa("wrong"), &ExecRequest::new("true"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SshKeyUnreadable", "{err}");

        // ssh-agent holding the ed25519 key.
        let sock = sshd.dir.path().join("agent.sock");
        let mut agent = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let added = std::process::Command::new("ssh-add")
            .arg(&keys.ed25519)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        let via_agent = sshd.target(SUDO_USER).with_auth(vec![AuthMethod::Agent {
            socket: Some(sock.clone()),
        }]);
        let result = SshPool::default()
            .exec_checked(&via_agent, &ExecRequest::new("echo agent"), &quiet)
            .await;
        let _ = agent.kill();
        let _ = agent.wait();
        assert_eq!(result.unwrap().stdout_text(), "agent\n");

        // No usable credential: a permanent authentication error.
        let none = sshd.target(SUDO_USER).with_auth(vec![AuthMethod::Agent {
            socket: Some(sshd.dir.path().join("no-such-agent")),
        }]);
        let err = SshPool::default()
            .exec(&none, &ExecRequest::new("true"), &quiet)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "SshAuthFailed", "{err}");
        assert!(!err.is_retryable());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_supplies_user_port_identity_and_jump() {
    bounded(async {
        let jump = Sshd::start();
        let inner = Sshd::start();
        let cfg = inner.dir.path().join("ssh_config");
        std::fs::write(
            &cfg,
            format!(
                "Host site\n  HostName 127.0.0.1\n  Port {}\n  User {SUDO_USER}\n  IdentityFile {}\n  ProxyJump bastion\n\n\
                 Host bastion\n  HostName 127.0.0.1\n  Port {}\n  User {SUDO_USER}\n  IdentityFile {}\n",
                inner.port,
                client_keys().ed25519.display(),
                jump.port,
                client_keys().ed25519.display(),
            ),
        )
        .unwrap();
        let store = Arc::new(MemoryHostKeyStore::new());
        let target = SshConfigFile::load(&cfg)
            .unwrap()
            .resolve("site", "nobody", HostKeyPolicy::AcceptNew { store: store.clone() })
            .unwrap();
        assert_eq!(target.user, SUDO_USER);
        let pool = SshPool::default();
        assert_eq!(run(&pool, &target, "whoami").await, format!("{SUDO_USER}\n"));
        assert_eq!(inner.our_connections(), 0);
        assert_eq!(store.load("127.0.0.1", jump.port).await.unwrap().len(), 1);
        assert_eq!(store.load("127.0.0.1", inner.port).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_returns_cancelled_and_connection_stays_usable() {
    bounded(async {
        let sshd = Sshd::start();
        let pool = SshPool::default();
        let target = sshd.target(SUDO_USER);
        let cancel = siteflow_step::CancellationToken::new();
        let mut req = ExecRequest::new("sleep 20").timeout(Duration::from_secs(25));
        req.cancel = Some(cancel.clone());
        let trigger = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let started = std::time::Instant::now();
        let err = pool.exec(&target, &req, &quiet).await.unwrap_err();
        trigger.await.unwrap();
        assert!(matches!(err, SshError::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let step: StepError = err.into();
        assert_eq!(step.class, ErrorClass::Cancelled);
        assert_eq!(run(&pool, &target, "echo still").await, "still\n");
        assert_eq!(pool.open_connections(), 1);
    })
    .await;
}
