//! One table per portal and entity: user fields, retyping and backfill stay within
//! their portal; schema changes give way to readers; the shared table of earlier
//! versions moves without losing a row; new columns fill in resumable batches.

use std::time::{Duration, Instant};

use b24_domain::entity::Entity;
use b24_domain::schema::FieldMeta;
use b24_store::{Row, Store};
use serde_json::{Value, json};

use crate::common::*;

fn standard() -> Vec<FieldMeta> {
    vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("DATE_MODIFY", "datetime"),
    ]
}

fn with(mut fields: Vec<FieldMeta>, extra: &[(&str, &str)]) -> Vec<FieldMeta> {
    fields.extend(extra.iter().map(|(code, ty)| field(code, ty)));
    fields
}

fn deal(id: u64, extra: Value) -> Row {
    let mut r = row(json!({"ID": id.to_string(), "TITLE": format!("deal {id}"),
                           "DATE_MODIFY": "2024-08-30T14:29:00+02:00"}));
    r.extend(row(extra));
    r
}

/// Creates `portal`'s deal table with `fields`, writes `rows` to it and returns the
/// table's name.
async fn seeded_table(
    store: &Store,
    db: &TestDb,
    portal: &str,
    fields: &[FieldMeta],
    rows: &[Row],
) -> String {
    let layout = store
        .ensure_table(portal, Entity::Deal, fields)
        .await
        .unwrap();
    store
        .upsert(portal, Entity::Deal, &layout, rows)
        .await
        .unwrap();
    portal_table(&db.client().await, portal, Entity::Deal).await
}

/// A report holding `table` (as a long SELECT does) in an open transaction; `COMMIT`
/// on the returned client ends it.
async fn report_reading(db: &TestDb, table: &str) -> tokio_postgres::Client {
    let report = db.client().await;
    report
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE b24.{table} IN ACCESS SHARE MODE"
        ))
        .await
        .unwrap();
    report
}

#[tokio::test]
async fn portals_keep_their_own_user_field_types_values_and_retyping() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    // The same code is an integer on A and a string on B; both have a numeric UF_CRM_Y.
    let a_fields = with(
        standard(),
        &[("UF_CRM_X", "integer"), ("UF_CRM_Y", "double")],
    );
    let b_fields = with(
        standard(),
        &[("UF_CRM_X", "string"), ("UF_CRM_Y", "double")],
    );
    let a = store
        .ensure_table("a", Entity::Deal, &a_fields)
        .await
        .unwrap();
    let b = store
        .ensure_table("b", Entity::Deal, &b_fields)
        .await
        .unwrap();
    store
        .upsert(
            "a",
            Entity::Deal,
            &a,
            &[deal(1, json!({"UF_CRM_X": "42", "UF_CRM_Y": "1.5"}))],
        )
        .await
        .unwrap();
    store
        .upsert(
            "b",
            Entity::Deal,
            &b,
            &[deal(1, json!({"UF_CRM_X": "hello", "UF_CRM_Y": "2.5"}))],
        )
        .await
        .unwrap();
    let (ta, tb) = (
        portal_table(&c, "a", Entity::Deal).await,
        portal_table(&c, "b", Entity::Deal).await,
    );
    assert_ne!(ta, tb);
    assert_eq!(
        type_of(&column_types(&c, &ta).await, "uf_crm_x"),
        Some("bigint")
    );
    assert_eq!(
        type_of(&column_types(&c, &tb).await, "uf_crm_x"),
        Some("text")
    );
    let x_a: i64 = scalar(&c, &format!("SELECT uf_crm_x FROM b24.{ta}")).await;
    let x_b: String = scalar(&c, &format!("SELECT uf_crm_x FROM b24.{tb}")).await;
    assert_eq!((x_a, x_b.as_str()), (42, "hello"));
    let described = |portal: &'static str| {
        let store = store.clone();
        async move {
            store
                .describe_columns(portal, Entity::Deal)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.code == "UF_CRM_X")
                .unwrap()
                .column_type
        }
    };
    assert_eq!(described("a").await.as_deref(), Some("bigint"));
    assert_eq!(described("b").await.as_deref(), Some("text"));

    // Retyping A's UF_CRM_Y touches neither B's column nor B's rows.
    let b_row_version = format!("SELECT xmin::text FROM b24.{tb} WHERE id = 1");
    let b_before: String = c.query_one(&b_row_version, &[]).await.unwrap().get(0);
    let a_retyped = with(
        standard(),
        &[("UF_CRM_X", "integer"), ("UF_CRM_Y", "string")],
    );
    store
        .ensure_table("a", Entity::Deal, &a_retyped)
        .await
        .unwrap();
    assert_eq!(
        type_of(&column_types(&c, &ta).await, "uf_crm_y"),
        Some("text")
    );
    assert_eq!(
        type_of(&column_types(&c, &tb).await, "uf_crm_y"),
        Some("numeric")
    );
    let b_after: String = c.query_one(&b_row_version, &[]).await.unwrap().get(0);
    assert_eq!(b_after, b_before, "B's rows were not rewritten");
    let y_a: String = scalar(&c, &format!("SELECT uf_crm_y FROM b24.{ta}")).await;
    assert_eq!(y_a, "1.5");

    // The view shows both portals' standard columns, none of their user fields.
    let view = column_types(&c, "deal").await;
    let names: Vec<&str> = view.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "portal",
            "id",
            "raw",
            "date_modify",
            "synced_at",
            "deleted_at",
            "title"
        ]
    );
    let rows: Vec<(String, i64, Value)> = query_rows(
        &c,
        "SELECT portal, id, raw->'UF_CRM_X' FROM b24.deal ORDER BY portal",
        |r| (r.get(0), r.get(1), r.get(2)),
    )
    .await;
    assert_eq!(
        rows,
        [
            ("a".to_string(), 1, json!("42")),
            ("b".to_string(), 1, json!("hello"))
        ]
    );
}

