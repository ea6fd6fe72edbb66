//! What an invocation reports as EMF metrics: one line per call, an accepted call by
//! route, a refused one by its reason code, a queue failure by route.

mod common;

use b24_lambda::metrics::MemorySink;
use common::*;
use serde_json::{Value, json};

/// Answers `request` with metrics captured, and returns the status and the one line.
fn reported(state: &mut deal_robot::RobotState, request: lambda_http::Request) -> (u16, Value) {
    let sink = MemorySink::new();
    state.metrics = sink.metrics();
    let status = answer(state, request).status().as_u16();
    let mut documents = sink.documents().unwrap();
    assert_eq!(documents.len(), 1, "one line per call: {documents:?}");
    (status, documents.remove(0))
}

fn dimensions(document: &Value) -> &Value {
    &document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
}

fn metric_names(document: &Value) -> Vec<&str> {
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect()
}

#[test]
fn an_accepted_call_counts_by_route() {
    let (mut state, queue) = robot();
    for name in ["webhook-robot.json", "application-robot.json"] {
        let (status, line) = reported(&mut state, sample(name));
        assert_eq!(status, 202, "{name}");
        assert_eq!(queue.drain().len(), 1, "{name}");
        assert_eq!(dimensions(&line), &json!([["Function", "Route"]]));
        assert_eq!(
            (&line["Function"], &line["Route"]),
            (&json!("deal-robot"), &json!(ROUTE))
        );
        assert_eq!(metric_names(&line), ["RobotCallsAccepted"]);
        assert_eq!(line["RobotCallsAccepted"], 1.0);
        assert_no_secret(&line.to_string());
    }
}

#[test]
fn a_refused_call_counts_by_its_reason_code_and_nothing_else() {
    let (mut state, queue) = robot();
    let query = format!("route={ROUTE}&secret={SECRET}");
    let cases = [
        (
            webhook_call(
                &format!("route={ROUTE}&secret=wrong-s3cr3t-0123456789"),
                "DEAL_1",
            ),
            401,
            "bad_secret",
        ),
        (
            edited_sample(
                "application-robot.json",
                &[(PARTNER_TOKEN, "ffffffffffffffffffffffffffffffff")],
            ),
            401,
            "bad_token",
        ),
        (
            edited_sample(
                "application-robot.json",
                &[
                    ("partner.bitrix24.com", "other.bitrix24.com"),
                    (PARTNER_MEMBER, "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
                    (PARTNER_TOKEN, OTHER_TOKEN),
                ],
            ),
            403,
            "portal_not_allowed",
        ),
        (
            webhook_call(&format!("route=nowhere&secret={SECRET}"), "DEAL_1"),
            404,
            "unknown_route",
        ),
        (webhook_call(&query, "LEAD_5"), 400, "not_a_deal"),
        (webhook_call(&query, "DEAL_0"), 400, "bad_deal_id"),
        (
            request("GET", "https://robot.example/", &[], vec![]),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, expected_status, reason) in cases {
        let (status, line) = reported(&mut state, request);
        assert_eq!(status, expected_status, "{reason}");
        assert_eq!(dimensions(&line), &json!([["Function", "Reason"]]));
        assert_eq!(line["Reason"], reason);
        assert_eq!(metric_names(&line), ["RobotCallsRejected"]);
        assert_eq!(line["RobotCallsRejected"], 1.0);
        // Nothing from the request: no route, no secret.
        assert!(line.get("Route").is_none(), "{line}");
        assert_no_secret(&line.to_string());
    }
    assert!(queue.drain().is_empty());
}

#[test]
fn a_queue_that_refuses_counts_as_a_queue_failure_by_route() {
    let (mut state, queue) = robot();
    queue.fail_next(1);
    let (status, line) = reported(&mut state, sample("application-robot.json"));
    assert_eq!(status, 503);
    assert_eq!(dimensions(&line), &json!([["Function", "Route"]]));
    assert_eq!(metric_names(&line), ["QueueFailures"]);
    assert_eq!(line["QueueFailures"], 1.0);
    assert_eq!(line["Route"], ROUTE);
    assert_no_secret(&line.to_string());
}
