//! Tables filled under earlier value rules: date columns stored the local date part of
//! the portal's midnight-UTC rendering (a day early west of UTC) and multiple date
//! fields the portal's strings. `ensure_table` re-derives them from `raw` once, in
//! resumable batches.

use std::time::Duration;

use b24_domain::entity::Entity;
use b24_domain::schema::FieldMeta;
use b24_store::Row;
use chrono::{Days, FixedOffset, NaiveDate};
use serde_json::json;

use crate::common::*;

fn fields() -> Vec<FieldMeta> {
    vec![
        field("ID", "integer"),
        field("DATE_MODIFY", "datetime"),
        field("BEGINDATE", "date"),
        multiple(field("UF_CRM_DATES", "date")),
        field("UF_CRM_N", "integer"),
    ]
}

/// Row `id` as a portal at `offset` sends it: dates are midnight UTC shown in the
/// portal's offset. Every 100th row has its dates empty.
fn deal(id: u64, offset: FixedOffset) -> Row {
    let rendered = |date: NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .with_timezone(&offset)
            .to_rfc3339()
    };
    let day = NaiveDate::from_ymd_opt(2024, 8, 1).unwrap() + Days::new(id % 200);
    let (begin, dates) = if id.is_multiple_of(100) {
        (json!(""), json!(""))
    } else {
        (
            json!(rendered(day)),
            json!([rendered(day), rendered(day + Days::new(1))]),
        )
    };
    row(
        json!({"ID": id.to_string(), "DATE_MODIFY": "2024-08-30T14:29:00+02:00",
               "BEGINDATE": begin, "UF_CRM_DATES": dates, "UF_CRM_N": id.to_string()}),
    )
}

