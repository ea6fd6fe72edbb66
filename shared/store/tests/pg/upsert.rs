//! Bulk upsert: skips unchanged rows, un-deletes, soft delete, live IDs, bad values.

use b24_domain::entity::Entity;
use b24_store::{Row, Store, TableLayout, UpsertStats};
use serde_json::{Value, json};

use crate::common::*;

const PORTAL: &str = "a.bitrix24.com";

fn deal_fields() -> Vec<b24_domain::schema::FieldMeta> {
    vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("DATE_MODIFY", "datetime"),
        field("OPPORTUNITY", "double"),
        field("UF_CRM_INT", "integer"),
    ]
}

async fn deal_table(store: &Store) -> TableLayout {
    store
        .ensure_table(PORTAL, Entity::Deal, &deal_fields())
        .await
        .unwrap()
}

fn deal(id: u64, title: &str, modified: &str) -> Row {
    row(
        json!({"ID": id.to_string(), "TITLE": title, "DATE_MODIFY": modified, "OPPORTUNITY": "10.00", "UF_CRM_INT": "1"}),
    )
}

fn stats(inserted: u64, updated: u64, unchanged: u64) -> UpsertStats {
    UpsertStats {
        inserted,
        updated,
        unchanged,
        invalid_values: 0,
    }
}

async fn titles(c: &tokio_postgres::Client) -> Vec<(i64, String, bool)> {
    query_rows(
        c,
        "SELECT id, title, deleted_at IS NOT NULL FROM b24.deal ORDER BY id",
        |r| (r.get(0), r.get(1), r.get(2)),
    )
    .await
}

#[tokio::test]
async fn upsert_skips_rows_whose_date_modify_did_not_change() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let t0 = "2024-08-30T14:29:00+02:00";
    let rows = vec![deal(1, "one", t0), deal(2, "two", t0), deal(3, "three", t0)];
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &rows)
            .await
            .unwrap(),
        stats(3, 0, 0)
    );
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &rows)
            .await
            .unwrap(),
        stats(0, 0, 3)
    );

    // DATE_MODIFY has whole seconds: a second change within the same second (here
    // written in another offset) has the same DATE_MODIFY and a different record, and
    // replaces the stored one; reading it again changes nothing.
    let same_second = vec![deal(1, "one, same second", "2024-08-30T12:29:00+00:00")];
    for expected in [stats(0, 1, 0), stats(0, 0, 1)] {
        assert_eq!(
            store
                .upsert(PORTAL, Entity::Deal, &layout, &same_second)
                .await
                .unwrap(),
            expected
        );
    }
    assert_eq!(titles(&db.client().await).await[0].1, "one, same second");

    // An older version arriving late (a reordered or redelivered read) never
    // replaces a newer one.
    let newer = vec![deal(1, "one v2", "2024-08-30T14:40:00+02:00")];
    let older = vec![deal(1, "one v1.5", "2024-08-30T14:35:00+02:00")];
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &newer)
            .await
            .unwrap(),
        stats(0, 1, 0)
    );
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &older)
            .await
            .unwrap(),
        stats(0, 0, 1)
    );

    let changed = vec![
        deal(2, "two v2", "2024-08-30T15:00:00+02:00"),
        deal(4, "four", t0),
        deal(3, "three", t0),
    ];
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &changed)
            .await
            .unwrap(),
        stats(1, 1, 1)
    );
    let c = db.client().await;
    assert_eq!(
        titles(&c).await,
        [
            (1, "one v2".into(), false),
            (2, "two v2".into(), false),
            (3, "three".into(), false),
            (4, "four".into(), false)
        ]
    );
    let raw: Value = scalar(&c, "SELECT raw FROM b24.deal WHERE id = 2").await;
    assert_eq!(raw["TITLE"], json!("two v2"));

    // Duplicates in one call: the last copy wins, the earlier ones count as unchanged.
    let dupes = vec![
        deal(5, "first", t0),
        deal(5, "second", "2024-08-30T15:00:00+02:00"),
    ];
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &dupes)
            .await
            .unwrap(),
        stats(1, 0, 1)
    );
    let five: String = scalar(&c, "SELECT title FROM b24.deal WHERE id = 5").await;
    assert_eq!(five, "second");

    // Without DATE_MODIFY there is no way to tell, so the row is always rewritten.
    let bare = vec![row(json!({"ID": "6", "TITLE": "a"}))];
    store
        .upsert(PORTAL, Entity::Deal, &layout, &bare)
        .await
        .unwrap();
    let bare = vec![row(json!({"ID": "6", "TITLE": "b"}))];
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &bare)
            .await
            .unwrap(),
        stats(0, 1, 0)
    );
}

