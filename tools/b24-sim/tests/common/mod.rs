//! Helpers shared by the integration tests: start a simulator, call it over plain HTTP.

#![allow(dead_code)] // each test binary uses a different subset

use b24_sim::{LimitConfig, RunningSim, SimConfig};
use serde_json::{Map, Value, json};

pub fn unlimited() -> LimitConfig {
    LimitConfig {
        enabled: false,
        ..LimitConfig::default()
    }
}

pub async fn sim(config: SimConfig) -> RunningSim {
    b24_sim::start(config).await.expect("simulator starts")
}

/// A simulator with `deals` deals, the given user fields and no limits.
pub async fn sim_with(deals: usize, user_fields: usize) -> RunningSim {
    sim(SimConfig {
        deals,
        contacts: 20,
        leads: 10,
        companies: 10,
        user_fields,
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await
}

thread_local! {
    // One client per test thread (each test has its own thread and runtime): building a
    // client loads the TLS roots, which made request-rate tests slow on a busy machine.
    static HTTP: reqwest::Client = reqwest::Client::builder().no_proxy().build().unwrap();
}

pub fn http() -> reqwest::Client {
    HTTP.with(reqwest::Client::clone)
}

/// POSTs a JSON body to a method; returns the status and the parsed answer.
pub async fn call(sim: &RunningSim, method: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!("{}{method}", sim.webhook_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Like `call`, asserting success and returning the envelope.
pub async fn ok(sim: &RunningSim, method: &str, body: Value) -> Value {
    let (status, answer) = call(sim, method, body).await;
    assert_eq!(status, 200, "{method} failed: {answer}");
    answer
}

/// POSTs a raw body labelled as JSON (to send one that is not); returns the status and
/// the parsed answer.
pub async fn post_raw_json(url: String, body: &'static str) -> (u16, Value) {
    let response = http()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// GET with a raw query string.
pub async fn get_query(sim: &RunningSim, method: &str, query: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}{method}?{query}", sim.webhook_url()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub fn ids(rows: &Value) -> Vec<u64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
        .collect()
}

pub const TIME_KEYS: [&str; 8] = [
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating",
    "operating_reset_at",
];

pub fn assert_time_block(time: &Value) {
    for key in TIME_KEYS {
        assert!(time.get(key).is_some(), "time block lacks {key}: {time}");
    }
    assert!(time["operating_reset_at"].is_i64(), "{time}");
    assert!(
        time["date_start"].as_str().unwrap().ends_with("+03:00"),
        "{time}"
    );
}

/// `crm.<entity>.fields`: every field's description by code.
pub async fn fields_of(sim: &RunningSim, entity: &str) -> Value {
    ok(sim, &format!("crm.{entity}.fields"), json!({})).await["result"].clone()
}

/// Codes of the user fields in a `fields` description, in its order: multiple or
/// single ones, of one type or (`None`) any.
pub fn user_fields(fields: &Value, field_type: Option<&str>, multiple: bool) -> Vec<String> {
    fields
        .as_object()
        .unwrap()
        .iter()
        .filter(|(code, d)| {
            code.starts_with("UF_")
                && field_type.is_none_or(|t| d["type"] == t)
                && d["isMultiple"] == multiple
        })
        .map(|(code, _)| code.clone())
        .collect()
}

/// The first of `user_fields`.
pub fn user_field(fields: &Value, field_type: Option<&str>, multiple: bool) -> String {
    user_fields(fields, field_type, multiple)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no user field of type {field_type:?}, multiple {multiple}"))
}

/// IDs of the entity's records that match a `crm.<entity>.list` filter.
pub async fn listed_ids(sim: &RunningSim, entity: &str, filter: Value) -> Vec<u64> {
    let answer = ok(
        sim,
        &format!("crm.{entity}.list"),
        json!({"filter": filter, "select": ["ID"]}),
    )
    .await;
    ids(&answer["result"])
}

/// The `cmd` of one chained fast-listing batch, as fast_bitrix24 and b24pysdk send it:
/// keys "1".."50", each a `crm.deal.list` URL-encoded as a whole, `start=-1`, ordered by
/// ID and filtered `>ID` of the previous command's 50th row (the first: `>after`).
pub fn chained_deal_lists(after: u64, select: &[&str]) -> Map<String, Value> {
    let select: String = select
        .iter()
        .enumerate()
        .map(|(i, f)| format!("&select%5B{i}%5D={f}"))
        .collect();
    (1..=50)
        .map(|n| {
            let after = if n == 1 {
                after.to_string()
            } else {
                format!("%24result%5B{}%5D%5B49%5D%5BID%5D", n - 1)
            };
            let command = format!(
                "crm.deal.list?order%5BID%5D=ASC&filter%5B%3EID%5D={after}{select}&start=-1"
            );
            (n.to_string(), json!(command))
        })
        .collect()
}
