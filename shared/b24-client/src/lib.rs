//! Bitrix24 REST client: one webhook, rate limited through a shared
//! [`RateLimiter`](b24_domain::ports::RateLimiter), typed errors, safe retries (a create
//! is never blindly retried), `batch` with per-command results, the streaming
//! chained-batch ID window and fetching by IDs.
//!
//! The webhook secret never appears in a log line, an error or `Debug` output: URLs
//! are built only at the moment of sending, and transport errors are stripped of them.

pub mod batch;
pub mod client;
pub mod entity_api;
pub mod error;
pub mod limiter;
pub mod list;
mod params;

pub use batch::{Command, CommandOutput, CommandResult, MAX_BATCH_COMMANDS};
pub use client::{ApiResponse, Client, ClientOptions, ClientStats};
pub use entity_api::{Dialect, EntityApi, ListShape};
pub use error::B24Error;
pub use limiter::InProcessLimiter;
pub use list::{ListQuery, PAGE_SIZE, Row};
