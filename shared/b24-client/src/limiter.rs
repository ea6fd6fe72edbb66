//! The rate-limiter port. Every HTTP request to a portal passes through one; the
//! in-process implementation lives here, the shared Postgres-backed one in `b24-store`.

use std::collections::HashMap;

use async_trait::async_trait;
use b24_domain::limits::{LeakyBucket, LimitSettings, OperatingWindow};

/// What a limiter learns from one portal answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Operating seconds charged per method: the top-level `time.operating` for a single
    /// call, and every batch command's `result_time[cmd].operating` for a batch.
    pub operating: Vec<(String, f64)>,
    /// `time.operating_reset_at` when the portal sent it.
    pub operating_reset_at: Option<f64>,
}

/// Keeps one portal's request rate and per-method operating time inside its limits.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Waits until one HTTP request that runs `methods` (one method for a single call,
    /// the inner methods for a batch) may be sent, and reserves it.
    async fn acquire(&self, methods: &[&str]);

    /// Records what the portal reported after answering.
    async fn observe(&self, observed: &Observed);

    /// The portal refused with 503 `QUERY_LIMIT_EXCEEDED`: the bucket is full.
    async fn on_query_limit(&self);

    /// The portal refused `method` with 429 `OPERATION_TIME_LIMIT` until `reset_at`
    /// (unix seconds; `None` when the answer did not say).
    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>);
}

/// Seconds since the Unix epoch, the clock of every limiter.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Requests kept free below the portal's burst, so that requests arriving closer
/// together than they were sent (network jitter) still fit in the portal's bucket.
const BUCKET_HEADROOM: f64 = 2.0;

/// When a 429 carries no `operating_reset_at` and this limiter saw no usage of the
/// method, wait this long before trying again.
const BLOCK_WITHOUT_RESET_AT_SECS: f64 = 60.0;

/// A limiter for the callers inside one process (every clone of a `Client` and every
/// task sharing it). Several processes sharing one portal need the Postgres-backed one.
pub struct InProcessLimiter {
    settings: LimitSettings,
    state: tokio::sync::Mutex<LimiterState>,
}

struct LimiterState {
    bucket: LeakyBucket,
    methods: HashMap<String, MethodBudget>,
}

#[derive(Default)]
struct MethodBudget {
    window: OperatingWindow,
    /// What the method's last request cost: kept free in the budget so that the next
    /// request does not cross it.
    last_request_cost: f64,
}

impl InProcessLimiter {
    pub fn new(settings: LimitSettings) -> Self {
        InProcessLimiter {
            settings,
            state: tokio::sync::Mutex::new(LimiterState {
                bucket: LeakyBucket::new(unix_now()),
                methods: HashMap::new(),
            }),
        }
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    fn capacity(&self) -> f64 {
        (self.settings.burst - BUCKET_HEADROOM).max(1.0)
    }

    /// Operating seconds `method` used within the window, as far as this limiter saw.
    pub async fn operating_used(&self, method: &str) -> f64 {
        let state = self.state.lock().await;
        state.methods.get(method).map_or(0.0, |b| {
            b.window
                .used(unix_now(), self.settings.operating_window_secs)
        })
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
        loop {
            let now = unix_now();
            let mut state = self.state.lock().await;
            let operating_wait = methods
                .iter()
                .filter_map(|m| state.methods.get(*m))
                .map(|b| {
                    b.window
                        .wait_needed(now, &self.settings, b.last_request_cost)
                })
                .fold(0.0, f64::max);
            if operating_wait > 0.0 {
                drop(state);
                tracing::info!(
                    ?methods,
                    wait_secs = operating_wait,
                    "operating budget nearly spent, waiting"
                );
                sleep_secs(operating_wait).await;
                continue;
            }
            let wait = state
                .bucket
                .reserve(now, self.capacity(), self.settings.drain_per_sec);
            drop(state);
            sleep_secs(wait).await;
            return;
        }
    }

    async fn observe(&self, observed: &Observed) {
        let now = unix_now();
        let mut per_method: HashMap<&str, f64> = HashMap::new();
        for (method, secs) in &observed.operating {
            *per_method.entry(method.as_str()).or_default() += secs;
        }
        let mut state = self.state.lock().await;
        for (method, cost) in per_method {
            let budget = state.methods.entry(method.to_string()).or_default();
            budget
                .window
                .record(now, cost, self.settings.operating_window_secs);
            budget.last_request_cost = cost;
        }
    }

    async fn on_query_limit(&self) {
        let mut state = self.state.lock().await;
        state.bucket.saturate(unix_now(), self.settings.burst);
    }

    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>) {
        let now = unix_now();
        let mut state = self.state.lock().await;
        let budget = state.methods.entry(method.to_string()).or_default();
        // Without the portal's word, the block lasts until the oldest usage seen here
        // leaves the window.
        let estimate = budget
            .window
            .samples
            .first()
            .map(|(t, _)| t + self.settings.operating_window_secs);
        let until = reset_at
            .or(estimate)
            .filter(|t| *t > now)
            .unwrap_or(now + BLOCK_WITHOUT_RESET_AT_SECS);
        budget.window.block_until(until);
    }
}

async fn sleep_secs(secs: f64) {
    if secs > 0.0 && secs.is_finite() {
        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
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
    async fn waits_when_the_next_request_would_cross_the_operating_budget() {
        let limiter = InProcessLimiter::new(LimitSettings {
            operating_budget_secs: 10.0,
            operating_window_secs: 1.0,
            ..LimitSettings::standard()
        });
        let observed = Observed {
            operating: vec![("m".into(), 3.0), ("m".into(), 3.0)],
            operating_reset_at: None,
        };
        limiter.observe(&observed).await;
        assert_eq!(limiter.operating_used("m").await, 6.0);
        // 6 used + 6 expected for the next request > 10: wait for the window (1 s) to pass.
        let start = std::time::Instant::now();
        limiter.acquire(&["m"]).await;
        assert!(
            start.elapsed().as_secs_f64() >= 0.9,
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
}
