//! `b24sync sync` and `b24sync check`: the scheduled-sync code run from a laptop
//! (backfills too big for Lambda, one-off repairs) and a read-only comparison of the
//! mirror with the portal. One JSON line per entity on stdout.

use std::time::{Duration, Instant};

use b24_domain::entity::Entity;
use b24_domain::sync::{Mode, RunOutcome};
use b24_sync::{EntityOutcome, SyncError, SyncRequest, SyncService, Syncer};
use clap::Args;

use crate::target::{TargetArgs, resolve};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// deal, contact, lead or company; repeat or separate with commas. Default: the
    /// portal's configured entities.
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.parse::<Entity>())]
    entity: Vec<Entity>,
    /// incremental, full, resume or reconcile.
    #[arg(long, value_parser = |s: &str| s.parse::<Mode>())]
    mode: Mode,
    /// End the runs within this many seconds, as a Lambda invocation would: every mode
    /// stops at a checkpoint and the next run of the same mode (or `resume` for a full
    /// sync) continues it. The entities share the time equally. Default: run to the end.
    #[arg(long, value_name = "SECONDS")]
    time_box: Option<u64>,
    /// Let the runs soft-delete more than the portal's `max_delete_share` (default
    /// 10 %) of an entity's live rows: after a check that the portal really lost them.
    #[arg(long)]
    confirm_deletes: bool,
    /// Apply the migrations first (idempotent).
    #[arg(long)]
    migrate: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// deal, contact, lead or company; repeat or separate with commas. Default: the
    /// portal's configured entities.
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.parse::<Entity>())]
    entity: Vec<Entity>,
}

/// A run whose entities did not all succeed (exit code 1; the details are on stdout).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunFailed(pub String);

/// Runs that found more deletions than the guard allows and deleted nothing (exit code
/// 5); the message says how to confirm.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeletesRefused(String);

pub async fn sync(config_path: Option<&str>, args: SyncArgs) -> anyhow::Result<()> {
    let (config, portal) = resolve(config_path, &args.target)?;
    let service = SyncService::connect(config, args.migrate).await?;
    let request = SyncRequest {
        portal,
        entities: (!args.entity.is_empty()).then_some(args.entity),
        mode: args.mode,
        confirm_deletes: args.confirm_deletes,
    };
    let deadline = args
        .time_box
        .map(|s| Instant::now() + Duration::from_secs(s));
    let (outcomes, failure) = match service.handle(&request, deadline).await {
        Ok(outcomes) => (outcomes, None),
        Err((outcomes, error)) => (outcomes, Some(error)),
    };
    // One line per entity: a summary, or the error that stopped it.
    for outcome in &outcomes {
        println!("{}", serde_json::to_string(outcome)?);
        if let EntityOutcome::Done(summary) = outcome
            && summary.outcome == Some(RunOutcome::AlreadyRunning)
        {
            eprintln!(
                "b24sync: {} of portal {}: another run is already running; nothing done",
                summary.entity, summary.portal
            );
        }
    }
    match failure {
        Some(SyncError::Refused(refusal)) => Err(DeletesRefused(refusal.message).into()),
        Some(error) => Err(RunFailed(error.to_string()).into()),
        None => Ok(()),
    }
}

pub async fn check(config_path: Option<&str>, args: CheckArgs) -> anyhow::Result<()> {
    let (config, portal) = resolve(config_path, &args.target)?;
    let entities = if args.entity.is_empty() {
        config.portal(&portal)?.entities.clone()
    } else {
        args.entity
    };
    let service = SyncService::connect(config, false).await?;
    let client = service.client(&portal).await?;
    let syncer = Syncer {
        client: &client,
        store: service.store(),
        portal: &portal,
        product_rows: &[],
    };
    let mut differing = Vec::new();
    for entity in entities {
        let report = syncer.check(entity).await?;
        println!("{}", serde_json::to_string(&report)?);
        if !report.in_sync {
            differing.push(entity.to_string());
        }
    }
    if differing.is_empty() {
        Ok(())
    } else {
        Err(RunFailed(format!(
            "the mirror differs from the portal for {}",
            differing.join(", ")
        ))
        .into())
    }
}
