//! `crm.stagehistory.list`: the stage history the portal records itself for leads,
//! deals and smart processes (api-reference/crm/crm-stage-history-list.md).
//!
//! Every entry is one row of a small column table per entity type (ID, TYPE_ID,
//! OWNER_ID, CREATED_TIME, then CATEGORY_ID, STAGE_SEMANTIC_ID, STAGE_ID or, for leads,
//! STATUS_SEMANTIC_ID, STATUS_ID): about 50 bytes an entry, stage codes interned. The
//! shared list engine (`list::Query`) filters, orders and pages it, so `>ID` windows are
//! found by binary search and `start=-1` never counts. Entries are never removed:
//! deleting a record keeps its history, as on a portal.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::list::{Dialect, Query, object_param};
use crate::methods::{Done, cost};
use crate::params::param;
use crate::schema::{Entity, FieldDef, Kind, ValueType};
use crate::table::{Cell, Stored, Table, list_items};
use crate::values::{PortalClock, parse_int, scalar_text};

/// `TYPE_ID` of an entry.
pub(crate) const CREATED: i64 = 1;
/// A move to an intermediate stage (semantics P).
pub(crate) const INTERMEDIATE: i64 = 2;
/// A move to a final stage (semantics S or F).
pub(crate) const FINAL: i64 = 3;
/// A move to another pipeline.
pub(crate) const CATEGORY_CHANGED: i64 = 5;

/// Whether a kind of record has a stage history.
pub(crate) fn has_history(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Classic(Entity::Deal | Entity::Lead) | Kind::Smart(_)
    )
}

/// A stage's semantics: `S` success, `F` failure, `P` in progress; a stage of another
/// pipeline (`C7:WON`, `DT1038_12:SUCCESS`) counts by the part after the colon.
pub(crate) fn semantic(stage: &str) -> &'static str {
    match stage.rsplit(':').next().unwrap_or(stage) {
        "WON" | "CONVERTED" | "SUCCESS" => "S",
        "LOSE" | "APOLOGY" | "JUNK" | "FAIL" => "F",
        _ => "P",
    }
}

fn field(name: &str, api_type: &'static str, value_type: ValueType, title: &str) -> FieldDef {
    FieldDef {
        name: name.to_string(),
        value_type,
        api_type,
        title: title.to_string(),
        read_only: true,
        immutable: false,
        required: false,
        multiple: false,
        deprecated: false,
        readable: true,
        status_type: None,
        user_field: None,
    }
}

/// The entry fields of a kind, in the order the method answers them.
fn history_fields(kind: Kind) -> Vec<FieldDef> {
    let mut fields = vec![
        field("ID", "integer", ValueType::Integer, "ID"),
        field("TYPE_ID", "integer", ValueType::Integer, "Type"),
        field("OWNER_ID", "integer", ValueType::Integer, "Owner"),
        field("CREATED_TIME", "datetime", ValueType::DateTime, "Created"),
    ];
    if kind == Kind::Classic(Entity::Lead) {
        fields.push(field(
            "STATUS_SEMANTIC_ID",
            "string",
            ValueType::Code,
            "Status semantics",
        ));
        fields.push(field("STATUS_ID", "crm_status", ValueType::Code, "Status"));
    } else {
        fields.push(field(
            "CATEGORY_ID",
            "integer",
            ValueType::Integer,
            "Pipeline",
        ));
        fields.push(field(
            "STAGE_SEMANTIC_ID",
            "string",
            ValueType::Code,
            "Stage semantics",
        ));
        fields.push(field("STAGE_ID", "crm_status", ValueType::Code, "Stage"));
    }
    fields
}

/// Where a record is: its ID, stage (or lead status) and pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub owner: u64,
    pub stage: Option<String>,
    pub category: Option<i64>,
}

impl Position {
    /// The record at `row` of `table`.
    pub fn of(table: &Table, row: usize) -> Position {
        let stage = table.roles.stage.and_then(|c| match table.cell(row, c) {
            Cell::Str(s) => Some(s.to_string()),
            _ => None,
        });
        let category = table.roles.category.and_then(|c| match table.cell(row, c) {
            Cell::Int(id) => Some(id),
            _ => None,
        });
        Position {
            owner: table.id_at(row),
            stage,
            category,
        }
    }

    /// When the record was created (seeded records carry their own moment).
    pub fn created_at(table: &Table, row: usize) -> Option<i64> {
        table
            .roles
            .created_time
            .and_then(|c| match table.cell(row, c) {
                Cell::Time(t) => Some(t),
                _ => None,
            })
    }
}

