//! The Runtime API stand-in driven over HTTP the way a runtime drives it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use b24_testkit::runtime_api::{ErrorReport, InvocationError, RuntimeApi};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn url(runtime: &RuntimeApi, path: &str) -> String {
    format!("http://{}/2018-06-01/runtime/{path}", runtime.address())
}

/// Polls for the next event; returns its request ID, deadline, ARN, trace ID and body.
async fn next(runtime: &RuntimeApi) -> (String, u64, String, String, serde_json::Value) {
    let answer = reqwest::get(url(runtime, "invocation/next")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let request_id = header("lambda-runtime-aws-request-id");
    let deadline = header("lambda-runtime-deadline-ms").parse().unwrap();
    let arn = header("lambda-runtime-invoked-function-arn");
    let trace = header("lambda-runtime-trace-id");
    (
        request_id,
        deadline,
        arn,
        trace,
        answer.json().await.unwrap(),
    )
}

async fn post(runtime: &RuntimeApi, path: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(url(runtime, path))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn hands_out_an_event_with_its_headers_and_returns_the_answer() {
    let runtime = RuntimeApi::start("demo-fn").await;
    assert_eq!(runtime.ready_at(), None);
    let before = now_ms();
    let payload = json!({"portal": "acme"});
    let (invocation, polled) = tokio::join!(runtime.invoke(&payload, WAIT), async {
        let (request_id, deadline, arn, trace, event) = next(&runtime).await;
        let answered = post(
            &runtime,
            &format!("invocation/{request_id}/response"),
            json!({"ok": true}),
        )
        .await;
        // A second answer to the same invocation is refused.
        let again = post(
            &runtime,
            &format!("invocation/{request_id}/response"),
            json!({}),
        )
        .await;
        (request_id, deadline, arn, trace, event, answered, again)
    });
    let invocation = invocation.unwrap();
    let (request_id, deadline, arn, trace, event, answered, again) = polled;
    assert_eq!(invocation.request_id, request_id);
    assert_eq!(invocation.response, json!({"ok": true}));
    assert_eq!(event, json!({"portal": "acme"}));
    assert!(
        deadline >= before + 9_000 && deadline <= now_ms() + 10_000,
        "{deadline}"
    );
    assert_eq!(
        arn,
        "arn:aws:lambda:us-east-1:123456789012:function:demo-fn"
    );
    assert!(trace.starts_with("Root=1-"), "{trace}");
    assert_eq!((answered, again), (202, 400));
    assert!(runtime.ready_at().is_some());
    assert!(runtime.wait_ready(WAIT).await.is_ok());
}

#[tokio::test]
async fn a_reported_error_fails_the_invocation_with_its_type_and_message() {
    let runtime = RuntimeApi::start("demo-fn").await;
    let payload = json!({});
    let (result, ()) = tokio::join!(runtime.invoke(&payload, WAIT), async {
        let (request_id, ..) = next(&runtime).await;
        let status = post(
            &runtime,
            &format!("invocation/{request_id}/error"),
            json!({"errorType": "BadInput", "errorMessage": "invalid sync request: missing field `mode`"}),
        )
        .await;
        assert_eq!(status, 202);
    });
    match result {
        Err(InvocationError::Function { report, .. }) => assert_eq!(
            report,
            ErrorReport {
                error_type: "BadInput".into(),
                error_message: "invalid sync request: missing field `mode`".into(),
            }
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        post(&runtime, "invocation/never-handed-out/response", json!({})).await,
        400
    );
}

#[tokio::test]
async fn an_init_error_ends_waiting_for_readiness_and_for_answers() {
    let runtime = RuntimeApi::start("demo-fn").await;
    let report =
        json!({"errorType": "Configuration", "errorMessage": "portals.demo.entitys: unknown key"});
    assert_eq!(post(&runtime, "init/error", report).await, 202);
    let expected = ErrorReport {
        error_type: "Configuration".into(),
        error_message: "portals.demo.entitys: unknown key".into(),
    };
    assert_eq!(runtime.init_error(), Some(expected.clone()));
    assert_eq!(runtime.wait_init_error(WAIT).await, Some(expected.clone()));
    assert_eq!(
        runtime.wait_ready(WAIT).await,
        Err(InvocationError::Init(expected.clone()))
    );
    assert_eq!(
        runtime.invoke(&json!({}), WAIT).await,
        Err(InvocationError::Init(expected))
    );
}

#[tokio::test]
async fn gives_up_after_the_timeout() {
    let runtime = RuntimeApi::start("demo-fn").await;
    let timeout = Duration::from_millis(200);
    assert_eq!(
        runtime.wait_ready(timeout).await,
        Err(InvocationError::NotReady(timeout))
    );
    assert!(matches!(
        runtime.invoke(&json!({}), timeout).await,
        Err(InvocationError::Timeout { timeout: t, .. }) if t == timeout
    ));
    assert_eq!(runtime.wait_init_error(timeout).await, None);
}
