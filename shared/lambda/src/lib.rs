//! The Lambda glue every function shares, so each `functions/*/src/main.rs` is a few lines
//! of wiring and each handler a library function with typed input and output:
//!
//! - [`deadline`]: the invocation's deadline as an `Instant` (AWS and `cargo lambda watch`);
//! - [`config`]: the configuration document from a Secrets Manager secret
//!   (`B24SYNC_CONFIG_SECRET`) or `B24SYNC_CONFIG`, what a function builds from it
//!   (rebuilt when the secret rotates), and boolean switches;
//! - [`error`]: [`FunctionError`], the runtime's view of a failure (bad input, transient,
//!   configuration);
//! - [`function_url`]: the request and the JSON answers of the function-URL functions;
//! - [`init`]: a function's start-up, its failure reported to the Runtime API as an init
//!   error;
//! - [`sqs`]: change messages out of an SQS batch and the partial-batch response that
//!   names only the failed messages;
//! - [`metrics`]: metrics as CloudWatch Embedded Metric Format lines on stdout.

pub mod config;
pub mod deadline;
pub mod error;
pub mod function_url;
pub mod init;
pub mod metrics;
pub mod sqs;

pub use config::{ConfigSource, Derived, env_flag, load_config};
pub use deadline::invocation_deadline;
pub use error::FunctionError;
pub use init::start_up;

/// Logs to stdout for CloudWatch: level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` (default
/// INFO), JSON lines when the function's log format is JSON (`AWS_LAMBDA_LOG_FORMAT`).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}
