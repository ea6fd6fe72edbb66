//! The two portal limits, enforced per webhook: the request-rate leaky bucket
//! (503 `QUERY_LIMIT_EXCEEDED`) and the per-method operating-time budget
//! (429 `OPERATION_TIME_LIMIT`).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Limit settings; the defaults are the documented ones of every plan but Enterprise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitConfig {
    /// Off: nothing is refused (operating time is still accounted and reported).
    pub enabled: bool,
    /// The portal's operating-time limiter runs (cloud). Off, as on an on-premise
    /// portal with the limiter off: no 429, and answers carry no `operating` or
    /// `operating_reset_at`.
    #[serde(default = "on")]
    pub operating_limiter: bool,
    /// Requests the bucket holds before the portal refuses.
    pub burst: f64,
    /// Requests per second the bucket drains.
    pub drain_per_sec: f64,
    /// Operating seconds one method may use within the window.
    pub operating_budget_secs: f64,
    /// Length of the rolling operating window, kept in 10 buckets.
    pub operating_window_secs: f64,
}

fn on() -> bool {
    true
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            enabled: true,
            operating_limiter: true,
            burst: 50.0,
            drain_per_sec: 2.0,
            operating_budget_secs: 480.0,
            operating_window_secs: 600.0,
        }
    }
}

/// A change of limit settings through `POST /_sim/limits`; absent fields keep their value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_limiter: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_window: Option<f64>,
}