/// The `TYPE_ID` of a change from `before` to `after`, if it is one the portal records.
pub(crate) fn change_type(before: &Position, after: &Position) -> Option<i64> {
    if before.category != after.category {
        Some(CATEGORY_CHANGED)
    } else if before.stage != after.stage {
        let semantic = after.stage.as_deref().map_or("P", semantic);
        Some(if semantic == "P" { INTERMEDIATE } else { FINAL })
    } else {
        None
    }
}

/// The stage histories of the portal, one table per entity type.
#[derive(Default)]
pub(crate) struct StageHistory {
    tables: Vec<Table>,
}

impl StageHistory {
    /// The history of a kind, if anything was recorded or it was prepared.
    pub fn table(&self, kind: Kind) -> Option<&Table> {
        self.tables.iter().find(|t| t.kind == kind)
    }

    /// The history of a kind, made empty the first time.
    pub fn prepare(&mut self, kind: Kind) -> &mut Table {
        let index = match self.tables.iter().position(|t| t.kind == kind) {
            Some(index) => index,
            None => {
                self.tables.push(Table::new(kind, history_fields(kind)));
                self.tables.len() - 1
            }
        };
        &mut self.tables[index]
    }

    /// Appends an entry (kinds without a history record nothing).
    pub fn record(&mut self, kind: Kind, type_id: i64, position: &Position, at: i64) {
        if !has_history(kind) {
            return;
        }
        let table = self.prepare(kind);
        let id = table.next_id;
        let lead = kind == Kind::Classic(Entity::Lead);
        let stage = position.stage.as_deref();
        let mut values = vec![
            Stored::Int(id as i64),
            Stored::Int(type_id),
            Stored::Int(position.owner as i64),
            Stored::Time(at),
        ];
        if !lead {
            values.push(position.category.map_or(Stored::Null, Stored::Int));
        }
        values.push(Stored::Str(stage.map_or("P", semantic).into()));
        values.push(stage.map_or(Stored::Null, |s| Stored::Str(s.into())));
        table.push(values);
        table.next_id += 1;
    }

    /// A creation entry for every live record of `table`, in ID order, at the records'
    /// creation time.
    pub fn record_creations(&mut self, table: &Table) {
        let kind = table.kind;
        if !has_history(kind) {
            return;
        }
        self.prepare(kind);
        for row in (0..table.rows()).filter(|&row| table.is_live(row)) {
            let at = Position::created_at(table, row).unwrap_or(0);
            self.record(kind, CREATED, &Position::of(table, row), at);
        }
    }

    /// Every entry of a kind as the method shows it (all fields), by ID.
    pub fn dump(&self, kind: Kind, clock: &PortalClock) -> Vec<Value> {
        let Some(table) = self.table(kind) else {
            return Vec::new();
        };
        let columns: Vec<usize> = (0..table.fields.len()).collect();
        (0..table.rows())
            .map(|row| Value::Object(render(table, row, &columns, clock)))
            .collect()
    }
}

/// An entry as the method shows it: numbers as numbers, `CREATED_TIME` in the
/// portal's offset.
fn render(table: &Table, row: usize, columns: &[usize], clock: &PortalClock) -> Map<String, Value> {
    let mut out = Map::with_capacity(columns.len());
    for &column in columns {
        let value = match table.cell(row, column) {
            Cell::Int(v) => json!(v),
            Cell::Time(t) => json!(clock.format_secs(t)),
            Cell::Str(s) => json!(s),
            _ => Value::Null,
        };
        out.insert(table.fields[column].name.clone(), value);
    }
    out
}

/// Field names exactly as the method spells them; unknown ones refused as documented.
struct HistoryDialect;

impl HistoryDialect {
    fn column(table: &Table, name: &str, what: &str) -> Result<Option<usize>, ApiError> {
        table.column(name.trim()).map(Some).ok_or_else(|| {
            ApiError::new(
                400,
                "INVALID_ARG_VALUE",
                format!(
                    "Invalid {what}: field '{}' is not allowed in {what}",
                    name.trim()
                ),
            )
        })
    }
}

impl Dialect for HistoryDialect {
    fn filter_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        HistoryDialect::column(table, name, "filter")
    }

    fn order_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        HistoryDialect::column(table, name, "order")
    }

    fn descending(&self, field: &str, direction: &Value) -> Result<bool, ApiError> {
        crate::items::strict_direction(field, direction)
    }

    fn bad_value(&self, key: &str, _value: &Value, _value_type: ValueType) -> ApiError {
        crate::items::invalid_filter_value(key)
    }

    fn groups(&self) -> bool {
        false
    }
}

