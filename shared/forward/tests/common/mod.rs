//! Two simulated portals (`partner`, the source, and `central`, the target), a
//! throw-away ledger database and a forward service over them.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::time::Duration;

use b24_client::{B24Error, Client, ClientOptions};
use b24_domain::forward::job::ForwardJob;
use b24_domain::webhook::WebhookUrl;
use b24_forward::{Attempt, ForwardError, ForwardOptions, ForwardOutcome, ForwardService};
use b24_sim::{Entity, LimitConfig, RunningSim, SimConfig, UserFieldRequest, UserFieldType};
use b24_testkit::TestDb;
use chrono::Utc;
use serde_json::{Map, Value, json};

pub const SECRET: &str = "Route-Secret_0123456789";
pub const SOURCE_DOMAIN: &str = "partner.sim.test";
pub const TARGET_DOMAIN: &str = "central.sim.test";

pub struct Portals {
    pub source: RunningSim,
    pub target: RunningSim,
    pub db: TestDb,
    /// Source user fields: an enumeration and a file.
    pub source_colour: String,
    pub source_file: String,
    /// Target user fields: the enumeration (other item IDs, same labels), the file and
    /// the stamps.
    pub target_colour: String,
    pub target_file: String,
    pub from_portal: String,
    pub from_deal: String,
    pub forwarded_at: String,
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

async fn user_field(sim: &RunningSim, kind: UserFieldType, code: &str) -> String {
    sim.add_user_field(&UserFieldRequest {
        entity: Entity::Deal,
        field_type: kind,
        multiple: false,
        code: Some(code.to_string()),
        unchecked: false,
    })
    .await
    .unwrap()
}

impl Portals {
    /// `deals` seeded deals on the source, none on the target.
    pub async fn start(deals: usize) -> Portals {
        let source = b24_sim::start(sim_config(SOURCE_DOMAIN, deals))
            .await
            .unwrap();
        let target = b24_sim::start(sim_config(TARGET_DOMAIN, 0)).await.unwrap();
        let source_colour = user_field(&source, UserFieldType::Enumeration, "COLOR").await;
        let source_file = user_field(&source, UserFieldType::File, "CONTRACT").await;
        // An earlier enumeration shifts the target's item IDs: only labels match.
        user_field(&target, UserFieldType::Enumeration, "OTHER").await;
        let target_colour = user_field(&target, UserFieldType::Enumeration, "COLOUR").await;
        let target_file = user_field(&target, UserFieldType::File, "CONTRACT").await;
        let from_portal = user_field(&target, UserFieldType::String, "FROM_PORTAL").await;
        let from_deal = user_field(&target, UserFieldType::String, "FROM_DEAL").await;
        let forwarded_at = user_field(&target, UserFieldType::Datetime, "FORWARDED_AT").await;
        Portals {
            source,
            target,
            db: TestDb::create().await,
            source_colour,
            source_file,
            target_colour,
            target_file,
            from_portal,
            from_deal,
            forwarded_at,
        }
    }

