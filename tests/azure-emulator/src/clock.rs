//! Emulated time: every configured duration is multiplied by the time scale.

use std::time::Duration;
use tokio::time::Instant;

/// Converts emulated seconds into real durations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    scale: f64,
}

impl Clock {
    pub(crate) fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Self { scale }
    }

    /// Real duration of `secs` emulated seconds.
    pub(crate) fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.scale).max(0.0))
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp for now.
pub(crate) fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `Retry-After` seconds for a real wait: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let s = wait.as_secs_f64().ceil() as u64;
    s.max(1)
}
