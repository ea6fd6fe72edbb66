//! Outgoing events as Bitrix24 sends them, and seeded fault injection.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use b24_sim::{Entity, EventTarget, FaultSpec, MutateRequest, SimConfig};
use common::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A handler that records (content type, body) and answers with `status`.
async fn handler(
    status: u16,
) -> (
    String,
    mpsc::UnboundedReceiver<(String, String)>,
    Arc<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let content_type = headers["content-type"]
                    .to_str()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send((content_type, body));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx, Arc::new(task))
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event arrives")
        .unwrap()
}

fn decoded(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn changes_post_form_encoded_events_like_the_portal() {
    let (url, mut rx, _server) = handler(200).await;
    let target = EventTarget {
        url,
        application_token: "jvh9y1ulvt2m6k5or90v9mg8nn32ozas".into(),
    };
    let sim = sim(SimConfig {
        deals: 5,
        contacts: 5,
        limits: unlimited(),
        events: Some(target),
        ..SimConfig::default()
    })
    .await;
    let id = ok(&sim, "crm.deal.add", json!({"fields": {"TITLE": "x"}})).await["result"]
        .as_u64()
        .unwrap();
    let (content_type, body) = next_event(&mut rx).await;
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    assert!(
        body.starts_with("event=ONCRMDEALADD&event_handler_id="),
        "{body}"
    );
    assert!(
        body.contains("data%5BFIELDS%5D%5BID%5D=6&"),
        "PHP-style keys, percent-encoded brackets: {body}"
    );
    let pairs = decoded(&body);
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "event",
            "event_handler_id",
            "data[FIELDS][ID]",
            "ts",
            "auth[domain]",
            "auth[client_endpoint]",
            "auth[server_endpoint]",
            "auth[member_id]",
            "auth[application_token]"
        ]
    );
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!(value("data[FIELDS][ID]"), id.to_string());
    assert_eq!(value("auth[domain]"), "sim.bitrix24.test");
    assert_eq!(
        value("auth[client_endpoint]"),
        format!("{}/rest/", sim.base_url())
    );
    assert_eq!(
        value("auth[server_endpoint]"),
        "https://oauth.bitrix.info/rest/"
    );
    assert_eq!(value("auth[member_id]"), sim.member_id());
    assert_eq!(value("auth[member_id]").len(), 32);
    assert_eq!(
        value("auth[application_token]"),
        "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
    );
    let ts: i64 = value("ts").parse().unwrap();
    assert!((ts - chrono::Utc::now().timestamp()).abs() < 5);

    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 1, "fields": {"TITLE": "y"}}),
    )
    .await;
    assert!(
        next_event(&mut rx)
            .await
            .1
            .starts_with("event=ONCRMDEALUPDATE")
    );
    ok(&sim, "crm.contact.delete", json!({"id": 2})).await;
    let (_, body) = next_event(&mut rx).await;
    assert!(
        body.starts_with("event=ONCRMCONTACTDELETE")
            && body.contains("data%5BFIELDS%5D%5BID%5D=2&")
    );
    // Changes through batch and the control surface fire events too.
    ok(
        &sim,
        "batch",
        json!({"cmd": {"a": "crm.lead.add?fields[TITLE]=z"}}),
    )
    .await;
    assert!(
        next_event(&mut rx)
            .await
            .1
            .starts_with("event=ONCRMLEADADD")
    );
    let outcome = sim
        .mutate(&MutateRequest {
            entity: Entity::Deal,
            seed: 3,
            adds: 1,
            updates: 1,
            deletes: 1,
        })
        .await
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        let pairs = decoded(&next_event(&mut rx).await.1);
        names.push((pairs[0].1.clone(), pairs[2].1.parse::<u64>().unwrap()));
    }
    assert_eq!(
        names,
        [
            ("ONCRMDEALADD".to_string(), outcome.added[0]),
            ("ONCRMDEALUPDATE".to_string(), outcome.updated[0]),
            ("ONCRMDEALDELETE".to_string(), outcome.deleted[0])
        ]
    );
    // A record changed twice within one second fires two update events.
    let twice = sim
        .mutate_with_repeats(
            &MutateRequest {
                entity: Entity::Deal,
                seed: 4,
                adds: 0,
                updates: 1,
                deletes: 0,
            },
            1.0,
        )
        .await
        .unwrap();
    assert_eq!(twice.repeated, twice.updated);
    for _ in 0..2 {
        let pairs = decoded(&next_event(&mut rx).await.1);
        assert_eq!(
            (pairs[0].1.as_str(), pairs[2].1.parse::<u64>().unwrap()),
            ("ONCRMDEALUPDATE", twice.updated[0])
        );
    }
    // Reads fire nothing; failed writes fire nothing.
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    call(&sim, "crm.deal.update", json!({"id": 999, "fields": {}})).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
    assert_eq!(sim.stats().await.unwrap().events_sent, 9);
}