/// Rows of `table` whose date columns differ from the UTC dates of `raw`'s values
/// (computed by PostgreSQL here, independently of the store).
async fn wrong_dates(c: &tokio_postgres::Client, table: &str, up_to_id: i64) -> i64 {
    c.query_one(
        &format!(
            "SELECT count(*) FROM b24.{table} WHERE id <= $1 AND (
                 begindate IS DISTINCT FROM
                     ((nullif(raw->>'BEGINDATE', '')::timestamptz AT TIME ZONE 'UTC')::date)
              OR uf_crm_dates IS DISTINCT FROM
                     (SELECT jsonb_agg(((e #>> '{{}}')::timestamptz AT TIME ZONE 'UTC')::date ORDER BY n)
                      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(raw->'UF_CRM_DATES') = 'array'
                                                     THEN raw->'UF_CRM_DATES' END) WITH ORDINALITY AS a(e, n))
              OR uf_crm_n IS DISTINCT FROM id)"
        ),
        &[&up_to_id],
    )
    .await
    .unwrap()
    .get(0)
}

/// A fingerprint of the versions of the rows of `table` up to `up_to_id`, to tell
/// whether a run rewrote any.
async fn row_versions(c: &tokio_postgres::Client, table: &str, up_to_id: i64) -> String {
    c.query_one(
        &format!(
            "SELECT md5(string_agg(xmin::text, ',' ORDER BY id)) FROM b24.{table} WHERE id <= $1"
        ),
        &[&up_to_id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn dates_filled_under_the_old_rule_are_derived_again_once_in_resumable_batches() {
    let db = TestDb::create().await;
    let store = store_with_lock_timeout(&db, Duration::from_millis(300)).await;
    let c = db.client().await;
    let fields = fields();
    let west = FixedOffset::west_opt(3 * 3600).unwrap();
    let east = FixedOffset::east_opt(2 * 3600).unwrap();
    let mut tables = Vec::new();
    for (portal, offset, rows) in [("west", west, 6_000), ("east", east, 300)] {
        let layout = store
            .ensure_table(portal, Entity::Deal, &fields)
            .await
            .unwrap();
        let rows: Vec<Row> = (1..=rows).map(|i| deal(i, offset)).collect();
        store
            .upsert(portal, Entity::Deal, &layout, &rows)
            .await
            .unwrap();
        tables.push(portal_table(&c, portal, Entity::Deal).await);
    }
    let [west_table, east_table] = [&tables[0], &tables[1]];
    for t in [west_table, east_table] {
        assert_eq!(
            wrong_dates(&c, t, i64::MAX).await,
            0,
            "written by this version"
        );
    }
    let versions: Vec<i32> =
        query_rows(&c, "SELECT mapping_version FROM b24._mirror_tables", |r| {
            r.get(0)
        })
        .await;
    assert_eq!(versions, [2, 2], "new tables are at the current version");

    // As a version before the fix left them: the local date part, the strings as sent,
    // and the version the migration gives every table registered before it.
    c.batch_execute(&format!(
        "UPDATE b24._mirror_tables SET mapping_version = 1;
         UPDATE b24.{west_table} SET begindate = left(nullif(raw->>'BEGINDATE', ''), 10)::date,
                                     uf_crm_dates = CASE WHEN raw->>'UF_CRM_DATES' <> '' THEN raw->'UF_CRM_DATES' END;
         UPDATE b24.{east_table} SET begindate = left(nullif(raw->>'BEGINDATE', ''), 10)::date,
                                     uf_crm_dates = CASE WHEN raw->>'UF_CRM_DATES' <> '' THEN raw->'UF_CRM_DATES' END;"
    ))
    .await
    .unwrap();
    assert_eq!(
        wrong_dates(&c, west_table, i64::MAX).await,
        6_000 - 60,
        "west of UTC every non-empty date was a day early"
    );
    assert_eq!(
        wrong_dates(&c, east_table, i64::MAX).await,
        300 - 3,
        "east of UTC the dates were right but the array held strings"
    );

    // A session holds a row of the west table's second batch: the first batch is fixed
    // and the rest waits, already queued.
    let mut holder = db.client().await;
    let editor = holder.transaction().await.unwrap();
    editor
        .batch_execute(&format!(
            "SELECT * FROM b24.{west_table} WHERE id = 5500 FOR UPDATE"
        ))
        .await
        .unwrap();
    store
        .ensure_table("west", Entity::Deal, &fields)
        .await
        .expect("the sync does not fail");
    assert_eq!(wrong_dates(&c, west_table, 5_000).await, 0);
    assert_eq!(
        wrong_dates(&c, west_table, i64::MAX).await,
        1_000 - 10,
        "the locked batch was rolled back"
    );
    let pending: Vec<(String, i64)> = query_rows(
        &c,
        "SELECT column_name, after_id FROM b24._column_backfill ORDER BY column_name",
        |r| (r.get(0), r.get(1)),
    )
    .await;
    assert_eq!(
        pending,
        [
            ("begindate".to_string(), 5_000),
            ("uf_crm_dates".to_string(), 5_000)
        ]
    );
    editor.commit().await.unwrap();

    // The next run continues after the first batch, leaving its rows alone.
    let first_batch = row_versions(&c, west_table, 5_000).await;
    store
        .ensure_table("west", Entity::Deal, &fields)
        .await
        .unwrap();
    store
        .ensure_table("east", Entity::Deal, &fields)
        .await
        .unwrap();
    assert_eq!(first_batch, row_versions(&c, west_table, 5_000).await);
    for t in [west_table, east_table] {
        assert_eq!(wrong_dates(&c, t, i64::MAX).await, 0, "{t}");
    }
    let pending: i64 = scalar(&c, "SELECT count(*) FROM b24._column_backfill").await;
    assert_eq!(pending, 0);
    let versions: Vec<i32> =
        query_rows(&c, "SELECT mapping_version FROM b24._mirror_tables", |r| {
            r.get(0)
        })
        .await;
    assert_eq!(versions, [2, 2]);

    // Done once: later runs rewrite nothing.
    let rows_before = [
        row_versions(&c, west_table, i64::MAX).await,
        row_versions(&c, east_table, i64::MAX).await,
    ];
    for portal in ["west", "east"] {
        store
            .ensure_table(portal, Entity::Deal, &fields)
            .await
            .unwrap();
    }
    let rows_after = [
        row_versions(&c, west_table, i64::MAX).await,
        row_versions(&c, east_table, i64::MAX).await,
    ];
    assert_eq!(rows_before, rows_after);
    let pending: i64 = scalar(&c, "SELECT count(*) FROM b24._column_backfill").await;
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn tables_moved_from_the_shared_table_get_their_dates_derived_again() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    // The shared table of an earlier version, filled under the old rule.
    c.batch_execute(
        "CREATE TABLE b24.deal (
             portal text NOT NULL, id bigint NOT NULL, raw jsonb NOT NULL, date_modify timestamptz,
             synced_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz,
             begindate date, PRIMARY KEY (portal, id));
         INSERT INTO b24.deal (portal, id, raw, begindate)
             SELECT 'west', g, jsonb_build_object('ID', g::text, 'BEGINDATE', '2024-08-29T21:00:00-03:00'), '2024-08-29'
             FROM generate_series(1, 20) g;
         INSERT INTO b24._fields (portal, entity, code, position, column_name, column_type, title, bitrix_type,
                                  is_multiple, is_dynamic, is_read_only)
         VALUES ('west', 'deal', 'ID', 0, 'id', 'bigint', 'ID', 'integer', false, false, true),
                ('west', 'deal', 'BEGINDATE', 1, 'begindate', 'date', 'Begins', 'date', false, false, false);",
    )
    .await
    .unwrap();
    let fields = [field("ID", "integer"), field("BEGINDATE", "date")];
    store
        .ensure_table("west", Entity::Deal, &fields)
        .await
        .unwrap();
    let t = portal_table(&c, "west", Entity::Deal).await;
    let fixed: i64 = scalar(
        &c,
        &format!("SELECT count(*) FROM b24.{t} WHERE begindate = '2024-08-30'"),
    )
    .await;
    assert_eq!(fixed, 20);
    let version: i32 = scalar(&c, "SELECT mapping_version FROM b24._mirror_tables").await;
    assert_eq!(version, 2);
}
