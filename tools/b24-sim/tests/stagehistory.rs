//! `crm.stagehistory.list`: the history the portal records itself (creations, stage and
//! pipeline moves of deals, leads and smart-process items), its filters, paging, batch
//! windows, errors and the `/_sim/stagehistory/{entityTypeId}` dump.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use b24_sim::{
    Entity, ItemMutateRequest, MutateRequest, RunningSim, SimConfig, SmartProcessConfig,
};
use common::{call, ok, sim, unlimited};
use serde_json::{Map, Value, json};

const ORDERS: u32 = 1038;

fn config(deals: usize, leads: usize) -> SimConfig {
    SimConfig {
        deals,
        leads,
        contacts: 5,
        companies: 5,
        deal_categories: vec!["Second".into()],
        smart_processes: vec![SmartProcessConfig {
            categories: vec!["Returns".into()],
            ..SmartProcessConfig::new(ORDERS, "Orders", 30)
        }],
        limits: unlimited(),
        ..SimConfig::default()
    }
}

/// One page of `crm.stagehistory.list`.
async fn history(sim: &RunningSim, body: Value) -> Value {
    ok(sim, "crm.stagehistory.list", body).await
}

fn items(answer: &Value) -> &Vec<Value> {
    answer["result"]["items"].as_array().expect("result.items")
}

