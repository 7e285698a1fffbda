//! `Secret<T>`: a value that redacts itself everywhere except where the engine asks for it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// The key of the object a [`Secret`] serializes to inside [`reveal_secrets`]:
/// `{"$secret": value}`. The engine strips these before anything is persisted.
pub const SECRET_MARKER: &str = "$secret";

/// What a secret shows in `Debug`, `Display` and ordinary serialization.
const REDACTED: &str = "[redacted]";

thread_local! {
    static REVEAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with secrets serializing as `{"$secret": value}` instead of `"[redacted]"`.
/// Only the engine calls this, to hand values to later steps in memory.
pub fn reveal_secrets<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REVEAL.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REVEAL.with(|r| r.replace(true)));
    f()
}

/// A secret value (k3s token, client secret, Git token): redacted in `Debug`, `Display`
/// and serialization, so it cannot reach logs, the state store or traces by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself: use it only where it must go (a 0600 file, stdin, a request body).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(v: T) -> Self {
        Secret(v)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REVEAL.with(|r| r.get()) {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(SECRET_MARKER, &self.0)?;
            m.end()
        } else {
            s.serialize_str(REDACTED)
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let inner = match v {
            serde_json::Value::Object(mut m) if m.len() == 1 && m.contains_key(SECRET_MARKER) => {
                m.remove(SECRET_MARKER).unwrap_or_default()
            }
            other => other,
        };
        serde_json::from_value(inner)
            .map(Secret)
            .map_err(serde::de::Error::custom)
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Secret<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut s = T::json_schema(generator);
        s.insert("writeOnly".into(), serde_json::Value::Bool(true));
        s.insert("x-siteflow-secret".into(), serde_json::Value::Bool(true));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_unless_revealed() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        let v = reveal_secrets(|| serde_json::to_value(&s).unwrap());
        assert_eq!(v, serde_json::json!({"$secret": "hunter2"}));
        // The flag does not leak out of the closure.
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn deserializes_plain_and_marked() {
        let a: Secret = serde_json::from_str("\"x\"").unwrap();
        let b: Secret = serde_json::from_value(serde_json::json!({"$secret": "x"})).unwrap();
        assert_eq!(a.expose(), "x");
        assert_eq!(b.expose(), "x");
    }
}
