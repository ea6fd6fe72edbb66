//! `b24sync schema-doc`: the Markdown description of every mirror table and column (the
//! status function's `/schema.md`), read from the database alone: no portal is called.

use b24_domain::entity::Entity;
use b24_status::SchemaFilter;
use b24_store::Store;
use clap::Args;

use crate::target::{DatabaseArgs, config_with_database};
use crate::usage::UsageError;

#[derive(Args)]
pub struct SchemaDocArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only this portal's tables.
    #[arg(long, value_name = "NAME")]
    portal: Option<String>,
    /// Only this entity's tables (deal, contact, lead, company).
    #[arg(long, value_name = "E")]
    entity: Option<Entity>,
}

pub async fn run(config_path: Option<&str>, args: SchemaDocArgs) -> anyhow::Result<()> {
    let config = config_with_database(config_path, &args.database, false)?;
    let database = config
        .database
        .ok_or_else(|| UsageError("pass --database-url URL or configure [database] url".into()))?;
    let store =
        Store::connect_with(database.url.expose(), &database.schema, &database.session).await?;
    let filter = SchemaFilter {
        portal: args.portal,
        entity: args.entity,
    };
    let tables = store.mirror_schema().await?;
    print!(
        "{}",
        b24_status::schema_doc::render(store.schema(), &tables, &filter)
    );
    Ok(())
}
