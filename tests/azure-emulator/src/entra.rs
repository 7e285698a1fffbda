//! Microsoft Entra ID: OpenID discovery and the v2.0 token endpoint (client-credentials
//! grant against the configured service principals).

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::clock::unix_now;
use crate::http::{Req, Resp};
use crate::server::Shared;

/// Lifetime of issued access tokens (seconds, not scaled).
const TOKEN_LIFETIME: u64 = 3599;

fn aad_error(
    shared: &Shared,
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> Resp {
    let trace = uuid::Uuid::new_v4().to_string();
    let corr = uuid::Uuid::new_v4().to_string();
    Resp::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {}", crate::clock::rfc3339_now()),
            "error_codes": [code],
            "timestamp": crate::clock::rfc3339_now(),
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("{}/error?code={code}", shared.base_url)
        }),
    )
}

/// Whether `segs` (after the tenant) addresses Entra.
pub(crate) fn is_entra_path(segs: &[String]) -> bool {
    let l: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    matches!(
        l.iter()
            .skip(1)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["v2.0", ".well-known", "openid-configuration"]
            | [".well-known", "openid-configuration"]
            | ["oauth2", "v2.0", "token"]
            | ["oauth2", "token"]
            | ["discovery", "v2.0", "keys"]
            | ["discovery", "keys"]
    )
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let tenant = req.segs[0].clone();
    let known = tenant.eq_ignore_ascii_case(&shared.config.tenant_id)
        || ["common", "organizations"].contains(&tenant.to_ascii_lowercase().as_str());
    let rest: Vec<String> = req.segs[1..]
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let tid = &shared.config.tenant_id;
    let base = &shared.base_url;
    if !known {
        return aad_error(
            shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    match (
        req.method.clone(),
        rest.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
    ) {
        (Method::GET, [.., ".well-known", "openid-configuration"]) => {
            let v2 = rest.first().is_some_and(|s| s == "v2.0");
            let (issuer, token_ep, auth_ep) = if v2 {
                (
                    format!("{base}/{tid}/v2.0"),
                    format!("{base}/{tid}/oauth2/v2.0/token"),
                    format!("{base}/{tid}/oauth2/v2.0/authorize"),
                )
            } else {
                (
                    format!("https://sts.windows.net/{tid}/"),
                    format!("{base}/{tid}/oauth2/token"),
                    format!("{base}/{tid}/oauth2/authorize"),
                )
            };
            Resp::json(
                StatusCode::OK,
                &json!({
                    "token_endpoint": token_ep,
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                    "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": issuer,
                    "request_uri_parameter_supported": false,
                    "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                    "authorization_endpoint": auth_ep,
                    "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
                    "http_logout_supported": true,
                    "frontchannel_logout_supported": true,
                    "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": "microsoftonline.com",
                    "cloud_graph_host_name": "graph.windows.net",
                    "msgraph_host": "graph.microsoft.com",
                    "rbac_url": "https://pas.windows.net"
                }),
            )
        }
        (Method::GET, ["discovery", ..]) => Resp::json(StatusCode::OK, &json!({"keys": []})),
        (Method::POST, ["oauth2", ..]) => token(shared, req),
        _ => Resp::json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// The resource (audience) of a v2 scope such as `https://management.azure.com/.default`.
fn audience_of(scope: &str) -> String {
    let first = scope
        .split_whitespace()
        .find(|s| !["openid", "profile", "offline_access", "email"].contains(s))
        .unwrap_or("");
    first
        .strip_suffix("/.default")
        .or_else(|| first.strip_suffix(".default"))
        .unwrap_or(first)
        .to_string()
}

/// The (client id, object id) a client-credentials login stands for: a configured principal,
/// or an application of the directory with one of its passwords and a service principal.
fn login(shared: &Shared, client_id: &str, secret: Option<&str>) -> Result<(String, String), Resp> {
    let bad_secret = || {
        aad_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        )
    };
    if let Some(principal) = shared.config.principal(client_id) {
        if secret != Some(principal.client_secret.as_str()) {
            return Err(bad_secret());
        }
        return Ok((principal.client_id.clone(), principal.object_id.clone()));
    }
    match shared
        .lock_directory()
        .login(client_id, secret.unwrap_or_default())
    {
        Some(Ok(object_id)) => Ok((client_id.to_string(), object_id)),
        Some(Err(false)) => Err(bad_secret()),
        Some(Err(true)) => Err(aad_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000229,
            &format!(
                "The client application {client_id} is missing service principal in the tenant {}.",
                shared.config.tenant_id
            ),
        )),
        None => Err(aad_error(
            shared,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                shared.config.tenant_id
            ),
        )),
    }
}

fn token(shared: &Shared, req: &Req) -> Resp {
    let form = req.form();
    let grant = Req::form_value(&form, "grant_type").unwrap_or("");
    if grant != "client_credentials" {
        return aad_error(
            shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let client_id = Req::form_value(&form, "client_id").unwrap_or("");
    let secret = Req::form_value(&form, "client_secret");
    let (client_id, object_id) = match login(shared, client_id, secret) {
        Ok(who) => who,
        Err(resp) => return resp,
    };
    let scope = Req::form_value(&form, "scope")
        .or_else(|| Req::form_value(&form, "resource"))
        .unwrap_or("");
    let aud = audience_of(scope);
    if aud.is_empty() {
        return aad_error(
            shared,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid.",
        );
    }
    let now = unix_now();
    let claims = json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{}/", shared.config.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME,
        "appid": client_id,
        "azp": client_id,
        "oid": object_id,
        "sub": object_id,
        "tid": shared.config.tenant_id,
        "idtyp": "app",
        "ver": "1.0"
    });
    let access_token = shared.signer.issue(&claims);
    let body: Value = json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": access_token
    });
    Resp::json(StatusCode::OK, &body)
}
