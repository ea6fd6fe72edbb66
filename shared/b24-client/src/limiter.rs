//! The rate-limiter port. Every HTTP request to a portal passes through one; the
//! in-process implementation lives here, the shared Postgres-backed one in `b24-store`.

use async_trait::async_trait;

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
