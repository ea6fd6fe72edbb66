//! Where a real portal differs from a naive API model (issue 7 and 8): dates at
//! either offset, empty values, fields described but never returned, `total` without
//! a count, one-second DATE_MODIFY, case-sensitive field names, exact-only filters,
//! and records hidden from the webhook's user by a role change.

mod common;

use b24_sim::{Entity, MutateRequest, SimConfig};
use common::*;
use serde_json::{Value, json};

fn at_offset(utc_offset_secs: i32) -> SimConfig {
    SimConfig {
        deals: 5,
        contacts: 5,
        companies: 3,
        leads: 3,
        user_fields: 10,
        limits: unlimited(),
        utc_offset_secs,
        ..SimConfig::default()
    }
}

async fn get(sim: &b24_sim::RunningSim, entity: &str, id: u64) -> Value {
    ok(sim, &format!("crm.{entity}.get"), json!({"id": id})).await["result"].clone()
}

#[tokio::test]
async fn dates_are_midnight_utc_in_the_portal_offset_at_positive_and_negative_offsets() {
    // Verbatim values from crm-deal-get.md (BEGINDATE, CLOSEDATE at +02:00) and
    // crm-contact-get.md (BIRTHDATE).
    let east = sim(at_offset(2 * 3600)).await;
    let west = sim(at_offset(-5 * 3600)).await;
    for (sim, begin, close, birth) in [
        (
            &east,
            "2024-08-30T02:00:00+02:00",
            "2024-09-09T02:00:00+02:00",
            "2001-11-11T02:00:00+02:00",
        ),
        (
            &west,
            "2024-08-29T19:00:00-05:00",
            "2024-09-08T19:00:00-05:00",
            "2001-11-10T19:00:00-05:00",
        ),
    ] {
        let date_uf = user_field(&fields_of(sim, "deal").await, Some("date"), false);
        let datetime_uf = user_field(&fields_of(sim, "deal").await, Some("datetime"), false);
        let id = ok(
            sim,
            "crm.deal.add",
            json!({"fields": {
                "BEGINDATE": "2024-08-30", "CLOSEDATE": "2024-09-09",
                date_uf.clone(): "2024-08-30", datetime_uf.clone(): "2024-08-30T14:29:00+02:00",
            }}),
        )
        .await["result"]
            .as_u64()
            .unwrap();
        let deal = get(sim, "deal", id).await;
        assert_eq!(deal["BEGINDATE"], begin);
        assert_eq!(deal["CLOSEDATE"], close);
        assert_eq!(deal[&date_uf], begin, "date user fields render alike");
        // Datetimes keep their instant, shown in the portal's offset.
        let expected_datetime = if begin.ends_with("+02:00") {
            "2024-08-30T14:29:00+02:00"
        } else {
            "2024-08-30T07:29:00-05:00"
        };
        assert_eq!(deal[&datetime_uf], expected_datetime);
        // What the portal renders is accepted back as the same date, and a date
        // filter finds the record at either offset.
        ok(
            sim,
            "crm.deal.update",
            json!({"id": id, "fields": {"BEGINDATE": deal["BEGINDATE"].clone()}}),
        )
        .await;
        assert_eq!(get(sim, "deal", id).await["BEGINDATE"], begin);
        assert_eq!(
            listed_ids(sim, "deal", json!({"BEGINDATE": "2024-08-30"})).await,
            vec![id]
        );
        let contact = ok(
            sim,
            "crm.contact.add",
            json!({"fields": {"NAME": "John", "BIRTHDATE": "2001-11-11"}}),
        )
        .await["result"]
            .as_u64()
            .unwrap();
        assert_eq!(get(sim, "contact", contact).await["BIRTHDATE"], birth);
    }
}

