//! The back-sync outbox: what the triggers capture and refuse, the sync's own writes
//! never captured, claims shared by concurrent drains with a record's rows in order,
//! settling under the lease, a created record's ID written back.

use std::collections::HashSet;
use std::time::Duration;

use b24_domain::back_sync::OutboxOp;
use b24_domain::entity::Entity;
use b24_store::{OutboxOutcome, Store, TableLayout};
use serde_json::{Value, json};
use tokio_postgres::Client;

use crate::common::*;

const PORTAL: &str = "edit.bitrix24.com";
const LEASE: Duration = Duration::from_secs(600);

fn fields() -> Vec<b24_domain::schema::FieldMeta> {
    let mut created = field("DATE_CREATE", "datetime");
    created.is_read_only = true;
    vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("DATE_MODIFY", "datetime"),
        created,
        field("OPPORTUNITY", "double"),
        field("UF_CRM_PRICE", "money"),
        field("UF_CRM_FILE", "file"),
        field("PHONE", "crm_multifield"),
        field("OPENED", "char"),
    ]
}

/// A store with the contact table and three synced rows.
async fn mirror(db: &TestDb) -> (Store, TableLayout) {
    let store = store(db).await;
    let layout = store
        .ensure_table(PORTAL, Entity::Contact, &fields())
        .await
        .unwrap();
    let rows: Vec<_> = (1..=3)
        .map(|id| {
            row(json!({
                "ID": id.to_string(), "TITLE": format!("contact {id}"),
                "DATE_MODIFY": "2024-08-30T14:29:00+03:00", "DATE_CREATE": "2024-08-01T10:00:00+03:00",
                "OPPORTUNITY": "10.50", "UF_CRM_PRICE": "300|EUR", "OPENED": "Y",
                "PHONE": [{"ID": "5", "VALUE": "+100", "VALUE_TYPE": "WORK", "TYPE_ID": "PHONE"}],
            }))
        })
        .collect();
    store
        .upsert(PORTAL, Entity::Contact, &layout, &rows)
        .await
        .unwrap();
    (store, layout)
}

/// The contact table's name; the test's own connection (`TestDb::client`) is a
/// person's session, not marked as the sync's.
async fn contacts(client: &Client) -> String {
    portal_table(client, PORTAL, Entity::Contact).await
}

