//! HTTP: the webhook routes `/rest/{user_id}/{secret}/{method}`, the control
//! surface under `/_sim/`, and an accept loop that can drop a connection without
//! an answer (for the `drop_before` / `drop_after` faults).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::faults::{AfterFault, BeforeFault, FaultInjector, FaultSpec};
use crate::items;
use crate::limits::{LimitConfig, Limiter, LimitsUpdate};
use crate::methods::{execute, normalize_method};
use crate::params;
use crate::portal::{
    HideRequest, ItemMutateRequest, ItemUserFieldRequest, MutateBody, MutateOutcome, Mutation,
    Portal, UserFieldRequest,
};
use crate::reference::{self, CategoryRequest, CurrencyRequest, UserRequest};
use crate::robots::{
    AppRobotCall, Caller, RobotAuth, RobotDelivery, WebhookRobotCall, app_robot_form,
    webhook_robot_form, webhook_robot_url,
};
use crate::schema::{Entity, Kind};
use crate::shared::Shared;
use crate::smart::SmartProcessConfig;
use crate::stats::SimStats;
use crate::statuses::StatusRequest;

/// How long a `timeout` fault holds a request: longer than any sane client waits.
const TIMEOUT_FAULT: Duration = Duration::from_secs(120);
/// Request bodies up to this size are accepted (files travel base64-encoded).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Lets a handler close its connection without answering.
#[derive(Clone, Default)]
struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    async fn drop_connection(&self) -> Response {
        self.0.notify_one();
        // The connection task drops this future together with the connection.
        std::future::pending().await
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/rest/{user_id}/{secret}/{*method}", any(rest))
        .route("/rest/{method}", any(rest_application))
        .route(
            "/bitrix/components/bitrix/{component}/show_file.php",
            get(show_file),
        )
        .route("/_sim/stats", get(stats))
        .route("/_sim/stats/reset", post(reset_stats))
        .route("/_sim/reset", post(reset))
        .route("/_sim/mutate", post(mutate))
        .route("/_sim/dump/{entity}", get(dump))
        .route("/_sim/userfields", post(add_user_field))
        .route("/_sim/hide", post(hide))
        .route("/_sim/faults", get(faults).post(set_faults))
        .route("/_sim/limits", get(limits).post(set_limits))
        .route("/_sim/timeline", get(timeline))
        .route("/_sim/notifications", get(notifications))
        .route("/_sim/workflow-replies", get(workflow_replies))
        .route("/_sim/robot/webhook", post(fire_webhook_robot))
        .route("/_sim/robot/app", post(fire_app_robot))
        .route("/_sim/robots", get(robots))
        .route("/_sim/statuses", post(add_status))
        .route(
            "/_sim/smart-processes",
            get(smart_processes).post(add_smart_process),
        )
        .route("/_sim/categories", post(add_category))
        .route("/_sim/currencies", post(add_currency))
        .route("/_sim/users", post(add_user))
        .route("/_sim/productrows/{entity_type_id}", get(product_rows))
        .route("/_sim/stagehistory/{entity_type_id}", get(stage_history))
        .route("/bitrix/services/main/ajax.php", get(item_file))
        .route("/_sim/application", get(application))
        .route("/_sim/application/update", post(update_application))
        .fallback(|| async { json_error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// Serves connections until `shutdown` changes or its sender is dropped.
pub(crate) async fn serve(listener: TcpListener, router: Router, shutdown: watch::Receiver<bool>) {
    loop {
        let mut stop = shutdown.clone();
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let router = router.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let kill = ConnectionKill::default();
            let handler_kill = kill.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(handler_kill.clone());
                router.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = kill.0.notified() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(status, bytes)
}

fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn json_error(status: u16, code: &str, description: &str) -> Response {
    json_response(status, &ApiError::new(status, code, description).body())
}

fn api_error(error: &ApiError) -> Response {
    json_response(error.status, &error.body())
}

/// How a REST call proves who it is.
enum Credentials {
    /// `/rest/{user_id}/{secret}/{method}`: an incoming webhook.
    Webhook { user_id: String, secret: String },
    /// `/rest/{method}` with an `auth` parameter: the application's access token.
    AccessToken,
}

/// One REST call through the webhook.
async fn rest(
    State(shared): State<Arc<Shared>>,
    kill: Option<Extension<ConnectionKill>>,
    Path((user_id, secret, method)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = Credentials::Webhook { user_id, secret };
    rest_call(shared, kill, credentials, method, query, headers, body).await
}

/// One REST call by the application (`auth=<access_token>`), or without credentials.
async fn rest_application(
    State(shared): State<Arc<Shared>>,
    kill: Option<Extension<ConnectionKill>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A file of a `crm.item.*` answer (`urlMachine`), served without the JSON envelope.
    if normalize_method(&method) == "crm.controller.item.getfile" {
        return serve_item_file(&shared, query.as_deref().unwrap_or_default());
    }
    let credentials = Credentials::AccessToken;
    rest_call(shared, kill, credentials, method, query, headers, body).await
}

/// A REST call with the faults of the request drawn first.
async fn rest_call(
    shared: Arc<Shared>,
    kill: Option<Extension<ConnectionKill>>,
    credentials: Credentials,
    method: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.stats.lock().http_requests += 1;
    let plan = shared.faults.lock().plan(&method, &body);
    let kill = kill.map(|Extension(k)| k).unwrap_or_default();
    match plan.before {
        Some(BeforeFault::Timeout) => {
            tokio::time::sleep(TIMEOUT_FAULT).await;
            return api_error(&ApiError::internal());
        }
        Some(BeforeFault::Drop) => return kill.drop_connection().await,
        Some(BeforeFault::Status503) => {
            shared.stats.lock().status_503 += 1;
            return api_error(&ApiError::query_limit());
        }
        Some(BeforeFault::Status500) => return api_error(&ApiError::internal()),
        None => {}
    }
    if let Some(latency) = plan.latency {
        tokio::time::sleep(latency).await;
    }
    let response = answer(
        shared,
        &credentials,
        &method,
        query.as_deref(),
        &headers,
        &body,
    )
    .await;
    match plan.after {
        Some(AfterFault::Drop) => kill.drop_connection().await,
        Some(AfterFault::Truncate) => truncated(response).await,
        None => response,
    }
}

async fn answer(
    shared: Arc<Shared>,
    credentials: &Credentials,
    method: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Credentials::Webhook { user_id, secret } = credentials {
        let user_ok = user_id.parse::<u64>().is_ok_and(|id| id == shared.user_id);
        if !user_ok || !constant_time_eq(secret.as_bytes(), shared.secret.as_bytes()) {
            return api_error(&ApiError::invalid_credentials());
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = params::from_request(query, content_type, body);
    let caller = match (credentials, &parsed) {
        (Credentials::Webhook { .. }, _) => Caller::Webhook,
        (Credentials::AccessToken, Ok(params)) => {
            match params::param(params, "auth").and_then(|v| v.as_str()) {
                None | Some("") => return api_error(&ApiError::no_auth()),
                Some(token)
                    if constant_time_eq(
                        token.as_bytes(),
                        shared.application.access_token.as_bytes(),
                    ) =>
                {
                    Caller::Application
                }
                Some(_) => return api_error(&ApiError::invalid_token()),
            }
        }
        // Without parameters there are no credentials to read either.
        (Credentials::AccessToken, Err(_)) => return api_error(&ApiError::no_auth()),
    };
    if !shared.limiter.lock().admit(shared.clock.now_f64()) {
        shared.stats.lock().status_503 += 1;
        return api_error(&ApiError::query_limit());
    }
    let mut params = match parsed {
        Ok(params) => params,
        Err(problem) => return api_error(&ApiError::new(400, "INVALID_REQUEST", problem)),
    };
    if caller == Caller::Application {
        params.retain(|key, _| !key.eq_ignore_ascii_case("auth"));
    }
    let method = normalize_method(method);
    let worker = Arc::clone(&shared);
    let outcome =
        tokio::task::spawn_blocking(move || execute(&worker, &method, &params, false, caller))
            .await;
    match outcome {
        Ok(Ok(answer)) => json_response(200, &answer.envelope()),
        Ok(Err(error)) => {
            if error.status == 429 {
                shared.stats.lock().status_429 += 1;
            }
            api_error(&error)
        }
        Err(join_error) => {
            tracing::error!(%join_error, "method execution failed");
            api_error(&ApiError::internal())
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a secret matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer with its body cut in the middle (the change, if any, is applied).
async fn truncated(response: Response) -> Response {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT)
        .await
        .unwrap_or_default();
    bytes_response(status, bytes[..bytes.len() / 2].to_vec())
}

/// A refused control request: 400 with `{"error": "<what is wrong>"}`.
struct ControlError(String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({"error": self.0}))).into_response()
    }
}

impl From<String> for ControlError {
    fn from(problem: String) -> Self {
        ControlError(problem)
    }
}

/// The body of a control request, or what is wrong with it.
fn control_body<T>(request: Result<Json<T>, JsonRejection>) -> Result<T, ControlError> {
    request
        .map(|Json(body)| body)
        .map_err(|rejection| ControlError(rejection.body_text()))
}

/// Runs a control operation off the async workers (it may hold the portal's lock for
/// long); a worker that died is refused too (`failure` says what failed).
async fn control_blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    failure: &str,
    operation: impl FnOnce(&Shared) -> Result<T, String> + Send + 'static,
) -> Result<T, ControlError> {
    let worker = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || operation(&worker)).await {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(ControlError(failure.to_string())),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.stats.lock().clone())
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    *shared.stats.lock() = SimStats::default();
    Json(json!({"ok": true}))
}

/// Back to the seeded state: data, user fields, product rows, comments and limit levels.
async fn reset(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ControlError> {
    let plan = shared.plan.clone();
    let portal = control_blocking(&shared, "regenerating the seeded data failed", move |_| {
        Ok(Portal::seeded(&plan))
    })
    .await?;
    *shared.portal.write() = portal;
    let config = shared.limiter.lock().config;
    *shared.limiter.lock() = Limiter::new(config);
    Ok(Json(json!({"ok": true})))
}

/// A control body of one of two shapes: by `entity_type_id` (smart processes and, by
/// number, the classic entities) or by the classic `entity` name.
fn by_type<A: serde::de::DeserializeOwned, B: serde::de::DeserializeOwned>(
    body: Value,
) -> Result<Result<A, B>, ControlError> {
    let shown = |e: serde_json::Error| ControlError(e.to_string());
    if body.get("entity_type_id").is_some() {
        serde_json::from_value(body).map(Ok).map_err(shown)
    } else {
        serde_json::from_value(body).map(Err).map_err(shown)
    }
}

async fn mutate(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<MutateOutcome>, ControlError> {
    let body = by_type::<ItemMutateRequest, MutateBody>(control_body(request)?)?;
    let (mutation, outcome) = control_blocking(&shared, "the mutation failed", move |worker| {
        let now = worker.clock.now_secs();
        let mut portal = worker.portal.write();
        let mutation = match body {
            Ok(item) => Mutation {
                kind: portal
                    .kind(item.entity_type_id)
                    .ok_or_else(|| format!("no smart process {}", item.entity_type_id))?,
                seed: item.seed,
                adds: item.adds,
                updates: item.updates,
                deletes: item.deletes,
                repeat_share: item.repeat_share,
            },
            Err(classic) => Mutation::from(&classic),
        };
        let outcome = portal.mutate(&mutation, now, worker.user_id as i64, &worker.clock)?;
        Ok((mutation, outcome))
    })
    .await?;
    if let Some(events) = &shared.events {
        events.publish(&Portal::mutation_changes(mutation.kind, &outcome));
    }
    Ok(Json(outcome))
}

/// `GET /_sim/dump/deal` (the old API's records) or `/_sim/dump/1038` (items as
/// `crm.item.get` shows them; `?useOriginalUfNames=Y` keeps `UF_CRM_*` names).
async fn dump(
    State(shared): State<Arc<Shared>>,
    Path(entity): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ControlError> {
    let original = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, v)| {
        k.eq_ignore_ascii_case("useOriginalUfNames")
            && crate::values::parse_flag(&json!(v)) == Some(true)
    });
    let by_number = entity.parse::<u32>().ok();
    let records = match by_number {
        Some(entity_type_id) => {
            control_blocking(&shared, "the dump failed", move |worker| {
                let portal = worker.portal.read();
                let kind = portal
                    .kind(entity_type_id)
                    .ok_or_else(|| format!("no smart process {entity_type_id}"))?;
                items::dump(&portal, kind, original, &worker.clock)
            })
            .await?
        }
        None => {
            let entity: Entity = entity.parse()?;
            control_blocking(&shared, "the dump failed", move |worker| {
                Ok(worker.portal.read().dump(entity, &worker.clock))
            })
            .await?
        }
    };
    Ok(Json(Value::Array(records)))
}

async fn add_user_field(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = by_type::<ItemUserFieldRequest, UserFieldRequest>(control_body(request)?)?;
    let name = control_blocking(&shared, "adding the user field failed", move |worker| {
        let mut portal = worker.portal.write();
        match &request {
            Ok(item) => portal.add_item_user_field(item),
            Err(classic) => portal.add_user_field(classic),
        }
    })
    .await?;
    Ok(Json(json!({"FIELD_NAME": name})))
}

/// `POST /_sim/hide` by `entity_type_id`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemHideRequest {
    entity_type_id: u32,
    share: f64,
    #[serde(default)]
    seed: u64,
}

/// Hides a share of an entity's records from the webhook's user (role change).
async fn hide(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = by_type::<ItemHideRequest, HideRequest>(control_body(request)?)?;
    let hidden = control_blocking(&shared, "hiding records failed", move |worker| {
        let mut portal = worker.portal.write();
        match request {
            Ok(item) => {
                let kind = portal
                    .kind(item.entity_type_id)
                    .ok_or_else(|| format!("no smart process {}", item.entity_type_id))?;
                portal.hide(kind, item.share, item.seed)
            }
            Err(classic) => portal.hide(classic.entity.into(), classic.share, classic.seed),
        }
    })
    .await?;
    Ok(Json(json!({"hidden": hidden})))
}

/// The smart processes as `crm.type.get` shows them.
async fn smart_processes(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let portal = shared.portal.read();
    let types = portal
        .smart
        .iter()
        .map(|s| {
            let enabled = portal.categories_enabled(s.info.entity_type_id);
            s.info.render(enabled, &shared.clock, true)
        })
        .collect();
    Json(Value::Array(types))
}

/// Adds a smart process at run time, seeded like the configured ones.
async fn add_smart_process(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<SmartProcessConfig>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let config = control_body(request)?;
    let row = control_blocking(&shared, "adding the smart process failed", move |worker| {
        let mut portal = worker.portal.write();
        let population = crate::generate::Population {
            contacts: portal.table(Entity::Contact).next_id - 1,
            companies: portal.table(Entity::Company).next_id - 1,
        };
        // Its seeded items were last changed a minute ago at the latest.
        let anchor = worker.clock.now_secs() - 60;
        let info = portal.add_smart_process(&config, anchor, population)?;
        let enabled = portal.categories_enabled(info.entity_type_id);
        Ok(info.render(enabled, &worker.clock, false))
    })
    .await?;
    Ok(Json(row))
}

/// Adds a pipeline of deals or of a smart process, with its stages.
async fn add_category(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<CategoryRequest>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = control_body(request)?;
    let mut portal = shared.portal.write();
    match portal.kind(request.entity_type_id) {
        Some(Kind::Classic(Entity::Deal) | Kind::Smart(_)) => {}
        _ => {
            return Err(ControlError(format!(
                "entity type {} has no pipelines to add to (deals are 2, smart processes their entityTypeId)",
                request.entity_type_id
            )));
        }
    }
    if request.name.trim().is_empty() {
        return Err(ControlError("the pipeline needs a name".to_string()));
    }
    let category = portal.add_category(request.entity_type_id, request.name.trim(), request.sort);
    Ok(Json(category.render()))
}

async fn add_currency(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<CurrencyRequest>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = control_body(request)?;
    let now = shared.clock.now_secs();
    let row = reference::add_currency(&mut shared.portal.write().currencies, &request, now)?;
    Ok(Json(row))
}

async fn add_user(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<UserRequest>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = control_body(request)?;
    let now = shared.clock.now_secs();
    let row = reference::add_user(
        &mut shared.portal.write().users,
        &request,
        now,
        &shared.clock,
    )?;
    Ok(Json(row))
}

/// Every product row of a type's records, as `crm.item.productrow.list` shows them.
async fn product_rows(
    State(shared): State<Arc<Shared>>,
    Path(entity_type_id): Path<u32>,
) -> Result<Json<Value>, ControlError> {
    let portal = shared.portal.read();
    let kind = portal
        .kind(entity_type_id)
        .ok_or_else(|| ControlError(format!("no smart process {entity_type_id}")))?;
    let rows = portal
        .products
        .all_of(kind)
        .into_iter()
        .map(|r| r.render_item())
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `GET /_sim/stagehistory/{entityTypeId}`: every stage history entry of a lead, deal
/// or smart-process type, as `crm.stagehistory.list` shows them with every field.
async fn stage_history(
    State(shared): State<Arc<Shared>>,
    Path(entity_type_id): Path<u32>,
) -> Result<Json<Value>, ControlError> {
    let entries = control_blocking(&shared, "the stage history dump failed", move |worker| {
        let portal = worker.portal.read();
        let kind = portal
            .kind(entity_type_id)
            .filter(|kind| crate::stagehistory::has_history(*kind))
            .ok_or_else(|| format!("entity type {entity_type_id} has no stage history"))?;
        Ok(portal.history.dump(kind, &worker.clock))
    })
    .await?;
    Ok(Json(Value::Array(entries)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    spec: String,
}

async fn faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"spec": shared.faults.lock().spec.to_string()}))
}

/// Replaces the fault spec; the random sequence restarts from its seed.
async fn set_faults(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<FaultsRequest>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let spec: FaultSpec = control_body(request)?.spec.parse()?;
    let shown = spec.to_string();
    *shared.faults.lock() = FaultInjector::new(spec);
    Ok(Json(json!({"spec": shown})))
}

async fn limits(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.limiter.lock().config).into_response()
}

/// Changes limit settings; the bucket and the operating windows start afresh.
async fn set_limits(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<LimitsUpdate>, JsonRejection>,
) -> Result<Json<LimitConfig>, ControlError> {
    let update = control_body(request)?;
    let mut limiter = shared.limiter.lock();
    let config = limiter.config.updated(&update)?;
    *limiter = Limiter::new(config);
    Ok(Json(config))
}

async fn timeline(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(Value::Array(shared.portal.read().comments.clone()))
}

async fn notifications(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(Value::Array(shared.portal.read().notifications.clone()))
}

async fn workflow_replies(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(Value::Array(shared.portal.read().workflow_replies.clone()))
}

/// The built-in "Webhook" robot: a form POST of `document_id` only, no auth.
async fn fire_webhook_robot(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<WebhookRobotCall>, JsonRejection>,
) -> Result<Json<RobotDelivery>, ControlError> {
    let call = control_body(request)?;
    require_deal(&shared, call.deal_id)?;
    let url = webhook_robot_url(&call.url, call.deal_id)?;
    let form = webhook_robot_form(call.deal_id);
    Ok(Json(deliver(&shared, url, form, None).await))
}

/// An application robot: the full payload with a fresh event token and `auth[...]`.
async fn fire_app_robot(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<AppRobotCall>, JsonRejection>,
) -> Result<Json<RobotDelivery>, ControlError> {
    let call = control_body(request)?;
    require_deal(&shared, call.deal_id)?;
    let issued = shared.portal.write().robots.issue(&call, call.deal_id)?;
    let auth = RobotAuth {
        application: &shared.application,
        refresh_token: &shared.refresh_token,
        domain: &shared.identity.domain,
        client_endpoint: &shared.identity.client_endpoint,
        member_id: &shared.identity.member_id,
        user_id: shared.user_id,
        now: chrono::Utc::now().timestamp(),
    };
    let form = app_robot_form(&call, &issued, call.deal_id, &auth);
    let tokens = Some((issued.event_token, issued.workflow_id));
    Ok(Json(deliver(&shared, issued.url, form, tokens).await))
}

/// A robot fires only for a deal that exists.
fn require_deal(shared: &Shared, deal_id: u64) -> Result<(), ControlError> {
    if shared.portal.read().exists(Entity::Deal, deal_id) {
        Ok(())
    } else {
        Err(ControlError(format!("deal {deal_id} does not exist")))
    }
}

/// POSTs a robot's form as the portal's queue does; the handler's answer is only
/// reported (the portal ignores it and never retries).
async fn deliver(
    shared: &Shared,
    url: String,
    form: Vec<(String, String)>,
    tokens: Option<(String, String)>,
) -> RobotDelivery {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let sent = shared
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::USER_AGENT, "Bitrix24 Webhook Engine")
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(error) => (None, Some(error.without_url().to_string())),
    };
    let (event_token, workflow_id) = tokens.unzip();
    RobotDelivery {
        url,
        sent: form
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        event_token,
        workflow_id,
        status,
        error,
    }
}

