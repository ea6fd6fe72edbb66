//! Adapter: the AWS services behind the domain's ports. The only crate that depends on
//! the AWS SDK; application code sees [`b24_domain::ports::MessageQueue`] (the change
//! queue and the forward queue) and the validated [`b24_config::Config`].
//!
//! Clients read the SDK's own environment (`AWS_REGION`, credentials, and
//! `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` to point them at a local
//! moto server) and carry short timeouts and few retries, so an unreachable service
//! fails a call in seconds instead of holding an invocation until Lambda kills it.

mod client;
mod secrets;
mod sqs;

pub use secrets::{
    CONFIG_REFRESH_ENV, CONFIG_SECRET_ENV, DEFAULT_REFRESH, SecretConfig, SecretConfigError,
};
pub use sqs::{
    FORWARD_QUEUE_URL_ENV, QUEUE_URL_ENV, SetupError, SqsChangeQueue, SqsForwardQueue, SqsMessage,
    SqsQueue,
};