#[tokio::test]
async fn twenty_portals_with_two_hundred_user_fields_stay_far_below_the_column_limit() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let types = ["string", "integer", "double", "date", "money", "boolean"];
    for p in 0..20 {
        let portal = format!("portal-{p}.bitrix24.com");
        let fields: Vec<FieldMeta> = standard()
            .into_iter()
            .chain((0..200).map(|i| field(&format!("UF_CRM_{p}_{i}"), types[i % types.len()])))
            .collect();
        let layout = store
            .ensure_table(&portal, Entity::Deal, &fields)
            .await
            .unwrap();
        assert!(layout.skipped_fields().is_empty());
        store
            .upsert(&portal, Entity::Deal, &layout, &[deal(1, json!({}))])
            .await
            .unwrap();
    }
    let c = db.client().await;
    let widest: i64 = scalar(&c, "SELECT max(n) FROM (SELECT count(*) AS n FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
             WHERE t.relnamespace = 'b24'::regnamespace AND t.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
             GROUP BY t.oid) per_table").await;
    // 6 system + 2 standard + 200 user columns, plus the currency columns of money fields.
    assert!(widest < 300, "the widest table has {widest} columns");
    assert!(widest >= 208, "{widest}");
    let tables: i64 = scalar(
        &c,
        "SELECT count(*) FROM b24._mirror_tables WHERE entity = 'deal'",
    )
    .await;
    assert_eq!(tables, 20);
    let (rows, portals): (i64, i64) =
        scalar_pair(&c, "SELECT count(*), count(DISTINCT portal) FROM b24.deal").await;
    assert_eq!((rows, portals), (20, 20));
}

