//! Mirror tables from field metadata: create, add columns, widen retyped columns,
//! backfill from `raw`, and record what every column means.

use std::collections::{HashMap, HashSet};

use b24_domain::entity::Entity;
use b24_domain::schema::{
    ColumnSpec, ColumnType, EnumItem, FieldMeta, ValuePart, columns_for, is_system_field,
};
use b24_domain::values::column_text;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Transaction;

use crate::copy::copy_in;
use crate::{Context, Store, StoreError, check_portal, quote_ident};

/// The columns `upsert` writes for one portal's entity, in the types they have in the
/// database (a retyped field's column may have been widened to text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLayout {
    entity: Entity,
    columns: Vec<LayoutColumn>,
    skipped: Vec<String>,
}

impl TableLayout {
    pub fn entity(&self) -> Entity {
        self.entity
    }

    /// The field columns, beyond the system columns every table has.
    pub fn columns(&self) -> &[LayoutColumn] {
        &self.columns
    }

    /// Codes of the fields that got no column (their values stay in `raw`; the
    /// reason is logged and kept in `_fields.rejected_reason`).
    pub fn skipped_fields(&self) -> &[String] {
        &self.skipped
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutColumn {
    pub name: String,
    /// The Bitrix24 field code the value is read from.
    pub code: String,
    pub column_type: ColumnType,
    pub part: ValuePart,
}

/// The stored description of one field, for documentation endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub code: String,
    /// `None` when the field got no column (see `rejected_reason`).
    pub column: Option<String>,
    /// The PostgreSQL type of `column`.
    pub column_type: Option<String>,
    /// The companion currency column of a money field.
    pub currency_column: Option<String>,
    pub title: String,
    pub label: Option<String>,
    pub bitrix_type: String,
    pub is_multiple: bool,
    pub is_dynamic: bool,
    pub is_read_only: bool,
    pub rejected_reason: Option<String>,
    /// Set when the portal no longer reports the field; its column keeps its data.
    pub removed_at: Option<DateTime<Utc>>,
    pub items: Vec<EnumItem>,
}

/// Where a field's values go.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    System(&'static str),
    Columns(Vec<ColumnSpec>),
    Rejected(String),
}

/// Decides every field's columns; a field whose column name is already taken by an
/// earlier field (codes differing only in case, a money companion) is rejected.
fn plan(fields: &[FieldMeta]) -> Result<Vec<Placement>, StoreError> {
    let mut codes = HashSet::new();
    let mut taken: HashMap<String, &str> = HashMap::new();
    let mut placements = Vec::with_capacity(fields.len());
    for field in fields {
        if !codes.insert(field.code.as_str()) {
            return Err(StoreError::Invalid(format!(
                "field {:?} is listed twice",
                field.code
            )));
        }
        if is_system_field(&field.code) {
            let column = if field.code.eq_ignore_ascii_case("ID") {
                "id"
            } else {
                "date_modify"
            };
            placements.push(Placement::System(column));
            continue;
        }
        let placement = match columns_for(field) {
            Err(e) => Placement::Rejected(e.to_string()),
            Ok(specs) => match specs
                .iter()
                .find_map(|s| taken.get(&s.name).map(|owner| (s, *owner)))
            {
                Some((spec, owner)) => Placement::Rejected(format!(
                    "column {:?} is already used by field {owner:?}",
                    spec.name
                )),
                None => {
                    for spec in &specs {
                        taken.insert(spec.name.clone(), &field.code);
                    }
                    Placement::Columns(specs)
                }
            },
        };
        placements.push(placement);
    }
    Ok(placements)
}