#[tokio::test]
async fn a_record_postgresql_prints_differently_is_compared_exactly() {
    // jsonb prints 1e20 in full, so the record's fingerprint never matches the stored
    // one: the row takes the exact path, and is still left alone while unchanged.
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let t0 = "2024-08-30T14:29:00+02:00";
    let mut record = deal(1, "huge", t0);
    record.insert("UF_CRM_HUGE".into(), json!(1e20));
    for expected in [stats(1, 0, 0), stats(0, 0, 1), stats(0, 0, 1)] {
        assert_eq!(
            store
                .upsert(PORTAL, Entity::Deal, &layout, std::slice::from_ref(&record))
                .await
                .unwrap(),
            expected
        );
    }
    record.insert("TITLE".into(), json!("huge, same second"));
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, std::slice::from_ref(&record))
            .await
            .unwrap(),
        stats(0, 1, 0)
    );
    assert_eq!(titles(&db.client().await).await[0].1, "huge, same second");
}

#[tokio::test]
async fn soft_delete_keeps_data_and_upsert_brings_rows_back() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // Before any table exists there is nothing to delete or list.
    assert_eq!(
        store.soft_delete(PORTAL, Entity::Deal, &[1]).await.unwrap(),
        0
    );
    assert!(
        store
            .live_ids(PORTAL, Entity::Deal, 0, None)
            .await
            .unwrap()
            .is_empty()
    );

    let layout = deal_table(&store).await;
    let t0 = "2024-08-30T14:29:00+02:00";
    let rows: Vec<Row> = (1..=5).map(|i| deal(i, &format!("d{i}"), t0)).collect();
    store
        .upsert(PORTAL, Entity::Deal, &layout, &rows)
        .await
        .unwrap();
    let other = store
        .ensure_table("other.bitrix24.com", Entity::Deal, &deal_fields())
        .await
        .unwrap();
    store
        .upsert("other.bitrix24.com", Entity::Deal, &other, &rows[..2])
        .await
        .unwrap();

    assert_eq!(
        store
            .soft_delete(PORTAL, Entity::Deal, &[2, 4, 99])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.soft_delete(PORTAL, Entity::Deal, &[2]).await.unwrap(),
        0,
        "already deleted"
    );
    assert_eq!(
        store.live_ids(PORTAL, Entity::Deal, 0, None).await.unwrap(),
        [1, 3, 5]
    );
    assert_eq!(
        store
            .live_ids(PORTAL, Entity::Deal, 1, Some(4))
            .await
            .unwrap(),
        [3]
    );
    assert_eq!(
        store
            .live_ids("other.bitrix24.com", Entity::Deal, 0, None)
            .await
            .unwrap(),
        [1, 2],
        "other portal untouched"
    );

    let c = db.client().await;
    let kept: (String, bool) = c
        .query_one(
            "SELECT title, deleted_at IS NOT NULL FROM b24.deal WHERE portal = $1 AND id = 2",
            &[&PORTAL],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(kept, ("d2".into(), true), "a deleted row keeps its data");

    // The record is back on the portal (e.g. restored): the same DATE_MODIFY still un-deletes.
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &rows[1..2])
            .await
            .unwrap(),
        stats(0, 1, 0)
    );
    assert_eq!(
        store.live_ids(PORTAL, Entity::Deal, 0, None).await.unwrap(),
        [1, 2, 3, 5]
    );
}

