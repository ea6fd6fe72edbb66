//! The Lambda adapter of the change worker: an SQS batch of change messages in, the
//! partial-batch response naming only the messages that failed out. A body that is not
//! a change message fails alone (and ends in the dead-letter queue); the rest of the
//! batch is applied by [`SyncService::apply_changes`].

use std::collections::HashSet;
use std::time::Instant;

use b24_domain::change::ChangeMessage;
use b24_lambda::sqs::{SqsBatchResponse, SqsEvent, batch_response, decode_changes};
use b24_lambda::{FunctionError, invocation_deadline};
use b24_sync::SyncService;
use lambda_runtime::LambdaEvent;

pub async fn handle(
    service: &SyncService,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, FunctionError> {
    let deadline = invocation_deadline(&event.context);
    apply_batch(service, &event.payload, Some(deadline)).await
}

/// Applies every change message of `event` and answers with the messages that failed:
/// bodies that are not change messages, and those [`SyncService::apply_changes`] could
/// not apply (their reasons are in its log lines).
pub async fn apply_batch(
    service: &SyncService,
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
    let failed: HashSet<usize> = service
        .apply_changes(changes, deadline)
        .await
        .into_iter()
        .collect();
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
