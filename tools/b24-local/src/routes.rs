//! The HTTP surface: the intake's and the deal robot's function URLs, the Lambda Invoke
//! API for the other functions, and the local status and schedule controls.

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
        .route("/lambda-url/webhook-intake", any(intake_url))
        .route("/lambda-url/webhook-intake/", any(intake_url))
        .route("/lambda-url/webhook-intake/{*rest}", any(intake_url))
        .route("/lambda-url/deal-robot", any(robot_url))
        .route("/lambda-url/deal-robot/", any(robot_url))
        .route("/lambda-url/deal-robot/{*rest}", any(robot_url))
        .route("/lambda-url/status", any(status_url))
        .route("/lambda-url/status/", any(status_url))
        .route("/lambda-url/status/{*rest}", any(status_url))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route("/_local/status", get(status))
        .route("/_local/schedules/{name}", post(fire_schedule))
        .route("/_local/dead-letters", get(dead_letters))
        .with_state(state)
}

async fn intake_url(State(state): State<Arc<LocalState>>, request: Request) -> Response {
    match lambda_request(request).await {
        Ok(request) => axum_response(webhook_intake::handle(&state.intake, request).await),
        Err(too_large) => too_large,
    }
}

async fn robot_url(State(state): State<Arc<LocalState>>, request: Request) -> Response {
    match lambda_request(request).await {
        Ok(request) => axum_response(deal_robot::handle(&state.robot, request).await),
        Err(too_large) => too_large,
    }
}

/// The status function's URL: the function sees the path below the prefix, as it would
/// behind its own function URL (`/`, `/status.json`, `/schema.md`).
async fn status_url(State(state): State<Arc<LocalState>>, request: Request) -> Response {
    let Some(status) = &state.status else {
        let body = "the status function is not configured: add [status] tokens = [\"...\"] to the configuration\n";
        return (StatusCode::NOT_FOUND, body).into_response();
    };
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path();
    let below = path.strip_prefix("/lambda-url/status").unwrap_or(path);
    let below = if below.is_empty() { "/" } else { below };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{below}?{query}"),
        None => below.to_string(),
    };
    match path_and_query.parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return (StatusCode::BAD_REQUEST, "a malformed path").into_response(),
    }
    match lambda_request(Request::from_parts(parts, body)).await {
        Ok(request) => axum_response(status::handle(status, request).await),
        Err(too_large) => too_large,
    }
}

/// The request a function URL would hand the function (lambda_http has already decoded
/// a base64 body by then, as here); over the payload limit, the 413 to answer.
async fn lambda_request(request: Request) -> Result<lambda_http::Request, Response> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body over 6 MB").into_response());
    };
    Ok(lambda_http::Request::from_parts(
        parts,
        lambda_http::Body::from(bytes.to_vec()),
    ))
}

fn axum_response(response: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = response.into_parts();
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
    let sqs_event = |payload: Value| {
        serde_json::from_value::<SqsEvent>(payload)
            .map_err(|error| FunctionError::BadInput(format!("not an SQS event: {error}")))
    };
    let answer = match name.as_str() {
        "sync-scheduled" => state.invoke_sync(payload).await,
        "change-worker" => match sqs_event(payload) {
            Ok(event) => state.invoke_worker(event).await,
            Err(error) => Err(error),
        },
        "back-sync" => state.invoke_back_sync(payload).await,
        "deal-forwarder" => match sqs_event(payload) {
            Ok(event) => state.invoke_forwarder(event).await,
            Err(error) => Err(error),
        },
        other => {
            let body = json!({
                "Type": "User",
                "message": format!("no function {other:?} here: sync-scheduled, change-worker, deal-forwarder and back-sync are invoked this way, webhook-intake and deal-robot through their function URLs, /lambda-url/webhook-intake/ and /lambda-url/deal-robot/"),
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
        "queue": state.change_queue().counts(),
        "worker": state.worker_counts(),
        "forward_queue": state.forward_queue().counts(),
        "forwarder": state.forwarder_counts(),
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

/// Both dead-letter lists' bodies, oldest first.
async fn dead_letters(State(state): State<Arc<LocalState>>) -> axum::Json<Value> {
    let bodies = |list: Vec<String>| -> Vec<Value> {
        list.iter()
            .map(|body| serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.clone())))
            .collect()
    };
    axum::Json(json!({
        "changes": bodies(state.change_queue().dead_letters()),
        "forwards": bodies(state.forward_queue().dead_letters()),
    }))
}