impl Store {
    /// Makes the mirror table of `entity` hold `fields` of `portal`: creates it if
    /// missing, adds missing columns and fills them from `raw` for existing rows,
    /// widens a column whose field changed type to text (never narrowing, never
    /// dropping), and records the metadata. Runs in one transaction under a per-table
    /// advisory lock. Returns the columns `upsert` writes for this portal.
    pub async fn ensure_table(
        &self,
        portal: &str,
        entity: Entity,
        fields: &[FieldMeta],
    ) -> Result<TableLayout, StoreError> {
        check_portal(portal)?;
        let placements = plan(fields)?;
        let table = self.mirror_table(entity);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context("starting ensure_table")?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("b24-store:table:{table}")],
        )
        .await
        .context("locking the table definition")?;
        // lz4 compresses the raw records several times faster than the default pglz.
        let has_lz4: bool = tx
            .query_one("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'", &[])
            .await
            .context("checking for lz4 support")?
            .get(0);
        let raw_compression = if has_lz4 { " COMPRESSION lz4" } else { "" };
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                portal      text        NOT NULL,
                id          bigint      NOT NULL,
                raw         jsonb{raw_compression} NOT NULL,
                date_modify timestamptz,
                synced_at   timestamptz NOT NULL DEFAULT now(),
                deleted_at  timestamptz,
                PRIMARY KEY (portal, id)
            )"
        ))
        .await
        .context(format_args!("creating {table}"))?;
        let existing: HashMap<String, String> = tx
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                &[&table],
            )
            .await
            .context(format_args!("reading the columns of {table}"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();

        let mut columns = Vec::new();
        let mut skipped = Vec::new();
        let mut alterations = Vec::new();
        let mut to_backfill = Vec::new();
        for (field, placement) in fields.iter().zip(&placements) {
            match placement {
                Placement::System(_) => {}
                Placement::Rejected(reason) => {
                    tracing::warn!(portal, %entity, field = ?field.code, %reason, "field kept only in raw");
                    skipped.push(field.code.clone());
                }
                Placement::Columns(specs) => {
                    for spec in specs {
                        let name = quote_ident(&spec.name);
                        let (column_type, changed) = match existing.get(&spec.name) {
                            None => {
                                alterations.push(format!(
                                    "ADD COLUMN IF NOT EXISTS {name} {}",
                                    spec.column_type.sql()
                                ));
                                (spec.column_type, true)
                            }
                            Some(current) if current == spec.column_type.sql() => {
                                (spec.column_type, false)
                            }
                            Some(current) if current == ColumnType::Text.sql() => {
                                (ColumnType::Text, false)
                            }
                            Some(current) => {
                                tracing::warn!(portal, %entity, column = %spec.name, from = %current,
                                    to = spec.column_type.sql(), "field changed type; widening its column to text");
                                alterations.push(format!(
                                    "ALTER COLUMN {name} TYPE text USING {name}::text"
                                ));
                                (ColumnType::Text, true)
                            }
                        };
                        let column = LayoutColumn {
                            name: spec.name.clone(),
                            code: field.code.clone(),
                            column_type,
                            part: spec.part,
                        };
                        if changed {
                            to_backfill.push(column.clone());
                        }
                        columns.push(column);
                    }
                }
            }
        }
        if !alterations.is_empty() {
            tx.batch_execute(&format!("ALTER TABLE {table} {}", alterations.join(", ")))
                .await
                .context(format_args!("adding or widening columns of {table}"))?;
        }
        if !to_backfill.is_empty() {
            backfill(&tx, &table, &to_backfill).await?;
        }
        record_fields(&tx, self, portal, entity, fields, &placements, &columns).await?;
        tx.commit().await.context("committing ensure_table")?;
        Ok(TableLayout {
            entity,
            columns,
            skipped,
        })
    }

    /// The recorded fields of a portal's entity, in portal order, removed ones last.
    pub async fn describe_columns(
        &self,
        portal: &str,
        entity: Entity,
    ) -> Result<Vec<ColumnInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT code, column_name, column_type, currency_column, title, label, bitrix_type,
                            is_multiple, is_dynamic, is_read_only, rejected_reason, removed_at
                     FROM {} WHERE portal = $1 AND entity = $2
                     ORDER BY removed_at IS NOT NULL, position, code",
                    self.table("_fields")
                ),
                &[&portal, &entity.as_str()],
            )
            .await
            .context("reading field metadata")?;
        let items = client
            .query(
                &format!(
                    "SELECT code, item_id, value FROM {} WHERE portal = $1 AND entity = $2 ORDER BY code, item_id",
                    self.table("_field_items")
                ),
                &[&portal, &entity.as_str()],
            )
            .await
            .context("reading enumeration items")?;
        let mut items_by_code: HashMap<String, Vec<EnumItem>> = HashMap::new();
        for r in &items {
            items_by_code.entry(r.get(0)).or_default().push(EnumItem {
                id: r.get(1),
                value: r.get(2),
            });
        }
        Ok(rows
            .iter()
            .map(|r| {
                let code: String = r.get(0);
                ColumnInfo {
                    items: items_by_code.remove(&code).unwrap_or_default(),
                    code,
                    column: r.get(1),
                    column_type: r.get(2),
                    currency_column: r.get(3),
                    title: r.get(4),
                    label: r.get(5),
                    bitrix_type: r.get(6),
                    is_multiple: r.get(7),
                    is_dynamic: r.get(8),
                    is_read_only: r.get(9),
                    rejected_reason: r.get(10),
                    removed_at: r.get(11),
                }
            })
            .collect())
    }
}

