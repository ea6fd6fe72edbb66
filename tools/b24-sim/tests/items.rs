//! The universal `crm.item.*` API, `crm.type.*` and smart processes: documented shapes,
//! the same data as the old `crm.<entity>.*` methods, filters, paging, batches, writes,
//! events and the control surface.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use b24_sim::{
    EventTarget, ItemMutateRequest, ItemUserFieldRequest, MutateRequest, RunningSim, SimConfig,
    SmartProcessConfig, UserFieldType,
};
use common::*;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

const ORDERS: u32 = 1038;
const PROJECTS: u32 = 1040;

fn orders() -> SmartProcessConfig {
    SmartProcessConfig {
        user_fields: 12,
        with_products: true,
        product_rows: 2,
        categories: vec!["Returns".into()],
        ..SmartProcessConfig::new(ORDERS, "Orders", 120)
    }
}

fn two_smart_processes() -> SimConfig {
    SimConfig {
        deals: 80,
        contacts: 20,
        leads: 10,
        companies: 10,
        user_fields: 3,
        limits: unlimited(),
        smart_processes: vec![orders(), SmartProcessConfig::new(PROJECTS, "Projects", 7)],
        ..SimConfig::default()
    }
}

async fn items(sim: &RunningSim, body: Value) -> Value {
    ok(sim, "crm.item.list", body).await
}

