//! The EMF lines a batch reports: forwards by route, failures by route and reason,
//! Bitrix24 requests by portal and the lag from the robot's call.

mod common;

use b24_lambda::metrics::{MemorySink, check_line};
use common::*;
use deal_forwarder::forward_batch;
use serde_json::Value;

fn lines_with(lines: &[Value], metric: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| line.get(metric).is_some())
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_batch_reports_forwards_failures_requests_and_lag() {
    let portals = Portals::start(2).await;
    let service = portals.service().await;
    let sink = MemorySink::new();
    let event = sqs_event(
        &[
            ("m1", job("plain", 1)),
            ("m2", "not a job".to_string()),
            ("m3", job("plain", 404)),
        ],
        1,
    );
    forward_batch(&service, &sink.metrics(), &event, 5, None)
        .await
        .unwrap();
    let again = sqs_event(&[("m4", job("plain", 1))], 1);
    forward_batch(&service, &sink.metrics(), &again, 5, None)
        .await
        .unwrap();
    let lines: Vec<Value> = sink
        .lines()
        .iter()
        .map(|line| check_line(line).unwrap())
        .collect();

    let forwards = lines_with(&lines, "Forwards");
    assert_eq!(forwards.len(), 2, "{lines:#?}");
    for (line, (created, updated)) in forwards.iter().zip([(1, 0), (0, 1)]) {
        assert_eq!(line["Function"], "deal-forwarder");
        assert_eq!(line["Route"], "plain");
        assert_eq!(
            (line["Created"].as_u64(), line["Updated"].as_u64()),
            (Some(created), Some(updated))
        );
        let lag = line["ForwardLagMs"].as_f64().unwrap();
        assert!((0.0..60_000.0).contains(&lag), "{line}");
    }

    let failures: Vec<(String, String)> = lines_with(&lines, "ForwardsFailed")
        .iter()
        .map(|l| {
            (
                l["Route"].as_str().unwrap().into(),
                l["Reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("none".to_string(), "invalid_job".to_string()),
            ("plain".to_string(), "deal_not_found".to_string())
        ]
    );

    // The first forward read the metadata too; each costs at most two requests per portal.
    let requests: Vec<(String, u64)> = lines_with(&lines, "BitrixRequests")
        .iter()
        .map(|l| {
            (
                l["Portal"].as_str().unwrap().into(),
                l["BitrixRequests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[0].0, "partner");
    assert_eq!(requests[1].0, "central");
    for (portal, count) in &requests {
        assert!((1..=2).contains(count), "{portal}: {count}");
    }
}
