//! Helpers shared by the integration tests: start a simulator, call it over plain HTTP.

#![allow(dead_code)] // each test binary uses a different subset

use b24_sim::{LimitConfig, RunningSim, SimConfig};
use serde_json::Value;

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

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
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