#[tokio::test]
async fn unconvertible_values_become_null_and_stay_in_raw() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let bad = row(
        json!({"ID": "1", "TITLE": "t", "DATE_MODIFY": "not a date", "OPPORTUNITY": "1,5", "UF_CRM_INT": "C_12"}),
    );
    let result = store
        .upsert(PORTAL, Entity::Deal, &layout, &[bad])
        .await
        .unwrap();
    assert_eq!(
        result,
        UpsertStats {
            inserted: 1,
            updated: 0,
            unchanged: 0,
            invalid_values: 3
        }
    );
    let c = db.client().await;
    let t = portal_table(&c, PORTAL, Entity::Deal).await;
    let r = c
        .query_one(
            &format!("SELECT date_modify IS NULL, opportunity IS NULL, uf_crm_int IS NULL, raw FROM b24.{t}"),
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0) && r.get::<_, bool>(1) && r.get::<_, bool>(2));
    assert_eq!(r.get::<_, Value>(3)["UF_CRM_INT"], json!("C_12"));
}

#[tokio::test]
async fn text_survives_copy_special_characters_and_nul() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let nasty = "tab\there\nnewline\r\\N \\ backslash \u{0} nul ' \" ; -- ünï 😀";
    let r = row(
        json!({"ID": "1", "TITLE": nasty, "DATE_MODIFY": "2024-08-30T14:29:00+02:00", "EXTRA\u{0}KEY": nasty}),
    );
    store
        .upsert(PORTAL, Entity::Deal, &layout, &[r])
        .await
        .unwrap();
    let c = db.client().await;
    let got = c
        .query_one("SELECT title, raw FROM b24.deal", &[])
        .await
        .unwrap();
    let expected = nasty.replace('\0', "\u{FFFD}");
    assert_eq!(got.get::<_, String>(0), expected);
    assert_eq!(got.get::<_, Value>(1)["EXTRA\u{FFFD}KEY"], json!(expected));
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let rows = [
        deal(1, "ok", "2024-08-30T14:29:00+02:00"),
        row(json!({"TITLE": "no id"})),
    ];
    let err = store
        .upsert(PORTAL, Entity::Deal, &layout, &rows)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("row 1") && err.to_string().contains("ID"),
        "{err}"
    );
    let err = store
        .upsert(PORTAL, Entity::Contact, &layout, &rows[..1])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("layout is for portal"), "{err}");
    // A layout belongs to its portal: another portal's rows never go to its table.
    let err = store
        .upsert("other.bitrix24.com", Entity::Deal, &layout, &rows[..1])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other.bitrix24.com"), "{err}");
    let err = store
        .upsert(" ", Entity::Deal, &layout, &rows[..1])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("portal"), "{err}");
    let err = store
        .soft_delete(PORTAL, Entity::Deal, &[u64::MAX])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bigint"), "{err}");
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &[])
            .await
            .unwrap(),
        UpsertStats::default()
    );
    // Nothing was written by the failed calls.
    let c = db.client().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM b24.deal").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn large_batches_span_several_copy_chunks() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = deal_table(&store).await;
    let rows: Vec<Row> = (1..=4_500)
        .map(|i| deal(i, &format!("d{i}"), "2024-08-30T14:29:00+02:00"))
        .collect();
    assert_eq!(
        store
            .upsert(PORTAL, Entity::Deal, &layout, &rows)
            .await
            .unwrap(),
        stats(4_500, 0, 0)
    );
    let ids = store.live_ids(PORTAL, Entity::Deal, 0, None).await.unwrap();
    assert_eq!(ids, (1..=4_500).collect::<Vec<u64>>());
}
