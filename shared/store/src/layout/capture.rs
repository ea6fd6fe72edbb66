//! Back-sync on a portal table: edits by any writer but the sync go to the outbox (the
//! row trigger `_outbox_capture` of migration V7), and a row inserted without an ID
//! becomes a record to create: `id` defaults to a negative local ID, `portal` to the
//! table's portal and `raw` to `{}`. Every session the product opens is marked as the
//! sync's ([`crate::connect::WRITER_SETTING`]); the trigger's `WHEN` skips those rows
//! without calling it, and being an AFTER trigger it leaves COPY's batched inserts alone.

use b24_domain::entity::Entity;
use tokio_postgres::Client;

use super::tables::ShortLock;
use crate::connect::WRITER_SETTING;
use crate::{Context, Store, StoreError, quote_ident};

const CAPTURE_TRIGGER: &str = "_b24sync_capture";

/// Creates the trigger and the defaults on `table_name` unless the trigger exists (a
/// table of an earlier version gets them on its first `ensure_table`). The change waits
/// for the table's readers like other schema changes here: at most a moment, else a
/// later run tries again.
pub(super) async fn install(
    client: &mut Client,
    store: &Store,
    portal: &str,
    entity: Entity,
    table_name: &str,
) -> Result<(), StoreError> {
    let installed: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3",
            &[&store.schema(), &table_name, &CAPTURE_TRIGGER],
        )
        .await
        .context("looking for the back-sync trigger")?
        .get(0);
    if installed == 1 {
        return Ok(());
    }
    let table = store.table(table_name);
    let schema = quote_ident(store.schema());
    let args = format!("{}, {}", literal(portal), literal(entity.as_str()));
    let not_the_sync = format!("current_setting('{WRITER_SETTING}', true) IS DISTINCT FROM 'sync'");
    let local_ids = literal(&format!("{schema}._outbox_local_ids"));
    let ddl = format!(
        "ALTER TABLE {table}
             ALTER COLUMN id SET DEFAULT -nextval({local_ids}::regclass),
             ALTER COLUMN portal SET DEFAULT {portal},
             ALTER COLUMN raw SET DEFAULT '{{}}'::jsonb;
         DROP TRIGGER IF EXISTS {CAPTURE_TRIGGER} ON {table};
         CREATE TRIGGER {CAPTURE_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW
             WHEN ({not_the_sync}) EXECUTE FUNCTION {schema}._outbox_capture({args});",
        portal = literal(portal),
    );
    let what = format!("adding the back-sync trigger and defaults to {table}");
    let mut attempts = ShortLock::new(&what);
    while let Some(tx) = attempts.begin(client).await? {
        let result = tx.batch_execute(&ddl).await.context(&what);
        if attempts.end(tx, result).await?.is_some() {
            break;
        }
    }
    Ok(())
}

/// A string literal in DDL (portal names may hold quotes).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
