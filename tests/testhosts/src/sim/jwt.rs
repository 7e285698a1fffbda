//! Service-account tokens: JWTs with the claims kube-apiserver puts in them, signed HS256 with
//! the server's key (real k3s signs RS256; verifiers in tests only read the claims).

use base64::Engine as _;
use sha2::{Digest, Sha256};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A signed JWT for `claims`.
pub fn sign(key: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = hmac_sha256(key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&sig))
}

/// The claims of a JWT this key signed; `None` when the signature does not verify.
pub fn verify(key: &[u8], token: &str) -> Option<serde_json::Value> {
    let (signing_input, sig) = token.rsplit_once('.')?;
    if b64(&hmac_sha256(key, signing_input.as_bytes())) != sig {
        return None;
    }
    let payload = signing_input.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
