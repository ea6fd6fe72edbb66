//! Which rules turned `raw` into a portal table's columns. Each table records the
//! version it was filled under (`_mirror_tables.mapping_version`); when the store's
//! rules are newer, the columns whose values changed are queued in `_column_backfill`
//! once, and the batched, resumable fill re-derives them from `raw`.

use b24_domain::schema::{ColumnType, ValuePart};
use tokio_postgres::Client;

use super::LayoutColumn;
use crate::{Context, Store, StoreError};

/// The version of tables filled before versions were recorded (the shared table of
/// earlier versions included): a date was its local date part, a multiple date field
/// kept the portal's strings.
pub(crate) const FIRST_MAPPING: i32 = 1;

/// A date is the UTC date of the portal's midnight-UTC rendering (a day later than the
/// local date part west of UTC), and a multiple date field holds a jsonb array of
/// calendar dates.
const UTC_DATES: i32 = 2;

/// The rules of this version.
pub(crate) const CURRENT_MAPPING: i32 = UTC_DATES;

/// Whether the rules for `column` changed since `version`.
fn remapped_since(version: i32, column: &LayoutColumn) -> bool {
    version < UTC_DATES
        && (column.column_type == ColumnType::Date || column.part == ValuePart::Dates)
}

/// Queues the columns of `table_name` (of those the layout writes) whose rules changed
/// since the table's version to be filled again from `raw`, and records the current
/// version, in one transaction: the fill then runs once, and a run cut short continues
/// it. Does nothing for a table already at the current version.
pub(crate) async fn queue_remapped_columns(
    client: &mut Client,
    store: &Store,
    table_name: &str,
    columns: &[LayoutColumn],
) -> Result<(), StoreError> {
    let registry = store.table("_mirror_tables");
    let tx = client
        .transaction()
        .await
        .context("starting to check the table's mapping version")?;
    // The row lock lets one of two concurrent runs queue the fill.
    let Some(row) = tx
        .query_opt(
            &format!(
                "SELECT mapping_version FROM {registry} WHERE table_name = $1 AND mapping_version < $2 FOR UPDATE"
            ),
            &[&table_name, &CURRENT_MAPPING],
        )
        .await
        .context("reading the table's mapping version")?
    else {
        return Ok(());
    };
    let version: i32 = row.get(0);
    let stale: Vec<&str> = columns
        .iter()
        .filter(|c| remapped_since(version, c))
        .map(|c| c.name.as_str())
        .collect();
    // A column already waiting may hold values of the old rules: it starts again.
    tx.execute(
        &format!(
            "INSERT INTO {} (table_name, column_name) SELECT $1, unnest($2::text[])
             ON CONFLICT (table_name, column_name) DO UPDATE SET after_id = 0",
            store.table("_column_backfill")
        ),
        &[&table_name, &stale],
    )
    .await
    .context("queueing columns to fill again")?;
    tx.execute(
        &format!("UPDATE {registry} SET mapping_version = $2 WHERE table_name = $1"),
        &[&table_name, &CURRENT_MAPPING],
    )
    .await
    .context("recording the table's mapping version")?;
    tx.commit()
        .await
        .context("committing the table's mapping version")?;
    tracing::info!(table = %store.table(table_name), from = version, to = CURRENT_MAPPING, columns = ?stale,
        "columns filled under earlier rules are filled again from raw");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(column_type: ColumnType, part: ValuePart) -> LayoutColumn {
        LayoutColumn {
            name: "c".into(),
            code: "C".into(),
            column_type,
            part,
        }
    }

    #[test]
    fn only_date_columns_of_first_version_tables_are_filled_again() {
        let date = column(ColumnType::Date, ValuePart::Whole);
        let dates = column(ColumnType::Jsonb, ValuePart::Dates);
        let others = [
            column(ColumnType::Timestamptz, ValuePart::Whole),
            column(ColumnType::Jsonb, ValuePart::Whole),
            column(ColumnType::Text, ValuePart::Whole),
            column(ColumnType::Numeric, ValuePart::MoneyAmount),
        ];
        assert!(remapped_since(FIRST_MAPPING, &date));
        assert!(remapped_since(FIRST_MAPPING, &dates));
        assert!(!others.iter().any(|c| remapped_since(FIRST_MAPPING, c)));
        assert!(!remapped_since(CURRENT_MAPPING, &date));
        assert!(!remapped_since(CURRENT_MAPPING, &dates));
    }
}
