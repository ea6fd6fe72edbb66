//! Arbitrary methods, headers, content types, queries and bytes thrown at the handler:
//! it never panics, never answers 5xx unless the queue was told to fail, and never
//! sets a header of its own choosing from the input.

mod common;

use common::*;
use lambda_http::http::{HeaderName, HeaderValue, Method};
use lambda_http::{Body, Request};
use proptest::prelude::*;

fn methods() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::POST),
        1 => Just(Method::GET),
        1 => Just(Method::PUT),
        1 => "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn content_types() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(FORM.as_bytes().to_vec()),
        Just(b"application/json".to_vec()),
        Just(b"Application/JSON; charset=\"utf-8\"".to_vec()),
        Just(b"application/x-www-form-urlencoded;charset=windows-1251".to_vec()),
        prop::collection::vec(32u8..127, 0..40),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// Header names a sender might use, with the ones the intake reads weighted up.
fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("x-bitrix-token".to_string()),
        Just("X-Webhook-Token".to_string()),
        Just("authorization".to_string()),
        Just("content-type".to_string()),
        "[a-z][a-z0-9-]{0,20}",
    ];
    let value = prop_oneof![
        Just(APP_TOKEN.as_bytes().to_vec()),
        Just(format!("Bearer {SDK_TOKEN}").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..60),
    ];
    prop::collection::vec((name, value), 0..5)
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let sdk = format!(
        "event=ONCRMCONTACTADD&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Bapplication_token%5D={SDK_TOKEN}"
    );
    let json = format!(
        r#"{{"event":"ONCRMDEALUPDATE","data":{{"FIELDS":{{"ID":"759"}}}},"auth":{{"domain":"some-domain.bitrix24.com","application_token":"{APP_TOKEN}"}}}}"#
    );
    let mutated = |text: String| {
        let len = text.len();
        (
            prop::collection::vec((0..len, any::<u8>()), 0..4),
            Just(text),
        )
            .prop_map(|(changes, text)| {
                let mut bytes = text.into_bytes();
                for (at, byte) in changes {
                    bytes[at] = byte;
                }
                bytes
            })
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        "[a-zA-Z0-9%\\[\\]&=_+{}\":,.-]{0,200}".prop_map(String::into_bytes),
        mutated(sdk),
        mutated(json),
    ]
}

fn build(
    method: Method,
    query: &str,
    content_type: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
) -> Request {
    let uri = if query.is_empty() {
        "https://intake.example/".to_string()
    } else {
        format!("https://intake.example/?{query}")
    };
    let mut request = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::Binary(body))
        .expect("a URI from the query alphabet is valid");
    let all = std::iter::once(("content-type".to_string(), content_type)).chain(headers);
    for (name, value) in all {
        // Only what a function URL could deliver: valid names and values.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    request
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn no_input_gets_a_panic_a_5xx_or_an_echoed_header(
        method in methods(),
        query in "[a-zA-Z0-9=&%_.~-]{0,40}",
        content_type in content_types(),
        headers in headers(),
        body in bodies(),
        queue_fails in prop::bool::weighted(0.2),
    ) {
        let (state, queue) = intake();
        if queue_fails {
            queue.fail_next(1);
        }
        let response = answer(&state, build(method, &query, content_type, headers, body));
        let status = response.status().as_u16();
        if queue_fails {
            prop_assert!(status < 500 || status == 503, "status {}", status);
        } else {
            prop_assert!(status < 500, "status {}", status);
        }
        prop_assert!(status == 202 || status >= 400, "status {}", status);
        prop_assert_eq!(queue.drain().len(), usize::from(status == 202));
        assert_own_headers(response.headers());
        let body = json_body(&response);
        let shown = body.to_string();
        prop_assert!(!shown.contains(APP_TOKEN) && !shown.contains(SDK_TOKEN), "{}", shown);
    }
}
