//! The per-subscription request limiter, shared by every run in the process: fed by the
//! `x-ms-ratelimit-remaining-subscription-*` headers and by 429s, it holds requests back
//! while ARM has asked us to wait and paces them when the remaining budget runs low.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Below this many remaining requests, requests are paced.
const LOW_WATERMARK: i64 = 20;

/// One subscription's limiter.
#[derive(Debug, Default)]
pub struct Limiter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    blocked_until: Option<Instant>,
    remaining_reads: Option<i64>,
    remaining_writes: Option<i64>,
    throttled: u64,
}

static LIMITERS: LazyLock<Mutex<HashMap<String, Arc<Limiter>>>> = LazyLock::new(Default::default);

/// The process-wide limiter of a subscription (or of the tenant, for `""`).
pub fn limiter_for(subscription: &str) -> Arc<Limiter> {
    let mut m = LIMITERS.lock().unwrap_or_else(|p| p.into_inner());
    m.entry(subscription.to_ascii_lowercase())
        .or_default()
        .clone()
}

impl Limiter {
    /// How long a request must wait before it may be sent now.
    pub fn delay(&self, write: bool) -> Duration {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let blocked = s
            .blocked_until
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default();
        let remaining = if write {
            s.remaining_writes
        } else {
            s.remaining_reads
        };
        let pace = match remaining {
            Some(r) if r <= 0 => Duration::from_secs(1),
            Some(r) if r < LOW_WATERMARK => Duration::from_millis(50 * (LOW_WATERMARK - r) as u64),
            _ => Duration::ZERO,
        };
        blocked.max(pace)
    }

    /// Records a response's ratelimit headers.
    pub fn observe_remaining(&self, reads: Option<i64>, writes: Option<i64>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if reads.is_some() {
            s.remaining_reads = reads;
        }
        if writes.is_some() {
            s.remaining_writes = writes;
        }
    }

    /// Records a 429: nothing is sent to this subscription before `after` has passed.
    pub fn throttled(&self, after: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + after;
        s.blocked_until = Some(s.blocked_until.map_or(until, |t| t.max(until)));
        s.throttled += 1;
    }

    /// How many 429s this limiter has seen.
    pub fn throttled_count(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_429_blocks_and_low_budget_paces() {
        let l = limiter_for("00000000-test-limiter");
        assert_eq!(l.delay(false), Duration::ZERO);
        l.throttled(Duration::from_secs(3));
        assert_eq!(l.delay(true), Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(l.delay(true), Duration::ZERO);
        l.observe_remaining(None, Some(10));
        assert_eq!(l.delay(true), Duration::from_millis(500));
        assert_eq!(l.delay(false), Duration::ZERO);
        assert!(Arc::ptr_eq(&l, &limiter_for("00000000-TEST-limiter")));
    }
}
