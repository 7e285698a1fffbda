//! Fault injection and ARM throttling: 429 storms, 5xx rates, slow and failing operations,
//! and the per-subscription read/write rate windows behind the ratelimit headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::Clock;

/// What a fault rule does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Fault {
    /// The next `count` matching requests get `429` with `Retry-After: retry_after_secs`.
    #[serde(rename_all = "camelCase")]
    Throttle {
        /// How many requests to refuse.
        count: u32,
        /// The `Retry-After` value sent (seconds, not scaled).
        retry_after_secs: u64,
    },
    /// Matching requests fail with `status` (a 5xx) with probability `rate` (seeded RNG),
    /// at most `count` times when given.
    #[serde(rename_all = "camelCase")]
    ServerError {
        /// Probability in [0, 1].
        rate: f64,
        /// 500, 502, 503 or 504.
        status: u16,
        /// Stop after this many injected errors.
        #[serde(default)]
        count: Option<u32>,
    },
    /// Long-running operations on matching resources take `factor` times longer.
    #[serde(rename_all = "camelCase")]
    Slow {
        /// Duration multiplier.
        factor: f64,
    },
    /// The next matching long-running operations end `Failed` with this error.
    #[serde(rename_all = "camelCase")]
    FailOperation {
        /// ARM error code, e.g. `AllocationFailed`.
        code: String,
        /// Error message.
        #[serde(default)]
        message: Option<String>,
        /// How many operations to fail (`None`: all).
        #[serde(default)]
        count: Option<u32>,
    },
}

/// A fault and what it applies to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Assigned when added.
    #[serde(default)]
    pub id: u64,
    /// Resource type such as `Microsoft.Compute/virtualMachines` (case-insensitive);
    /// `None` or `*` matches every ARM request.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// HTTP methods to match (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// The fault.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule for every ARM request.
    pub fn any(fault: Fault) -> Self {
        Self {
            id: 0,
            resource_type: None,
            methods: Vec::new(),
            fault,
        }
    }

    /// A rule for one resource type.
    pub fn for_type(resource_type: &str, fault: Fault) -> Self {
        Self {
            resource_type: Some(resource_type.to_string()),
            ..Self::any(fault)
        }
    }

    /// Restricts the rule to these methods.
    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        self
    }

    fn matches(&self, resource_type: &str, method: &str) -> bool {
        let type_ok = match self.resource_type.as_deref() {
            None | Some("*") => true,
            Some(t) => t.eq_ignore_ascii_case(resource_type),
        };
        let method_ok =
            self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        type_ok && method_ok
    }
}

/// A write budget: at most `writes` ARM writes per `window_secs` (emulated seconds) per
/// subscription; beyond it 429 `SubscriptionRequestsThrottled`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteLimit {
    /// Writes allowed per window.
    pub writes: u32,
    /// Window length in emulated seconds.
    pub window_secs: f64,
}

/// The outcome of the pre-dispatch fault check.
pub(crate) enum Injected {
    Throttled { retry_after_secs: u64 },
    ServerError { status: u16 },
}

/// The failure planned for a new long-running operation.
#[derive(Debug, Clone)]
pub(crate) struct PlannedFailure {
    pub(crate) code: String,
    pub(crate) message: String,
}

struct Window {
    start: Instant,
    used: u32,
}

pub(crate) struct FaultState {
    rules: Vec<FaultRule>,
    next_id: u64,
    seed: u64,
    rng: StdRng,
    write_limit: Option<WriteLimit>,
    read_limit: u32,
    default_write_limit: u32,
    window_secs: f64,
    windows: HashMap<(String, bool), Window>,
}

/// Rate-limit verdict for one request.
pub(crate) enum RateVerdict {
    /// Allowed; the remaining count for the header.
    Allowed { remaining: u32 },
    /// Over the limit; wait this long.
    Exceeded { retry_after: Duration },
}

impl FaultState {
    pub(crate) fn new(seed: u64, read_limit: u32, write_limit: u32, window_secs: f64) -> Self {
        Self {
            rules: Vec::new(),
            next_id: 1,
            seed,
            rng: StdRng::seed_from_u64(seed),
            write_limit: None,
            read_limit,
            default_write_limit: write_limit,
            window_secs,
            windows: HashMap::new(),
        }
    }

