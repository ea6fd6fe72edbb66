//! `b24-local`: the functions of a deployment on this machine (see the crate docs).
//! Prints `B24_LOCAL_URL=...` once it listens, then runs until interrupted.

use std::net::SocketAddr;
use std::time::Duration;

use b24_local::{LocalOptions, ScheduleSpec, parse_schedule};
use clap::Parser;

/// The seven functions behind one local HTTP server: the webhook intake, the deal robot
/// and the status page at their function URLs, the change worker and the deal
/// forwarder fed from in-process queues, the scheduled sync and back-sync by timers.
#[derive(Parser)]
#[command(name = "b24-local", version)]
struct Args {
    /// The configuration document (TOML or JSON); default `B24SYNC_CONFIG`.
    #[arg(long)]
    config: Option<String>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// A schedule for every configured portal, `MODE=EVERY`; repeatable. The SAM
    /// template's are incremental=5m, resume=15m and a nightly reconcile.
    #[arg(long = "schedule", value_parser = parse_schedule)]
    schedules: Vec<ScheduleSpec>,
    /// Run back-sync this often, as the schedule `back-sync` (the template's default:
    /// every minute); without it, back-sync runs only when invoked (Invoke API).
    #[arg(long, value_name = "EVERY", value_parser = humantime::parse_duration)]
    back_sync: Option<Duration>,
    /// Messages per change-worker invocation (the forwarder takes 10, as in the template).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// How long change messages gather before the worker runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    batch_window: Duration,
    /// Receives before a message moves to the dead-letter list.
    #[arg(long, default_value_t = 5)]
    max_receives: u32,
    /// How long a failed message stays away before it is handed out again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    redelivery_delay: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    b24_lambda::init_tracing();
    let args = Args::parse();
    let config = b24_config::Config::load(args.config.as_deref())?;
    let options = LocalOptions {
        schedules: args.schedules,
        back_sync_every: args.back_sync,
        batch_size: args.batch_size,
        batch_window: args.batch_window,
        max_receives: args.max_receives,
        redelivery_delay: args.redelivery_delay,
        migrate: true,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    let running = b24_local::start(config, options, listener).await?;
    println!("B24_LOCAL_URL={}", running.url());
    println!("  webhook intake (function URL): {}", running.intake_url());
    println!("  deal robot (function URL):     {}", running.robot_url());
    println!("  status page (function URL):    {}", running.status_url());
    println!(
        "  invoke: {}/2015-03-31/functions/{{sync-scheduled,change-worker,deal-forwarder,back-sync}}/invocations",
        running.url()
    );
    println!("  status: {}/_local/status", running.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