async fn outbox(c: &Client) -> Vec<(i64, String, Value, String)> {
    query_rows(
        c,
        "SELECT record_id, op, changes, state FROM b24._outbox ORDER BY id",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await
}

#[tokio::test]
async fn edits_are_captured_per_field_and_the_syncs_writes_are_not() {
    let db = TestDb::create().await;
    let (store, layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    // The sync's rows entered nothing.
    assert!(outbox(&c).await.is_empty());

    c.batch_execute(&format!(
        "UPDATE b24.{table} SET title = 'renamed', opportunity = 12345678901234567890.125 WHERE id = 1;
         UPDATE b24.{table} SET uf_crm_price_currency = 'USD' WHERE id = 2;
         UPDATE b24.{table} SET title = title WHERE id = 3;"
    ))
    .await
    .unwrap();
    let captured = outbox(&c).await;
    assert_eq!(
        captured.len(),
        2,
        "an update that changes nothing is not captured: {captured:?}"
    );
    assert_eq!(
        captured[0],
        (
            1,
            "update".to_string(),
            json!({"TITLE": {"title": "renamed"}, "OPPORTUNITY": {"opportunity": "12345678901234567890.125"}}),
            "pending".to_string()
        )
    );
    // A money field's amount and currency travel together.
    assert_eq!(
        captured[1].2,
        json!({"UF_CRM_PRICE": {"uf_crm_price": "300", "uf_crm_price_currency": "USD"}})
    );
    let seen: String = scalar(
        &c,
        "SELECT seen_date_modify::text FROM b24._outbox ORDER BY id LIMIT 1",
    )
    .await;
    assert!(seen.starts_with("2024-08-30 11:29:00"), "{seen}");

    // The sync writing the same rows again (a refresh) enters nothing.
    let refreshed = row(
        json!({"ID": "1", "TITLE": "renamed by the portal", "DATE_MODIFY": "2024-08-30T15:00:00+03:00"}),
    );
    store
        .upsert(PORTAL, Entity::Contact, &layout, &[refreshed])
        .await
        .unwrap();
    store
        .soft_delete(PORTAL, Entity::Contact, &[3])
        .await
        .unwrap();
    assert_eq!(outbox(&c).await.len(), 2);
}

#[tokio::test]
async fn fields_bitrix24_does_not_take_are_refused_at_write_time_naming_the_column() {
    let db = TestDb::create().await;
    let (_store, _layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    for (set, named) in [
        (
            "date_create = now()",
            "date_create (DATE_CREATE: read-only in Bitrix24)",
        ),
        (
            "uf_crm_file = '[]'",
            "UF_CRM_FILE: files are not written back",
        ),
        ("date_modify = now()", "written by the sync only"),
        ("raw = '{}'", "written by the sync only"),
        ("id = 99", "written by the sync only"),
    ] {
        let error = c
            .execute(&format!("UPDATE b24.{table} SET {set} WHERE id = 1"), &[])
            .await
            .unwrap_err();
        let message = error.as_db_error().unwrap().message().to_string();
        assert!(message.contains(named), "{set}: {message}");
    }
    assert!(outbox(&c).await.is_empty());
    // A row the portal deleted cannot be edited; deleting it enters nothing.
    c.batch_execute(&format!(
        "SET b24sync.writer = 'sync'; UPDATE b24.{table} SET deleted_at = now() WHERE id = 2; RESET b24sync.writer"
    ))
    .await
    .unwrap();
    let error = c
        .execute(
            &format!("UPDATE b24.{table} SET title = 'x' WHERE id = 2"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        error
            .as_db_error()
            .unwrap()
            .message()
            .contains("deleted in Bitrix24"),
        "{error}"
    );
    c.execute(&format!("DELETE FROM b24.{table} WHERE id = 2"), &[])
        .await
        .unwrap();
    assert!(outbox(&c).await.is_empty());
}

#[tokio::test]
async fn inserted_rows_get_a_local_id_and_deletes_are_captured() {
    let db = TestDb::create().await;
    let (_store, _layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    let local: i64 = c
        .query_one(
            &format!(
                "INSERT INTO b24.{table} (title, opened) VALUES ('new one', true) RETURNING id"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(local < 0, "{local}");
    let error = c
        .execute(
            &format!("INSERT INTO b24.{table} (id, title) VALUES (77, 'x')"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        error
            .as_db_error()
            .unwrap()
            .message()
            .contains("must leave id empty")
    );
    c.execute(&format!("DELETE FROM b24.{table} WHERE id = 1"), &[])
        .await
        .unwrap();
    let captured = outbox(&c).await;
    assert_eq!(captured.len(), 2);
    assert_eq!((captured[0].0, captured[0].1.as_str()), (local, "create"));
    assert_eq!(
        captured[0].2,
        json!({"TITLE": {"title": "new one"}, "OPENED": {"opened": "true"}})
    );
    assert_eq!((captured[1].0, captured[1].1.as_str()), (1, "delete"));
}

#[tokio::test]
async fn a_limit_cuts_between_a_records_rows_and_the_rest_waits_for_them() {
    let db = TestDb::create().await;
    let (store, _layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    for round in 0..4 {
        for id in 1..=3 {
            c.execute(
                &format!("UPDATE b24.{table} SET title = 'edit {round}' WHERE id = {id}"),
                &[],
            )
            .await
            .unwrap();
        }
    }
    let ids = |claim: &b24_store::OutboxClaim| -> Vec<i64> {
        claim.entries.iter().map(|e| e.id).collect()
    };
    // Rows 1 to 5: both rows of record 1 and 2 so far, the first of record 3.
    let first = store
        .claim_outbox(PORTAL, Entity::Contact, 5, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&first), [1, 2, 3, 4, 5]);
    assert!(
        first
            .entries
            .iter()
            .all(|e| e.op == OutboxOp::Update && e.attempts == 1)
    );
    // Every later row belongs to a record the first claim holds: none can go yet.
    let second = store
        .claim_outbox(PORTAL, Entity::Contact, 100, LEASE)
        .await
        .unwrap();
    assert!(second.entries.is_empty(), "{:?}", ids(&second));
    // Settling needs the lease.
    let outcomes: Vec<_> = ids(&first)
        .into_iter()
        .map(|id| (id, OutboxOutcome::Done))
        .collect();
    assert_eq!(
        store.settle_outbox(second.lease, &outcomes).await.unwrap(),
        0
    );
    // Record 2's second row (5) is retried in an hour, so its later rows wait with it.
    let (done, retried) = outcomes.split_at(4);
    assert_eq!(store.settle_outbox(first.lease, done).await.unwrap(), 4);
    let retry = [(
        retried[0].0,
        OutboxOutcome::Retry {
            error: "503".into(),
            after: Duration::from_secs(3600),
        },
    )];
    assert_eq!(store.settle_outbox(first.lease, &retry).await.unwrap(), 1);
    let third = store
        .claim_outbox(PORTAL, Entity::Contact, 100, LEASE)
        .await
        .unwrap();
    let records: HashSet<i64> = third.entries.iter().map(|e| e.record_id).collect();
    assert_eq!(records, HashSet::from([1, 3]));
    assert_eq!(ids(&third), [6, 7, 9, 10, 12]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_drains_take_every_row_once_and_each_records_rows_in_order() {
    let db = TestDb::create().await;
    let (store, layout) = mirror(&db).await;
    let more: Vec<_> = (4..=20)
        .map(|id| row(json!({"ID": id.to_string(), "TITLE": "t", "DATE_MODIFY": "2024-08-30T14:29:00+03:00"})))
        .collect();
    store
        .upsert(PORTAL, Entity::Contact, &layout, &more)
        .await
        .unwrap();
    let c = db.client().await;
    let table = contacts(&c).await;
    for round in 0..5 {
        c.execute(
            &format!("UPDATE b24.{table} SET title = 'edit {round}'"),
            &[],
        )
        .await
        .unwrap();
    }
    let settled = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let mut drains = Vec::new();
    for _ in 0..6 {
        let store = crate::common::store(&db).await;
        let settled = std::sync::Arc::clone(&settled);
        drains.push(tokio::spawn(async move {
            let mut idle_rounds = 0;
            while idle_rounds < 20 {
                let claim = store
                    .claim_outbox(PORTAL, Entity::Contact, 7, LEASE)
                    .await
                    .unwrap();
                if claim.entries.is_empty() {
                    idle_rounds += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle_rounds = 0;
                tokio::time::sleep(Duration::from_millis(3)).await;
                let outcomes: Vec<_> = claim
                    .entries
                    .iter()
                    .map(|e| (e.id, OutboxOutcome::Done))
                    .collect();
                // Recorded before the rows are released, so the order is the push order.
                settled
                    .lock()
                    .unwrap()
                    .extend(claim.entries.iter().map(|e| (e.record_id, e.id)));
                store.settle_outbox(claim.lease, &outcomes).await.unwrap();
            }
        }));
    }
    for drain in drains {
        drain.await.unwrap();
    }
    let settled = settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 100, "every row once");
    let unique: HashSet<i64> = settled.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), 100);
    for record in 1..=20 {
        let order: Vec<i64> = settled
            .iter()
            .filter(|(r, _)| *r == record)
            .map(|(_, id)| *id)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "record {record}: {order:?}"
        );
    }
}

#[tokio::test]
async fn a_lapsed_lease_lets_another_drain_take_the_rows_again() {
    let db = TestDb::create().await;
    let (store, _layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    c.execute(
        &format!("UPDATE b24.{table} SET title = 'x' WHERE id = 1"),
        &[],
    )
    .await
    .unwrap();
    let first = store
        .claim_outbox(PORTAL, Entity::Contact, 10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(first.entries.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.outbox_entities(PORTAL).await.unwrap(),
        [Entity::Contact]
    );
    let again = store
        .claim_outbox(PORTAL, Entity::Contact, 10, LEASE)
        .await
        .unwrap();
    assert_eq!(again.entries[0].id, first.entries[0].id);
    assert_eq!(
        again.entries[0].attempts, 2,
        "the first claim may have pushed it"
    );
    // The first drain's late outcome is not recorded.
    let done = [(first.entries[0].id, OutboxOutcome::Done)];
    assert_eq!(store.settle_outbox(first.lease, &done).await.unwrap(), 0);
    let failed = [(again.entries[0].id, OutboxOutcome::Failed("refused".into()))];
    assert_eq!(store.settle_outbox(again.lease, &failed).await.unwrap(), 1);
    let counts = store.outbox_counts(PORTAL).await.unwrap();
    assert_eq!((counts[0].state.as_str(), counts[0].rows), ("failed", 1));
    let rows = store.outbox_rows(PORTAL, &["failed"], 10).await.unwrap();
    assert_eq!(rows[0].last_error.as_deref(), Some("refused"));
    assert_eq!(rows[0].fields, ["TITLE"]);
}

#[tokio::test]
async fn a_created_record_takes_its_new_id_and_later_edits_follow_it() {
    let db = TestDb::create().await;
    let (store, _layout) = mirror(&db).await;
    let c = db.client().await;
    let table = contacts(&c).await;
    let local: i64 = c
        .query_one(
            &format!("INSERT INTO b24.{table} (title) VALUES ('new') RETURNING id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let claim = store
        .claim_outbox(PORTAL, Entity::Contact, 10, LEASE)
        .await
        .unwrap();
    // An edit made while the create is on its way.
    c.execute(
        &format!("UPDATE b24.{table} SET title = 'newer' WHERE id = {local}"),
        &[],
    )
    .await
    .unwrap();
    let entries: Vec<i64> = claim.entries.iter().map(|e| e.id).collect();
    store
        .record_created(PORTAL, Entity::Contact, claim.lease, local, 501, &entries)
        .await
        .unwrap();
    let ids: Vec<i64> = query_rows(
        &c,
        &format!("SELECT id FROM b24.{table} ORDER BY id"),
        |r| r.get(0),
    )
    .await;
    assert_eq!(ids, [1, 2, 3, 501]);
    let rows: Vec<(i64, String, String, Option<i64>)> = query_rows(
        &c,
        "SELECT record_id, op, state, bitrix_id FROM b24._outbox ORDER BY id",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await;
    assert_eq!(
        rows,
        [
            (local, "create".into(), "done".into(), Some(501)),
            (501, "update".into(), "pending".into(), None)
        ]
    );
}
