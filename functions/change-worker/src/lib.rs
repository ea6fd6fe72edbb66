//! The Lambda adapter of the change worker: an SQS batch of change messages in, the
//! partial-batch response naming only the messages that failed out. A body that is not
//! a change message fails alone (and ends in the dead-letter queue); the rest of the
//! batch is applied by [`SyncService::apply_changes`]. Each batch reports EMF metrics:
//! one line per portal entity group applied and one for the batch (see
//! [`group_metrics`] and [`batch_metrics`]).

use std::collections::HashSet;
use std::time::Instant;

use b24_domain::change::ChangeMessage;
use b24_lambda::metrics::{MetricSet, Metrics};
use b24_lambda::sqs::{SqsBatchResponse, SqsEvent, batch_response, decode_changes};
use b24_lambda::{FunctionError, invocation_deadline};
use b24_sync::{SyncService, SyncSummary};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "change-worker";

/// One invocation, its metrics on stdout.
pub async fn handle(
    service: &SyncService,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, FunctionError> {
    let deadline = invocation_deadline(&event.context);
    apply_batch(service, &Metrics::stdout(), &event.payload, Some(deadline)).await
}

/// Applies every change message of `event` and answers with the messages that failed:
/// bodies that are not change messages, and those [`SyncService::apply_changes`] could
/// not apply (their reasons are in its log lines). Reports to `metrics`.
pub async fn apply_batch(
    service: &SyncService,
    metrics: &Metrics,
    event: &SqsEvent,
    deadline: Option<Instant>,
) -> Result<SqsBatchResponse, FunctionError> {
    let decoded = decode_changes(event);
    // Keyed by position: a message's ID is only needed to report it.
    let changes: Vec<(usize, ChangeMessage)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(index, (_, change))| Some((index, change.as_ref().ok()?.clone())))
        .collect();
    tracing::info!(
        messages = decoded.len(),
        changes = changes.len(),
        "change batch"
    );
    let oldest = changes.iter().map(|(_, change)| change.received_at).min();
    let applied = service.apply_changes(changes, deadline).await;
    for summary in &applied.summaries {
        metrics.emit(&group_metrics(summary));
    }
    let invalid = decoded.iter().filter(|(_, change)| change.is_err()).count();
    metrics.emit(&batch_metrics(
        decoded.len(),
        invalid,
        applied.failed.len(),
        oldest,
        Utc::now(),
    ));
    let failed: HashSet<usize> = applied.failed.into_iter().collect();
    batch_response(
        decoded
            .iter()
            .enumerate()
            .map(|(index, (message, change))| {
                let outcome = match change {
                    Err(invalid) => Err(invalid.to_string()),
                    Ok(_) if failed.contains(&index) => {
                        Err("not applied; the change worker logged why".to_string())
                    }
                    Ok(_) => Ok(()),
                };
                (*message, outcome)
            }),
    )
}

/// One portal entity group's metrics, by Function, Portal, Entity and Mode (`changes`):
/// the same row and request metrics a scheduled run reports.
pub fn group_metrics(summary: &SyncSummary) -> MetricSet {
    MetricSet::new()
        .dimension("Function", FUNCTION)
        .dimension("Portal", &summary.portal)
        .dimension("Entity", &summary.entity)
        .dimension("Mode", &summary.mode)
        .counts(summary.counts())
        .durations(summary.durations())
}

/// The batch's metrics, by Function only (a batch spans portals): `Messages`,
/// `MessagesInvalid` (bodies that are not change messages), `MessagesFailed` (every
/// message reported back for redelivery, the invalid ones included), and
/// `WorkerLagMs`: how long the oldest change of the batch took from the intake's
/// receipt to `now`, after the batch was applied (left out when no message was valid;
/// never negative, whatever the clocks say).
pub fn batch_metrics(
    messages: usize,
    invalid: usize,
    not_applied: usize,
    oldest_received: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> MetricSet {
    let set = MetricSet::new()
        .dimension("Function", FUNCTION)
        .count("Messages", messages as u64)
        .count("MessagesInvalid", invalid as u64)
        .count("MessagesFailed", (invalid + not_applied) as u64);
    match oldest_received {
        Some(received) => {
            let lag_ms = (now - received).num_milliseconds().max(0);
            set.milliseconds("WorkerLagMs", lag_ms as f64)
        }
        None => set,
    }
}
