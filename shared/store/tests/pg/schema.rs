//! Tables from metadata: every column type round-trips, schema evolution keeps data,
//! hostile field names cannot reach SQL.

use b24_domain::entity::Entity;
use b24_domain::schema::{ColumnType, parse_fields};
use b24_store::Store;
use serde_json::{Value, json};

use crate::common::*;

fn deal_fields() -> Vec<b24_domain::schema::FieldMeta> {
    vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("OPPORTUNITY", "double"),
        field("CURRENCY_ID", "crm_currency"),
        field("OPENED", "char"),
        field("BEGINDATE", "date"),
        field("DATE_CREATE", "datetime"),
        field("DATE_MODIFY", "datetime"),
        field("ASSIGNED_BY_ID", "user"),
        field("COMPANY_ID", "crm_company"),
        field("CATEGORY_ID", "crm_category"),
        field("STAGE_ID", "crm_status"),
        field("COMMENTS", "string"),
        labelled(field("UF_CRM_STR", "string"), "Note"),
        field("UF_CRM_INT", "integer"),
        field("UF_CRM_DBL", "double"),
        field("UF_CRM_BOOL", "boolean"),
        field("UF_CRM_DATE", "date"),
        field("UF_CRM_DT", "datetime"),
        labelled(
            with_items(
                field("UF_CRM_ENUM", "enumeration"),
                &[("79", "List item #1"), ("80", "List item #2")],
            ),
            "Kind",
        ),
        field("UF_CRM_MONEY", "money"),
        field("UF_CRM_EMP", "employee"),
        multiple(field("UF_CRM_URLS", "url")),
        field("UF_CRM_FILE", "file"),
        field("UF_CRM_BIND", "crm"),
        field("UF_CRM_ADDR", "address"),
        multiple(with_items(
            field("UF_CRM_TAGS", "enumeration"),
            &[("1", "red"), ("2", "blue")],
        )),
    ]
}

/// A deal as the portal sends it: a date field's value is midnight UTC written in the
/// portal's offset (`BEGINDATE`, `UF_CRM_DATE`).
fn deal_row() -> Value {
    json!({
        "ID": "410", "TITLE": "New Deal #1", "OPPORTUNITY": "1000000.00", "CURRENCY_ID": "EUR", "OPENED": "Y",
        "BEGINDATE": "2024-08-30T02:00:00+02:00", "DATE_CREATE": "2024-08-30T14:29:00+02:00",
        "DATE_MODIFY": "2024-08-30T14:29:00+02:00", "ASSIGNED_BY_ID": "1", "COMPANY_ID": "9", "CATEGORY_ID": "0",
        "STAGE_ID": "C1:NEW", "COMMENTS": "[B]Example\tcomment[/B]\nline \\ two 'quoted' \"double\" ünïcode",
        "UF_CRM_STR": "Hello world!", "UF_CRM_INT": "42", "UF_CRM_DBL": "9999.9", "UF_CRM_BOOL": "1",
        "UF_CRM_DATE": "2024-09-09T03:00:00+03:00", "UF_CRM_DT": "2024-09-09T16:31:12+03:00", "UF_CRM_ENUM": "80",
        "UF_CRM_MONEY": "300.50|RUB", "UF_CRM_EMP": "6", "UF_CRM_URLS": ["example.com", "second-example.com"],
        "UF_CRM_FILE": {"id": 12, "showUrl": "/show?id=12"}, "UF_CRM_BIND": "CO_456",
        "UF_CRM_ADDR": "Main St 1|52.5;13.4", "UF_CRM_TAGS": ["1", "2"], "UNLISTED": "only in raw"
    })
}