fn keys(item: &Value) -> Vec<&str> {
    item.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn entry_ids(answer: &Value) -> Vec<u64> {
    items(answer)
        .iter()
        .map(|i| i["ID"].as_u64().unwrap())
        .collect()
}

/// Every entry the method lists for an entity type, page by page.
async fn list_all(sim: &RunningSim, entity_type_id: u32) -> Vec<Value> {
    let mut all = Vec::new();
    let mut start = 0;
    loop {
        let answer = history(sim, json!({"entityTypeId": entity_type_id, "start": start})).await;
        all.extend(items(&answer).iter().cloned());
        match answer["next"].as_u64() {
            Some(next) => start = next,
            None => return all,
        }
    }
}

/// The entries of one owner, by ID.
async fn of_owner(sim: &RunningSim, entity_type_id: u32, owner: u64) -> Vec<Value> {
    let answer = history(
        sim,
        json!({"entityTypeId": entity_type_id, "filter": {"OWNER_ID": owner}}),
    )
    .await;
    items(&answer).clone()
}

/// A pipeline's ID by name (`crm.category.list`).
async fn category_id(sim: &RunningSim, entity_type_id: u32, name: &str) -> i64 {
    let answer = ok(
        sim,
        "crm.category.list",
        json!({"entityTypeId": entity_type_id}),
    )
    .await;
    answer["result"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["id"].as_i64())
        .unwrap_or_else(|| panic!("no pipeline {name}"))
}

#[tokio::test]
async fn deal_lead_and_smart_process_entries_have_the_documented_shapes() {
    let sim = sim(config(3, 3)).await;
    let deals = history(&sim, json!({"entityTypeId": 2})).await;
    assert_eq!(deals["total"], json!(3));
    assert!(deals.get("next").is_none());
    common::assert_time_block(&deals["time"]);
    let deal = &items(&deals)[0];
    assert_eq!(
        keys(deal),
        [
            "ID",
            "TYPE_ID",
            "OWNER_ID",
            "CREATED_TIME",
            "CATEGORY_ID",
            "STAGE_SEMANTIC_ID",
            "STAGE_ID"
        ]
    );
    assert!(deal["ID"].is_u64() && deal["TYPE_ID"].is_u64() && deal["OWNER_ID"].is_u64());
    assert!(deal["CATEGORY_ID"].is_i64());
    assert!(deal["STAGE_ID"].is_string());
    assert!(["P", "S", "F"].contains(&deal["STAGE_SEMANTIC_ID"].as_str().unwrap()));
    assert!(
        deal["CREATED_TIME"].as_str().unwrap().ends_with("+03:00"),
        "{deal}"
    );

    let leads = history(&sim, json!({"entityTypeId": 1})).await;
    let lead = &items(&leads)[0];
    assert_eq!(
        keys(lead),
        [
            "ID",
            "TYPE_ID",
            "OWNER_ID",
            "CREATED_TIME",
            "STATUS_SEMANTIC_ID",
            "STATUS_ID"
        ]
    );

    let orders = history(&sim, json!({"entityTypeId": ORDERS})).await;
    assert_eq!(orders["total"], json!(30));
    let order = &items(&orders)[0];
    assert_eq!(keys(order), keys(deal));
    assert!(
        order["STAGE_ID"]
            .as_str()
            .unwrap()
            .starts_with(&format!("DT{ORDERS}_")),
        "{order}"
    );

    // `select` names the fields (in the method's order); `*` is every field.
    let some = history(
        &sim,
        json!({"entityTypeId": 2, "select": ["STAGE_ID", "ID", "CREATED_TIME"]}),
    )
    .await;
    assert_eq!(keys(&items(&some)[0]), ["ID", "CREATED_TIME", "STAGE_ID"]);
    let star = history(&sim, json!({"entityTypeId": 2, "select": ["*"]})).await;
    assert_eq!(keys(&items(&star)[0]).len(), 7);
}

#[tokio::test]
async fn seeded_records_have_one_creation_entry_each_at_their_creation_time() {
    let sim = sim(config(120, 40)).await;
    for (entity, entity_type_id, stage_key, count) in [
        (Entity::Deal, 2, "STAGE_ID", 120),
        (Entity::Lead, 1, "STATUS_ID", 40),
    ] {
        let records = sim.dump(entity).await.unwrap();
        let entries = list_all(&sim, entity_type_id).await;
        assert_eq!(entries.len(), count);
        for (n, (entry, record)) in entries.iter().zip(&records).enumerate() {
            assert_eq!(entry["ID"], json!(n + 1));
            assert_eq!(entry["TYPE_ID"], json!(1));
            assert_eq!(
                entry["OWNER_ID"].to_string(),
                record["ID"].as_str().unwrap()
            );
            assert_eq!(entry["CREATED_TIME"], record["DATE_CREATE"]);
            assert_eq!(entry[stage_key], record[stage_key]);
        }
    }
    // Deals spread over both pipelines: the entry carries the pipeline and its stage.
    let deals = sim.dump(Entity::Deal).await.unwrap();
    let entries = list_all(&sim, 2).await;
    let second = category_id(&sim, 2, "Second").await;
    assert!(entries.iter().any(|e| e["CATEGORY_ID"] == json!(second)));
    for (entry, deal) in entries.iter().zip(&deals) {
        assert_eq!(
            entry["CATEGORY_ID"].to_string(),
            deal["CATEGORY_ID"].as_str().unwrap()
        );
        assert_eq!(entry["STAGE_SEMANTIC_ID"], deal["STAGE_SEMANTIC_ID"]);
    }
    let items_dump = sim.dump_items(ORDERS, false).await.unwrap();
    let orders = list_all(&sim, ORDERS).await;
    assert_eq!(orders.len(), 30);
    for (entry, item) in orders.iter().zip(&items_dump) {
        assert_eq!(entry["OWNER_ID"], item["id"]);
        assert_eq!(entry["STAGE_ID"], item["stageId"]);
        assert_eq!(entry["CATEGORY_ID"], item["categoryId"]);
        assert_eq!(entry["CREATED_TIME"], item["createdTime"]);
    }
}

#[tokio::test]
async fn a_stage_change_through_crm_deal_update_appends_an_entry() {
    let sim = sim(SimConfig {
        deals: 5,
        leads: 5,
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await;
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 3, "fields": {"STAGE_ID": "NEW"}}),
    )
    .await;
    let before = of_owner(&sim, 2, 3).await.len();
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 3, "fields": {"STAGE_ID": "PREPARATION"}}),
    )
    .await;
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 3, "fields": {"TITLE": "No stage change"}}),
    )
    .await;
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 3, "fields": {"STAGE_ID": "WON"}}),
    )
    .await;
    let entries = of_owner(&sim, 2, 3).await;
    assert_eq!(entries.len(), before + 2, "{entries:?}");
    let moved = &entries[before];
    assert_eq!(
        (
            &moved["TYPE_ID"],
            &moved["STAGE_ID"],
            &moved["STAGE_SEMANTIC_ID"]
        ),
        (&json!(2), &json!("PREPARATION"), &json!("P"))
    );
    let won = &entries[before + 1];
    assert_eq!(
        (&won["TYPE_ID"], &won["STAGE_ID"], &won["STAGE_SEMANTIC_ID"]),
        (&json!(3), &json!("WON"), &json!("S"))
    );
    assert_eq!(won["CATEGORY_ID"], json!(0));
    // The deal shows the moment it moved; IDs keep increasing.
    let deal = ok(&sim, "crm.deal.get", json!({"id": 3})).await;
    assert_eq!(won["CREATED_TIME"], deal["result"]["MOVED_TIME"]);
    assert!(won["ID"].as_u64() > moved["ID"].as_u64());
    assert_eq!(won["ID"], json!(5 + before as u64 + 1));

    // Leads: the status, through crm.lead.update.
    ok(
        &sim,
        "crm.lead.update",
        json!({"id": 2, "fields": {"STATUS_ID": "IN_PROCESS"}}),
    )
    .await;
    ok(
        &sim,
        "crm.lead.update",
        json!({"id": 2, "fields": {"STATUS_ID": "JUNK"}}),
    )
    .await;
    let entries = of_owner(&sim, 1, 2).await;
    let last = &entries[entries.len() - 1];
    assert_eq!(
        (
            &last["TYPE_ID"],
            &last["STATUS_ID"],
            &last["STATUS_SEMANTIC_ID"]
        ),
        (&json!(3), &json!("JUNK"), &json!("F"))
    );
}

