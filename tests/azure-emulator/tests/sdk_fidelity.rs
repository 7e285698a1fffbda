//! Fidelity against clients we did not write: the official Azure Python SDKs drive the
//! emulator through `fidelity/sdk_fidelity.py`.
//!
//! Interpreter: `$SITEFLOW_AZURE_SDK_PYTHON`, default `<workspace>/.ci/venv/bin/python`
//! (create it with `python3 -m venv .ci/venv && .ci/venv/bin/pip install -r
//! .ci/azure-sdk-requirements.txt`, or run `.ci/run`).

use std::path::PathBuf;
use std::time::Duration;

use siteflow_azure_emulator::Emulator;

fn interpreter() -> PathBuf {
    match std::env::var_os("SITEFLOW_AZURE_SDK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/venv/bin/python"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_drive_the_emulator() {
    let python = interpreter();
    assert!(
        python.exists(),
        "Azure SDK interpreter {} not found: run `.ci/run`, or create the venv with \
         `python3 -m venv .ci/venv && .ci/venv/bin/pip install -r .ci/azure-sdk-requirements.txt` \
         (or point SITEFLOW_AZURE_SDK_PYTHON at a python with those packages)",
        python.display()
    );
    let emu = Emulator::builder()
        .time_scale(0.02)
        .start()
        .await
        .expect("start emulator");
    let principal = emu.config().principals[0].clone();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fidelity/sdk_fidelity.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("EMULATOR_BASE_URL", emu.base_url())
        .env("EMULATOR_CA_PEM", emu.ca_pem_path())
        .env("REQUESTS_CA_BUNDLE", emu.ca_pem_path())
        .env("AZURE_TENANT_ID", emu.tenant_id())
        .env("AZURE_SUBSCRIPTION_ID", emu.subscription_id())
        .env("AZURE_CLIENT_ID", &principal.client_id)
        .env("AZURE_CLIENT_SECRET", &principal.client_secret)
        .env("AZURE_CORE_INSTANCE_DISCOVERY", "false")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(28), child)
        .await
        .expect("SDK script finished within 28 s")
        .expect("run SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "SDK script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for step in [
        "login",
        "provider register + wait",
        "vm create",
        "current VM sizes accepted",
        "scale set (spot, S4 disk)",
        "connected cluster",
        "key vault set/get",
        "aks managed cluster + agent pool + credentials",
        "managed identity + federated credential",
        "role assignment create/get/list/delete",
        "delete vm",
    ] {
        assert!(stdout.contains(step), "step {step} missing from\n{stdout}");
    }
    // The SDKs' traffic as the emulator saw it.
    let log = emu.request_log().entries();
    let lro_polls = log
        .iter()
        .filter(|e| e.path.contains("/operations/") || e.path.contains("/operationResults/"))
        .count();
    assert!(lro_polls > 0, "the SDK pollers never polled an operation");
    assert!(
        log.iter()
            .any(|e| e.service == "keyvault" && e.status == 401),
        "no Key Vault challenge seen"
    );
    assert!(log.iter().any(
        |e| e.method == "POST" && e.path.ends_with("/providers/Microsoft.Kubernetes/register")
    ));
}
