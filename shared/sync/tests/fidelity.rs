//! Portal fidelity end to end: what a real portal sends for date fields, empty values,
//! fields it describes but never returns, file fields and two changes within one
//! second, from the simulator through the sync into PostgreSQL.

mod common;

use std::time::Duration;

use b24_client::Client;
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::{MutateRequest, SimConfig, UserFieldType};
use b24_sync::{SyncOptions, SyncSummary, Syncer};
use common::*;
use serde_json::{Map, Value, json};

fn portal(utc_offset_secs: i32) -> SimConfig {
    SimConfig {
        seed: 11,
        deals: 40,
        contacts: 30,
        leads: 10,
        companies: 20,
        utc_offset_secs,
        ..SimConfig::default()
    }
}

/// Runs `mode` for `entity` with the default options; the run must succeed.
async fn sync(syncer: &Syncer<'_>, entity: Entity, mode: Mode) -> SyncSummary {
    syncer
        .run(entity, mode, &SyncOptions::default())
        .await
        .unwrap()
}

async fn call(client: &Client, method: &str, params: Value) -> Value {
    client
        .call(method, &params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
        .result
}

/// Adds a record through `method` (`crm.deal.add`, ...) and returns its ID.
async fn add(client: &Client, method: &str, fields: Value) -> u64 {
    let id = call(client, method, json!({ "fields": fields })).await;
    id.as_u64()
        .unwrap_or_else(|| panic!("{method} answered {id}"))
}

/// The test portal's table of `entity`, schema-qualified.
async fn table(db: &TestDb, entity: Entity) -> String {
    format!("{SCHEMA}.\"{}\"", table_name(db, entity).await)
}

/// `columns` of one mirror row as PostgreSQL prints them (`NULL` is `None`).
async fn row_text(db: &TestDb, entity: Entity, id: u64, columns: &[&str]) -> Vec<Option<String>> {
    let list: Vec<String> = columns.iter().map(|c| format!("\"{c}\"::text")).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE portal = $1 AND id = $2",
        list.join(", "),
        table(db, entity).await
    );
    let row = db
        .client()
        .await
        .query_one(&sql, &[&PORTAL, &(id as i64)])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (0..columns.len()).map(|i| row.get(i)).collect()
}

