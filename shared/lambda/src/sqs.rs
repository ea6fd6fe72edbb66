//! SQS batches: change messages out of the records, and the partial-batch response that
//! names only the messages that failed, so SQS retries those alone and a poisoned one
//! ends in the dead-letter queue without holding back the rest. The event source mapping
//! needs `FunctionResponseTypes: [ReportBatchItemFailures]`; without it a partial
//! response counts as complete success. For a standard queue: a FIFO queue would need
//! every message after the first failure reported too.

use std::fmt::Display;

pub use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use b24_domain::change::{ChangeMessage, InvalidChangeMessage};

use crate::error::FunctionError;

/// Every record of the batch with its body read as a change message. A body that is not
/// one is that message's failure alone: report it through [`batch_response`] so it goes
/// to the dead-letter queue.
pub fn decode_changes(
    event: &SqsEvent,
) -> Vec<(&SqsMessage, Result<ChangeMessage, InvalidChangeMessage>)> {
    event
        .records
        .iter()
        .map(|record| {
            let body = record.body.as_deref().unwrap_or_default();
            (record, ChangeMessage::from_json(body))
        })
        .collect()
}

/// The answer to a batch from each message's outcome: the IDs of the failed messages and
/// only those (an empty list means the whole batch succeeded). Each failure is logged
/// with its message ID and reason, so the reason must not hold a secret.
///
/// A failed message without an ID cannot be named, so the whole batch fails instead and
/// every message of it comes back: retried, never lost.
pub fn batch_response<'a, E: Display>(
    outcomes: impl IntoIterator<Item = (&'a SqsMessage, Result<(), E>)>,
) -> Result<SqsBatchResponse, FunctionError> {
    let mut response = SqsBatchResponse::default();
    for (message, outcome) in outcomes {
        let Err(reason) = outcome else { continue };
        match message.message_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => {
                tracing::warn!(message_id = id, %reason, "message failed");
                response.add_failure(id);
            }
            None => {
                return Err(FunctionError::Transient(format!(
                    "a message without a messageId failed ({reason}); failing the whole batch so that it comes back"
                )));
            }
        }
    }
    Ok(response)
}

/// An SQS event holding one record per `(messageId, body)`, shaped as Lambda delivers a
/// batch: for handler tests and for feeding a worker from an in-process queue.
pub fn event_of<'a>(records: impl IntoIterator<Item = (Option<&'a str>, &'a str)>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records
        .into_iter()
        .map(|(id, body)| {
            let mut message = SqsMessage::default();
            message.message_id = id.map(str::to_string);
            message.receipt_handle = id.map(|id| format!("handle-{id}"));
            message.body = Some(body.to_string());
            message
                .attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            message.event_source = Some("aws:sqs".into());
            message
        })
        .collect();
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_domain::change::ChangeAction;
    use b24_domain::entity::Entity;
    use serde_json::json;

    fn change(id: u64) -> ChangeMessage {
        ChangeMessage {
            portal: "acme".into(),
            entity: Entity::Deal,
            id,
            action: ChangeAction::Update,
            event_time: None,
            received_at: "2024-08-29T10:34:20Z".parse().unwrap(),
        }
    }

    fn event(records: &[(Option<&str>, &str)]) -> SqsEvent {
        event_of(records.iter().copied())
    }

    #[test]
    fn decodes_every_record_and_fails_only_the_bodies_that_are_not_messages() {
        let good = change(7).to_json();
        let event = event(&[
            (Some("m1"), &good),
            (Some("m2"), "{\"portal\":\"acme\"}"),
            (Some("m3"), &change(8).to_json()),
            (Some("m4"), "not json"),
        ]);
        let decoded = decode_changes(&event);
        let ids: Vec<_> = decoded
            .iter()
            .map(|(m, c)| (m.message_id.as_deref(), c.as_ref().ok().map(|c| c.id)))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("m1"), Some(7)),
                (Some("m2"), None),
                (Some("m3"), Some(8)),
                (Some("m4"), None)
            ]
        );
        let reason = decoded[1].1.as_ref().unwrap_err().to_string();
        assert!(reason.contains("not a change message"), "{reason}");

        let response =
            batch_response(decoded.iter().map(|(m, c)| (*m, c.as_ref().map(|_| ())))).unwrap();
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m4"}]})
        );
    }

    #[test]
    fn a_batch_without_failures_answers_an_empty_list() {
        let event = event(&[(Some("m1"), "a"), (Some("m2"), "b")]);
        let response =
            batch_response(event.records.iter().map(|m| (m, Ok::<(), String>(())))).unwrap();
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": []})
        );
    }

    #[test]
    fn names_the_failed_messages_in_any_position() {
        let event = event(&[(Some("a"), ""), (Some("b"), ""), (Some("c"), "")]);
        let outcome = |id: &str| {
            if id == "a" || id == "c" {
                Err("down")
            } else {
                Ok(())
            }
        };
        let response = batch_response(
            event
                .records
                .iter()
                .map(|m| (m, outcome(m.message_id.as_deref().unwrap()))),
        )
        .unwrap();
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["a", "c"]);
    }

    #[test]
    fn a_failed_message_without_an_id_fails_the_whole_batch() {
        let event = event(&[(Some("m1"), ""), (None, ""), (Some(""), "")]);
        // Without an ID but successful: nothing to report.
        let outcomes = [Ok(()), Ok(()), Err("boom")];
        let error = batch_response(event.records.iter().zip(outcomes)).unwrap_err();
        assert_eq!(error.error_type(), "Transient");
        assert!(error.to_string().contains("boom"), "{error}");
        let outcomes = [Err("boom"), Ok(()), Ok(())];
        assert!(batch_response(event.records.iter().zip(outcomes)).is_ok());
        let outcomes = [Ok(()), Err("boom"), Ok(())];
        assert!(batch_response(event.records.iter().zip(outcomes)).is_err());
    }
}
