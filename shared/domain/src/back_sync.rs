//! Back-sync, the pure half: edits made in PostgreSQL reaching Bitrix24.
//!
//! Triggers on the mirror tables write each edit to an outbox (see the README, "Back-sync");
//! this module decides what one record's open outbox rows amount to ([`fold`]), whether
//! the portal changed the record after the editor last saw it ([`is_conflict`]), and
//! what a mirror value becomes in a `crm.*.update` / `add` ([`bitrix_fields`], the inverse
//! of [`crate::values`]).
//!
//! An outbox row's `changes` hold, per Bitrix24 field code, the new values of the field's
//! columns as the trigger read them: the text PostgreSQL prints for a scalar column
//! (`"1200.50"`, `"true"`, `"2024-08-30"`, `"2024-08-30T14:29:00+03:00"`), JSON for a
//! jsonb column, `null` for NULL. Text keeps every digit of a numeric.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::schema::{ColumnSpec, ColumnType, FieldMeta, ValuePart, columns_for};
use crate::values::{ValueError, column_text, to_copy_text};

/// What an outbox row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxOp {
    /// A row inserted in PostgreSQL: the record is to be created in Bitrix24.
    Create,
    Update,
    Delete,
}

impl OutboxOp {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxOp::Create => "create",
            OutboxOp::Update => "update",
            OutboxOp::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<OutboxOp> {
        match text {
            "create" => Some(OutboxOp::Create),
            "update" => Some(OutboxOp::Update),
            "delete" => Some(OutboxOp::Delete),
            _ => None,
        }
    }
}

/// One claimed outbox row.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    pub id: i64,
    /// The Bitrix24 ID, or a negative local ID for a row not yet created in Bitrix24.
    pub record_id: i64,
    pub op: OutboxOp,
    /// Field code -> {column -> new value}.
    pub changes: Map<String, Value>,
    /// The `DATE_MODIFY` the edited row held: the version the editor saw.
    pub seen_date_modify: Option<DateTime<Utc>>,
    /// Claims so far, this one included: above 1, an earlier claim may have reached
    /// Bitrix24 without its result being recorded.
    pub attempts: i32,
}

/// What back-sync does when the portal changed a record after the editor saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Keep the portal's values (the mirror row is refreshed) and record the conflict.
    #[default]
    PortalWins,
    /// Push the edit anyway.
    DatabaseWins,
}

/// What one record's open outbox rows amount to, with the rows it settles.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordPush {
    /// The outbox rows folded into this push, oldest first.
    pub entries: Vec<i64>,
    pub action: PushAction,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PushAction {
    /// Create the record (with every later edit folded in) and write its ID back.
    Create {
        local_id: i64,
        /// The create row's outbox ID: the record carries it in `ORIGIN_ID` so a retry
        /// after an unanswered add finds it instead of adding it again.
        key: i64,
        changes: Map<String, Value>,
        /// An earlier claim may have added it: look it up before adding.
        look_up_first: bool,
    },
    Update {
        id: u64,
        changes: Map<String, Value>,
        /// The version the first of the folded edits saw.
        seen: Option<DateTime<Utc>>,
        retried: bool,
    },
    Delete {
        id: u64,
        seen: Option<DateTime<Utc>>,
    },
    /// Inserted and deleted (or only edited) in PostgreSQL before the create reached
    /// Bitrix24: nothing to send.
    Cancelled,
    /// Edits of a row created in PostgreSQL whose create failed for good: they cannot
    /// reach Bitrix24.
    Orphaned,
}

/// Folds claimed outbox rows into one push per record, in the order of each record's
/// first row. Later values of a field replace earlier ones; a delete ends whatever came
/// before it; a create absorbs the edits made before it reached Bitrix24.
pub fn fold(entries: &[OutboxEntry]) -> Vec<RecordPush> {
    let mut order: Vec<i64> = Vec::new();
    let mut by_record: HashMap<i64, Vec<&OutboxEntry>> = HashMap::new();
    let mut sorted: Vec<&OutboxEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.id);
    for entry in sorted {
        by_record
            .entry(entry.record_id)
            .or_insert_with(|| {
                order.push(entry.record_id);
                Vec::new()
            })
            .push(entry);
    }
    order
        .into_iter()
        .map(|record| fold_record(record, &by_record[&record]))
        .collect()
}