#[tokio::test]
async fn a_stage_change_through_crm_item_update_appends_an_entry() {
    let sim = sim(config(5, 0)).await;
    let general = category_id(&sim, ORDERS, "General").await;
    let stage = |code: &str| format!("DT{ORDERS}_{general}:{code}");
    // Into the default pipeline's first stage first, so the next moves are changes.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": 4, "fields": {"categoryId": general, "stageId": stage("NEW")}}),
    )
    .await;
    let before = of_owner(&sim, ORDERS, 4).await.len();
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": 4, "fields": {"stageId": stage("PREPARATION")}}),
    )
    .await;
    // Nothing changes: nothing recorded.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": 4, "fields": {"stageId": stage("PREPARATION")}}),
    )
    .await;
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": 4, "fields": {"stageId": stage("SUCCESS")}}),
    )
    .await;
    let entries = of_owner(&sim, ORDERS, 4).await;
    assert_eq!(entries.len(), before + 2, "{entries:?}");
    assert_eq!(entries[before]["TYPE_ID"], json!(2));
    assert_eq!(entries[before]["STAGE_ID"], json!(stage("PREPARATION")));
    let last = &entries[before + 1];
    assert_eq!(
        (
            &last["TYPE_ID"],
            &last["STAGE_SEMANTIC_ID"],
            &last["CATEGORY_ID"]
        ),
        (&json!(3), &json!("S"), &json!(general))
    );

    // Deals through the universal API too.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": 2, "fields": {"stageId": "EXECUTING"}}),
    )
    .await;
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": 2, "fields": {"stageId": "LOSE"}}),
    )
    .await;
    let entries = of_owner(&sim, 2, 2).await;
    let last = &entries[entries.len() - 1];
    assert_eq!(
        (
            &last["TYPE_ID"],
            &last["STAGE_ID"],
            &last["STAGE_SEMANTIC_ID"]
        ),
        (&json!(3), &json!("LOSE"), &json!("F"))
    );
}