fn ids_of(items: &Value) -> Vec<u64> {
    items["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn crm_type_list_and_get_describe_the_configured_smart_processes() {
    let sim = sim(two_smart_processes()).await;
    let answer = ok(&sim, "crm.type.list", json!({})).await;
    assert_eq!(answer["total"], 2);
    let types = answer["result"]["types"].as_array().unwrap();
    let keys: Vec<&str> = types[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The keys of crm-type-list.md, in its order.
    assert_eq!(
        keys,
        [
            "id",
            "title",
            "code",
            "createdBy",
            "entityTypeId",
            "customSectionId",
            "isCategoriesEnabled",
            "isStagesEnabled",
            "isBeginCloseDatesEnabled",
            "isClientEnabled",
            "isUseInUserfieldEnabled",
            "isLinkWithProductsEnabled",
            "isMycompanyEnabled",
            "isDocumentsEnabled",
            "isSourceEnabled",
            "isObserversEnabled",
            "isRecyclebinEnabled",
            "isAutomationEnabled",
            "isBizProcEnabled",
            "isSetOpenPermissions",
            "isPaymentsEnabled",
            "isCountersEnabled",
            "createdTime",
            "updatedTime",
            "updatedBy"
        ]
    );
    assert_eq!(
        (
            &types[0]["id"],
            &types[0]["entityTypeId"],
            &types[0]["title"]
        ),
        (&json!(1), &json!(ORDERS), &json!("Orders"))
    );
    assert_eq!(types[0]["isLinkWithProductsEnabled"], "Y");
    assert_eq!(types[0]["isCategoriesEnabled"], "Y");
    assert_eq!(types[1]["isLinkWithProductsEnabled"], "N");
    assert_eq!(types[1]["isCategoriesEnabled"], "N");
    let filtered = ok(
        &sim,
        "crm.type.list",
        json!({"filter": {"isLinkWithProductsEnabled": "N"}}),
    )
    .await;
    assert_eq!(filtered["result"]["types"][0]["entityTypeId"], PROJECTS);
    let got = ok(&sim, "crm.type.get", json!({"id": 2})).await;
    assert_eq!(got["result"]["type"]["entityTypeId"], PROJECTS);
    assert!(got["result"]["type"]["relations"]["parent"].is_array());
    let by_type = ok(
        &sim,
        "crm.type.getByEntityTypeId",
        json!({"entityTypeId": ORDERS}),
    )
    .await;
    assert_eq!(by_type["result"]["type"]["id"], 1);
    // The documented error of an unknown type: a numeric code 0.
    let (status, body) = call(&sim, "crm.type.get", json!({"id": 77})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": 0, "error_description": "SPA not found"})
        )
    );
    let (status, body) = call(&sim, "crm.type.list", json!({"filter": {"colour": 1}})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "INVALID_ARG_VALUE");
}

#[tokio::test]
async fn crm_item_list_reads_the_deals_crm_deal_list_reads_with_typed_camel_case_values() {
    let sim = sim(two_smart_processes()).await;
    let classic = ok(&sim, "crm.deal.list", json!({"filter": {"<=ID": 50}})).await;
    let item = items(&sim, json!({"entityTypeId": 2, "filter": {"<=id": 50}})).await;
    assert_eq!(classic["total"], item["total"]);
    let classic = classic["result"].as_array().unwrap();
    let items = item["result"]["items"].as_array().unwrap();
    assert_eq!(classic.len(), items.len());
    let uf = user_field(&fields_of(&sim, "deal").await, Some("double"), false);
    for (old, new) in classic.iter().zip(items) {
        assert_eq!(
            old["ID"].as_str().unwrap(),
            new["id"].as_u64().unwrap().to_string()
        );
        assert!(new["id"].is_u64(), "IDs are numbers: {new}");
        assert_eq!(old["TITLE"], new["title"]);
        assert_eq!(old["STAGE_ID"], new["stageId"]);
        assert_eq!(old["DATE_MODIFY"], new["updatedTime"]);
        assert_eq!(old["DATE_CREATE"], new["createdTime"]);
        assert_eq!(old["BEGINDATE"], new["begindate"]);
        assert_eq!(old["IS_MANUAL_OPPORTUNITY"], new["isManualOpportunity"]);
        assert_eq!(
            old["ASSIGNED_BY_ID"].as_str().unwrap(),
            new["assignedById"].to_string()
        );
        assert_eq!(
            old["MODIFY_BY_ID"].as_str().unwrap(),
            new["updatedBy"].to_string()
        );
        let amount: f64 = old["OPPORTUNITY"].as_str().unwrap().parse().unwrap();
        assert_eq!(new["opportunity"].as_f64().unwrap(), amount);
        assert!(new["opportunity"].is_number());
        // User fields: ufCrm_<number> by default.
        let camel = format!("ufCrm_{}", uf.strip_prefix("UF_CRM_").unwrap());
        match (&old[uf.as_str()], &new[camel.as_str()]) {
            (Value::Null, Value::Null) => {}
            (Value::String(text), Value::Number(n)) => {
                assert_eq!(text.parse::<f64>().unwrap(), n.as_f64().unwrap())
            }
            other => panic!("{uf} as {other:?}"),
        }
        assert_eq!(new["entityTypeId"], 2);
        assert!(new.get("fm").is_none(), "deals have no multi-fields");
    }
    // useOriginalUfNames=Y keeps UF_CRM_* names; standard fields stay camelCase.
    let original = ok(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": 2, "id": 3, "useOriginalUfNames": "Y"}),
    )
    .await;
    let item = original["result"]["item"].as_object().unwrap();
    assert!(item.contains_key(&uf), "{item:?}");
    assert!(item.contains_key("assignedById"));
    assert!(!item.keys().any(|k| k.starts_with("ufCrm")));
    // A change through one API shows in the other.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": 3, "fields": {"title": "Renamed", "opportunity": 999.99}}),
    )
    .await;
    let deal = ok(&sim, "crm.deal.get", json!({"id": 3})).await;
    assert_eq!(deal["result"]["TITLE"], "Renamed");
    assert_eq!(deal["result"]["OPPORTUNITY"], "999.99");
}

