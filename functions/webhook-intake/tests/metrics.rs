//! What an invocation reports as EMF metrics: one line per request, an accepted event
//! by portal and entity, a refused one by its reason code, a queue failure by portal.

mod common;

use b24_lambda::metrics::MemorySink;
use common::*;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// Answers `request` with metrics captured, and returns the status and the one line.
fn reported(
    state: &mut webhook_intake::IntakeState,
    request: lambda_http::Request,
) -> (u16, Value) {
    let sink = MemorySink::new();
    state.metrics = sink.metrics();
    let status = answer(state, request).status().as_u16();
    let mut documents = sink.documents().unwrap();
    assert_eq!(documents.len(), 1, "one line per request: {documents:?}");
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
fn an_accepted_event_counts_by_portal_and_entity() {
    let (mut state, queue) = intake();
    let (status, line) = reported(&mut state, form_post(&sdk_event(SDK_TOKEN)));
    assert_eq!(status, 202);
    assert_eq!(queue.drain().len(), 1);
    assert_eq!(
        dimensions(&line),
        &json!([["Function", "Portal", "Entity"]])
    );
    assert_eq!(
        (&line["Function"], &line["Portal"], &line["Entity"]),
        (&json!("webhook-intake"), &json!("sdk"), &json!("contact"))
    );
    assert_eq!(metric_names(&line), ["EventsAccepted"]);
    assert_eq!(line["EventsAccepted"], 1.0);
}

#[test]
fn a_refused_event_counts_by_its_reason_code_and_nothing_else() {
    let (mut state, queue) = intake();
    let cases = [
        (form_post(&sdk_event("wrong-token")), 401, "bad_token"),
        (form_post(&sdk_event("")), 401, "missing_token"),
        (
            form_post(&sdk_event(SDK_TOKEN).replace("ONCRMCONTACTADD", "ONAPPINSTALL")),
            422,
            "unsupported_event",
        ),
        (
            request("GET", "https://intake.example/", &[], vec![]),
            405,
            "method_not_allowed",
        ),
        (form_post("data%5BFIELDS%5D=1"), 400, "malformed"),
    ];
    for (request, expected_status, reason) in cases {
        let (status, line) = reported(&mut state, request);
        assert_eq!(status, expected_status, "{reason}");
        assert_eq!(dimensions(&line), &json!([["Function", "Reason"]]));
        assert_eq!(line["Reason"], reason);
        assert_eq!(metric_names(&line), ["EventsRejected"]);
        assert_eq!(line["EventsRejected"], 1.0);
        // Nothing from the request: no portal, no token.
        assert!(line.get("Portal").is_none(), "{line}");
        assert!(!line.to_string().contains(SDK_TOKEN), "{line}");
    }
    assert!(queue.drain().is_empty());
}

#[test]
fn a_queue_that_refuses_counts_as_a_queue_failure() {
    let (mut state, queue) = intake();
    queue.fail_next(1);
    let (status, line) = reported(&mut state, form_post(&sdk_event(SDK_TOKEN)));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE.as_u16());
    assert_eq!(metric_names(&line), ["QueueFailures"]);
    assert_eq!(line["QueueFailures"], 1.0);
    assert_eq!(
        (&line["Portal"], &line["Entity"]),
        (&json!("sdk"), &json!("contact"))
    );
    assert!(!line.to_string().contains(SDK_TOKEN), "{line}");
}

/// The captured SDK event (a contact added on the `sdk` portal) with `token`.
fn sdk_event(token: &str) -> String {
    format!(
        "event=ONCRMCONTACTADD&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Bapplication_token%5D={token}"
    )
}
