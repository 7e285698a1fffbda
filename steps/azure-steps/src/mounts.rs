//! Azure file shares mounted on VMs and scale-set instances through cloud-init: a 0600
//! credentials file and a systemd mount unit for `//<account>.file.core.windows.net/<share>`
//! (CIFS, SMB 3.1.1), enabled at first boot.
//!
//! The account key travels inside the VM's custom data, as cloud-init needs it on the machine:
//! ARM never returns custom data, the emulator's request log redacts it, and the key reaches
//! the step as a [`Secret`] input, which the engine does not persist.

use serde::Deserialize;
use siteflow_step::{Secret, StepError, schemars};

/// Where a file share's credentials file lives on the node.
pub const CREDENTIALS_DIR: &str = "/etc/smbcredentials";

/// One Azure file share to mount on a node.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileShareMount {
    /// The storage account (from `azure.storage-account`).
    pub account: String,
    /// The share (from `azure.file-share`).
    pub share: String,
    /// The account key (`azure.storage-account`'s secret `key` output).
    pub key: Secret<String>,
    /// Absolute mount point: lower-case letters, digits, `_` and `/` (`/mnt/data`).
    pub mount_point: String,
}

impl FileShareMount {
    /// The systemd unit name for the mount point (`/mnt/data` → `mnt-data.mount`).
    pub fn unit_name(&self) -> String {
        format!(
            "{}.mount",
            self.mount_point.trim_start_matches('/').replace('/', "-")
        )
    }

    /// The credentials file on the node.
    pub fn credentials_path(&self) -> String {
        format!("{CREDENTIALS_DIR}/{}-{}.cred", self.account, self.share)
    }

    /// `//<account>.file.core.windows.net/<share>`.
    pub fn unc(&self) -> String {
        format!("//{}.file.core.windows.net/{}", self.account, self.share)
    }

    /// Checks names and the mount point (they end up in a unit file and a path).
    pub fn validate(&self) -> Result<(), StepError> {
        if !crate::storage::valid_account_name(&self.account) {
            return Err(invalid(format!(
                "file share mount: `{}` is not a storage account name",
                self.account
            )));
        }
        if !crate::storage::valid_share_name(&self.share) {
            return Err(invalid(format!(
                "file share mount: `{}` is not a file share name",
                self.share
            )));
        }
        let mp = &self.mount_point;
        // No `-`: systemd would escape it in the unit name.
        let ok = mp.starts_with('/')
            && mp.len() > 1
            && !mp.ends_with('/')
            && !mp.contains("//")
            && mp
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '/');
        if !ok {
            return Err(invalid(format!(
                "file share mount: mount_point `{mp}` must be an absolute path of lower-case letters, digits, `_` and `/` (like /mnt/data)"
            )));
        }
        if self.key.expose().is_empty() {
            return Err(invalid("file share mount: the account key is empty".into()));
        }
        Ok(())
    }
}

fn invalid(message: String) -> StepError {
    StepError::permanent("InvalidInput", message)
}

/// Checks every mount, and that no two share a mount point.
pub fn validate_all(mounts: &[FileShareMount]) -> Result<(), StepError> {
    for (i, m) in mounts.iter().enumerate() {
        m.validate()?;
        if mounts[..i].iter().any(|o| o.mount_point == m.mount_point) {
            return Err(invalid(format!(
                "file share mount: two shares on {}",
                m.mount_point
            )));
        }
    }
    Ok(())
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// The cloud-config part mounting `mounts` (`None` without mounts). It appends to the lists
/// of the parts before it (`merge_how`), so the user's own `write_files`/`runcmd` survive.
pub fn cloud_config(mounts: &[FileShareMount]) -> Option<String> {
    if mounts.is_empty() {
        return None;
    }
    let mut files = String::new();
    let mut cmds = String::from("  - [systemctl, daemon-reload]\n");
    for m in mounts {
        let creds = format!("username={}\npassword={}\n", m.account, m.key.expose());
        let unit = format!(
            "[Unit]\nDescription=Azure file share {unc}\nWants=network-online.target\nAfter=network-online.target\n\n[Mount]\nWhat={unc}\nWhere={mp}\nType=cifs\nOptions=vers=3.1.1,credentials={cred},serverino,nosharesock,actimeo=30,dir_mode=0770,file_mode=0660,_netdev\nTimeoutSec=60\n\n[Install]\nWantedBy=multi-user.target\n",
            unc = m.unc(),
            mp = m.mount_point,
            cred = m.credentials_path(),
        );
        files.push_str(&format!(
            "  - path: {}\n    owner: root:root\n    permissions: '0600'\n    content: |\n{}",
            m.credentials_path(),
            indent(&creds, "      ")
        ));
        files.push_str(&format!(
            "  - path: /etc/systemd/system/{}\n    owner: root:root\n    permissions: '0644'\n    content: |\n{}",
            m.unit_name(),
            indent(&unit, "      ")
        ));
        cmds.push_str(&format!(
            "  - [mkdir, -p, {}]\n  - [systemctl, enable, --now, {}]\n",
            m.mount_point,
            m.unit_name()
        ));
    }
    Some(format!(
        "#cloud-config\nmerge_how:\n  - name: list\n    settings: [append]\n  - name: dict\n    settings: [no_replace, recurse_list]\npackages: [cifs-utils]\nwrite_files:\n{files}runcmd:\n{cmds}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(mp: &str) -> FileShareMount {
        FileShareMount {
            account: "edgefiles".into(),
            share: "data".into(),
            key: Secret::new("a2V5+/==".into()),
            mount_point: mp.into(),
        }
    }

    #[test]
    fn renders_a_0600_credentials_file_and_a_mount_unit() {
        let cc = cloud_config(&[mount("/mnt/data")]).unwrap();
        assert!(cc.starts_with("#cloud-config\n"), "{cc}");
        assert!(cc.contains(
            "  - path: /etc/smbcredentials/edgefiles-data.cred\n    owner: root:root\n    permissions: '0600'\n    content: |\n      username=edgefiles\n      password=a2V5+/==\n"
        ), "{cc}");
        assert!(cc.contains("  - path: /etc/systemd/system/mnt-data.mount\n"));
        assert!(cc.contains("      What=//edgefiles.file.core.windows.net/data\n"));
        assert!(cc.contains("      Where=/mnt/data\n      Type=cifs\n"));
        assert!(cc.contains("credentials=/etc/smbcredentials/edgefiles-data.cred,"));
        assert!(cc.contains("  - [systemctl, enable, --now, mnt-data.mount]\n"));
        assert!(cloud_config(&[]).is_none());
    }

    #[test]
    fn mount_points_and_names_are_checked() {
        assert!(mount("/mnt/data").validate().is_ok());
        for bad in ["mnt", "/mnt/", "/mnt/my-share", "/", "/mnt//x", "/Mnt"] {
            assert!(mount(bad).validate().is_err(), "{bad}");
        }
        let mut m = mount("/mnt/data");
        m.account = "Bad".into();
        assert!(m.validate().is_err());
        assert!(validate_all(&[mount("/mnt/a"), mount("/mnt/a")]).is_err());
    }
}
