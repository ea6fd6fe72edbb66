//! Which configuration a `sync`, `check` or `migrate` run uses: the configuration
//! document, with `--webhook` and `--database-url` replacing its parts for one-off runs
//! (both together need no document at all).

use b24_config::{Config, DatabaseConfig};
use b24_domain::webhook::WebhookUrl;
use b24_store::Store;
use clap::Args;
use serde_json::json;

use crate::usage::UsageError;

#[derive(Args)]
pub struct TargetArgs {
    /// Portal name from the configuration; with --webhook, the name its rows are kept
    /// under in the mirror (default: the webhook's host, dots as dashes).
    #[arg(long, value_name = "NAME")]
    pub portal: Option<String>,
    /// Webhook URL https://HOST/rest/USER_ID/SECRET/ for a one-off run. Prefer
    /// $B24SYNC_WEBHOOK: the command line is visible to other users.
    #[arg(
        long,
        value_name = "URL",
        env = "B24SYNC_WEBHOOK",
        hide_env_values = true
    )]
    pub webhook: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Args)]
pub struct DatabaseArgs {
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...] replacing [database] url.
    /// Prefer $B24SYNC_DATABASE_URL when it holds a password.
    #[arg(
        long,
        value_name = "URL",
        env = "B24SYNC_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The schema of the mirror tables (default: the configuration's, else b24).
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
}

/// The configuration with the command line's replacements applied.
pub fn config_with_database(
    config_path: Option<&str>,
    database: &DatabaseArgs,
    need_document: bool,
) -> anyhow::Result<Config> {
    let mut config = if need_document || database.database_url.is_none() {
        Config::load(config_path)?
    } else {
        Config::from_json_str("{}")?
    };
    if let Some(url) = &database.database_url {
        let schema = database
            .schema
            .clone()
            .or_else(|| config.database.as_ref().map(|d| d.schema.clone()))
            .unwrap_or_else(|| "b24".into());
        let document = json!({"database": {"url": url, "schema": schema}}).to_string();
        let mut replaced = Config::from_json_str(&document)
            .map_err(|e| UsageError(format!("--database-url: {e}")))?
            .database;
        // Only the URL is replaced: the configured session limits still apply.
        if let (Some(db), Some(configured)) = (replaced.as_mut(), &config.database) {
            db.session = configured.session;
        }
        config.database = replaced;
    } else if let (Some(schema), Some(db)) = (&database.schema, config.database.as_mut()) {
        db.schema = schema.clone();
    }
    Ok(config)
}

/// The mirror database of the configuration (with the command line's replacements),
/// connected, and its settings.
pub async fn connect_database(
    config_path: Option<&str>,
    database: &DatabaseArgs,
) -> anyhow::Result<(Store, DatabaseConfig)> {
    let config = config_with_database(config_path, database, false)?;
    let database = config
        .database
        .ok_or_else(|| UsageError("pass --database-url URL or configure [database] url".into()))?;
    let store =
        Store::connect_with(database.url.expose(), &database.schema, &database.session).await?;
    Ok((store, database))
}

/// The configuration and the portal name a run targets.
pub fn resolve(config_path: Option<&str>, target: &TargetArgs) -> anyhow::Result<(Config, String)> {
    let Some(webhook) = &target.webhook else {
        let config = config_with_database(config_path, &target.database, true)?;
        let portal = match &target.portal {
            Some(name) => name.clone(),
            None => only_portal(&config)?,
        };
        config.portal(&portal)?;
        return Ok((config, portal));
    };
    let parsed = WebhookUrl::parse(webhook).map_err(|e| UsageError(format!("--webhook: {e}")))?;
    let mut config = config_with_database(config_path, &target.database, false)?;
    let portal = target
        .portal
        .clone()
        // Portal names are letters, digits, `_` and `-`: the host with dots as dashes.
        .unwrap_or_else(|| parsed.domain().replace('.', "-"));
    let document = json!({"portals": {&portal: {"webhook_url": webhook}}}).to_string();
    let mut overrides =
        Config::from_json_str(&document).map_err(|e| UsageError(format!("--webhook: {e}")))?;
    config.portals.append(&mut overrides.portals);
    Ok((config, portal))
}

/// The configuration's only portal; without `--portal`, anything else is a usage error.
pub fn only_portal(config: &Config) -> anyhow::Result<String> {
    let mut names = config.portals.keys();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err(UsageError(
            "pass --portal NAME or --webhook URL (the configuration does not hold exactly one portal)".into(),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn database_url_replaces_only_the_url_of_the_configured_database() {
        let path = std::env::temp_dir().join(format!("b24sync-target-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[database]\nurl = \"postgres://a@h1/db\"\nschema = \"m\"\nstatement_timeout = 7\n",
        )
        .unwrap();
        let args = DatabaseArgs {
            database_url: Some("postgres://b@h2/db".into()),
            schema: None,
        };
        let config = config_with_database(path.to_str(), &args, true);
        std::fs::remove_file(&path).unwrap();
        let database = config.unwrap().database.unwrap();
        assert_eq!(database.url.expose(), "postgres://b@h2/db");
        assert_eq!(database.schema, "m");
        assert_eq!(database.session.statement_timeout, Duration::from_secs(7));
    }
}
