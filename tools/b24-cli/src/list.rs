//! `b24sync list`: streams an entity's rows through the chained-batch ID window.

use std::io::{BufWriter, ErrorKind, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use b24_client::{Client, ClientOptions, ClientStats, InProcessLimiter, ListQuery};
use b24_config::Config;
use b24_domain::entity::Entity;
use b24_domain::item::ApiChoice;
use b24_domain::limits::LimitSettings;
use b24_domain::webhook::WebhookUrl;
use clap::{Args, ValueEnum};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::target::only_portal;
use crate::usage::UsageError;

#[derive(Args)]
pub struct ListArgs {
    /// Portal name from the configuration (wins over --webhook).
    #[arg(long, value_name = "NAME")]
    portal: Option<String>,
    /// Webhook URL https://HOST/rest/USER_ID/SECRET/. Prefer $B24SYNC_WEBHOOK: the
    /// command line is visible to other users.
    #[arg(
        long,
        value_name = "URL",
        env = "B24SYNC_WEBHOOK",
        hide_env_values = true
    )]
    webhook: Option<String>,
    /// deal, contact, lead, company, or sp_<entityTypeId> for a smart process.
    #[arg(long, value_parser = |s: &str| s.parse::<Entity>())]
    entity: Entity,
    /// classic (crm.<entity>.list) or items (crm.item.list, field names translated to
    /// the classic codes). Default: the portal's `api`, else classic; a smart process
    /// always uses items.
    #[arg(long, value_parser = parse_api)]
    api: Option<ApiChoice>,
    /// Comma-separated fields. Default: *,UF_* plus PHONE,EMAIL,WEB,IM where the entity has them.
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    select: Vec<String>,
    /// Filter as a JSON object, e.g. '{">=DATE_MODIFY":"2024-01-01T00:00:00+00:00"}'.
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,
    /// Retries of one request after limits, 5xx answers or network failures.
    #[arg(long, default_value_t = 4)]
    max_retries: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON object per row and line.
    Ndjson,
    /// Rows are only counted.
    Count,
}

/// The line printed on stderr when the listing ends.
#[derive(Serialize)]
struct Summary {
    rows: u64,
    http_requests: u64,
    seconds: f64,
    retries: u64,
    throttled_503: u64,
    throttled_429: u64,
    operating_seconds: f64,
}

impl Summary {
    fn new(rows: u64, seconds: f64, stats: ClientStats) -> Summary {
        let millis = |x: f64| (x * 1000.0).round() / 1000.0;
        Summary {
            rows,
            http_requests: stats.http_requests,
            seconds: millis(seconds),
            retries: stats.retries,
            throttled_503: stats.throttled_503,
            throttled_429: stats.throttled_429,
            operating_seconds: millis(stats.operating_seconds),
        }
    }
}

fn parse_api(text: &str) -> Result<ApiChoice, String> {
    serde_json::from_value(Value::String(text.trim().to_ascii_lowercase()))
        .map_err(|_| format!("{text:?}: expected classic or items"))
}

pub async fn run(config_path: Option<&str>, args: ListArgs) -> anyhow::Result<()> {
    let (webhook, limits, configured_api) = resolve_portal(config_path, &args)?;
    let filter = parse_filter(args.filter.as_deref())?;
    let select = if args.select.is_empty() {
        default_select(args.entity)
    } else {
        args.select.clone()
    };
    let limiter = std::sync::Arc::new(InProcessLimiter::new(limits));
    // An operator waits at the terminal: give up on a dead portal within seconds.
    let options = ClientOptions {
        limiter,
        max_retries: args.max_retries,
        backoff_max: Duration::from_secs(8),
        api: args.api.unwrap_or(configured_api),
        ..ClientOptions::default()
    };
    let client = Client::new(webhook, options)?;
    let started = Instant::now();
    let mut api = client.entity_api(args.entity);
    if api.is_items() {
        // The field names crm.item uses, so rows come out in the classic codes.
        let fields = api.fields_command("fields");
        let answer = client.call(&fields.method, &fields.params).await?;
        api.with_fields(&answer.result)?;
    }
    let query = api.list_query(select, filter, None);

    let mut rows = 0u64;
    let outcome = stream_rows(&client, query, args.format, &mut rows).await;
    let summary = Summary::new(rows, started.elapsed().as_secs_f64(), client.stats());
    eprintln!("{}", serde_json::to_string(&summary)?);
    outcome
}

