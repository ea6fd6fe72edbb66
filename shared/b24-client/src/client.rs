//! The HTTP side: one request, its limits, its retries and what it taught the limiter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use b24_domain::entity::Entity;
use b24_domain::item::ApiChoice;
use b24_domain::webhook::WebhookUrl;
use serde::Serialize;
use serde_json::{Map, Value};

use b24_domain::limits::OperatingReport;
use b24_domain::ports::RateLimiter;

use crate::entity_api::EntityApi;
use crate::error::B24Error;
use crate::limiter::InProcessLimiter;

/// Bitrix24 cuts a request off after 60 s; give it a little more before giving up.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(75);

#[derive(Clone)]
pub struct ClientOptions {
    /// Upper bound for one HTTP request, answer body included.
    pub timeout: Duration,
    /// Retries of one request after retryable failures (limits, 5xx, timeouts).
    pub max_retries: u32,
    /// Shared by every client talking to the same portal.
    pub limiter: Arc<dyn RateLimiter>,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The API the classic entities are read through ([`Client::entity_api`]).
    pub api: ApiChoice,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: DEFAULT_TIMEOUT,
            max_retries: 8,
            limiter: Arc::new(InProcessLimiter::default()),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            api: ApiChoice::default(),
        }
    }
}

/// Counters of what a client did, for summaries and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientStats {
    pub http_requests: u64,
    pub retries: u64,
    pub throttled_503: u64,
    pub throttled_429: u64,
    /// Operating seconds this client's requests cost, as far as the answers tell.
    /// `time.operating` is each method's running total in the portal's window, so
    /// this adds up how much each answer's totals grew beyond what the limiter expected
    /// to remain (never the totals themselves). The first answer of a method counts its
    /// whole total, usage by earlier runs in the window included; an answer whose total
    /// fell because older usage left the window counts zero; with a limiter shared
    /// between processes, their usage in between counts too. Stays 0 when the portal
    /// reports no operating time (on-premise, limiter off).
    pub operating_seconds: f64,
}

/// A single call's answer: `result` plus the paging keys lifted beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
    /// `time.operating`: the method's operating seconds in the portal's window after
    /// this call (a running total), when the portal reports it.
    pub operating: Option<f64>,
    pub operating_reset_at: Option<f64>,
}

/// A Bitrix24 REST client for one webhook. Cheap to clone; clones share the connection
/// pool, the limiter and the counters.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("webhook", &self.inner.webhook)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    webhook: WebhookUrl,
    http: reqwest::Client,
    pub(crate) options: ClientOptions,
    stats: Mutex<ClientStats>,
}

/// What one logical request is, for limiting and for the create-retry rule.
pub(crate) struct RequestSpec<'a> {
    /// The method in the URL (`batch` for a batch).
    pub method: &'a str,
    /// The methods the portal will charge: the call's own, or `batch` plus its commands'.
    pub charged: Vec<String>,
    /// Whether the request creates records, so that an ambiguous failure must not be retried.
    pub creates: bool,
}

