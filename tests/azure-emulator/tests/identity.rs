//! Identity in the emulator: Graph applications, passwords and service principals; ARM role
//! assignments checked against the directory; user-assigned identities and their federated
//! credentials.

mod common;

use std::time::Duration;

use common::{Client, TestResp, eventually, start};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";

async fn graph(c: &Client, method: Method, path: &str, body: Option<Value>) -> TestResp {
    let token = c.token("https://graph.microsoft.com/.default").await;
    let auth = format!("Bearer {token}");
    c.send(
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

async fn graph_get(c: &Client, path: &str) -> TestResp {
    graph(c, Method::GET, path, None).await
}

async fn login(c: &Client, client_id: &str, secret: &str) -> TestResp {
    let form = format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        secret.replace('~', "%7E")
    );
    c.send(
        Method::POST,
        &format!("/{}/oauth2/v2.0/token", c.tenant),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.into_bytes()),
    )
    .await
}

/// Creates an application: (object id, appId).
async fn create_app(c: &Client, name: &str) -> (String, String) {
    let app = graph(
        c,
        Method::POST,
        "/v1.0/applications",
        Some(json!({"displayName": name})),
    )
    .await;
    assert_eq!(app.status, StatusCode::CREATED, "{:?}", app.json());
    (
        app.json()["id"].as_str().unwrap().to_string(),
        app.json()["appId"].as_str().unwrap().to_string(),
    )
}

/// Creates an application with a service principal: (app object id, appId, SP object id).
async fn app_with_principal(c: &Client, name: &str) -> (String, String, String) {
    let (id, app_id) = create_app(c, name).await;
    let sp = graph(
        c,
        Method::POST,
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(sp.status, StatusCode::CREATED, "{:?}", sp.json());
    (id, app_id, sp.json()["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn graph_applications_passwords_and_service_principals() {
    let (emu, c) = start(0.01, |_| {}).await;
    let (id, app_id) = create_app(&c, "rancher-mgmt").await;
    assert_ne!(id, app_id);
    let missing = graph(&c, Method::POST, "/v1.0/applications", Some(json!({}))).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::BAD_REQUEST, "Request_BadRequest".into())
    );
    assert!(
        missing.json()["error"]["innerError"]["request-id"].is_string(),
        "Graph's error shape"
    );

    let found = graph_get(
        &c,
        "/v1.0/applications?$filter=displayName%20eq%20'rancher-mgmt'",
    )
    .await;
    assert_eq!(found.json()["value"].as_array().unwrap().len(), 1);
    assert_eq!(found.json()["value"][0]["appId"], app_id.as_str());
    let none = graph_get(&c, "/v1.0/applications?$filter=displayName%20eq%20'other'").await;
    assert_eq!(none.json()["value"], json!([]));
    let by_id = graph_get(&c, &format!("/v1.0/applications/{id}")).await;
    assert_eq!(by_id.json()["displayName"], "rancher-mgmt");
    let gone = graph_get(
        &c,
        "/v1.0/applications/00000000-0000-0000-0000-00000000dead",
    )
    .await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "Request_ResourceNotFound".into())
    );

    // The secret is in the addPassword answer only.
    let pw = graph(
        &c,
        Method::POST,
        &format!("/v1.0/applications/{id}/addPassword"),
        Some(json!({"passwordCredential": {"displayName": "siteflow"}})),
    )
    .await;
    assert_eq!(pw.status, StatusCode::OK);
    let secret = pw.json()["secretText"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 40);
    assert!(pw.json()["endDateTime"].as_str().unwrap() > "2026");
    let again = graph_get(&c, &format!("/v1.0/applications/{id}")).await;
    let creds = &again.json()["passwordCredentials"];
    assert_eq!(creds.as_array().unwrap().len(), 1);
    assert!(creds[0]["secretText"].is_null());
    assert_eq!(creds[0]["keyId"], pw.json()["keyId"]);
    assert_eq!(creds[0]["hint"].as_str().unwrap(), &secret[..3]);

    // No service principal yet: the app cannot log in.
    let r = login(&c, &app_id, &secret).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.json()["error_codes"].to_string().contains("7000229"),
        "{:?}",
        r.json()
    );
    let sp = graph(
        &c,
        Method::POST,
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(sp.status, StatusCode::CREATED);
    assert_eq!(sp.json()["servicePrincipalType"], "Application");
    let dup = graph(
        &c,
        Method::POST,
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(
        (dup.status, dup.code()),
        (
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue".into()
        )
    );
    let orphan = graph(
        &c,
        Method::POST,
        "/v1.0/servicePrincipals",
        Some(json!({"appId": "00000000-0000-0000-0000-000000000bad"})),
    )
    .await;
    assert_eq!(orphan.status, StatusCode::BAD_REQUEST);
    let by_app = graph_get(&c, &format!("/v1.0/servicePrincipals(appId='{app_id}')")).await;
    assert_eq!(by_app.json()["id"], sp.json()["id"]);
    let r = login(&c, &app_id, &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        login(&c, &app_id, "not-the-secret").await.status,
        StatusCode::UNAUTHORIZED
    );
    // The configured principals and their lookups still work.
    let custom = graph_get(
        &c,
        "/v1.0/servicePrincipals?$filter=appId%20eq%20'bc313c14-388c-4e7d-a58e-70017303ee3b'",
    )
    .await;
    assert_eq!(
        custom.json()["value"][0]["id"],
        "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
    );

    let log = serde_json::to_string(&emu.request_log().entries()).unwrap();
    assert!(!log.contains(&secret), "the secret reached the request log");

    emu.set_graph_forbidden(true);
    let denied = graph(
        &c,
        Method::POST,
        "/v1.0/applications",
        Some(json!({"displayName": "x"})),
    )
    .await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "Authorization_RequestDenied".into())
    );
    emu.set_graph_forbidden(false);
    let del = graph(
        &c,
        Method::DELETE,
        &format!("/v1.0/applications/{id}"),
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let sp_gone = graph_get(&c, &format!("/v1.0/servicePrincipals(appId='{app_id}')")).await;
    assert_eq!(sp_gone.status, StatusCode::NOT_FOUND);
}

