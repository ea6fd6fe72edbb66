//! Two simulated portals (`partner`, the source, with seeded deals; `central`, the
//! target, empty), a throw-away ledger database and a forward service over them.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::time::Duration;

use b24_client::ClientOptions;
use b24_forward::{ForwardOptions, ForwardService};
use b24_lambda::sqs::{SqsBatchResponse, SqsEvent};
use b24_sim::{Entity, LimitConfig, RunningSim, SimConfig};
use b24_testkit::TestDb;
use serde_json::{Map, Value, json};

pub const SOURCE_DOMAIN: &str = "partner.sim.test";
pub const TARGET_DOMAIN: &str = "central.sim.test";

/// Bind every part: dropping one drops the database or stops a simulator.
pub struct Portals {
    pub source: RunningSim,
    pub target: RunningSim,
    pub db: TestDb,
}

fn sim_config(domain: &str, deals: usize) -> SimConfig {
    SimConfig {
        deals,
        domain: domain.to_string(),
        limits: LimitConfig {
            enabled: false,
            ..LimitConfig::default()
        },
        ..SimConfig::default()
    }
}

impl Portals {
    /// `deals` seeded deals on the source, none on the target.
    pub async fn start(deals: usize) -> Portals {
        Portals {
            source: b24_sim::start(sim_config(SOURCE_DOMAIN, deals))
                .await
                .unwrap(),
            target: b24_sim::start(sim_config(TARGET_DOMAIN, 0)).await.unwrap(),
            db: TestDb::create().await,
        }
    }

    /// The configuration document: route `plain` copies the title and product rows
    /// from `partner` to `central`.
    pub fn document(&self) -> Value {
        json!({
            "database": {"url": self.db.url, "schema": "b24"},
            "portals": {
                "partner": {"webhook_url": self.source.webhook_url(), "domain": SOURCE_DOMAIN},
                "central": {"webhook_url": self.target.webhook_url(), "domain": TARGET_DOMAIN},
            },
            "routes": {
                "plain": {
                    "source": "partner", "target": "central", "secret": "Plain-Secret_0123456789",
                    "fields": {"TITLE": "TITLE"},
                },
            },
        })
    }

    pub async fn service(&self) -> ForwardService {
        let config = b24_config::Config::from_json_str(&self.document().to_string()).unwrap();
        // Short timeouts and backoff: a fault test fails its deliveries quickly.
        let client = ClientOptions {
            timeout: Duration::from_secs(5),
            max_retries: 1,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            ..ClientOptions::default()
        };
        let options = ForwardOptions {
            client,
            ..ForwardOptions::default()
        };
        ForwardService::connect_with(config, true, options)
            .await
            .unwrap()
    }

    /// Target deals forwarded from source deal `deal_id`.
    pub async fn copies_of(&self, deal_id: u64) -> Vec<Map<String, Value>> {
        self.target
            .dump(Entity::Deal)
            .await
            .unwrap()
            .into_iter()
            .filter(|deal| {
                deal.get("ORIGIN_ID") == Some(&json!(deal_id.to_string()))
                    && deal.get("ORIGINATOR_ID") == Some(&json!(format!("b24sync:{SOURCE_DOMAIN}")))
            })
            .collect()
    }
}

/// A forward job's body as the deal robot queues it.
pub fn job(route: &str, deal_id: u64) -> String {
    json!({"route": route, "source": "partner", "deal_id": deal_id,
           "received_at": chrono::Utc::now(), "waits_for_reply": false})
    .to_string()
}

/// An SQS event of `(messageId, body)` records, each delivered the `receive_count`th time.
pub fn sqs_event(records: &[(&str, String)], receive_count: u32) -> SqsEvent {
    let mut event =
        b24_lambda::sqs::event_of(records.iter().map(|(id, body)| (Some(*id), body.as_str())));
    for record in &mut event.records {
        record
            .attributes
            .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    }
    event
}

pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}
