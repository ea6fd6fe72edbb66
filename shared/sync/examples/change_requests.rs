//! Benchmark figure: Bitrix24 HTTP requests the change worker makes per 1,000 change
//! events of one entity. Starts the simulator in-process (10,000 deals, 20 user fields,
//! its default limits), mirrors them into a throw-away database on the local PostgreSQL
//! (`B24_TEST_PG`, default postgres://postgres@127.0.0.1:5432), then applies real
//! changes' messages through `SyncService::apply_changes` and counts the requests the
//! simulator served for them. Request counts do not depend on the build profile:
//!
//!     cargo run -p b24-sync --example change_requests
//!
//! Prints one JSON line per scenario.

use std::time::Instant;

use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::{MutateOutcome, MutateRequest, RunningSim, SimConfig};
use b24_sync::{SyncRequest, SyncService};
use b24_testkit::TestDb;
use serde_json::json;

const PORTAL: &str = "bench";
const DEALS: usize = 10_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let sim = b24_sim::start(SimConfig {
        deals: DEALS,
        user_fields: 20,
        ..SimConfig::default()
    })
    .await?;
    let db = TestDb::create().await;
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {PORTAL: {"webhook_url": sim.webhook_url(), "entities": ["deal"]}},
    });
    let service = SyncService::connect(
        b24_config::Config::from_json_str(&config.to_string())?,
        true,
    )
    .await?;
    let full = SyncRequest {
        portal: PORTAL.into(),
        entities: None,
        mode: Mode::Full,
        confirm_deletes: false,
    };
    service
        .handle(&full, None)
        .await
        .map_err(|(_, error)| anyhow::anyhow!("the full sync failed: {error}"))?;

    let updates = mutate(&sim, 1, 0, 1_000, 0).await?;
    run(
        &sim,
        &service,
        "1,000 updates of distinct deals, one batch",
        messages(&updates),
        1_000,
    )
    .await?;

    // Adds, updates (some twice) and deletes, with a quarter of the messages delivered twice.
    let mixed = mutate(&sim, 2, 100, 600, 50).await?;
    let mut events = messages(&mixed);
    let doubled: Vec<ChangeMessage> = events
        .iter()
        .step_by(3)
        .take(1_000 - events.len())
        .cloned()
        .collect();
    events.extend(doubled);
    run(
        &sim,
        &service,
        "1,000 mixed events (adds, updates, deletes, duplicates), one batch",
        events,
        1_000,
    )
    .await?;

    // Small batches pay the field-metadata request each: 100 updates are enough to show
    // it (1,000 would wait minutes for the portal's rate limit).
    let small = mutate(&sim, 3, 0, 100, 0).await?;
    run(
        &sim,
        &service,
        "100 updates in batches of 10 (the SQS event source's default batch size)",
        messages(&small),
        10,
    )
    .await?;
    Ok(())
}

async fn mutate(
    sim: &RunningSim,
    seed: u64,
    adds: usize,
    updates: usize,
    deletes: usize,
) -> anyhow::Result<MutateOutcome> {
    let request = MutateRequest {
        entity: b24_sim::Entity::Deal,
        seed,
        adds,
        updates,
        deletes,
    };
    sim.mutate(&request).await
}

/// The messages the intake would make of a mutation's events.
fn messages(outcome: &MutateOutcome) -> Vec<ChangeMessage> {
    let actions = [
        (&outcome.added, ChangeAction::Add),
        (&outcome.updated, ChangeAction::Update),
        (&outcome.deleted, ChangeAction::Delete),
    ];
    actions
        .into_iter()
        .flat_map(|(ids, action)| {
            ids.iter().map(move |&id| ChangeMessage {
                portal: PORTAL.into(),
                entity: Entity::Deal,
                id,
                action,
                event_time: None,
                received_at: chrono::Utc::now(),
            })
        })
        .collect()
}

/// Applies `events` in batches of `batch_size` and prints what the portal served.
async fn run(
    sim: &RunningSim,
    service: &SyncService,
    scenario: &str,
    events: Vec<ChangeMessage>,
    batch_size: usize,
) -> anyhow::Result<()> {
    sim.reset_stats().await?;
    let started = Instant::now();
    let count = events.len();
    let mut failed = 0;
    let keyed: Vec<(usize, ChangeMessage)> = events.into_iter().enumerate().collect();
    for batch in keyed.chunks(batch_size) {
        failed += service
            .apply_changes(batch.to_vec(), None)
            .await
            .failed
            .len();
    }
    let stats = sim.stats().await?;
    let line = json!({
        "scenario": scenario,
        "events": count,
        "batch_size": batch_size,
        "failed": failed,
        "http_requests": stats.http_requests,
        "requests_per_1000_events": stats.http_requests as f64 * 1000.0 / count as f64,
        "calls_by_method": stats.requests_by_method,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{line}");
    Ok(())
}
