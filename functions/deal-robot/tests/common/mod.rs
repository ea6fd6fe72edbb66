//! The deal robot under test: a partner portal whose robot forwards deals to a central
//! portal, a third portal that may not use that route, an in-memory forward queue, and
//! robot calls as a function URL hands them over.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::{Arc, Mutex};

use b24_config::Config;
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::InMemoryQueue;
use deal_robot::RobotState;
use lambda_http::http::{self, HeaderMap};
use lambda_http::{Body, Request, Response};

/// The route's secret, as in `events/deal-robot/webhook-robot.json`.
pub const SECRET: &str = "f0rw4rd-s3cr3t-9c2e7a51d84b";
/// The partner portal's application token, as in `events/deal-robot/application-robot.json`.
pub const PARTNER_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";
pub const OTHER_TOKEN: &str = "0th3r-app-t0ken-9f8e7d6c5b4a3f2e";
/// The application robot's event token and OAuth tokens in the application sample.
pub const EVENT_TOKEN_PART: &str = "hsyUws1j4XiwqPqN45eH66CcQtEvpUIP";
pub const ACCESS_TOKEN: &str = "s6p6eclrvim6da22ft9ch94ekreb52lv";
pub const REFRESH_TOKEN: &str = "4s386p3q0tr8dy89xvmt96234v3dljg8";
pub const WEBHOOK_CODE: &str = "w3bh00kc0de5ecre7";
pub const PARTNER_MEMBER: &str = "d897063e1ce7c5eb9f04b9751eef5915";
pub const ROUTE: &str = "partner-to-central";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// No answer, log line or metric may repeat one of these.
pub const SECRETS: [&str; 6] = [
    SECRET,
    PARTNER_TOKEN,
    OTHER_TOKEN,
    EVENT_TOKEN_PART,
    ACCESS_TOKEN,
    REFRESH_TOKEN,
];

pub fn assert_no_secret(text: &str) {
    for secret in SECRETS.iter().chain([&WEBHOOK_CODE]) {
        assert!(!text.contains(secret), "{text:?} repeats a secret");
    }
}

/// The configuration matching the samples: `partner-to-central` takes the Webhook
/// robot's secret or the partner's application robot (code `forward_to_central`);
/// `other-to-central` belongs to the `other` portal.
pub fn config_json() -> String {
    format!(
        r#"{{"portals": {{
            "partner": {{"webhook_url": "https://partner.bitrix24.com/rest/1/{WEBHOOK_CODE}/",
                         "member_id": "{PARTNER_MEMBER}",
                         "application_tokens": ["{PARTNER_TOKEN}"]}},
            "central": {{"webhook_url": "https://central.bitrix24.com/rest/1/{WEBHOOK_CODE}/"}},
            "other": {{"webhook_url": "https://other.bitrix24.com/rest/1/{WEBHOOK_CODE}/",
                       "application_tokens": ["{OTHER_TOKEN}"]}}
        }},
        "routes": {{
            "{ROUTE}": {{"source": "partner", "target": "central", "secret": "{SECRET}",
                         "robot_code": "forward_to_central", "wait_for_reply": true}},
            "other-to-central": {{"source": "other", "target": "central"}}
        }}}}"#
    )
}

pub fn config() -> Config {
    Config::from_json_str(&config_json()).expect("the test configuration is valid")
}

pub fn robot() -> (RobotState, Arc<InMemoryQueue<ForwardJob>>) {
    let queue = Arc::new(InMemoryQueue::new());
    (RobotState::new(&config(), queue.clone()), queue)
}

/// A sample of `events/deal-robot/` as the function URL event it is.
pub fn sample_event(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../events/deal-robot/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A sample as the request lambda_http hands the handler.
pub fn sample(name: &str) -> Request {
    lambda_http::request::from_str(&sample_event(name).to_string())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A sample whose body and query have each `(from, to)` replaced.
pub fn edited_sample(name: &str, edits: &[(&str, &str)]) -> Request {
    let mut event = sample_event(name);
    for key in ["body", "rawQueryString"] {
        let mut edited = event[key].as_str().unwrap_or_default().to_string();
        for (from, to) in edits {
            edited = edited.replace(from, to);
        }
        event[key] = edited.into();
    }
    // lambda_http reads the raw query; keep the parsed copy in step.
    event
        .as_object_mut()
        .expect("an event object")
        .remove("queryStringParameters");
    lambda_http::request::from_str(&event.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::Binary(body))
        .expect("a valid test request")
}

/// The built-in Webhook robot's call for `document` with `query` in its URL.
pub fn webhook_call(query: &str, document: &str) -> Request {
    request(
        "POST",
        &format!("https://robot.example/?{query}"),
        &[("content-type", FORM)],
        format!(
            "document_id%5B0%5D=crm&document_id%5B1%5D=CCrmDocumentDeal&document_id%5B2%5D={document}"
        )
        .into_bytes(),
    )
}

/// Runs the handler to completion on this thread (so a thread-local log subscriber
/// sees its lines).
pub fn answer(state: &RobotState, request: Request) -> Response<Body> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(deal_robot::handle(state, request))
}

pub fn json_body(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("every answer is JSON")
}

/// No header of an answer comes from the request: only these are ever set.
pub fn assert_own_headers(headers: &HeaderMap) {
    for name in headers.keys() {
        assert!(
            name == http::header::CONTENT_TYPE || name == http::header::ALLOW,
            "unexpected header {name}"
        );
    }
}

/// Log lines written while the closure runs, on this thread, as JSON text.
pub fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (result, text)
}
