//! Azure Container Registry token exchange: `/oauth2/exchange` (Entra access token to ACR
//! refresh token) and `/oauth2/token` (refresh token to scoped access token), 2021-07-01.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::clock::unix_now;
use crate::http::{Req, Resp};
use crate::server::Shared;
use crate::token::audience_ok;

/// ACR refresh tokens live three hours.
const REFRESH_LIFETIME: u64 = 3 * 3600;
/// ACR access tokens live 75 minutes.
const ACCESS_LIFETIME: u64 = 75 * 60;

fn acr_error(status: StatusCode, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        &json!({"errors": [{"code": code, "message": message, "detail": null}]}),
    )
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let what = req.seg_lc(1).unwrap_or_default();
    if req.seg_lc(0).as_deref() == Some("v2") {
        let host = req.header("host").unwrap_or("127.0.0.1");
        return acr_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .with_header(
            "WWW-Authenticate",
            format!(
                "Bearer realm=\"{}/oauth2/token\",service=\"{host}\"",
                shared.base_url
            ),
        );
    }
    if req.method != Method::POST {
        return acr_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
        );
    }
    let form = req.form();
    let get = |k: &str| Req::form_value(&form, k).unwrap_or("").to_string();
    match what.as_str() {
        "exchange" => {
            if get("grant_type") != "access_token" {
                return acr_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "grant_type must be access_token.",
                );
            }
            let service = get("service");
            if service.is_empty() {
                return acr_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "service is required.",
                );
            }
            let claims = match shared.signer.verify(&get("access_token")) {
                Ok(c) => c,
                Err(_) => {
                    return acr_error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "The access token is invalid or expired.",
                    );
                }
            };
            let accepted = [
                "https://management.azure.com",
                "https://management.core.windows.net",
                "https://containerregistry.azure.net",
                shared.base_url.as_str(),
            ];
            if !audience_ok(&claims, &accepted) {
                return acr_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "The access token has the wrong audience.",
                );
            }
            let now = unix_now();
            let refresh = shared.signer.issue(&json!({
                "jti": uuid::Uuid::new_v4().to_string(),
                "sub": claims.get("oid").cloned().unwrap_or(Value::Null),
                "tenant": claims.get("tid").cloned().unwrap_or(Value::Null),
                "aud": service,
                "iss": "Azure Container Registry",
                "grant_type": "refresh_token",
                "nbf": now,
                "iat": now,
                "exp": now + REFRESH_LIFETIME
            }));
            Resp::json(StatusCode::OK, &json!({"refresh_token": refresh}))
        }
        "token" => {
            if get("grant_type") != "refresh_token" {
                return acr_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "grant_type must be refresh_token.",
                );
            }
            let service = get("service");
            let claims = match shared.signer.verify(&get("refresh_token")) {
                Ok(c) if c.get("grant_type").and_then(Value::as_str) == Some("refresh_token") => c,
                _ => {
                    return acr_error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "The refresh token is invalid or expired.",
                    );
                }
            };
            if claims.get("aud").and_then(Value::as_str) != Some(service.as_str()) {
                return acr_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "The refresh token was issued for another service.",
                );
            }
            let access: Vec<Value> = get("scope")
                .split_whitespace()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (t, n, a) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = unix_now();
            let token = shared.signer.issue(&json!({
                "jti": uuid::Uuid::new_v4().to_string(),
                "sub": claims.get("sub").cloned().unwrap_or(Value::Null),
                "aud": service,
                "iss": "Azure Container Registry",
                "access": access,
                "nbf": now,
                "iat": now,
                "exp": now + ACCESS_LIFETIME
            }));
            Resp::json(StatusCode::OK, &json!({"access_token": token}))
        }
        _ => acr_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Unknown ACR endpoint."),
    }
}
