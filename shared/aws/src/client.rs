//! What every AWS client of this crate shares: short timeouts, few retries, and error
//! text that never holds a request or response body.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::ProvideErrorMetadata;

// A healthy service answers in tens of milliseconds. These bound a call when it does
// not, so an invocation fails in seconds (the intake still answers the portal with a
// 503 well inside its own timeout) instead of hanging until Lambda kills it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// `sdk_config` with this crate's timeouts and retries; `None` without a region.
pub(crate) fn bounded(sdk_config: &SdkConfig) -> Option<SdkConfig> {
    sdk_config.region()?;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(CALL_TIMEOUT)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(FIRST_BACKOFF)
        .with_max_backoff(MAX_BACKOFF);
    Some(
        sdk_config
            .to_builder()
            .timeout_config(timeouts)
            .retry_config(retries)
            .build(),
    )
}

/// The service's error code and message, or what kept the call from an answer (each
/// cause in turn: connect error, timeout). Neither holds a request or response body.
pub(crate) fn describe(error: &(impl ProvideErrorMetadata + std::error::Error)) -> String {
    if let Some(code) = error.code() {
        return format!("{code}: {}", error.message().unwrap_or("no message"));
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
