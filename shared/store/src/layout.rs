//! Mirror tables from field metadata: one table per portal and entity, created,
//! extended and retyped under short locks, new columns filled from `raw` in batches,
//! every column's meaning recorded, and the cross-portal views kept current.

mod backfill;
mod capture;
mod legacy;
mod mapping;
mod tables;

use std::collections::{HashMap, HashSet};

use b24_domain::back_sync::write_refusal;
use b24_domain::entity::Entity;
use b24_domain::schema::{
    ColumnSpec, ColumnType, EnumItem, FieldMeta, ValuePart, columns_for, is_system_field,
};
use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::{Context, Store, StoreError, check_portal, quote_ident};
use mapping::{CURRENT_MAPPING, FIRST_MAPPING};
pub(crate) use tables::portal_table_name;
use tables::{
    ShortLock, advisory_lock, check_owner, create_portal_table, refresh_view, register_table,
    table_owner,
};

/// The columns `upsert` writes for one portal's entity, in the types they have in the
/// database (a retyped field's column may have been widened to text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLayout {
    entity: Entity,
    portal: String,
    /// The portal table, schema-qualified and quoted.
    table: String,
    columns: Vec<LayoutColumn>,
    skipped: Vec<String>,
}

impl TableLayout {
    pub fn entity(&self) -> Entity {
        self.entity
    }

    pub fn portal(&self) -> &str {
        &self.portal
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The field columns, beyond the system columns every table has. A field whose
    /// type changed is written to two columns while its text column is being filled.
    pub fn columns(&self) -> &[LayoutColumn] {
        &self.columns
    }

    /// Codes of the fields that got no column, or whose column waits for a later run
    /// (their values stay in `raw`; the reason is logged and kept in
    /// `_fields.rejected_reason`).
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

/// What a portal table has now.
#[derive(Debug, Default)]
struct Existing {
    /// Column name -> (`format_type`, attnum); empty when the table does not exist.
    columns: HashMap<String, (String, i16)>,
    /// Column being retyped -> the text column its values are copied into.
    shadows: HashMap<String, String>,
    /// The (portal, entity) the table is registered for.
    owner: Option<(String, String)>,
}

async fn read_existing(
    client: &impl GenericClient,
    store: &Store,
    table_name: &str,
) -> Result<Existing, StoreError> {
    let table = store.table(table_name);
    let columns = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnum FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .context(format_args!("reading the columns of {table}"))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let shadows = client
        .query(
            &format!(
                "SELECT replaces, column_name FROM {} WHERE table_name = $1 AND replaces IS NOT NULL",
                store.table("_column_backfill")
            ),
            &[&table_name],
        )
        .await
        .context("reading columns being retyped")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Existing {
        columns,
        shadows,
        owner: table_owner(client, store, table_name).await?,
    })
}

/// A schema change a portal table needs.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Add {
        name: String,
        column_type: ColumnType,
    },
    /// The field's type changed: a text column `shadow` is added and filled beside
    /// `column`, then takes its place (never rewriting the table under a lock).
    Retype { column: String, shadow: String },
}

/// The columns `upsert` can write today and the changes still needed.
#[derive(Debug, Default)]
struct Arranged {
    columns: Vec<LayoutColumn>,
    rejected: Vec<String>,
    /// Codes of fields whose column is not there yet (its lock was not granted).
    waiting: HashSet<String>,
    changes: Vec<Change>,
}

/// Why a field without its column yet is kept in `raw` only, in `_fields`.
const WAITING_REASON: &str =
    "the column is added on a later run (the table was in use); values are in raw until then";

