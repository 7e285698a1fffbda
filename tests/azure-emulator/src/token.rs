//! JWT-shaped bearer tokens: issued by Entra and ACR, checked by ARM, Key Vault and Graph.
//!
//! Tokens are `header.claims.signature` (base64url); the signature is HMAC-SHA256 under a
//! key generated at start, so only this emulator instance's tokens verify.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::clock::unix_now;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

pub(crate) struct TokenSigner {
    key: ring::hmac::Key,
}

impl TokenSigner {
    pub(crate) fn new() -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret);
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
        }
    }

    /// Signs `claims` (an object) into a compact JWT.
    pub(crate) fn issue(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "HS256", "kid": "siteflow-emulator"});
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{h}.{c}");
        let sig = ring::hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Verifies signature and expiry; returns the claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        ring::hmac::verify(&self.key, format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// The `Authorization: Bearer ...` token of a request, if any.
pub(crate) fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Normalises an audience or resource URI for comparison.
pub(crate) fn norm_aud(a: &str) -> String {
    a.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether the token's `aud` is one of `accepted`.
pub(crate) fn audience_ok(claims: &Value, accepted: &[&str]) -> bool {
    let aud = claims.get("aud").and_then(Value::as_str).map(norm_aud);
    aud.is_some_and(|a| accepted.iter().any(|x| norm_aud(x) == a))
}