#[tokio::test]
async fn a_locked_table_delays_a_schema_change_without_blocking_readers_or_the_sync() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let portal = "busy";
    let v1 = standard();
    let t = seeded_table(
        &store,
        &db,
        portal,
        &v1,
        &[deal(1, json!({"UF_CRM_NEW": "7"}))],
    )
    .await;

    let report = report_reading(&db, &t).await;

    let v2 = with(v1.clone(), &[("UF_CRM_NEW", "integer")]);
    let change = tokio::spawn({
        let store = store.clone();
        let v2 = v2.clone();
        async move { store.ensure_table(portal, Entity::Deal, &v2).await }
    });
    // Other readers keep reading while the change waits for its lock.
    let reader = db.client().await;
    reader
        .batch_execute("SET statement_timeout = '2s'")
        .await
        .unwrap();
    let mut reads = 0;
    while !change.is_finished() {
        let started = Instant::now();
        let n: i64 = reader
            .query_one(&format!("SELECT count(*) FROM b24.{t}"), &[])
            .await
            .expect("a reader was blocked by the waiting schema change")
            .get(0);
        assert_eq!(n, 1);
        assert!(started.elapsed() < Duration::from_secs(2));
        reads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reads > 3,
        "the schema change did not wait at all ({reads} reads)"
    );
    let deferred = change.await.unwrap().expect("the sync does not fail");
    assert_eq!(deferred.skipped_fields(), ["UF_CRM_NEW"]);
    assert!(deferred.columns().iter().all(|c| c.name != "uf_crm_new"));
    assert_eq!(
        type_of(&column_types(&reader, &t).await, "uf_crm_new"),
        None
    );
    // The sync goes on: the value is kept in raw.
    store
        .upsert(
            portal,
            Entity::Deal,
            &deferred,
            &[deal(2, json!({"UF_CRM_NEW": "8"}))],
        )
        .await
        .unwrap();
    let waiting = store
        .describe_columns(portal, Entity::Deal)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.code == "UF_CRM_NEW")
        .unwrap();
    assert!(waiting.column.is_none());
    assert!(waiting.rejected_reason.unwrap().contains("later run"));

    // The report ends; the next run adds the column and fills it from raw.
    report.batch_execute("COMMIT").await.unwrap();
    let layout = store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    assert!(layout.skipped_fields().is_empty());
    let values: Vec<(i64, Option<i64>)> = query_rows(
        &reader,
        &format!("SELECT id, uf_crm_new FROM b24.{t} ORDER BY id"),
        |r| (r.get(0), r.get(1)),
    )
    .await;
    assert_eq!(values, [(1, Some(7)), (2, Some(8))]);
}

/// The mirror as the shared table of earlier versions held it: two portals in one
/// table, each with its own user field's column, and their recorded metadata.
async fn create_shared_table(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE b24.deal (
             portal text NOT NULL, id bigint NOT NULL, raw jsonb NOT NULL, date_modify timestamptz,
             synced_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz,
             title text, uf_crm_a bigint, uf_crm_b text, PRIMARY KEY (portal, id));
         INSERT INTO b24.deal (portal, id, raw, date_modify, deleted_at, title, uf_crm_a)
             SELECT 'a', g, jsonb_build_object('ID', g::text, 'TITLE', 'a' || g, 'UF_CRM_A', g::text),
                    '2024-08-30T12:00:00Z', CASE WHEN g % 10 = 0 THEN now() END, 'a' || g, g
             FROM generate_series(1, 12000) g;
         INSERT INTO b24.deal (portal, id, raw, title, uf_crm_b)
             SELECT 'b-portal', g, jsonb_build_object('ID', g::text, 'TITLE', 'b' || g, 'UF_CRM_B', 'x' || g),
                    'b' || g, 'x' || g
             FROM generate_series(1, 3000) g;
         INSERT INTO b24._fields (portal, entity, code, position, column_name, column_type, title, bitrix_type,
                                  is_multiple, is_dynamic, is_read_only)
         VALUES ('a', 'deal', 'ID', 0, 'id', 'bigint', 'ID', 'integer', false, false, true),
                ('a', 'deal', 'TITLE', 1, 'title', 'text', 'Title', 'string', false, false, false),
                ('a', 'deal', 'UF_CRM_A', 2, 'uf_crm_a', 'bigint', 'A', 'integer', false, true, false),
                ('b-portal', 'deal', 'TITLE', 0, 'title', 'text', 'Title', 'string', false, false, false),
                ('b-portal', 'deal', 'UF_CRM_B', 1, 'uf_crm_b', 'text', 'B', 'string', false, true, false);",
    )
    .await
    .unwrap();
}

/// Per portal: row count and a digest of every row's ID, record, deletion and title.
async fn digest(c: &tokio_postgres::Client) -> Vec<(String, i64, String)> {
    query_rows(c, "SELECT portal, count(*), md5(string_agg(id || '|' || raw::text || '|' || coalesce(deleted_at::text, '-')
                                                 || '|' || coalesce(title, '-'), ',' ORDER BY id))
         FROM b24.deal GROUP BY portal ORDER BY portal", |r| (r.get(0), r.get(1), r.get(2))).await
}

