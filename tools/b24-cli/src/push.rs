//! `b24sync push`: back-sync by hand, the same drain the back-sync function runs (edits
//! made in PostgreSQL to Bitrix24), or with `--list` the outbox rows in given states
//! (the conflicts and failures to look at) without pushing. One JSON line per entity
//! drained or per row listed.

use std::time::{Duration, Instant};

use b24_sync::{SyncError, SyncService};
use clap::Args;

use crate::sync::RunFailed;
use crate::target::{DatabaseArgs, config_with_database};
use crate::usage::UsageError;

/// The outbox states `--list` takes.
const STATES: [&str; 6] = [
    "pending", "pushing", "done", "conflict", "failed", "skipped",
];

#[derive(Args)]
pub struct PushArgs {
    /// The configured portal (its back_sync.enabled must be true to push).
    #[arg(long, value_name = "NAME")]
    portal: String,
    /// End the drain within this many seconds; what is left waits for the next one.
    #[arg(long, value_name = "SECONDS")]
    time_box: Option<u64>,
    /// Do not push: list the newest outbox rows in these states (pending, pushing,
    /// done, conflict, failed, skipped; repeat or separate with commas).
    #[arg(long, value_delimiter = ',', value_name = "STATE")]
    list: Vec<String>,
    /// How many rows --list shows at most.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Apply the migrations first (idempotent).
    #[arg(long)]
    migrate: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

pub async fn run(config_path: Option<&str>, args: PushArgs) -> anyhow::Result<()> {
    if let Some(bad) = args.list.iter().find(|s| !STATES.contains(&s.as_str())) {
        return Err(UsageError(format!(
            "--list {bad:?}: expected one of {}",
            STATES.join(", ")
        ))
        .into());
    }
    let config = config_with_database(config_path, &args.database, true)?;
    config.portal(&args.portal)?;
    let service = SyncService::connect(config, args.migrate).await?;
    if !args.list.is_empty() {
        let states: Vec<&str> = args.list.iter().map(String::as_str).collect();
        for row in service
            .store()
            .outbox_rows(&args.portal, &states, args.limit)
            .await?
        {
            println!("{}", serde_json::to_string(&row)?);
        }
        return Ok(());
    }
    let deadline = args
        .time_box
        .map(|s| Instant::now() + Duration::from_secs(s));
    let (summaries, failure) = match service.push(Some(&args.portal), deadline).await {
        Ok(summaries) => (summaries, None),
        Err((summaries, error)) => (summaries, Some(error)),
    };
    for summary in &summaries {
        println!("{}", serde_json::to_string(summary)?);
    }
    if summaries.is_empty() && failure.is_none() {
        eprintln!("b24sync: nothing to push for portal {}", args.portal);
    }
    match failure {
        Some(SyncError::Config(message)) => Err(UsageError(message).into()),
        Some(error) => Err(RunFailed(error.to_string()).into()),
        None => Ok(()),
    }
}
