//! `*.list` (select, filter operators, order, both paging modes) and `batch`, over
//! plain HTTP, including the guarantee that a third-party client pages through
//! every row exactly once.

mod common;

use std::collections::BTreeSet;

use b24_sim::{Entity, LimitsUpdate, MutateRequest, SimConfig};
use common::*;
use serde_json::{Value, json};

async fn live_ids(sim: &b24_sim::RunningSim, entity: Entity) -> Vec<u64> {
    sim.dump(entity)
        .await
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// A sim with gaps in its IDs, so paging cannot get away with arithmetic.
async fn sim_with_gaps(deals: usize) -> b24_sim::RunningSim {
    let sim = sim_with(deals, 3).await;
    sim.mutate(&MutateRequest {
        entity: Entity::Deal,
        seed: 11,
        adds: 7,
        updates: 5,
        deletes: 23,
    })
    .await
    .unwrap();
    sim
}

#[tokio::test]
async fn pages_of_50_with_next_and_total_then_without_count() {
    let sim = sim_with(120, 0).await;
    let first = ok(&sim, "crm.deal.list", json!({})).await;
    assert_eq!(first["result"].as_array().unwrap().len(), 50);
    assert_eq!(first["next"], 50);
    assert_eq!(first["total"], 120);
    assert_time_block(&first["time"]);
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["result", "next", "total", "time"]);
    let last = ok(&sim, "crm.deal.list", json!({"start": 100})).await;
    assert_eq!(last["result"].as_array().unwrap().len(), 20);
    assert!(last.get("next").is_none());
    assert_eq!(last["total"], 120);
    let beyond = ok(&sim, "crm.deal.list", json!({"start": 500})).await;
    assert_eq!(beyond["result"], json!([]));
    let fast = ok(
        &sim,
        "crm.deal.list",
        json!({"order": {"ID": "ASC"}, "filter": {">ID": 60}, "start": -1}),
    )
    .await;
    // start=-1 skips counting: no `next` and `"total": 0` (huge-data.md example).
    assert_eq!(fast["total"], 0);
    assert!(fast.get("next").is_none());
    let keys: Vec<&String> = fast.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["result", "total", "time"]);
    assert_eq!(ids(&fast["result"]), (61..=110).collect::<Vec<_>>());
}

