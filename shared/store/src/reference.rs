//! Reference tables and product rows (migration V8) and stage history (V9): what people
//! join the mirror against. A reference table (funnels, stages and lists, currencies,
//! users) is replaced per portal as a whole; product rows are replaced per owner (a deal
//! or a smart process item), so an owner's removed rows go too; stage history is only
//! ever appended to. Rows arrive as the portal sends
//! them (either API's names: `ID` or `id`, `OWNER_ID` or `ownerId`); each typed column
//! takes the first name present, converted as the mirror converts values.

use b24_domain::schema::ColumnType;
use b24_domain::values::to_copy_text;
use serde_json::Value;

use crate::{Context, Row, Store, StoreError, check_portal, to_db_ids};

/// A reference table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceTable {
    /// `crm_category`: funnels of one entity type.
    Categories { entity_type_id: u32 },
    /// `crm_status`: every reference list and stage.
    Statuses,
    /// `crm_currency`.
    Currencies,
    /// `bitrix_user`.
    Users,
}

/// One typed column: its name, the row keys it is read from (the first present), its
/// type. The first columns are the table's key after `portal`.
struct Column {
    name: &'static str,
    keys: &'static [&'static str],
    column_type: ColumnType,
}

const fn col(name: &'static str, keys: &'static [&'static str], column_type: ColumnType) -> Column {
    Column {
        name,
        keys,
        column_type,
    }
}

use ColumnType::{BigInt, Boolean, Numeric, Text, Timestamptz};

const CATEGORY: [Column; 4] = [
    col("id", &["id", "ID"], BigInt),
    col("name", &["name", "NAME"], Text),
    col("sort", &["sort", "SORT"], BigInt),
    col("is_default", &["isDefault", "IS_DEFAULT"], Boolean),
];
const STATUS: [Column; 7] = [
    col("entity_id", &["ENTITY_ID", "entityId"], Text),
    col("status_id", &["STATUS_ID", "statusId"], Text),
    col("name", &["NAME", "name"], Text),
    col("sort", &["SORT", "sort"], BigInt),
    col("category_id", &["CATEGORY_ID", "categoryId"], BigInt),
    col("semantics", &["SEMANTICS", "semantics"], Text),
    col("color", &["COLOR", "color"], Text),
];
const CURRENCY: [Column; 6] = [
    col("currency", &["CURRENCY", "currency"], Text),
    col("full_name", &["FULL_NAME", "fullName"], Text),
    col("is_base", &["BASE", "base"], Boolean),
    col("amount", &["AMOUNT", "amount"], Numeric),
    col("amount_cnt", &["AMOUNT_CNT", "amountCnt"], BigInt),
    col("sort", &["SORT", "sort"], BigInt),
];
const USER: [Column; 7] = [
    col("id", &["ID", "id"], BigInt),
    col("active", &["ACTIVE", "active"], Boolean),
    col("name", &["NAME", "name"], Text),
    col("last_name", &["LAST_NAME", "lastName"], Text),
    col("second_name", &["SECOND_NAME", "secondName"], Text),
    col("email", &["EMAIL", "email"], Text),
    col("work_position", &["WORK_POSITION", "workPosition"], Text),
];
const STAGE_HISTORY: [Column; 7] = [
    col("id", &["ID", "id"], BigInt),
    col("owner_id", &["OWNER_ID", "ownerId"], BigInt),
    col("type_id", &["TYPE_ID", "typeId"], BigInt),
    col(
        "created_time",
        &["CREATED_TIME", "createdTime"],
        Timestamptz,
    ),
    col("category_id", &["CATEGORY_ID", "categoryId"], BigInt),
    col("stage_id", &["STAGE_ID", "STATUS_ID", "stageId"], Text),
    col(
        "stage_semantic_id",
        &["STAGE_SEMANTIC_ID", "STATUS_SEMANTIC_ID", "stageSemanticId"],
        Text,
    ),
];
const PRODUCT_ROW: [Column; 14] = [
    col("id", &["id", "ID"], BigInt),
    col("owner_type", &["ownerType", "OWNER_TYPE"], Text),
    col("owner_id", &["ownerId", "OWNER_ID"], BigInt),
    col("product_id", &["productId", "PRODUCT_ID"], BigInt),
    col("product_name", &["productName", "PRODUCT_NAME"], Text),
    col("price", &["price", "PRICE"], Numeric),
    col("quantity", &["quantity", "QUANTITY"], Numeric),
    col("discount_rate", &["discountRate", "DISCOUNT_RATE"], Numeric),
    col("discount_sum", &["discountSum", "DISCOUNT_SUM"], Numeric),
    col("tax_rate", &["taxRate", "TAX_RATE"], Numeric),
    col("tax_included", &["taxIncluded", "TAX_INCLUDED"], Boolean),
    col("measure_code", &["measureCode", "MEASURE_CODE"], BigInt),
    col("measure_name", &["measureName", "MEASURE_NAME"], Text),
    col("sort", &["sort", "SORT"], BigInt),
];

/// What one replacement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    /// Rows written (new or changed).
    pub written: u64,
    /// Rows the portal no longer has, removed.
    pub removed: u64,
    /// Rows without their key (left out) and values that did not fit their column
    /// (stored as NULL, kept in `raw`).
    pub invalid: u64,
}