#[tokio::test]
async fn the_shared_table_of_earlier_versions_moves_to_portal_tables_without_losing_a_row() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    create_shared_table(&c).await;
    let before = digest(&c).await;
    assert_eq!(before.iter().map(|d| d.1).sum::<i64>(), 15_000);
    // A move cut short earlier: A's table exists with its first 5,000 rows.
    c.batch_execute(
        "CREATE TABLE b24.deal__a (LIKE b24.deal INCLUDING ALL);
         INSERT INTO b24.deal__a SELECT * FROM b24.deal WHERE portal = 'a' AND id <= 5000;
         INSERT INTO b24._mirror_tables (portal, entity, table_name) VALUES ('a', 'deal', 'deal__a');",
    )
    .await
    .unwrap();

    let fields = with(
        standard(),
        &[("UF_CRM_A", "integer"), ("UF_CRM_NEW", "string")],
    );
    let layout = store
        .ensure_table("a", Entity::Deal, &fields)
        .await
        .unwrap();
    assert!(layout.skipped_fields().is_empty());
    let kind: i8 = scalar(
        &c,
        "SELECT relkind FROM pg_class WHERE oid = 'b24.deal'::regclass",
    )
    .await;
    assert_eq!(kind as u8, b'v', "b24.deal is now the cross-portal view");
    assert_eq!(digest(&c).await, before, "every row is there, unchanged");

    // Each portal's table has its own user-field columns, values kept.
    let tb = portal_table(&c, "b-portal", Entity::Deal).await;
    let b_columns = column_types(&c, &tb).await;
    assert_eq!(type_of(&b_columns, "uf_crm_b"), Some("text"));
    assert_eq!(type_of(&b_columns, "uf_crm_a"), None);
    let a_kept: i64 = scalar(&c, "SELECT count(*) FROM b24.deal__a WHERE uf_crm_a = id").await;
    let b_kept: i64 = scalar(
        &c,
        &format!("SELECT count(*) FROM b24.{tb} WHERE uf_crm_b = 'x' || id"),
    )
    .await;
    assert_eq!((a_kept, b_kept), (12_000, 3_000));
    let new_column = column_types(&c, "deal__a").await;
    assert_eq!(type_of(&new_column, "uf_crm_new"), Some("text"));

    // Idempotent: another run (and the other portal's first run) changes nothing.
    store
        .ensure_table("a", Entity::Deal, &fields)
        .await
        .unwrap();
    store
        .ensure_table(
            "b-portal",
            Entity::Deal,
            &with(standard(), &[("UF_CRM_B", "string")]),
        )
        .await
        .unwrap();
    assert_eq!(digest(&c).await, before);
    let leftovers: i64 = scalar(&c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'b24'::regnamespace AND relname LIKE 'deal\\_\\_before%'").await;
    assert_eq!(leftovers, 0, "the shared table is dropped once moved");
}

#[tokio::test]
async fn a_shared_table_other_views_read_is_kept_under_a_new_name() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    create_shared_table(&c).await;
    c.batch_execute("CREATE VIEW b24.my_report AS SELECT portal, id FROM b24.deal")
        .await
        .unwrap();
    let before = digest(&c).await;
    store
        .ensure_table(
            "a",
            Entity::Deal,
            &with(standard(), &[("UF_CRM_A", "integer")]),
        )
        .await
        .unwrap();
    assert_eq!(digest(&c).await, before);
    let (report, kept): (i64, i64) = scalar_pair(&c, "SELECT (SELECT count(*) FROM b24.my_report), (SELECT count(*) FROM b24.deal__before_portal_tables)").await;
    assert_eq!((report, kept), (15_000, 15_000));
}

