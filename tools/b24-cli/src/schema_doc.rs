//! `b24sync schema-doc`: the Markdown description of every mirror table and column (the
//! status function's `/schema.md`), read from the database alone: no portal is called.

use b24_domain::entity::Entity;
use b24_status::SchemaFilter;
use clap::Args;

use crate::target::{DatabaseArgs, connect_database};

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
    let (store, _) = connect_database(config_path, &args.database).await?;
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
