//! The HTTP surface: the intake's function URL, the Lambda Invoke API for the other two
//! functions, and the local status and schedule controls.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use b24_lambda::FunctionError;
use b24_lambda::sqs::SqsEvent;
use serde_json::{Value, json};

use crate::LocalState;
use crate::schedules::{fire, lock};

/// A function URL's request payload limit (6 MB): a bigger body gets 413.
const MAX_BODY: usize = 6 * 1024 * 1024;

pub(crate) fn router(state: Arc<LocalState>) -> Router {
    Router::new()
        .route("/lambda-url/webhook-intake", any(function_url))
        .route("/lambda-url/webhook-intake/", any(function_url))
        .route("/lambda-url/webhook-intake/{*rest}", any(function_url))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route("/_local/status", get(status))
        .route("/_local/schedules/{name}", post(fire_schedule))
        .route("/_local/dead-letters", get(dead_letters))
        .with_state(state)
}

/// The intake's handler with the request a function URL would hand it (lambda_http has
/// already decoded a base64 body by then, as here).
async fn function_url(State(state): State<Arc<LocalState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body over 6 MB").into_response();
    };
    let request = lambda_http::Request::from_parts(parts, lambda_http::Body::from(bytes.to_vec()));
    let (parts, body) = webhook_intake::handle(&state.intake, request)
        .await
        .into_parts();
    Response::from_parts(parts, Body::from(body.to_vec()))
}

/// The Lambda Invoke API (`RequestResponse`): the function's answer with 200, or its
/// error as Lambda reports one, `X-Amz-Function-Error: Unhandled` and the error body.
async fn invoke(
    State(state): State<Arc<LocalState>>,
    Path(name): Path<String>,
    payload: axum::body::Bytes,
) -> Response {
    let payload: Value = match serde_json::from_slice(&payload) {
        Ok(payload) => payload,
        Err(error) => {
            let body =
                json!({"Type": "User", "message": format!("the payload is not JSON: {error}")});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let answer = match name.as_str() {
        "sync-scheduled" => state.invoke_sync(payload).await,
        "change-worker" => match serde_json::from_value::<SqsEvent>(payload) {
            Ok(event) => state.invoke_worker(event).await,
            Err(error) => Err(FunctionError::BadInput(format!(
                "not an SQS event: {error}"
            ))),
        },
        other => {
            let body = json!({
                "Type": "User",
                "message": format!("no function {other:?} here: sync-scheduled and change-worker are invoked this way, webhook-intake through /lambda-url/webhook-intake/"),
            });
            return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
        }
    };
    match answer {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => {
            let mut response = axum::Json(function_error_body(&error)).into_response();
            response.headers_mut().insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            response
        }
    }
}

/// A function error as the Invoke API and the runtime report it.
pub(crate) fn function_error_body(error: &FunctionError) -> Value {
    json!({"errorType": error.error_type(), "errorMessage": error.to_string()})
}

async fn status(State(state): State<Arc<LocalState>>) -> axum::Json<Value> {
    let schedules: Vec<Value> = state
        .schedules
        .iter()
        .map(|schedule| {
            json!({
                "name": schedule.name,
                "every_seconds": schedule.every.as_secs_f64(),
                "input": schedule.input,
                "runs": *lock(&schedule.runs),
            })
        })
        .collect();
    axum::Json(json!({
        "queue": state.queue.counts(),
        "worker": state.worker_counts(),
        "schedules": schedules,
    }))
}

/// Fires a schedule now and answers with what its run returned.
async fn fire_schedule(State(state): State<Arc<LocalState>>, Path(name): Path<String>) -> Response {
    let Some(index) = state.schedules.iter().position(|s| s.name == name) else {
        let known: Vec<&str> = state.schedules.iter().map(|s| s.name.as_str()).collect();
        let body =
            json!({"error": format!("no schedule {name:?} (configured: {})", known.join(", "))});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    axum::Json(fire(&state, index).await).into_response()
}

async fn dead_letters(State(state): State<Arc<LocalState>>) -> axum::Json<Value> {
    let bodies: Vec<Value> = state
        .queue
        .dead_letters()
        .iter()
        .map(|body| serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.clone())))
        .collect();
    axum::Json(Value::Array(bodies))
}
