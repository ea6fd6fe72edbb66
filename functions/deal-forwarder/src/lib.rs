//! The Lambda adapter of the deal forwarder: an SQS batch of forward jobs in, the
//! partial-batch response naming only the jobs that failed out. Each job is forwarded
//! by [`ForwardService::forward`] with its delivery's `ApproximateReceiveCount`; a body
//! that is not a forward job fails alone (and ends in the dead-letter queue). Every job
//! reports EMF metrics (see [`forwarded_metrics`], [`failed_metrics`] and
//! [`request_metrics`]).
//!
//! # What a failure does
//!
//! SQS redelivers a failed job until its receive count passes the queue's
//! `maxReceiveCount` ([`MAX_RECEIVES_VAR`] must hold the same number), then moves it
//! to the dead-letter queue. The engine records every failure in the ledger; it makes
//! the failure final (ledger `failed`) and notifies the deal's responsible user on the
//! last delivery, or at once when the error is permanent (retrying cannot help: an
//! unknown deal, a value the route cannot map, a refused permission): for such an
//! error the attempt that met it *is* the final one.
//!
//! A permanent error is still reported as failed, so the job ends in the dead-letter
//! queue like any other that could not be forwarded, where it can be inspected and
//! redriven once the cause is fixed. Its remaining deliveries must neither notify the
//! user again nor spend requests: a redelivered job (receive count above 1) whose
//! ledger row is `failed` since the job was received is failed again without being
//! forwarded ([`FAILED_BEFORE`]). A newer robot run (a later `received_at`), a redrive
//! from the dead-letter queue (its receive count starts again at 1) and
//! `b24sync forward` all forward as usual.

use std::time::{Duration, Instant};

use b24_domain::forward::job::{ForwardJob, InvalidForwardJob};
use b24_forward::{Attempt, ForwardError, ForwardOutcome, ForwardService};
use b24_lambda::metrics::{MetricSet, Metrics};
use b24_lambda::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, batch_response};
use b24_lambda::{FunctionError, invocation_deadline};
use b24_store::{ForwardKey, ForwardState};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "deal-forwarder";

/// The environment variable holding the forward queue's `maxReceiveCount`.
pub const MAX_RECEIVES_VAR: &str = "FORWARD_MAX_RECEIVES";

/// The template's `maxReceiveCount` of the forward queue.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// What an invocation keeps after its forwards' deadline: a failed forward's ledger write,
/// the final notification (which the engine bounds at 10 s) and the answer.
const FINISH_MARGIN: Duration = Duration::from_secs(12);

/// SQS's largest `maxReceiveCount`.
const MAX_MAX_RECEIVES: u32 = 1_000;

/// The `Route` dimension of a failure whose body named no usable route.
const NO_ROUTE: &str = "none";

/// The `Reason` dimension of a body that is not a forward job.
const INVALID_JOB: &str = "invalid_job";

/// The `Reason` dimension of a redelivery skipped because the job already failed
/// finally (see the crate documentation).
pub const FAILED_BEFORE: &str = "failed_before";

/// The queue's `maxReceiveCount` from [`MAX_RECEIVES_VAR`]; unset or empty is
/// [`DEFAULT_MAX_RECEIVES`].
pub fn max_receives_from_env() -> Result<u32, FunctionError> {
    parse_max_receives(std::env::var(MAX_RECEIVES_VAR).ok().as_deref())
}

fn parse_max_receives(value: Option<&str>) -> Result<u32, FunctionError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_MAX_RECEIVES);
    };
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_MAX_RECEIVES).contains(&n) => Ok(n),
        _ => Err(FunctionError::Configuration(format!(
            "{MAX_RECEIVES_VAR} is {value:?}; expected the forward queue's maxReceiveCount, a whole number from 1 to {MAX_MAX_RECEIVES}"
        ))),
    }
}