/// The kind `entityTypeId` names, if it has a stage history here.
pub(crate) fn history_kind(
    params: &Map<String, Value>,
    kind_of: impl Fn(u32) -> Option<Kind>,
) -> Result<Kind, ApiError> {
    let raw = param(params, "entityTypeId");
    let id = raw.and_then(parse_int);
    id.and_then(|id| u32::try_from(id).ok())
        .and_then(kind_of)
        .filter(|kind| has_history(*kind))
        .ok_or_else(|| {
            let shown = match (id, raw.and_then(scalar_text)) {
                (Some(id), _) => id.to_string(),
                (None, Some(text)) => text,
                (None, None) => String::new(),
            };
            ApiError::new(
                400,
                "ENTITY_TYPE_NOT_SUPPORTED",
                format!("Entity type {shown} is not supported"),
            )
        })
}

/// The columns `select` names (table order); none or `*` selects every field, names
/// that are no field are ignored.
fn selected(table: &Table, select: Option<&Value>) -> Vec<usize> {
    let names: Vec<String> = select
        .map(list_items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let all = || (0..table.fields.len()).collect::<Vec<_>>();
    if names.is_empty() || names.iter().any(|n| n == "*") {
        return all();
    }
    let columns: Vec<usize> = (0..table.fields.len())
        .filter(|&c| names.iter().any(|n| *n == table.fields[c].name))
        .collect();
    if columns.is_empty() { all() } else { columns }
}

/// `crm.stagehistory.list {entityTypeId, filter, order, select, start}`: `result.items`,
/// `total` and `next` as every list (no count with `start=-1`).
pub(crate) fn list(
    history: &StageHistory,
    kind: Kind,
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Done, ApiError> {
    let invalid = |what: &str| {
        ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            format!("Parameter '{what}' must be an object"),
        )
    };
    let filter = object_param(params, "filter", || invalid("filter"))?;
    let order = object_param(params, "order", || invalid("order"))?;
    let start = param(params, "start").and_then(parse_int).unwrap_or(0);
    let empty;
    let table = match history.table(kind) {
        Some(table) => table,
        None => {
            empty = Table::new(kind, history_fields(kind));
            &empty
        }
    };
    let query = Query::new(table, &filter, &order, start, clock, &HistoryDialect)?;
    let picked = query.pick(table);
    let columns = selected(table, param(params, "select"));
    let rows: Vec<Value> = picked
        .rows
        .iter()
        .map(|&row| Value::Object(render(table, row, &columns, clock)))
        .collect();
    let charged = cost::list(
        rows.len(),
        columns.len(),
        picked.counted,
        table.live_count(),
        picked.scanned,
    );
    let rows_returned = rows.len();
    Ok(Done {
        result: json!({ "items": rows }),
        total: picked.total,
        next: picked.next,
        rows_returned,
        cost: charged,
        changes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stage: &str, category: Option<i64>) -> Position {
        Position {
            owner: 7,
            stage: Some(stage.to_string()),
            category,
        }
    }

    #[test]
    fn changes_are_typed_as_the_docs_list_them() {
        let new = at("NEW", Some(0));
        assert_eq!(change_type(&new, &new), None);
        assert_eq!(
            change_type(&new, &at("PREPARATION", Some(0))),
            Some(INTERMEDIATE)
        );
        assert_eq!(change_type(&new, &at("WON", Some(0))), Some(FINAL));
        assert_eq!(change_type(&new, &at("LOSE", Some(0))), Some(FINAL));
        assert_eq!(
            change_type(&new, &at("C3:NEW", Some(3))),
            Some(CATEGORY_CHANGED)
        );
        assert_eq!(semantic("DT1038_12:SUCCESS"), "S");
        assert_eq!(semantic("DT1038_12:FAIL"), "F");
        assert_eq!(semantic("JUNK"), "F");
        assert_eq!(semantic("UC_7Q2K1X"), "P");
    }

    #[test]
    fn entries_keep_ids_in_order_and_render_typed() {
        let mut history = StageHistory::default();
        let kind = Kind::Classic(Entity::Deal);
        history.record(kind, CREATED, &at("NEW", Some(0)), 1_700_000_000);
        history.record(kind, FINAL, &at("WON", Some(0)), 1_700_000_100);
        history.record(Kind::Classic(Entity::Contact), CREATED, &at("X", None), 0);
        assert!(history.table(Kind::Classic(Entity::Contact)).is_none());
        let clock = PortalClock {
            offset: chrono::FixedOffset::east_opt(3 * 3600).unwrap(),
        };
        let dump = history.dump(kind, &clock);
        assert_eq!(dump.len(), 2);
        assert_eq!(dump[1]["ID"], json!(2));
        assert_eq!(dump[1]["TYPE_ID"], json!(3));
        assert_eq!(dump[1]["CATEGORY_ID"], json!(0));
        assert_eq!(dump[1]["STAGE_SEMANTIC_ID"], json!("S"));
        assert!(
            dump[0]["CREATED_TIME"]
                .as_str()
                .unwrap()
                .ends_with("+03:00")
        );
    }
}
