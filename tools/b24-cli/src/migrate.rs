//! `b24sync migrate`: prepares a database (idempotent; the functions can do the same
//! on start with `B24SYNC_MIGRATE_ON_START=true`).

use clap::Args;

use crate::target::{DatabaseArgs, connect_database};

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

pub async fn run(config_path: Option<&str>, args: MigrateArgs) -> anyhow::Result<()> {
    let (store, database) = connect_database(config_path, &args.database).await?;
    store.migrate().await?;
    println!(
        "{}",
        serde_json::json!({"migrated": database.url.to_string(), "schema": database.schema})
    );
    Ok(())
}
