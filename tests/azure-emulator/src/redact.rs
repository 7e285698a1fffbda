//! Redaction of secret-bearing request bodies before they reach the request log.

use serde_json::Value;

const REDACTED: &str = "<redacted>";

/// JSON keys whose values are secrets wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "adminpassword",
    "customdata",
    "configurationprotectedsettings",
    "client_secret",
    "clientsecret",
    "password",
    "secrettext",
    "access_token",
    "refresh_token",
    "privatekey",
    "https_key",
    "httpskey",
];

/// Replaces secret values in `v` (recursively).
pub(crate) fn redact_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact_json(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A Key Vault secret body: the `value` is the secret itself.
pub(crate) fn redact_secret_body(v: &mut Value) {
    if let Some(obj) = v.as_object_mut()
        && obj.contains_key("value")
    {
        obj.insert("value".into(), Value::String(REDACTED.into()));
    }
    redact_json(v);
}
