//! Retry policies: validated data that says whether and when to try again.

use crate::spec::RetrySpec;
use serde::Serialize;
use siteflow_step::StepError;
use std::time::Duration;

/// A complete retry policy (every field resolved).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts including the first.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(serialize_with = "compact")]
    pub initial_interval: Duration,
    /// Growth factor.
    pub backoff_coefficient: f64,
    /// Upper bound of one delay.
    #[serde(serialize_with = "compact")]
    pub maximum_interval: Duration,
    /// Random spread of each delay (fraction).
    pub jitter: f64,
    /// Bound on all attempts and delays together.
    #[serde(
        serialize_with = "compact_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    /// Codes that stop retrying.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_errors: Vec<String>,
}

/// Delays as workflows write them (`1m30s`), through the steps' own duration type.
fn compact<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    siteflow_step::Duration(*d).serialize(s)
}

fn compact_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(siteflow_step::Duration).serialize(s)
}

impl Default for RetryPolicy {
    /// Built-in: one attempt (no retry) unless a workflow asks for more; when it does,
    /// 1 s doubling up to 1 min with 10 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(60),
            jitter: 0.1,
            max_duration: None,
            non_retryable_errors: vec![],
        }
    }
}

impl RetryPolicy {
    /// Resolves written fields over the built-in defaults.
    pub fn from_spec(spec: &RetrySpec) -> Self {
        let d = RetryPolicy::default();
        RetryPolicy {
            max_attempts: spec.max_attempts.unwrap_or(d.max_attempts),
            initial_interval: spec.initial_interval.unwrap_or(d.initial_interval),
            backoff_coefficient: spec.backoff_coefficient.unwrap_or(d.backoff_coefficient),
            maximum_interval: spec.maximum_interval.unwrap_or(d.maximum_interval),
            jitter: spec.jitter.unwrap_or(d.jitter),
            max_duration: spec.max_duration,
            non_retryable_errors: spec.non_retryable_errors.clone().unwrap_or_default(),
        }
    }

    /// The computed delay after failed attempt `n` (1-based), before jitter:
    /// min(initial × coefficient^(n−1), maximum).
    pub fn base_delay(&self, n: u32) -> Duration {
        let factor = self.backoff_coefficient.powi(n.saturating_sub(1) as i32);
        let secs = self.initial_interval.as_secs_f64() * factor;
        let max = self.maximum_interval.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// The delay after failed attempt `n`, with jitter drawn from `unit` (a number in [0, 1)).
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let base = self.base_delay(n).as_secs_f64();
        let spread = base * self.jitter * (2.0 * unit - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }

    /// Whether to try again after `err` ended attempt `attempt`, `elapsed` into the step;
    /// `Some(delay)` if so. An error's own `after` (Retry-After) overrides the computed delay.
    pub fn next_delay(
        &self,
        err: &StepError,
        attempt: u32,
        elapsed: Duration,
        unit: f64,
    ) -> Option<Duration> {
        if !err.class.is_retryable()
            || attempt >= self.max_attempts
            || self.non_retryable_errors.iter().any(|c| c == &err.code)
        {
            return None;
        }
        let delay = err
            .class
            .after()
            .unwrap_or_else(|| self.delay(attempt, unit));
        if let Some(max) = self.max_duration
            && elapsed + delay >= max
        {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_interval: Duration::from_secs(2),
            backoff_coefficient: 3.0,
            maximum_interval: Duration::from_secs(30),
            jitter: 0.0,
            max_duration: None,
            non_retryable_errors: vec!["Fatal".into()],
        }
    }

    #[test]
    fn exponential_capped() {
        let p = policy();
        let d: Vec<u64> = (1..=5).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(d, vec![2, 6, 18, 30, 30]);
    }

    #[test]
    fn jitter_stays_in_band() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy()
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(2));
        assert!(p.delay(1, 0.999) < Duration::from_secs(3));
    }

    #[test]
    fn stops_on_codes_classes_attempts_and_duration() {
        let p = policy();
        let r = StepError::retryable("ExitStatus", "x");
        assert_eq!(
            p.next_delay(&r, 1, Duration::ZERO, 0.5),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.next_delay(&r, 6, Duration::ZERO, 0.5), None);
        assert_eq!(
            p.next_delay(&StepError::retryable("Fatal", "x"), 1, Duration::ZERO, 0.5),
            None
        );
        assert_eq!(
            p.next_delay(&StepError::permanent("X", "x"), 1, Duration::ZERO, 0.5),
            None
        );
        let after = r.clone().with_after(Duration::from_secs(7));
        assert_eq!(
            p.next_delay(&after, 1, Duration::ZERO, 0.5),
            Some(Duration::from_secs(7))
        );
        let bounded = RetryPolicy {
            max_duration: Some(Duration::from_secs(10)),
            ..policy()
        };
        assert_eq!(bounded.next_delay(&r, 3, Duration::from_secs(5), 0.5), None);
    }
}