    /// Throttle and 5xx rules, checked before the request is served.
    pub(crate) fn check_request(&mut self, resource_type: &str, method: &str) -> Option<Injected> {
        let mut exhausted = Vec::new();
        let mut out = None;
        for rule in self.rules.iter_mut() {
            if !rule.matches(resource_type, method) {
                continue;
            }
            match &mut rule.fault {
                Fault::Throttle {
                    count,
                    retry_after_secs,
                } if *count > 0 => {
                    *count -= 1;
                    if *count == 0 {
                        exhausted.push(rule.id);
                    }
                    out = Some(Injected::Throttled {
                        retry_after_secs: *retry_after_secs,
                    });
                    break;
                }
                Fault::ServerError {
                    rate,
                    status,
                    count,
                } => {
                    if count.is_some_and(|c| c == 0) {
                        continue;
                    }
                    if self.rng.random_bool(rate.clamp(0.0, 1.0)) {
                        if let Some(c) = count {
                            *c -= 1;
                        }
                        out = Some(Injected::ServerError { status: *status });
                        break;
                    }
                }
                _ => {}
            }
        }
        self.rules.retain(|r| !exhausted.contains(&r.id));
        out
    }

    /// Duration multiplier for a new operation on `resource_type`.
    pub(crate) fn slow_factor(&self, resource_type: &str, method: &str) -> f64 {
        self.rules
            .iter()
            .filter(|r| r.matches(resource_type, method))
            .filter_map(|r| match r.fault {
                Fault::Slow { factor } if factor.is_finite() && factor > 0.0 => Some(factor),
                _ => None,
            })
            .product()
    }

    /// A planned failure for a new operation (consumes one count).
    pub(crate) fn take_failure(
        &mut self,
        resource_type: &str,
        method: &str,
    ) -> Option<PlannedFailure> {
        for rule in self.rules.iter_mut() {
            if !rule.matches(resource_type, method) {
                continue;
            }
            if let Fault::FailOperation {
                code,
                message,
                count,
            } = &mut rule.fault
            {
                if count.is_some_and(|c| c == 0) {
                    continue;
                }
                if let Some(c) = count {
                    *c -= 1;
                }
                return Some(PlannedFailure {
                    code: code.clone(),
                    message: message.clone().unwrap_or_else(|| {
                        format!("The operation failed with code '{code}' (injected fault).")
                    }),
                });
            }
        }
        None
    }

    /// Counts one ARM request against the subscription's read or write window.
    pub(crate) fn rate(&mut self, clock: &Clock, subscription: &str, write: bool) -> RateVerdict {
        let (limit, window_secs) = match (write, self.write_limit) {
            (true, Some(wl)) => (wl.writes, wl.window_secs),
            (true, None) => (self.default_write_limit, self.window_secs),
            (false, _) => (self.read_limit, self.window_secs),
        };
        let window = clock.scaled(window_secs);
        let now = clock.now();
        let w = self
            .windows
            .entry((subscription.to_ascii_lowercase(), write))
            .or_insert(Window {
                start: now,
                used: 0,
            });
        if now.duration_since(w.start) >= window {
            w.start = now;
            w.used = 0;
        }
        if w.used >= limit {
            let retry_after = window.saturating_sub(now.duration_since(w.start));
            return RateVerdict::Exceeded { retry_after };
        }
        w.used += 1;
        RateVerdict::Allowed {
            remaining: limit - w.used,
        }
    }
}

/// Control over fault injection; cheap to clone.
#[derive(Clone)]
pub struct FaultControl {
    pub(crate) state: Arc<Mutex<FaultState>>,
}

impl FaultControl {
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut FaultState) -> T) -> T {
        self.with(f)
    }

    fn with<T>(&self, f: impl FnOnce(&mut FaultState) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Adds a rule; returns its id.
    pub fn add(&self, mut rule: FaultRule) -> u64 {
        self.with(|s| {
            rule.id = s.next_id;
            s.next_id += 1;
            s.rules.push(rule);
            s.next_id - 1
        })
    }

    /// Removes one rule; true if it existed.
    pub fn remove(&self, id: u64) -> bool {
        self.with(|s| {
            let before = s.rules.len();
            s.rules.retain(|r| r.id != id);
            before != s.rules.len()
        })
    }

    /// Removes every rule and the write limit.
    pub fn clear(&self) {
        self.with(|s| {
            s.rules.clear();
            s.write_limit = None;
            s.windows.clear();
        });
    }

    /// The active rules (counts as they are now).
    pub fn rules(&self) -> Vec<FaultRule> {
        self.with(|s| s.rules.clone())
    }

    /// Sets or removes the write limit (resets the windows).
    pub fn set_write_limit(&self, limit: Option<WriteLimit>) {
        self.with(|s| {
            s.write_limit = limit;
            s.windows.clear();
        });
    }

    /// The current write limit.
    pub fn write_limit(&self) -> Option<WriteLimit> {
        self.with(|s| s.write_limit)
    }

    /// Re-seeds the RNG behind `ServerError` rates.
    pub fn set_seed(&self, seed: u64) {
        self.with(|s| {
            s.seed = seed;
            s.rng = StdRng::seed_from_u64(seed);
        });
    }

    /// The current seed.
    pub fn seed(&self) -> u64 {
        self.with(|s| s.seed)
    }
}