impl ReferenceTable {
    fn table(self) -> &'static str {
        match self {
            ReferenceTable::Categories { .. } => "crm_category",
            ReferenceTable::Statuses => "crm_status",
            ReferenceTable::Currencies => "crm_currency",
            ReferenceTable::Users => "bitrix_user",
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            ReferenceTable::Categories { .. } => &CATEGORY,
            ReferenceTable::Statuses => &STATUS,
            ReferenceTable::Currencies => &CURRENCY,
            ReferenceTable::Users => &USER,
        }
    }

    /// Key columns after `portal` (and `entity_type_id` for categories).
    fn key_len(self) -> usize {
        match self {
            ReferenceTable::Statuses => 2,
            _ => 1,
        }
    }
}

/// The rows as text arrays per column (for `unnest`), the raw records, and how many
/// rows and values did not fit.
struct Arrays {
    columns: Vec<Vec<Option<String>>>,
    raw: Vec<Value>,
    invalid: u64,
}

fn arrays(columns: &[Column], key_len: usize, rows: &[Row]) -> Arrays {
    let mut out = Arrays {
        columns: vec![Vec::with_capacity(rows.len()); columns.len()],
        raw: Vec::with_capacity(rows.len()),
        invalid: 0,
    };
    for row in rows {
        let values: Vec<Option<String>> = columns
            .iter()
            .map(|c| {
                let value = c
                    .keys
                    .iter()
                    .find_map(|k| row.get(*k))
                    .unwrap_or(&Value::Null);
                // A stage's SEMANTICS may sit only in EXTRA (`process` rows have none).
                let value = match (c.name, value) {
                    ("semantics", Value::Null) => row
                        .get("EXTRA")
                        .and_then(|e| e.get("SEMANTICS"))
                        .unwrap_or(&Value::Null),
                    _ => value,
                };
                to_copy_text(c.column_type, value).unwrap_or_else(|_| {
                    out.invalid += 1;
                    None
                })
            })
            .collect();
        if values[..key_len].iter().any(Option::is_none) {
            out.invalid += 1;
            continue;
        }
        for (column, value) in out.columns.iter_mut().zip(values) {
            column.push(value);
        }
        out.raw.push(Value::Object(row.clone()));
    }
    out
}

/// `INSERT ... SELECT` from `unnest` of one text array per column (cast to the column's
/// type) and the raw records, parameters from `$first` on.
fn insert_sql(
    table: &str,
    fixed: &[&str],
    columns: &[Column],
    first: usize,
    key: &[&str],
) -> String {
    let names: Vec<&str> = fixed
        .iter()
        .copied()
        .chain(columns.iter().map(|c| c.name))
        .chain(["raw"])
        .collect();
    let mut values: Vec<String> = (1..=fixed.len()).map(|i| format!("${i}")).collect();
    values.extend(
        columns
            .iter()
            .map(|c| format!("u.{}::{}", c.name, c.column_type.sql())),
    );
    values.push("u.raw".into());
    let unnest: Vec<String> = (0..columns.len())
        .map(|i| format!("${}::text[]", first + i))
        .chain([format!("${}::jsonb[]", first + columns.len())])
        .collect();
    let aliases: Vec<&str> = columns.iter().map(|c| c.name).chain(["raw"]).collect();
    let updates: Vec<String> = columns
        .iter()
        .map(|c| c.name)
        .chain(["raw"])
        .filter(|n| !key.contains(n))
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let distinct: Vec<String> = columns
        .iter()
        .map(|c| c.name)
        .chain(["raw"])
        .filter(|n| !key.contains(n))
        .map(|n| format!("t.{n} IS DISTINCT FROM EXCLUDED.{n}"))
        .collect();
    format!(
        "INSERT INTO {table} AS t ({}) SELECT {} FROM unnest({}) AS u({})
         ON CONFLICT ({}) DO UPDATE SET {}, synced_at = now() WHERE {}",
        names.join(", "),
        values.join(", "),
        unnest.join(", "),
        aliases.join(", "),
        key.join(", "),
        updates.join(", "),
        distinct.join(" OR "),
    )
}

