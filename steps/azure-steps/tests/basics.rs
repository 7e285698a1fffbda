//! Resource groups and provider registration against the emulator: create, re-run without
//! writes, adopt, drift, delete.

mod common;

use common::Env;
use serde_json::json;
use siteflow_azure::Service;
use siteflow_engine::runner::RunStatus;

fn rg_step(env: &Env, id: &str, name: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    uses: azure.resource-group\n    with: {{ azure: {}, name: {name}, location: westeurope{extra} }}\n",
        env.azure()
    )
}

#[tokio::test]
async fn resource_group_is_created_once_adopted_and_drift_is_reported() {
    let env = Env::new().await;
    let wf = env.workflow(&rg_step(&env, "rg", "site-rg", ", tags: { owner: ops }"));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let (_, outputs, _) = env.step_status(&out.run_id, "rg").await;
    let outputs = outputs.unwrap();
    assert!(
        outputs["id"]
            .as_str()
            .unwrap()
            .ends_with("/resourceGroups/site-rg"),
        "{outputs}"
    );
    assert_eq!(env.count("PUT", "/resourcegroups/site-rg"), 1);
    let tags = env
        .emu
        .request_log()
        .matching("/resourcegroups/site-rg")
        .into_iter()
        .find(|e| e.method == "PUT")
        .unwrap()
        .body
        .unwrap()["tags"]
        .clone();
    assert_eq!(tags["siteflow-site"], "edge-1");
    assert_eq!(tags["siteflow-step"], "rg");
    assert_eq!(tags["siteflow-run"], out.run_id.as_str());
    assert_eq!(tags["owner"], "ops");

    // A second run of the same site finds it in place: no PUT.
    let again = env.run(&wf, Some("edge-1")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(
        env.count("PUT", "/resourcegroups/site-rg"),
        1,
        "no write on re-run"
    );

    // Drift: someone removed a tag; observe reports it and apply puts it back.
    let c = env.client();
    let url = c.arm_url(
        &format!(
            "/subscriptions/{}/resourcegroups/site-rg",
            env.emu.subscription_id()
        ),
        "2025-04-01",
    );
    let mut t = tags.clone();
    t.as_object_mut().unwrap().remove("owner");
    c.send(
        Service::Arm,
        "PUT",
        &url,
        Some(&json!({"location": "westeurope", "tags": t})),
    )
    .await
    .unwrap();
    let fixed = env.run(&wf, Some("edge-1")).await;
    assert_eq!(fixed.status, RunStatus::Succeeded);
    let log = env.persisted(&fixed.run_id).await;
    assert!(log.contains("drift: tag owner"), "drift is reported");
    let rg: serde_json::Value = c
        .send(Service::Arm, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(rg["tags"]["owner"], "ops");
    assert_eq!(
        rg["tags"]["siteflow-run"],
        out.run_id.as_str(),
        "the creating run stays recorded"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_pre_existing_tagged_group_is_adopted_and_an_untagged_one_refused() {
    let env = Env::new().await;
    let c = env.client();
    let sub = env.emu.subscription_id().to_string();
    let put = |name: &str, tags: serde_json::Value| {
        let c = c.clone();
        let url = c.arm_url(
            &format!("/subscriptions/{sub}/resourcegroups/{name}"),
            "2025-04-01",
        );
        async move {
            c.send(
                Service::Arm,
                "PUT",
                &url,
                Some(&json!({"location": "westeurope", "tags": tags})),
            )
            .await
            .unwrap()
        }
    };
    put(
        "ours",
        json!({"siteflow-site": "edge-1", "siteflow-step": "rg", "siteflow-run": "old-run"}),
    )
    .await;
    put("theirs", json!({"team": "other"})).await;
    env.emu.request_log().clear();

    let out = env
        .run(
            &env.workflow(&rg_step(&env, "rg", "ours", "")),
            Some("edge-1"),
        )
        .await;
    assert_eq!(out.status, RunStatus::Succeeded);
    assert_eq!(
        env.count("PUT", "/resourcegroups/ours"),
        0,
        "adopted without a write"
    );

    let out = env
        .run(
            &env.workflow(&rg_step(&env, "rg", "theirs", "")),
            Some("edge-1"),
        )
        .await;
    assert_eq!(out.status, RunStatus::Failed);
    let (_, _, err) = env.step_status(&out.run_id, "rg").await;
    assert_eq!(err.unwrap().code, "ResourceNotOwned");
    assert_eq!(env.count("PUT", "/resourcegroups/theirs"), 0);

    let out = env
        .run(
            &env.workflow(&rg_step(&env, "rg", "theirs", ", adopt_untagged: true")),
            Some("edge-1"),
        )
        .await;
    assert_eq!(out.status, RunStatus::Succeeded);

    // Delete mode: the group goes away (an LRO), and a re-run has nothing to do.
    let out = env
        .run(
            &env.workflow(&rg_step(&env, "rg", "ours", ", mode: delete")),
            Some("edge-1"),
        )
        .await;
    assert_eq!(out.status, RunStatus::Succeeded);
    assert_eq!(env.count("DELETE", "/resourcegroups/ours"), 1);
    let out = env
        .run(
            &env.workflow(&rg_step(&env, "rg", "ours", ", mode: delete")),
            Some("edge-1"),
        )
        .await;
    assert_eq!(out.status, RunStatus::Succeeded);
    assert_eq!(env.count("DELETE", "/resourcegroups/ours"), 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn providers_are_registered_in_parallel_then_awaited() {
    let env = Env::new().await;
    let wf = env.workflow(&format!(
        "  - id: providers\n    uses: azure.register-providers\n    with: {{ azure: {}, poll_interval_secs: 0.05 }}\n",
        env.azure()
    ));
    let out = env.run(&wf, None).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let (_, outputs, _) = env.step_status(&out.run_id, "providers").await;
    let states = &outputs.unwrap()["states"];
    for ns in [
        "Microsoft.Kubernetes",
        "Microsoft.KubernetesConfiguration",
        "Microsoft.ExtendedLocation",
    ] {
        assert_eq!(states[ns], "Registered", "{states}");
        assert_eq!(
            env.count("POST", &format!("/providers/{ns}/register")),
            1,
            "{ns} registered once"
        );
    }
    let gets = env.count("GET", "/providers/Microsoft.Kubernetes");
    assert!(gets >= 2, "waited with GETs: {gets}");
    let again = env.run(&wf, None).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(env.count("POST", "/register"), 3, "no POST on re-run");
    env.emu.shutdown().await;
}