#[tokio::test]
async fn new_columns_fill_in_batches_and_a_cut_short_fill_resumes() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let portal = "batches";
    let v1 = standard();
    let rows: Vec<Row> = (1..=12_000)
        .map(|i| deal(i, json!({"UF_CRM_N": i.to_string()})))
        .collect();
    let t = seeded_table(&store, &db, portal, &v1, &rows).await;

    let v2 = with(v1, &[("UF_CRM_N", "integer")]);
    store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    let (filled, transactions): (i64, i64) = scalar_pair(
        &c,
        &format!(
            "SELECT count(*) FILTER (WHERE uf_crm_n = id), count(DISTINCT xmin::text) FROM b24.{t}"
        ),
    )
    .await;
    assert_eq!(filled, 12_000);
    assert!(
        transactions >= 3,
        "12,000 rows in {transactions} transactions"
    );

    // A run cut short after 7,000 rows: the next run fills only the rest.
    c.batch_execute(&format!(
        "UPDATE b24.{t} SET uf_crm_n = NULL WHERE id > 7000;
         INSERT INTO b24._column_backfill (table_name, column_name, after_id) VALUES ('{t}', 'uf_crm_n', 7000);"
    ))
    .await
    .unwrap();
    let untouched =
        format!("SELECT string_agg(xmin::text, ',' ORDER BY id) FROM b24.{t} WHERE id <= 7000");
    let before: String = c.query_one(&untouched, &[]).await.unwrap().get(0);
    store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    let filled: i64 = scalar(
        &c,
        &format!("SELECT count(*) FROM b24.{t} WHERE uf_crm_n = id"),
    )
    .await;
    assert_eq!(filled, 12_000);
    let after: String = c.query_one(&untouched, &[]).await.unwrap().get(0);
    assert_eq!(
        before, after,
        "rows filled before the cut are not rewritten"
    );
    let pending: i64 = scalar(&c, "SELECT count(*) FROM b24._column_backfill").await;
    assert_eq!(pending, 0);

    // Retyped: the text copy is filled in batches, then takes the column's place.
    let v3 = with(standard(), &[("UF_CRM_N", "string")]);
    let layout = store.ensure_table(portal, Entity::Deal, &v3).await.unwrap();
    let columns = column_types(&c, &t).await;
    assert_eq!(type_of(&columns, "uf_crm_n"), Some("text"));
    assert!(
        columns.iter().all(|(n, _)| !n.starts_with("_retype")),
        "{columns:?}"
    );
    assert_eq!(
        layout
            .columns()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["title", "uf_crm_n"]
    );
    let text: i64 = scalar(
        &c,
        &format!("SELECT count(*) FROM b24.{t} WHERE uf_crm_n = id::text"),
    )
    .await;
    assert_eq!(text, 12_000);
}