#[tokio::test]
async fn a_funnel_change_gives_type_5_with_the_new_funnel_and_stage() {
    let sim = sim(config(4, 0)).await;
    let second = category_id(&sim, 2, "Second").await;
    // Deal 2 sits in the general pipeline (deal N goes to pipeline N mod 2).
    let before = of_owner(&sim, 2, 2).await.len();
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": 2, "fields": {"categoryId": second}}),
    )
    .await;
    let entries = of_owner(&sim, 2, 2).await;
    assert_eq!(entries.len(), before + 1);
    let moved = &entries[before];
    assert_eq!(
        (&moved["TYPE_ID"], &moved["CATEGORY_ID"], &moved["STAGE_ID"]),
        (&json!(5), &json!(second), &json!(format!("C{second}:NEW")))
    );
    assert_eq!(moved["STAGE_SEMANTIC_ID"], json!("P"));

    // A smart-process item to another pipeline.
    let returns = category_id(&sim, ORDERS, "Returns").await;
    let item = ok(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": ORDERS, "id": 1}),
    )
    .await;
    let target = if item["result"]["item"]["categoryId"] == json!(returns) {
        category_id(&sim, ORDERS, "General").await
    } else {
        returns
    };
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": 1, "fields": {"categoryId": target}}),
    )
    .await;
    let entries = of_owner(&sim, ORDERS, 1).await;
    let last = &entries[entries.len() - 1];
    assert_eq!(last["TYPE_ID"], json!(5));
    assert_eq!(last["CATEGORY_ID"], json!(target));
    assert_eq!(last["STAGE_ID"], json!(format!("DT{ORDERS}_{target}:NEW")));
}