#[tokio::test]
async fn failed_events_are_not_retried() {
    let (url, mut rx, _server) = handler(500).await;
    let target = EventTarget {
        url,
        application_token: "t".into(),
    };
    let sim = sim(SimConfig {
        deals: 2,
        limits: unlimited(),
        events: Some(target),
        ..SimConfig::default()
    })
    .await;
    ok(&sim, "crm.deal.delete", json!({"id": 1})).await;
    next_event(&mut rx).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "no retry"
    );
    assert_eq!(sim.stats().await.unwrap().events_failed, 1);
}

async fn faulty(spec: &str) -> b24_sim::RunningSim {
    let faults: FaultSpec = spec.parse().unwrap();
    sim(SimConfig {
        deals: 3,
        limits: unlimited(),
        faults,
        ..SimConfig::default()
    })
    .await
}

async fn deal_count(sim: &b24_sim::RunningSim) -> usize {
    sim.dump(Entity::Deal).await.unwrap().len()
}

#[tokio::test]
async fn injected_503_and_500_refuse_before_anything_is_applied() {
    let sim = faulty("503=1").await;
    let (status, body) = call(&sim, "crm.deal.add", json!({"fields": {}})).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"})
        )
    );
    assert_eq!(
        sim.stats().await.unwrap().status_503,
        1,
        "faults never hit /_sim/"
    );
    sim.set_faults("500=1").await.unwrap();
    let (status, body) = call(&sim, "crm.deal.add", json!({"fields": {}})).await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"error":"INTERNAL_SERVER_ERROR","error_description":"Internal server error"})
        )
    );
    assert_eq!(deal_count(&sim).await, 3);
    sim.set_faults("").await.unwrap();
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
}

#[tokio::test]
async fn dropped_connections_before_and_after_the_change() {
    let sim = faulty("drop_before=1").await;
    let result = http()
        .post(format!("{}crm.deal.add", sim.webhook_url()))
        .json(&json!({"fields": {}}))
        .send()
        .await;
    assert!(result.is_err(), "connection closed without an answer");
    assert_eq!(deal_count(&sim).await, 3, "nothing applied");
    sim.set_faults("drop_after=1").await.unwrap();
    let result = http()
        .post(format!("{}crm.deal.add", sim.webhook_url()))
        .json(&json!({"fields": {}}))
        .send()
        .await;
    assert!(result.is_err());
    assert_eq!(
        deal_count(&sim).await,
        4,
        "the change was applied before the drop"
    );
}

#[tokio::test]
async fn truncated_bodies_latency_and_timeouts() {
    let sim = faulty("truncate=1").await;
    let response = http()
        .post(format!("{}crm.deal.add", sim.webhook_url()))
        .json(&json!({"fields": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("{\"result\":4,\"time\":{"), "{text}");
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "cut in the middle"
    );
    assert_eq!(deal_count(&sim).await, 4);

    sim.set_faults("latency=300@1").await.unwrap();
    let started = Instant::now();
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    sim.set_faults("timeout=1").await.unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let result = client
        .get(format!("{}crm.deal.get?id=1", sim.webhook_url()))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
}

#[tokio::test]
async fn faults_are_reproducible_from_their_seed() {
    async fn statuses(spec: &str) -> Vec<u16> {
        let sim = faulty(spec).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(call(&sim, "crm.deal.get", json!({"id": 1})).await.0);
        }
        out
    }
    let first = statuses("503=0.3,500=0.2,seed=42").await;
    assert_eq!(first, statuses("503=0.3,500=0.2,seed=42").await);
    assert_ne!(first, statuses("503=0.3,500=0.2,seed=43").await);
    assert!(
        first.contains(&503) && first.contains(&500) && first.contains(&200),
        "{first:?}"
    );
}