#[tokio::test]
async fn every_column_type_round_trips() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let layout = store
        .ensure_table("a.bitrix24.com", Entity::Deal, &deal_fields())
        .await
        .unwrap();
    assert!(layout.skipped_fields().is_empty());
    assert!(
        layout
            .columns()
            .iter()
            .any(|c| c.name == "uf_crm_money_currency" && c.column_type == ColumnType::Text)
    );
    let stats = store
        .upsert("a.bitrix24.com", Entity::Deal, &layout, &[row(deal_row())])
        .await
        .unwrap();
    assert_eq!((stats.inserted, stats.invalid_values), (1, 0));

    let c = db.client().await;
    let table = portal_table(&c, "a.bitrix24.com", Entity::Deal).await;
    let types = column_types(&c, &table).await;
    for (col, ty) in [
        ("portal", "text"),
        ("id", "bigint"),
        ("raw", "jsonb"),
        ("date_modify", "timestamp with time zone"),
        ("synced_at", "timestamp with time zone"),
        ("deleted_at", "timestamp with time zone"),
        ("title", "text"),
        ("opportunity", "numeric"),
        ("currency_id", "text"),
        ("opened", "boolean"),
        ("begindate", "date"),
        ("date_create", "timestamp with time zone"),
        ("assigned_by_id", "bigint"),
        ("company_id", "bigint"),
        ("category_id", "bigint"),
        ("stage_id", "text"),
        ("uf_crm_int", "bigint"),
        ("uf_crm_dbl", "numeric"),
        ("uf_crm_bool", "boolean"),
        ("uf_crm_date", "date"),
        ("uf_crm_dt", "timestamp with time zone"),
        ("uf_crm_enum", "bigint"),
        ("uf_crm_money", "numeric"),
        ("uf_crm_money_currency", "text"),
        ("uf_crm_emp", "bigint"),
        ("uf_crm_urls", "jsonb"),
        ("uf_crm_file", "jsonb"),
        ("uf_crm_bind", "text"),
        ("uf_crm_addr", "text"),
        ("uf_crm_tags", "jsonb"),
    ] {
        assert_eq!(type_of(&types, col), Some(ty), "{col}");
    }

    let r = c
        .query_one(
            &format!(
                "SELECT portal, id, title, opportunity::text, currency_id, opened, begindate::text,
                    date_create = '2024-08-30T12:29:00Z'::timestamptz, date_modify = '2024-08-30T14:29:00+02:00'::timestamptz,
                    assigned_by_id, company_id, category_id, stage_id, comments,
                    uf_crm_str, uf_crm_int, uf_crm_dbl::text, uf_crm_bool, uf_crm_date::text,
                    uf_crm_dt = '2024-09-09T13:31:12Z'::timestamptz, uf_crm_enum, uf_crm_money::text,
                    uf_crm_money_currency, uf_crm_emp, uf_crm_urls, uf_crm_file, uf_crm_bind, uf_crm_addr, uf_crm_tags,
                    raw, deleted_at IS NULL, synced_at > now() - interval '1 minute'
             FROM b24.{table}"
            ),
            &[],
        )
        .await
        .unwrap();
    let source = deal_row();
    assert_eq!(r.get::<_, String>(0), "a.bitrix24.com");
    assert_eq!(r.get::<_, i64>(1), 410);
    assert_eq!(r.get::<_, String>(2), "New Deal #1");
    assert_eq!(r.get::<_, String>(3), "1000000.00");
    assert_eq!(r.get::<_, String>(4), "EUR");
    assert!(r.get::<_, bool>(5));
    assert_eq!(r.get::<_, String>(6), "2024-08-30");
    assert!(r.get::<_, bool>(7) && r.get::<_, bool>(8));
    assert_eq!(
        (r.get::<_, i64>(9), r.get::<_, i64>(10), r.get::<_, i64>(11)),
        (1, 9, 0)
    );
    assert_eq!(r.get::<_, String>(12), "C1:NEW");
    assert_eq!(r.get::<_, String>(13), source["COMMENTS"].as_str().unwrap());
    assert_eq!(r.get::<_, String>(14), "Hello world!");
    assert_eq!(r.get::<_, i64>(15), 42);
    assert_eq!(r.get::<_, String>(16), "9999.9");
    assert!(r.get::<_, bool>(17));
    assert_eq!(r.get::<_, String>(18), "2024-09-09");
    assert!(r.get::<_, bool>(19));
    assert_eq!(r.get::<_, i64>(20), 80);
    assert_eq!(r.get::<_, String>(21), "300.50");
    assert_eq!(r.get::<_, String>(22), "RUB");
    assert_eq!(r.get::<_, i64>(23), 6);
    assert_eq!(
        r.get::<_, Value>(24),
        json!(["example.com", "second-example.com"])
    );
    assert_eq!(r.get::<_, Value>(25), source["UF_CRM_FILE"]);
    assert_eq!(r.get::<_, String>(26), "CO_456");
    assert_eq!(r.get::<_, String>(27), "Main St 1|52.5;13.4");
    assert_eq!(r.get::<_, Value>(28), json!(["1", "2"]));
    assert_eq!(
        r.get::<_, Value>(29),
        source,
        "raw keeps the whole record, unlisted keys too"
    );
    assert!(r.get::<_, bool>(30) && r.get::<_, bool>(31));

    // Enumeration labels resolve through the stored items.
    let label: String = scalar(&c, &format!(
                "SELECT i.value FROM b24.{table} d JOIN b24._field_items i
                   ON i.portal = d.portal AND i.entity = 'deal' AND i.code = 'UF_CRM_ENUM' AND i.item_id = d.uf_crm_enum::text"
            )).await;
    assert_eq!(label, "List item #2");
}

