//! Tests of the test-host harness: reachability, SSH, private mounts, lifecycle, cuts, sudo and
//! cleanup. Needs root, openssh-server, sudo and iproute2.

use std::path::Path;
use std::time::Duration;

use siteflow_testhosts::{TestNet, slot_has_leftovers};

/// Every test is bounded well below 60 s.
async fn bounded<F: std::future::Future<Output = T>, T>(f: F) -> T {
    tokio::time::timeout(Duration::from_secs(55), f)
        .await
        .expect("test took longer than 55 s")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn two_hosts_reach_each_other() {
    bounded(async {
        let net = TestNet::new(2).await.unwrap();
        let (a, b) = (net.host(0), net.host(1));
        assert_ne!(a.ip, b.ip);
        // TCP from a to b's sshd, by address and by name, from inside a's namespaces.
        let banner = a
            .exec_local_ok(&format!(
                "bash -c 'exec 3<>/dev/tcp/{}/22; head -c 7 <&3'",
                b.ip
            ))
            .await
            .unwrap();
        assert_eq!(banner, "SSH-2.0");
        let by_name = a
            .exec_local_ok(&format!(
                "bash -c 'exec 3<>/dev/tcp/{}/22; head -c 7 <&3'",
                b.name
            ))
            .await
            .unwrap();
        assert_eq!(by_name, "SSH-2.0");
        assert_eq!(a.exec_local_ok("hostname").await.unwrap().trim(), a.name);
        assert_eq!(b.exec_local_ok("hostname").await.unwrap().trim(), b.name);
        // a host has no route out of its subnet
        let out = a.exec_local("ip route get 192.0.2.1").await.unwrap();
        assert!(!out.status.success(), "host must have no default route");
    })
    .await
}

#[tokio::test]
async fn ssh_with_test_key_works_and_checks_host_key() {
    bounded(async {
        let net = TestNet::new(1).await.unwrap();
        let h = net.host(0);
        for user in [h.user_nopasswd.as_str(), h.user_passwd.as_str(), "root"] {
            let out = h.ssh(user, "id -un; hostname").await.unwrap();
            assert!(out.status.success(), "{user}: {out:?}");
            assert_eq!(stdout(&out), format!("{user}\n{}", h.name));
        }
        // The fingerprint we expose is what ssh-keyscan sees.
        let scan = tokio::process::Command::new("ssh-keyscan")
            .args(["-t", "ed25519", &h.ip.to_string()])
            .output()
            .await
            .unwrap();
        let line = String::from_utf8_lossy(&scan.stdout);
        let key_line = line.lines().find(|l| !l.starts_with('#')).unwrap();
        let fp = siteflow_testhosts::fingerprint(key_line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(fp, h.host_key_fingerprint);
        // Another key is refused.
        let other = net.dir().join("other_key");
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other)
            .status()
            .unwrap();
        let mut args = h.ssh_args(&h.user_nopasswd);
        args[3] = other.display().to_string();
        let out = tokio::process::Command::new("ssh")
            .args(&args)
            .arg("true")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "a foreign key must be refused");
        // SFTP subsystem works (russh-sftp clients use it).
        let out = tokio::process::Command::new("sftp")
            .args([
                "-b",
                "-",
                "-i",
                &h.client_key_path.display().to_string(),
                "-o",
                &format!("UserKnownHostsFile={}", h.known_hosts_path.display()),
                "-o",
                "BatchMode=yes",
                &format!("{}@{}", h.user_nopasswd, h.ip),
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "sftp: {out:?}");
    })
    .await
}

#[tokio::test]
async fn private_mounts_are_private() {
    bounded(async {
        let net = TestNet::new(2).await.unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let marker = format!("written-on-{}", a.name);
        for dir in [
            "/etc/rancher/k3s",
            "/var/lib/rancher/k3s",
            "/usr/local/bin",
            "/run",
            "/tmp",
        ] {
            a.exec_local_ok(&format!(
                "mkdir -p {dir} && echo {marker} > {dir}/sfth-probe"
            ))
            .await
            .unwrap();
            let probe = format!("{dir}/sfth-probe");
            assert_eq!(
                String::from_utf8(a.read_file(&probe).await.unwrap())
                    .unwrap()
                    .trim(),
                marker
            );
            // readable from the test through root_path
            assert_eq!(
                std::fs::read_to_string(a.root_path(&probe)).unwrap().trim(),
                marker
            );
            assert!(
                !b.exec_local(&format!("test -e {probe}"))
                    .await
                    .unwrap()
                    .status
                    .success(),
                "{probe} leaked to host b"
            );
            assert!(!Path::new(&probe).exists(), "{probe} leaked to the machine");
        }
        // Files written over SSH by a user land in that host only.
        let out = a
            .ssh(
                &a.user_nopasswd,
                "sudo mkdir -p /etc/rancher/k3s && echo x | sudo tee /etc/rancher/k3s/config.yaml",
            )
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            a.root_path("/etc/rancher/k3s/config.yaml")
                .starts_with(a.dir())
        );
        assert!(!Path::new("/etc/rancher/k3s/config.yaml").exists());
    })
    .await
}