/// Matches the planned columns against the table's: present columns are written in
/// their current type (text stays text: never narrowed), missing ones and changed types
/// become changes.
fn arrange(fields: &[FieldMeta], placements: &[Placement], existing: &Existing) -> Arranged {
    let mut arranged = Arranged::default();
    for (field, placement) in fields.iter().zip(placements) {
        let specs = match placement {
            Placement::System(_) => continue,
            Placement::Rejected(_) => {
                arranged.rejected.push(field.code.clone());
                continue;
            }
            Placement::Columns(specs) => specs,
        };
        for spec in specs {
            let column = |name: &str, column_type| LayoutColumn {
                name: name.to_string(),
                code: field.code.clone(),
                column_type,
                part: spec.part,
            };
            let Some((current, attnum)) = existing.columns.get(&spec.name) else {
                arranged.changes.push(Change::Add {
                    name: spec.name.clone(),
                    column_type: spec.column_type,
                });
                if spec.part != ValuePart::MoneyCurrency {
                    arranged.waiting.insert(field.code.clone());
                }
                continue;
            };
            let current = ColumnType::from_sql(current);
            match current {
                Some(t) if t == spec.column_type || t == ColumnType::Text => {
                    arranged.columns.push(column(&spec.name, t));
                    continue;
                }
                // Written in its old type until replaced: values that no longer fit
                // are NULL there, in the text copy and in raw.
                Some(t) => arranged.columns.push(column(&spec.name, t)),
                None => {}
            }
            match existing.shadows.get(&spec.name) {
                Some(shadow) if existing.columns.contains_key(shadow) => {
                    arranged.columns.push(column(shadow, ColumnType::Text));
                }
                _ => arranged.changes.push(Change::Retype {
                    column: spec.name.clone(),
                    shadow: format!("_retype_{attnum}"),
                }),
            }
        }
    }
    arranged
}