/// One invocation, its metrics on stdout.
pub async fn handle(
    service: &ForwardService,
    max_receives: u32,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, FunctionError> {
    let deadline = forwards_deadline(invocation_deadline(&event.context), Instant::now());
    forward_batch(
        service,
        &Metrics::stdout(),
        &event.payload,
        max_receives,
        Some(deadline),
    )
    .await
}

/// When the forwards must stop so the invocation can still record, notify and answer:
/// [`FINISH_MARGIN`] before `invocation_deadline`, or a quarter of the time left when
/// that is less.
fn forwards_deadline(invocation_deadline: Instant, now: Instant) -> Instant {
    let margin = FINISH_MARGIN.min(invocation_deadline.saturating_duration_since(now) / 4);
    invocation_deadline
        .checked_sub(margin)
        .unwrap_or(invocation_deadline)
}

/// Forwards every job of `event`, one after another, and answers with the messages
/// that failed: bodies that are not forward jobs and jobs that could not be forwarded
/// (see the crate documentation). Reports to `metrics`.
pub async fn forward_batch(
    service: &ForwardService,
    metrics: &Metrics,
    event: &SqsEvent,
    max_receives: u32,
    deadline: Option<Instant>,
) -> Result<SqsBatchResponse, FunctionError> {
    tracing::info!(messages = event.records.len(), "forward batch");
    let mut outcomes = Vec::with_capacity(event.records.len());
    for message in &event.records {
        let attempt = Attempt {
            receive_count: receive_count(message),
            max_receives,
        };
        let outcome = match decode(message) {
            Err(invalid) => {
                metrics.emit(&failed_metrics(NO_ROUTE, INVALID_JOB));
                Err(invalid.to_string())
            }
            Ok(job) => forward_one(service, metrics, &job, attempt, deadline).await,
        };
        outcomes.push((message, outcome));
    }
    batch_response(outcomes)
}

fn decode(message: &SqsMessage) -> Result<ForwardJob, InvalidForwardJob> {
    ForwardJob::from_json(message.body.as_deref().unwrap_or_default())
}

/// SQS's `ApproximateReceiveCount`; a delivery without one counts as the first, so
/// that it is never taken for the last.
fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .filter(|count| *count > 0)
        .unwrap_or(1)
}

async fn forward_one(
    service: &ForwardService,
    metrics: &Metrics,
    job: &ForwardJob,
    attempt: Attempt,
    deadline: Option<Instant>,
) -> Result<(), String> {
    if attempt.receive_count > 1 {
        match failed_since_received(service, job).await {
            Ok(false) => {}
            Ok(true) => {
                metrics.emit(&failed_metrics(&job.route, FAILED_BEFORE));
                return Err(format!(
                    "route {}, deal {}: this job already failed finally (see the forward ledger); not forwarded again, the queue moves it to the dead-letter queue",
                    job.route, job.deal_id
                ));
            }
            Err(error) => {
                metrics.emit(&failed_metrics(&job.route, error.kind()));
                return Err(error.to_string());
            }
        }
    }
    match service.forward(job, attempt, deadline).await {
        Ok(outcome) => {
            tracing::info!(route = %outcome.route, source_deal_id = outcome.source_deal_id,
                target_deal_id = outcome.target_deal_id, created = outcome.created,
                source_requests = outcome.requests.source, target_requests = outcome.requests.target,
                elapsed_ms = outcome.elapsed_ms, "deal forwarded");
            metrics.emit(&forwarded_metrics(&outcome, job.received_at, Utc::now()));
            for set in request_metrics(&outcome) {
                metrics.emit(&set);
            }
            Ok(())
        }
        Err(error) => {
            metrics.emit(&failed_metrics(&job.route, error.kind()));
            Err(error.to_string())
        }
    }
}

