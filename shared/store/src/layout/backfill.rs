//! Filling new columns from `raw`, a batch of rows per short transaction, outside the
//! transaction that added them; and putting a retyped field's filled text column in
//! place of the old one. Progress is kept in `_column_backfill`, so a run cut short
//! continues where it stopped.

use b24_domain::entity::Entity;
use b24_domain::values::column_text;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::LayoutColumn;
use super::tables::{ShortLock, advisory_lock, refresh_view, sql_state};
use crate::upsert::lock_rows;
use crate::{Context, Store, StoreError, quote_ident};

/// Rows per backfill statement: each batch is its own transaction, short enough that
/// the portal's writers it holds off barely notice.
pub(crate) const BATCH_ROWS: i64 = 5_000;

/// A column waiting to be filled.
struct Pending {
    column: LayoutColumn,
    /// For a retyped field's text column: the column it takes the place of when full.
    replaces: Option<String>,
    after_id: i64,
}

/// Fills the pending columns of `table_name` that `columns` (the layout) writes; a
/// pending column the layout no longer writes (its field was removed) waits. Returns
/// true when a retyped column was put in place (the caller re-reads the columns).
pub(crate) async fn fill_pending(
    client: &mut Client,
    store: &Store,
    portal: &str,
    entity: Entity,
    table_name: &str,
    columns: &[LayoutColumn],
) -> Result<bool, StoreError> {
    let registry = store.table("_column_backfill");
    let pending: Vec<Pending> = client
        .query(
            &format!(
                "SELECT column_name, replaces, after_id FROM {registry} WHERE table_name = $1 ORDER BY column_name"
            ),
            &[&table_name],
        )
        .await
        .context("reading pending backfills")?
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let column = columns.iter().find(|c| c.name == name)?.clone();
            Some(Pending {
                column,
                replaces: r.get(1),
                after_id: r.get(2),
            })
        })
        .collect();
    if pending.is_empty() {
        return Ok(false);
    }
    let table = store.table(table_name);
    let names: Vec<&str> = pending.iter().map(|p| p.column.name.as_str()).collect();
    let plain: Vec<&str> = pending
        .iter()
        .filter(|p| p.replaces.is_none())
        .map(|p| p.column.name.as_str())
        .collect();
    let assignments: Vec<String> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{} = (v.c{i})::{}",
                quote_ident(&p.column.name),
                p.column.column_type.sql()
            )
        })
        .collect();
    let arrays: String = (0..pending.len())
        .map(|i| format!(", ${}::text[]", i + 2))
        .collect();
    let aliases: String = (0..pending.len()).map(|i| format!(", c{i}")).collect();
    let update = format!(
        "UPDATE {table} t SET {} FROM unnest($1::bigint[]{arrays}) AS v(id{aliases})
         WHERE t.portal = ${} AND t.id = v.id",
        assignments.join(", "),
        pending.len() + 2
    );
    let fill = Fill {
        table: &table,
        registry: &registry,
        table_name,
        portal,
        pending: &pending,
        update: &update,
        names: &names,
        plain: &plain,
    };
    let mut after = pending.iter().map(|p| p.after_id).min().unwrap_or(0);
    let (mut filled, mut invalid) = (0u64, 0u64);
    loop {
        let tx = client
            .transaction()
            .await
            .context("starting a backfill batch")?;
        match fill.batch(&tx, after, &mut invalid).await {
            Ok((rows, last, done)) => {
                tx.commit().await.context("committing a backfill batch")?;
                filled += rows;
                after = last;
                if done {
                    break;
                }
            }
            Err(e) if sql_state(&e) == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                // Rows locked by another session (SELECT ... FOR UPDATE): the sync goes
                // on and a later run continues from `after`.
                tx.rollback()
                    .await
                    .context("rolling back a backfill batch")?;
                tracing::warn!(%table, columns = ?names, after_id = after, error = %e,
                    "rows to backfill are locked; the fill continues on a later run");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!(%table, columns = ?names, rows = filled, invalid_values = invalid, "backfilled columns from raw");

    let mut swapped = false;
    for p in &pending {
        if let Some(old) = &p.replaces {
            swapped |= put_in_place(client, store, entity, table_name, &p.column.name, old).await?;
        }
    }
    Ok(swapped)
}

/// One fill of a table's pending columns.
struct Fill<'a> {
    table: &'a str,
    registry: &'a str,
    table_name: &'a str,
    portal: &'a str,
    pending: &'a [Pending],
    /// `UPDATE ... FROM unnest(ids, values...)` of the pending columns.
    update: &'a str,
    names: &'a [&'a str],
    /// The pending columns that are done when the last batch is (not retyping copies).
    plain: &'a [&'a str],
}