#[tokio::test]
async fn mutate_records_additions_and_stage_changes_and_deletes_keep_history() {
    let sim = sim(config(60, 10)).await;
    let stages = |dump: &[Map<String, Value>]| -> BTreeMap<String, String> {
        dump.iter()
            .map(|d| {
                (
                    d["ID"].as_str().unwrap().to_string(),
                    d["STAGE_ID"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let before = stages(&sim.dump(Entity::Deal).await.unwrap());
    let entries_before = list_all(&sim, 2).await.len();
    let outcome = sim
        .mutate(&MutateRequest {
            entity: Entity::Deal,
            seed: 11,
            adds: 3,
            updates: 20,
            deletes: 2,
        })
        .await
        .unwrap();
    let after = stages(&sim.dump(Entity::Deal).await.unwrap());
    let moved: Vec<u64> = outcome
        .updated
        .iter()
        .copied()
        .filter(|id| before[&id.to_string()] != after[&id.to_string()])
        .collect();
    assert!(!moved.is_empty(), "some updates move the stage");
    let entries = list_all(&sim, 2).await;
    let new = &entries[entries_before..];
    assert_eq!(new.len(), 3 + moved.len(), "{new:?}");
    let created: Vec<u64> = new
        .iter()
        .filter(|e| e["TYPE_ID"] == json!(1))
        .map(|e| e["OWNER_ID"].as_u64().unwrap())
        .collect();
    assert_eq!(created, outcome.added);
    for id in &moved {
        let entry = new
            .iter()
            .find(|e| e["OWNER_ID"] == json!(id) && e["TYPE_ID"] != json!(1))
            .unwrap_or_else(|| panic!("no entry for deal {id}"));
        assert_eq!(entry["STAGE_ID"], json!(after[&id.to_string()]));
        let expected = if ["WON", "LOSE"]
            .iter()
            .any(|s| after[&id.to_string()].ends_with(s))
        {
            3
        } else {
            2
        };
        assert_eq!(entry["TYPE_ID"], json!(expected));
    }
    // Deleted deals keep their history.
    for id in &outcome.deleted {
        assert!(!of_owner(&sim, 2, *id).await.is_empty(), "deal {id}");
    }

    // Smart-process items through mutate by entityTypeId.
    let orders_before = list_all(&sim, ORDERS).await.len();
    let outcome = sim
        .mutate_items(&ItemMutateRequest {
            entity_type_id: ORDERS,
            seed: 5,
            adds: 2,
            updates: 10,
            ..ItemMutateRequest::default()
        })
        .await
        .unwrap();
    let orders = list_all(&sim, ORDERS).await;
    let new = &orders[orders_before..];
    let created: Vec<u64> = new
        .iter()
        .filter(|e| e["TYPE_ID"] == json!(1))
        .map(|e| e["OWNER_ID"].as_u64().unwrap())
        .collect();
    assert_eq!(created, outcome.added);
    assert!(
        new.iter().all(|e| e["TYPE_ID"] == json!(1)
            || (outcome.updated.contains(&e["OWNER_ID"].as_u64().unwrap())
                && [json!(2), json!(3)].contains(&e["TYPE_ID"]))),
        "{new:?}"
    );
    assert!(new.len() > 2, "some item updates move the stage");
}

#[tokio::test]
async fn every_add_path_records_a_creation_entry() {
    let sim = sim(config(2, 2)).await;
    let deal = ok(
        &sim,
        "crm.deal.add",
        json!({"fields": {"TITLE": "New deal", "STAGE_ID": "EXECUTING"}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let lead = ok(
        &sim,
        "crm.lead.add",
        json!({"fields": {"TITLE": "New lead"}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let item = ok(
        &sim,
        "crm.item.add",
        json!({"entityTypeId": ORDERS, "fields": {"title": "New order"}}),
    )
    .await["result"]["item"]["id"]
        .as_u64()
        .unwrap();
    let deal_entries = of_owner(&sim, 2, deal).await;
    assert_eq!(deal_entries.len(), 1);
    assert_eq!(
        (
            &deal_entries[0]["ID"],
            &deal_entries[0]["TYPE_ID"],
            &deal_entries[0]["STAGE_ID"]
        ),
        (&json!(3), &json!(1), &json!("EXECUTING"))
    );
    let lead_entries = of_owner(&sim, 1, lead).await;
    assert_eq!(lead_entries.len(), 1);
    assert_eq!(lead_entries[0]["STATUS_ID"], json!("NEW"));
    let got = ok(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": ORDERS, "id": item}),
    )
    .await;
    let item_entries = of_owner(&sim, ORDERS, item).await;
    assert_eq!(item_entries.len(), 1);
    assert_eq!(item_entries[0]["TYPE_ID"], json!(1));
    assert_eq!(
        item_entries[0]["STAGE_ID"],
        got["result"]["item"]["stageId"]
    );
    assert_eq!(
        item_entries[0]["CREATED_TIME"],
        got["result"]["item"]["createdTime"]
    );
}

#[tokio::test]
async fn filters_by_id_owner_type_and_in_list_with_order() {
    let sim = sim(config(80, 0)).await;
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 7, "fields": {"STAGE_ID": "C1:WON"}}),
    )
    .await;
    let after = history(&sim, json!({"entityTypeId": 2, "filter": {">ID": 70}})).await;
    assert_eq!(entry_ids(&after), (71..=81).collect::<Vec<_>>());
    assert_eq!(after["total"], json!(11));
    let window = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {">=ID": 10, "<ID": 13}}),
    )
    .await;
    assert_eq!(entry_ids(&window), [10, 11, 12]);
    let owner = history(&sim, json!({"entityTypeId": 2, "filter": {"OWNER_ID": 7}})).await;
    assert_eq!(entry_ids(&owner), [7, 81]);
    let listed = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {"@ID": [3, 5, 81, 900]}}),
    )
    .await;
    assert_eq!(entry_ids(&listed), [3, 5, 81]);
    let owners = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {"@OWNER_ID": [1, 7]}, "order": {"ID": "DESC"}}),
    )
    .await;
    assert_eq!(entry_ids(&owners), [81, 7, 1]);
    let finals = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {"TYPE_ID": 3}, "select": ["ID", "OWNER_ID"]}),
    )
    .await;
    assert_eq!(items(&finals), &vec![json!({"ID": 81, "OWNER_ID": 7})]);
    let not_created = history(&sim, json!({"entityTypeId": 2, "filter": {"!=TYPE_ID": 1}})).await;
    assert_eq!(entry_ids(&not_created), [81]);
    let stage = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {"STAGE_ID": "C1:WON", "CATEGORY_ID": 1}}),
    )
    .await;
    assert!(entry_ids(&stage).contains(&81));
    let recent = history(
        &sim,
        json!({"entityTypeId": 2, "filter": {">=CREATED_TIME": "2000-01-01T00:00:00+03:00", "<ID": 3}}),
    )
    .await;
    assert_eq!(entry_ids(&recent), [1, 2]);
}

