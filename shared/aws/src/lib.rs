//! Adapter: the AWS services behind the domain's ports. The only crate that depends on
//! the AWS SDK; application code sees [`b24_domain::ports::ChangeQueue`].
//!
//! Clients read the SDK's own environment (`AWS_REGION`, credentials, and
//! `AWS_ENDPOINT_URL_SQS` to point SQS at a local moto server) and carry short timeouts
//! and few retries, so an unreachable service fails a call in seconds instead of
//! holding an invocation until Lambda kills it.

mod sqs;

pub use sqs::{QUEUE_URL_ENV, SetupError, SqsChangeQueue};