impl Fill<'_> {
    /// Fills the rows after `after` (up to [`BATCH_ROWS`]) in `tx` and records the
    /// progress: (rows filled, last ID, whether this was the last batch).
    async fn batch(
        &self,
        tx: &Transaction<'_>,
        after: i64,
        invalid: &mut u64,
    ) -> Result<(u64, i64, bool), StoreError> {
        let (table, registry) = (self.table, self.registry);
        // Upserts of the portal wait for the batch, so it never writes a value derived
        // from a `raw` that an upsert has just replaced.
        lock_rows(tx, table, self.portal).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT id, raw FROM {table} WHERE portal = $1 AND id > $2 ORDER BY portal, id LIMIT {BATCH_ROWS}"
                ),
                &[&self.portal, &after],
            )
            .await
            .context(format_args!("reading rows of {table} to backfill"))?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut values: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(rows.len()); self.pending.len()];
        for row in &rows {
            let raw: Value = row.get(1);
            for (p, out) in self.pending.iter().zip(&mut values) {
                let value = raw.get(&p.column.code).unwrap_or(&Value::Null);
                out.push(
                    column_text(p.column.part, p.column.column_type, value).unwrap_or_else(|_| {
                        *invalid += 1;
                        None
                    }),
                );
            }
        }
        if !ids.is_empty() {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
            params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
            params.push(&self.portal);
            tx.execute(self.update, &params)
                .await
                .context(format_args!("backfilling columns of {table}"))?;
        }
        let last = ids.last().copied().unwrap_or(after);
        let done = (ids.len() as i64) < BATCH_ROWS;
        tx.execute(
            &format!(
                "UPDATE {registry} SET after_id = greatest(after_id, $2) WHERE table_name = $1 AND column_name = ANY($3)"
            ),
            &[&self.table_name, &last, &self.names],
        )
        .await
        .context("recording backfill progress")?;
        if done {
            tx.execute(
                &format!("DELETE FROM {registry} WHERE table_name = $1 AND column_name = ANY($2)"),
                &[&self.table_name, &self.plain],
            )
            .await
            .context("finishing the backfill")?;
        }
        Ok((ids.len() as u64, last, done))
    }
}

/// Replaces the retyped column `old` by its filled text column `filled`: drop and
/// rename, both catalog-only, in one short transaction (a view reading `old` is
/// recreated in it). False when the table stayed busy or other objects depend on `old`.
async fn put_in_place(
    client: &mut Client,
    store: &Store,
    entity: Entity,
    table_name: &str,
    filled: &str,
    old: &str,
) -> Result<bool, StoreError> {
    let table = store.table(table_name);
    let what = format!("replacing column {old:?} of {table} by its text copy");
    let mut attempts = ShortLock::new(&what);
    let swap = loop {
        let tx = match attempts.begin(client).await {
            Ok(Some(tx)) => tx,
            Ok(None) => break Ok(None),
            Err(e) => break Err(e),
        };
        let result = swap_columns(&tx, store, entity, table_name, filled, old).await;
        match attempts.end(tx, result).await {
            Ok(None) => continue,
            done => break done,
        }
    };
    match swap {
        Ok(done) => Ok(done.is_some()),
        Err(e) if sql_state(&e) == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
            tracing::warn!(%table, column = old, error = %e,
                "other objects read the retyped column; it keeps its old type (the text copy is filled)");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The statements of [`put_in_place`], in its transaction.
async fn swap_columns(
    tx: &Transaction<'_>,
    store: &Store,
    entity: Entity,
    table_name: &str,
    filled: &str,
    old: &str,
) -> Result<(), StoreError> {
    let table = store.table(table_name);
    let view = store.mirror_table(entity);
    advisory_lock(tx, &format!("b24-store:table:{table}")).await?;
    let view_reads_it: bool = tx
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.refobjid = to_regclass($1) AND a.attname = $2 AND r.ev_class = to_regclass($3))",
            &[&table, &old, &view],
        )
        .await
        .context("checking what reads the column")?
        .get(0);
    if view_reads_it {
        tx.batch_execute(&format!("DROP VIEW {view}"))
            .await
            .context(format_args!("dropping view {view}"))?;
    }
    tx.batch_execute(&format!(
        "ALTER TABLE {table} DROP COLUMN {old_q}; ALTER TABLE {table} RENAME COLUMN {filled_q} TO {old_q}",
        old_q = quote_ident(old),
        filled_q = quote_ident(filled)
    ))
    .await
    .context(format_args!("replacing column {old:?} of {table}"))?;
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE table_name = $1 AND column_name = $2",
            store.table("_column_backfill")
        ),
        &[&table_name, &filled],
    )
    .await
    .context("finishing the retyping")?;
    if view_reads_it {
        refresh_view(tx, store, entity, true).await?;
    }
    Ok(())
}
