//! `b24sync forward`: one deal forwarded along a route by hand, through the same
//! [`ForwardService::forward`] the deal forwarder runs for a queued job (the ledger, the
//! look-ups that keep it exactly once, the comment on the source deal). One JSON line on
//! stdout: the outcome, or the error with its kind.

use std::time::Duration;

use b24_client::ClientOptions;
use b24_domain::forward::job::ForwardJob;
use b24_forward::{Attempt, ForwardError, ForwardOptions, ForwardService};
use clap::Args;
use serde_json::{Map, json};

use crate::target::{DatabaseArgs, config_with_database};

#[derive(Args)]
pub struct ForwardArgs {
    /// The configured route (`routes.NAME`); its source portal holds the deal.
    #[arg(long, value_name = "NAME")]
    route: String,
    /// The source deal's ID.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    deal: u64,
    /// Retries of one request after limits, 5xx answers or network failures.
    #[arg(long, default_value_t = 4)]
    max_retries: u32,
    /// Apply the migrations first (idempotent).
    #[arg(long)]
    migrate: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Exit code of a forward that cannot succeed by trying again (an unknown deal, a value
/// the route cannot map, a refused write): fix the cause first.
pub const PERMANENT_EXIT: u8 = 6;

/// The exit code of a failed forward: 2 configuration, 3 authentication or permission,
/// 4 portal unreachable, [`PERMANENT_EXIT`] other permanent errors, 1 the rest (a
/// retry may pass).
pub fn exit_code(error: &ForwardError) -> u8 {
    match error {
        ForwardError::Config(_) => 2,
        ForwardError::Portal { source, .. } if source.is_auth() => 3,
        ForwardError::Portal { source, .. } if source.is_unreachable() => 4,
        error if error.is_permanent() => PERMANENT_EXIT,
        _ => 1,
    }
}

pub async fn run(config_path: Option<&str>, args: ForwardArgs) -> anyhow::Result<()> {
    let config = config_with_database(config_path, &args.database, true)?;
    let source = config.route(&args.route)?.source.clone();
    // An operator waits at the terminal: give up on a dead portal within seconds.
    let options = ForwardOptions {
        client: ClientOptions {
            max_retries: args.max_retries,
            backoff_max: Duration::from_secs(8),
            ..ClientOptions::default()
        },
        ..ForwardOptions::default()
    };
    let service = ForwardService::connect_with(config, args.migrate, options).await?;
    let job = ForwardJob {
        route: args.route,
        source,
        deal_id: args.deal,
        received_at: chrono::Utc::now(),
        event_token: None,
        waits_for_reply: false,
        properties: Map::new(),
    };
    // By hand there is no retry after this attempt: a failure is final in the ledger.
    match service.forward(&job, Attempt::ONLY, None).await {
        Ok(outcome) => {
            println!("{}", serde_json::to_string(&outcome)?);
            Ok(())
        }
        Err(error) => {
            let line = json!({
                "route": job.route,
                "source_portal": job.source,
                "source_deal_id": job.deal_id,
                "error": error.to_string(),
                "kind": error.kind(),
                "permanent": error.is_permanent(),
            });
            println!("{line}");
            Err(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use b24_client::B24Error;

    use super::*;

    #[test]
    fn exit_codes_follow_the_cli_and_the_engine_classification() {
        let portal = |source| ForwardError::Portal {
            portal: "central".into(),
            step: "writing the target deal",
            source,
        };
        let m = || "batch".to_string();
        assert_eq!(exit_code(&ForwardError::Config("unknown route".into())), 2);
        let denied = B24Error::AccessDenied {
            method: m(),
            code: "ACCESS_DENIED".into(),
            description: String::new(),
        };
        assert_eq!(exit_code(&portal(denied)), 3);
        assert_eq!(exit_code(&portal(B24Error::Timeout { method: m() })), 4);
        let missing = ForwardError::DealNotFound {
            portal: "partner".into(),
            deal_id: 7,
            detail: "Not found".into(),
        };
        assert_eq!(exit_code(&missing), PERMANENT_EXIT);
        assert_eq!(
            exit_code(&portal(B24Error::OverloadLimit { method: m() })),
            PERMANENT_EXIT
        );
        assert_eq!(
            exit_code(&portal(B24Error::QueryLimitExceeded { method: m() })),
            1
        );
        assert_eq!(
            exit_code(&ForwardError::OutOfTime("reading the source deal")),
            1
        );
    }
}