/// The mirror's columns of `entity` with their PostgreSQL types, system columns aside.
async fn typed_columns(db: &TestDb, entity: Entity) -> Vec<(String, String)> {
    db.client()
        .await
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 \
             AND column_name NOT IN ('portal', 'id', 'raw', 'date_modify', 'synced_at', 'deleted_at') \
             ORDER BY ordinal_position",
            &[&SCHEMA, &table_name(db, entity).await],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// How the documented portal shows the date field holding `date`: midnight UTC in the
/// portal's offset.
fn rendered(date: &str, utc_offset_secs: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(utc_offset_secs).unwrap();
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[tokio::test]
async fn date_fields_are_their_calendar_dates_east_and_west_of_utc() {
    for offset in [2 * 3600, -3 * 3600, 0, 14 * 3600, -(9 * 3600 + 1800)] {
        let (db, store, sim, client) = setup(portal(offset)).await;
        let syncer = syncer(&client, &store);
        let single = add_deal_field(&sim, UserFieldType::Date, false, None).await;
        let multiple = add_deal_field(&sim, UserFieldType::Date, true, None).await;
        let deal = add(
            &client,
            "crm.deal.add",
            json!({
                "TITLE": "dated", "BEGINDATE": "2024-08-30", "CLOSEDATE": "2024-01-01",
                single.clone(): "2024-02-29", multiple.clone(): ["2024-08-30", "2023-12-31"],
            }),
        )
        .await;
        let contact = add(
            &client,
            "crm.contact.add",
            json!({"NAME": "Born", "BIRTHDATE": "1990-06-15"}),
        )
        .await;
        for entity in [Entity::Deal, Entity::Contact] {
            sync(&syncer, entity, Mode::Full).await;
            assert_typed_columns_match_raw(&db, entity).await;
        }

        // The portal sent the documented form (so the local date part was a day early
        // west of UTC), and the mirror holds the dates that were written.
        let raw = mirror_records(&db, Entity::Deal)
            .await
            .remove(&deal)
            .unwrap();
        assert_eq!(
            raw["BEGINDATE"],
            json!(rendered("2024-08-30", offset)),
            "{offset}"
        );
        assert_eq!(
            raw[&multiple],
            json!([
                rendered("2024-08-30", offset),
                rendered("2023-12-31", offset)
            ])
        );
        let columns = [
            "begindate",
            "closedate",
            &single.to_ascii_lowercase(),
            &multiple.to_ascii_lowercase(),
        ];
        assert_eq!(
            row_text(&db, Entity::Deal, deal, &columns).await,
            [
                Some("2024-08-30".into()),
                Some("2024-01-01".into()),
                Some("2024-02-29".into()),
                Some(r#"["2024-08-30", "2023-12-31"]"#.into()),
            ],
            "offset {offset}"
        );
        assert_eq!(
            row_text(&db, Entity::Contact, contact, &["birthdate"]).await,
            [Some("1990-06-15".into())],
            "offset {offset}"
        );
    }
}

#[tokio::test]
async fn empty_values_are_null_whether_listed_as_null_or_got_as_blank() {
    let (db, store, sim, client) = setup(portal(-3 * 3600)).await;
    let syncer = syncer(&client, &store);
    let mut single_fields = Vec::new();
    // Every type with a typed column (a string field's column is text, as it is).
    for field_type in UserFieldType::ALL {
        if field_type == UserFieldType::String {
            continue;
        }
        single_fields.push(add_deal_field(&sim, field_type, false, None).await);
    }
    for field_type in [
        UserFieldType::Date,
        UserFieldType::Enumeration,
        UserFieldType::Money,
    ] {
        add_deal_field(&sim, field_type, true, None).await;
    }
    // A deal with nothing but a title: its user fields are empty.
    let id = add(&client, "crm.deal.add", json!({"TITLE": "bare"})).await;
    sync(&syncer, Entity::Deal, Mode::Full).await;

    // Every typed column whose field came empty (absent, null or "") is NULL.
    let typed: Vec<(String, String)> = typed_columns(&db, Entity::Deal)
        .await
        .into_iter()
        .filter(|(_, data_type)| data_type != "text")
        .collect();
    let names: Vec<&str> = typed.iter().map(|(n, _)| n.as_str()).collect();
    let check = |record: &Map<String, Value>, stored: Vec<Option<String>>, read: &str| {
        let mut checked = Vec::new();
        for ((name, data_type), stored) in typed.iter().zip(stored) {
            let value = record.get(&name.to_ascii_uppercase());
            if matches!(value, None | Some(Value::Null)) || value == Some(&json!("")) {
                assert_eq!(stored, None, "{read}: {name} ({data_type}) from {value:?}");
                checked.push(name.clone());
            }
        }
        for code in &single_fields {
            let name = code.to_ascii_lowercase();
            assert!(
                checked.contains(&name),
                "{read}: {name} was not empty: {checked:?}"
            );
        }
    };
    let listed = mirror_records(&db, Entity::Deal).await.remove(&id).unwrap();
    let nulls = single_fields
        .iter()
        .filter(|c| listed.get(*c) == Some(&Value::Null))
        .count();
    assert!(
        nulls >= 8,
        "list answers empty user fields with null: {listed:?}"
    );
    check(
        &listed,
        row_text(&db, Entity::Deal, id, &names).await,
        "list",
    );

    // As `get` answers: "" where the list had null. The store takes the record (same
    // DATE_MODIFY, different record) and every typed column stays NULL.
    let got = call(&client, "crm.deal.get", json!({"id": id})).await;
    let got = got.as_object().unwrap().clone();
    let blanks = single_fields
        .iter()
        .filter(|c| got.get(*c) == Some(&json!("")))
        .count();
    assert!(
        blanks >= 8,
        "get answers empty user fields with \"\": {got:?}"
    );
    let layout = deal_layout(&client, &store).await;
    let written = store
        .upsert(PORTAL, Entity::Deal, &layout, std::slice::from_ref(&got))
        .await
        .unwrap();
    assert_eq!((written.updated, written.invalid_values), (1, 0));
    check(&got, row_text(&db, Entity::Deal, id, &names).await, "get");

    // An empty date field is listed as "".
    let contact = add(&client, "crm.contact.add", json!({"NAME": "Ageless"})).await;
    sync(&syncer, Entity::Contact, Mode::Full).await;
    let raw = mirror_records(&db, Entity::Contact)
        .await
        .remove(&contact)
        .unwrap();
    assert_eq!(raw.get("BIRTHDATE"), Some(&json!("")));
    assert_eq!(
        row_text(&db, Entity::Contact, contact, &["birthdate"]).await,
        [None]
    );
}

#[tokio::test]
async fn fields_never_returned_and_file_fields_settle_without_churn() {
    let (db, store, _sim, client) = setup(portal(3 * 3600)).await;
    let syncer = syncer(&client, &store);
    // The deal fields describe CONTACT_IDS (multiple, never returned by list or get)
    // and mark deprecated fields with `isDeprecated`.
    let described = call(&client, "crm.deal.fields", json!({})).await;
    assert_eq!(described["CONTACT_IDS"]["isMultiple"], json!(true));
    assert!(
        described
            .as_object()
            .unwrap()
            .values()
            .any(|d| d.get("isDeprecated") == Some(&json!(true))),
        "no deal field is marked deprecated"
    );
    let linked = add(
        &client,
        "crm.deal.add",
        json!({"TITLE": "linked", "CONTACT_IDS": [3, 5]}),
    )
    .await;

    for entity in [Entity::Deal, Entity::Contact, Entity::Company] {
        let first = sync(&syncer, entity, Mode::Full).await;
        assert!(
            first.completed && first.skipped_fields.is_empty(),
            "{first:?}"
        );
        assert_typed_columns_match_raw(&db, entity).await;
        // Nothing changed on the portal: later runs read every row again (the seeded
        // rows are recent, inside the incremental overlap) and write none of them.
        for mode in [Mode::Incremental, Mode::Incremental, Mode::Full] {
            let again = sync(&syncer, entity, mode).await;
            assert!(again.rows_read > 0, "{entity} {mode}: {again:?}");
            assert_eq!(
                (again.rows_inserted, again.rows_updated, again.rows_deleted),
                (0, 0, 0),
                "{entity} {mode}: nothing changed on the portal"
            );
        }
    }

    // CONTACT_IDS is selected by name and never comes back: its column exists, typed
    // jsonb, and stays NULL; the deal's links arrive through CONTACT_ID.
    let deal_types: std::collections::BTreeMap<String, String> =
        typed_columns(&db, Entity::Deal).await.into_iter().collect();
    assert_eq!(
        deal_types.get("contact_ids").map(String::as_str),
        Some("jsonb")
    );
    let raw = mirror_records(&db, Entity::Deal)
        .await
        .remove(&linked)
        .unwrap();
    assert!(!raw.contains_key("CONTACT_IDS"), "{raw:?}");
    assert_eq!(raw["CONTACT_ID"], json!("3"));
    let filled: i64 = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(contact_ids) FROM {} WHERE portal = $1",
                table(&db, Entity::Deal).await
            ),
            &[&PORTAL],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(filled, 0);

    // Standard file fields are jsonb holding the portal's file object, raw kept.
    for (entity, code) in [(Entity::Contact, "PHOTO"), (Entity::Company, "LOGO")] {
        let name = code.to_ascii_lowercase();
        let types: std::collections::BTreeMap<String, String> =
            typed_columns(&db, entity).await.into_iter().collect();
        assert_eq!(
            types.get(&name).map(String::as_str),
            Some("jsonb"),
            "{entity}.{name}"
        );
        let files: i64 = db
            .client()
            .await
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE portal = $1 \
                     AND jsonb_typeof({name}) = 'object' AND {name} = raw->'{code}' \
                     AND {name} ? 'id' AND {name} ? 'downloadUrl'",
                    table(&db, entity).await
                ),
                &[&PORTAL],
            )
            .await
            .unwrap()
            .get(0);
        assert!(files > 0, "no {entity} has a {code} file object");
    }
}