#[tokio::test]
async fn phone_and_email_multifields_are_queryable_jsonb() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // Straight from a crm.contact.fields answer.
    let fields = parse_fields(&json!({
        "ID": {"type": "integer", "isReadOnly": true, "isMultiple": false, "isDynamic": false, "title": "ID"},
        "NAME": {"type": "string", "isMultiple": false, "isDynamic": false, "title": "Name"},
        "BIRTHDATE": {"type": "date", "isMultiple": false, "isDynamic": false, "title": "Date of birth"},
        "HAS_PHONE": {"type": "char", "isReadOnly": true, "isMultiple": false, "isDynamic": false, "title": "Has phone"},
        "DATE_MODIFY": {"type": "datetime", "isReadOnly": true, "isMultiple": false, "isDynamic": false, "title": "Modified"},
        "PHONE": {"type": "crm_multifield", "isMultiple": true, "isDynamic": false, "title": "Phone"},
        "EMAIL": {"type": "crm_multifield", "isMultiple": true, "isDynamic": false, "title": "E-mail"}
    }))
    .unwrap();
    let layout = store
        .ensure_table("a.bitrix24.com", Entity::Contact, &fields)
        .await
        .unwrap();
    let phones = json!([
        {"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"},
        {"ID": "157", "VALUE_TYPE": "HOME", "VALUE": "+15599888666", "TYPE_ID": "PHONE"}
    ]);
    let rows = [
        row(
            json!({"ID": "84", "NAME": "Ann", "BIRTHDATE": "1990-05-01T03:00:00+03:00", "HAS_PHONE": "Y",
                   "DATE_MODIFY": "2024-08-30T14:29:00+02:00", "PHONE": phones,
                   "EMAIL": [{"ID": "158", "VALUE_TYPE": "WORK", "VALUE": "ann@example.com", "TYPE_ID": "EMAIL"}]}),
        ),
        row(
            json!({"ID": "85", "NAME": "Bob", "BIRTHDATE": "", "HAS_PHONE": "N",
                   "DATE_MODIFY": "2024-08-30T14:29:00+02:00"}),
        ),
    ];
    store
        .upsert("a.bitrix24.com", Entity::Contact, &layout, &rows)
        .await
        .unwrap();
    let c = db.client().await;
    let r = c
        .query_one(
            "SELECT id, phone, jsonb_array_length(phone), email->0->>'VALUE', birthdate::text, has_phone
             FROM b24.contact WHERE phone @> '[{\"VALUE\": \"+15599888666\"}]'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 84);
    assert_eq!(r.get::<_, Value>(1), phones);
    assert_eq!(r.get::<_, i32>(2), 2);
    assert_eq!(r.get::<_, String>(3), "ann@example.com");
    assert_eq!(r.get::<_, String>(4), "1990-05-01");
    assert!(r.get::<_, bool>(5));
    let bob = c
        .query_one(
            "SELECT phone IS NULL, birthdate IS NULL, has_phone FROM b24.contact WHERE id = 85",
            &[],
        )
        .await
        .unwrap();
    assert!(bob.get::<_, bool>(0) && bob.get::<_, bool>(1) && !bob.get::<_, bool>(2));
}

/// The type of `column` in the deal table of [`PORTAL`].
async fn column_type(c: &tokio_postgres::Client, column: &str) -> Option<String> {
    let table = portal_table(c, PORTAL, Entity::Deal).await;
    type_of(&column_types(c, &table).await, column).map(String::from)
}

const PORTAL: &str = "a.bitrix24.com";