/// Adds a reference list item, as a user does in the CRM settings.
async fn add_status(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<StatusRequest>, JsonRejection>,
) -> Result<Json<Value>, ControlError> {
    let request = control_body(request)?;
    let row = shared.portal.write().statuses.add(&request)?;
    Ok(Json(row))
}

async fn robots(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(Value::Array(shared.portal.read().robots.describe()))
}

/// The installed application as its robot handlers see it.
async fn application(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let app = &shared.application;
    Json(json!({
        "access_token": app.access_token,
        "application_token": app.application_token,
        "handler_host": app.handler_host,
        "client_endpoint": shared.identity.client_endpoint,
        "domain": shared.identity.domain,
        "member_id": shared.identity.member_id,
    }))
}

/// An application update removes the application's robots.
async fn update_application(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let removed = shared.portal.write().robots.forget_registrations();
    Json(json!({"removed": removed}))
}

/// Which file a file URL names.
struct FileQuery {
    owner_id: u64,
    field_name: String,
    file_id: i64,
}

/// A file field's `showUrl` / `downloadUrl`: the file's bytes.
async fn show_file(
    State(shared): State<Arc<Shared>>,
    Path(component): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "File not found").into_response();
    let entity = component
        .strip_prefix("crm.")
        .and_then(|rest| rest.strip_suffix(".show"))
        .and_then(|name| name.parse::<Entity>().ok());
    let query = file_query(query.as_deref().unwrap_or_default());
    let (Some(entity), Some(query)) = (entity, query) else {
        return not_found();
    };
    let file = shared.portal.read().file(
        entity.into(),
        query.owner_id,
        &query.field_name,
        query.file_id,
    );
    let Some(file) = file else {
        return not_found();
    };
    file_response(file)
}

