//! The handler with an in-memory forward queue: both samples (the built-in Webhook
//! robot and an application robot), each refusal's answer, a failing queue, and no
//! secret in any answer or log line.

mod common;

use b24_domain::forward::job::ForwardJob;
use common::*;
use lambda_http::http::{StatusCode, header};
use serde_json::json;

#[test]
fn queues_one_job_per_sample_with_the_fields_of_its_call() {
    let (state, queue) = robot();
    let (response, log) = logged(|| answer(&state, sample("webhook-robot.json")));
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json_body(&response), json!({"status": "queued"}));
    assert_own_headers(response.headers());
    assert!(log.contains("forward job queued"), "{log}");
    assert_no_secret(&log);
    let jobs = queue.drain();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        (job.route.as_str(), job.source.as_str(), job.deal_id),
        (ROUTE, "partner", 123)
    );
    // The Webhook robot sends no token and waits for nothing.
    assert_eq!(job.event_token, None);
    assert!(!job.waits_for_reply && job.properties.is_empty());

    let (response, log) = logged(|| answer(&state, sample("application-robot.json")));
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json_body(&response), json!({"status": "queued"}));
    assert_no_secret(&log);
    let jobs = queue.drain();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        (job.route.as_str(), job.source.as_str(), job.deal_id),
        (ROUTE, "partner", 457)
    );
    let token = job.event_token.as_deref().unwrap_or_default();
    assert!(
        token.starts_with("55c1dc1c3f0d75.78875596|A51601_82584_96831_81132|")
            && token.contains(EVENT_TOKEN_PART),
        "{token}"
    );
    assert!(job.waits_for_reply);
    assert_eq!(job.properties.get("comment"), Some(&json!("urgent")));
    // The job is what the forwarder reads back.
    assert_eq!(ForwardJob::from_json(&job.to_json()).as_ref(), Ok(job));
}

#[test]
fn answers_each_refusal_with_its_status_and_a_reason() {
    let (state, queue) = robot();
    let query = format!("route={ROUTE}&secret={SECRET}");
    let cases = [
        (
            webhook_call(
                &format!("route={ROUTE}&secret=wrong-s3cr3t-0123456789"),
                "DEAL_123",
            ),
            401,
            "the secret is wrong",
        ),
        (
            webhook_call(&format!("route={ROUTE}"), "DEAL_123"),
            401,
            "no ?secret=",
        ),
        (
            edited_sample(
                "application-robot.json",
                &[(PARTNER_TOKEN, "ffffffffffffffffffffffffffffffff")],
            ),
            401,
            "the token is wrong",
        ),
        // The other portal's own robot, with its own valid token, on the partner's route.
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
            "not the source of route partner-to-central",
        ),
        (
            webhook_call(&format!("route=nowhere&secret={SECRET}"), "DEAL_123"),
            404,
            "no configured route",
        ),
        (
            edited_sample(
                "application-robot.json",
                &[("code=forward_to_central", "code=forward_elsewhere")],
            ),
            404,
            "no configured route",
        ),
        (webhook_call(&query, "LEAD_5"), 400, "not a deal"),
        (
            edited_sample(
                "application-robot.json",
                &[("CCrmDocumentDeal", "CCrmDocumentLead")],
            ),
            400,
            "not a deal",
        ),
        (webhook_call(&query, "DEAL_0"), 400, "deal ID"),
        (webhook_call(&query, "DEAL_12x"), 400, "deal ID"),
        (
            request(
                "GET",
                &format!("https://robot.example/?{query}"),
                &[],
                vec![],
            ),
            405,
            "only POST",
        ),
        (
            request(
                "POST",
                &format!("https://robot.example/?{query}"),
                &[("content-type", "text/plain")],
                b"document_id=DEAL_1".to_vec(),
            ),
            415,
            "text/plain",
        ),
    ];
    for (request, status, reason) in cases {
        let (response, log) = logged(|| answer(&state, request));
        assert_eq!(response.status().as_u16(), status, "{reason}");
        let error = json_body(&response)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(reason), "{reason}: {error}");
        assert_no_secret(&error);
        assert_no_secret(&log);
        assert!(log.contains("robot call refused"), "{log}");
        assert_own_headers(response.headers());
        let allow = response.headers().get(header::ALLOW);
        assert_eq!(
            allow.map(|v| v.as_bytes()),
            (status == 405).then_some(&b"POST"[..])
        );
    }
    assert!(queue.drain().is_empty());
}