impl Store {
    /// Makes `portal`'s table of `entity` hold `fields` (one table per portal and
    /// entity; see the README): creates it if missing, adds missing columns, gives a
    /// field whose type changed a text column (never narrowing, never dropping data),
    /// fills new columns from `raw`, records the metadata and keeps the entity's
    /// cross-portal view current. Schema changes wait at most a moment for their lock;
    /// one that does not get it is left for a later run and its values stay in `raw`
    /// (reported in `skipped_fields`). New columns are filled a batch of rows per
    /// transaction, resumably. Returns the columns `upsert` writes for this portal.
    pub async fn ensure_table(
        &self,
        portal: &str,
        entity: Entity,
        fields: &[FieldMeta],
    ) -> Result<TableLayout, StoreError> {
        check_portal(portal)?;
        let placements = plan(fields)?;
        let table_name = portal_table_name(entity, portal);
        let table = self.table(&table_name);
        let mut guard = self.client().await?;
        let client: &mut Client = &mut guard;
        legacy::move_shared_table(client, self, entity).await?;

        let mut existing = read_existing(&*client, self, &table_name).await?;
        check_owner(existing.owner.as_ref(), portal, entity, &table_name)?;
        let needs_change = existing.columns.is_empty()
            || existing.owner.is_none()
            || !arrange(fields, &placements, &existing).changes.is_empty();
        if needs_change {
            let what = format!("changing the columns of {table}");
            let mut attempts = ShortLock::new(&what);
            while let Some(tx) = attempts.begin(client).await? {
                let result =
                    apply_changes(&tx, self, portal, entity, fields, &placements, &table_name)
                        .await;
                if attempts.end(tx, result).await?.is_some() {
                    break;
                }
            }
            existing = read_existing(&*client, self, &table_name).await?;
        }
        if existing.columns.is_empty() {
            return Err(StoreError::Invalid(format!(
                "{table} could not be created: its lock was not granted; the next run tries again"
            )));
        }
        let mut arranged = arrange(fields, &placements, &existing);
        mapping::queue_remapped_columns(client, self, &table_name, &arranged.columns).await?;
        if backfill::fill_pending(client, self, portal, entity, &table_name, &arranged.columns)
            .await?
        {
            existing = read_existing(&*client, self, &table_name).await?;
            arranged = arrange(fields, &placements, &existing);
        }
        if !arranged.changes.is_empty() {
            tracing::warn!(portal, %entity, %table, changes = ?arranged.changes,
                "schema changes deferred to a later run");
        }
        record_fields(client, self, portal, entity, fields, &placements, &arranged).await?;
        let what = format!("updating view {}", self.mirror_table(entity));
        let mut attempts = ShortLock::new(&what);
        while let Some(tx) = attempts.begin(client).await? {
            let result = refresh_view(&tx, self, entity, false).await;
            if attempts.end(tx, result).await?.is_some() {
                break;
            }
        }
        capture::install(client, self, portal, entity, &table_name).await?;
        let mut skipped = arranged.rejected;
        skipped.extend(
            fields
                .iter()
                .filter(|f| arranged.waiting.contains(&f.code))
                .map(|f| f.code.clone()),
        );
        Ok(TableLayout {
            entity,
            portal: portal.to_string(),
            table,
            columns: arranged.columns,
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

/// One attempt at the table's schema changes, under its lock: registers and creates
/// the table, adds missing columns and the text copies of retyped ones, and (for a
/// table that has rows) records them as waiting to be filled.
async fn apply_changes(
    tx: &Transaction<'_>,
    store: &Store,
    portal: &str,
    entity: Entity,
    fields: &[FieldMeta],
    placements: &[Placement],
    table_name: &str,
) -> Result<(), StoreError> {
    let table = store.table(table_name);
    advisory_lock(tx, &format!("b24-store:table:{table}")).await?;
    let existing = read_existing(tx, store, table_name).await?;
    let is_new = existing.columns.is_empty();
    // A table that exists unregistered was filled by an earlier version.
    let mapping_version = if is_new {
        CURRENT_MAPPING
    } else {
        FIRST_MAPPING
    };
    register_table(tx, store, portal, entity, table_name, mapping_version).await?;
    if is_new {
        create_portal_table(tx, &table, &[]).await?;
    }
    let changes = arrange(fields, placements, &existing).changes;
    if changes.is_empty() {
        return Ok(());
    }
    let mut alterations = Vec::with_capacity(changes.len());
    let mut to_fill: Vec<&str> = Vec::new();
    let mut replaces: Vec<Option<&str>> = Vec::new();
    for change in &changes {
        match change {
            Change::Add { name, column_type } => {
                alterations.push(format!(
                    "ADD COLUMN IF NOT EXISTS {} {}",
                    quote_ident(name),
                    column_type.sql()
                ));
                to_fill.push(name);
                replaces.push(None);
            }
            Change::Retype { column, shadow } => {
                tracing::warn!(portal, %entity, %column, "field changed type; its values move to a text column");
                alterations.push(format!(
                    "ADD COLUMN IF NOT EXISTS {} {}",
                    quote_ident(shadow),
                    ColumnType::Text.sql()
                ));
                to_fill.push(shadow);
                replaces.push(Some(column));
            }
        }
    }
    // Nullable columns without a default: a catalog change, instant once locked.
    tx.batch_execute(&format!("ALTER TABLE {table} {}", alterations.join(", ")))
        .await
        .context(format_args!("adding columns to {table}"))?;
    if !is_new {
        tx.execute(
            &format!(
                "INSERT INTO {} (table_name, column_name, replaces)
                 SELECT $1, u.* FROM unnest($2::text[], $3::text[]) AS u
                 ON CONFLICT (table_name, column_name) DO UPDATE SET replaces = EXCLUDED.replaces, after_id = 0",
                store.table("_column_backfill")
            ),
            &[&table_name, &to_fill, &replaces],
        )
        .await
        .context("recording columns to fill")?;
    }
    Ok(())
}

async fn record_fields(
    client: &mut Client,
    store: &Store,
    portal: &str,
    entity: Entity,
    fields: &[FieldMeta],
    placements: &[Placement],
    arranged: &Arranged,
) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .context("starting to record field metadata")?;
    advisory_lock(
        &tx,
        &format!("b24-store:fields:{}:{portal}:{entity}", store.schema()),
    )
    .await?;
    let actual_type: HashMap<&str, ColumnType> = arranged
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.column_type))
        .collect();
    let mut column_name = Vec::with_capacity(fields.len());
    let mut column_type = Vec::with_capacity(fields.len());
    let mut currency_column = Vec::with_capacity(fields.len());
    let mut rejected_reason = Vec::with_capacity(fields.len());
    for (field, placement) in fields.iter().zip(placements) {
        let (name, ty, currency, reason) = match placement {
            Placement::Columns(_) if arranged.waiting.contains(&field.code) => {
                (None, None, None, Some(WAITING_REASON.to_string()))
            }
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
    let write_refusal: Vec<Option<&str>> = fields.iter().map(write_refusal).collect();
    let fields_table = store.table("_fields");
    tx.execute(
        &format!(
            "INSERT INTO {fields_table} AS f (portal, entity, code, position, column_name, column_type, currency_column,
                 title, label, bitrix_type, is_multiple, is_dynamic, is_read_only, rejected_reason, write_refusal)
             SELECT $1, $2, u.* FROM unnest($3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
                 $9::text[], $10::text[], $11::bool[], $12::bool[], $13::bool[], $14::text[], $15::text[]) AS u
             ON CONFLICT (portal, entity, code) DO UPDATE SET
                 position = EXCLUDED.position, column_name = EXCLUDED.column_name, column_type = EXCLUDED.column_type,
                 currency_column = EXCLUDED.currency_column, title = EXCLUDED.title, label = EXCLUDED.label,
                 bitrix_type = EXCLUDED.bitrix_type, is_multiple = EXCLUDED.is_multiple, is_dynamic = EXCLUDED.is_dynamic,
                 is_read_only = EXCLUDED.is_read_only, rejected_reason = EXCLUDED.rejected_reason,
                 write_refusal = EXCLUDED.write_refusal, updated_at = now(), removed_at = NULL
             WHERE f.removed_at IS NOT NULL
                OR (f.position, f.column_name, f.column_type, f.currency_column, f.title, f.label, f.bitrix_type,
                    f.is_multiple, f.is_dynamic, f.is_read_only, f.rejected_reason, f.write_refusal)
                   IS DISTINCT FROM
                   (EXCLUDED.position, EXCLUDED.column_name, EXCLUDED.column_type, EXCLUDED.currency_column,
                    EXCLUDED.title, EXCLUDED.label, EXCLUDED.bitrix_type, EXCLUDED.is_multiple, EXCLUDED.is_dynamic,
                    EXCLUDED.is_read_only, EXCLUDED.rejected_reason, EXCLUDED.write_refusal)"
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
            &write_refusal,
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
    tx.commit().await.context("committing field metadata")
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

    fn existing(columns: &[(&str, &str, i16)], shadows: &[(&str, &str)]) -> Existing {
        Existing {
            columns: columns
                .iter()
                .map(|(n, t, a)| (n.to_string(), (t.to_string(), *a)))
                .collect(),
            shadows: shadows
                .iter()
                .map(|(c, s)| (c.to_string(), s.to_string()))
                .collect(),
            owner: None,
        }
    }

    fn written(arranged: &Arranged) -> Vec<(&str, ColumnType)> {
        arranged
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.column_type))
            .collect()
    }

    #[test]
    fn missing_columns_are_added_and_their_fields_wait() {
        let fields = [field("ID", "integer"), field("UF_CRM_M", "money")];
        let arranged = arrange(&fields, &plan(&fields).unwrap(), &existing(&[], &[]));
        assert!(arranged.columns.is_empty());
        assert_eq!(arranged.waiting, HashSet::from(["UF_CRM_M".to_string()]));
        assert_eq!(
            arranged.changes,
            [
                Change::Add {
                    name: "uf_crm_m".into(),
                    column_type: ColumnType::Numeric
                },
                Change::Add {
                    name: "uf_crm_m_currency".into(),
                    column_type: ColumnType::Text
                }
            ]
        );
    }

    #[test]
    fn a_retyped_field_writes_its_old_column_and_gets_a_text_copy() {
        let fields = [field("UF_CRM_N", "string")];
        let placements = plan(&fields).unwrap();
        let before = arrange(
            &fields,
            &placements,
            &existing(&[("uf_crm_n", "bigint", 7)], &[]),
        );
        assert_eq!(written(&before), [("uf_crm_n", ColumnType::BigInt)]);
        assert_eq!(
            before.changes,
            [Change::Retype {
                column: "uf_crm_n".into(),
                shadow: "_retype_7".into()
            }]
        );
        // Once the copy exists both are written, until the copy takes the old one's place.
        let copying = arrange(
            &fields,
            &placements,
            &existing(
                &[("uf_crm_n", "bigint", 7), ("_retype_7", "text", 9)],
                &[("uf_crm_n", "_retype_7")],
            ),
        );
        assert!(copying.changes.is_empty());
        assert_eq!(
            written(&copying),
            [
                ("uf_crm_n", ColumnType::BigInt),
                ("_retype_7", ColumnType::Text)
            ]
        );
    }

    #[test]
    fn text_columns_are_never_narrowed() {
        let fields = [field("UF_CRM_N", "integer")];
        let arranged = arrange(
            &fields,
            &plan(&fields).unwrap(),
            &existing(&[("uf_crm_n", "text", 7)], &[]),
        );
        assert!(arranged.changes.is_empty());
        assert_eq!(written(&arranged), [("uf_crm_n", ColumnType::Text)]);
    }
}
