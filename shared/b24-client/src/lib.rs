//! Bitrix24 REST client.

pub mod limiter;

pub use limiter::{Observed, RateLimiter};
