//! A local stand-in for the webhook-intake function: the product's own event parsing
//! (`b24_domain::event::accept`) in front of an in-memory change queue, on a free
//! loopback port, for simulators to send their outgoing events to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use b24_domain::event::{IntakeRequest, PortalIdentity, accept};
use b24_domain::ports::{ChangeQueue, InMemoryQueue};
use b24_sim::{EventTarget, SimConfig};

use super::PORTAL;

pub const TOKEN: &str = "convergencetoken0123456789abcdef";
pub const MEMBER_ID: &str = "0123456789abcdef0123456789abcdef";

/// Where a simulator sends its events to reach `addr`'s intake.
pub fn event_target(addr: SocketAddr) -> EventTarget {
    EventTarget {
        url: format!("http://{addr}/events"),
        application_token: TOKEN.to_string(),
    }
}

/// The local stand-in for the webhook-intake function.
#[derive(Clone)]
pub struct Intake {
    portals: Arc<Vec<PortalIdentity>>,
    pub queue: Arc<InMemoryQueue>,
    pub refused: Arc<AtomicUsize>,
}

async fn receive(
    State(intake): State<Intake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let request = IntakeRequest {
        method: method.as_str(),
        headers: &headers,
        query: uri.query(),
        body: &body,
        body_is_base64: false,
    };
    match accept(&request, &intake.portals, chrono::Utc::now()) {
        Ok(message) => match intake.queue.send(&[message]).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(rejection) => {
            intake.refused.fetch_add(1, Ordering::SeqCst);
            StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST)
        }
    }
}

/// Starts the intake on a free loopback port; it stops with the test's runtime.
pub async fn start_intake() -> (Intake, SocketAddr) {
    let intake = Intake {
        portals: Arc::new(vec![PortalIdentity {
            name: PORTAL.to_string(),
            domain: SimConfig::default().domain,
            member_id: Some(MEMBER_ID.to_string()),
            tokens: vec![TOKEN.to_string()],
        }]),
        queue: Arc::new(InMemoryQueue::new()),
        refused: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(intake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (intake, addr)
}
