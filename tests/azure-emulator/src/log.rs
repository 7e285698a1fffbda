//! The request log: method, path, api-version, redacted body and response status.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One logged request. Never holds an `Authorization` header, a client secret or a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When the request arrived (RFC 3339).
    pub timestamp: String,
    /// Which service answered: `entra`, `arm`, `keyvault`, `graph`, `acr`, `oidc`, `unknown`.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Path as sent (case preserved, no query).
    pub path: String,
    /// Query string as sent, if any.
    pub query: Option<String>,
    /// The `api-version` query parameter, if any.
    pub api_version: Option<String>,
    /// The JSON body with secret-bearing values replaced by `<redacted>`; `None` when the
    /// body is empty or not logged (token requests).
    pub body: Option<Value>,
    /// True when a body was sent but deliberately not logged.
    pub body_withheld: bool,
    /// Response status code.
    pub status: u16,
    /// The `x-ms-correlation-request-id` of the response, if any.
    pub correlation_id: Option<String>,
}

/// A shared, append-only log of the requests the emulator answered.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    inner: Arc<Mutex<Vec<LogEntry>>>,
}

impl RequestLog {
    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Entries whose path contains `needle` (case-insensitive).
    pub fn matching(&self, needle: &str) -> Vec<LogEntry> {
        let n = needle.to_ascii_lowercase();
        self.entries()
            .into_iter()
            .filter(|e| e.path.to_ascii_lowercase().contains(&n))
            .collect()
    }

    /// Empties the log (sequence numbers keep counting).
    pub fn clear(&self) {
        if let Ok(mut v) = self.inner.lock() {
            v.clear();
        }
    }

    pub(crate) fn push(&self, mut entry: LogEntry) {
        if let Ok(mut v) = self.inner.lock() {
            entry.seq = v.last().map_or(0, |e| e.seq) + 1;
            v.push(entry);
        }
    }
}