/// Waits until just after the start of the next wall-clock second (the simulator's
/// DATE_MODIFY has whole seconds of the real clock).
async fn start_of_next_second() {
    let into = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1_000 - into) + 10)).await;
}

async fn date_modify(client: &Client, id: u64) -> String {
    let deal = call(client, "crm.deal.get", json!({"id": id})).await;
    deal["DATE_MODIFY"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_second_change_within_the_same_second_reaches_the_mirror() {
    let (db, store, sim, client) = setup(portal(-5 * 3600)).await;
    let syncer = syncer(&client, &store);
    sync(&syncer, Entity::Deal, Mode::Full).await;
    // No overlap: the cursor itself must be inclusive (`>=DATE_MODIFY`).
    let no_overlap = SyncOptions {
        overlap: chrono::Duration::zero(),
        ..SyncOptions::default()
    };
    let incremental_without_overlap = || async {
        let run = syncer.run(Entity::Deal, Mode::Incremental, &no_overlap);
        run.await.unwrap()
    };
    let id = 7;

    // Read between two changes of one second: the first change is mirrored, the second
    // one has the same DATE_MODIFY. Retried when a run straddles a second boundary.
    let mut raced = false;
    for attempt in 0..10 {
        start_of_next_second().await;
        let first = format!("first {attempt}");
        call(
            &client,
            "crm.deal.update",
            json!({"id": id, "fields": {"TITLE": first}}),
        )
        .await;
        incremental_without_overlap().await;
        let mirrored = row_text(&db, Entity::Deal, id, &["title"]).await;
        call(
            &client,
            "crm.deal.update",
            json!({"id": id, "fields": {"TITLE": "second"}}),
        )
        .await;
        let after_second = date_modify(&client, id).await;
        let mirrored_at = mirror_records(&db, Entity::Deal).await[&id]["DATE_MODIFY"].clone();
        if mirrored == [Some(first)] && mirrored_at == json!(after_second) {
            raced = true;
            break;
        }
    }
    assert!(
        raced,
        "never managed two changes and a sync within one second"
    );
    let summary = incremental_without_overlap().await;
    assert_eq!(summary.rows_updated, 1, "{summary:?}");
    assert_eq!(
        row_text(&db, Entity::Deal, id, &["title"]).await,
        [Some("second".into())]
    );
    // Read again, it is as stored: nothing to write.
    let summary = incremental_without_overlap().await;
    assert_eq!((summary.rows_inserted, summary.rows_updated), (0, 0));

    // The simulator's seeded same-second repeats (both changes before any read) also
    // converge, through the default overlap.
    let request = MutateRequest {
        entity: b24_sim::Entity::Deal,
        seed: 5,
        adds: 0,
        updates: 20,
        deletes: 0,
    };
    let outcome = sim.mutate_with_repeats(&request, 0.5).await.unwrap();
    assert!(!outcome.repeated.is_empty());
    sync(&syncer, Entity::Deal, Mode::Incremental).await;
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}
