//! Moving a mirror from the shared table of earlier versions (`<schema>.<entity>`, all
//! portals in one table) to one table per portal, then putting the cross-portal view
//! in its place. Idempotent and safe to interrupt: rows are copied in batches, each its
//! own transaction, into tables that only ever gain rows; the shared table is dropped
//! only in the transaction that has checked every one of its rows is in its portal's
//! table.

use b24_domain::entity::Entity;
use b24_domain::schema::SYSTEM_COLUMNS;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use super::backfill::BATCH_ROWS;
use super::mapping::FIRST_MAPPING;
use super::tables::{
    ShortLock, advisory_lock, create_portal_table, portal_table_name, refresh_view, register_table,
};
use crate::{Context, Store, StoreError, quote_ident};

/// One portal's share of the shared table.
struct Move {
    portal: String,
    table: String,
    /// Columns both tables have, quoted and comma-separated.
    columns: String,
}

/// Moves `entity`'s shared table, if there is one, into per-portal tables and
/// replaces it by the view. Does nothing once done.
pub(crate) async fn move_shared_table(
    client: &mut Client,
    store: &Store,
    entity: Entity,
) -> Result<(), StoreError> {
    let shared = store.mirror_table(entity);
    if !is_plain_table(&*client, &shared).await? {
        return Ok(());
    }
    let portals = portals_in(&*client, &shared).await?;
    tracing::info!(table = %shared, portals = portals.len(), "moving the shared mirror table to one table per portal");
    let mut moves = Vec::with_capacity(portals.len());
    for portal in &portals {
        let step = prepare(client, store, entity, &shared, portal).await?;
        let Some(step) = step else {
            return Ok(());
        };
        copy_rows(client, &shared, &step).await?;
        moves.push(step);
    }
    let what = format!("replacing {shared} by the cross-portal view");
    let mut attempts = ShortLock::new(&what);
    while let Some(tx) = attempts.begin(client).await? {
        let result = replace_shared(&tx, store, entity, &portals, &moves).await;
        match attempts.end(tx, result).await? {
            None => continue,
            Some(true) => {
                tracing::info!(view = %shared, "the shared mirror table is now a view over the portal tables");
            }
            Some(false) => {
                tracing::info!(table = %shared, "new portals appeared in the shared table; the next run moves them");
            }
        }
        break;
    }
    Ok(())
}

/// Under a lock that lets readers through: copies the rows written since their batch,
/// drops the shared table (or renames it, when other views read it) and creates the
/// view. False when a portal that was not moved has appeared in the shared table.
async fn replace_shared(
    tx: &Transaction<'_>,
    store: &Store,
    entity: Entity,
    portals: &[String],
    moves: &[Move],
) -> Result<bool, StoreError> {
    let shared = store.mirror_table(entity);
    advisory_lock(tx, &format!("b24-store:view:{shared}")).await?;
    // Readers go on; writers of an older version wait until the table is gone.
    tx.batch_execute(&format!("LOCK TABLE {shared} IN EXCLUSIVE MODE"))
        .await
        .context(format_args!("locking {shared}"))?;
    let now_in_shared: Vec<String> = portals_in(tx, &shared).await?;
    if now_in_shared.iter().any(|p| !portals.contains(p)) {
        return Ok(false);
    }
    for m in moves {
        tx.execute(
            &format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {shared} s
                 WHERE s.portal = $1 AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.portal = s.portal AND t.id = s.id)",
                table = m.table,
                columns = m.columns
            ),
            &[&m.portal],
        )
        .await
        .context(format_args!("copying the last rows of {shared}"))?;
    }
    tx.batch_execute("SAVEPOINT b24_shared")
        .await
        .context("setting a savepoint")?;
    match tx.batch_execute(&format!("DROP TABLE {shared}")).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
            // Views of the operator's still read it: keep it under another name.
            let kept = format!("{}__before_portal_tables", entity.as_str());
            tx.batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT b24_shared; ALTER TABLE {shared} RENAME TO {}",
                quote_ident(&kept)
            ))
            .await
            .context(format_args!("renaming {shared}"))?;
            tracing::warn!(table = %shared, kept_as = %kept, error = %e,
                "other objects depend on the shared table; it is kept under a new name");
        }
        Err(e) => return Err(e).context(format_args!("dropping {shared}")),
    }
    refresh_view(tx, store, entity, true).await?;
    Ok(true)
}

