//! Benchmark figures of back-sync: changes pushed per second under a portal's default
//! limits, and Bitrix24 requests per 1,000 changed rows. Starts the simulator in-process
//! (10,000 deals, 20 user fields, default limits: burst 50, 2 requests/s), mirrors it
//! into a throw-away database on the local PostgreSQL, waits for the portal's request
//! bucket to drain, edits `ROWS` deals in SQL (title and amount, one statement, as a
//! person or an app would), then drains the outbox with `SyncService::push` as the
//! back-sync function does, the client paced by the shared budget in Postgres:
//!
//!     ROWS=3000 cargo run --release -p b24-sync --example push_throughput
//!
//! Prints one JSON line per drain: the rows, the requests the simulator served and the
//! seconds, and a second drain's (nothing left) for the fixed cost.

use std::time::{Duration, Instant};

use b24_domain::sync::Mode;
use b24_sim::SimConfig;
use b24_sync::{SyncRequest, SyncService};
use b24_testkit::TestDb;
use serde_json::json;

const PORTAL: &str = "bench";
const DEALS: usize = 10_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1_000);
    anyhow::ensure!((1..=DEALS).contains(&rows), "ROWS must be 1 to {DEALS}");
    let sim = b24_sim::start(SimConfig {
        deals: DEALS,
        user_fields: 20,
        ..SimConfig::default()
    })
    .await?;
    let db = TestDb::create().await;
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {PORTAL: {"webhook_url": sim.webhook_url(), "entities": ["deal"], "back_sync": {"enabled": true}}},
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
    // The full sync filled the request bucket; the drain starts with it empty, as a
    // back-sync run between scheduled syncs would.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let edited = db
        .client()
        .await
        .execute(
            &format!(
                "UPDATE b24.deal__{PORTAL} SET title = 'edited ' || id, opportunity = id * 10
                 WHERE id IN (SELECT id FROM b24.deal__{PORTAL} ORDER BY id LIMIT {rows})"
            ),
            &[],
        )
        .await?;
    for label in ["drain", "second drain (nothing left)"] {
        sim.reset_stats().await?;
        let started = Instant::now();
        let summaries = service
            .push(Some(PORTAL), None)
            .await
            .map_err(|(_, error)| anyhow::anyhow!("the drain failed: {error}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = sim.stats().await?;
        let pushed: u64 = summaries.iter().map(|s| s.updated).sum();
        println!(
            "{}",
            json!({
                "scenario": label,
                "rows_edited": edited,
                "changes_pushed": pushed,
                "seconds": (seconds * 100.0).round() / 100.0,
                "changes_per_second": if seconds > 0.0 { (pushed as f64 / seconds).round() } else { 0.0 },
                "http_requests": stats.http_requests,
                "requests_per_1000_rows": if pushed > 0 { (stats.http_requests as f64 * 1000.0 / pushed as f64 * 10.0).round() / 10.0 } else { 0.0 },
                "status_503": stats.status_503,
                "status_429": stats.status_429,
                "update_commands": stats.requests_by_method.get("crm.deal.update").copied().unwrap_or(0),
            })
        );
    }
    Ok(())
}