impl Client {
    pub fn new(webhook: WebhookUrl, options: ClientOptions) -> Result<Client, B24Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("b24sync/", env!("CARGO_PKG_VERSION")))
            // A renamed portal answers 302; following it would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| B24Error::Setup(e.without_url().to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                webhook,
                http,
                options,
                stats: Mutex::new(ClientStats::default()),
            }),
        })
    }

    pub fn webhook(&self) -> &WebhookUrl {
        &self.inner.webhook
    }

    /// The API that serves `entity` on this portal: `crm.item.*` for a smart process,
    /// else as [`ClientOptions::api`] says. Its names translate fully once
    /// [`EntityApi::with_fields`] has read the entity's fields.
    pub fn entity_api(&self, entity: Entity) -> EntityApi {
        match self.inner.options.api {
            ApiChoice::Items => EntityApi::items(entity),
            ApiChoice::Classic => EntityApi::classic(entity),
        }
    }

    pub fn stats(&self) -> ClientStats {
        self.inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Calls one REST method with JSON parameters. A `*.add` is not retried after an
    /// ambiguous failure: it fails with [`B24Error::AmbiguousCreate`].
    pub async fn call(&self, method: &str, params: &Value) -> Result<ApiResponse, B24Error> {
        let charged = normalize_method(method);
        let spec = RequestSpec {
            method,
            charged: vec![charged.clone()],
            creates: is_create(method),
        };
        let mut envelope = self.execute(&spec, params).await?;
        let time = TimeBlock::from_envelope(&envelope);
        self.observe(time.report(charged).into_iter().collect())
            .await;
        Ok(ApiResponse {
            result: envelope.remove("result").unwrap_or(Value::Null),
            total: envelope.get("total").and_then(as_u64),
            next: envelope.get("next").and_then(as_u64),
            operating: time.operating,
            operating_reset_at: time.reset_at,
        })
    }

    pub(crate) async fn observe(&self, reports: Vec<OperatingReport>) {
        let grew = self.inner.options.limiter.observe(&reports).await;
        self.bump(|s| s.operating_seconds += grew);
    }

    pub(crate) fn bump(&self, update: impl FnOnce(&mut ClientStats)) {
        if let Ok(mut stats) = self.inner.stats.lock() {
            update(&mut stats);
        }
    }

    /// A limit the portal reported, at the top level or for one batch command.
    pub(crate) async fn note_throttle(&self, error: &B24Error) {
        let limiter = &self.inner.options.limiter;
        match error {
            B24Error::QueryLimitExceeded { .. } => {
                self.bump(|s| s.throttled_503 += 1);
                limiter.on_query_limit().await;
            }
            B24Error::OperationTimeLimit { method, reset_at } => {
                self.bump(|s| s.throttled_429 += 1);
                limiter
                    .on_operation_limit(&normalize_method(method), *reset_at)
                    .await;
            }
            _ => {}
        }
    }

    /// Sends one request through the limiter, retrying what is safe to retry, and
    /// returns the success envelope.
    pub(crate) async fn execute(
        &self,
        spec: &RequestSpec<'_>,
        body: &Value,
    ) -> Result<Map<String, Value>, B24Error> {
        let options = &self.inner.options;
        let charged: Vec<&str> = spec.charged.iter().map(String::as_str).collect();
        let mut attempt = 0;
        loop {
            options.limiter.acquire(&charged).await;
            self.bump(|s| s.http_requests += 1);
            let error = match self.send_once(spec.method, body).await {
                Ok(envelope) => return Ok(envelope),
                Err(error) => error,
            };
            self.note_throttle(&error).await;
            if spec.creates && error.leaves_create_ambiguous() {
                return Err(B24Error::AmbiguousCreate {
                    method: spec.method.to_string(),
                    cause: Box::new(error),
                });
            }
            if !error.is_retryable() || attempt >= options.max_retries {
                return Err(error);
            }
            attempt += 1;
            self.bump(|s| s.retries += 1);
            let delay = backoff(options.backoff_base, options.backoff_max, attempt);
            tracing::warn!(method = spec.method, attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(&self, method: &str, body: &Value) -> Result<Map<String, Value>, B24Error> {
        let inner = &self.inner;
        let response = inner
            .http
            .post(inner.webhook.method_url(method))
            .timeout(inner.options.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(method, e))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location_host = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| reqwest::Url::parse(l).ok())
                .and_then(|u| u.host_str().map(str::to_string));
            return Err(B24Error::PortalMoved {
                method: method.to_string(),
                status,
                location_host,
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(method, e))?;
        classify_answer(method, status, &bytes)
    }
}

/// Turns an HTTP answer into the success envelope or the matching error.
pub(crate) fn classify_answer(
    method: &str,
    status: u16,
    bytes: &[u8],
) -> Result<Map<String, Value>, B24Error> {
    let parsed = serde_json::from_slice::<Value>(bytes);
    let envelope = match parsed {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) if status >= 500 => {
            return Err(B24Error::Server {
                method: method.into(),
                status,
                code: None,
            });
        }
        Ok(_) => {
            return Err(B24Error::InvalidJson {
                method: method.into(),
                status,
                detail: "not a JSON object".into(),
            });
        }
        Err(e) => {
            return Err(B24Error::InvalidJson {
                method: method.into(),
                status,
                detail: e.to_string(),
            });
        }
    };
    if let Some(code) = envelope.get("error") {
        let code = match code {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let description = envelope
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut error = B24Error::from_envelope(method, Some(status), &code, description);
        if let B24Error::OperationTimeLimit { reset_at, .. } = &mut error {
            *reset_at = TimeBlock::from_envelope(&envelope).reset_at;
        }
        return Err(error);
    }
    match status {
        200..=299 => Ok(envelope),
        500.. => Err(B24Error::Server {
            method: method.into(),
            status,
            code: None,
        }),
        _ => Err(B24Error::Api {
            method: method.into(),
            status: Some(status),
            code: String::new(),
            description: String::new(),
        }),
    }
}

/// Transport failures, stripped of the URL (it holds the webhook secret).
fn transport_error(method: &str, error: reqwest::Error) -> B24Error {
    let method = method.to_string();
    let connect = error.is_connect();
    let timeout = error.is_timeout();
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if connect {
        B24Error::Unreachable { method, detail }
    } else if timeout {
        B24Error::Timeout { method }
    } else {
        B24Error::Network { method, detail }
    }
}

/// `time.operating` and `time.operating_reset_at` of an envelope; either may be
/// missing (on-premise portals and portals with the limiter off send neither).
pub(crate) struct TimeBlock {
    pub operating: Option<f64>,
    pub reset_at: Option<f64>,
}

impl TimeBlock {
    pub fn from_envelope(envelope: &Map<String, Value>) -> TimeBlock {
        Self::from_time(envelope.get("time"))
    }

    pub fn from_time(time: Option<&Value>) -> TimeBlock {
        let field = |name: &str| time.and_then(|t| t.get(name)).and_then(as_f64);
        TimeBlock {
            operating: field("operating"),
            reset_at: field("operating_reset_at"),
        }
    }

    /// What the limiter learns about `method` from this block: nothing without
    /// `operating`.
    pub fn report(&self, method: String) -> Option<OperatingReport> {
        self.operating.map(|total| OperatingReport {
            method,
            total,
            reset_at: self.reset_at,
        })
    }
}

/// Numbers arrive as JSON numbers or as strings, depending on the method.
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The name limits are tracked under: lower case, without a `.json` suffix.
pub(crate) fn normalize_method(method: &str) -> String {
    let lower = method.trim().to_ascii_lowercase();
    lower
        .strip_suffix(".json")
        .map(str::to_string)
        .unwrap_or(lower)
}

pub(crate) fn is_create(method: &str) -> bool {
    normalize_method(method).ends_with(".add")
}

/// Exponential backoff with jitter: half the step fixed, half random, so parallel
/// callers that failed together do not retry together.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let step = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let step = step.min(max.as_secs_f64());
    Duration::from_secs_f64(step / 2.0 + rand::random::<f64>() * step / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers_by_status_and_envelope() {
        let ok = classify_answer(
            "m",
            200,
            br#"{"result":[1],"total":1,"time":{"operating":0.5}}"#,
        )
        .unwrap();
        assert_eq!(ok["result"], serde_json::json!([1]));
        let err = classify_answer(
            "m",
            503,
            br#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
        );
        assert!(matches!(err, Err(B24Error::QueryLimitExceeded { .. })));
        let err = classify_answer(
            "m",
            429,
            br#"{"error":"OPERATION_TIME_LIMIT","error_description":"x","time":{"operating_reset_at":1700000000}}"#,
        );
        assert!(
            matches!(err, Err(B24Error::OperationTimeLimit { reset_at: Some(t), .. }) if t == 1_700_000_000.0)
        );
        assert!(matches!(
            classify_answer("m", 500, b"<html>oops</html>"),
            Err(B24Error::Server {
                status: 500,
                code: None,
                ..
            })
        ));
        assert!(matches!(
            classify_answer("m", 200, br#"{"result":[1,2"#),
            Err(B24Error::InvalidJson { .. })
        ));
        assert!(matches!(
            classify_answer("m", 200, b"[]"),
            Err(B24Error::InvalidJson { .. })
        ));
        assert!(matches!(
            classify_answer("m", 404, b"nope"),
            Err(B24Error::InvalidJson { status: 404, .. })
        ));
        assert!(matches!(
            classify_answer("m", 400, br#"{"error":"","error_description":"Not found"}"#),
            Err(B24Error::NotFound { .. })
        ));
    }

    #[test]
    fn method_names_normalize_and_creates_are_recognized() {
        assert_eq!(normalize_method("CRM.Deal.List.json"), "crm.deal.list");
        assert!(is_create("crm.deal.add"));
        assert!(is_create("crm.deal.ADD.json"));
        assert!(!is_create("crm.deal.update"));
        assert!(!is_create("crm.address.list"));
    }

    #[test]
    fn backoff_grows_stays_capped_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let first = backoff(base, max, 1).as_secs_f64();
        assert!((0.05..=0.1).contains(&first), "{first}");
        let tenth = backoff(base, max, 10).as_secs_f64();
        assert!((0.5..=1.0).contains(&tenth), "{tenth}");
        let samples: Vec<Duration> = (0..20).map(|_| backoff(base, max, 3)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "no jitter");
    }
}
