//! The webhook intake: one Bitrix24 event POST in, one change message on the change
//! queue, and an answer in milliseconds. Parsing and authentication are the pure
//! [`b24_domain::event::accept`]; this crate adds the HTTP answers, the queue and the
//! metrics (one EMF line per request: `EventsAccepted`, `EventsRejected` by reason, or
//! `QueueFailures`).

use std::sync::Arc;

use b24_config::Config;
use b24_domain::change::ChangeMessage;
use b24_domain::event::{self, IntakeRequest, PortalIdentity, Rejection};
use b24_domain::ports::ChangeQueue;
use b24_lambda::metrics::{MetricSet, Metrics};
use lambda_http::http::{HeaderValue, StatusCode, header};
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
    let headers: Vec<(&str, &[u8])> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let intake = IntakeRequest {
        method: request.method().as_str(),
        headers: &headers,
        query: request.uri().query(),
        body: request.body().as_ref(),
        // lambda_http has already decoded the function URL's base64.
        body_is_base64: false,
    };
    let message = match event::accept(&intake, &state.portals, chrono::Utc::now()) {
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
            return refusal(&rejection);
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
            answer(
                StatusCode::ACCEPTED,
                &serde_json::json!({"status": "queued"}),
            )
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
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the change queue is unavailable; the event was logged"}),
            )
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

fn refusal(rejection: &Rejection) -> Response<Body> {
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = answer(status, &serde_json::json!({"error": rejection.to_string()}));
    if matches!(rejection, Rejection::MethodNotAllowed) {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// A small JSON answer; no header comes from the request.
fn answer(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