#[tokio::test]
async fn new_fields_become_backfilled_columns_and_nothing_is_ever_lost() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let portal = PORTAL;
    let v1 = vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("DATE_MODIFY", "datetime"),
        field("UF_CRM_OLD", "string"),
    ];
    let layout_v1 = store.ensure_table(portal, Entity::Deal, &v1).await.unwrap();
    let t = portal_table(&c, portal, Entity::Deal).await;
    let rows: Vec<_> = (1..=3)
        .map(|i| {
            row(json!({"ID": i.to_string(), "TITLE": format!("deal {i}"), "DATE_MODIFY": "2024-08-30T14:29:00+02:00",
                       "UF_CRM_OLD": format!("old {i}"), "UF_CRM_NEW": (i * 10).to_string()}))
        })
        .collect();
    store
        .upsert(portal, Entity::Deal, &layout_v1, &rows)
        .await
        .unwrap();
    assert_eq!(column_type(&c, "uf_crm_new").await, None);

    // A new user field: a new column, filled from raw for the rows already stored.
    let mut v2 = v1.clone();
    v2.push(labelled(field("UF_CRM_NEW", "integer"), "Score"));
    let layout_v2 = store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    assert_eq!(
        column_type(&c, "uf_crm_new").await.as_deref(),
        Some("bigint")
    );
    let values: Vec<(i64, Option<i64>)> = query_rows(
        &c,
        &format!("SELECT id, uf_crm_new FROM b24.{t} ORDER BY id"),
        |r| (r.get(0), r.get(1)),
    )
    .await;
    assert_eq!(values, [(1, Some(10)), (2, Some(20)), (3, Some(30))]);
    // Re-reading the same rows changes nothing: the new column was already filled.
    let again = store
        .upsert(portal, Entity::Deal, &layout_v2, &rows)
        .await
        .unwrap();
    assert_eq!(again.unchanged, 3);

    // A removed field keeps its column and data; new rows leave it empty.
    let v3: Vec<_> = v2
        .iter()
        .filter(|f| f.code != "UF_CRM_OLD")
        .cloned()
        .collect();
    let layout_v3 = store.ensure_table(portal, Entity::Deal, &v3).await.unwrap();
    assert!(
        layout_v3
            .columns()
            .iter()
            .all(|col| col.name != "uf_crm_old")
    );
    store
        .upsert(
            portal,
            Entity::Deal,
            &layout_v3,
            &[row(
                json!({"ID": "4", "DATE_MODIFY": "2024-08-31T10:00:00+02:00"}),
            )],
        )
        .await
        .unwrap();
    let old: Vec<Option<String>> = query_rows(
        &c,
        &format!("SELECT uf_crm_old FROM b24.{t} ORDER BY id"),
        |r| r.get(0),
    )
    .await;
    assert_eq!(
        old,
        [
            Some("old 1".into()),
            Some("old 2".into()),
            Some("old 3".into()),
            None
        ]
    );
    let described = store.describe_columns(portal, Entity::Deal).await.unwrap();
    let removed = described.iter().find(|d| d.code == "UF_CRM_OLD").unwrap();
    assert!(removed.removed_at.is_some());
    assert_eq!(removed.column.as_deref(), Some("uf_crm_old"));
    let score = described.iter().find(|d| d.code == "UF_CRM_NEW").unwrap();
    assert_eq!(
        (score.label.as_deref(), score.column_type.as_deref()),
        (Some("Score"), Some("bigint"))
    );
    assert_eq!(
        described.last().unwrap().code,
        "UF_CRM_OLD",
        "removed fields are listed last"
    );

    // A retyped field widens its column to text; values survive, re-derived from raw.
    let mut v4 = v3.clone();
    v4.iter_mut()
        .find(|f| f.code == "UF_CRM_NEW")
        .unwrap()
        .bitrix_type = "string".into();
    let layout_v4 = store.ensure_table(portal, Entity::Deal, &v4).await.unwrap();
    assert_eq!(column_type(&c, "uf_crm_new").await.as_deref(), Some("text"));
    let text: Vec<Option<String>> = query_rows(
        &c,
        &format!("SELECT uf_crm_new FROM b24.{t} ORDER BY id"),
        |r| r.get(0),
    )
    .await;
    assert_eq!(
        text,
        [
            Some("10".into()),
            Some("20".into()),
            Some("30".into()),
            None
        ]
    );
    store
        .upsert(
            portal,
            Entity::Deal,
            &layout_v4,
            &[row(
                json!({"ID": "5", "DATE_MODIFY": "2024-09-01T10:00:00+02:00", "UF_CRM_NEW": "n/a"}),
            )],
        )
        .await
        .unwrap();

    // Back to integer: the column is never narrowed, so "n/a" stays.
    let layout_v5 = store.ensure_table(portal, Entity::Deal, &v2).await.unwrap();
    let col = layout_v5
        .columns()
        .iter()
        .find(|col| col.name == "uf_crm_new")
        .unwrap();
    assert_eq!(col.column_type, ColumnType::Text);
    assert_eq!(column_type(&c, "uf_crm_new").await.as_deref(), Some("text"));
    let kept: String = scalar(&c, &format!("SELECT uf_crm_new FROM b24.{t} WHERE id = 5")).await;
    assert_eq!(kept, "n/a");
    let count: i64 = scalar(&c, "SELECT count(*) FROM b24.deal").await;
    assert_eq!(count, 5);

    // A layout from before the widening still writes (bigint values into the text column).
    store
        .upsert(
            portal,
            Entity::Deal,
            &layout_v2,
            &[row(
                json!({"ID": "6", "DATE_MODIFY": "2024-09-01T10:00:00+02:00", "UF_CRM_NEW": "7"}),
            )],
        )
        .await
        .unwrap();
    let seven: String = scalar(&c, &format!("SELECT uf_crm_new FROM b24.{t} WHERE id = 6")).await;
    assert_eq!(seven, "7");
}