#[tokio::test]
async fn offset_paging_returns_every_row_exactly_once() {
    let sim = sim_with_gaps(260).await;
    let expected = live_ids(&sim, Entity::Deal).await;
    let mut seen: Vec<u64> = Vec::new();
    let mut start = Some(0);
    while let Some(offset) = start {
        let page = ok(
            &sim,
            "crm.deal.list",
            json!({"select": ["ID"], "start": offset}),
        )
        .await;
        assert_eq!(page["total"], expected.len());
        seen.extend(ids(&page["result"]));
        start = page["next"].as_u64();
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn id_window_paging_without_count_returns_every_row_exactly_once() {
    let sim = sim_with_gaps(260).await;
    let expected = live_ids(&sim, Entity::Deal).await;
    let mut seen: Vec<u64> = Vec::new();
    let mut last = 0;
    loop {
        // Form-encoded GET, as PHP clients send it.
        let query =
            format!("order[ID]=ASC&filter[%3EID]={last}&select[0]=ID&select[1]=TITLE&start=-1&");
        let (status, page) = get_query(&sim, "crm.deal.list.json", &query).await;
        assert_eq!(status, 200);
        let batch = ids(&page["result"]);
        seen.extend(&batch);
        if batch.len() < 50 {
            break;
        }
        last = *batch.last().unwrap();
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn chained_batches_return_every_row_exactly_once() {
    let sim = sim_with_gaps(2_600).await;
    let expected = live_ids(&sim, Entity::Deal).await;
    let mut seen: Vec<u64> = Vec::new();
    let mut last = 0u64;
    let mut requests = 0;
    'outer: loop {
        let cmd = chained_deal_lists(last, &["ID"]);
        let answer = ok(&sim, "batch", json!({"halt": 0, "cmd": cmd})).await;
        requests += 1;
        assert_eq!(
            answer["result"]["result_error"],
            json!([]),
            "trailing commands past the end do not fail"
        );
        for n in 1..=50 {
            let rows = ids(&answer["result"]["result"][n.to_string()]);
            seen.extend(&rows);
            if rows.len() < 50 {
                break 'outer;
            }
            last = *rows.last().unwrap();
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(requests, 2, "2,500 rows per HTTP request");
}

#[tokio::test]
async fn select_masks_and_named_fields() {
    let sim = sim_with(5, 20).await;
    let fields = fields_of(&sim, "contact").await;
    let multiple_uf = user_field(&fields, None, true);
    let single_uf = user_field(&fields, None, false);
    let row = |answer: &Value| answer["result"][0].as_object().unwrap().clone();
    let star = row(&ok(&sim, "crm.contact.list", json!({"select": ["*"]})).await);
    assert!(star.contains_key("NAME") && star.contains_key("DATE_MODIFY"));
    assert!(
        !star.keys().any(|k| k.starts_with("UF_")),
        "* leaves out user fields"
    );
    assert!(
        !star.contains_key("PHONE") && !star.contains_key("EMAIL"),
        "* leaves out multi-fields"
    );
    let uf = row(&ok(&sim, "crm.contact.list", json!({"select": ["UF_*"]})).await);
    assert!(
        uf.contains_key(&single_uf) && !uf.contains_key(&multiple_uf),
        "UF_* leaves out multiple fields"
    );
    assert!(!uf.contains_key("NAME"));
    assert!(uf.contains_key("ID"), "ID always comes back");
    let default = row(&ok(&sim, "crm.contact.list", json!({})).await);
    assert!(
        default.contains_key("NAME")
            && default.contains_key(&single_uf)
            && !default.contains_key(&multiple_uf)
    );
    let named = ok(
        &sim,
        "crm.contact.list",
        json!({"select": ["ID", "PHONE", multiple_uf, "NO_SUCH_FIELD"]}),
    )
    .await;
    let with_phone = named["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("PHONE").is_some())
        .expect("some contact has a phone");
    assert!(with_phone["PHONE"][0]["VALUE"].is_string());
    assert!(named["result"][0].get(&multiple_uf).unwrap().is_array());
    assert!(named["result"][0].as_object().unwrap().len() <= 3);
}

#[tokio::test]
async fn filter_operators() {
    let sim = sim_with(0, 0).await;
    let deals = [
        (
            "[A] Alpha deal",
            100.0,
            "NEW",
            "2024-03-01T10:00:00+03:00",
            "Y",
        ),
        ("Beta", 19_999.99, "WON", "2024-03-02", "N"),
        (
            "Gamma idea",
            20_000.0,
            "LOSE",
            "2024-03-03T23:30:00+00:00",
            "Y",
        ),
        ("delta", 5.0, "NEW", "2024-03-05", "N"),
    ];
    for (title, amount, stage, begin, manual) in deals {
        let fields = json!({"TITLE": title, "OPPORTUNITY": amount, "STAGE_ID": stage, "BEGINDATE": begin, "IS_MANUAL_OPPORTUNITY": manual});
        ok(&sim, "crm.deal.add", json!({"fields": fields})).await;
    }
    for id in 5..=12 {
        ok(
            &sim,
            "crm.deal.add",
            json!({"fields": {"TITLE": format!("filler {id}"), "OPPORTUNITY": 1}}),
        )
        .await;
    }
    let cases: Vec<(Value, Vec<u64>)> = vec![
        (json!({"STAGE_ID": "WON"}), vec![2]),
        (json!({"=STAGE_ID": "won"}), vec![2]),
        (json!({"!STAGE_ID": "NEW"}), vec![2, 3]),
        (json!({"!=STAGE_ID": "NEW", "<ID": 5}), vec![2, 3]),
        (
            json!({">OPPORTUNITY": 10_000, "<=OPPORTUNITY": 20_000}),
            vec![2, 3],
        ),
        (
            json!({">=OPPORTUNITY": "19999.99", "<OPPORTUNITY": 20_000}),
            vec![2],
        ),
        (json!({"@ID": [1, 3, 99]}), vec![1, 3]),
        (json!({"@STAGE_ID": ["WON", "LOSE"]}), vec![2, 3]),
        (json!({"!@ID": [1, 2, 3], "<ID": 6}), vec![4, 5]),
        (json!({"%TITLE": "ALPHA"}), vec![1]),
        (json!({"=%TITLE": "%a"}), vec![2, 3, 4]),
        (json!({"%=TITLE": "[A]%"}), vec![1]),
        (json!({"!%TITLE": "filler"}), vec![1, 2, 3, 4]),
        (json!({">ID": "9"}), vec![10, 11, 12]),
        (json!({">BEGINDATE": "2024-03-02", "<ID": 5}), vec![3, 4]),
        (json!({"BEGINDATE": "2024-03-04T00:00:00+03:00"}), vec![3]),
        (json!({"IS_MANUAL_OPPORTUNITY": "Y", "<ID": 5}), vec![1, 3]),
        (json!({"IS_MANUAL_OPPORTUNITY": true, "<ID": 5}), vec![1, 3]),
        (json!({"COMMENTS": "", "<ID": 3}), vec![1, 2]),
        (json!({"!COMMENTS": ""}), vec![]),
        (json!({"NO_SUCH_FIELD": 1, "<ID": 3}), vec![1, 2]),
    ];
    for (filter, expected) in cases {
        let answer = ok(
            &sim,
            "crm.deal.list",
            json!({"filter": filter, "select": ["ID"]}),
        )
        .await;
        assert_eq!(ids(&answer["result"]), expected, "filter {filter}");
        assert_eq!(answer["total"], expected.len());
    }
    // Datetime filters compare instants, in either written form.
    let now_ids = ids(&ok(
        &sim,
        "crm.deal.list",
        json!({"filter": {">=DATE_MODIFY": "2024-01-01"}}),
    )
    .await["result"]);
    assert_eq!(now_ids.len(), 12);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let none = ok(
        &sim,
        "crm.deal.list",
        json!({"filter": {">DATE_MODIFY": later.to_rfc3339()}}),
    )
    .await;
    assert_eq!(none["result"], json!([]));
    // A value the field cannot hold is a clear 400, as are non-array filter/order.
    let (status, body) = call(&sim, "crm.deal.list", json!({"filter": {">ID": "abc"}})).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"].as_str().unwrap().contains(">ID"),
        "{body}"
    );
    let (status, body) = call(&sim, "crm.deal.list", json!({"filter": "ID=1"})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error":"","error_description":"Parameter 'filter' must be array."})
        )
    );
    let (status, body) = call(&sim, "crm.deal.list", json!({"order": 5})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error":"","error_description":"Parameter 'order' must be array."})
        )
    );
    // The documented example body (upper-case parameter names) is accepted.
    let example = json!({"SELECT":["ID","TITLE","TYPE_ID","CATEGORY_ID","STAGE_ID","OPPORTUNITY","IS_MANUAL_OPPORTUNITY","ASSIGNED_BY_ID","DATE_CREATE"],"FILTER":{"=%TITLE":"%a","CATEGORY_ID":0,">OPPORTUNITY":10000,"<=OPPORTUNITY":20000,"IS_MANUAL_OPPORTUNITY":"Y","@ASSIGNED_BY_ID":[1,6],">DATE_CREATE":"2024-03-02"},"ORDER":{"TITLE":"ASC","OPPORTUNITY":"ASC"}});
    let answer = ok(&sim, "crm.deal.list", example).await;
    assert_eq!(ids(&answer["result"]), vec![3]);
    assert_eq!(answer["result"][0].as_object().unwrap().len(), 9);
}

#[tokio::test]
async fn multifield_filters_match_any_item() {
    let sim = sim(SimConfig {
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await;
    ok(
        &sim,
        "crm.contact.add",
        json!({"fields": {"NAME": "A", "PHONE": [{"VALUE": "+100"}, {"VALUE": "+200"}]}}),
    )
    .await;
    ok(
        &sim,
        "crm.contact.add",
        json!({"fields": {"NAME": "B", "PHONE": [{"VALUE": "+300"}]}}),
    )
    .await;
    let answer = ok(
        &sim,
        "crm.contact.list",
        json!({"filter": {"PHONE": "+200"}}),
    )
    .await;
    assert_eq!(ids(&answer["result"]), vec![1]);
}

#[tokio::test]
async fn order_by_any_field_with_stable_ties() {
    let sim = sim_with(140, 0).await;
    let mut rows = Vec::new();
    let mut start = Some(0);
    while let Some(s) = start {
        let page = ok(&sim, "crm.deal.list", json!({"order": {"STAGE_ID": "DESC", "OPPORTUNITY": "asc"}, "select": ["ID", "STAGE_ID", "OPPORTUNITY"], "start": s})).await;
        rows.extend(page["result"].as_array().unwrap().clone());
        start = page["next"].as_u64();
    }
    assert_eq!(rows.len(), 140);
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (sa, sb) = (
            a["STAGE_ID"].as_str().unwrap(),
            b["STAGE_ID"].as_str().unwrap(),
        );
        let (oa, ob): (f64, f64) = (
            a["OPPORTUNITY"].as_str().unwrap().parse().unwrap(),
            b["OPPORTUNITY"].as_str().unwrap().parse().unwrap(),
        );
        assert!(sa > sb || (sa == sb && oa <= ob), "{a} before {b}");
    }
    assert_eq!(
        rows.iter()
            .map(|r| r["ID"].as_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len(),
        140
    );
    let desc = ok(
        &sim,
        "crm.deal.list",
        json!({"order": {"ID": "DESC"}, "filter": {"<ID": 100}, "start": -1}),
    )
    .await;
    assert_eq!(ids(&desc["result"]), (50..=99).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn batch_answers_in_the_documented_shape() {
    let sim = sim_with(120, 0).await;
    let answer = ok(
        &sim,
        "batch",
        json!({"halt": 0, "cmd": {
            "get_deal": "crm.deal.get?ID=3",
            "list": "crm.deal.list?select[]=ID&start=0",
            "by_ref": "crm.deal.get?id=$result[list][4][ID]",
            "title_ref": "crm.deal.list?filter[TITLE]=$result[get_deal][TITLE]&select[]=TITLE",
        }}),
    )
    .await;
    let result = &answer["result"];
    let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "result",
            "result_error",
            "result_total",
            "result_next",
            "result_time"
        ]
    );
    assert_eq!(result["result"]["get_deal"]["ID"], "3");
    assert_eq!(result["result"]["by_ref"]["ID"], "5");
    assert_eq!(
        result["result"]["title_ref"][0]["TITLE"],
        result["result"]["get_deal"]["TITLE"]
    );
    assert_eq!(result["result_error"], json!([]));
    assert_eq!(result["result_total"], json!({"list": 120, "title_ref": 1}));
    assert_eq!(result["result_next"], json!({"list": 50}));
    for key in ["get_deal", "list", "by_ref", "title_ref"] {
        assert_time_block(&result["result_time"][key]);
    }
    let list_cost = result["result_time"]["list"]["operating"].as_f64().unwrap();
    assert!(
        list_cost > 0.004,
        "a counted list charges the count: {list_cost}"
    );
    assert_time_block(&answer["time"]);
    assert_eq!(
        answer["time"]["operating"], 0.001,
        "the outer block is the batch method's own total, its overhead only"
    );
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.requests_by_method["crm.deal.list"], 2);
    assert_eq!(stats.requests_by_method["batch"], 1);
}

#[tokio::test]
async fn batch_errors_halt_and_limits_on_commands() {
    let sim = sim_with(10, 0).await;
    let cmd = json!({"a": "crm.deal.get?id=1", "bad": "crm.deal.get?id=999", "c": "crm.deal.get?id=2", "nested": "batch?cmd[x]=crm.deal.get%3Fid%3D1", "unknown": "no.such.method"});
    let answer = ok(&sim, "batch", json!({"halt": false, "cmd": cmd})).await;
    let errors = &answer["result"]["result_error"];
    assert_eq!(
        errors["bad"],
        json!({"error":"","error_description":"Not found"})
    );
    assert_eq!(
        errors["nested"],
        json!({"error":"ERROR_BATCH_METHOD_NOT_ALLOWED","error_description":"Method is not allowed for batch usage"})
    );
    assert_eq!(errors["unknown"]["error"], "ERROR_METHOD_NOT_FOUND");
    assert_eq!(
        answer["result"]["result"]["c"]["ID"], "2",
        "halt=false runs everything"
    );
    let halted = ok(&sim, "batch", json!({"halt": true, "cmd": cmd})).await;
    assert!(
        halted["result"]["result"].get("c").is_none(),
        "halt stops at the first failure"
    );
    assert_eq!(halted["result"]["result"]["a"]["ID"], "1");
    // Commands as an array answer with arrays (PHP keys 0..n-1).
    let listed = ok(
        &sim,
        "batch",
        json!({"cmd": ["crm.deal.get?id=1", "crm.deal.get?id=2"]}),
    )
    .await;
    assert!(listed["result"]["result"].is_array());
    assert_eq!(listed["result"]["result"][1]["ID"], "2");
    assert_eq!(listed["result"]["result_time"].as_array().unwrap().len(), 2);
    // More than 50 commands: every extra one gets ERROR_BATCH_LENGTH_EXCEEDED.
    let many: serde_json::Map<String, Value> = (0..53)
        .map(|i| (format!("c{i}"), json!("crm.deal.get?id=1")))
        .collect();
    let answer = ok(&sim, "batch", json!({"cmd": many})).await;
    assert_eq!(answer["result"]["result"].as_object().unwrap().len(), 50);
    let errors = answer["result"]["result_error"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["c50", "c51", "c52"]);
    assert_eq!(
        errors["c50"],
        json!({"error":"ERROR_BATCH_LENGTH_EXCEEDED","error_description":"Max batch length exceeded"})
    );
    let (status, body) = call(&sim, "batch", json!({"cmd": "crm.deal.get?id=1"})).await;
    assert_eq!(status, 400);
    assert!(body["error_description"].as_str().unwrap().contains("cmd"));
}

#[tokio::test]
async fn batch_in_a_query_string_with_double_encoding() {
    let sim = sim_with(0, 0).await;
    let (status, answer) =
        get_query(&sim, "batch", "halt=0&cmd[0]=crm.lead.add%3Ffields%5BTITLE%5D%3DJohn%2526Martin&cmd[1]=crm.lead.get%3Fid%3D%24result%5B0%5D").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["result"][1]["TITLE"], "John&Martin");
}

#[tokio::test]
async fn batch_counts_as_one_request_for_the_bucket() {
    let sim = sim(SimConfig {
        deals: 5,
        ..SimConfig::default()
    })
    .await;
    sim.set_limits(&LimitsUpdate {
        burst: Some(2.0),
        drain: Some(0.001),
        ..Default::default()
    })
    .await
    .unwrap();
    let cmd: Vec<Value> = (0..30).map(|_| json!("crm.deal.get?id=1")).collect();
    let answer = ok(&sim, "batch", json!({"cmd": cmd})).await;
    assert_eq!(answer["result"]["result"].as_array().unwrap().len(), 30);
    // Counter 1 after the batch; 2 and 3 pass (3 exceeds the burst of 2), the
    // next is refused.
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    let (status, _) = call(&sim, "crm.deal.get", json!({"id": 1})).await;
    assert_eq!(status, 503);
}
