//! A local stand-in for the AWS Lambda Runtime API (version 2018-06-01, the interface a
//! custom runtime such as `lambda_runtime` polls), so a test or a benchmark can run a
//! function's real binary: point its `AWS_LAMBDA_RUNTIME_API` at [`RuntimeApi::address`],
//! hand it events with [`RuntimeApi::invoke`], and see when it became ready (its first
//! `GET .../invocation/next`) and the init error it reported, if any.
//!
//! What it serves (one invocation at a time, as a classic Lambda sandbox does):
//! - `GET /2018-06-01/runtime/invocation/next`: waits for an event and answers with its
//!   body and the headers `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn`, `Lambda-Runtime-Trace-Id`;
//! - `POST /2018-06-01/runtime/invocation/{id}/response` and `.../{id}/error`: the answer
//!   to the invocation `id` (202; 400 for an ID it never handed out or already answered);
//! - `POST /2018-06-01/runtime/init/error`: the function could not start (202).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What a function reported instead of an answer: the body of `.../error` and
/// `init/error` (`{"errorType": ..., "errorMessage": ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    pub error_type: String,
    pub error_message: String,
}

/// A completed invocation: the ID the function saw and the JSON it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub request_id: String,
    pub response: Value,
}

/// Why an invocation has no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvocationError {
    #[error("invocation {request_id} failed: {}: {}", report.error_type, report.error_message)]
    Function {
        request_id: String,
        report: ErrorReport,
    },
    #[error("the function reported an init error: {}: {}", .0.error_type, .0.error_message)]
    Init(ErrorReport),
    #[error("invocation {request_id}: no answer within {timeout:?}")]
    Timeout {
        request_id: String,
        timeout: Duration,
    },
    #[error("invocation {request_id} answered with a body that is not JSON: {reason}")]
    NotJson { request_id: String, reason: String },
    #[error("the function did not ask for an event within {0:?}")]
    NotReady(Duration),
}

/// A running stand-in on `127.0.0.1:<free port>`; dropping it stops the server.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    function_arn: String,
    /// Events waiting for a `/next`; the receiver sits behind an async lock, so a second
    /// concurrent poll queues behind the first.
    queue: mpsc::UnboundedSender<Event>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    /// Invocations handed out or queued, by request ID, until they are answered.
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    lifecycle: watch::Sender<Lifecycle>,
}

struct Event {
    request_id: String,
    deadline_ms: u128,
    body: Bytes,
}

enum Answer {
    Response(Bytes),
    Error(ErrorReport),
}

#[derive(Default, Clone)]
struct Lifecycle {
    ready_at: Option<Instant>,
    init_error: Option<ErrorReport>,
}

