//! Back-sync against the simulator and PostgreSQL: an edit in SQL reaches the portal and
//! does not come back, conflicts follow the policy, an inserted row becomes one record
//! whose ID is written back, failed pushes wait or are parked with their error, deletes
//! follow the configuration, and concurrent drains push each change once.

mod common;

use b24_domain::change::ChangeAction;
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::{RunningSim, SimConfig, UserFieldType};
use b24_sync::{SyncRequest, SyncService};
use common::*;
use serde_json::{Value, json};
use tokio_postgres::Client;

/// The simulator's user fields the tests edit.
struct Fields {
    flag: String,
    money: String,
    list: String,
}

/// A portal of 40 deals and 20 companies with a boolean, a money and an enumeration
/// field, fully synced into a fresh database by a service with back-sync on.
async fn synced(back_sync: Value) -> (TestDb, RunningSim, SyncService, Fields) {
    let db = TestDb::create().await;
    let sim = sim(SimConfig {
        seed: 5,
        deals: 40,
        companies: 20,
        contacts: 20,
        limits: no_limits(),
        ..SimConfig::default()
    })
    .await;
    let fields = Fields {
        flag: add_deal_field(&sim, UserFieldType::Boolean, false, None).await,
        money: add_deal_field(&sim, UserFieldType::Money, false, None).await,
        list: add_deal_field(&sim, UserFieldType::Enumeration, false, None).await,
    };
    let service = service_with(&db, &sim, back_sync).await;
    for entity in ["deal", "company", "contact"] {
        let request: SyncRequest = serde_json::from_value(
            json!({"portal": PORTAL, "mode": Mode::Full, "entities": [entity]}),
        )
        .unwrap();
        service.handle(&request, None).await.unwrap();
    }
    (db, sim, service, fields)
}