fn assignment(c: &Client, rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01",
        c.rg_path(rg)
    )
}

fn grant(c: &Client, role: &str, principal: &str, principal_type: Option<&str>) -> Value {
    let mut props = json!({
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}", c.sub),
        "principalId": principal
    });
    if let Some(t) = principal_type {
        props["principalType"] = json!(t);
    }
    json!({"properties": props})
}

/// PUTs a role assignment at a resource group.
async fn put_ra(c: &Client, token: &str, rg: &str, name: &str, body: Value) -> TestResp {
    c.arm_with(token, Method::PUT, &assignment(c, rg, name), Some(body))
        .await
}

#[tokio::test]
async fn role_assignments_check_principals_roles_and_duplicates() {
    // A new principal replicates for 50 emulated seconds (0.5 s here).
    let (_emu, c) = start(0.01, |cfg| cfg.principal_replication_secs = 50.0).await;
    let t = c.arm_token().await;
    let name = "0c5a614a-a7d6-4502-b150-c2fb455033ff";
    let missing_rg = put_ra(
        &c,
        &t,
        "rg-none",
        name,
        grant(
            &c,
            CONTRIBUTOR,
            "33333333-3333-3333-3333-333333333333",
            None,
        ),
    )
    .await;
    assert_eq!(missing_rg.code(), "ResourceGroupNotFound");
    c.create_rg(&t, "rg-rbac").await;
    let put = async |name: &str, role: &str, principal: &str, ty: Option<&str>| {
        put_ra(&c, &t, "rg-rbac", name, grant(&c, role, principal, ty)).await
    };
    let unknown = put(
        name,
        CONTRIBUTOR,
        "9d9d9d9d-0000-0000-0000-000000000000",
        Some("ServicePrincipal"),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::BAD_REQUEST, "PrincipalNotFound".into())
    );
    let not_guid = put(
        "contributor",
        CONTRIBUTOR,
        "33333333-3333-3333-3333-333333333333",
        None,
    )
    .await;
    assert_eq!(not_guid.code(), "InvalidRoleAssignmentId");
    let no_role = put(
        name,
        "11111111-2222-3333-4444-555555555555",
        "33333333-3333-3333-3333-333333333333",
        None,
    )
    .await;
    assert_eq!(no_role.code(), "RoleDefinitionDoesNotExist");
    let no_principal = put_ra(
        &c,
        &t,
        "rg-rbac",
        name,
        json!({"properties": {"roleDefinitionId": CONTRIBUTOR}}),
    )
    .await;
    assert_eq!(
        (no_principal.status, no_principal.code()),
        (StatusCode::BAD_REQUEST, "InvalidParameter".into())
    );

    // A just-created service principal: unknown to ARM until it replicates, unless the
    // request says what type of principal it is.
    let (_, _, sp) = app_with_principal(&c, "rancher").await;
    let early = put(name, CONTRIBUTOR, &sp, None).await;
    assert_eq!(early.code(), "PrincipalNotFound");
    let wrong_type = put(name, CONTRIBUTOR, &sp, Some("User")).await;
    assert_eq!(wrong_type.code(), "UnmatchedPrincipalType");
    let created = put(name, CONTRIBUTOR, &sp, Some("ServicePrincipal")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    let body = created.json();
    assert_eq!(body["type"], "Microsoft.Authorization/roleAssignments");
    assert_eq!(body["properties"]["scope"], c.rg_path("rg-rbac"));
    assert!(
        body["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .ends_with(CONTRIBUTOR)
    );
    assert_eq!(body["properties"]["principalType"], "ServicePrincipal");
    let same = put(name, CONTRIBUTOR, &sp, Some("ServicePrincipal")).await;
    assert_eq!(same.status, StatusCode::OK);
    let other_name = "1c5a614a-a7d6-4502-b150-c2fb455033ff";
    let dup = put(other_name, CONTRIBUTOR, &sp, Some("ServicePrincipal")).await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "RoleAssignmentExists".into())
    );
    let changed = put(
        name,
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        &sp,
        Some("ServicePrincipal"),
    )
    .await;
    assert_eq!(changed.code(), "RoleAssignmentUpdateNotPermitted");
    // Once replicated, the type may be left out.
    assert!(
        eventually(Duration::from_secs(3), || async {
            put(
                other_name,
                "acdd72a7-3385-48ef-bd42-f606fba81ae7",
                &sp,
                None,
            )
            .await
            .status
                == StatusCode::CREATED
        })
        .await,
        "the principal never replicated"
    );

    let got = c
        .arm_with(&t, Method::GET, &assignment(&c, "rg-rbac", name), None)
        .await;
    assert_eq!(got.json()["properties"]["principalId"], sp.as_str());
    let list = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=principalId%20eq%20'{sp}'", c.rg_path("rg-rbac")),
            None,
        )
        .await;
    assert_eq!(list.json()["value"].as_array().unwrap().len(), 2);
    let role = c
        .arm_with(&t, Method::GET, &format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}?api-version=2022-04-01", c.sub), None)
        .await;
    assert_eq!(role.json()["properties"]["roleName"], "Contributor");
    let del = c
        .arm_with(&t, Method::DELETE, &assignment(&c, "rg-rbac", name), None)
        .await;
    assert_eq!(del.status, StatusCode::OK);
    let get = c
        .arm_with(&t, Method::GET, &assignment(&c, "rg-rbac", name), None)
        .await;
    assert_eq!(
        (get.status, get.code()),
        (StatusCode::NOT_FOUND, "RoleAssignmentNotFound".into())
    );
    let again = c
        .arm_with(&t, Method::DELETE, &assignment(&c, "rg-rbac", name), None)
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn managed_identities_and_federated_credentials() {
    let (emu, c) = start(0.01, |cfg| cfg.principal_replication_secs = 0.0).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg-mi").await;
    let id_path = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rancher-wi",
        c.rg_path("rg-mi")
    );
    let url = |p: &str| format!("{p}?api-version=2024-11-30");
    let unregistered = c
        .arm_with(
            &t,
            Method::PUT,
            &url(&id_path),
            Some(json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(unregistered.code(), "MissingSubscriptionRegistration");
    let reg = format!(
        "/subscriptions/{}/providers/Microsoft.ManagedIdentity",
        c.sub
    );
    c.arm_with(
        &t,
        Method::POST,
        &format!("{reg}/register?api-version=2025-04-01"),
        None,
    )
    .await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            c.arm_with(
                &t,
                Method::PUT,
                &url(&id_path),
                Some(json!({"location": "West Europe", "tags": {"a": "b"}})),
            )
            .await
            .status
                == StatusCode::CREATED
        })
        .await
    );
    let got = c
        .arm_with(&t, Method::GET, &url(&id_path), None)
        .await
        .json();
    assert_eq!(got["location"], "westeurope");
    assert_eq!(got["properties"]["tenantId"], c.tenant.as_str());
    let principal = got["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_string();
    let client_id = got["properties"]["clientId"].as_str().unwrap().to_string();
    let again = c
        .arm_with(
            &t,
            Method::PUT,
            &url(&id_path),
            Some(json!({"location": "westeurope"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.json()["properties"]["principalId"],
        principal.as_str(),
        "ids survive an update"
    );
    let no_location = c
        .arm_with(
            &t,
            Method::PUT,
            &url(&format!("{id_path}-2")),
            Some(json!({})),
        )
        .await;
    assert_eq!(no_location.code(), "InvalidParameter");

    // Its service principal is in Graph and may be granted a role.
    let sp = graph_get(&c, &format!("/v1.0/servicePrincipals/{principal}")).await;
    assert_eq!(sp.json()["servicePrincipalType"], "ManagedIdentity");
    assert_eq!(sp.json()["appId"], client_id.as_str());
    let ra = put_ra(
        &c,
        &t,
        "rg-mi",
        "2c5a614a-a7d6-4502-b150-c2fb455033ff",
        grant(&c, CONTRIBUTOR, &principal, None),
    )
    .await;
    assert_eq!(ra.status, StatusCode::CREATED, "{:?}", ra.json());

    let fic = format!("{id_path}/federatedIdentityCredentials/rancher-sa");
    let issuer = "https://oidc.example.test/issuer/";
    let no_aud = c
        .arm_with(&t, Method::PUT, &url(&fic), Some(json!({"properties": {"issuer": issuer, "subject": "system:serviceaccount:cattle-system:rancher"}})))
        .await;
    assert_eq!(
        (no_aud.status, no_aud.code()),
        (StatusCode::BAD_REQUEST, "InvalidParameter".into())
    );
    let http = c
        .arm_with(&t, Method::PUT, &url(&fic), Some(json!({"properties": {"issuer": "http://x/", "subject": "s", "audiences": ["api://AzureADTokenExchange"]}})))
        .await;
    assert_eq!(http.status, StatusCode::BAD_REQUEST);
    let body = json!({"properties": {"issuer": issuer, "subject": "system:serviceaccount:cattle-system:rancher", "audiences": ["api://AzureADTokenExchange"]}});
    let created = c
        .arm_with(&t, Method::PUT, &url(&fic), Some(body.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    assert_eq!(
        created.json()["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    );
    assert_eq!(created.json()["properties"]["issuer"], issuer);
    assert_eq!(
        c.arm_with(&t, Method::PUT, &url(&fic), Some(body.clone()))
            .await
            .status,
        StatusCode::OK
    );
    let list = c
        .arm_with(
            &t,
            Method::GET,
            &url(&format!("{id_path}/federatedIdentityCredentials")),
            None,
        )
        .await;
    assert_eq!(list.json()["value"].as_array().unwrap().len(), 1);
    let orphan = c
        .arm_with(&t, Method::PUT, &url(&format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nope/federatedIdentityCredentials/x", c.rg_path("rg-mi"))), Some(body))
        .await;
    assert_eq!(
        (orphan.status, orphan.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound".into())
    );

    let del = c.arm_with(&t, Method::DELETE, &url(&id_path), None).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        c.arm_with(&t, Method::GET, &url(&fic), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        graph_get(&c, &format!("/v1.0/servicePrincipals/{principal}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.arm_with(&t, Method::DELETE, &url(&id_path), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    drop(emu);
}