    /// The configuration: route `full` (fields, stage by ID, colour by label,
    /// constants, stamps, products, the file, the reply), `plain` (the title and
    /// products only), `parties` (the title, contact and company) and `strict`
    /// (stages by ID without a default).
    pub fn config(&self) -> b24_config::Config {
        let limits = json!({"burst": 100_000, "drain": 100_000});
        let document = json!({
            "database": {"url": self.db.url, "schema": "b24"},
            "portals": {
                "partner": {
                    "webhook_url": self.source.webhook_url(), "domain": SOURCE_DOMAIN,
                    "application_tokens": [self.source.application().application_token],
                    "limits": limits,
                },
                "central": {"webhook_url": self.target.webhook_url(), "domain": TARGET_DOMAIN, "limits": limits},
            },
            "routes": {
                "full": {
                    "source": "partner", "target": "central", "secret": SECRET,
                    "fields": {
                        "TITLE": "TITLE", "OPPORTUNITY": "OPPORTUNITY", "STAGE_ID": "STAGE_ID",
                        (self.source_colour.as_str()): self.target_colour,
                        (self.source_file.as_str()): self.target_file,
                    },
                    "values": {
                        "STAGE_ID": {"by": "id", "map": {"PREPARATION": "EXECUTING", "NEW": "NEW"}, "default": "NEW"},
                        (self.target_colour.as_str()): {"by": "label"},
                    },
                    "constants": {"SOURCE_ID": "PARTNER", "COMMENTS": "from a partner"},
                    "stamp": {
                        "source_portal_field": self.from_portal,
                        "source_deal_field": self.from_deal,
                        "transferred_at_field": self.forwarded_at,
                    },
                    "copy_files": [self.source_file],
                    "wait_for_reply": true,
                    "return_values": {"targetDealId": "target_deal_id", "targetDealUrl": "target_deal_url"},
                },
                "plain": {
                    "source": "partner", "target": "central", "secret": "Plain-Secret_0123456789",
                    "fields": {"TITLE": "TITLE"},
                },
                "parties": {
                    "source": "partner", "target": "central", "secret": "Party-Secret_0123456789",
                    "fields": {"TITLE": "TITLE"}, "copy_contacts": true, "copy_company": true,
                },
                "strict": {
                    "source": "partner", "target": "central", "secret": "Strict-Secret_0123456789",
                    "fields": {"TITLE": "TITLE", "STAGE_ID": "STAGE_ID"},
                    "values": {"STAGE_ID": {"by": "id", "map": {"NEW": "NEW"}}},
                },
            },
        });
        b24_config::Config::from_json_str(&document.to_string()).unwrap()
    }

    pub async fn service(&self, client: ClientOptions) -> ForwardService {
        let options = ForwardOptions {
            client,
            ..ForwardOptions::default()
        };
        ForwardService::connect_with(self.config(), true, options)
            .await
            .unwrap()
    }

    /// A REST client of the source portal, to prepare deals.
    pub fn source_client(&self) -> Client {
        let webhook = WebhookUrl::parse(&self.source.webhook_url()).unwrap();
        Client::new(webhook, ClientOptions::default()).unwrap()
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

/// Quick clients for tests: short timeouts (the simulator's `timeout` fault hangs
/// for 120 s), few retries, short backoff.
pub fn quick_client() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        max_retries: 2,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

pub fn job(route: &str, deal_id: u64) -> ForwardJob {
    ForwardJob {
        route: route.to_string(),
        source: "partner".to_string(),
        deal_id,
        received_at: Utc::now(),
        event_token: None,
        waits_for_reply: false,
        properties: Map::new(),
    }
}

/// Delivers the job again and again, as SQS does, until it succeeds; fails the test
/// on a permanent error or after `max` deliveries.
pub async fn forward_until_done(
    service: &ForwardService,
    job: &ForwardJob,
    max: u32,
) -> (ForwardOutcome, u32) {
    for receive_count in 1..=max {
        let attempt = Attempt {
            receive_count,
            max_receives: max + 1,
        };
        match service.forward(job, attempt, None).await {
            Ok(outcome) => return (outcome, receive_count),
            Err(error) if error.is_permanent() => {
                panic!("deal {}: permanent error {error}", job.deal_id)
            }
            Err(ForwardError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => {}
        }
    }
    panic!("deal {} was not forwarded in {max} deliveries", job.deal_id);
}

/// Adds a deal on the source through its webhook and returns its ID.
pub async fn add_source_deal(client: &Client, fields: Value) -> u64 {
    let answer = client
        .call("crm.deal.add", &json!({ "fields": fields }))
        .await
        .unwrap();
    answer
        .result
        .as_u64()
        .or_else(|| answer.result.as_str()?.parse().ok())
        .unwrap()
}

/// Adds a record of `entity` (`contact`, `company`) on the source and returns its ID.
pub async fn add_source_record(client: &Client, entity: &str, fields: Value) -> u64 {
    let answer = client
        .call(&format!("crm.{entity}.add"), &json!({ "fields": fields }))
        .await
        .unwrap();
    answer
        .result
        .as_u64()
        .or_else(|| answer.result.as_str()?.parse().ok())
        .unwrap()
}

pub async fn set_rows(client: &Client, deal_id: u64, rows: Value) -> Result<(), B24Error> {
    client
        .call(
            "crm.deal.productrows.set",
            &json!({ "id": deal_id, "rows": rows }),
        )
        .await
        .map(|_| ())
}
