//! The webhook intake: one Bitrix24 event POST in, one change message on the change
//! queue, and an answer in milliseconds. Parsing and authentication are the pure
//! [`b24_domain::event::accept`]; this crate adds the HTTP answers, the queue and the
//! metrics (one EMF line per request: `EventsAccepted`, `EventsRejected` by reason, or
//! `QueueFailures`).

use std::sync::Arc;

use b24_config::Config;
use b24_domain::change::ChangeMessage;
use b24_domain::event::{self, PortalIdentity};
use b24_domain::ports::ChangeQueue;
use b24_lambda::function_url::{queue_unavailable, queued, read_request, refusal};
use b24_lambda::metrics::{MetricSet, Metrics};
use lambda_http::{Body, Request, Response};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "webhook-intake";

/// What every invocation shares: the configured portals, the queue and where metrics go.
pub struct IntakeState {
    pub portals: Vec<PortalIdentity>,
    pub queue: Arc<dyn ChangeQueue>,
    pub metrics: Metrics,
}

impl IntakeState {
    /// Metrics go to stdout, where Lambda's log capture finds them.
    pub fn new(config: &Config, queue: Arc<dyn ChangeQueue>) -> IntakeState {
        IntakeState {
            portals: config.portal_identities(),
            queue,
            metrics: Metrics::stdout(),
        }
    }
}

/// Answers one request. Never fails and never panics: every input gets a 2xx or a
/// 4xx, and only a queue that refuses the message gets a 503 (Bitrix24 never re-sends
/// an event, so the failure must show in the portal's event log, and the log line
/// here carries what is needed to replay it).
pub async fn handle(state: &IntakeState, request: Request) -> Response<Body> {
    let accepted = read_request(&request, |intake| {
        event::accept(intake, &state.portals, chrono::Utc::now())
    });
    let message = match accepted {
        Ok(message) => message,
        Err(rejection) => {
            tracing::warn!(status = rejection.status(), reason = %rejection, "event refused");
            // The portal is not known (or not proven) here: only the reason is a dimension.
            state.metrics.emit(
                &MetricSet::new()
                    .dimension("Function", FUNCTION)
                    .dimension("Reason", rejection.code())
                    .count("EventsRejected", 1),
            );
            return refusal(rejection.status(), &rejection.to_string());
        }
    };
    let sent = state.queue.send(std::slice::from_ref(&message)).await;
    let outcome = if sent.is_ok() {
        "EventsAccepted"
    } else {
        "QueueFailures"
    };
    state.metrics.emit(
        &MetricSet::new()
            .dimension("Function", FUNCTION)
            .dimension("Portal", &message.portal)
            .dimension("Entity", message.entity.as_str())
            .count(outcome, 1),
    );
    match sent {
        Ok(()) => {
            log_message(&message, "event queued");
            queued()
        }
        Err(error) => {
            tracing::error!(
                portal = %message.portal,
                entity = %message.entity.as_str(),
                id = message.id,
                action = ?message.action,
                event_time = ?message.event_time,
                received_at = %message.received_at,
                change_message = %message.to_json(),
                %error,
                "the change queue refused the event: replay change_message"
            );
            queue_unavailable("the change queue is unavailable; the event was logged")
        }
    }
}

fn log_message(message: &ChangeMessage, text: &str) {
    tracing::info!(
        portal = %message.portal,
        entity = %message.entity.as_str(),
        id = message.id,
        action = ?message.action,
        "{text}"
    );
}