/// Fills newly added or widened columns from the stored `raw` records, converting
/// with the same rules as `upsert`, in chunks through a staging table.
async fn backfill(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[LayoutColumn],
) -> Result<(), StoreError> {
    const CHUNK: i32 = 2_000;
    let codes: Vec<&str> = columns
        .iter()
        .map(|c| c.code.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let column_list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let column_defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.column_type.sql()))
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE b24_backfill (portal text, id bigint, {}) ON COMMIT DROP",
        column_defs.join(", ")
    ))
    .await
    .context("creating the backfill staging table")?;
    let copy = format!(
        "COPY b24_backfill (portal, id, {}) FROM STDIN",
        column_list.join(", ")
    );
    let select = tx
        .prepare(&format!(
            "SELECT portal, id, raw FROM {table} WHERE raw ?| $1::text[]"
        ))
        .await
        .context("preparing the backfill read")?;
    let cursor = tx
        .bind(&select, &[&codes])
        .await
        .context("opening the backfill read")?;
    let mut invalid = 0u64;
    let mut staged = 0usize;
    loop {
        let rows = tx
            .query_portal(&cursor, CHUNK)
            .await
            .context("reading rows to backfill")?;
        if rows.is_empty() {
            break;
        }
        copy_in(tx, &copy, &rows, 64 * columns.len(), |buf, row| {
            let portal: &str = row.get(0);
            let id: i64 = row.get(1);
            let raw: Value = row.get(2);
            buf.text(portal);
            buf.text(&id.to_string());
            for c in columns {
                let value = raw.get(&c.code).unwrap_or(&Value::Null);
                let text = column_text(c.part, c.column_type, value).unwrap_or_else(|_| {
                    invalid += 1;
                    None
                });
                buf.optional(text.as_deref());
            }
            Ok(())
        })
        .await?;
        staged += rows.len();
    }
    let assignments: Vec<String> = column_list.iter().map(|c| format!("{c} = s.{c}")).collect();
    tx.execute(
        &format!(
            "UPDATE {table} t SET {} FROM b24_backfill s WHERE t.portal = s.portal AND t.id = s.id",
            assignments.join(", ")
        ),
        &[],
    )
    .await
    .context("backfilling new columns")?;
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(%table, columns = ?names, rows = staged, invalid_values = invalid, "backfilled columns from raw");
    Ok(())
}

