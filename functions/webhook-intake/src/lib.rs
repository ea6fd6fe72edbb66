//! The webhook intake: one Bitrix24 event POST in, one change message on the change
//! queue, and an answer in milliseconds. Parsing and authentication are the pure
//! [`b24_domain::event::accept`]; this crate adds the HTTP answers and the queue.

use std::sync::Arc;

use b24_config::Config;
use b24_domain::change::ChangeMessage;
use b24_domain::event::{self, IntakeRequest, PortalIdentity, Rejection};
use b24_domain::ports::ChangeQueue;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};

/// What every invocation shares: the configured portals and the queue.
pub struct IntakeState {
    pub portals: Vec<PortalIdentity>,
    pub queue: Arc<dyn ChangeQueue>,
}

impl IntakeState {
    pub fn new(config: &Config, queue: Arc<dyn ChangeQueue>) -> IntakeState {
        IntakeState {
            portals: portal_identities(config),
            queue,
        }
    }
}

/// The portals as the intake sees them: name, domain, member_id and tokens.
pub fn portal_identities(config: &Config) -> Vec<PortalIdentity> {
    config
        .portals
        .iter()
        .map(|(name, portal)| PortalIdentity {
            name: name.clone(),
            domain: portal.domain.clone(),
            member_id: portal.member_id.clone(),
            tokens: portal.application_tokens.clone(),
        })
        .collect()
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
            return refusal(&rejection);
        }
    };
    match state.queue.send(std::slice::from_ref(&message)).await {
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