fn fold_record(record_id: i64, entries: &[&OutboxEntry]) -> RecordPush {
    let mut action: Option<PushAction> = None;
    for entry in entries {
        action = Some(match (action, entry.op) {
            (_, OutboxOp::Create) => PushAction::Create {
                local_id: record_id,
                key: entry.id,
                changes: entry.changes.clone(),
                look_up_first: entry.attempts > 1,
            },
            (Some(PushAction::Create { .. }), OutboxOp::Delete) => PushAction::Cancelled,
            (_, OutboxOp::Delete) if record_id < 0 => PushAction::Cancelled,
            (previous, OutboxOp::Delete) => PushAction::Delete {
                id: record_id as u64,
                seen: first_seen(previous.as_ref()).or(entry.seen_date_modify),
            },
            (
                Some(PushAction::Create {
                    local_id,
                    key,
                    mut changes,
                    look_up_first,
                }),
                OutboxOp::Update,
            ) => {
                merge(&mut changes, &entry.changes);
                PushAction::Create {
                    local_id,
                    key,
                    changes,
                    look_up_first,
                }
            }
            (
                Some(PushAction::Update {
                    id,
                    mut changes,
                    seen,
                    retried,
                }),
                OutboxOp::Update,
            ) => {
                merge(&mut changes, &entry.changes);
                PushAction::Update {
                    id,
                    changes,
                    seen,
                    retried: retried || entry.attempts > 1,
                }
            }
            (Some(PushAction::Cancelled), OutboxOp::Update) => PushAction::Cancelled,
            (_, OutboxOp::Update) if record_id < 0 => PushAction::Orphaned,
            (_, OutboxOp::Update) => PushAction::Update {
                id: record_id as u64,
                changes: entry.changes.clone(),
                seen: entry.seen_date_modify,
                retried: entry.attempts > 1,
            },
        });
    }
    RecordPush {
        entries: entries.iter().map(|e| e.id).collect(),
        action: action.unwrap_or(PushAction::Cancelled),
    }
}

fn first_seen(action: Option<&PushAction>) -> Option<DateTime<Utc>> {
    match action {
        Some(PushAction::Update { seen, .. }) | Some(PushAction::Delete { seen, .. }) => *seen,
        _ => None,
    }
}

fn merge(into: &mut Map<String, Value>, later: &Map<String, Value>) {
    for (code, columns) in later {
        into.insert(code.clone(), columns.clone());
    }
}

/// Whether the portal changed the record after the editor's version: its
/// `DATE_MODIFY` is later than the one the edited row held. A row that held none (the
/// portal sent no `DATE_MODIFY`) cannot tell, and is no conflict.
pub fn is_conflict(seen: Option<DateTime<Utc>>, portal_record: &Map<String, Value>) -> bool {
    match (seen, date_modify(portal_record)) {
        (Some(seen), Some(current)) => current > seen,
        _ => false,
    }
}

fn date_modify(record: &Map<String, Value>) -> Option<DateTime<Utc>> {
    let text = record.get("DATE_MODIFY")?.as_str()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|dt| dt.with_timezone(&Utc))
}

/// The portal's UTC offset, as its `DATE_MODIFY` shows it.
pub fn portal_offset(record: &Map<String, Value>) -> Option<FixedOffset> {
    let text = record.get("DATE_MODIFY")?.as_str()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|dt| *dt.offset())
}

/// `ORIGINATOR_ID` of every record back-sync creates; `ORIGIN_ID` is
/// [`create_origin`].
pub const CREATE_ORIGINATOR: &str = "b24sync:postgres";

/// `ORIGIN_ID` of the record created from outbox row `key` of mirror schema `schema`.
pub fn create_origin(schema: &str, key: i64) -> String {
    format!("{schema}:outbox:{key}")
}

/// Why a field's value cannot go to Bitrix24. Names the field, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushValueError {
    #[error("field {field}: it has no column back-sync knows (the portal no longer reports it?)")]
    UnknownField { field: String },
    #[error("field {field}: {reason}")]
    NotWritable { field: String, reason: String },
    #[error("field {field}, column {column}: {source}")]
    BadValue {
        field: String,
        column: String,
        source: ValueError,
    },
    #[error("field {field}: {reason}")]
    BadMultifield { field: String, reason: &'static str },
}