impl Store {
    /// Replaces `portal`'s rows of `table` (for categories, of its entity type) with
    /// `rows`, the portal's whole list: new and changed rows are written, rows the list
    /// no longer has are removed, in one transaction.
    pub async fn replace_reference(
        &self,
        portal: &str,
        table: ReferenceTable,
        rows: &[Row],
    ) -> Result<Replaced, StoreError> {
        check_portal(portal)?;
        let columns = table.columns();
        let key_len = table.key_len();
        let data = arrays(columns, key_len, rows);
        let name = self.table(table.table());
        let type_id = match table {
            ReferenceTable::Categories { entity_type_id } => Some(entity_type_id as i32),
            _ => None,
        };
        let mut fixed = vec!["portal"];
        let mut key: Vec<&str> = vec!["portal"];
        if type_id.is_some() {
            fixed.push("entity_type_id");
            key.push("entity_type_id");
        }
        key.extend(columns[..key_len].iter().map(|c| c.name));
        let insert = insert_sql(&name, &fixed, columns, fixed.len() + 1, &key);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context(format_args!("starting to replace {}", table.table()))?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&portal];
        if let Some(type_id) = &type_id {
            params.push(type_id);
        }
        for column in &data.columns {
            params.push(column);
        }
        params.push(&data.raw);
        let written = tx
            .execute(&insert, &params)
            .await
            .context(format_args!("writing {}", table.table()))?;
        // The rows the list no longer has: the key columns as text, compared as text.
        let key_columns = &columns[..key_len];
        let listed: Vec<String> = (0..data.raw.len())
            .map(|i| {
                key_columns
                    .iter()
                    .enumerate()
                    .map(|(c, _)| data.columns[c][i].clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
            })
            .collect();
        let key_text: Vec<String> = key_columns
            .iter()
            .map(|c| format!("{}::text", c.name))
            .collect();
        let scope = if type_id.is_some() {
            " AND entity_type_id = $3"
        } else {
            ""
        };
        let delete = format!(
            "DELETE FROM {name} WHERE portal = $1{scope}
               AND NOT (concat_ws(E'\\x1f', {}) = ANY($2))",
            key_text.join(", ")
        );
        let removed = match &type_id {
            Some(type_id) => tx.execute(&delete, &[&portal, &listed, type_id]).await,
            None => tx.execute(&delete, &[&portal, &listed]).await,
        }
        .context(format_args!("removing rows gone from {}", table.table()))?;
        tx.commit()
            .await
            .context(format_args!("committing {}", table.table()))?;
        Ok(Replaced {
            written,
            removed,
            invalid: data.invalid,
        })
    }

    /// Replaces the product rows of `owners` (of `owner_type`: `D` for deals) with
    /// `rows`, every row those owners have now: rows of theirs not among them are
    /// removed. One transaction.
    pub async fn replace_product_rows(
        &self,
        portal: &str,
        owner_type: &str,
        owners: &[u64],
        rows: &[Row],
    ) -> Result<Replaced, StoreError> {
        check_portal(portal)?;
        let owners = to_db_ids(owners)?;
        let data = arrays(&PRODUCT_ROW, 1, rows);
        let name = self.table("product_row");
        let insert = insert_sql(&name, &["portal"], &PRODUCT_ROW, 2, &["portal", "id"]);
        // Every kept row has its ID (rows without one are left out as invalid).
        let ids: Vec<i64> = data.columns[0]
            .iter()
            .filter_map(|id| id.as_deref()?.parse().ok())
            .collect();
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context("starting to replace product rows")?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&portal];
        for column in &data.columns {
            params.push(column);
        }
        params.push(&data.raw);
        let written = tx
            .execute(&insert, &params)
            .await
            .context("writing product rows")?;
        let removed = tx
            .execute(
                &format!(
                    "DELETE FROM {name} WHERE portal = $1 AND owner_type = $2 AND owner_id = ANY($3)
                       AND NOT (id = ANY($4))"
                ),
                &[&portal, &owner_type, &owners, &ids],
            )
            .await
            .context("removing product rows gone from their owners")?;
        tx.commit().await.context("committing product rows")?;
        Ok(Replaced {
            written,
            removed,
            invalid: data.invalid,
        })
    }

    /// Adds stage-history entries of `entity_type_id` (as `crm.stagehistory.list`
    /// answers them); an entry already stored is left as it is unless it differs.
    pub async fn append_stage_history(
        &self,
        portal: &str,
        entity_type_id: u32,
        rows: &[Row],
    ) -> Result<Replaced, StoreError> {
        check_portal(portal)?;
        let data = arrays(&STAGE_HISTORY, 1, rows);
        let name = self.table("stage_history");
        let key = ["portal", "entity_type_id", "id"];
        let insert = insert_sql(
            &name,
            &["portal", "entity_type_id"],
            &STAGE_HISTORY,
            3,
            &key,
        );
        let type_id = entity_type_id as i32;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&portal, &type_id];
        for column in &data.columns {
            params.push(column);
        }
        params.push(&data.raw);
        let written = self
            .client()
            .await?
            .execute(&insert, &params)
            .await
            .context("writing stage history")?;
        Ok(Replaced {
            written,
            removed: 0,
            invalid: data.invalid,
        })
    }

    /// The newest stage-history entry stored for `portal`'s `entity_type_id`: the next
    /// read starts after it.
    pub async fn last_stage_history_id(
        &self,
        portal: &str,
        entity_type_id: u32,
    ) -> Result<Option<u64>, StoreError> {
        let sql = format!(
            "SELECT max(id) FROM {} WHERE portal = $1 AND entity_type_id = $2",
            self.table("stage_history")
        );
        let newest: Option<i64> = self
            .client()
            .await?
            .query_one(&sql, &[&portal, &(entity_type_id as i32)])
            .await
            .context("reading the newest stage-history entry")?
            .get(0);
        Ok(newest.and_then(|id| u64::try_from(id).ok()))
    }
}