impl RuntimeApi {
    /// Starts the server for a function named `function_name` (it appears in the
    /// invoked function ARN the function sees).
    pub async fn start(function_name: &str) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the runtime API");
        let address = listener.local_addr().expect("the listener's address");
        let (queue, incoming) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            queue,
            incoming: tokio::sync::Mutex::new(incoming),
            waiting: Mutex::new(HashMap::new()),
            lifecycle: watch::Sender::new(Lifecycle::default()),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_event))
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("the runtime API stand-in stopped: {error}");
            }
        });
        RuntimeApi {
            address,
            shared,
            server,
        }
    }

    /// `127.0.0.1:<port>`: the value for the function's `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// When the function first asked for an event (`GET .../invocation/next`): the end
    /// of its init phase. `None` until then.
    pub fn ready_at(&self) -> Option<Instant> {
        self.shared.lifecycle.borrow().ready_at
    }

    /// The init error the function reported, if it did.
    pub fn init_error(&self) -> Option<ErrorReport> {
        self.shared.lifecycle.borrow().init_error.clone()
    }

    /// Waits up to `timeout` for the function's first poll and returns its instant; an
    /// init error reported meanwhile ends the wait.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Instant, InvocationError> {
        let mut lifecycle = self.shared.lifecycle.subscribe();
        let settled = tokio::time::timeout(
            timeout,
            lifecycle.wait_for(|l| l.ready_at.is_some() || l.init_error.is_some()),
        )
        .await
        .map_err(|_| InvocationError::NotReady(timeout))?
        .expect("the sender lives as long as self")
        .clone();
        match (settled.init_error, settled.ready_at) {
            (Some(report), _) => Err(InvocationError::Init(report)),
            (None, Some(ready_at)) => Ok(ready_at),
            (None, None) => Err(InvocationError::NotReady(timeout)),
        }
    }

    /// Waits up to `timeout` for an init error and returns it; `None` when the function
    /// reported none in that time.
    pub async fn wait_init_error(&self, timeout: Duration) -> Option<ErrorReport> {
        let mut lifecycle = self.shared.lifecycle.subscribe();
        tokio::time::timeout(timeout, lifecycle.wait_for(|l| l.init_error.is_some()))
            .await
            .ok()?
            .ok()?
            .init_error
            .clone()
    }

    /// Hands `payload` to the function as the next event, with a deadline `timeout`
    /// from now, and waits as long for its answer.
    pub async fn invoke(
        &self,
        payload: &Value,
        timeout: Duration,
    ) -> Result<Invocation, InvocationError> {
        let request_id = new_request_id();
        let (answer_tx, answer_rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request_id.clone(), answer_tx);
        let deadline = SystemTime::now() + timeout;
        let event = Event {
            request_id: request_id.clone(),
            deadline_ms: deadline
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_millis(),
            body: Bytes::from(payload.to_string()),
        };
        self.shared
            .queue
            .send(event)
            .expect("the receiver lives as long as self");

        let mut lifecycle = self.shared.lifecycle.subscribe();
        let answer = tokio::select! {
            answer = answer_rx => answer.ok(),
            failed = lifecycle.wait_for(|l| l.init_error.is_some()) => {
                let report = failed.expect("the sender lives as long as self").init_error.clone();
                self.forget(&request_id);
                return Err(InvocationError::Init(report.expect("waited for it")));
            }
            () = tokio::time::sleep(timeout) => None,
        };
        match answer {
            Some(Answer::Response(body)) => serde_json::from_slice(&body)
                .map(|response| Invocation {
                    request_id: request_id.clone(),
                    response,
                })
                .map_err(|error| InvocationError::NotJson {
                    request_id,
                    reason: error.to_string(),
                }),
            Some(Answer::Error(report)) => Err(InvocationError::Function { request_id, report }),
            None => {
                self.forget(&request_id);
                Err(InvocationError::Timeout {
                    request_id,
                    timeout,
                })
            }
        }
    }

    fn forget(&self, request_id: &str) {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id);
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A fresh ID in the UUID shape Lambda uses, unique within this process.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        nanos & 0xffff,
        count
    )
}

/// An X-Ray trace header for `request_id` (not sampled: nothing collects traces here).
fn trace_id(request_id: &str) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let digits: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        &digits[digits.len() - 24..],
        &digits[..16]
    )
}

async fn next_event(State(shared): State<Arc<Shared>>) -> Response {
    shared.lifecycle.send_if_modified(|l| {
        let first = l.ready_at.is_none();
        l.ready_at.get_or_insert_with(Instant::now);
        first
    });
    let event = shared.incoming.lock().await.recv().await;
    let Some(event) = event else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the runtime API is stopping",
        )
            .into_response();
    };
    let mut response = event.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in [
        ("lambda-runtime-aws-request-id", event.request_id.clone()),
        ("lambda-runtime-deadline-ms", event.deadline_ms.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            shared.function_arn.clone(),
        ),
        ("lambda-runtime-trace-id", trace_id(&event.request_id)),
    ] {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("IDs, numbers and ARNs are ASCII"),
        );
    }
    response
}

async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Response {
    answer(&shared, &request_id, Answer::Response(body))
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&shared, &request_id, Answer::Error(report(&headers, &body)))
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let report = report(&headers, &body);
    shared
        .lifecycle
        .send_modify(|l| l.init_error = Some(report));
    accepted()
}

fn answer(shared: &Shared, request_id: &str, answer: Answer) -> Response {
    let waiting = shared
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(request_id);
    match waiting {
        Some(sender) => {
            // The invoker may have given up (timeout); the function's answer is still fine.
            let _ = sender.send(answer);
            accepted()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "errorType": "InvalidRequestID",
                "errorMessage": format!("no pending invocation {request_id}"),
            })),
        )
            .into_response(),
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

/// The error a function posted: its JSON body, or failing that the error-type header and
/// the body as text.
fn report(headers: &HeaderMap, body: &[u8]) -> ErrorReport {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ErrorReport {
        error_type: field("errorType")
            .or(header_type)
            .unwrap_or_else(|| "Unknown".to_string()),
        error_message: field("errorMessage")
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    }
}
