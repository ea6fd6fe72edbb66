//! The status function: `GET /` (the HTML page), `GET /status.json` (the report) and
//! `GET /schema.md` (every mirror column explained), each behind a bearer token from
//! `status.tokens`. What the pages hold is [`b24_status`]'s; this crate adds the token
//! check, the routes and the HTTP answers. It only reads the database.

pub mod auth;

use b24_config::Config;
use b24_domain::entity::Entity;
use b24_lambda::FunctionError;
use b24_status::{SchemaFilter, StatusService, page};
use b24_store::Store;
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};

/// What every invocation shares: the status data and the tokens that may read it.
pub struct StatusState {
    service: StatusService,
    tokens: Vec<String>,
}

impl StatusState {
    /// Connects to the database the status reads (`status.database_url`, else
    /// `database.url`). Without tokens, or without a database, the function cannot
    /// serve anyone: a configuration error.
    pub async fn connect(config: &Config) -> Result<StatusState, FunctionError> {
        let tokens = config
            .status
            .as_ref()
            .map(|s| s.tokens.clone())
            .unwrap_or_default();
        if tokens.is_empty() {
            return Err(FunctionError::Configuration(
                "status.tokens is not configured: the status function refuses every request without a token to accept".into(),
            ));
        }
        let database = config.status_database().ok_or_else(|| {
            FunctionError::Configuration(
                "no database: configure [database] url (and status.database_url for a read-only role)".into(),
            )
        })?;
        let store = Store::connect_with(database.url.expose(), &database.schema, &database.session)
            .await
            .map_err(|error| FunctionError::Transient(error.to_string()))?;
        Ok(StatusState {
            service: StatusService::new(store, config),
            tokens,
        })
    }
}

/// Answers one request. Never panics: every request gets a page, a 4xx naming what is
/// wrong, or a 503 when the database does not answer. Without an accepted token the
/// answer is 401 whatever was asked, and says nothing else.
pub async fn handle(state: &StatusState, request: Request) -> Response<Body> {
    let path = request.uri().path().to_string();
    let authorized = auth::is_authorized(
        request
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes),
        &state.tokens,
    );
    let response = if !authorized {
        unauthorized()
    } else if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    } else {
        route(state, &path, request.uri().query()).await
    };
    tracing::info!(method = %request.method(), %path, status = response.status().as_u16(), "status request");
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::Empty);
    }
    response
}

async fn route(state: &StatusState, path: &str, query: Option<&str>) -> Response<Body> {
    match path {
        "/" | "" | "/index.html" => match state.service.report().await {
            Ok(report) => with_type(
                StatusCode::OK,
                page::render(&report),
                "text/html; charset=utf-8",
            ),
            Err(error) => unavailable(&error),
        },
        "/status.json" => match state.service.report().await {
            Ok(report) => match serde_json::to_string_pretty(&report) {
                Ok(json) => with_type(StatusCode::OK, json, "application/json"),
                Err(error) => unavailable(&error),
            },
            Err(error) => unavailable(&error),
        },
        "/schema.md" => match schema_filter(query) {
            Err(message) => text(StatusCode::BAD_REQUEST, &format!("{message}\n")),
            Ok(filter) => match state.service.schema_markdown(&filter).await {
                Ok(markdown) => with_type(StatusCode::OK, markdown, "text/markdown; charset=utf-8"),
                Err(error) => unavailable(&error),
            },
        },
        other => text(
            StatusCode::NOT_FOUND,
            &format!("no page {other:?} here: the pages are /, /status.json and /schema.md\n"),
        ),
    }
}

/// `/schema.md?portal=NAME&entity=deal`: both optional.
fn schema_filter(query: Option<&str>) -> Result<SchemaFilter, String> {
    let mut filter = SchemaFilter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "portal" => filter.portal = Some(value.into_owned()),
            "entity" => {
                filter.entity = Some(
                    value
                        .parse::<Entity>()
                        .map_err(|e| format!("entity: {e}"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}: /schema.md takes portal and entity"
                ));
            }
        }
    }
    Ok(filter)
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Operational data: never cached, never framed, no referrer to other sites.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(status, body.to_string(), "text/plain; charset=utf-8")
}

/// The same answer for a missing, malformed or wrong token. The Basic challenge makes a
/// browser ask for the token (as the password).
fn unauthorized() -> Response<Body> {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "a status token is required: Authorization: Bearer <token> (or the token as the Basic password)\n",
    );
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"b24sync status\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"b24sync status\", charset=\"UTF-8\""),
    );
    response
}

fn unavailable(error: &dyn std::fmt::Display) -> Response<Body> {
    tracing::error!(%error, "the status could not be read");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the mirror database did not answer; the function's log has the error\n",
    )
}