#[tokio::test]
async fn stop_and_start() {
    bounded(async {
        let net = TestNet::new(1).await.unwrap();
        let h = net.host(0);
        h.write_file("/var/lib/rancher/keep", b"disk", 0o600)
            .await
            .unwrap();
        h.exec_local_ok("echo volatile > /run/volatile")
            .await
            .unwrap();
        h.stop().await.unwrap();
        assert!(!h.is_running());
        assert!(
            h.pids().is_empty(),
            "processes left after stop: {:?}",
            h.pids()
        );
        let out = h.ssh(&h.user_nopasswd, "true").await.unwrap();
        assert!(!out.status.success(), "ssh must fail while stopped");
        h.start().await.unwrap();
        let out = h
            .ssh(
                &h.user_nopasswd,
                "sudo cat /var/lib/rancher/keep; test -e /run/volatile && echo still; true",
            )
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), "disk", "disk survives, /run does not");
        h.restart().await.unwrap();
        assert!(
            h.ssh(&h.user_nopasswd, "true")
                .await
                .unwrap()
                .status
                .success()
        );
    })
    .await
}

#[tokio::test]
async fn cut_and_restore() {
    bounded(async {
        let net = TestNet::new(2).await.unwrap();
        let (a, b) = (net.host(0), net.host(1));
        assert!(
            a.ssh(&a.user_nopasswd, "true")
                .await
                .unwrap()
                .status
                .success()
        );
        a.cut().await.unwrap();
        let out = a.ssh(&a.user_nopasswd, "true").await.unwrap();
        assert!(!out.status.success(), "ssh must fail while cut");
        let out = b
            .exec_local(&format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{}/22'", a.ip))
            .await
            .unwrap();
        assert!(!out.status.success(), "peer must not reach a cut host");
        a.restore().await.unwrap();
        let out = a.ssh(&a.user_nopasswd, "hostname").await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), a.name);
    })
    .await
}

#[tokio::test]
async fn sudo_nopasswd_and_passwd() {
    bounded(async {
        let net = TestNet::new(1).await.unwrap();
        let h = net.host(0);
        let out = h.ssh(&h.user_nopasswd, "sudo -n id -u").await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), "0");
        let out = h.ssh(&h.user_passwd, "sudo -n id -u").await.unwrap();
        assert!(!out.status.success(), "sudo -n must need a password");
        assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
        let out = h
            .ssh(
                &h.user_passwd,
                &format!("echo '{}' | sudo -S -p '' id -u", h.password),
            )
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), "0");
        let out = h
            .ssh(&h.user_passwd, "echo wrong | sudo -S -p '' id -u")
            .await
            .unwrap();
        assert!(!out.status.success(), "a wrong password must be refused");
    })
    .await
}

#[tokio::test]
async fn cleanup_leaves_nothing_behind() {
    bounded(async {
        let net = TestNet::new(2).await.unwrap();
        let slot = net.slot();
        // a daemon started inside a host must die with it
        net.host(0)
            .exec_local_ok("setsid sleep 300 >/dev/null 2>&1 < /dev/null &")
            .await
            .unwrap();
        let mut pids = Vec::new();
        for h in &net.hosts {
            pids.extend(h.pids());
        }
        assert!(pids.len() >= 3, "sshd x2 + sleep, got {pids:?}");
        let namespaces: Vec<String> = net.hosts.iter().map(|h| h.netns.clone()).collect();
        let veths: Vec<String> = net.hosts.iter().map(|h| h.veth()).collect();
        let bridge = net.bridge();
        let dir = net.dir();
        assert!(slot_has_leftovers(slot));
        drop(net);
        for ns in &namespaces {
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "netns {ns} left"
            );
        }
        for link in veths.iter().chain([&bridge]) {
            assert!(
                !Path::new("/sys/class/net").join(link).exists(),
                "link {link} left"
            );
        }
        for pid in pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            // PID 1 of some sandboxes does not reap orphans: a zombie holds nothing.
            assert!(
                status.is_empty() || status.contains("State:\tZ"),
                "process {pid} still running"
            );
        }
        assert!(!dir.exists(), "{} left", dir.display());
        assert!(!slot_has_leftovers(slot));
    })
    .await
}

#[tokio::test]
async fn cleanup_after_panic_and_stale_cleanup() {
    bounded(async {
        // Dropping during a panic cleans up.
        let slot = tokio::spawn(async {
            let net = TestNet::new(1).await.unwrap();
            let slot = net.slot();
            std::panic::panic_any(slot)
        })
        .await
        .unwrap_err()
        .into_panic();
        let slot = *slot.downcast::<u8>().unwrap();
        assert!(!slot_has_leftovers(slot));

        // A killed run's leftovers are removed by stale cleanup once its lock is free.
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_siteflow-testhosts"))
            .args(["up", "-n", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut json = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            json.push_str(&line);
            if line == "}" {
                break;
            }
        }
        let up: serde_json::Value = serde_json::from_str(&json).unwrap();
        let netns = up["hosts"][0]["netns"].as_str().unwrap().to_owned();
        let ip = up["hosts"][0]["ip"].as_str().unwrap().to_owned();
        let slot: u8 = ip.split('.').nth(2).unwrap().parse().unwrap();
        assert!(
            !siteflow_testhosts::cleanup_stale().unwrap().contains(&slot),
            "a live net must not be cleaned"
        );
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        assert!(
            Path::new("/run/netns").join(&netns).exists(),
            "SIGKILL leaves leftovers"
        );
        assert!(slot_has_leftovers(slot));
        let cleaned = siteflow_testhosts::cleanup_stale().unwrap();
        assert!(
            cleaned.contains(&slot),
            "cleaned {cleaned:?}, wanted {slot}"
        );
        assert!(!Path::new("/run/netns").join(&netns).exists());
        assert!(!slot_has_leftovers(slot));
    })
    .await
}