#[tokio::test]
async fn crm_item_get_of_a_contact_carries_fm_and_only_select_star_lists_it() {
    let sim = sim(two_smart_processes()).await;
    let id = ok(
        &sim,
        "crm.contact.add",
        json!({"fields": {"NAME": "Ann", "PHONE": [{"VALUE": "+155501", "VALUE_TYPE": "WORK"}], "EMAIL": [{"VALUE": "a@example.com", "VALUE_TYPE": "HOME"}]}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let got = ok(&sim, "crm.item.get", json!({"entityTypeId": 3, "id": id})).await;
    let item = &got["result"]["item"];
    let fm = item["fm"].as_array().unwrap();
    assert_eq!(fm.len(), 2);
    // The documented item shape: id (a number), valueType, value, typeId.
    let keys: Vec<&str> = fm[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "valueType", "value", "typeId"]);
    assert!(fm[0]["id"].is_u64());
    assert_eq!(
        (&fm[0]["typeId"], &fm[0]["value"]),
        (&json!("PHONE"), &json!("+155501"))
    );
    assert_eq!(
        (&fm[1]["typeId"], &fm[1]["valueType"]),
        (&json!("EMAIL"), &json!("HOME"))
    );
    assert_eq!(item["hasPhone"], "Y");
    assert!(item.get("PHONE").is_none() && item.get("phone").is_none());
    let filter = json!({"=id": id});
    for (select, has_fm) in [
        (Value::Null, true),
        (json!(["*"]), true),
        (json!(["id", "name"]), false),
        (json!(["*", "ufCrm_1721244482000"]), false),
    ] {
        let mut body = json!({"entityTypeId": 3, "filter": filter});
        if !select.is_null() {
            body["select"] = select.clone();
        }
        let listed = items(&sim, body).await;
        let row = &listed["result"]["items"][0];
        assert_eq!(row.get("fm").is_some(), has_fm, "select {select}: {row}");
    }
    let named = items(
        &sim,
        json!({"entityTypeId": 3, "filter": filter, "select": ["NAME", "lastName"]}),
    )
    .await;
    let row = named["result"]["items"][0].as_object().unwrap();
    let keys: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["id", "name", "lastName"],
        "UPPER_CASE names select too"
    );
    // fm through crm.item.update adds items.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 3, "id": id, "fields": {"fm": [{"typeId": "PHONE", "valueType": "MOBILE", "value": "+155502"}]}}),
    )
    .await;
    let contact = ok(&sim, "crm.contact.get", json!({"id": id})).await;
    let phones = contact["result"]["PHONE"].as_array().unwrap();
    assert_eq!(phones.len(), 2);
    assert_eq!(phones[1]["VALUE_TYPE"], "MOBILE");
}

#[tokio::test]
async fn item_filters_order_and_paging_follow_the_docs() {
    let sim = sim(two_smart_processes()).await;
    let all = ok(
        &sim,
        "crm.item.list",
        json!({"entityTypeId": ORDERS, "select": ["id"], "order": {"id": "ASC"}, "start": 0}),
    )
    .await;
    assert_eq!(all["total"], 120);
    assert_eq!(all["next"], 50);
    assert_eq!(ids_of(&all).len(), 50);
    // ID windows without a count, in both spellings.
    let mut seen: Vec<u64> = Vec::new();
    let mut last = 0;
    loop {
        let page = items(
            &sim,
            json!({"entityTypeId": ORDERS, "select": ["ID"], "order": {"ID": "ASC"}, "filter": {">ID": last}, "start": -1}),
        )
        .await;
        assert_eq!(page["total"], 0);
        assert!(page.get("next").is_none());
        let ids = ids_of(&page);
        seen.extend(&ids);
        if ids.len() < 50 {
            break;
        }
        last = *ids.last().unwrap();
    }
    assert_eq!(seen, (1..=120).collect::<Vec<u64>>());
    let some = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id"], "filter": {"@id": [3, 5, 900]}}),
    )
    .await;
    assert_eq!(ids_of(&some), [3, 5]);
    // >=updatedTime with the portal's own clock.
    let dump = sim.dump_items(ORDERS, false).await.unwrap();
    let mut times: Vec<&str> = dump
        .iter()
        .map(|i| i["updatedTime"].as_str().unwrap())
        .collect();
    times.sort_unstable();
    let cut = times[100];
    let newer = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id", "updatedTime"], "filter": {">=updatedTime": cut}}),
    )
    .await;
    assert_eq!(newer["total"], 20);
    assert!(
        newer["result"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["updatedTime"].as_str().unwrap() >= cut)
    );
    // OR groups as the docs' example nests them.
    let either = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id"], "filter": {"0": {"logic": "OR", "0": {"=id": 7}, "1": {"=id": 9}}}}),
    )
    .await;
    assert_eq!(ids_of(&either), [7, 9]);
    let descending = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id"], "order": {"id": "desc"}, "start": -1}),
    )
    .await;
    assert_eq!(ids_of(&descending)[0], 120);
    // The documented refusals.
    for (body, description) in [
        (
            json!({"entityTypeId": ORDERS, "filter": {"colour": 1}}),
            "Invalid filter: field 'colour' is not allowed in filter",
        ),
        (
            json!({"entityTypeId": ORDERS, "order": {"colour": "ASC"}}),
            "Invalid order: field 'colour' is not allowed in order",
        ),
        (
            json!({"entityTypeId": ORDERS, "order": {"id": "UP"}}),
            "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'id'",
        ),
        (
            json!({"entityTypeId": ORDERS, "filter": {">updatedTime": "soon"}}),
            "Invalid filter: field 'updatedTime' has invalid value",
        ),
    ] {
        let (status, answer) = call(&sim, "crm.item.list", body).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer,
            json!({"error": "INVALID_ARG_VALUE", "error_description": description})
        );
    }
    let (status, answer) = call(
        &sim,
        "crm.item.list",
        json!({"entityTypeId": 3, "filter": {"fm": "x"}}),
    )
    .await;
    assert_eq!((status, &answer["error"]), (400, &json!(100)));
    for bad in [json!(1039), json!(31), json!("x"), Value::Null] {
        let (status, answer) = call(&sim, "crm.item.list", json!({"entityTypeId": bad})).await;
        assert_eq!(
            (status, answer),
            (
                400,
                json!({"error": "NOT_FOUND", "error_description": "Smart process not found"})
            )
        );
    }
}

