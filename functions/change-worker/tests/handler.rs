//! The handler with an SQS event in and the partial-batch response out, against the
//! simulated portal and a throw-away PostgreSQL database.

use std::path::Path;

use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_lambda::metrics::{MemorySink, Metrics};
use b24_lambda::sqs::{SqsBatchResponse, SqsEvent};
use b24_sim::{RunningSim, SimConfig};
use b24_sync::SyncService;
use b24_testkit::TestDb;
use change_worker::apply_batch;
use serde_json::json;

/// The portal the sample events in `events/change-worker` name.
const PORTAL: &str = "demo";

/// A database, a simulated portal with 20 deals and contacts, and a service whose
/// portals are `demo` and `locked` (the same portal with a wrong webhook secret). Bind
/// every part: dropping one drops the database or stops the simulator.
async fn setup() -> (TestDb, RunningSim, SyncService) {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 20,
        contacts: 20,
        leads: 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let locked = sim
        .webhook_url()
        .replace("simsecret0123456", "wrongsecret00000");
    let entities = json!(["deal", "contact", "lead", "company"]);
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {
            PORTAL: {"webhook_url": sim.webhook_url(), "entities": entities},
            "locked": {"webhook_url": locked, "entities": entities},
        },
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let service = SyncService::connect(config, true).await.unwrap();
    (db, sim, service)
}

fn change(portal: &str, entity: Entity, id: u64, action: ChangeAction) -> String {
    ChangeMessage {
        portal: portal.to_string(),
        entity,
        id,
        action,
        event_time: None,
        received_at: chrono::Utc::now(),
    }
    .to_json()
}

fn sqs_event(records: &[(&str, String)]) -> SqsEvent {
    b24_lambda::sqs::event_of(records.iter().map(|(id, body)| (Some(*id), body.as_str())))
}

