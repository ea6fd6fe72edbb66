//! The back-sync triggers on a portal table: edits by any writer but the sync go to the
//! outbox (`_outbox_capture`), and a row inserted without an ID becomes a record to
//! create (`_outbox_new_row`). Both functions come with migration V7; every session the
//! product opens is marked as the sync's ([`crate::connect::WRITER_SETTING`]), which
//! the triggers' `WHEN` skips without calling them, so bulk loads pay next to nothing.

use b24_domain::entity::Entity;
use tokio_postgres::Client;

use super::tables::ShortLock;
use crate::connect::WRITER_SETTING;
use crate::{Context, Store, StoreError, quote_ident};

const NEW_ROW_TRIGGER: &str = "_b24sync_new_row";
const CAPTURE_TRIGGER: &str = "_b24sync_capture";

/// Creates both triggers on `table_name` unless they exist (a table of an earlier
/// version gets them on its first `ensure_table`). Creating a trigger waits for the
/// table's readers like other schema changes here: at most a moment, else a later run
/// tries again.
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
             WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = ANY($3)",
            &[
                &store.schema(),
                &table_name,
                &vec![NEW_ROW_TRIGGER, CAPTURE_TRIGGER],
            ],
        )
        .await
        .context("looking for the back-sync triggers")?
        .get(0);
    if installed == 2 {
        return Ok(());
    }
    let table = store.table(table_name);
    let schema = quote_ident(store.schema());
    let args = format!("{}, {}", literal(portal), literal(entity.as_str()));
    let not_the_sync = format!("current_setting('{WRITER_SETTING}', true) IS DISTINCT FROM 'sync'");
    let ddl = format!(
        "DROP TRIGGER IF EXISTS {NEW_ROW_TRIGGER} ON {table};
         DROP TRIGGER IF EXISTS {CAPTURE_TRIGGER} ON {table};
         CREATE TRIGGER {NEW_ROW_TRIGGER} BEFORE INSERT ON {table} FOR EACH ROW
             WHEN ({not_the_sync}) EXECUTE FUNCTION {schema}._outbox_new_row({args});
         CREATE TRIGGER {CAPTURE_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW
             WHEN ({not_the_sync}) EXECUTE FUNCTION {schema}._outbox_capture({args});"
    );
    let what = format!("adding the back-sync triggers to {table}");
    let mut attempts = ShortLock::new(&what);
    while let Some(tx) = attempts.begin(client).await? {
        let result = tx.batch_execute(&ddl).await.context(&what);
        if attempts.end(tx, result).await?.is_some() {
            break;
        }
    }
    Ok(())
}

/// A string literal for a trigger argument (portal names may hold quotes).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