/// The application sample with `query` as its URL's query.
fn application_call_with_query(query: &str) -> lambda_http::Request {
    let mut event = sample_event("application-robot.json");
    event["rawQueryString"] = query.into();
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

#[test]
fn an_application_robot_may_name_its_route_in_the_url_and_a_secret_there_must_be_right() {
    let (state, queue) = robot();
    let cases = [
        (format!("route={ROUTE}"), StatusCode::ACCEPTED),
        (
            format!("route={ROUTE}&secret={SECRET}"),
            StatusCode::ACCEPTED,
        ),
        (
            format!("route={ROUTE}&secret=wrong-s3cr3t-0123456789"),
            StatusCode::UNAUTHORIZED,
        ),
        ("route=other-to-central".to_string(), StatusCode::FORBIDDEN),
    ];
    for (query, status) in cases {
        let response = answer(&state, application_call_with_query(&query));
        assert_eq!(response.status(), status, "{query}");
        let queued = queue.drain();
        assert_eq!(
            queued.len(),
            usize::from(status == StatusCode::ACCEPTED),
            "{query}"
        );
    }
    // The other portal's app-only route takes no Webhook robot call, whatever the secret.
    let response = answer(
        &state,
        webhook_call(&format!("route=other-to-central&secret={SECRET}"), "DEAL_1"),
    );
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        json_body(&response)["error"]
            .as_str()
            .unwrap()
            .contains("only an application robot")
    );
    assert!(queue.drain().is_empty());
}

#[test]
fn a_failing_queue_gets_503_and_a_replayable_log_line_without_the_event_token() {
    let (state, queue) = robot();
    queue.fail_next(1);
    let (response, log) = logged(|| answer(&state, sample("application-robot.json")));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = json_body(&response)["error"].as_str().unwrap().to_string();
    assert!(error.contains("forward queue"), "{error}");
    assert_no_secret(&error);
    assert_own_headers(response.headers());
    assert!(queue.drain().is_empty());

    assert_no_secret(&log);
    let line: serde_json::Value = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line in {log}"));
    let fields = &line["fields"];
    assert_eq!(fields["route"], ROUTE);
    assert_eq!(fields["source"], "partner");
    assert_eq!(fields["deal_id"], 457);
    // The robot waited: the log says so, since the replay cannot answer it.
    assert_eq!(fields["robot_waits"], true);
    let replay = ForwardJob::from_json(fields["forward_job"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            replay.route.as_str(),
            replay.source.as_str(),
            replay.deal_id
        ),
        (ROUTE, "partner", 457)
    );
    assert_eq!(replay.event_token, None);
    assert!(!replay.waits_for_reply);
    assert_eq!(replay.properties.get("comment"), Some(&json!("urgent")));

    // The queue is back: the next call is queued, token and all.
    let response = answer(&state, sample("application-robot.json"));
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let jobs = queue.drain();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].event_token.is_some() && jobs[0].waits_for_reply);
}

#[test]
fn every_sample_parses_and_is_accepted_by_the_test_configuration() {
    let dir = format!("{}/../../events/deal-robot", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["application-robot.json", "webhook-robot.json"]);
    let (state, queue) = robot();
    for name in &names {
        let response = answer(&state, sample(name));
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
        assert_eq!(queue.drain().len(), 1, "{name}");
    }
}
