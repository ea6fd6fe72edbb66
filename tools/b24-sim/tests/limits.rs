//! The leaky bucket (503), the operating-time budget (429), the cost model and the
//! `time` block, over plain HTTP.

mod common;

use std::time::Duration;

use b24_sim::{LimitConfig, LimitsUpdate, SimConfig};
use common::*;
use serde_json::json;

fn limited(burst: f64, drain: f64, budget: f64, window: f64) -> LimitConfig {
    LimitConfig {
        enabled: true,
        operating_limiter: true,
        burst,
        drain_per_sec: drain,
        operating_budget_secs: budget,
        operating_window_secs: window,
    }
}

#[tokio::test]
async fn leaky_bucket_refuses_once_the_counter_exceeds_the_burst_and_refusals_count() {
    // limits.md: every incoming request raises the counter; once it exceeds X each
    // next request is refused with 503. With X = 5 the 6th request passes
    // (counter 6), the 7th does not.
    let sim = sim(SimConfig {
        deals: 3,
        limits: limited(5.0, 0.001, 480.0, 600.0),
        ..SimConfig::default()
    })
    .await;
    for _ in 0..6 {
        ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    }
    for _ in 0..3 {
        let (status, body) = call(&sim, "crm.deal.get", json!({"id": 1})).await;
        assert_eq!(
            (status, body),
            (
                503,
                json!({"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"})
            )
        );
    }
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.status_503, 3);
    assert_eq!(
        stats.requests_by_method["crm.deal.get"], 6,
        "refused requests do not run"
    );
    // Drain 10/s. Refusals raised the counter too: after 6 passes and 3 refusals
    // (counter 9) 150 ms of draining (-1.5) is not enough, although it would be if
    // refusals added nothing (6 - 1.5 <= 5).
    sim.set_limits(&LimitsUpdate {
        drain: Some(10.0),
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..6 {
        ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    }
    for _ in 0..3 {
        assert_eq!(call(&sim, "crm.deal.get", json!({"id": 1})).await.0, 503);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        call(&sim, "crm.deal.get", json!({"id": 1})).await.0,
        503,
        "a refused request adds to the counter"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
}

#[tokio::test]
async fn defaults_are_the_documented_plan_and_no_limits_switches_both_off() {
    let sim = sim(SimConfig {
        deals: 1,
        ..SimConfig::default()
    })
    .await;
    let limits = sim.set_limits(&LimitsUpdate::default()).await.unwrap();
    assert_eq!(limits, limited(50.0, 2.0, 480.0, 600.0));
    let mut statuses = Vec::new();
    for _ in 0..52 {
        statuses.push(call(&sim, "crm.deal.get", json!({"id": 1})).await.0);
    }
    assert!(
        statuses[..51].iter().all(|s| *s == 200),
        "the 51st request takes the counter to 51 and passes"
    );
    assert_eq!(statuses[51], 503, "the 52nd is refused");
    sim.set_limits(&LimitsUpdate {
        enabled: Some(false),
        operating_budget: Some(0.001),
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..120 {
        ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    }
    let bad = sim
        .set_limits(&LimitsUpdate {
            drain: Some(0.0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("drain"), "{bad}");
}

#[tokio::test]
async fn operating_budget_blocks_the_method_with_429_until_the_window_passes() {
    let sim = sim(SimConfig {
        deals: 3,
        limits: limited(1000.0, 100.0, 0.01, 2.0),
        ..SimConfig::default()
    })
    .await;
    let mut reset_at = Vec::new();
    // 0.004 s per get: after three calls the sum (0.012) exceeds 0.01.
    for _ in 0..3 {
        let answer = ok(&sim, "crm.deal.get", json!({"id": 1})).await;
        reset_at.push(answer["time"]["operating_reset_at"].as_i64().unwrap());
    }
    let (status, body) = call(&sim, "crm.deal.get", json!({"id": 1})).await;
    assert_eq!(
        (status, body),
        (
            429,
            json!({"error":"OPERATION_TIME_LIMIT","error_description":"Method is blocked due to operation time limit"})
        )
    );
    let now = chrono::Utc::now().timestamp();
    assert!(
        reset_at
            .iter()
            .all(|r| *r == reset_at[0] && *r > now - 1 && *r <= now + 3),
        "{reset_at:?} vs {now}"
    );
    // Other methods keep working, in batches the blocked method fails per command.
    ok(
        &sim,
        "crm.deal.list",
        json!({"select": ["ID"], "start": -1}),
    )
    .await;
    let answer = ok(
        &sim,
        "batch",
        json!({"cmd": {"g": "crm.deal.get?id=1", "l": "crm.deal.fields"}}),
    )
    .await;
    assert_eq!(
        answer["result"]["result_error"]["g"]["error"],
        "OPERATION_TIME_LIMIT"
    );
    assert!(answer["result"]["result"]["l"].is_object());
    assert_eq!(sim.stats().await.unwrap().status_429, 1);
    // The block lifts when the window has passed.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    ok(&sim, "crm.deal.get", json!({"id": 1})).await;
}

/// The operating seconds one call added to its method's running total.
struct Charges {
    totals: std::collections::HashMap<String, f64>,
}

impl Charges {
    fn new() -> Charges {
        Charges {
            totals: Default::default(),
        }
    }

    fn of(&mut self, method: &str, answer: &serde_json::Value) -> f64 {
        let total = answer["time"]["operating"].as_f64().unwrap();
        let before = self.totals.insert(method.to_string(), total).unwrap_or(0.0);
        total - before
    }
}

#[tokio::test]
async fn cost_model_makes_counting_expensive_and_width_cost_per_row() {
    let sim = sim_with(1_000, 0).await;
    let mut charges = Charges::new();
    let fields = 44.0; // the standard deal fields, ID .. LAST_ACTIVITY_TIME
    let counted = ok(&sim, "crm.deal.list", json!({"start": 0})).await;
    let expected = 0.004 + 2e-6 * 50.0 * fields + 20.9e-6 * 1_000.0;
    let operating = charges.of("list", &counted);
    assert!(
        (operating - expected).abs() < 1e-9,
        "{operating} vs {expected}"
    );
    let uncounted = ok(
        &sim,
        "crm.deal.list",
        json!({"start": -1, "filter": {">ID": 10}}),
    )
    .await;
    let expected = 0.004 + 2e-6 * 50.0 * fields;
    assert!((charges.of("list", &uncounted) - expected).abs() < 1e-9);
    let narrow = ok(
        &sim,
        "crm.deal.list",
        json!({"start": -1, "select": ["ID", "TITLE"]}),
    )
    .await;
    assert!((charges.of("list", &narrow) - (0.004 + 2e-6 * 50.0 * 2.0)).abs() < 1e-9);
    // A filter beyond ID pays per row it scans (here all 1,000: no row matches).
    let scanned = ok(
        &sim,
        "crm.deal.list",
        json!({"start": -1, "select": ["ID"], "filter": {"TITLE": "nothing"}}),
    )
    .await;
    assert!((charges.of("list", &scanned) - (0.004 + 1e-6 * 1_000.0)).abs() < 1e-9);
    let get = ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    assert!((charges.of("get", &get) - (0.004 + 2e-6 * fields)).abs() < 1e-9);
    let stats = sim.stats().await.unwrap();
    let total: f64 = stats.operating_seconds_by_method["crm.deal.list"];
    let sum = (0.004 + 2e-6 * 50.0 * fields + 20.9e-6 * 1_000.0)
        + (0.004 + 2e-6 * 50.0 * fields)
        + (0.004 + 2e-6 * 100.0)
        + 0.005;
    assert!((total - sum).abs() < 1e-9, "{total} vs {sum}");
    assert!(
        (scanned["time"]["operating"].as_f64().unwrap() - sum).abs() < 1e-9,
        "the last answer carries the method's running total"
    );
    assert_eq!(stats.rows_returned, 50 + 50 + 50);
}

#[tokio::test]
async fn a_full_listing_the_fast_way_costs_about_two_seconds_per_10000_wide_rows() {
    // Wide rows: the 44 standard deal fields and 16 user fields, 60 in all.
    let rows = 9_990;
    let sim = sim(SimConfig {
        deals: rows,
        user_fields: 16,
        limits: common::unlimited(),
        ..SimConfig::default()
    })
    .await;
    let multiple_ufs = user_fields(&fields_of(&sim, "deal").await, None, true);
    let mut select = vec!["*", "UF_*"];
    select.extend(multiple_ufs.iter().map(String::as_str));
    // Chained batches of 50 `start=-1` commands filtered `>ID`: 2,500 rows a request.
    let (mut seen, mut last, mut requests) = (0, 0u64, 0);
    let mut list_total;
    // Empty single file fields are absent, so the widest row shows the selection.
    let mut widest = 0;
    'outer: loop {
        let cmd = chained_deal_lists(last, &select);
        let answer = ok(&sim, "batch", json!({"cmd": cmd})).await;
        requests += 1;
        let result = &answer["result"];
        for n in 1..=50 {
            let page = result["result"][n.to_string()].as_array().unwrap();
            widest = page
                .iter()
                .map(|row| row.as_object().unwrap().len())
                .fold(widest, usize::max);
            seen += page.len();
            // The running total after this command: the method's whole listing so far.
            list_total = result["result_time"][n.to_string()]["operating"]
                .as_f64()
                .unwrap();
            if page.len() < 50 {
                break 'outer;
            }
            last = page[49]["ID"].as_str().unwrap().parse().unwrap();
        }
    }
    assert_eq!((seen, requests, widest), (rows, 4, 60));
    let per_10000 = list_total / rows as f64 * 10_000.0;
    assert!(
        (1.95..=2.05).contains(&per_10000),
        "{per_10000} operating seconds per 10,000 wide rows"
    );
    let stats = sim.stats().await.unwrap();
    assert!((stats.operating_seconds_by_method["crm.deal.list"] - list_total).abs() < 1e-6);
    assert!((stats.operating_seconds_by_method["batch"] - 0.004).abs() < 1e-9);
    // One COUNT of this table costs a tenth of the whole listing (20.9 us a row:
    // about 50 s on 2.39 million rows).
    let counted = ok(&sim, "crm.deal.list", json!({"select": ["ID"], "start": 0})).await;
    let count_cost = counted["time"]["operating"].as_f64().unwrap() - list_total;
    let expected = 0.004 + 2e-6 * 50.0 + 20.9e-6 * rows as f64;
    assert!((count_cost - expected).abs() < 1e-6, "{count_cost}");
}

#[tokio::test]
async fn operating_is_the_methods_running_total_in_the_window() {
    let sim = sim_with(5, 0).await;
    let per_get = 0.004 + 2e-6 * 44.0;
    for calls in 1..=3 {
        let answer = ok(&sim, "crm.deal.get", json!({"id": 1})).await;
        let operating = answer["time"]["operating"].as_f64().unwrap();
        assert!(
            (operating - calls as f64 * per_get).abs() < 1e-9,
            "after {calls} gets: {operating}"
        );
    }
    // Other methods have totals of their own.
    let fields = ok(&sim, "crm.deal.fields", json!({})).await;
    assert!((fields["time"]["operating"].as_f64().unwrap() - 0.004).abs() < 1e-9);
    // In a batch each command carries its method's total right after it ran, so the
    // last command of a method carries that method's total after the batch.
    let answer = ok(
        &sim,
        "batch",
        json!({"cmd": {"a": "crm.deal.get?id=1", "f": "crm.deal.fields", "b": "crm.deal.get?id=2"}}),
    )
    .await;
    let times = &answer["result"]["result_time"];
    let total = |key: &str| times[key]["operating"].as_f64().unwrap();
    assert!((total("a") - 4.0 * per_get).abs() < 1e-9, "{times}");
    assert!((total("b") - 5.0 * per_get).abs() < 1e-9, "{times}");
    assert!((total("f") - 0.008).abs() < 1e-9, "{times}");
    assert!((answer["time"]["operating"].as_f64().unwrap() - 0.001).abs() < 1e-9);
    let after = ok(&sim, "crm.deal.get", json!({"id": 1})).await;
    assert!((after["time"]["operating"].as_f64().unwrap() - 6.0 * per_get).abs() < 1e-9);
    let stats = sim.stats().await.unwrap();
    assert!((stats.operating_seconds_by_method["crm.deal.get"] - 6.0 * per_get).abs() < 1e-9);
}

#[tokio::test]
async fn without_the_operating_limiter_answers_carry_no_operating_keys() {
    // An on-premise portal with the limiter off: the keys are absent, nothing is 429.
    let sim = sim(SimConfig {
        deals: 3,
        limits: LimitConfig {
            operating_limiter: false,
            operating_budget_secs: 0.001,
            ..LimitConfig::default()
        },
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        let answer = ok(&sim, "crm.deal.get", json!({"id": 1})).await;
        let time = answer["time"].as_object().unwrap();
        let keys: Vec<&str> = time.keys().map(String::as_str).collect();
        assert_eq!(keys, TIME_KEYS[..6], "{answer}");
    }
    let answer = ok(&sim, "batch", json!({"cmd": {"a": "crm.deal.get?id=1"}})).await;
    for time in [&answer["time"], &answer["result"]["result_time"]["a"]] {
        assert!(time.get("operating").is_none() && time.get("operating_reset_at").is_none());
        assert!(time.get("duration").is_some(), "{time}");
    }
    // Switched on through the control surface the keys come back.
    let limits = sim
        .set_limits(&LimitsUpdate {
            operating_limiter: Some(true),
            operating_budget: Some(480.0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(limits.operating_limiter);
    assert_time_block(&ok(&sim, "crm.deal.get", json!({"id": 1})).await["time"]);
}

#[tokio::test]
async fn every_answer_carries_the_full_time_block() {
    let sim = sim_with(3, 0).await;
    for (method, body) in [
        ("crm.deal.get", json!({"id": 1})),
        ("crm.deal.list", json!({})),
        ("crm.deal.fields", json!({})),
        ("crm.deal.add", json!({"fields": {}})),
        (
            "crm.deal.update",
            json!({"id": 1, "fields": {"TITLE": "x"}}),
        ),
        ("crm.deal.delete", json!({"id": 2})),
        ("batch", json!({"cmd": {"a": "crm.deal.get?id=1"}})),
    ] {
        let answer = ok(&sim, method, body).await;
        assert_time_block(&answer["time"]);
        let time = &answer["time"];
        assert!(
            time["finish"].as_f64() >= time["start"].as_f64(),
            "{method}"
        );
    }
}