#[tokio::test]
async fn empty_values_render_as_the_portal_renders_them() {
    let sim = sim(at_offset(3 * 3600)).await;
    let fields = fields_of(&sim, "lead").await;
    let string_uf = user_field(&fields, Some("string"), false);
    let date_uf = user_field(&fields, Some("date"), false);
    let file_uf = user_field(&fields, Some("file"), false);
    let id = ok(
        &sim,
        "crm.lead.add",
        json!({"fields": {"TITLE": "empty", "BIRTHDATE": ""}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let lead = get(&sim, "lead", id).await;
    // Empty date and datetime fields are "".
    assert_eq!(lead["BIRTHDATE"], "");
    assert_eq!(lead["DATE_CLOSED"], "");
    // Other empty standard fields are null.
    assert_eq!(lead["COMMENTS"], Value::Null);
    // Empty user fields are "" in get, null in list; an empty single file field is absent.
    assert_eq!(lead[&string_uf], "");
    assert_eq!(lead[&date_uf], "");
    assert!(lead.get(&file_uf).is_none(), "{lead}");
    let listed = ok(
        &sim,
        "crm.lead.list",
        json!({"filter": {"ID": id}, "select": ["ID", "BIRTHDATE", "DATE_CLOSED", string_uf.clone(), date_uf.clone()]}),
    )
    .await["result"][0]
        .clone();
    assert_eq!(listed["BIRTHDATE"], "");
    assert_eq!(listed["DATE_CLOSED"], "");
    assert_eq!(listed[&string_uf], Value::Null);
    assert_eq!(listed[&date_uf], Value::Null);
    // A standard file field that is empty is null (crm-contact-get.md: "PHOTO": null).
    let contact = ok(&sim, "crm.contact.add", json!({"fields": {"NAME": "N"}})).await["result"]
        .as_u64()
        .unwrap();
    assert_eq!(get(&sim, "contact", contact).await["PHOTO"], Value::Null);
}

#[tokio::test]
async fn standard_fields_from_the_docs_are_described_and_link_lists_never_returned() {
    let sim = sim(at_offset(3 * 3600)).await;
    let deal = fields_of(&sim, "deal").await;
    assert_eq!(
        deal["CONTACT_IDS"],
        json!({"type": "crm_contact", "isRequired": false, "isReadOnly": false, "isImmutable": false, "isMultiple": true, "isDynamic": false, "title": "CONTACT_IDS"})
    );
    assert_eq!(deal["CONTACT_ID"]["isDeprecated"], true);
    assert!(deal["TITLE"].get("isDeprecated").is_none());
    let contact = fields_of(&sim, "contact").await;
    assert_eq!(contact["PHOTO"]["type"], "file");
    assert_eq!(contact["COMPANY_IDS"]["type"], "crm_company");
    assert_eq!(contact["COMPANY_IDS"]["isMultiple"], true);
    assert_eq!(contact["COMPANY_ID"]["isDeprecated"], true);
    assert_eq!(contact["LINK"]["type"], "crm_multifield");
    for name in [
        "ADDRESS",
        "ADDRESS_2",
        "ADDRESS_CITY",
        "ADDRESS_POSTAL_CODE",
        "ADDRESS_REGION",
        "ADDRESS_PROVINCE",
        "ADDRESS_COUNTRY",
        "ADDRESS_COUNTRY_CODE",
    ] {
        assert_eq!(contact[name]["type"], "string", "{name}");
    }
    assert_eq!(contact["ADDRESS_LOC_ADDR_ID"]["type"], "integer");
    let company = fields_of(&sim, "company").await;
    assert_eq!(company["LOGO"]["type"], "file");
    assert_eq!(company["BANKING_DETAILS"]["type"], "string");
    assert_eq!(company["REG_ADDRESS_CITY"]["type"], "string");
    assert_eq!(company["ADDRESS_LEGAL"]["type"], "string");
    assert_eq!(company["LINK"]["type"], "crm_multifield");
    let lead = fields_of(&sim, "lead").await;
    assert_eq!(lead["ADDRESS_CITY"]["type"], "string");
    assert_eq!(lead["CONTACT_IDS"]["isMultiple"], true);
    assert_eq!(lead["CONTACT_ID"]["isDeprecated"], true);
    assert_eq!(lead["LINK"]["type"], "crm_multifield");

    // CONTACT_IDS is accepted, drives CONTACT_ID, and never comes back, even selected.
    let id = ok(
        &sim,
        "crm.deal.add",
        json!({"fields": {"TITLE": "links", "CONTACT_IDS": [3, 2]}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let got = get(&sim, "deal", id).await;
    assert!(got.get("CONTACT_IDS").is_none());
    assert_eq!(got["CONTACT_ID"], "3");
    let listed = ok(
        &sim,
        "crm.deal.list",
        json!({"filter": {"ID": id}, "select": ["ID", "CONTACT_ID", "CONTACT_IDS"]}),
    )
    .await["result"][0]
        .clone();
    assert_eq!(listed, json!({"ID": id.to_string(), "CONTACT_ID": "3"}));
    let contact = ok(
        &sim,
        "crm.contact.list",
        json!({"select": ["ID", "COMPANY_IDS", "ADDRESS_CITY"], "start": -1}),
    )
    .await["result"][0]
        .clone();
    assert!(contact.get("COMPANY_IDS").is_none() && contact.get("ADDRESS_CITY").is_some());

    // Standard file fields render as the docs show file values: id and URLs.
    let photo = "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==";
    ok(
        &sim,
        "crm.contact.update",
        json!({"id": 1, "fields": {"PHOTO": {"fileData": ["me.gif", photo]}}}),
    )
    .await;
    let file = get(&sim, "contact", 1).await["PHOTO"].clone();
    let id = file["id"].as_u64().unwrap();
    assert_eq!(
        file["downloadUrl"],
        format!(
            "/bitrix/components/bitrix/crm.contact.show/show_file.php?auth=&ownerId=1&fieldName=PHOTO&dynamic=N&fileId={id}"
        )
    );
    assert!(
        file["showUrl"]
            .as_str()
            .unwrap()
            .contains("fieldName=PHOTO")
    );
}

#[tokio::test]
async fn lists_without_a_count_answer_total_zero_alone_and_in_batches() {
    let sim = sim_with(120, 0).await;
    let answer = ok(
        &sim,
        "batch",
        json!({"cmd": {
            "fast": "crm.deal.list?filter[>ID]=0&select[]=ID&start=-1",
            "counted": "crm.deal.list?select[]=ID&start=0",
        }}),
    )
    .await;
    assert_eq!(
        answer["result"]["result_total"],
        json!({"fast": 0, "counted": 120})
    );
    assert_eq!(answer["result"]["result_next"], json!({"counted": 50}));
}

#[tokio::test]
async fn date_modify_has_one_second_resolution() {
    let sim = sim_with(200, 0).await;
    // Two API updates of one record within one wall-clock second keep one DATE_MODIFY.
    let mut same_second = false;
    for attempt in 0..10 {
        let before = chrono::Utc::now().timestamp();
        ok(
            &sim,
            "crm.deal.update",
            json!({"id": 1, "fields": {"COMMENTS": format!("a{attempt}")}}),
        )
        .await;
        let first = get(&sim, "deal", 1).await["DATE_MODIFY"].clone();
        ok(
            &sim,
            "crm.deal.update",
            json!({"id": 1, "fields": {"COMMENTS": format!("b{attempt}")}}),
        )
        .await;
        let second = get(&sim, "deal", 1).await;
        if chrono::Utc::now().timestamp() == before {
            assert_eq!(second["DATE_MODIFY"], first);
            assert_eq!(second["COMMENTS"], format!("b{attempt}"));
            same_second = true;
            break;
        }
    }
    assert!(same_second, "ten tries never stayed within one second");

    // The control surface does it on purpose: a seeded share of the updated records
    // is changed twice within the same second.
    let request = MutateRequest {
        entity: Entity::Deal,
        seed: 5,
        adds: 0,
        updates: 40,
        deletes: 0,
    };
    let outcome = sim.mutate_with_repeats(&request, 0.5).await.unwrap();
    assert!(!outcome.repeated.is_empty() && outcome.repeated.len() < 40);
    assert!(
        outcome
            .repeated
            .iter()
            .all(|id| outcome.updated.contains(id))
    );
    let dump = sim.dump(Entity::Deal).await.unwrap();
    let modified = |id: &u64| {
        dump.iter()
            .find(|r| r["ID"].as_str().and_then(|s| s.parse().ok()) == Some(*id))
            .unwrap()["DATE_MODIFY"]
            .clone()
    };
    let stamps: std::collections::BTreeSet<String> = outcome
        .updated
        .iter()
        .map(|id| modified(id).as_str().unwrap().to_string())
        .collect();
    assert_eq!(stamps.len(), 1, "one mutation, one second: {stamps:?}");
    // Same seed, same records changed twice.
    sim.reset().await.unwrap();
    let again = sim.mutate_with_repeats(&request, 0.5).await.unwrap();
    assert_eq!(again.repeated, outcome.repeated);
    let none = sim.mutate_with_repeats(&request, 0.0).await.unwrap();
    assert!(none.repeated.is_empty());
    assert!(sim.mutate_with_repeats(&request, 1.5).await.is_err());
}

#[tokio::test]
async fn field_names_are_case_sensitive_but_parameter_names_are_not() {
    let sim = sim_with(60, 0).await;
    let list = |body: Value| {
        let sim = &sim;
        async move { ok(sim, "crm.deal.list", body).await }
    };
    // `>id` is no field: dropped silently, so it filters nothing.
    let lower = list(json!({"filter": {">id": 50}, "select": ["ID"], "start": -1})).await;
    assert_eq!(ids(&lower["result"])[0], 1);
    let upper = list(json!({"FILTER": {">ID": 50}, "SELECT": ["ID"], "START": -1})).await;
    assert_eq!(ids(&upper["result"]), (51..=60).collect::<Vec<_>>());
    // Lower-case select names are dropped (ID always comes back); order too.
    let row = list(json!({"select": ["id", "title", "TITLE"], "order": {"id": "DESC"}})).await;
    let first = row["result"][0].as_object().unwrap();
    assert_eq!(first.keys().collect::<Vec<_>>(), ["ID", "TITLE"]);
    assert_eq!(first["ID"], "1", "an unknown order key leaves ID ASC");
}

#[tokio::test]
async fn percent_is_exact_on_links_statuses_and_multifields_and_booleans_filter_by_1_0() {
    let sim = sim_with(0, 10).await;
    let bool_uf = user_field(&fields_of(&sim, "deal").await, Some("boolean"), false);
    let deal = |title: &str, stage: &str, contact: u64, flag: &str| json!({"fields": {"TITLE": title, "STAGE_ID": stage, "CONTACT_ID": contact, bool_uf.clone(): flag}});
    for body in [
        deal("Alpha", "PREPARATION", 1, "Y"),
        deal("Beta", "PREPAYMENT_INVOICE", 11, "N"),
        deal("Gamma", "WON", 12, "Y"),
    ] {
        ok(&sim, "crm.deal.add", body).await;
    }
    let found = |filter: Value| listed_ids(&sim, "deal", filter);
    assert_eq!(
        found(json!({"%TITLE": "ph"})).await,
        vec![1],
        "contains on strings"
    );
    assert_eq!(
        found(json!({"%STAGE_ID": "PREPA"})).await,
        Vec::<u64>::new()
    );
    assert_eq!(found(json!({"%STAGE_ID": "PREPARATION"})).await, vec![1]);
    assert_eq!(
        found(json!({"%CONTACT_ID": 1})).await,
        vec![1],
        "not 11 or 12"
    );
    assert_eq!(found(json!({"!%CONTACT_ID": 1})).await, vec![2, 3]);
    assert_eq!(found(json!({bool_uf.clone(): 1})).await, vec![1, 3]);
    assert_eq!(found(json!({bool_uf.clone(): "0"})).await, vec![2]);
    assert_eq!(
        found(json!({bool_uf.clone(): "Y"})).await,
        Vec::<u64>::new()
    );
    let mut added = Vec::new();
    for (name, phone) in [("A", "+15550001"), ("B", "+15550002")] {
        let answer = ok(
            &sim,
            "crm.contact.add",
            json!({"fields": {"NAME": name, "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}]}}),
        )
        .await;
        added.push(answer["result"].as_u64().unwrap());
    }
    let contacts = |filter: Value| listed_ids(&sim, "contact", filter);
    assert_eq!(
        contacts(json!({"PHONE": "+15550002"})).await,
        vec![added[1]]
    );
    assert_eq!(
        contacts(json!({"%PHONE": "+15550"})).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        contacts(json!({"%PHONE": "+15550001"})).await,
        vec![added[0]]
    );
}

#[tokio::test]
async fn start_rounds_down_to_a_page() {
    let sim = sim_with(120, 0).await;
    let page = ok(
        &sim,
        "crm.deal.list",
        json!({"select": ["ID"], "start": 75}),
    )
    .await;
    assert_eq!(ids(&page["result"]), (51..=100).collect::<Vec<_>>());
    assert_eq!(page["next"], 100);
    let page = ok(
        &sim,
        "crm.deal.list",
        json!({"select": ["ID"], "start": 49}),
    )
    .await;
    assert_eq!(ids(&page["result"])[0], 1);
    assert_eq!(page["next"], 50);
}

#[tokio::test]
async fn a_role_change_hides_records_from_the_webhook_user_until_switched_off() {
    let sim = sim_with(1_000, 0).await;
    let hidden = sim.hide_records(Entity::Deal, 0.9, 7).await.unwrap();
    assert!((850..=950).contains(&hidden), "{hidden} of 1000 hidden");
    // Every page of a full listing: only the visible records.
    let mut seen = Vec::new();
    let mut last = 0;
    loop {
        let page = ok(
            &sim,
            "crm.deal.list",
            json!({"filter": {">ID": last}, "select": ["ID"], "order": {"ID": "ASC"}, "start": -1}),
        )
        .await;
        let rows = ids(&page["result"]);
        seen.extend(&rows);
        if rows.len() < 50 {
            break;
        }
        last = *rows.last().unwrap();
    }
    assert_eq!(seen.len(), 1_000 - hidden);
    let counted = ok(&sim, "crm.deal.list", json!({"select": ["ID"]})).await;
    assert_eq!(counted["total"], 1_000 - hidden);
    // A hidden record answers as the old API does for a record the user may not read.
    let hidden_id = (1..=1_000u64).find(|id| !seen.contains(id)).unwrap();
    let denied = json!({"error": "", "error_description": "Access denied."});
    for (method, body) in [
        ("crm.deal.get", json!({"id": hidden_id})),
        (
            "crm.deal.update",
            json!({"id": hidden_id, "fields": {"TITLE": "x"}}),
        ),
        ("crm.deal.delete", json!({"id": hidden_id})),
        ("crm.deal.productrows.get", json!({"id": hidden_id})),
    ] {
        assert_eq!(
            call(&sim, method, body).await,
            (400, denied.clone()),
            "{method}"
        );
    }
    ok(&sim, "crm.deal.get", json!({"id": seen[0]})).await;
    // The records still exist: the dump (the portal's own view) has them all.
    assert_eq!(sim.dump(Entity::Deal).await.unwrap().len(), 1_000);
    // The same seed hides the same records; other entities are untouched.
    assert_eq!(
        sim.hide_records(Entity::Deal, 0.9, 7).await.unwrap(),
        hidden
    );
    let contacts = ok(&sim, "crm.contact.list", json!({"select": ["ID"]})).await;
    assert_eq!(contacts["total"], 20);
    // Switched off, everything is visible again.
    assert_eq!(sim.hide_records(Entity::Deal, 0.0, 7).await.unwrap(), 0);
    let all = ok(&sim, "crm.deal.list", json!({"select": ["ID"]})).await;
    assert_eq!(all["total"], 1_000);
    ok(&sim, "crm.deal.get", json!({"id": hidden_id})).await;
    assert!(sim.hide_records(Entity::Deal, 1.5, 7).await.is_err());
}
