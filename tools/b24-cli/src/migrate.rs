//! `b24sync migrate`: prepares a database (idempotent; the functions can do the same
//! on start with `B24SYNC_MIGRATE_ON_START=true`).

use b24_store::Store;
use clap::Args;

use crate::target::{DatabaseArgs, config_with_database};
use crate::usage::UsageError;

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

pub async fn run(config_path: Option<&str>, args: MigrateArgs) -> anyhow::Result<()> {
    let config = config_with_database(config_path, &args.database, false)?;
    let database = config
        .database
        .ok_or_else(|| UsageError("pass --database-url URL or configure [database] url".into()))?;
    let store =
        Store::connect_with(database.url.expose(), &database.schema, &database.session).await?;
    store.migrate().await?;
    println!(
        "{}",
        serde_json::json!({"migrated": database.url.to_string(), "schema": database.schema})
    );
    Ok(())
}
