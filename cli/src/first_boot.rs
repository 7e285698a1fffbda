//! The sandbox's stand-in for cloud-init's first boot: the `write_files` entries of a VM's
//! cloud-config parts (as siteflow renders them: `path`, `permissions`, `content: |`) are
//! written into the VM's host, under `/etc` only (a private overlay in every host). Packages,
//! `runcmd` and mounts are not run: the sandbox has no CIFS server, so a file share's mount
//! unit and credentials file are in place but nothing is mounted.

/// A file cloud-init would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstBootFile {
    /// Absolute path.
    pub path: String,
    /// Its content.
    pub content: String,
    /// Its mode (`permissions: '0600'`), 0644 by default.
    pub mode: u32,
}

/// The `write_files` of every cloud-config in `user_data` that land under `/etc`.
pub fn write_files(user_data: &str) -> Vec<FirstBootFile> {
    let mut out = Vec::new();
    let mut in_write_files = false;
    let mut current: Option<FirstBootFile> = None;
    let mut in_content = false;
    for line in user_data.lines() {
        if in_content {
            if let Some(rest) = line.strip_prefix("      ") {
                if let Some(f) = current.as_mut() {
                    f.content.push_str(rest);
                    f.content.push('\n');
                }
                continue;
            }
            if line.is_empty() {
                if let Some(f) = current.as_mut() {
                    f.content.push('\n');
                }
                continue;
            }
            in_content = false;
        }
        if line == "write_files:" {
            in_write_files = true;
            continue;
        }
        if !in_write_files {
            continue;
        }
        if let Some(path) = line.strip_prefix("  - path: ") {
            out.extend(current.take());
            current = Some(FirstBootFile {
                path: path.trim().to_string(),
                content: String::new(),
                mode: 0o644,
            });
        } else if let Some(mode) = line.strip_prefix("    permissions: ") {
            if let (Some(f), Ok(m)) = (
                current.as_mut(),
                u32::from_str_radix(mode.trim().trim_matches('\''), 8),
            ) {
                f.mode = m;
            }
        } else if line == "    content: |" {
            in_content = true;
        } else if !line.starts_with("    ") {
            in_write_files = false;
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    // Content blocks end where the next part begins: drop the trailing blank lines the MIME
    // boundary leaves.
    for f in &mut out {
        while f.content.ends_with("\n\n") {
            f.content.pop();
        }
    }
    out.retain(|f| f.path.starts_with("/etc/") && !f.path.contains(".."));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_siteflows_write_files_under_etc() {
        let ud = "--B\nContent-Type: text/cloud-config\n\n#cloud-config\nwrite_files:\n  - path: /etc/smbcredentials/a-s.cred\n    owner: root:root\n    permissions: '0600'\n    content: |\n      username=a\n      password=k==\n  - path: /etc/systemd/system/mnt-s.mount\n    permissions: '0644'\n    content: |\n      [Unit]\n\n      [Mount]\n      What=//a/s\n  - path: /usr/bin/evil\n    content: |\n      x\nruncmd:\n  - [systemctl, daemon-reload]\n\n--B--\n";
        let files = write_files(ud);
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].path, "/etc/smbcredentials/a-s.cred");
        assert_eq!(files[0].content, "username=a\npassword=k==\n");
        assert_eq!(files[0].mode, 0o600);
        assert_eq!(files[1].content, "[Unit]\n\n[Mount]\nWhat=//a/s\n");
        assert_eq!(files[1].mode, 0o644);
        assert!(write_files("#cloud-config\nssh_keys: {}\n").is_empty());
    }
}