/// The `cmd` of one chained fast-listing batch over `crm.item.list`: each command's
/// `>id` is the previous command's 50th item.
fn chained_item_lists(entity_type_id: u32, after: u64) -> Map<String, Value> {
    (1..=50)
        .map(|n| {
            let after = if n == 1 {
                after.to_string()
            } else {
                format!("%24result%5B{}%5D%5Bitems%5D%5B49%5D%5Bid%5D", n - 1)
            };
            let command = format!(
                "crm.item.list?entityTypeId={entity_type_id}&order%5Bid%5D=ASC&filter%5B%3Eid%5D={after}&select%5B0%5D=id&start=-1"
            );
            (n.to_string(), json!(command))
        })
        .collect()
}

#[tokio::test]
async fn chained_batches_of_crm_item_list_return_every_item_exactly_once() {
    let config = SimConfig {
        smart_processes: vec![SmartProcessConfig::new(ORDERS, "Orders", 2_730)],
        limits: unlimited(),
        ..SimConfig::default()
    };
    let sim = sim(config).await;
    sim.mutate_items(&ItemMutateRequest {
        entity_type_id: ORDERS,
        seed: 3,
        deletes: 40,
        ..ItemMutateRequest::default()
    })
    .await
    .unwrap();
    let mut seen: Vec<u64> = Vec::new();
    let mut after = 0;
    let mut requests = 0;
    loop {
        let answer = ok(
            &sim,
            "batch",
            json!({"cmd": chained_item_lists(ORDERS, after)}),
        )
        .await;
        requests += 1;
        let results = answer["result"]["result"].as_object().unwrap();
        let mut got = 0;
        for n in 1..=50 {
            let page = &results[&n.to_string()]["items"];
            for item in page.as_array().into_iter().flatten() {
                seen.push(item["id"].as_u64().unwrap());
                got += 1;
            }
        }
        assert_eq!(answer["result"]["result_error"], json!([]));
        if got < 2_500 {
            break;
        }
        after = *seen.last().unwrap();
    }
    assert_eq!(requests, 2);
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no item twice");
    assert_eq!(seen.len(), 2_690);
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.requests_by_method["crm.item.list"], 100);
}

