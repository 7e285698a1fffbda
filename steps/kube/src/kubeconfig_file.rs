//! Local kubeconfig files: read, written 0600 atomically, merged under a lock so runs merging
//! into one file at once keep each other's entries. The public functions are async: the file
//! work (locks, fsync, rename) runs on the blocking pool.

use serde_json::{Value, json};
use siteflow_step::{StepError, blocking};
use std::path::{Path, PathBuf};

/// Merges the single-entry `new` kubeconfig into `existing`: entries named like `new`'s are
/// replaced, all others are kept; `current-context` is set only when there was none.
pub fn merge_kubeconfig(existing: Option<Value>, new: &Value) -> Value {
    let mut out = match existing {
        Some(v) if v.is_object() => v,
        _ => json!({"apiVersion": "v1", "kind": "Config", "preferences": {}}),
    };
    for key in ["clusters", "users", "contexts"] {
        let mut list: Vec<Value> = out[key].as_array().cloned().unwrap_or_default();
        for entry in new[key].as_array().cloned().unwrap_or_default() {
            let name = entry["name"].clone();
            match list.iter_mut().find(|e| e["name"] == name) {
                Some(slot) => *slot = entry,
                None => list.push(entry),
            }
        }
        out[key] = Value::Array(list);
    }
    let no_current = out["current-context"].as_str().is_none_or(|s| s.is_empty());
    if no_current {
        out["current-context"] = new["current-context"].clone();
    }
    out
}

/// Whether `have` holds `new`'s entries exactly.
pub fn contains(have: &Value, new: &Value) -> bool {
    ["clusters", "users", "contexts"].iter().all(|key| {
        new[*key].as_array().is_some_and(|entries| {
            entries.iter().all(|e| {
                have[*key]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == e))
            })
        })
    })
}

/// The kubeconfig at `path`; `None` when it does not exist or is empty.
pub async fn read_yaml(path: &Path) -> Result<Option<Value>, StepError> {
    let path = path.to_path_buf();
    blocking(move || read_yaml_sync(&path)).await
}

/// Writes `value` as YAML to `path` with mode 0600, atomically (synced, then renamed).
pub async fn write_yaml(path: &Path, value: &Value) -> Result<(), StepError> {
    let (path, value) = (path.to_path_buf(), value.clone());
    blocking(move || write_yaml_sync(&path, &value)).await
}

/// Merges `config` into the kubeconfig at `path` holding an exclusive lock on
/// `<path>.lock`, so runs merging into one kubeconfig at once do not lose each other's
/// entries.
pub async fn merge_locked(path: &Path, config: &Value) -> Result<(), StepError> {
    let (path, config) = (path.to_path_buf(), config.clone());
    blocking(move || merge_locked_sync(&path, &config)).await
}

/// Runs `change` on the kubeconfig at `path` holding its `<path>.lock` (the lock
/// [`merge_locked`] takes); writes the result when it returns `Some`.
pub async fn update_locked(
    path: &Path,
    change: impl FnOnce(Option<Value>) -> Option<Value> + Send + 'static,
) -> Result<(), StepError> {
    let path = path.to_path_buf();
    blocking(move || update_locked_sync(&path, change)).await
}

fn read_yaml_sync(path: &Path) -> Result<Option<Value>, StepError> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) => serde_saphyr::from_str::<Value>(&t).map(Some).map_err(|e| {
            StepError::permanent(
                "KubeconfigInvalid",
                format!("{} is not valid YAML: {e}; fix or move it", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepError::permanent(
            "KubeconfigUnreadable",
            format!("read {}: {e}", path.display()),
        )),
    }
}

fn merge_locked_sync(path: &Path, config: &Value) -> Result<(), StepError> {
    let fail = |e: std::io::Error| {
        StepError::retryable(
            "KubeconfigUnwritable",
            format!("lock {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .map_err(fail)?;
    lock.lock().map_err(fail)?;
    let merged = merge_kubeconfig(read_yaml_sync(path)?, config);
    write_yaml_sync(path, &merged)
}

fn write_yaml_sync(path: &Path, value: &Value) -> Result<(), StepError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let text = serde_saphyr::to_string(value)
        .map_err(|e| StepError::permanent("KubeconfigInvalid", e.to_string()))?;
    let fail = |e: std::io::Error| {
        StepError::permanent(
            "KubeconfigUnwritable",
            format!("write {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("siteflow-{}-{seq}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The kubeconfig to merge into by default: the first of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn default_merge_target() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&k).next()
        && !first.as_os_str().is_empty()
    {
        return first;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".kube").join("config")
}

fn update_locked_sync(
    path: &Path,
    change: impl FnOnce(Option<Value>) -> Option<Value>,
) -> Result<(), StepError> {
    let fail = |e: std::io::Error| {
        StepError::retryable(
            "KubeconfigUnwritable",
            format!("lock {}: {e}", path.display()),
        )
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .map_err(fail)?;
    lock.lock().map_err(fail)?;
    match change(read_yaml_sync(path)?) {
        Some(v) => write_yaml_sync(path, &v),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Value {
        json!({
            "clusters": [{"name": name, "cluster": {"server": format!("https://{name}:6443")}}],
            "users": [{"name": name, "user": {"token": "t"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name
        })
    }

    #[tokio::test]
    async fn merge_update_write_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kube").join("config");
        assert_eq!(read_yaml(&path).await.unwrap(), None);

        merge_locked(&path, &entry("a")).await.unwrap();
        merge_locked(&path, &entry("b")).await.unwrap();
        let have = read_yaml(&path).await.unwrap().unwrap();
        assert!(contains(&have, &entry("a")) && contains(&have, &entry("b")));
        assert_eq!(have["current-context"], "a");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        update_locked(&path, |cfg| {
            cfg.map(|mut c| {
                c["current-context"] = json!("b");
                c
            })
        })
        .await
        .unwrap();
        assert_eq!(
            read_yaml(&path).await.unwrap().unwrap()["current-context"],
            "b"
        );
        // `None` leaves the file as it is.
        update_locked(&path, |_| None).await.unwrap();
        assert_eq!(
            read_yaml(&path).await.unwrap().unwrap()["current-context"],
            "b"
        );

        write_yaml(&path, &entry("c")).await.unwrap();
        assert_eq!(read_yaml(&path).await.unwrap(), Some(entry("c")));

        std::fs::write(&path, "a: [unclosed").unwrap();
        assert_eq!(
            read_yaml(&path).await.unwrap_err().code,
            "KubeconfigInvalid"
        );
    }
}