#[tokio::test]
async fn a_fill_that_meets_locked_rows_leaves_them_for_a_later_run() {
    let db = TestDb::create().await;
    let store = store_with_lock_timeout(&db, Duration::from_millis(300)).await;
    let c = db.client().await;
    let portal = "locked-rows";
    let fields = with(standard(), &[("UF_CRM_N", "integer")]);
    let rows: Vec<Row> = (1..=3)
        .map(|i| deal(i, json!({"UF_CRM_N": i.to_string()})))
        .collect();
    let t = seeded_table(&store, &db, portal, &fields, &rows).await;
    // A column waiting to be filled (as after a run cut short) ...
    c.batch_execute(&format!(
        "UPDATE b24.{t} SET uf_crm_n = NULL;
         INSERT INTO b24._column_backfill (table_name, column_name) VALUES ('{t}', 'uf_crm_n');"
    ))
    .await
    .unwrap();
    // ... and a session holding one of its rows.
    let mut holder = db.client().await;
    let editor = holder.transaction().await.unwrap();
    editor
        .batch_execute(&format!("SELECT * FROM b24.{t} WHERE id = 2 FOR UPDATE"))
        .await
        .unwrap();
    let filled = format!("SELECT count(uf_crm_n) FROM b24.{t}");
    store
        .ensure_table(portal, Entity::Deal, &fields)
        .await
        .expect("the sync does not fail");
    let n: i64 = c.query_one(&filled, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the locked batch was rolled back");
    let pending: i64 = scalar(&c, "SELECT count(*) FROM b24._column_backfill").await;
    assert_eq!(pending, 1, "still waiting to be filled");

    editor.commit().await.unwrap();
    store
        .ensure_table(portal, Entity::Deal, &fields)
        .await
        .unwrap();
    let n: i64 = c.query_one(&filled, &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn a_retyped_column_keeps_its_old_type_while_the_table_is_busy() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let portal = "retype";
    let v1 = with(standard(), &[("UF_CRM_N", "integer")]);
    let t = seeded_table(
        &store,
        &db,
        portal,
        &v1,
        &[deal(1, json!({"UF_CRM_N": "5"}))],
    )
    .await;

    let report = report_reading(&db, &t).await;
    let v2 = with(standard(), &[("UF_CRM_N", "string")]);
    let busy = store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    let n = busy
        .columns()
        .iter()
        .find(|c| c.name == "uf_crm_n")
        .unwrap();
    assert_eq!(
        n.column_type.sql(),
        "bigint",
        "written in its old type meanwhile"
    );
    let stats = store
        .upsert(
            portal,
            Entity::Deal,
            &busy,
            &[deal(2, json!({"UF_CRM_N": "n/a"}))],
        )
        .await
        .unwrap();
    assert_eq!(
        stats.invalid_values, 1,
        "kept in raw, NULL in the old column"
    );
    report.batch_execute("COMMIT").await.unwrap();

    // The next run adds the text copy, fills it from raw and puts it in place.
    let layout = store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    assert_eq!(
        layout
            .columns()
            .iter()
            .map(|c| (c.name.as_str(), c.column_type.sql()))
            .collect::<Vec<_>>(),
        [("title", "text"), ("uf_crm_n", "text")]
    );
    let values: Vec<Option<String>> = query_rows(
        &c,
        &format!("SELECT uf_crm_n FROM b24.{t} ORDER BY id"),
        |r| r.get(0),
    )
    .await;
    assert_eq!(values, [Some("5".into()), Some("n/a".into())]);
}

#[tokio::test]
async fn hostile_portal_names_get_their_own_safe_tables() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let long = "p".repeat(300);
    let hostile = [
        "x\"; DROP TABLE b24._fields; --",
        "Robert'); DROP TABLE b24.deal;--",
        "back\\slash' OR '1'='1",
        "ünïcode.bitrix24.de",
        "UPPER",
        "upper",
        long.as_str(),
    ];
    for (i, portal) in hostile.iter().enumerate() {
        let layout = store
            .ensure_table(
                portal,
                Entity::Deal,
                &with(standard(), &[("UF_CRM_P", "string")]),
            )
            .await
            .unwrap();
        store
            .upsert(
                portal,
                Entity::Deal,
                &layout,
                &[deal(i as u64 + 1, json!({"UF_CRM_P": *portal}))],
            )
            .await
            .unwrap();
        assert_eq!(
            store.live_ids(portal, Entity::Deal, 0, None).await.unwrap(),
            [i as u64 + 1]
        );
    }
    let names: Vec<String> = query_rows(
        &c,
        "SELECT table_name FROM b24._mirror_tables ORDER BY table_name",
        |r| r.get(0),
    )
    .await;
    assert_eq!(names.len(), hostile.len(), "{names:?}");
    for (i, portal) in hostile.iter().enumerate() {
        let t = portal_table(&c, portal, Entity::Deal).await;
        assert!(
            t.len() <= 63
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{t}"
        );
        let (id, uf): (i64, String) =
            scalar_pair(&c, &format!("SELECT id, uf_crm_p FROM b24.{t}")).await;
        assert_eq!((id, uf.as_str()), (i as i64 + 1, *portal));
        // The view names every row's portal exactly.
        let via_view: i64 = c
            .query_one("SELECT id FROM b24.deal WHERE portal = $1", &[portal])
            .await
            .unwrap()
            .get(0);
        assert_eq!(via_view, i as i64 + 1);
    }
    assert_eq!(
        store
            .soft_delete(hostile[0], Entity::Deal, &[1])
            .await
            .unwrap(),
        1
    );
    let fields_left: i64 = scalar(&c, "SELECT count(DISTINCT portal) FROM b24._fields").await;
    assert_eq!(fields_left as usize, hostile.len());
}

#[tokio::test]
async fn a_portal_name_that_maps_to_another_portals_table_is_refused() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    store
        .ensure_table("a", Entity::Deal, &standard())
        .await
        .unwrap();
    // Someone else's table under the name portal "a" would get (for example an
    // operator's hand-made registry entry).
    c.batch_execute("UPDATE b24._mirror_tables SET portal = 'someone-else'")
        .await
        .unwrap();
    let err = store
        .ensure_table("a", Entity::Deal, &standard())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("someone-else") && err.contains("deal__a"),
        "{err}"
    );
}
