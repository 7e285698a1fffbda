//! Key Vault secrets data plane (one vault at the emulator's root), with the 401
//! `WWW-Authenticate: Bearer authorization=..., resource=...` challenge flow.

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::clock::unix_now;
use crate::http::{Req, Resp};
use crate::schema::{self, SchemaFile};
use crate::server::Shared;
use crate::token::{TokenError, audience_ok, bearer};

/// api-versions the secrets API accepts.
pub(crate) const VERSIONS: &[&str] = &[
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-06-01",
    "2025-07-01",
    "2026-04-01",
];
/// The audience Key Vault tokens must carry.
pub(crate) const VAULT_AUDIENCE: &str = "https://vault.azure.net";

#[derive(Debug, Clone)]
struct SecretVersion {
    name: String,
    version: String,
    value: String,
    content_type: Option<String>,
    tags: Option<Value>,
    enabled: bool,
    created: u64,
    updated: u64,
}

#[derive(Default)]
pub(crate) struct VaultState {
    secrets: BTreeMap<String, Vec<SecretVersion>>,
    deleted: BTreeMap<String, (u64, Vec<SecretVersion>)>,
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn challenge(shared: &Shared, status_msg: &str) -> Resp {
    kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", status_msg).with_header(
        "WWW-Authenticate",
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"{VAULT_AUDIENCE}\"",
            shared.base_url, shared.config.tenant_id
        ),
    )
}

fn authorize(shared: &Shared, req: &Req) -> Option<Resp> {
    let Some(token) = bearer(&req.headers) else {
        return Some(challenge(
            shared,
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    match shared.signer.verify(token) {
        Err(TokenError::Expired) => Some(challenge(shared, "AKV10022: Token expired.")),
        Err(_) => Some(challenge(shared, "AKV10022: Invalid token.")),
        Ok(claims) => {
            if audience_ok(&claims, &[VAULT_AUDIENCE, &shared.base_url]) {
                None
            } else {
                Some(challenge(shared, "AKV10022: Invalid audience."))
            }
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 127 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn bundle(base: &str, s: &SecretVersion) -> Value {
    let mut b = json!({
        "value": s.value,
        "id": format!("{base}/secrets/{}/{}", s.name, s.version),
        "attributes": {
            "enabled": s.enabled,
            "created": s.created,
            "updated": s.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90
        }
    });
    if let Some(ct) = &s.content_type {
        b["contentType"] = json!(ct);
    }
    if let Some(t) = &s.tags {
        b["tags"] = t.clone();
    }
    b
}

fn item(base: &str, s: &SecretVersion, with_version: bool) -> Value {
    let mut b = bundle(base, s);
    if let Some(o) = b.as_object_mut() {
        o.remove("value");
        if !with_version {
            o.insert("id".into(), json!(format!("{base}/secrets/{}", s.name)));
        }
    }
    b
}

fn not_found(name: &str) -> Resp {
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    if let Some(r) = authorize(shared, req) {
        return r;
    }
    match req.query_param("api-version") {
        None => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The request URI is missing the required query parameter 'api-version'.",
            );
        }
        Some(v) if !VERSIONS.contains(&v) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version (2026-04-01)."
                ),
            );
        }
        Some(_) => {}
    }
    let base = shared.base_url.as_str();
    let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    let first = segs[0].to_ascii_lowercase();
    let mut vault = shared.lock_vault();
    let now = unix_now();
    match (req.method.clone(), first.as_str(), &segs[1..]) {
        (Method::GET, "secrets", []) => {
            let items: Vec<Value> = vault
                .secrets
                .values()
                .filter_map(|v| v.last())
                .map(|s| item(base, s, false))
                .collect();
            Resp::json(StatusCode::OK, &json!({"value": items, "nextLink": null}))
        }
        (Method::PUT, "secrets", [name]) => {
            if !valid_name(name) {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The request URI contains an invalid name: secret names may contain only 0-9, a-z, A-Z and -.",
                );
            }
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    return kv_error(
                        StatusCode::BAD_REQUEST,
                        "BadParameter",
                        &format!("Invalid request body: {e}"),
                    );
                }
            };
            if let Err(v) = schema::validate(SchemaFile::KeyVault, "SecretSetParameters", &body) {
                return kv_error(StatusCode::BAD_REQUEST, "BadParameter", &format!("{v:?}"));
            }
            if vault.deleted.contains_key(&name.to_ascii_lowercase()) {
                return kv_error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
                    ),
                );
            }
            let s = SecretVersion {
                name: (*name).to_string(),
                version: uuid::Uuid::new_v4().simple().to_string(),
                value: body
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                content_type: body
                    .get("contentType")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                tags: body.get("tags").cloned(),
                enabled: body
                    .pointer("/attributes/enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                created: now,
                updated: now,
            };
            let out = bundle(base, &s);
            vault
                .secrets
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(s);
            Resp::json(StatusCode::OK, &out)
        }
        (Method::GET, "secrets", [name, "versions"]) => {
            match vault.secrets.get(&name.to_ascii_lowercase()) {
                Some(vs) => Resp::json(
                    StatusCode::OK,
                    &json!({"value": vs.iter().map(|s| item(base, s, true)).collect::<Vec<_>>(), "nextLink": null}),
                ),
                None => not_found(name),
            }
        }
        (Method::GET, "secrets", [name, rest @ ..]) if rest.len() <= 1 => {
            let Some(vs) = vault.secrets.get(&name.to_ascii_lowercase()) else {
                return not_found(name);
            };
            let found = match rest.first().filter(|v| !v.is_empty()) {
                Some(ver) => vs.iter().find(|s| s.version.eq_ignore_ascii_case(ver)),
                None => vs.last(),
            };
            match found {
                Some(s) if !s.enabled => kv_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                ),
                Some(s) => Resp::json(StatusCode::OK, &bundle(base, s)),
                None => not_found(name),
            }
        }
        (Method::DELETE, "secrets", [name]) => {
            match vault.secrets.remove(&name.to_ascii_lowercase()) {
                Some(vs) => {
                    let latest = vs.last().cloned();
                    vault.deleted.insert(name.to_ascii_lowercase(), (now, vs));
                    let mut b = latest.map(|s| bundle(base, &s)).unwrap_or(json!({}));
                    if let Some(o) = b.as_object_mut() {
                        o.remove("value");
                        o.insert(
                            "recoveryId".into(),
                            json!(format!("{base}/deletedsecrets/{name}")),
                        );
                        o.insert("deletedDate".into(), json!(now));
                        o.insert("scheduledPurgeDate".into(), json!(now + 90 * 86_400));
                    }
                    Resp::json(StatusCode::OK, &b)
                }
                None => not_found(name),
            }
        }
        (Method::GET, "deletedsecrets", [name]) => {
            match vault.deleted.get(&name.to_ascii_lowercase()) {
                Some((when, vs)) => {
                    let mut b = vs.last().map(|s| item(base, s, true)).unwrap_or(json!({}));
                    b["recoveryId"] = json!(format!("{base}/deletedsecrets/{name}"));
                    b["deletedDate"] = json!(when);
                    b["scheduledPurgeDate"] = json!(when + 90 * 86_400);
                    Resp::json(StatusCode::OK, &b)
                }
                None => not_found(name),
            }
        }
        (Method::DELETE, "deletedsecrets", [name]) => {
            match vault.deleted.remove(&name.to_ascii_lowercase()) {
                Some(_) => Resp::empty(StatusCode::NO_CONTENT),
                None => not_found(name),
            }
        }
        _ => kv_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested resource was not found.",
        ),
    }
}