#[tokio::test]
async fn crm_item_add_update_delete_on_a_smart_process() {
    let sim = sim(two_smart_processes()).await;
    let uf_string = "ufCrm1_1721812760000";
    // The twelfth generated field: integers, multiple (types cycle, later rounds multiple).
    let uf_multiple_integer = "ufCrm1_1721812760011";
    let added = ok(
        &sim,
        "crm.item.add",
        json!({"entityTypeId": ORDERS, "fields": {uf_string: "Hello", uf_multiple_integer: [4, 5], "opportunity": 1500, "companyId": 2}}),
    )
    .await;
    let item = &added["result"]["item"];
    let id = item["id"].as_u64().unwrap();
    assert_eq!(id, 121);
    assert_eq!(item["title"], "Orders #121", "the documented default title");
    assert_eq!(item["opportunity"], 1500);
    assert_eq!(item["companyId"], 2);
    assert_eq!(item[uf_string], "Hello");
    assert_eq!(item[uf_multiple_integer], json!([4, 5]));
    assert_eq!(item["opened"], "Y");
    assert_eq!(item["assignedById"], 1);
    assert_eq!(item["entityTypeId"], ORDERS);
    let category = item["categoryId"].as_i64().unwrap();
    assert_eq!(
        item["stageId"],
        format!("DT{ORDERS}_{category}:NEW"),
        "the first stage of the default pipeline"
    );
    assert_eq!(item["createdTime"], item["updatedTime"]);
    // An update that changes nothing saves nothing.
    let before = item["updatedTime"].clone();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let same = ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": id, "fields": {uf_string: "Hello", "opportunity": 1500}}),
    )
    .await;
    assert_eq!(same["result"]["item"]["updatedTime"], before);
    let changed = ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": id, "fields": {"title": "Big order", "stageId": format!("DT{ORDERS}_{category}:SUCCESS"), "createdBy": 7}}),
    )
    .await;
    let item = &changed["result"]["item"];
    assert_eq!(item["title"], "Big order");
    assert_ne!(item["updatedTime"], before, "a change moves updatedTime");
    assert_eq!(item["createdBy"], 1, "read-only fields are ignored");
    assert_eq!(
        item["previousStageId"],
        format!("DT{ORDERS}_{category}:NEW")
    );
    assert_eq!(item["movedTime"], item["updatedTime"]);
    // The documented errors.
    let (status, body) = call(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": id, "fields": {uf_multiple_integer: 4}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": 100, "error_description": "Expected iterable value for multiple field, but got integer instead"})
    );
    let (status, body) = call(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": id, "fields": {"begindate": "someday"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "CRM_FIELD_ERROR_VALUE_NOT_VALID");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid value for field \"begindate\""),
        "{body}"
    );
    let (status, body) = call(
        &sim,
        "crm.item.add",
        json!({"entityTypeId": ORDERS, "fields": {"categoryId": 999}}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("CRM_FIELD_ERROR_VALUE_NOT_VALID"))
    );
    let deleted = ok(
        &sim,
        "crm.item.delete",
        json!({"entityTypeId": ORDERS, "id": id}),
    )
    .await;
    assert_eq!(deleted["result"], json!([]));
    let (status, body) = call(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": ORDERS, "id": id}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "NOT_FOUND", "error_description": "Element not found"})
        )
    );
    let (status, body) = call(
        &sim,
        "crm.item.delete",
        json!({"entityTypeId": ORDERS, "id": id}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "NOT_FOUND", "error_description": "Item not found"})
        )
    );
    // Hidden items are refused as the webhook's user may not read them.
    let hidden = sim.hide_items(ORDERS, 1.0, 1).await.unwrap();
    assert_eq!(hidden, 120);
    let (status, body) = call(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": ORDERS, "id": 1}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "ACCESS_DENIED", "error_description": "Access denied"})
        )
    );
    assert_eq!(
        items(&sim, json!({"entityTypeId": ORDERS})).await["total"],
        0
    );
    assert_eq!(sim.dump_items(ORDERS, false).await.unwrap().len(), 120);
}

