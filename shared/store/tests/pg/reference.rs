//! Reference tables and product rows: a refresh writes new and changed rows, removes
//! what the portal no longer has, and leaves other portals (and other owners) alone.

use b24_store::{ReferenceTable, Replaced};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_reference_table_is_replaced_per_portal_and_entity_type() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let categories = |rows: serde_json::Value| -> Vec<b24_store::Row> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| row(r.clone()))
            .collect()
    };
    let deals = ReferenceTable::Categories { entity_type_id: 2 };
    let first = categories(json!([
        {"id": 0, "name": "General", "sort": 300, "entityTypeId": 2, "isDefault": "Y"},
        {"id": 9, "name": "Partners", "sort": 200, "entityTypeId": 2, "isDefault": "N"},
    ]));
    assert_eq!(
        store
            .replace_reference("acme", deals, &first)
            .await
            .unwrap(),
        Replaced {
            written: 2,
            removed: 0,
            invalid: 0
        }
    );
    // Another portal's and another type's funnels are another list.
    store
        .replace_reference("other", deals, &first[..1])
        .await
        .unwrap();
    let smart = ReferenceTable::Categories {
        entity_type_id: 1038,
    };
    store
        .replace_reference(
            "acme",
            smart,
            &categories(json!([{"id": 4, "name": "Orders"}])),
        )
        .await
        .unwrap();
    // Partners renamed, General gone, a new one; a row without its key is left out.
    let second = categories(json!([
        {"id": 9, "name": "Key partners", "sort": 200, "isDefault": "N"},
        {"id": 11, "name": "Resellers", "sort": "250", "isDefault": "N"},
        {"id": 9, "name": "Key partners", "sort": 200, "isDefault": "N"},
        {"name": "no id"},
    ]));
    let replaced = store
        .replace_reference("acme", deals, &second[..2])
        .await
        .unwrap();
    assert_eq!(
        replaced,
        Replaced {
            written: 2,
            removed: 1,
            invalid: 0
        }
    );
    let unchanged = store
        .replace_reference("acme", deals, &second[2..])
        .await
        .unwrap();
    assert_eq!(
        (unchanged.written, unchanged.invalid),
        (0, 1),
        "{unchanged:?}"
    );
    let rows: Vec<(String, i32, i64, String, Option<bool>)> = query_rows(
        &c,
        "SELECT portal, entity_type_id, id, name, is_default FROM b24.crm_category ORDER BY portal, entity_type_id, id",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
    )
    .await;
    assert_eq!(
        rows,
        [
            ("acme".into(), 2, 9, "Key partners".into(), Some(false)),
            ("acme".into(), 1038, 4, "Orders".into(), None),
            ("other".into(), 2, 0, "General".into(), Some(true)),
        ]
    );
}

#[tokio::test]
async fn statuses_currencies_and_users_keep_their_typed_columns() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let statuses = vec![
        row(
            json!({"ID": "101", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "New", "SORT": "10",
                   "CATEGORY_ID": null, "SEMANTICS": null, "COLOR": "#39A8EF", "EXTRA": {"SEMANTICS": "process"}}),
        ),
        row(
            json!({"ID": "102", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Won", "SORT": "60",
                   "SEMANTICS": "S"}),
        ),
        row(
            json!({"ID": "103", "ENTITY_ID": "DEAL_STAGE_9", "STATUS_ID": "C9:NEW", "NAME": "New", "CATEGORY_ID": "9"}),
        ),
    ];
    store
        .replace_reference("acme", ReferenceTable::Statuses, &statuses)
        .await
        .unwrap();
    let semantics: Vec<(String, Option<String>, Option<i64>)> = query_rows(
        &c,
        "SELECT status_id, semantics, category_id FROM b24.crm_status ORDER BY entity_id, status_id",
        |r| (r.get(0), r.get(1), r.get(2)),
    )
    .await;
    assert_eq!(
        semantics,
        [
            ("NEW".into(), Some("process".into()), None),
            ("WON".into(), Some("S".into()), None),
            ("C9:NEW".into(), None, Some(9)),
        ]
    );
    store
        .replace_reference(
            "acme",
            ReferenceTable::Currencies,
            &[row(json!({"CURRENCY": "EUR", "FULL_NAME": "Euro", "BASE": "Y", "AMOUNT": "1.0000", "AMOUNT_CNT": 1, "SORT": "100"}))],
        )
        .await
        .unwrap();
    let base: (bool, String) =
        scalar_pair(&c, "SELECT is_base, amount::text FROM b24.crm_currency").await;
    assert_eq!(base, (true, "1.0000".into()));
    store
        .replace_reference(
            "acme",
            ReferenceTable::Users,
            &[row(json!({"ID": "1", "ACTIVE": true, "NAME": "Anna", "LAST_NAME": "Berg", "EMAIL": "a@example.com",
                         "WORK_POSITION": "Sales", "UF_DEPARTMENT": [1]}))],
        )
        .await
        .unwrap();
    let user: (bool, String) = scalar_pair(
        &c,
        "SELECT active, last_name FROM b24.bitrix_user WHERE id = 1",
    )
    .await;
    assert_eq!(user, (true, "Berg".into()));
}

