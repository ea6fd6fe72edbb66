//! The intake under test: configured portals, an in-memory queue, and requests as a
//! function URL hands them over.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;

use b24_config::Config;
use b24_domain::ports::InMemoryQueue;
use lambda_http::http::{self, HeaderMap};
use lambda_http::{Body, Request, Response};
use webhook_intake::IntakeState;

/// The token of the doc examples and of `events/webhook-intake/*.json`.
pub const APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";
/// The outgoing webhook's token of the same portal (a rotation pair).
pub const HOOK_TOKEN: &str = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas";
pub const EXAMPLE_TOKEN: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
pub const SDK_TOKEN: &str = "sdk-playground-token-7f3a";
pub const FORM: &str = "application/x-www-form-urlencoded";

pub fn config() -> Config {
    Config::from_json_str(&format!(
        r#"{{"portals": {{
            "acme": {{"webhook_url": "https://some-domain.bitrix24.com/rest/1/w3bh00kc0de/",
                      "application_tokens": ["{APP_TOKEN}", "{HOOK_TOKEN}"]}},
            "example": {{"webhook_url": "https://example.bitrix24.com/rest/1/w3bh00kc0de/",
                         "application_tokens": ["{EXAMPLE_TOKEN}"]}},
            "sdk": {{"webhook_url": "https://bitrix24-php-sdk-playground.bitrix24.com/rest/1/w3bh00kc0de/",
                     "member_id": "010b6886ebc205e43ae65000ee00addb",
                     "application_tokens": ["{SDK_TOKEN}"]}}
        }}}}"#
    ))
    .expect("the test configuration is valid")
}

pub fn intake() -> (IntakeState, Arc<InMemoryQueue>) {
    let queue = Arc::new(InMemoryQueue::new());
    (IntakeState::new(&config(), queue.clone()), queue)
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

pub fn form_post(body: &str) -> Request {
    request(
        "POST",
        "https://intake.example/",
        &[("content-type", FORM)],
        body.as_bytes().to_vec(),
    )
}

/// Runs the handler to completion on this thread (so a thread-local log subscriber
/// sees its lines).
pub fn answer(state: &IntakeState, request: Request) -> Response<Body> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(webhook_intake::handle(state, request))
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
