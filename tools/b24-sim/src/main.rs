//! `b24-sim`: runs the Bitrix24 portal simulator until killed. The first stdout
//! line is `B24_WEBHOOK_URL=<webhook url>`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use b24_sim::{Application, EventTarget, FaultSpec, LimitConfig, SimConfig, SmartProcessConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "b24-sim",
    version,
    about = "A Bitrix24 portal simulator reached through an incoming webhook"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    deals: usize,
    #[arg(long, default_value_t = 0)]
    contacts: usize,
    #[arg(long, default_value_t = 0)]
    leads: usize,
    #[arg(long, default_value_t = 0)]
    companies: usize,
    /// User fields (UF_CRM_*) per entity, of cycling types.
    #[arg(long, default_value_t = 0)]
    user_fields: usize,
    /// Requests per second the leaky bucket drains.
    #[arg(long, default_value_t = 2.0, conflicts_with = "no_limits")]
    rate: f64,
    /// Requests the leaky bucket holds.
    #[arg(long, default_value_t = 50.0, conflicts_with = "no_limits")]
    burst: f64,
    /// Switch off both limits (operating time is still reported).
    #[arg(long)]
    no_limits: bool,
    /// No operating-time limiter, as on an on-premise portal: no 429 and no
    /// `operating` / `operating_reset_at` in answers.
    #[arg(long)]
    no_operating_limiter: bool,
    /// Operating seconds per method per window.
    #[arg(long, default_value_t = 480.0)]
    operating_budget: f64,
    /// Length of the operating window in seconds.
    #[arg(long, default_value_t = 600.0)]
    operating_window: f64,
    /// Handler URL for outgoing events.
    #[arg(long, requires = "application_token")]
    events_to: Option<String>,
    /// auth[application_token] of outgoing events.
    #[arg(long, env = "B24_SIM_APPLICATION_TOKEN", hide_env_values = true)]
    application_token: Option<String>,
    /// Fault spec, e.g. "503=0.1,500=0.05,latency=200@0.5,drop_after=0.01,truncate=0.01,seed=7".
    #[arg(long, default_value = "")]
    faults: String,
    /// The webhook's secret code.
    #[arg(long, env = "B24_SIM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The webhook's user ID.
    #[arg(long, default_value_t = 1)]
    user_id: u64,
    /// The portal's domain as events report it.
    #[arg(long, default_value = "sim.bitrix24.test")]
    domain: String,
    /// The portal's UTC offset, e.g. +03:00 or -05:00.
    #[arg(long, default_value = "+03:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// The host the installed application's robot handlers live on (`bizproc.robot.add`
    /// refuses a HANDLER elsewhere).
    #[arg(long, default_value = "127.0.0.1")]
    app_host: String,
    /// The application's access token (`/rest/{method}?auth=...`).
    #[arg(long, env = "B24_SIM_APP_ACCESS_TOKEN", hide_env_values = true)]
    app_access_token: Option<String>,
    /// The application's `auth[application_token]` in robot calls.
    #[arg(long, env = "B24_SIM_APP_TOKEN", hide_env_values = true)]
    app_token: Option<String>,
    /// A smart process, repeatable:
    /// ENTITY_TYPE_ID:TITLE:ITEMS[:products][:uf=N][:rows=N][:categories=A|B][:code=C][:id=N],
    /// e.g. 1038:Orders:500:products:uf=4.
    #[arg(long = "smart-process", value_name = "SPEC")]
    smart_processes: Vec<SmartProcessConfig>,
    /// A deal pipeline besides the general one, repeatable (seeded deals spread over all).
    #[arg(long = "deal-category", value_name = "NAME")]
    deal_categories: Vec<String>,
    /// Seeded deals get up to N product rows each.
    #[arg(long, default_value_t = 0)]
    product_rows: usize,
}

fn parse_offset(text: &str) -> anyhow::Result<i32> {
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => anyhow::bail!("UTC offset '{text}' must look like +03:00"),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let hours: i32 = hours
        .parse()
        .with_context(|| format!("UTC offset '{text}' must look like +03:00"))?;
    let minutes: i32 = minutes
        .parse()
        .with_context(|| format!("UTC offset '{text}' must look like +03:00"))?;
    Ok(sign * (hours * 3600 + minutes * 60))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let defaults = SimConfig::default();
    let config = SimConfig {
        listen: args.listen,
        seed: args.seed,
        deals: args.deals,
        contacts: args.contacts,
        leads: args.leads,
        companies: args.companies,
        user_fields: args.user_fields,
        limits: LimitConfig {
            enabled: !args.no_limits,
            operating_limiter: !args.no_operating_limiter,
            burst: args.burst,
            drain_per_sec: args.rate,
            operating_budget_secs: args.operating_budget,
            operating_window_secs: args.operating_window,
        },
        events: args
            .events_to
            .zip(args.application_token)
            .map(|(url, application_token)| EventTarget {
                url,
                application_token,
            }),
        faults: args
            .faults
            .parse::<FaultSpec>()
            .map_err(anyhow::Error::msg)
            .context("--faults")?,
        user_id: args.user_id,
        secret: args.secret.unwrap_or(defaults.secret),
        domain: args.domain,
        member_id: None,
        utc_offset_secs: parse_offset(&args.utc_offset)?,
        application: Application {
            access_token: args
                .app_access_token
                .unwrap_or(defaults.application.access_token),
            application_token: args
                .app_token
                .unwrap_or(defaults.application.application_token),
            handler_host: args.app_host,
        },
        smart_processes: args.smart_processes,
        deal_categories: args.deal_categories,
        product_rows: args.product_rows,
        anchor: None,
    };
    let started = Instant::now();
    let mut sim = b24_sim::start(config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "B24_WEBHOOK_URL={}", sim.webhook_url())?;
    stdout.flush()?;
    drop(stdout);
    eprintln!(
        "b24-sim: data generated and serving on {} after {:.2} s; control surface at {}/_sim/",
        sim.addr(),
        started.elapsed().as_secs_f64(),
        sim.base_url()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = sim.wait() => result?,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