async fn is_plain_table(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "SELECT coalesce((SELECT relkind = 'r' FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[&name],
        )
        .await
        .context("looking for a shared mirror table")?
        .get(0))
}

/// The portals with rows in `table`, read from its primary key one portal at a time.
async fn portals_in(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(client
        .query(
            &format!(
                "WITH RECURSIVE p(portal) AS (
                     SELECT min(portal) FROM {table}
                     UNION ALL
                     SELECT (SELECT min(portal) FROM {table} WHERE portal > p.portal) FROM p WHERE p.portal IS NOT NULL)
                 SELECT portal FROM p WHERE portal IS NOT NULL"
            ),
            &[],
        )
        .await
        .context(format_args!("listing the portals in {table}"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Creates `portal`'s table with the columns its recorded fields use in the shared
/// table (other portals' columns stay behind; their values are in `raw` anyway).
/// `None` when the table stayed busy.
async fn prepare(
    client: &mut Client,
    store: &Store,
    entity: Entity,
    shared: &str,
    portal: &str,
) -> Result<Option<Move>, StoreError> {
    let table_name = portal_table_name(entity, portal);
    let table = store.table(&table_name);
    let fields = store.table("_fields");
    let columns: Vec<(String, String)> = client
        .query(
            &format!(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                   AND NOT (a.attname = ANY($4))
                   AND a.attname IN (SELECT column_name FROM {fields} WHERE portal = $2 AND entity = $3
                                     UNION SELECT currency_column FROM {fields} WHERE portal = $2 AND entity = $3)
                 ORDER BY a.attnum"
            ),
            &[&shared, &portal, &entity.as_str(), &SYSTEM_COLUMNS.as_slice()],
        )
        .await
        .context(format_args!("reading the columns of {portal:?} in {shared}"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let what = format!("creating {table}");
    let mut attempts = ShortLock::new(&what);
    loop {
        let Some(tx) = attempts.begin(client).await? else {
            return Ok(None);
        };
        let result = async {
            advisory_lock(&tx, &format!("b24-store:table:{table}")).await?;
            // Its rows were filled by an earlier version.
            register_table(&tx, store, portal, entity, &table_name, FIRST_MAPPING).await?;
            create_portal_table(&tx, &table, &columns).await
        }
        .await;
        if attempts.end(tx, result).await?.is_some() {
            break;
        }
    }
    let columns: Vec<String> = SYSTEM_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(columns.into_iter().map(|(name, _)| name))
        .map(|c| quote_ident(&c))
        .collect();
    Ok(Some(Move {
        portal: portal.to_string(),
        table,
        columns: columns.join(", "),
    }))
}

/// Copies the portal's rows in batches by ID, continuing after the highest ID the
/// portal table already has (nothing but this move writes it before the view exists).
async fn copy_rows(client: &mut Client, shared: &str, m: &Move) -> Result<(), StoreError> {
    let (table, columns) = (&m.table, &m.columns);
    let mut after: i64 = client
        .query_one(
            &format!("SELECT coalesce(max(id), 0) FROM {table} WHERE portal = $1"),
            &[&m.portal],
        )
        .await
        .context(format_args!("reading how far {table} got"))?
        .get(0);
    let batch = format!(
        "WITH batch AS (SELECT {columns} FROM {shared} WHERE portal = $1 AND id > $2 ORDER BY portal, id LIMIT {BATCH_ROWS}),
              moved AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM batch ON CONFLICT (portal, id) DO NOTHING)
         SELECT max(id), count(*) FROM batch"
    );
    let mut copied = 0i64;
    loop {
        let row = client
            .query_one(&batch, &[&m.portal, &after])
            .await
            .context(format_args!("copying rows of {shared} into {table}"))?;
        let (last, count): (Option<i64>, i64) = (row.get(0), row.get(1));
        copied += count;
        match last {
            Some(last) if count == BATCH_ROWS => after = last,
            _ => break,
        }
    }
    tracing::info!(portal = %m.portal, %table, rows = copied, "rows copied from the shared table");
    Ok(())
}