#[tokio::test]
async fn hostile_field_names_are_rejected_and_keywords_are_quoted() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let hostile = [
        "UF_CRM_X\"; DROP TABLE b24.deal; --",
        "UF_CRM_Y) ; DELETE FROM b24._fields; --",
        "UF_CRM_Z' OR '1'='1",
        "RAW",
        "portal",
        "DELETED_AT",
        &format!("UF_CRM_{}", "L".repeat(60)),
        "UF_CRM_DUP",
        "uf_crm_dup",
    ];
    let mut fields = vec![
        field("ID", "integer"),
        field("DATE_MODIFY", "datetime"),
        field("SELECT", "string"),
        field("ORDER", "integer"),
    ];
    fields.extend(hostile.iter().map(|code| field(code, "string")));
    let layout = store
        .ensure_table("a.bitrix24.com", Entity::Deal, &fields)
        .await
        .unwrap();
    let rejected: Vec<&str> = layout.skipped_fields().iter().map(String::as_str).collect();
    let expected: Vec<&str> = hostile
        .iter()
        .copied()
        .filter(|c| *c != "UF_CRM_DUP")
        .collect();
    assert_eq!(rejected, expected);

    let mut record = json!({"ID": "1", "DATE_MODIFY": "2024-08-30T14:29:00+02:00", "SELECT": "s", "ORDER": "7", "UF_CRM_DUP": "d"});
    for code in &hostile[..3] {
        record[*code] = json!("payload");
    }
    store
        .upsert("a.bitrix24.com", Entity::Deal, &layout, &[row(record)])
        .await
        .unwrap();

    let c = db.client().await;
    let t = portal_table(&c, "a.bitrix24.com", Entity::Deal).await;
    let r = c
        .query_one(
            &format!("SELECT \"select\", \"order\", uf_crm_dup, raw FROM b24.{t}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2)
        ),
        ("s".into(), 7, "d".into())
    );
    assert_eq!(
        r.get::<_, Value>(3)[hostile[0]],
        json!("payload"),
        "rejected fields stay in raw"
    );
    let fields_left: i64 = scalar(&c, "SELECT count(*) FROM b24._fields").await;
    assert_eq!(fields_left as usize, fields.len());
    let described = store
        .describe_columns("a.bitrix24.com", Entity::Deal)
        .await
        .unwrap();
    let x = described.iter().find(|d| d.code == hostile[0]).unwrap();
    assert!(x.column.is_none() && x.rejected_reason.is_some());
    let dup = described.iter().find(|d| d.code == "uf_crm_dup").unwrap();
    assert!(
        dup.rejected_reason
            .as_deref()
            .unwrap()
            .contains("UF_CRM_DUP"),
        "{dup:?}"
    );
}

#[tokio::test]
async fn the_schema_name_is_configurable_and_validated() {
    let db = TestDb::create().await;
    let store = Store::connect(&db.url, "crm_mirror").await.unwrap();
    store.migrate().await.unwrap();
    store
        .ensure_table(
            "p",
            Entity::Company,
            &[field("ID", "integer"), field("TITLE", "string")],
        )
        .await
        .unwrap();
    let c = db.client().await;
    let tables: i64 = scalar(&c, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'crm_mirror'
               AND table_name IN ('company', '_fields', '_field_items', '_sync_state', '_sync_runs', '_rate_limit')").await;
    assert_eq!(tables, 6);
    for bad in ["b24\"; drop schema public; --", "B24", "pg_temp", ""] {
        let err = Store::connect(&db.url, bad).await.unwrap_err();
        assert!(err.to_string().contains("invalid schema name"), "{err}");
    }
}