/// A service with back-sync configured as `back_sync`, whose clients retry a failed
/// request once, quickly, so a failing push is recorded in milliseconds.
async fn service_with(db: &TestDb, sim: &RunningSim, back_sync: Value) -> SyncService {
    let config = json!({
        "database": {"url": db.url, "schema": SCHEMA},
        "portals": {(PORTAL): {
            "webhook_url": sim.webhook_url(),
            "entities": ["deal", "company", "contact"],
            "limits": {"burst": 100_000, "drain": 100_000},
            "back_sync": back_sync,
        }},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let client = b24_client::ClientOptions {
        timeout: std::time::Duration::from_secs(5),
        max_retries: 1,
        backoff_base: std::time::Duration::from_millis(10),
        backoff_max: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    SyncService::connect_with(config, true, client)
        .await
        .unwrap()
}

fn on() -> Value {
    json!({"enabled": true})
}

async fn deal_on_portal(sim: &RunningSim, id: u64) -> serde_json::Map<String, Value> {
    portal_records(sim, Entity::Deal).await.remove(&id).unwrap()
}

async fn outbox_states(c: &Client) -> Vec<(String, String, Option<String>)> {
    c.query(
        "SELECT op, state, last_error FROM b24._outbox ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn push(service: &SyncService) -> Vec<b24_sync::PushSummary> {
    service.push(Some(PORTAL), None).await.unwrap()
}

/// Makes every waiting retry due now, as time passing would.
async fn retries_due(c: &Client) {
    c.execute(
        "UPDATE b24._outbox SET next_attempt_at = now() WHERE state = 'pending'",
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_update_in_sql_reaches_the_portal_and_nothing_comes_back() {
    let (db, sim, service, fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    let item: String = c
        .query_one(
            &format!(
                "SELECT max(item_id) FROM b24._field_items WHERE code = '{}'",
                fields.list
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (flag, money, list) = (
        fields.flag.to_lowercase(),
        fields.money.to_lowercase(),
        fields.list.to_lowercase(),
    );
    c.batch_execute(&format!(
        "UPDATE b24.{table} SET title = 'Edited in SQL', opportunity = 1234.5, {flag} = true,
                {money} = 99.90, {money}_currency = 'EUR', {list} = {item}, begindate = '2031-02-03'
         WHERE id = 3;
         UPDATE b24.{table} SET title = 'Edited twice' WHERE id = 3;"
    ))
    .await
    .unwrap();
    sim.reset_stats().await.unwrap();

    let summaries = push(&service).await;
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let summary = &summaries[0];
    assert_eq!(
        (summary.rows, summary.records, summary.updated),
        (2, 1, 1),
        "{summary:?}"
    );
    let deal = deal_on_portal(&sim, 3).await;
    assert_eq!(deal["TITLE"], "Edited twice", "the later edit wins");
    assert_eq!(deal["OPPORTUNITY"], "1234.50");
    assert_eq!(deal[&fields.flag], "1");
    assert_eq!(deal[&fields.money], "99.9|EUR");
    assert_eq!(deal[&fields.list], json!(item));
    assert!(
        deal["BEGINDATE"]
            .as_str()
            .unwrap()
            .starts_with("2031-02-03"),
        "{}",
        deal["BEGINDATE"]
    );
    // Field metadata, the record as the portal had it, one update, the refresh.
    assert_eq!(sim.stats().await.unwrap().http_requests, 4);
    assert_eq!(
        outbox_states(&c).await,
        [
            ("update".into(), "done".into(), None),
            ("update".into(), "done".into(), None)
        ]
    );
    // The mirror row is the portal's record again.
    assert_record_equals(
        Entity::Deal,
        3,
        &deal,
        &mirror_records(&db, Entity::Deal).await[&3],
    );

    // The portal's event for that update and the next scheduled pass change nothing.
    let applied = service
        .apply_changes(
            deliveries([change(Entity::Deal, 3, ChangeAction::Update)]),
            None,
        )
        .await;
    assert!(applied.failed.is_empty());
    assert_eq!(
        applied.summaries[0].rows_updated, 0,
        "{:?}",
        applied.summaries
    );
    let request: SyncRequest =
        serde_json::from_value(json!({"portal": PORTAL, "mode": "incremental"})).unwrap();
    service.handle(&request, None).await.unwrap();
    sim.reset_stats().await.unwrap();
    assert!(push(&service).await.is_empty(), "nothing left to push");
    assert_eq!(outbox_states(&c).await.len(), 2);
    assert_eq!(
        sim.stats()
            .await
            .unwrap()
            .requests_by_method
            .get("crm.deal.update"),
        None
    );
}

#[tokio::test]
async fn a_conflicting_portal_edit_wins_by_default_and_loses_when_the_database_wins() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    let portal = client(&sim);
    c.execute(
        &format!("UPDATE b24.{table} SET title = 'from SQL' WHERE id IN (4, 5)"),
        &[],
    )
    .await
    .unwrap();
    // Meanwhile someone edits deal 4 in Bitrix24.
    portal
        .call(
            "crm.deal.update",
            &json!({"id": 4, "fields": {"TITLE": "from Bitrix24"}}),
        )
        .await
        .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!((summary.conflicts, summary.updated), (1, 1), "{summary:?}");
    assert_eq!(deal_on_portal(&sim, 4).await["TITLE"], "from Bitrix24");
    assert_eq!(deal_on_portal(&sim, 5).await["TITLE"], "from SQL");
    let title: String = c
        .query_one(&format!("SELECT title FROM b24.{table} WHERE id = 4"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        title, "from Bitrix24",
        "the mirror shows the portal's values"
    );
    let states = outbox_states(&c).await;
    assert_eq!(states[0].1, "conflict");
    assert!(
        states[0].2.as_deref().unwrap().contains("portal-wins"),
        "{states:?}"
    );
    assert_eq!(states[1].1, "done");

    let database_wins = service_with(
        &db,
        &sim,
        json!({"enabled": true, "conflicts": "database-wins"}),
    )
    .await;
    c.execute(
        &format!("UPDATE b24.{table} SET title = 'from SQL again' WHERE id = 4"),
        &[],
    )
    .await
    .unwrap();
    // DATE_MODIFY counts whole seconds: an edit in the same second as the version the
    // row holds cannot be told from it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    portal
        .call(
            "crm.deal.update",
            &json!({"id": 4, "fields": {"TITLE": "from Bitrix24 again"}}),
        )
        .await
        .unwrap();
    let summary = &database_wins.push(Some(PORTAL), None).await.unwrap()[0];
    assert_eq!((summary.conflicts, summary.updated), (1, 1), "{summary:?}");
    assert_eq!(deal_on_portal(&sim, 4).await["TITLE"], "from SQL again");
}

#[tokio::test]
async fn an_inserted_row_becomes_one_record_and_takes_its_id() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    let local: i64 = c
        .query_one(
            &format!("INSERT INTO b24.{table} (title, opportunity) VALUES ('Born in SQL', 700) RETURNING id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(local < 0);
    c.execute(
        &format!("UPDATE b24.{table} SET opportunity = 750 WHERE id = {local}"),
        &[],
    )
    .await
    .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!((summary.rows, summary.created), (2, 1), "{summary:?}");
    let copies: Vec<_> = portal_records(&sim, Entity::Deal)
        .await
        .into_values()
        .filter(|d| d["TITLE"] == "Born in SQL")
        .collect();
    assert_eq!(copies.len(), 1);
    let id: i64 = copies[0]["ID"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        copies[0]["OPPORTUNITY"], "750.00",
        "the later edit folded into the create"
    );
    assert_eq!(copies[0]["ORIGINATOR_ID"], "b24sync:postgres");
    let rows: Vec<(i64, Value)> = c
        .query(
            &format!("SELECT id, raw FROM b24.{table} WHERE title = 'Born in SQL'"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, id, "the local row took the new ID");
    assert_eq!(
        rows[0].1["ID"],
        json!(id.to_string()),
        "and the portal's record"
    );
    let bitrix_id: Option<i64> = c
        .query_one("SELECT bitrix_id FROM b24._outbox WHERE op = 'create'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bitrix_id, Some(id));
    assert!(push(&service).await.is_empty());

    // Every add is applied and its answer lost: the row waits, and its retry finds the
    // record by its origin instead of adding it again.
    c.execute(
        &format!("INSERT INTO b24.{table} (title) VALUES ('Answer lost')"),
        &[],
    )
    .await
    .unwrap();
    sim.set_faults("drop_after=1.0,only=crm.deal.add,seed=3")
        .await
        .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!((summary.created, summary.retried), (0, 1), "{summary:?}");
    let lost = |deals: std::collections::BTreeMap<u64, serde_json::Map<String, Value>>| {
        deals
            .into_values()
            .filter(|d| d["TITLE"] == "Answer lost")
            .count()
    };
    assert_eq!(
        lost(portal_records(&sim, Entity::Deal).await),
        1,
        "the add went through"
    );
    retries_due(&c).await;
    let summary = &push(&service).await[0];
    assert_eq!(summary.created, 1, "{summary:?}");
    assert_eq!(
        lost(portal_records(&sim, Entity::Deal).await),
        1,
        "not added again"
    );
    sim.set_faults("").await.unwrap();
}

#[tokio::test]
async fn creates_and_updates_under_faults_reach_the_portal_exactly_once() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    for n in 0..30 {
        c.execute(
            &format!("INSERT INTO b24.{table} (title) VALUES ('created {n}')"),
            &[],
        )
        .await
        .unwrap();
    }
    c.execute(
        &format!("UPDATE b24.{table} SET comments = 'edited ' || id WHERE id > 0"),
        &[],
    )
    .await
    .unwrap();
    // Connections dropped after the portal applied the request (the add went through,
    // its answer is lost), and requests refused before they ran.
    sim.set_faults("drop_after=0.3,503=0.1,500=0.1,seed=7")
        .await
        .unwrap();
    for _ in 0..60 {
        let _ = service.push(Some(PORTAL), None).await;
        retries_due(&c).await;
        let open: i64 = c
            .query_one(
                "SELECT count(*) FROM b24._outbox WHERE state <> 'done'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
    }
    sim.set_faults("").await.unwrap();
    let states = outbox_states(&c).await;
    assert!(
        states.iter().all(|(_, state, _)| state == "done"),
        "{states:?}"
    );
    let created: Vec<_> = portal_records(&sim, Entity::Deal)
        .await
        .into_values()
        .filter(|d| d["ORIGINATOR_ID"] == "b24sync:postgres")
        .collect();
    let mut titles: Vec<&str> = created
        .iter()
        .map(|d| d["TITLE"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    titles.dedup();
    assert_eq!(
        (created.len(), titles.len()),
        (30, 30),
        "one record per inserted row"
    );
    let local_left: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM b24.{table} WHERE id < 0"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(local_left, 0, "every inserted row took its Bitrix24 ID");
    for (id, deal) in portal_records(&sim, Entity::Deal).await {
        if deal["ORIGINATOR_ID"] != "b24sync:postgres" {
            assert_eq!(deal["COMMENTS"], format!("edited {id}"));
        }
    }
}

#[tokio::test]
async fn failed_pushes_wait_for_their_retry_or_are_parked_with_the_portals_error() {
    let (db, sim, service, _fields) = synced(json!({"enabled": true, "max_attempts": 2})).await;
    let c = db.client().await;
    let deals = table_name(&db, Entity::Deal).await;
    c.execute(
        &format!("UPDATE b24.{deals} SET title = 'edit' WHERE id = 6"),
        &[],
    )
    .await
    .unwrap();
    sim.set_faults("500=1.0,only=crm.deal.update,seed=1")
        .await
        .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!(summary.retried, 1, "{summary:?}");
    let states = outbox_states(&c).await;
    assert_eq!(states[0].1, "pending");
    assert!(
        states[0].2.as_deref().unwrap().contains("500"),
        "{states:?}"
    );
    // Still failing on its last attempt: parked, with the error.
    retries_due(&c).await;
    push(&service).await;
    assert_eq!(outbox_states(&c).await[0].1, "failed");
    sim.set_faults("").await.unwrap();
    assert_ne!(deal_on_portal(&sim, 6).await["TITLE"], "edit");

    // A company without its required name is refused by the portal at once.
    let companies = table_name(&db, Entity::Company).await;
    c.execute(
        &format!("INSERT INTO b24.{companies} (comments) VALUES ('no title')"),
        &[],
    )
    .await
    .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!(summary.failed, 1, "{summary:?}");
    let states = outbox_states(&c).await;
    assert_eq!(states[1].1, "failed");
    assert!(
        states[1].2.as_deref().unwrap().contains("Required fields"),
        "{states:?}"
    );
    // Its later edits cannot reach Bitrix24 either, and say why.
    c.execute(
        &format!("UPDATE b24.{companies} SET comments = 'still none' WHERE id < 0"),
        &[],
    )
    .await
    .unwrap();
    push(&service).await;
    let states = outbox_states(&c).await;
    assert_eq!(states[2].1, "failed");
    assert!(
        states[2]
            .2
            .as_deref()
            .unwrap()
            .contains("creating it in Bitrix24 failed"),
        "{states:?}"
    );
}

#[tokio::test]
async fn deletes_reach_the_portal_only_when_allowed() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    c.execute(&format!("DELETE FROM b24.{table} WHERE id = 7"), &[])
        .await
        .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!((summary.skipped, summary.deleted), (1, 0), "{summary:?}");
    assert!(portal_records(&sim, Entity::Deal).await.contains_key(&7));
    let back: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM b24.{table} WHERE id = 7 AND deleted_at IS NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, 1, "the row came back from the portal");
    assert_eq!(outbox_states(&c).await[0].1, "skipped");

    let allowed = service_with(&db, &sim, json!({"enabled": true, "allow_deletes": true})).await;
    c.execute(&format!("DELETE FROM b24.{table} WHERE id = 7"), &[])
        .await
        .unwrap();
    let summary = &allowed.push(Some(PORTAL), None).await.unwrap()[0];
    assert_eq!(summary.deleted, 1, "{summary:?}");
    assert!(!portal_records(&sim, Entity::Deal).await.contains_key(&7));
}

#[tokio::test]
async fn a_changed_phone_is_updated_by_its_item_id_not_added_again() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Contact).await;
    let before = portal_records(&sim, Entity::Contact)
        .await
        .remove(&2)
        .unwrap();
    let phones = before["PHONE"].as_array().cloned().unwrap_or_default();
    let mut wanted: Vec<Value> = phones.clone();
    if let Some(first) = wanted.first_mut() {
        first["VALUE"] = json!("+49301234567");
    }
    wanted.push(json!({"VALUE": "+4930999", "VALUE_TYPE": "MOBILE"}));
    c.execute(
        &format!("UPDATE b24.{table} SET phone = $1::jsonb WHERE id = 2"),
        &[&Value::Array(wanted.clone())],
    )
    .await
    .unwrap();
    let summary = &push(&service).await[0];
    assert_eq!(summary.updated, 1, "{summary:?}");
    let after = portal_records(&sim, Entity::Contact)
        .await
        .remove(&2)
        .unwrap();
    let values: Vec<&str> = after["PHONE"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["VALUE"].as_str().unwrap())
        .collect();
    assert_eq!(values.len(), phones.len() + 1, "{values:?}");
    assert!(values.contains(&"+4930999"));
    if !phones.is_empty() {
        assert!(values.contains(&"+49301234567"), "{values:?}");
        assert_eq!(
            after["PHONE"][0]["ID"], phones[0]["ID"],
            "the same item, changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_drains_push_each_change_once() {
    let (db, sim, service, _fields) = synced(on()).await;
    let c = db.client().await;
    let table = table_name(&db, Entity::Deal).await;
    for round in 0..3 {
        c.execute(
            &format!("UPDATE b24.{table} SET title = 'round {round} ' || id"),
            &[],
        )
        .await
        .unwrap();
    }
    sim.reset_stats().await.unwrap();
    let second = service_with(&db, &sim, on()).await;
    let (a, b) = tokio::join!(
        service.push(Some(PORTAL), None),
        second.push(Some(PORTAL), None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let rows: u64 = a.iter().chain(&b).map(|s| s.rows).sum();
    let updated: u64 = a.iter().chain(&b).map(|s| s.updated).sum();
    assert_eq!(rows, 120, "every outbox row claimed once");
    let updates = sim.stats().await.unwrap().requests_by_method["crm.deal.update"];
    assert_eq!(updates, updated, "one update per record pushed");
    assert!(updates <= 40 * 3);
    let states = outbox_states(&c).await;
    assert!(
        states.iter().all(|(_, state, _)| state == "done"),
        "{states:?}"
    );
    let portal = portal_records(&sim, Entity::Deal).await;
    for (id, deal) in &portal {
        assert_eq!(
            deal["TITLE"],
            format!("round 2 {id}"),
            "the last edit of every deal"
        );
    }
}