#[tokio::test]
async fn crm_item_fields_describes_fields_as_the_docs_show() {
    let sim = sim(two_smart_processes()).await;
    let answer = ok(&sim, "crm.item.fields", json!({"entityTypeId": ORDERS})).await;
    let fields = answer["result"]["fields"].as_object().unwrap();
    let default_category = ok(&sim, "crm.category.list", json!({"entityTypeId": ORDERS})).await
        ["result"]["categories"][0]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        fields["id"],
        json!({"type": "integer", "isRequired": false, "isReadOnly": true, "isImmutable": false, "isMultiple": false, "isDynamic": false, "title": "ID", "upperName": "ID"})
    );
    assert_eq!(fields["updatedTime"]["upperName"], "UPDATED_TIME");
    assert_eq!(fields["opened"]["type"], "boolean");
    assert_eq!(fields["opened"]["isRequired"], true);
    assert_eq!(fields["contactId"]["isDeprecated"], true);
    assert_eq!(fields["contactIds"]["isMultiple"], true);
    assert_eq!(
        fields["companyId"]["settings"],
        json!({"parentEntityTypeId": 4})
    );
    assert_eq!(
        fields["stageId"]["statusType"],
        format!("DYNAMIC_{ORDERS}_STAGE_{default_category}")
    );
    assert_eq!(fields["opportunity"]["type"], "double");
    assert!(!fields.contains_key("entityTypeId"));
    let list = &fields["ufCrm1_1721812760006"];
    assert_eq!(list["type"], "enumeration");
    assert_eq!(list["isDynamic"], true);
    assert_eq!(list["upperName"], "UF_CRM_1_1721812760006");
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert_eq!(list["listLabel"], list["title"]);
    let keys: Vec<&str> = list
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "type",
            "isRequired",
            "isReadOnly",
            "isImmutable",
            "isMultiple",
            "isDynamic",
            "items",
            "title",
            "listLabel",
            "formLabel",
            "filterLabel",
            "settings",
            "upperName"
        ]
    );
    assert_eq!(fields["ufCrm1_1721812760010"]["isMultiple"], true);
    let original = ok(
        &sim,
        "crm.item.fields",
        json!({"entityTypeId": ORDERS, "useOriginalUfNames": "Y"}),
    )
    .await;
    assert!(original["result"]["fields"]["UF_CRM_1_1721812760006"].is_object());
    // Without products the amount fields are not described (and answered as null).
    let projects = ok(&sim, "crm.item.fields", json!({"entityTypeId": PROJECTS})).await;
    let projects = projects["result"]["fields"].as_object().unwrap();
    assert!(!projects.contains_key("opportunity") && !projects.contains_key("currencyId"));
    let item = ok(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": PROJECTS, "id": 1}),
    )
    .await;
    assert_eq!(item["result"]["item"]["opportunity"], Value::Null);
    // The classic entities through crm.item.fields: renamed fields, UPPER names.
    let deal = ok(&sim, "crm.item.fields", json!({"entityTypeId": 2})).await;
    let deal = deal["result"]["fields"].as_object().unwrap();
    assert_eq!(deal["updatedTime"]["upperName"], "UPDATED_TIME");
    assert_eq!(deal["assignedById"]["upperName"], "ASSIGNED_BY_ID");
    assert_eq!(deal["categoryId"]["isImmutable"], false);
    assert_eq!(deal["stageId"]["statusType"], "DEAL_STAGE");
    assert!(deal.contains_key("ufCrm_1721244482000"));
    let lead = ok(&sim, "crm.item.fields", json!({"entityTypeId": 1})).await;
    let lead = lead["result"]["fields"].as_object().unwrap();
    assert_eq!(lead["stageId"]["upperName"], "STAGE_ID");
    assert!(lead.contains_key("fm") && !lead.contains_key("phone"));
    assert!(!lead.contains_key("addressCity"));
}

/// A handler that records event bodies.
async fn event_handler() -> (String, mpsc::UnboundedReceiver<Vec<(String, String)>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/events",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let pairs = form_urlencoded::parse(body.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let _ = tx.send(pairs);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Vec<(String, String)>>,
) -> Vec<(String, String)> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event arrives")
        .unwrap()
}