/// Why Bitrix24 does not take a field from back-sync, or `None` when it does.
pub fn write_refusal(field: &FieldMeta) -> Option<&'static str> {
    if field.is_read_only {
        Some("read-only in Bitrix24")
    } else if field.bitrix_type == "file" {
        Some("files are not written back (upload them in Bitrix24)")
    } else if field.code.eq_ignore_ascii_case("ORIGINATOR_ID")
        || field.code.eq_ignore_ascii_case("ORIGIN_ID")
    {
        Some("back-sync sets it on the records it creates")
    } else {
        None
    }
}

/// The writable fields of an entity by code, with their columns.
pub struct WritableFields {
    fields: HashMap<String, (FieldMeta, Vec<ColumnSpec>)>,
}

impl WritableFields {
    /// From the portal's field metadata; a field is writable when [`write_refusal`]
    /// says nothing and it has columns.
    pub fn new(fields: &[FieldMeta]) -> WritableFields {
        let fields = fields
            .iter()
            .filter(|f| write_refusal(f).is_none())
            .filter_map(|f| {
                let columns = columns_for(f).ok()?;
                Some((f.code.clone(), (f.clone(), columns)))
            })
            .collect();
        WritableFields { fields }
    }
}

/// The `fields` of a `crm.*.update` / `add` for `changes` (code -> {column -> value}).
/// `portal_record` is the record as the portal holds it now (for an update): multi-
/// fields are sent as the difference to it, by item ID, since Bitrix24 adds every item
/// sent without an ID. Datetimes are written in `offset`, the portal's.
pub fn bitrix_fields(
    changes: &Map<String, Value>,
    writable: &WritableFields,
    portal_record: Option<&Map<String, Value>>,
    offset: FixedOffset,
) -> Result<Map<String, Value>, PushValueError> {
    let mut out = Map::new();
    for (code, columns) in changes {
        let Some((field, specs)) = writable.fields.get(code) else {
            return Err(PushValueError::UnknownField {
                field: code.clone(),
            });
        };
        let empty = Map::new();
        let values = columns.as_object().unwrap_or(&empty);
        let value_of = |column: &str| values.get(column).cloned().unwrap_or(Value::Null);
        let bad = |column: &str, source| PushValueError::BadValue {
            field: code.clone(),
            column: column.to_string(),
            source,
        };
        let value = if field.bitrix_type == "crm_multifield" {
            let current = portal_record.and_then(|r| r.get(code));
            multifield_update(code, &value_of(&specs[0].name), current)?
        } else {
            let mut amount = None;
            let mut currency = None;
            let mut whole = None;
            for ColumnSpec {
                name: column,
                column_type,
                part,
            } in specs
            {
                let value = value_of(column);
                match part {
                    ValuePart::MoneyAmount => {
                        amount = scalar(*column_type, &value).map_err(|e| bad(column, e))?
                    }
                    ValuePart::MoneyCurrency => {
                        currency = scalar(ColumnType::Text, &value).map_err(|e| bad(column, e))?
                    }
                    ValuePart::Dates => {
                        whole = Some(date_list(&value).map_err(|e| bad(column, e))?)
                    }
                    ValuePart::Whole => {
                        whole = Some(
                            whole_value(field, *column_type, &value, offset)
                                .map_err(|e| bad(column, e))?,
                        )
                    }
                }
            }
            match whole {
                Some(value) => value,
                // A money user field: "amount|currency", or empty to clear it.
                None => match (amount, currency) {
                    (Some(amount), Some(currency)) => json!(format!("{amount}|{currency}")),
                    (Some(amount), None) => json!(amount),
                    (None, _) => json!(""),
                },
            }
        };
        out.insert(code.clone(), value);
    }
    Ok(out)
}

/// A scalar column's value as the text PostgreSQL parses (`None` for NULL): the check
/// that the trigger's text is what the column type says.
fn scalar(column_type: ColumnType, value: &Value) -> Result<Option<String>, ValueError> {
    to_copy_text(column_type, value)
}

fn whole_value(
    field: &FieldMeta,
    column_type: ColumnType,
    value: &Value,
    offset: FixedOffset,
) -> Result<Value, ValueError> {
    if column_type == ColumnType::Jsonb {
        return Ok(value.clone());
    }
    let Some(text) = scalar(column_type, value)? else {
        // Bitrix24 clears a field sent empty.
        return Ok(json!(""));
    };
    Ok(match column_type {
        ColumnType::Boolean => {
            let on = text == "t";
            // Boolean user fields read and write 1/0; CRM flags (char) Y/N.
            if field.bitrix_type == "boolean" {
                json!(if on { "1" } else { "0" })
            } else {
                json!(if on { "Y" } else { "N" })
            }
        }
        ColumnType::Timestamptz => {
            let instant =
                DateTime::parse_from_rfc3339(&text).map_err(|_| ValueError::NotADatetime)?;
            json!(
                instant
                    .with_timezone(&offset)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            )
        }
        _ => json!(text),
    })
}