impl LimitConfig {
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("burst", self.burst),
            ("drain", self.drain_per_sec),
            ("operating budget", self.operating_budget_secs),
            ("operating window", self.operating_window_secs),
        ];
        for (name, value) in checks {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} must be a positive number, got {value}"));
            }
        }
        Ok(())
    }

    pub fn updated(&self, update: &LimitsUpdate) -> Result<LimitConfig, String> {
        let config = LimitConfig {
            enabled: update.enabled.unwrap_or(self.enabled),
            operating_limiter: update.operating_limiter.unwrap_or(self.operating_limiter),
            burst: update.burst.unwrap_or(self.burst),
            drain_per_sec: update.drain.unwrap_or(self.drain_per_sec),
            operating_budget_secs: update
                .operating_budget
                .unwrap_or(self.operating_budget_secs),
            operating_window_secs: update
                .operating_window
                .unwrap_or(self.operating_window_secs),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Operating seconds of one method in buckets of window/10: (bucket start, seconds).
type OperatingBuckets = VecDeque<(f64, f64)>;

pub(crate) struct Limiter {
    pub config: LimitConfig,
    level: f64,
    level_at: f64,
    methods: HashMap<String, OperatingBuckets>,
}

impl Limiter {
    pub fn new(config: LimitConfig) -> Limiter {
        Limiter {
            config,
            level: 0.0,
            level_at: 0.0,
            methods: HashMap::new(),
        }
    }

    /// Counts one HTTP request into the bucket; `false` means refuse it with 503.
    /// As limits.md says: every incoming request raises the counter (a refused one
    /// too), and once the counter exceeds the burst X each next request is refused,
    /// so with X = 50 the 51st request passes (counter 51) and the 52nd does not.
    pub fn admit(&mut self, now: f64) -> bool {
        self.level =
            (self.level - (now - self.level_at).max(0.0) * self.config.drain_per_sec).max(0.0);
        self.level_at = now;
        let refused = self.config.enabled && self.level > self.config.burst;
        self.level += 1.0;
        !refused
    }

    fn buckets(&mut self, method: &str, now: f64) -> &mut OperatingBuckets {
        let window = self.config.operating_window_secs;
        let buckets = self.methods.entry(method.to_string()).or_default();
        while buckets
            .front()
            .is_some_and(|(start, _)| start + window <= now)
        {
            buckets.pop_front();
        }
        buckets
    }

    /// The method's operating seconds in the current window (its running total).
    fn used(&mut self, method: &str, now: f64) -> f64 {
        self.buckets(method, now).iter().map(|(_, s)| s).sum()
    }

    /// Whether the method has used more than its budget in the window (429 for the next call).
    pub fn blocked(&mut self, method: &str, now: f64) -> bool {
        let limiting = self.config.enabled && self.config.operating_limiter;
        limiting && self.used(method, now) > self.config.operating_budget_secs
    }

    /// Adds a call's seconds to the method's window and returns what the answer
    /// reports: the method's running total after the call and `operating_reset_at`,
    /// or `None` when the operating limiter is off (the keys are absent then).
    pub fn charge(&mut self, method: &str, now: f64, seconds: f64) -> Option<Operating> {
        let width = self.config.operating_window_secs / 10.0;
        let start = (now / width).floor() * width;
        let buckets = self.buckets(method, now);
        match buckets.back_mut() {
            Some((last, used)) if *last == start => *used += seconds,
            _ => buckets.push_back((start, seconds)),
        }
        self.config.operating_limiter.then(|| Operating {
            total: self.used(method, now),
            reset_at: self.reset_at(method, now),
        })
    }

    /// When the oldest bucket of the method leaves the window (unix seconds).
    fn reset_at(&mut self, method: &str, now: f64) -> i64 {
        let window = self.config.operating_window_secs;
        let oldest = self
            .buckets(method, now)
            .front()
            .map_or(now, |(start, _)| *start);
        (oldest + window).ceil() as i64
    }
}

/// The operating keys of a `time` block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Operating {
    /// The method's operating seconds in the window after the call.
    pub total: f64,
    /// When the oldest part of that total leaves the window (unix seconds).
    pub reset_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: f64, drain: f64, budget: f64, window: f64) -> Limiter {
        Limiter::new(LimitConfig {
            enabled: true,
            operating_limiter: true,
            burst,
            drain_per_sec: drain,
            operating_budget_secs: budget,
            operating_window_secs: window,
        })
    }

    #[test]
    fn bucket_refuses_once_the_counter_exceeds_the_burst_and_refusals_count() {
        let mut l = limiter(3.0, 1.0, 480.0, 600.0);
        assert!(
            (0..4).all(|_| l.admit(100.0)),
            "counter 4 > 3 only after the 4th"
        );
        assert!(!l.admit(100.0), "the 5th is refused; counter 5");
        // Drained by 1.5 the counter is 3.5: still above 3, refused (and now 4.5).
        assert!(!l.admit(101.5));
        // 1.5 s later it is 3.0: not above the burst, so the request passes.
        assert!(l.admit(103.0));
    }

    #[test]
    fn operating_budget_blocks_the_next_call_until_the_bucket_leaves() {
        let mut l = limiter(50.0, 2.0, 1.0, 100.0);
        let first = l.charge("crm.deal.list", 5.0, 0.6).unwrap();
        assert!(!l.blocked("crm.deal.list", 6.0));
        let second = l.charge("crm.deal.list", 15.0, 0.6).unwrap();
        assert!(l.blocked("crm.deal.list", 16.0));
        assert!(
            !l.blocked("crm.deal.get", 16.0),
            "other methods keep working"
        );
        assert_eq!(
            first,
            Operating {
                total: 0.6,
                reset_at: 100
            }
        );
        assert_eq!(
            second,
            Operating {
                total: 1.2,
                reset_at: 100
            },
            "the answer reports the running total, not the call's charge"
        );
        assert!(
            !l.blocked("crm.deal.list", 100.0),
            "the first bucket left the window"
        );
    }

    #[test]
    fn disabled_limits_refuse_nothing() {
        let mut l = limiter(1.0, 0.001, 0.001, 100.0);
        l.config.enabled = false;
        assert!((0..100).all(|_| l.admit(1.0)));
        l.charge("batch", 1.0, 10.0);
        assert!(!l.blocked("batch", 1.0));
    }

    #[test]
    fn without_the_operating_limiter_nothing_is_reported_or_refused() {
        let mut l = limiter(50.0, 2.0, 0.001, 100.0);
        l.config.operating_limiter = false;
        assert_eq!(l.charge("crm.deal.list", 1.0, 10.0), None);
        assert!(!l.blocked("crm.deal.list", 1.0));
    }

    #[test]
    fn updates_are_validated() {
        let update = LimitsUpdate {
            burst: Some(-1.0),
            ..Default::default()
        };
        assert!(
            LimitConfig::default()
                .updated(&update)
                .unwrap_err()
                .contains("burst")
        );
    }
}