fn field<'a>(event: &'a [(String, String)], key: &str) -> Option<&'a str> {
    event
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn smart_process_changes_fire_dynamic_item_events_and_deals_their_own() {
    let (url, mut rx) = event_handler().await;
    let sim = sim(SimConfig {
        events: Some(EventTarget {
            url,
            application_token: "token0123456789".into(),
        }),
        deal_categories: vec!["Wholesale".into()],
        ..two_smart_processes()
    })
    .await;
    let id = ok(
        &sim,
        "crm.item.add",
        json!({"entityTypeId": ORDERS, "fields": {"title": "x"}}),
    )
    .await["result"]["item"]["id"]
        .as_u64()
        .unwrap();
    let event = next_event(&mut rx).await;
    let keys: Vec<&str> = event.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[..5],
        [
            "event",
            "event_handler_id",
            "data[FIELDS][ID]",
            "data[FIELDS][ENTITY_TYPE_ID]",
            "ts"
        ]
    );
    assert_eq!(field(&event, "event"), Some("ONCRMDYNAMICITEMADD"));
    assert_eq!(
        field(&event, "data[FIELDS][ID]"),
        Some(id.to_string().as_str())
    );
    assert_eq!(field(&event, "data[FIELDS][ENTITY_TYPE_ID]"), Some("1038"));
    assert_eq!(
        field(&event, "auth[application_token]"),
        Some("token0123456789")
    );
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": ORDERS, "id": id, "fields": {"title": "y"}}),
    )
    .await;
    assert_eq!(
        field(&next_event(&mut rx).await, "event"),
        Some("ONCRMDYNAMICITEMUPDATE")
    );
    ok(
        &sim,
        "crm.item.delete",
        json!({"entityTypeId": ORDERS, "id": id}),
    )
    .await;
    let event = next_event(&mut rx).await;
    assert_eq!(field(&event, "event"), Some("ONCRMDYNAMICITEMDELETE"));
    assert_eq!(field(&event, "data[FIELDS][ENTITY_TYPE_ID]"), Some("1038"));
    // The control surface's mutation fires them too.
    let outcome = sim
        .mutate_items(&ItemMutateRequest {
            entity_type_id: PROJECTS,
            seed: 5,
            adds: 1,
            updates: 1,
            deletes: 1,
            ..ItemMutateRequest::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut rx).await;
        assert_eq!(field(&event, "data[FIELDS][ENTITY_TYPE_ID]"), Some("1040"));
        seen.push((
            field(&event, "event").unwrap().to_string(),
            field(&event, "data[FIELDS][ID]")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("ONCRMDYNAMICITEMADD".to_string(), outcome.added[0]),
            ("ONCRMDYNAMICITEMUPDATE".to_string(), outcome.updated[0]),
            ("ONCRMDYNAMICITEMDELETE".to_string(), outcome.deleted[0]),
        ]
    );
    // Deals changed through crm.item.* fire the deal events, with no ENTITY_TYPE_ID.
    ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": 2, "fields": {"title": "Renamed"}}),
    )
    .await;
    let event = next_event(&mut rx).await;
    assert_eq!(field(&event, "event"), Some("ONCRMDEALUPDATE"));
    assert_eq!(field(&event, "data[FIELDS][ENTITY_TYPE_ID]"), None);
    // A move to another pipeline fires ONCRMDEALMOVETOCATEGORY on a portal, which an
    // outgoing webhook cannot subscribe to: nothing reaches the handler, but the deal's
    // updatedTime moves and its stage is the new pipeline's first.
    let wholesale =
        ok(&sim, "crm.category.list", json!({"entityTypeId": 2})).await["result"]["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "Wholesale")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
    // Deal 4 is in the general pipeline (deals spread over the pipelines by ID).
    let deal_id = 4;
    let moved = ok(
        &sim,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": deal_id, "fields": {"categoryId": wholesale}}),
    )
    .await;
    assert_eq!(moved["result"]["item"]["categoryId"], wholesale);
    assert_eq!(
        moved["result"]["item"]["stageId"],
        format!("C{wholesale}:NEW")
    );
    let classic = ok(&sim, "crm.deal.get", json!({"id": deal_id})).await;
    assert_eq!(classic["result"]["CATEGORY_ID"], wholesale.to_string());
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": 5, "fields": {"TITLE": "after the move"}}),
    )
    .await;
    let event = next_event(&mut rx).await;
    assert_eq!(
        (field(&event, "event"), field(&event, "data[FIELDS][ID]")),
        (Some("ONCRMDEALUPDATE"), Some("5")),
        "the move itself sent nothing"
    );
    // A classic mutation still fires classic events.
    sim.mutate(&MutateRequest {
        entity: b24_sim::Entity::Lead,
        seed: 1,
        adds: 0,
        updates: 1,
        deletes: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        field(&next_event(&mut rx).await, "event"),
        Some("ONCRMLEADUPDATE")
    );
}