/// The bytes of a file, named in `Content-Disposition`.
fn file_response(file: crate::table::StoredFile) -> Response {
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file.name.replace(['"', '\\', '\r', '\n'], "_")
    );
    let mut response = (StatusCode::OK, file.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A file user field's `url` / `urlMachine` in `crm.item.*` answers
/// (`...?action=crm.controller.item.getFile&entityTypeId=&id=&fieldName=&fileId=`):
/// the file's bytes while the item's field holds the file, else 404.
async fn item_file(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    serve_item_file(&shared, query.as_deref().unwrap_or_default())
}

fn serve_item_file(shared: &Shared, query: &str) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "File not found").into_response();
    let mut entity_type_id = None;
    let mut owner_id = None;
    let mut field_name = None;
    let mut file_id = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "entityTypeId" => entity_type_id = value.parse::<u32>().ok(),
            "id" => owner_id = value.parse::<u64>().ok(),
            "fieldName" => field_name = Some(value.into_owned()),
            "fileId" => file_id = value.parse::<i64>().ok(),
            _ => {}
        }
    }
    let (Some(entity_type_id), Some(owner_id), Some(field_name), Some(file_id)) =
        (entity_type_id, owner_id, field_name, file_id)
    else {
        return not_found();
    };
    let portal = shared.portal.read();
    let file = portal
        .kind(entity_type_id)
        .and_then(|kind| portal.file(kind, owner_id, &field_name, file_id));
    match file {
        Some(file) => file_response(file),
        None => not_found(),
    }
}

/// The file URL's query (`ownerId`, `fieldName`, `fileId`; others such as `auth` and
/// `dynamic` are ignored).
fn file_query(query: &str) -> Option<FileQuery> {
    let mut owner_id = None;
    let mut field_name = None;
    let mut file_id = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "ownerId" => owner_id = value.parse().ok(),
            "fieldName" => field_name = Some(value.into_owned()),
            "fileId" => file_id = value.parse().ok(),
            _ => {}
        }
    }
    Some(FileQuery {
        owner_id: owner_id?,
        field_name: field_name?,
        file_id: file_id?,
    })
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