#[tokio::test]
async fn an_owners_product_rows_are_replaced_and_other_owners_stay() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let product = |id: u64, owner: u64, name: &str| {
        row(
            json!({"id": id, "ownerId": owner, "ownerType": "D", "productId": 0, "productName": name,
                   "price": 90000, "quantity": 3, "discountRate": 10, "discountSum": 9090.90909091,
                   "taxRate": null, "taxIncluded": "Y", "measureCode": 796, "measureName": "pcs", "sort": 10}),
        )
    };
    store
        .replace_product_rows(
            "acme",
            "D",
            &[1, 2],
            &[
                product(11, 1, "a"),
                product(12, 1, "b"),
                product(21, 2, "c"),
            ],
        )
        .await
        .unwrap();
    // Deal 1 lost row 12 and changed row 11; deal 2 was not asked about.
    let replaced = store
        .replace_product_rows("acme", "D", &[1], &[product(11, 1, "a2")])
        .await
        .unwrap();
    assert_eq!((replaced.written, replaced.removed), (1, 1));
    // A deal whose rows are all gone.
    let emptied = store
        .replace_product_rows("acme", "D", &[2], &[])
        .await
        .unwrap();
    assert_eq!(emptied.removed, 1);
    let rows: Vec<(i64, i64, String, String, Option<bool>)> = query_rows(
        &c,
        "SELECT id, owner_id, product_name, discount_sum::text, tax_included FROM b24.product_row ORDER BY id",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
    )
    .await;
    assert_eq!(
        rows,
        [(11, 1, "a2".into(), "9090.90909091".into(), Some(true))]
    );
}

#[tokio::test]
async fn stage_history_is_appended_per_portal_and_entity_type_and_read_on_from_its_newest_entry() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let deal_entry = |id: u64, owner: u64, type_id: u64, stage: &str| {
        row(json!({"ID": id, "TYPE_ID": type_id, "OWNER_ID": owner,
                   "CREATED_TIME": "2024-04-25T14:59:11+03:00", "CATEGORY_ID": 0,
                   "STAGE_SEMANTIC_ID": "P", "STAGE_ID": stage}))
    };
    assert_eq!(store.last_stage_history_id("acme", 2).await.unwrap(), None);
    let first = store
        .append_stage_history(
            "acme",
            2,
            &[
                deal_entry(35, 21, 1, "NEW"),
                deal_entry(36, 21, 2, "PREPARATION"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(first.written, 2);
    // The same entries again (a read that overlapped) write nothing; a lead's entry has
    // STATUS_ID instead, kept in the same columns.
    let again = store
        .append_stage_history("acme", 2, &[deal_entry(36, 21, 2, "PREPARATION")])
        .await
        .unwrap();
    assert_eq!(again.written, 0);
    let lead = row(
        json!({"ID": 7, "TYPE_ID": 3, "OWNER_ID": 4, "CREATED_TIME": "2024-04-26T10:00:00+03:00",
                          "STATUS_SEMANTIC_ID": "S", "STATUS_ID": "CONVERTED"}),
    );
    store
        .append_stage_history("acme", 1, &[lead])
        .await
        .unwrap();
    store
        .append_stage_history("globex", 2, &[deal_entry(90, 1, 1, "NEW")])
        .await
        .unwrap();
    assert_eq!(
        store.last_stage_history_id("acme", 2).await.unwrap(),
        Some(36)
    );
    assert_eq!(
        store.last_stage_history_id("acme", 1).await.unwrap(),
        Some(7)
    );
    assert_eq!(
        store.last_stage_history_id("globex", 2).await.unwrap(),
        Some(90)
    );
    let rows: Vec<(i32, i64, i64, String, String, String)> = query_rows(
        &c,
        "SELECT entity_type_id, id, type_id, stage_id, stage_semantic_id, (created_time AT TIME ZONE 'UTC')::text
         FROM b24.stage_history WHERE portal = 'acme' ORDER BY entity_type_id, id",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)),
    )
    .await;
    assert_eq!(
        rows,
        [
            (
                1,
                7,
                3,
                "CONVERTED".into(),
                "S".into(),
                "2024-04-26 07:00:00".into()
            ),
            (
                2,
                35,
                1,
                "NEW".into(),
                "P".into(),
                "2024-04-25 11:59:11".into()
            ),
            (
                2,
                36,
                2,
                "PREPARATION".into(),
                "P".into(),
                "2024-04-25 11:59:11".into()
            ),
        ]
    );
}
