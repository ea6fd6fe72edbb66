//! Request statistics read through `GET /_sim/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the simulator has served since start or the last `POST /_sim/stats/reset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// HTTP requests to the REST API (a `batch` is one).
    pub http_requests: u64,
    /// Executed method calls by lower-case method name, commands inside `batch` included.
    pub requests_by_method: BTreeMap<String, u64>,
    /// 503 answers (rate limit and injected).
    pub status_503: u64,
    /// 429 answers (operating-time limit).
    pub status_429: u64,
    /// Operating seconds charged by method.
    pub operating_seconds_by_method: BTreeMap<String, f64>,
    /// Rows returned by list methods.
    pub rows_returned: u64,
    /// Outgoing events delivered (the handler answered 2xx).
    #[serde(default)]
    pub events_sent: u64,
    /// Outgoing events that failed (they are not retried).
    #[serde(default)]
    pub events_failed: u64,
}
