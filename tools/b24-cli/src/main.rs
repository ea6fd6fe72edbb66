//! `b24sync`: the operator's command-line tool. This file only wires subcommands; each
//! lives in its own module.

mod forward;
mod list;
mod migrate;
mod push;
mod robot;
mod schema_doc;
mod sync;
mod target;
mod usage;

use std::process::ExitCode;

use b24_client::B24Error;
use b24_config::ConfigError;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "b24sync",
    version,
    about = "Bitrix24 <-> PostgreSQL sync: operator tool",
    after_help = "Exit codes: 0 success (also when another run of an entity is already under way), \
1 failure, 2 usage or configuration, 3 authentication or permission, 4 portal unreachable, \
5 deletions refused (rerun with --confirm-deletes after checking the portal), \
6 a forward that cannot succeed by retrying (fix the cause, then run it again)."
)]
struct Cli {
    /// Configuration file (TOML or JSON), or the JSON document itself. Default: $B24SYNC_CONFIG, the same.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream every row of an entity as NDJSON on stdout (or only count them); a JSON
    /// summary line goes to stderr at the end.
    List(list::ListArgs),
    /// Prepare a database: create the schema and service tables (idempotent).
    Migrate(migrate::MigrateArgs),
    /// Sync entities into the mirror (the scheduled function's code); one JSON summary
    /// line per entity on stdout.
    Sync(sync::SyncArgs),
    /// Compare the mirror with the portal (IDs and modification times) without writing;
    /// exit code 1 when they differ.
    Check(sync::CheckArgs),
    /// Forward one deal along a route now, as the deal forwarder does for a queued job
    /// (exactly once: a deal forwarded before updates its target deal); one JSON line on
    /// stdout, the outcome or the error. There is no retry after it: a failure is final
    /// in the ledger and the deal's responsible user is notified.
    Forward(forward::ForwardArgs),
    /// Print the bizproc.robot.add parameters of a route's application robot and, with
    /// --show-secret, the built-in Webhook robot's URL; with --auth, register the robot
    /// (re-run on every install and update of the application: updating it removes its
    /// robots).
    RobotRegister(robot::RobotArgs),
    /// Push the edits made in PostgreSQL to the portal now, as the back-sync function
    /// does (one JSON line per entity drained); with --list, show outbox rows instead.
    Push(push::PushArgs),
    /// Print Markdown describing every mirror table and column (Bitrix24 code, title,
    /// types, whether Bitrix24 lets it be written, enumeration items), from the database.
    SchemaDoc(schema_doc::SchemaDocArgs),
}

/// Exit codes: 1 other failures, 2 usage or configuration, 3 authentication or
/// permission, 4 portal unreachable, 5 deletions refused (a run found more rows gone
/// than `max_delete_share` allows and deleted nothing; `--confirm-deletes` lets it
/// through), 6 a permanent forward error (see [`forward::exit_code`]). A run that finds
/// another run of the same entity under way exits 0.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<sync::DeletesRefused>().is_some() {
        return ExitCode::from(5);
    }
    if let Some(error) = error.downcast_ref::<b24_forward::ForwardError>() {
        return ExitCode::from(forward::exit_code(error));
    }
    if let Some(error) = error.downcast_ref::<B24Error>() {
        if error.is_auth() {
            return ExitCode::from(3);
        }
        if error.is_unreachable() {
            return ExitCode::from(4);
        }
        if matches!(error, B24Error::InvalidArgument(_)) {
            return ExitCode::from(2);
        }
    }
    if error.downcast_ref::<ConfigError>().is_some()
        || error.downcast_ref::<usage::UsageError>().is_some()
    {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}

// One thread: the work is sequential (one request or one database write at a time),
// and a single thread keeps the allocator to one arena, halving peak memory.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(args) => list::run(cli.config.as_deref(), args).await,
        Command::Migrate(args) => migrate::run(cli.config.as_deref(), args).await,
        Command::Sync(args) => sync::sync(cli.config.as_deref(), args).await,
        Command::Check(args) => sync::check(cli.config.as_deref(), args).await,
        Command::Forward(args) => forward::run(cli.config.as_deref(), args).await,
        Command::RobotRegister(args) => robot::run(cli.config.as_deref(), args).await,
        Command::Push(args) => push::run(cli.config.as_deref(), args).await,
        Command::SchemaDoc(args) => schema_doc::run(cli.config.as_deref(), args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("b24sync: error: {error:#}");
            exit_code(&error)
        }
    }
}