/// A multiple date column (a jsonb array of calendar dates) as Bitrix24's list.
fn date_list(value: &Value) -> Result<Value, ValueError> {
    match value {
        Value::Null => Ok(json!([])),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                Ok(to_copy_text(ColumnType::Date, item)?
                    .map(Value::String)
                    .unwrap_or(Value::Null))
            })
            .filter(|item| !matches!(item, Ok(Value::Null)))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(ValueError::WrongKind {
            expected: "an array of dates",
            found: "another JSON value",
        }),
    }
}

/// The items of a multi-field (PHONE, EMAIL, WEB, IM, LINK) to send so that the portal
/// ends up holding `wanted`: items of `current` missing from `wanted` are deleted by ID,
/// items whose value or type changed are updated by ID, items without a known ID are
/// added. Unchanged items are not sent.
fn multifield_update(
    code: &str,
    wanted: &Value,
    current: Option<&Value>,
) -> Result<Value, PushValueError> {
    let bad = |reason| PushValueError::BadMultifield {
        field: code.to_string(),
        reason,
    };
    let wanted = match wanted {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        _ => {
            return Err(bad(
                "expected a JSON array of {\"VALUE\", \"VALUE_TYPE\"} items",
            ));
        }
    };
    let current: BTreeMap<String, &Map<String, Value>> = current
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|item| item_id(item).map(|id| (id, item)))
        .collect();
    let mut kept = Vec::new();
    let mut out = Vec::new();
    for item in &wanted {
        let item = item
            .as_object()
            .ok_or_else(|| bad("every item must be an object with VALUE and VALUE_TYPE"))?;
        let value = item
            .get("VALUE")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("every item needs a VALUE string"))?;
        let value_type = item.get("VALUE_TYPE").and_then(Value::as_str);
        let known = item_id(item).filter(|id| current.contains_key(id));
        match known {
            Some(id) => {
                kept.push(id.clone());
                let before = current[&id];
                let same = before.get("VALUE").and_then(Value::as_str) == Some(value)
                    && value_type.is_none_or(|t| {
                        before.get("VALUE_TYPE").and_then(Value::as_str) == Some(t)
                    });
                if !same {
                    let mut update = json!({"ID": id, "VALUE": value});
                    if let Some(t) = value_type {
                        update["VALUE_TYPE"] = json!(t);
                    }
                    out.push(update);
                }
            }
            None => {
                let mut add = json!({"VALUE": value});
                add["VALUE_TYPE"] = json!(value_type.unwrap_or("WORK"));
                out.push(add);
            }
        }
    }
    for id in current.keys().filter(|id| !kept.contains(id)) {
        out.push(json!({"ID": id, "DELETE": "Y"}));
    }
    Ok(Value::Array(out))
}

fn item_id(item: &Map<String, Value>) -> Option<String> {
    match item.get("ID")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether the portal already holds what `pushed` (a `fields` object from
/// [`bitrix_fields`]) would set: a retried update whose first attempt reached Bitrix24
/// looks like a conflict by its `DATE_MODIFY`, and must not be recorded as one.
pub fn already_applied(
    pushed: &Map<String, Value>,
    writable: &WritableFields,
    portal_record: &Map<String, Value>,
) -> bool {
    pushed.iter().all(|(code, value)| {
        let Some((field, specs)) = writable.fields.get(code) else {
            return false;
        };
        if field.bitrix_type == "crm_multifield" {
            return value.as_array().is_some_and(Vec::is_empty);
        }
        let current = portal_record.get(code).unwrap_or(&Value::Null);
        specs.iter().all(|spec| {
            let text = |v: &Value| column_text(spec.part, spec.column_type, v).ok().flatten();
            let (ours, theirs) = (text(value), text(current));
            match spec.column_type {
                // The same instant in another offset is the same value.
                ColumnType::Timestamptz => parse_instant(ours) == parse_instant(theirs),
                _ => ours == theirs,
            }
        })
    })
}

fn parse_instant(text: Option<String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text?)
        .ok()
        .map(|dt| dt.with_timezone(&Utc))
}

#[cfg(test)]
mod tests;