async fn record_fields(
    tx: &Transaction<'_>,
    store: &Store,
    portal: &str,
    entity: Entity,
    fields: &[FieldMeta],
    placements: &[Placement],
    columns: &[LayoutColumn],
) -> Result<(), StoreError> {
    let actual_type: HashMap<&str, ColumnType> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.column_type))
        .collect();
    let mut column_name = Vec::with_capacity(fields.len());
    let mut column_type = Vec::with_capacity(fields.len());
    let mut currency_column = Vec::with_capacity(fields.len());
    let mut rejected_reason = Vec::with_capacity(fields.len());
    for placement in placements {
        let (name, ty, currency, reason) = match placement {
            Placement::System("id") => {
                (Some("id".to_string()), Some(ColumnType::BigInt), None, None)
            }
            Placement::System(name) => (
                Some(name.to_string()),
                Some(ColumnType::Timestamptz),
                None,
                None,
            ),
            Placement::Rejected(reason) => (None, None, None, Some(reason.clone())),
            Placement::Columns(specs) => {
                let main = specs.iter().find(|s| s.part != ValuePart::MoneyCurrency);
                let currency = specs
                    .iter()
                    .find(|s| s.part == ValuePart::MoneyCurrency)
                    .map(|s| s.name.clone());
                let ty = main.and_then(|s| actual_type.get(s.name.as_str()).copied());
                (main.map(|s| s.name.clone()), ty, currency, None)
            }
        };
        column_name.push(name);
        column_type.push(ty.map(|t| t.sql().to_string()));
        currency_column.push(currency);
        rejected_reason.push(reason);
    }
    let codes: Vec<&str> = fields.iter().map(|f| f.code.as_str()).collect();
    let positions: Vec<i32> = (0..fields.len() as i32).collect();
    let titles: Vec<&str> = fields.iter().map(|f| f.title.as_str()).collect();
    let labels: Vec<Option<&str>> = fields.iter().map(|f| f.label.as_deref()).collect();
    let types: Vec<&str> = fields.iter().map(|f| f.bitrix_type.as_str()).collect();
    let multiple: Vec<bool> = fields.iter().map(|f| f.is_multiple).collect();
    let dynamic: Vec<bool> = fields.iter().map(|f| f.is_dynamic).collect();
    let read_only: Vec<bool> = fields.iter().map(|f| f.is_read_only).collect();
    let fields_table = store.table("_fields");
    tx.execute(
        &format!(
            "INSERT INTO {fields_table} AS f (portal, entity, code, position, column_name, column_type, currency_column,
                 title, label, bitrix_type, is_multiple, is_dynamic, is_read_only, rejected_reason)
             SELECT $1, $2, u.* FROM unnest($3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
                 $9::text[], $10::text[], $11::bool[], $12::bool[], $13::bool[], $14::text[]) AS u
             ON CONFLICT (portal, entity, code) DO UPDATE SET
                 position = EXCLUDED.position, column_name = EXCLUDED.column_name, column_type = EXCLUDED.column_type,
                 currency_column = EXCLUDED.currency_column, title = EXCLUDED.title, label = EXCLUDED.label,
                 bitrix_type = EXCLUDED.bitrix_type, is_multiple = EXCLUDED.is_multiple, is_dynamic = EXCLUDED.is_dynamic,
                 is_read_only = EXCLUDED.is_read_only, rejected_reason = EXCLUDED.rejected_reason,
                 updated_at = now(), removed_at = NULL
             WHERE f.removed_at IS NOT NULL
                OR (f.position, f.column_name, f.column_type, f.currency_column, f.title, f.label, f.bitrix_type,
                    f.is_multiple, f.is_dynamic, f.is_read_only, f.rejected_reason)
                   IS DISTINCT FROM
                   (EXCLUDED.position, EXCLUDED.column_name, EXCLUDED.column_type, EXCLUDED.currency_column,
                    EXCLUDED.title, EXCLUDED.label, EXCLUDED.bitrix_type, EXCLUDED.is_multiple, EXCLUDED.is_dynamic,
                    EXCLUDED.is_read_only, EXCLUDED.rejected_reason)"
        ),
        &[
            &portal,
            &entity.as_str(),
            &codes,
            &positions,
            &column_name,
            &column_type,
            &currency_column,
            &titles,
            &labels,
            &types,
            &multiple,
            &dynamic,
            &read_only,
            &rejected_reason,
        ],
    )
    .await
    .context("recording field metadata")?;
    tx.execute(
        &format!(
            "UPDATE {fields_table} SET removed_at = now(), updated_at = now()
             WHERE portal = $1 AND entity = $2 AND removed_at IS NULL AND NOT (code = ANY($3))"
        ),
        &[&portal, &entity.as_str(), &codes],
    )
    .await
    .context("marking removed fields")?;

    // Items of removed fields stay, so their stored ids still resolve to labels.
    let mut item_codes = Vec::new();
    let mut item_ids = Vec::new();
    let mut item_values = Vec::new();
    for field in fields {
        let mut seen = HashSet::new();
        for item in field.items.iter().filter(|i| seen.insert(i.id.as_str())) {
            item_codes.push(field.code.as_str());
            item_ids.push(item.id.as_str());
            item_values.push(item.value.as_str());
        }
    }
    let items_table = store.table("_field_items");
    tx.execute(
        &format!("DELETE FROM {items_table} WHERE portal = $1 AND entity = $2 AND code = ANY($3)"),
        &[&portal, &entity.as_str(), &codes],
    )
    .await
    .context("replacing enumeration items")?;
    tx.execute(
        &format!(
            "INSERT INTO {items_table} (portal, entity, code, item_id, value)
             SELECT $1, $2, u.* FROM unnest($3::text[], $4::text[], $5::text[]) AS u"
        ),
        &[
            &portal,
            &entity.as_str(),
            &item_codes,
            &item_ids,
            &item_values,
        ],
    )
    .await
    .context("recording enumeration items")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(code: &str, bitrix_type: &str) -> FieldMeta {
        FieldMeta {
            code: code.into(),
            title: code.into(),
            label: None,
            bitrix_type: bitrix_type.into(),
            is_multiple: false,
            is_dynamic: code.starts_with("UF_"),
            is_read_only: false,
            items: vec![],
        }
    }

    #[test]
    fn system_fields_map_to_system_columns() {
        let placements = plan(&[field("ID", "integer"), field("DATE_MODIFY", "datetime")]).unwrap();
        assert_eq!(
            placements,
            vec![Placement::System("id"), Placement::System("date_modify")]
        );
    }

    #[test]
    fn colliding_columns_reject_the_later_field() {
        let fields = [
            field("UF_CRM_PRICE", "money"),
            field("UF_CRM_PRICE_CURRENCY", "string"),
            field("uf_crm_price", "string"),
        ];
        let placements = plan(&fields).unwrap();
        assert!(matches!(&placements[0], Placement::Columns(specs) if specs.len() == 2));
        for p in &placements[1..] {
            assert!(
                matches!(p, Placement::Rejected(reason) if reason.contains("UF_CRM_PRICE")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn hostile_codes_are_rejected_and_duplicates_are_an_error() {
        let placements = plan(&[field("UF_CRM_X\"; DROP TABLE deal; --", "string")]).unwrap();
        assert!(matches!(&placements[0], Placement::Rejected(_)));
        let err = plan(&[field("TITLE", "string"), field("TITLE", "string")]).unwrap_err();
        assert!(err.to_string().contains("TITLE"));
    }
}
