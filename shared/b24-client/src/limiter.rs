//! The in-process rate limiter: the [`RateLimiter`] port for the callers of one process.
//! The Postgres-backed one in `b24-store` shares a portal's budget between processes;
//! both keep a [`PortalBudget`] and differ only in where it lives.

use async_trait::async_trait;
use b24_domain::limits::{LimitSettings, OperatingReport, PortalBudget};
use b24_domain::ports::{RateLimiter, unix_now, wait_for_admission};

/// A limiter for the callers inside one process (every clone of a `Client` and every
/// task sharing it). Several processes sharing one portal need the Postgres-backed one.
pub struct InProcessLimiter {
    settings: LimitSettings,
    budget: tokio::sync::Mutex<PortalBudget>,
}

impl InProcessLimiter {
    pub fn new(settings: LimitSettings) -> Self {
        InProcessLimiter {
            settings,
            budget: tokio::sync::Mutex::new(PortalBudget::new(unix_now())),
        }
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// The latest window total the portal reported for `method` (0 when none).
    pub async fn reported_total(&self, method: &str) -> f64 {
        let budget = self.budget.lock().await;
        budget.methods.get(method).map_or(0.0, |m| m.reported_total)
    }
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new(LimitSettings::standard())
    }
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(&self, methods: &[&str]) {
        let admit = || async {
            self.budget
                .lock()
                .await
                .admit(unix_now(), methods, &self.settings)
        };
        wait_for_admission(methods, admit, tokio::time::sleep).await;
    }

    async fn observe(&self, reports: &[OperatingReport]) -> f64 {
        if reports.is_empty() {
            return 0.0;
        }
        let mut budget = self.budget.lock().await;
        budget.observe(unix_now(), reports, &self.settings)
    }

    async fn on_query_limit(&self) {
        let mut budget = self.budget.lock().await;
        budget.request_refused(unix_now(), &self.settings);
    }

    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>) {
        let mut budget = self.budget.lock().await;
        budget.method_refused(unix_now(), method, reset_at, &self.settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(burst: f64, drain: f64) -> InProcessLimiter {
        InProcessLimiter::new(LimitSettings {
            burst,
            drain_per_sec: drain,
            ..LimitSettings::standard()
        })
    }

    fn operating(budget_secs: f64, window_secs: f64) -> InProcessLimiter {
        InProcessLimiter::new(LimitSettings {
            operating_budget_secs: budget_secs,
            operating_window_secs: window_secs,
            ..LimitSettings::standard()
        })
    }

    #[tokio::test]
    async fn lets_the_burst_through_then_paces_at_the_drain_rate() {
        // Capacity 10 - 2 = 8 immediate requests, then 20 per second.
        let limiter = fast(10.0, 20.0);
        let start = std::time::Instant::now();
        for _ in 0..8 {
            limiter.acquire(&["m"]).await;
        }
        assert!(start.elapsed().as_secs_f64() < 0.05);
        for _ in 0..10 {
            limiter.acquire(&["m"]).await;
        }
        let paced = start.elapsed().as_secs_f64();
        assert!((0.45..1.0).contains(&paced), "{paced}");
    }

    #[tokio::test]
    async fn a_503_makes_the_next_request_wait_for_the_bucket_to_drain() {
        let limiter = fast(10.0, 20.0);
        limiter.on_query_limit().await;
        let start = std::time::Instant::now();
        limiter.acquire(&["m"]).await;
        // Full bucket (10) + 1 must drain to 8: 3 / 20 s.
        assert!(
            start.elapsed().as_secs_f64() >= 0.14,
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn takes_reported_totals_and_waits_when_the_next_request_would_cross_the_budget() {
        let limiter = operating(10.0, 1.0);
        // Running totals 3 then 6 (two commands of one batch carry 5.5 and 6): the
        // method used 6 s, not 14.5, and one request costs about 3.
        assert_eq!(
            limiter
                .observe(&[OperatingReport::new("m", 3.0, None)])
                .await,
            3.0
        );
        let grew = limiter
            .observe(&[
                OperatingReport::new("m", 5.5, None),
                OperatingReport::new("m", 6.0, None),
            ])
            .await;
        assert_eq!(grew, 3.0);
        assert_eq!(limiter.reported_total("m").await, 6.0);
        // 6 + 3 <= 10: no wait.
        let start = std::time::Instant::now();
        limiter.acquire(&["m"]).await;
        assert!(start.elapsed().as_secs_f64() < 0.05);
        // 9 + 3 > 10: wait for the window (1 s) to let the first part go.
        limiter
            .observe(&[OperatingReport::new("m", 9.0, None)])
            .await;
        let start = std::time::Instant::now();
        limiter.acquire(&["m"]).await;
        assert!(
            (0.8..1.5).contains(&start.elapsed().as_secs_f64()),
            "{:?}",
            start.elapsed()
        );
        // Another method is not held back.
        let start = std::time::Instant::now();
        limiter.acquire(&["other"]).await;
        assert!(start.elapsed().as_secs_f64() < 0.05);
    }

    #[tokio::test]
    async fn a_429_blocks_the_method_until_reset_at() {
        let limiter = InProcessLimiter::default();
        limiter
            .on_operation_limit("m", Some(unix_now() + 0.3))
            .await;
        let start = std::time::Instant::now();
        limiter.acquire(&["other"]).await;
        assert!(start.elapsed().as_secs_f64() < 0.05);
        limiter.acquire(&["other", "m"]).await;
        assert!(
            start.elapsed().as_secs_f64() >= 0.25,
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn garbled_reset_times_neither_panic_nor_block_beyond_the_window() {
        let limiter = operating(1.0, 0.3);
        let now = unix_now();
        for garbled in [1e20, f64::INFINITY, f64::NAN, -1.0, now * 1000.0] {
            limiter.on_operation_limit("m", Some(garbled)).await;
            limiter
                .observe(&[OperatingReport::new("m", 5.0, Some(garbled))])
                .await;
            let start = std::time::Instant::now();
            limiter.acquire(&["m"]).await;
            let waited = start.elapsed().as_secs_f64();
            assert!(waited < 0.6, "{garbled}: waited {waited} s");
        }
        assert_eq!(
            limiter
                .observe(&[OperatingReport::new("m", f64::NAN, None)])
                .await,
            0.0
        );
        assert_eq!(
            limiter
                .observe(&[OperatingReport::new("m", f64::INFINITY, None)])
                .await,
            0.0
        );
    }
}