#[tokio::test]
async fn pages_by_50_with_a_total_and_without_a_count_at_start_minus_one() {
    let sim = sim(config(120, 0)).await;
    let first = history(&sim, json!({"entityTypeId": 2})).await;
    assert_eq!(entry_ids(&first), (1..=50).collect::<Vec<_>>());
    assert_eq!((&first["total"], &first["next"]), (&json!(120), &json!(50)));
    let second = history(&sim, json!({"entityTypeId": 2, "start": 50})).await;
    assert_eq!(entry_ids(&second), (51..=100).collect::<Vec<_>>());
    assert_eq!(second["next"], json!(100));
    let last = history(&sim, json!({"entityTypeId": 2, "start": 100})).await;
    assert_eq!(entry_ids(&last), (101..=120).collect::<Vec<_>>());
    assert!(last.get("next").is_none());
    let uncounted = history(
        &sim,
        json!({"entityTypeId": 2, "start": -1, "filter": {">ID": 60}, "order": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(entry_ids(&uncounted), (61..=110).collect::<Vec<_>>());
    assert_eq!(uncounted["total"], json!(0));
    assert!(uncounted.get("next").is_none());
    // Query strings page the same way.
    let (status, answer) = common::get_query(
        &sim,
        "crm.stagehistory.list",
        "entityTypeId=2&filter%5B%3EID%5D=115&start=-1",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(entry_ids(&answer), [116, 117, 118, 119, 120]);
    // Counting costs the table; start=-1 does not.
    sim.reset_stats().await.unwrap();
    history(&sim, json!({"entityTypeId": 2, "start": -1})).await;
    let cheap = sim.stats().await.unwrap().operating_seconds_by_method["crm.stagehistory.list"];
    sim.reset_stats().await.unwrap();
    history(&sim, json!({"entityTypeId": 2, "start": 0})).await;
    let counted = sim.stats().await.unwrap().operating_seconds_by_method["crm.stagehistory.list"];
    assert!(counted > cheap, "{counted} > {cheap}");
}

/// The `cmd` of one chained batch over `crm.stagehistory.list`: each command's `>ID` is
/// the previous command's 50th entry.
fn chained_history_lists(entity_type_id: u32, after: u64) -> Map<String, Value> {
    (1..=50)
        .map(|n| {
            let after = if n == 1 {
                after.to_string()
            } else {
                format!("%24result%5Bc{}%5D%5Bitems%5D%5B49%5D%5BID%5D", n - 1)
            };
            let command = format!(
                "crm.stagehistory.list?entityTypeId={entity_type_id}&order%5BID%5D=ASC&filter%5B%3EID%5D={after}&select%5B0%5D=ID&select%5B1%5D=OWNER_ID&start=-1"
            );
            (format!("c{n}"), json!(command))
        })
        .collect()
}

#[tokio::test]
async fn chained_batch_windows_list_every_entry_exactly_once() {
    let sim = sim(SimConfig {
        deals: 2_730,
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await;
    sim.mutate(&MutateRequest {
        entity: Entity::Deal,
        seed: 2,
        adds: 0,
        updates: 30,
        deletes: 40,
    })
    .await
    .unwrap();
    let expected = sim.dump_stage_history(2).await.unwrap().len();
    assert!(expected > 2_730);
    let mut seen: Vec<u64> = Vec::new();
    let mut after = 0;
    let mut requests = 0;
    loop {
        let answer = ok(
            &sim,
            "batch",
            json!({"cmd": chained_history_lists(2, after)}),
        )
        .await;
        requests += 1;
        assert_eq!(answer["result"]["result_error"], json!([]));
        let results = answer["result"]["result"].as_object().unwrap();
        let mut got = 0;
        for n in 1..=50 {
            let page = &results[&format!("c{n}")]["items"];
            for item in page.as_array().into_iter().flatten() {
                seen.push(item["ID"].as_u64().unwrap());
                got += 1;
            }
            assert_eq!(answer["result"]["result_total"][format!("c{n}")], json!(0));
        }
        if got < 2_500 {
            break;
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(requests, 2);
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no entry twice");
    assert_eq!(seen.len(), expected);
    assert_eq!(seen, (1..=expected as u64).collect::<Vec<_>>());
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.requests_by_method["crm.stagehistory.list"], 100);
}

#[tokio::test]
async fn errors_for_unsupported_types_fields_and_directions() {
    let sim = sim(config(3, 3)).await;
    for entity_type_id in [json!(3), json!(4), json!(999), json!(0)] {
        let (status, answer) = call(
            &sim,
            "crm.stagehistory.list",
            json!({"entityTypeId": entity_type_id}),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], json!("ENTITY_TYPE_NOT_SUPPORTED"));
        assert_eq!(
            answer["error_description"],
            json!(format!("Entity type {entity_type_id} is not supported"))
        );
    }
    let (status, answer) = call(&sim, "crm.stagehistory.list", json!({})).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("ENTITY_TYPE_NOT_SUPPORTED"))
    );

    let refused = |body: Value, description: &'static str| {
        let sim = &sim;
        async move {
            let (status, answer) = call(sim, "crm.stagehistory.list", body).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"], json!("INVALID_ARG_VALUE"));
            assert_eq!(answer["error_description"], json!(description));
        }
    };
    refused(
        json!({"entityTypeId": 2, "filter": {">TITLE": "x"}}),
        "Invalid filter: field 'TITLE' is not allowed in filter",
    )
    .await;
    // Leads have a status, not a stage; names are case-sensitive.
    refused(
        json!({"entityTypeId": 1, "filter": {"STAGE_ID": "NEW"}}),
        "Invalid filter: field 'STAGE_ID' is not allowed in filter",
    )
    .await;
    refused(
        json!({"entityTypeId": 2, "filter": {"owner_id": 1}}),
        "Invalid filter: field 'owner_id' is not allowed in filter",
    )
    .await;
    refused(
        json!({"entityTypeId": 2, "filter": {">ID": "abc"}}),
        "Invalid filter: field 'ID' has invalid value",
    )
    .await;
    refused(
        json!({"entityTypeId": 2, "order": {"ID": "UP"}}),
        "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'ID'",
    )
    .await;
    refused(
        json!({"entityTypeId": 2, "order": {"TITLE": "ASC"}}),
        "Invalid order: field 'TITLE' is not allowed in order",
    )
    .await;
    // Inside a batch the error is the command's.
    let answer = ok(
        &sim,
        "batch",
        json!({"cmd": {"a": "crm.stagehistory.list?entityTypeId=3", "b": "crm.stagehistory.list?entityTypeId=2"}}),
    )
    .await;
    assert_eq!(
        answer["result"]["result_error"]["a"]["error"],
        json!("ENTITY_TYPE_NOT_SUPPORTED")
    );
    assert_eq!(answer["result"]["result_total"]["b"], json!(3));
}

#[tokio::test]
async fn the_dump_equals_what_the_method_lists() {
    let sim = sim(config(70, 12)).await;
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 1, "fields": {"STAGE_ID": "C1:LOSE"}}),
    )
    .await;
    ok(&sim, "crm.deal.delete", json!({"id": 1})).await;
    sim.mutate(&MutateRequest {
        entity: Entity::Lead,
        seed: 1,
        adds: 2,
        updates: 0,
        deletes: 1,
    })
    .await
    .unwrap();
    for entity_type_id in [1, 2, ORDERS] {
        let listed = list_all(&sim, entity_type_id).await;
        let dumped = sim.dump_stage_history(entity_type_id).await.unwrap();
        assert_eq!(listed, dumped, "entity type {entity_type_id}");
    }
    assert!(sim.dump_stage_history(3).await.is_err());
    assert!(sim.dump_stage_history(999).await.is_err());
    // A reset restores the seeded history.
    sim.reset().await.unwrap();
    assert_eq!(sim.dump_stage_history(2).await.unwrap().len(), 70);
    assert_eq!(sim.dump_stage_history(1).await.unwrap().len(), 12);
}