/// Metrics no test looks at.
fn unwatched() -> Metrics {
    MemorySink::new().metrics()
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let answer = serde_json::to_value(response).unwrap();
    answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// The IDs of `demo`'s live mirror rows of `entity`, ascending.
async fn mirror(db: &TestDb, entity: Entity) -> Vec<i64> {
    let sql = format!(
        "SELECT id FROM b24.{} WHERE portal = $1 AND deleted_at IS NULL ORDER BY id",
        entity.as_str()
    );
    let rows = db.client().await.query(&sql, &[&PORTAL]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_poisoned_message_fails_alone() {
    let (db, _sim, service) = setup().await;
    let unknown_entity =
        change(PORTAL, Entity::Deal, 4, ChangeAction::Update).replace("\"deal\"", "\"invoice\"");
    let event = sqs_event(&[
        ("m1", change(PORTAL, Entity::Deal, 3, ChangeAction::Update)),
        ("m2", "event=ONCRMDEALUPDATE&data[FIELDS][ID]=4".to_string()),
        ("m3", unknown_entity),
        ("m4", change(PORTAL, Entity::Deal, 7, ChangeAction::Update)),
        ("m5", change(PORTAL, Entity::Deal, 0, ChangeAction::Update)),
    ]);
    let response = apply_batch(&service, &unwatched(), &event, None)
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m2", "m3", "m5"]);
    assert_eq!(mirror(&db, Entity::Deal).await, [3, 7]);
}

#[tokio::test]
async fn duplicates_are_applied_once_and_none_fails() {
    let (db, sim, service) = setup().await;
    let update = change(PORTAL, Entity::Contact, 5, ChangeAction::Update);
    let event = sqs_event(&[
        ("m1", update.clone()),
        ("m2", update.clone()),
        ("m3", change(PORTAL, Entity::Contact, 5, ChangeAction::Add)),
        ("m4", update),
    ]);
    sim.reset_stats().await.unwrap();
    let response = apply_batch(&service, &unwatched(), &event, None)
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(mirror(&db, Entity::Contact).await, [5]);
    let stats = sim.stats().await.unwrap();
    // The field metadata, then one lookup naming ID 5 once.
    assert_eq!(stats.http_requests, 2, "{stats:?}");
    assert_eq!(stats.requests_by_method["crm.contact.list"], 1, "{stats:?}");
    assert_eq!(stats.rows_returned, 1, "{stats:?}");
}

#[tokio::test]
async fn a_group_whose_portal_fails_fails_only_its_own_messages() {
    let (db, _sim, service) = setup().await;
    let event = sqs_event(&[
        (
            "m1",
            change("locked", Entity::Deal, 1, ChangeAction::Update),
        ),
        ("m2", change(PORTAL, Entity::Deal, 1, ChangeAction::Update)),
        (
            "m3",
            change("elsewhere", Entity::Deal, 2, ChangeAction::Update),
        ),
        ("m4", change(PORTAL, Entity::Lead, 2, ChangeAction::Update)),
        (
            "m5",
            change("locked", Entity::Lead, 2, ChangeAction::Delete),
        ),
    ]);
    let response = apply_batch(&service, &unwatched(), &event, None)
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m1", "m3", "m5"]);
    assert_eq!(mirror(&db, Entity::Deal).await, [1]);
    assert_eq!(mirror(&db, Entity::Lead).await, [2]);
}

#[tokio::test]
async fn every_sample_event_applies_with_only_its_poisoned_messages_failing() {
    let (db, _sim, service) = setup().await;
    let client = service.client(PORTAL).await.unwrap();
    // The delete sample's deal was mirrored and is gone from the portal (one of 20:
    // within the deletion guard).
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/change-worker");
    let read = |name: &str| -> SqsEvent {
        serde_json::from_str(&std::fs::read_to_string(samples.join(name)).unwrap()).unwrap()
    };
    let mut seen: Vec<String> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["delete.json", "poisoned.json", "updates.json"]);

    let every_deal: Vec<(String, String)> = (1..=20)
        .map(|id| {
            (
                format!("m{id}"),
                change(PORTAL, Entity::Deal, id, ChangeAction::Update),
            )
        })
        .collect();
    let every_deal: Vec<(&str, String)> = every_deal
        .iter()
        .map(|(m, b)| (m.as_str(), b.clone()))
        .collect();
    apply_batch(&service, &unwatched(), &sqs_event(&every_deal), None)
        .await
        .unwrap();
    client
        .call("crm.deal.delete", &json!({"id": 5}))
        .await
        .unwrap();
    let response = apply_batch(&service, &unwatched(), &read("delete.json"), None)
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    let mut left: Vec<i64> = (1..=20).collect();
    left.retain(|&id| id != 5);
    assert_eq!(mirror(&db, Entity::Deal).await, left);

    let response = apply_batch(&service, &unwatched(), &read("updates.json"), None)
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(mirror(&db, Entity::Contact).await, [3]);

    let response = apply_batch(&service, &unwatched(), &read("poisoned.json"), None)
        .await
        .unwrap();
    assert_eq!(
        failed_ids(&response),
        [
            "9a0f61b2-0007-4c1e-8f5e-3f4a2b7c0007",
            "9a0f61b2-0008-4c1e-8f5e-3f4a2b7c0008"
        ]
    );
    assert_eq!(mirror(&db, Entity::Lead).await, [4]);
}

/// A batch reports one line per portal entity group applied (what it wrote and cost)
/// and one for the batch: its messages, the invalid and failed ones, and the lag of
/// its oldest change.
#[tokio::test]
async fn a_batch_reports_its_groups_and_its_lag() {
    let (_db, _sim, service) = setup().await;
    let five_seconds_ago = ChangeMessage {
        portal: PORTAL.to_string(),
        entity: Entity::Deal,
        id: 3,
        action: ChangeAction::Update,
        event_time: None,
        received_at: chrono::Utc::now() - chrono::Duration::seconds(5),
    };
    let event = sqs_event(&[
        ("m1", five_seconds_ago.to_json()),
        ("m2", "not a change message".to_string()),
        (
            "m3",
            change("locked", Entity::Deal, 1, ChangeAction::Update),
        ),
        (
            "m4",
            change(PORTAL, Entity::Contact, 5, ChangeAction::Update),
        ),
        (
            "m5",
            change(PORTAL, Entity::Contact, 6, ChangeAction::Update),
        ),
    ]);
    let sink = MemorySink::new();
    let response = apply_batch(&service, &sink.metrics(), &event, None)
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m2", "m3"]);

    let lines = sink.documents().unwrap();
    let line_of = |entity: Option<&str>| {
        lines
            .iter()
            .find(|line| line.get("Entity").and_then(|e| e.as_str()) == entity)
            .unwrap_or_else(|| panic!("no line for {entity:?} in {lines:?}"))
    };
    // The `locked` portal's group failed: no line of its own.
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (entity, rows) in [("deal", 1), ("contact", 2)] {
        let line = line_of(Some(entity));
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Portal", "Entity", "Mode"]])
        );
        assert_eq!(
            (&line["Function"], &line["Portal"], &line["Mode"]),
            (&json!("change-worker"), &json!(PORTAL), &json!("changes"))
        );
        assert_eq!(
            (&line["RowsRead"], &line["RowsWritten"]),
            (&json!(rows), &json!(rows))
        );
        assert_eq!(line["RowsDeleted"], 0.0);
        // The field metadata, then one lookup.
        assert_eq!(line["BitrixRequests"], 2.0, "{line}");
        assert_eq!(
            (&line["Throttled503"], &line["Throttled429"]),
            (&json!(0), &json!(0))
        );
        assert!(line["RunSeconds"].as_f64().unwrap() >= 0.0);
    }
    let batch = line_of(None);
    assert_eq!(
        batch["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]])
    );
    assert_eq!(batch["Messages"], 5.0);
    assert_eq!(batch["MessagesInvalid"], 1.0);
    assert_eq!(batch["MessagesFailed"], 2.0);
    let lag = batch["WorkerLagMs"].as_f64().unwrap();
    assert!((5_000.0..60_000.0).contains(&lag), "{lag}");
}

/// A batch without one valid message has no lag to report, and a change stamped in the
/// future (a skewed clock) reports no negative lag.
#[test]
fn the_lag_is_left_out_without_changes_and_never_negative() {
    use change_worker::batch_metrics;
    let now = chrono::Utc::now();
    let sink = MemorySink::new();
    sink.metrics().emit(&batch_metrics(2, 2, 0, None, now));
    sink.metrics().emit(&batch_metrics(
        1,
        0,
        0,
        Some(now + chrono::Duration::seconds(3)),
        now,
    ));
    let lines = sink.documents().unwrap();
    assert!(lines[0].get("WorkerLagMs").is_none());
    assert_eq!(
        (&lines[0]["MessagesInvalid"], &lines[0]["MessagesFailed"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(lines[1]["WorkerLagMs"], 0.0);
}