/// Whether the job's ledger row is `failed` since the job was received: an earlier
/// delivery of it (or a later job of the same deal) failed finally and notified.
async fn failed_since_received(
    service: &ForwardService,
    job: &ForwardJob,
) -> Result<bool, ForwardError> {
    // A job the configuration does not know was never recorded: the forward says why.
    if service.config().route(&job.route).is_err() {
        return Ok(false);
    }
    let key = ForwardKey::new(&job.route, &job.source, job.deal_id);
    let entry = service.store().ledger_entry(&key).await?;
    Ok(entry.is_some_and(|entry| {
        entry.state == ForwardState::Failed && entry.updated_at >= job.received_at
    }))
}

/// A forwarded deal, by Function and Route: `Forwards`, `Created` / `Updated` (the
/// target deal was added / the one made before was updated) and `ForwardLagMs`, from
/// the robot's call to the end of the forward (never negative, whatever the clocks say).
pub fn forwarded_metrics(
    outcome: &ForwardOutcome,
    received_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> MetricSet {
    let lag_ms = (now - received_at).num_milliseconds().max(0);
    MetricSet::new()
        .dimension("Function", FUNCTION)
        .dimension("Route", &outcome.route)
        .count("Forwards", 1)
        .count("Created", u64::from(outcome.created))
        .count("Updated", u64::from(!outcome.created))
        .milliseconds("ForwardLagMs", lag_ms as f64)
}

/// A job that failed, by Function, Route and Reason: the engine's error kind
/// (`deal_not_found`, `portal`, `busy`...), [`INVALID_JOB`] or [`FAILED_BEFORE`].
pub fn failed_metrics(route: &str, reason: &str) -> MetricSet {
    MetricSet::new()
        .dimension("Function", FUNCTION)
        .dimension("Route", route)
        .dimension("Reason", reason)
        .count("ForwardsFailed", 1)
}

/// The Bitrix24 requests a forward sent, by Function and Portal: one line for the
/// source portal and one for the target.
pub fn request_metrics(outcome: &ForwardOutcome) -> [MetricSet; 2] {
    let line = |portal: &str, requests: u32| {
        MetricSet::new()
            .dimension("Function", FUNCTION)
            .dimension("Portal", portal)
            .count("BitrixRequests", u64::from(requests))
    };
    [
        line(&outcome.source_portal, outcome.requests.source),
        line(&outcome.target_portal, outcome.requests.target),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_receives_defaults_to_five_and_names_the_variable_when_wrong() {
        assert_eq!(parse_max_receives(None).unwrap(), 5);
        assert_eq!(parse_max_receives(Some(" ")).unwrap(), 5);
        assert_eq!(parse_max_receives(Some("3")).unwrap(), 3);
        for wrong in ["0", "-1", "five", "1001", "2.5"] {
            let error = parse_max_receives(Some(wrong)).unwrap_err();
            assert_eq!(error.error_type(), "Configuration");
            assert!(
                error.to_string().contains(MAX_RECEIVES_VAR) && error.to_string().contains(wrong),
                "{error}"
            );
        }
    }

    #[test]
    fn forwards_stop_early_enough_to_record_notify_and_answer() {
        let now = Instant::now();
        let long = now + Duration::from_secs(300);
        assert_eq!(forwards_deadline(long, now), long - FINISH_MARGIN);
        let short = now + Duration::from_secs(8);
        assert_eq!(
            forwards_deadline(short, now),
            short - Duration::from_secs(2)
        );
        assert_eq!(forwards_deadline(now, now), now);
    }

    #[test]
    fn a_delivery_without_a_usable_receive_count_is_the_first() {
        let event = b24_lambda::sqs::event_of([(Some("m1"), "{}")]);
        let mut message = event.records[0].clone();
        assert_eq!(receive_count(&message), 1);
        message
            .attributes
            .insert("ApproximateReceiveCount".into(), "4".into());
        assert_eq!(receive_count(&message), 4);
        for wrong in ["0", "x"] {
            message
                .attributes
                .insert("ApproximateReceiveCount".into(), wrong.into());
            assert_eq!(receive_count(&message), 1);
        }
        message.attributes.remove("ApproximateReceiveCount");
        assert_eq!(receive_count(&message), 1);
    }
}
