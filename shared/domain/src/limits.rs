//! Arithmetic of the two Bitrix24 limits, with time passed in explicitly so the same
//! code serves the in-process limiter, the Postgres-backed shared one and the tests.
//!
//! * Request rate: a leaky bucket per webhook. Each HTTP request (a `batch` counts as
//!   one) adds 1; the level drains by `drain_per_sec`; above `burst` the portal answers
//!   503 `QUERY_LIMIT_EXCEEDED`.
//! * Operating time: per method, the seconds the portal spent executing it over a
//!   rolling window; above the budget the portal answers 429 `OPERATION_TIME_LIMIT`.

use serde::{Deserialize, Serialize};

/// The limits of one portal as seen by one webhook.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests the bucket holds before the portal refuses (X in the docs).
    pub burst: f64,
    /// Requests per second the bucket drains (Y in the docs).
    pub drain_per_sec: f64,
    /// Operating seconds a method may use within the window.
    pub operating_budget_secs: f64,
    /// Length of the rolling operating window.
    pub operating_window_secs: f64,
}

impl LimitSettings {
    /// Every plan but Enterprise: burst 50, 2 requests/s, 480 s per 10 minutes.
    pub fn standard() -> Self {
        LimitSettings {
            burst: 50.0,
            drain_per_sec: 2.0,
            operating_budget_secs: 480.0,
            operating_window_secs: 600.0,
        }
    }

    /// Enterprise: burst 250, 5 requests/s, 480 s per 10 minutes.
    pub fn enterprise() -> Self {
        LimitSettings {
            burst: 250.0,
            drain_per_sec: 5.0,
            ..Self::standard()
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self::standard()
    }
}

/// A client-side mirror of the portal's request bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakyBucket {
    pub level: f64,
    pub updated_at: f64,
}

impl LeakyBucket {
    pub fn new(now: f64) -> Self {
        LeakyBucket {
            level: 0.0,
            updated_at: now,
        }
    }

    fn drained(&self, now: f64, drain_per_sec: f64) -> f64 {
        (self.level - (now - self.updated_at).max(0.0) * drain_per_sec).max(0.0)
    }

    /// Reserves room for one request and returns how many seconds the caller must wait
    /// before sending it so that the level never exceeds `capacity`. Reservations made
    /// by concurrent callers queue up behind each other.
    pub fn reserve(&mut self, now: f64, capacity: f64, drain_per_sec: f64) -> f64 {
        let level = self.drained(now, drain_per_sec) + 1.0;
        let wait = if level > capacity {
            (level - capacity) / drain_per_sec
        } else {
            0.0
        };
        self.level = level;
        self.updated_at = now;
        wait
    }

    /// After the portal said 503, treat the bucket as full.
    pub fn saturate(&mut self, now: f64, capacity: f64) {
        self.level = self.level.max(capacity);
        self.updated_at = now;
    }
}

/// Operating seconds spent by one method, in one-second-resolution samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatingWindow {
    /// `(unix seconds, operating seconds)`, oldest first.
    pub samples: Vec<(f64, f64)>,
    /// The portal's `operating_reset_at` when it blocked the method, if it did.
    pub blocked_until: Option<f64>,
}

impl OperatingWindow {
    pub fn record(&mut self, now: f64, seconds: f64, window: f64) {
        self.prune(now, window);
        if seconds > 0.0 {
            self.samples.push((now, seconds));
        }
    }

    pub fn block_until(&mut self, until: f64) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |u| u.max(until)));
    }

    fn prune(&mut self, now: f64, window: f64) {
        self.samples.retain(|(t, _)| now - t < window);
    }

    pub fn used(&self, now: f64, window: f64) -> f64 {
        self.samples
            .iter()
            .filter(|(t, _)| now - t < window)
            .map(|(_, s)| s)
            .sum()
    }

    /// Seconds to wait before calling the method again so that its usage, plus the
    /// `reserve` kept for the next call, stays within `settings.operating_budget_secs`.
    pub fn wait_needed(&self, now: f64, settings: &LimitSettings, reserve: f64) -> f64 {
        if let Some(until) = self.blocked_until
            && until > now
        {
            return until - now;
        }
        let window = settings.operating_window_secs;
        let allowed = (settings.operating_budget_secs - reserve).max(0.0);
        let mut used = self.used(now, window);
        if used <= allowed {
            return 0.0;
        }
        // Wait until enough old samples leave the window.
        for (t, s) in &self.samples {
            if now - t >= window {
                continue;
            }
            used -= s;
            if used <= allowed {
                return (t + window - now).max(0.0);
            }
        }
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces_at_drain_rate() {
        let s = LimitSettings::standard();
        let mut b = LeakyBucket::new(0.0);
        for _ in 0..50 {
            assert_eq!(b.reserve(0.0, s.burst, s.drain_per_sec), 0.0);
        }
        assert!((b.reserve(0.0, s.burst, s.drain_per_sec) - 0.5).abs() < 1e-9);
        assert!((b.reserve(0.0, s.burst, s.drain_per_sec) - 1.0).abs() < 1e-9);
        // Ten seconds later twenty requests have drained.
        let mut b = LeakyBucket {
            level: 50.0,
            updated_at: 0.0,
        };
        assert_eq!(b.reserve(10.0, s.burst, s.drain_per_sec), 0.0);
        assert!((b.level - 31.0).abs() < 1e-9);
    }

    #[test]
    fn operating_window_waits_for_old_samples_to_expire() {
        let s = LimitSettings {
            operating_budget_secs: 10.0,
            operating_window_secs: 60.0,
            ..LimitSettings::standard()
        };
        let mut w = OperatingWindow::default();
        w.record(0.0, 6.0, 60.0);
        w.record(10.0, 5.0, 60.0);
        assert_eq!(w.used(10.0, 60.0), 11.0);
        // Over budget until the first sample leaves the window at t=60.
        assert!((w.wait_needed(10.0, &s, 0.0) - 50.0).abs() < 1e-9);
        assert_eq!(w.wait_needed(61.0, &s, 0.0), 0.0);
        w.block_until(100.0);
        assert!((w.wait_needed(61.0, &s, 0.0) - 39.0).abs() < 1e-9);
    }
}
