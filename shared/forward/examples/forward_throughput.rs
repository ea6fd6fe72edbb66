//! Forwards per minute between two simulated portals under the simulator's default
//! limits (burst 50, 2 requests per second per portal), and the Bitrix24 requests each
//! forwarded deal cost on each portal, for the robot's first run (adds) and a re-run
//! (updates). Every deal has two product rows and no files.
//!
//! ```sh
//! cargo run --release -p b24-forward --example forward_throughput   # DEALS=100 CONCURRENCY=8
//! ```
//!
//! Needs the local PostgreSQL (as the tests do); it creates and drops its own database.

use std::time::Instant;

use b24_client::{Client, ClientOptions};
use b24_domain::forward::job::ForwardJob;
use b24_domain::webhook::WebhookUrl;
use b24_forward::{Attempt, ForwardService};
use b24_sim::{LimitsUpdate, SimConfig};
use b24_testkit::TestDb;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Map, json};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deals = env_number("DEALS", 100);
    let concurrency = env_number("CONCURRENCY", 8) as usize;
    let source = b24_sim::start(SimConfig {
        deals: deals as usize,
        domain: "partner.sim.test".into(),
        ..SimConfig::default()
    })
    .await?;
    let target = b24_sim::start(SimConfig {
        domain: "central.sim.test".into(),
        ..SimConfig::default()
    })
    .await?;

    // Product rows on every source deal, then fresh buckets and counters.
    let prepare = Client::new(
        WebhookUrl::parse(&source.webhook_url())?,
        ClientOptions::default(),
    )?;
    for deal_id in 1..=deals {
        let rows = json!([
            {"PRODUCT_NAME": "Turbine", "PRICE": 1000, "QUANTITY": 2},
            {"PRODUCT_NAME": "Service", "PRICE": 150, "QUANTITY": 8},
        ]);
        prepare
            .call(
                "crm.deal.productrows.set",
                &json!({"id": deal_id, "rows": rows}),
            )
            .await?;
    }
    for sim in [&source, &target] {
        sim.set_limits(&LimitsUpdate::default()).await?;
        sim.reset_stats().await?;
    }

    let db = TestDb::create().await;
    let config = json!({
        "database": {"url": db.url},
        "portals": {
            "partner": {"webhook_url": source.webhook_url(), "domain": "partner.sim.test"},
            "central": {"webhook_url": target.webhook_url(), "domain": "central.sim.test"},
        },
        "routes": {"bench": {
            "source": "partner", "target": "central", "secret": "Bench-Secret_0123456789",
            "fields": {"TITLE": "TITLE", "OPPORTUNITY": "OPPORTUNITY", "CURRENCY_ID": "CURRENCY_ID"},
            "constants": {"SOURCE_ID": "PARTNER"},
        }},
    });
    let config = b24_config::Config::from_json_str(&config.to_string())?;
    let service = ForwardService::connect(config, true).await?;

    // First the robot's first run (every deal added), then a re-run (every deal updated).
    for pass in ["first run (adds)", "re-run (updates)"] {
        for sim in [&source, &target] {
            sim.reset_stats().await?;
        }
        let started = Instant::now();
        let redelivered = forward_all(&service, deals, concurrency).await;
        let elapsed = started.elapsed().as_secs_f64();
        let source_stats = source.stats().await?;
        let target_stats = target.stats().await?;
        let per_deal = |requests: u64| requests as f64 / deals as f64;
        println!("{pass}: {deals} deals, concurrency {concurrency}");
        println!("  elapsed:                    {elapsed:.1} s");
        println!(
            "  forwards per minute:        {:.0}",
            deals as f64 / elapsed * 60.0
        );
        println!(
            "  requests per deal, source:  {:.2} ({} in all, {} refused with 503)",
            per_deal(source_stats.http_requests),
            source_stats.http_requests,
            source_stats.status_503
        );
        println!(
            "  requests per deal, target:  {:.2} ({} in all, {} refused with 503)",
            per_deal(target_stats.http_requests),
            target_stats.http_requests,
            target_stats.status_503
        );
        println!("  redelivered jobs:           {redelivered}");
    }
    Ok(())
}

/// Forwards deals 1..=`deals`, `concurrency` at a time, each delivered again until it
/// succeeds; returns how many needed more than one delivery.
async fn forward_all(service: &ForwardService, deals: u64, concurrency: usize) -> usize {
    let deliveries: Vec<u32> = futures::stream::iter(1..=deals)
        .map(|deal_id| async move {
            let job = ForwardJob {
                route: "bench".into(),
                source: "partner".into(),
                deal_id,
                received_at: Utc::now(),
                event_token: None,
                waits_for_reply: false,
                properties: Map::new(),
            };
            let mut receive_count = 0;
            loop {
                receive_count += 1;
                let attempt = Attempt {
                    receive_count,
                    max_receives: 100,
                };
                match service.forward(&job, attempt, None).await {
                    Ok(_) => return receive_count,
                    Err(error) if error.is_permanent() => panic!("deal {deal_id}: {error}"),
                    Err(_) => {}
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    deliveries.iter().filter(|&&n| n > 1).count()
}