async fn stream_rows(
    client: &Client,
    query: ListQuery,
    format: Format,
    rows: &mut u64,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let stream = client.list_stream(query);
    futures::pin_mut!(stream);
    while let Some(row) = stream.try_next().await? {
        *rows += 1;
        if format == Format::Ndjson {
            let written = serde_json::to_writer(&mut out, &row)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = written {
                // The reader went away (`| head`): stop quietly.
                if error.kind() == ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error).context("writing rows to stdout");
            }
        }
    }
    match out.flush() {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => {
            Err(error).context("writing rows to stdout")
        }
        _ => Ok(()),
    }
}

/// The webhook and limits to use: `--portal` from the configuration, else `--webhook`
/// with the standard limits, else the configuration's only portal.
fn resolve_portal(
    config_path: Option<&str>,
    args: &ListArgs,
) -> anyhow::Result<(WebhookUrl, LimitSettings, ApiChoice)> {
    if let Some(name) = &args.portal {
        let config = Config::load(config_path)?;
        let portal = config.portal(name)?;
        return Ok((portal.webhook_url.clone(), portal.limits, portal.api));
    }
    if let Some(url) = &args.webhook {
        let webhook = WebhookUrl::parse(url).map_err(|e| UsageError(format!("--webhook: {e}")))?;
        return Ok((webhook, LimitSettings::standard(), ApiChoice::default()));
    }
    let config = Config::load(config_path)?;
    let portal = config.portal(&only_portal(&config)?)?;
    Ok((portal.webhook_url.clone(), portal.limits, portal.api))
}

fn parse_filter(filter: Option<&str>) -> Result<Map<String, Value>, UsageError> {
    match filter.map(serde_json::from_str::<Value>) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(map))) => Ok(map),
        Some(Ok(_)) => Err(UsageError("--filter must be a JSON object".into())),
        Some(Err(e)) => Err(UsageError(format!("--filter is not valid JSON: {e}"))),
    }
}

/// Everything the mirror keeps: `*` and `UF_*` leave out the multi-value fields, so
/// those are named.
fn default_select(entity: Entity) -> Vec<String> {
    ["*", "UF_*"]
        .iter()
        .chain(entity.multifields())
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_select_names_multifields_where_they_exist() {
        assert_eq!(default_select(Entity::Deal), vec!["*", "UF_*"]);
        assert_eq!(
            default_select(Entity::Contact),
            vec!["*", "UF_*", "PHONE", "EMAIL", "WEB", "IM"]
        );
    }

    #[test]
    fn filters_must_be_json_objects() {
        assert_eq!(parse_filter(None).unwrap(), Map::new());
        assert_eq!(parse_filter(Some(r#"{">ID": 5}"#)).unwrap()[">ID"], 5);
        assert!(
            parse_filter(Some("[1]"))
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        assert!(
            parse_filter(Some("{"))
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn summary_rounds_to_milliseconds() {
        let stats = ClientStats {
            http_requests: 3,
            operating_seconds: 1.23456,
            ..ClientStats::default()
        };
        let line = serde_json::to_string(&Summary::new(7, 0.5004, stats)).unwrap();
        assert_eq!(
            line,
            r#"{"rows":7,"http_requests":3,"seconds":0.5,"retries":0,"throttled_503":0,"throttled_429":0,"operating_seconds":1.235}"#
        );
    }
}
