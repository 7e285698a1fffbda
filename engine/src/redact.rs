//! Redaction of secret values from everything the engine writes or shows.

use serde_json::Value;
use siteflow_step::SECRET_MARKER;
use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for in text (they would redact ordinary
/// words); they are still never persisted as outputs or inputs.
const MIN_LEN: usize = 4;

/// The run's known secret values.
#[derive(Default, Debug)]
pub struct Redactor {
    secrets: RwLock<Vec<String>>,
    /// Secrets shorter than [`MIN_LEN`]: an output that is exactly one is still a secret.
    short: RwLock<Vec<String>>,
}

impl Redactor {
    /// Adds a value to redact.
    pub fn add(&self, value: &str) {
        if value.len() < MIN_LEN {
            let mut s = self.short.write().unwrap_or_else(|e| e.into_inner());
            if !value.is_empty() && !s.iter().any(|x| x == value) {
                s.push(value.to_string());
            }
            return;
        }
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|x| x == value) {
            s.push(value.to_string());
            // Longest first, so a secret containing another is replaced whole.
            s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// `text` with every known secret replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let s = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|x| text.contains(x.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for x in s.iter() {
            out = out.replace(x.as_str(), REDACTED);
        }
        Cow::Owned(out)
    }

    /// Whether `s` is one of the short secrets (never searched for in text).
    fn is_short(&self, s: &str) -> bool {
        let short = self.short.read().unwrap_or_else(|e| e.into_inner());
        short.iter().any(|x| x == s)
    }

    /// A JSON value with every string redacted.
    pub fn redact_json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.redact(s).into_owned()),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact_json(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), self.redact_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Splits step outputs carrying `{"$secret": v}` markers into the in-memory value
    /// (markers unwrapped, values registered for redaction) and the persisted value
    /// (markers kept, values removed).
    pub fn split_outputs(&self, v: &Value) -> (Value, Value) {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key(SECRET_MARKER) => {
                let inner = &m[SECRET_MARKER];
                match inner {
                    Value::String(s) => self.add(s),
                    other => self.add(&other.to_string()),
                }
                (
                    inner.clone(),
                    serde_json::json!({ SECRET_MARKER: Value::Null }),
                )
            }
            Value::Object(m) => {
                let mut plain = serde_json::Map::new();
                let mut kept = serde_json::Map::new();
                for (k, x) in m {
                    let (p, s) = self.split_outputs(x);
                    plain.insert(k.clone(), p);
                    kept.insert(k.clone(), s);
                }
                (Value::Object(plain), Value::Object(kept))
            }
            Value::Array(a) => {
                let (p, s): (Vec<_>, Vec<_>) = a.iter().map(|x| self.split_outputs(x)).unzip();
                (Value::Array(p), Value::Array(s))
            }
            // A string holding a secret is a secret: persisted as a placeholder that a resume
            // recovers, never as "[redacted]" text that a later step would take for the value.
            Value::String(s) if matches!(self.redact(s), Cow::Owned(_)) || self.is_short(s) => {
                (v.clone(), serde_json::json!({ SECRET_MARKER: Value::Null }))
            }
            other => (other.clone(), other.clone()),
        }
    }
}

/// Whether the persisted outputs have a secret placeholder at `path` (or inside it).
pub fn secret_at(persisted: &Value, path: &[String]) -> bool {
    let mut cur = persisted;
    for seg in path {
        if let Value::Object(m) = cur
            && m.contains_key(SECRET_MARKER)
        {
            return true;
        }
        cur = match cur {
            Value::Object(m) => match m.get(seg) {
                Some(x) => x,
                None => return false,
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return has_secret_placeholder(cur),
            },
            _ => return false,
        };
    }
    has_secret_placeholder(cur)
}

/// Whether persisted outputs had secrets removed (so a resume must re-observe them).
pub fn has_secret_placeholder(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key(SECRET_MARKER) || m.values().any(has_secret_placeholder),
        Value::Array(a) => a.iter().any(has_secret_placeholder),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_and_redacts() {
        let r = Redactor::default();
        let (plain, kept) =
            r.split_outputs(&json!({"token": {"$secret": "K10abc::server:xyz"}, "n": 1}));
        assert_eq!(plain, json!({"token": "K10abc::server:xyz", "n": 1}));
        assert_eq!(kept, json!({"token": {"$secret": null}, "n": 1}));
        assert!(has_secret_placeholder(&kept));
        assert_eq!(
            r.redact("join with K10abc::server:xyz now"),
            "join with [redacted] now"
        );
        assert_eq!(
            r.redact_json(&json!(["K10abc::server:xyz"])),
            json!(["[redacted]"])
        );
        // A plain string output holding a secret is persisted as a placeholder.
        let (plain, kept) = r.split_outputs(&json!({"line": "t=K10abc::server:xyz", "ok": "yes"}));
        assert_eq!(plain["line"], "t=K10abc::server:xyz");
        assert_eq!(kept, json!({"line": {"$secret": null}, "ok": "yes"}));
        assert!(secret_at(&kept, &["line".into()]));
        assert!(!secret_at(&kept, &["ok".into()]));
    }

    /// A secret too short to search for in text is still never stored as an output.
    #[test]
    fn a_short_secret_output_is_a_placeholder() {
        let r = Redactor::default();
        r.add("xy1");
        assert_eq!(r.redact("xy1 stays in text"), "xy1 stays in text");
        let (plain, kept) = r.split_outputs(&json!({"pin": "xy1", "other": "xy12"}));
        assert_eq!(plain, json!({"pin": "xy1", "other": "xy12"}));
        assert_eq!(kept, json!({"pin": {"$secret": null}, "other": "xy12"}));
    }
}