#[tokio::test]
async fn the_control_surface_adds_and_addresses_smart_processes() {
    let sim = sim(two_smart_processes()).await;
    let added = sim
        .add_smart_process(&SmartProcessConfig {
            user_fields: 2,
            ..SmartProcessConfig::new(1042, "Tickets", 30)
        })
        .await
        .unwrap();
    assert_eq!(
        (&added["entityTypeId"], &added["id"]),
        (&json!(1042), &json!(3))
    );
    let types = ok(&sim, "crm.type.list", json!({})).await;
    assert_eq!(types["total"], 3);
    assert_eq!(
        items(&sim, json!({"entityTypeId": 1042})).await["total"],
        30
    );
    let refused = sim
        .add_smart_process(&SmartProcessConfig::new(1042, "Again", 1))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("already exists"), "{refused}");
    let odd = sim
        .add_smart_process(&SmartProcessConfig::new(1043, "Odd", 1))
        .await
        .unwrap_err();
    assert!(odd.to_string().contains("no smart process type"), "{odd}");
    // A user field named the portal's way, with values for every item.
    let name = sim
        .add_item_user_field(&ItemUserFieldRequest {
            entity_type_id: 1042,
            field_type: UserFieldType::String,
            multiple: false,
            code: Some("PRIORITY".into()),
        })
        .await
        .unwrap();
    assert_eq!(name, "UF_CRM_3_PRIORITY");
    let fields = ok(&sim, "crm.item.fields", json!({"entityTypeId": 1042})).await;
    assert!(fields["result"]["fields"]["ufCrm3Priority"].is_object());
    let dump = sim.dump_items(1042, true).await.unwrap();
    assert_eq!(dump.len(), 30);
    assert!(dump[0].contains_key("UF_CRM_3_PRIORITY"));
    let camel = sim.dump_items(1042, false).await.unwrap();
    assert!(camel[0].contains_key("ufCrm3Priority"));
    let outcome = sim
        .mutate_items(&ItemMutateRequest {
            entity_type_id: 1042,
            seed: 9,
            adds: 2,
            updates: 3,
            deletes: 4,
            repeat_share: 0.0,
        })
        .await
        .unwrap();
    assert_eq!(outcome.added, [31, 32]);
    assert_eq!((outcome.updated.len(), outcome.deleted.len()), (3, 4));
    assert_eq!(sim.dump_items(1042, false).await.unwrap().len(), 28);
    let updated = ok(
        &sim,
        "crm.item.get",
        json!({"entityTypeId": 1042, "id": outcome.updated[0]}),
    )
    .await;
    assert!(
        updated["result"]["item"]["title"]
            .as_str()
            .unwrap()
            .contains("revision")
    );
    // The classic entities are addressable by number too.
    let deals = sim.dump_items(2, false).await.unwrap();
    assert_eq!(deals.len(), 80);
    assert!(deals[0].contains_key("updatedTime"));
    assert!(sim.dump_items(1050, false).await.is_err());
    // Reset restores the configured state: the type added at run time is gone.
    sim.reset().await.unwrap();
    assert_eq!(ok(&sim, "crm.type.list", json!({})).await["total"], 2);
}

#[tokio::test]
async fn item_costs_follow_the_cost_model_and_count_per_method() {
    let sim = sim(SimConfig {
        smart_processes: vec![SmartProcessConfig::new(ORDERS, "Orders", 3_000)],
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await;
    let counted = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id"], "start": 0}),
    )
    .await;
    let first = counted["time"]["operating"].as_f64().unwrap();
    let uncounted = items(
        &sim,
        json!({"entityTypeId": ORDERS, "select": ["id"], "start": -1}),
    )
    .await;
    let second = uncounted["time"]["operating"].as_f64().unwrap() - first;
    // Counting charges 20.9e-6 s per live row; a page of 50 one-field rows without it
    // costs the base and the rows only.
    assert!(
        (first - (0.004 + 2e-6 * 50.0 + 20.9e-6 * 3000.0)).abs() < 1e-9,
        "{first}"
    );
    assert!((second - (0.004 + 2e-6 * 50.0)).abs() < 1e-9, "{second}");
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.requests_by_method["crm.item.list"], 2);
    assert_eq!(stats.rows_returned, 100);
}

#[tokio::test]
async fn the_binary_takes_smart_processes_on_the_command_line() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_b24-sim"))
        .args([
            "--no-limits",
            "--deals",
            "4",
            "--smart-process",
            "1038:Orders:25:products:uf=2:rows=3",
            "--smart-process",
            "1040:Projects:5",
            "--deal-category",
            "Wholesale",
            "--product-rows",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let url = first.strip_prefix("B24_WEBHOOK_URL=").unwrap().to_string();
    let post = |method: &str, body: Value| {
        let request = http().post(format!("{url}{method}")).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let types = post("crm.type.list", json!({})).await;
    assert_eq!(types["total"], 2);
    assert_eq!(
        types["result"]["types"][0]["isLinkWithProductsEnabled"],
        "Y"
    );
    let listed = post("crm.item.list", json!({"entityTypeId": 1038})).await;
    assert_eq!(listed["total"], 25);
    let integer = &listed["result"]["items"][0]["ufCrm1_1721812760001"];
    assert!(integer.is_number() || integer.is_null(), "{integer}");
    let pipelines = post("crm.category.list", json!({"entityTypeId": 2})).await;
    assert_eq!(pipelines["total"], 2);
    child.kill().await.unwrap();
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_b24-sim"))
        .args(["--smart-process", "1037:Odd:5"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no smart process type"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
