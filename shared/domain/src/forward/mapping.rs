//! The target deal's fields, computed from the source deal along a route's
//! [`FieldPlan`], both portals' field metadata (`crm.deal.fields`) and, for
//! `by = "label"` on status fields, their status lists (`crm.status.list`).
//!
//! Rules, in the order they apply:
//! - [`ForwardContext::check`] refuses a plan the portals cannot honour, before any
//!   deal is read: a field missing on either portal, a read-only target field, a field
//!   holding IDs that mean nothing on the other portal (users, enumeration items,
//!   funnels, bound CRM records) without a value map, `by = "label"` on a field with no
//!   labels, a source file field not listed in `copy_files`.
//! - Mapped fields take the source value; an empty one (`null`, absent) is not sent,
//!   so the target keeps what it has. A value map translates each value (each element
//!   of a multiple field); a value it cannot translate takes the map's `default` or
//!   fails with a [`MappingError`] naming the field and the value.
//! - Multi-fields (`PHONE`, `EMAIL`, ...) lose their source row IDs: on the target a
//!   row without an ID is added.
//! - File fields listed in `copy_files` are left to the uploader ([`file_upload`]).
//! - Constants, then the stamps, then `ORIGINATOR_ID` / `ORIGIN_ID` ([`Origin`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::forward::route::{FieldPlan, MatchBy, ValueMap};
use crate::schema::{FieldMeta, SchemaError, parse_fields};

/// The fields of one portal's deals, as `crm.deal.fields` describes them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldCatalog(BTreeMap<String, FieldInfo>);

/// One field's descriptor: what [`FieldMeta`] reads, plus what forwarding needs.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldInfo {
    pub meta: FieldMeta,
    /// Settable only when the deal is created (`CATEGORY_ID`).
    pub is_immutable: bool,
    /// The `crm.status.list` entity of a `crm_status` field (`SOURCE`, `DEAL_TYPE`).
    pub status_type: Option<String>,
}

impl FieldCatalog {
    /// Reads the `result` object of `crm.deal.fields`.
    pub fn from_fields_result(result: &Value) -> Result<FieldCatalog, SchemaError> {
        let fields = parse_fields(result)?
            .into_iter()
            .map(|meta| {
                let descriptor = &result[meta.code.as_str()];
                let is_immutable = matches!(descriptor.get("isImmutable"), Some(Value::Bool(true)))
                    || descriptor.get("isImmutable").and_then(Value::as_str) == Some("Y");
                let status_type = descriptor
                    .get("statusType")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let info = FieldInfo {
                    meta,
                    is_immutable,
                    status_type,
                };
                (info.meta.code.clone(), info)
            })
            .collect();
        Ok(FieldCatalog(fields))
    }

    pub fn get(&self, code: &str) -> Option<&FieldInfo> {
        self.0.get(code)
    }
}

/// One row of `crm.status.list` (a stage, a source, a deal type).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StatusItem {
    #[serde(rename = "ENTITY_ID")]
    pub entity_id: String,
    #[serde(rename = "STATUS_ID")]
    pub status_id: String,
    #[serde(rename = "NAME")]
    pub name: String,
}

/// What one portal says about its deals.
#[derive(Clone, Copy, Debug)]
pub struct PortalSide<'a> {
    pub fields: &'a FieldCatalog,
    /// Every status list a `by = "label"` status field needs (stages of the funnels
    /// involved, sources, ...); may be empty when no such field is mapped.
    pub statuses: &'a [StatusItem],
}

/// Where a copied record came from, written to the target's `ORIGINATOR_ID` and
/// `ORIGIN_ID`: the key to find it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `b24sync:` and the source portal's domain in lower case, e.g.
    /// `b24sync:partner.bitrix24.com`: the same for every record of that portal and
    /// different for every other portal, whatever the configured names. (The domain is
    /// the configured `domain`, else the webhook's host without its port.)
    pub originator_id: String,
    /// The source record's ID in decimal.
    pub origin_id: String,
}

/// The docs give `ORIGINATOR_ID` no length limit; a host name has at most 253
/// characters, so an originator has at most 261.
pub const ORIGINATOR_PREFIX: &str = "b24sync:";

impl Origin {
    pub fn new(source_domain: &str, source_id: u64) -> Origin {
        Origin {
            originator_id: format!("{ORIGINATOR_PREFIX}{}", source_domain.to_ascii_lowercase()),
            origin_id: source_id.to_string(),
        }
    }

    /// The `filter` of a `crm.<entity>.list` that finds the copy (exact matches).
    pub fn list_filter(&self) -> Map<String, Value> {
        Map::from_iter([
            (
                "=ORIGINATOR_ID".to_string(),
                Value::from(self.originator_id.clone()),
            ),
            (
                "=ORIGIN_ID".to_string(),
                Value::from(self.origin_id.clone()),
            ),
        ])
    }

    pub(crate) fn write_to(&self, fields: &mut Map<String, Value>) {
        fields.insert(
            "ORIGINATOR_ID".into(),
            Value::from(self.originator_id.clone()),
        );
        fields.insert("ORIGIN_ID".into(), Value::from(self.origin_id.clone()));
    }
}

/// Why a deal cannot be forwarded along a route. Values in messages are the deal's
/// data (never secrets), shortened to printable text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the source portal has no deal field {field} ({key})")]
    UnknownSourceField { field: String, key: String },
    #[error("the target portal has no deal field {field} ({key})")]
    UnknownTargetField { field: String, key: String },
    #[error("the target's deal field {field} is read-only ({key})")]
    ReadOnlyTarget { field: String, key: String },
    #[error(
        "{field} is a {kind} field: its values are IDs of the source portal and mean nothing on the target; add values.{target} (by = \"id\" or \"label\") or set {target} in constants instead"
    )]
    NeedsValueMap {
        field: String,
        kind: String,
        target: String,
    },
    #[error(
        "values.{field}: by = \"label\" needs an enumeration or crm_status field on both portals, {field} is {kind}"
    )]
    NoLabels { field: String, kind: String },
    #[error("{field} is a file field: list it in copy_files to upload its files")]
    FileNotListed { field: String },
    #[error("copy_files: {field} is not a file field on the {portal} portal")]
    NotAFileField { field: String, portal: &'static str },
    #[error("{field}: the source value {value:?} has no mapping and values.{field} has no default")]
    UnmappedValue { field: String, value: String },
    #[error("{field}: the source portal has no item {value:?} to take a label from")]
    UnknownSourceItem { field: String, value: String },
    #[error("{field}: the target portal has no item labelled {label:?}")]
    NoTargetItem { field: String, label: String },
    #[error("{field}: the target portal has several items labelled {label:?}")]
    AmbiguousTargetItem { field: String, label: String },
    #[error("{field}: a value map applies to text and numbers, the source value is {kind}")]
    NotMappable { field: String, kind: &'static str },
}

/// Field types whose values are IDs local to one portal.
const PORTAL_LOCAL_TYPES: [&str; 13] = [
    "enumeration",
    "crm_category",
    "user",
    "employee",
    "crm",
    "crm_company",
    "crm_contact",
    "crm_lead",
    "crm_quote",
    "crm_deal",
    "crm_entity",
    "iblock_element",
    "iblock_section",
];

/// Field types whose values have labels to match: enumeration items and status lists.
const LABELLED_TYPES: [&str; 2] = ["enumeration", "crm_status"];

/// The target deal for one source deal.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetDeal {
    /// The `fields` of `crm.deal.add`.
    pub fields: Map<String, Value>,
    pub origin: Origin,
}

impl TargetDeal {
    /// The `fields` of `crm.deal.update` for the deal made earlier: the same, without
    /// the fields settable only at creation (`CATEGORY_ID`).
    pub fn update_fields(&self, target: &FieldCatalog) -> Map<String, Value> {
        self.fields
            .iter()
            .filter(|(code, _)| !target.get(code).is_some_and(|f| f.is_immutable))
            .map(|(code, value)| (code.clone(), value.clone()))
            .collect()
    }
}

/// A route's plan between two portals.
#[derive(Clone, Copy, Debug)]
pub struct ForwardContext<'a> {
    pub plan: &'a FieldPlan,
    /// The source portal's configured name (the `source_portal_field` stamp).
    pub source_name: &'a str,
    /// The source portal's domain (the [`Origin`]).
    pub source_domain: &'a str,
    pub source: PortalSide<'a>,
    pub target: PortalSide<'a>,
}

impl ForwardContext<'_> {
    /// Refuses a plan the two portals cannot honour; see the module documentation.
    pub fn check(&self) -> Result<(), MappingError> {
        for (source, target) in &self.plan.fields {
            let key = format!("fields.{source}");
            let source_field =
                self.source
                    .fields
                    .get(source)
                    .ok_or_else(|| MappingError::UnknownSourceField {
                        field: source.clone(),
                        key: key.clone(),
                    })?;
            let kind = source_field.meta.bitrix_type.as_str();
            let is_file_copy = self.plan.files.contains(source);
            if kind == "file" && !is_file_copy {
                return Err(MappingError::FileNotListed {
                    field: source.clone(),
                });
            }
            if is_file_copy && kind != "file" {
                return Err(MappingError::NotAFileField {
                    field: source.clone(),
                    portal: "source",
                });
            }
            match self.plan.values.get(target) {
                None if PORTAL_LOCAL_TYPES.contains(&kind) => {
                    return Err(MappingError::NeedsValueMap {
                        field: source.clone(),
                        kind: kind.to_string(),
                        target: target.clone(),
                    });
                }
                Some(ValueMap {
                    by: MatchBy::Label, ..
                }) => {
                    let target_kind = self
                        .target
                        .fields
                        .get(target)
                        .map_or(kind, |f| f.meta.bitrix_type.as_str());
                    if let Some(kind) = [kind, target_kind]
                        .into_iter()
                        .find(|kind| !LABELLED_TYPES.contains(kind))
                    {
                        return Err(MappingError::NoLabels {
                            field: target.clone(),
                            kind: kind.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
        for (target, key) in self.plan.written_fields() {
            let field =
                self.target
                    .fields
                    .get(target)
                    .ok_or_else(|| MappingError::UnknownTargetField {
                        field: target.to_string(),
                        key: key.clone(),
                    })?;
            if field.meta.is_read_only {
                return Err(MappingError::ReadOnlyTarget {
                    field: target.to_string(),
                    key,
                });
            }
        }
        for (_, target) in self.plan.file_fields() {
            if self
                .target
                .fields
                .get(target)
                .is_none_or(|f| f.meta.bitrix_type != "file")
            {
                return Err(MappingError::NotAFileField {
                    field: target.to_string(),
                    portal: "target",
                });
            }
        }
        Ok(())
    }

    /// The target deal for `deal` (a `crm.deal.get` result), forwarded at
    /// `transferred_at`. Runs [`ForwardContext::check`] first.
    pub fn target_deal(
        &self,
        deal_id: u64,
        deal: &Map<String, Value>,
        transferred_at: DateTime<Utc>,
    ) -> Result<TargetDeal, MappingError> {
        self.check()?;
        let mut fields = Map::new();
        for (source, target) in &self.plan.fields {
            if self.plan.files.contains(source) {
                continue;
            }
            let value = match deal.get(source) {
                None | Some(Value::Null) => continue,
                Some(value) => value,
            };
            let value = match self.plan.values.get(target) {
                Some(map) => self.translate(source, target, map, value, &fields, deal)?,
                None if self.is_multifield(target) => multifield_for_add(value),
                None => value.clone(),
            };
            fields.insert(target.clone(), value);
        }
        for (target, value) in &self.plan.constants {
            fields.insert(target.clone(), value.clone());
        }
        let stamp = &self.plan.stamp;
        let stamps = [
            (&stamp.source_portal_field, self.source_name.to_string()),
            (&stamp.source_deal_field, deal_id.to_string()),
            (
                &stamp.transferred_at_field,
                transferred_at.to_rfc3339_opts(SecondsFormat::Secs, false),
            ),
        ];
        for (field, value) in stamps {
            if let Some(field) = field {
                fields.insert(field.clone(), Value::from(value));
            }
        }
        let origin = Origin::new(self.source_domain, deal_id);
        origin.write_to(&mut fields);
        Ok(TargetDeal { fields, origin })
    }

    fn is_multifield(&self, target: &str) -> bool {
        self.target
            .fields
            .get(target)
            .is_some_and(|f| f.meta.bitrix_type == "crm_multifield")
    }

    /// One mapped value through its value map; each element of a list on its own.
    fn translate(
        &self,
        source: &str,
        target: &str,
        map: &ValueMap,
        value: &Value,
        written: &Map<String, Value>,
        deal: &Map<String, Value>,
    ) -> Result<Value, MappingError> {
        match value {
            Value::Array(items) => items
                .iter()
                .filter(|item| !item.is_null())
                .map(|item| self.translate_one(source, target, map, item, written, deal))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::from),
            one => self
                .translate_one(source, target, map, one, written, deal)
                .map(Value::from),
        }
    }

    fn translate_one(
        &self,
        source: &str,
        target: &str,
        map: &ValueMap,
        value: &Value,
        written: &Map<String, Value>,
        deal: &Map<String, Value>,
    ) -> Result<String, MappingError> {
        let text = scalar_text(value).ok_or_else(|| MappingError::NotMappable {
            field: target.to_string(),
            kind: json_kind(value),
        })?;
        let found = match &map.by {
            MatchBy::Id(ids) => ids.get(&text).cloned(),
            MatchBy::Label => {
                let label = self.source_label(source, &text, deal)?;
                self.target_item(target, &label, written)?
            }
        };
        found
            .or_else(|| map.default.clone())
            .ok_or_else(|| MappingError::UnmappedValue {
                field: target.to_string(),
                value: shorten(&text),
            })
    }

    /// The label of a source value: its enumeration item's text, or its status's name.
    fn source_label(
        &self,
        source: &str,
        value: &str,
        deal: &Map<String, Value>,
    ) -> Result<String, MappingError> {
        let unknown = || MappingError::UnknownSourceItem {
            field: source.to_string(),
            value: shorten(value),
        };
        let field = self.source.fields.get(source).ok_or_else(unknown)?;
        let label = if field.meta.bitrix_type == "enumeration" {
            field
                .meta
                .items
                .iter()
                .find(|item| item.id == value)
                .map(|item| item.value.clone())
        } else {
            let entity = status_entity(source, field, deal.get("CATEGORY_ID"));
            self.source
                .statuses
                .iter()
                .find(|s| s.entity_id == entity && s.status_id == value)
                .map(|s| s.name.clone())
        };
        label.ok_or_else(unknown)
    }

    /// The target value whose label matches, or `None` to fall back on the default.
    fn target_item(
        &self,
        target: &str,
        label: &str,
        written: &Map<String, Value>,
    ) -> Result<Option<String>, MappingError> {
        let Some(field) = self.target.fields.get(target) else {
            return Ok(None);
        };
        let wanted = normalized(label);
        let matches: Vec<String> = if field.meta.bitrix_type == "enumeration" {
            field
                .meta
                .items
                .iter()
                .filter(|item| normalized(&item.value) == wanted)
                .map(|item| item.id.clone())
                .collect()
        } else {
            // The target funnel is the one this deal goes to: a constant, or a mapped
            // CATEGORY_ID (source fields are read in code order, CATEGORY_ID first).
            let category = self
                .plan
                .constants
                .get("CATEGORY_ID")
                .or_else(|| written.get("CATEGORY_ID"));
            let entity = status_entity(target, field, category);
            self.target
                .statuses
                .iter()
                .filter(|s| s.entity_id == entity && normalized(&s.name) == wanted)
                .map(|s| s.status_id.clone())
                .collect()
        };
        match matches.as_slice() {
            [] => match self.plan.values.get(target).and_then(|m| m.default.clone()) {
                Some(_) => Ok(None),
                None => Err(MappingError::NoTargetItem {
                    field: target.to_string(),
                    label: shorten(label),
                }),
            },
            [one] => Ok(Some(one.clone())),
            _ => Err(MappingError::AmbiguousTargetItem {
                field: target.to_string(),
                label: shorten(label),
            }),
        }
    }
}

/// The `crm.status.list` entity a status field's values belong to. Stages depend on
/// the funnel: `DEAL_STAGE` for the general one (0), `DEAL_STAGE_<n>` for others.
fn status_entity(code: &str, field: &FieldInfo, category: Option<&Value>) -> String {
    if code == "STAGE_ID" {
        match category.and_then(scalar_text).as_deref() {
            None | Some("0") | Some("") => "DEAL_STAGE".to_string(),
            Some(category) => format!("DEAL_STAGE_{category}"),
        }
    } else {
        field
            .status_type
            .clone()
            .unwrap_or_else(|| code.to_string())
    }
}

/// Labels match trimmed and without regard to case.
fn normalized(label: &str) -> String {
    label.trim().to_lowercase()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value fit for an error message: at most 64 characters, control characters hidden.
fn shorten(value: &str) -> String {
    let mut shown: String = value
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 64 {
        shown.push_str("...");
    }
    shown
}

/// A multi-field (`PHONE`, `EMAIL`, `WEB`, `IM`) as `add` expects it: each row's
/// `VALUE_TYPE` and `VALUE` without the source row `ID` (a row with an ID would name a
/// row of the target record). Rows without a value are dropped; anything that is not
/// a list of rows is passed on as it is.
pub fn multifield_for_add(value: &Value) -> Value {
    let Value::Array(rows) = value else {
        return value.clone();
    };
    rows.iter()
        .filter_map(|row| {
            let row = row.as_object()?;
            let text = row.get("VALUE").and_then(scalar_text)?;
            if text.trim().is_empty() {
                return None;
            }
            let mut kept = Map::new();
            kept.insert("VALUE".into(), Value::from(text));
            if let Some(kind) = row.get("VALUE_TYPE").and_then(scalar_text) {
                kept.insert("VALUE_TYPE".into(), Value::from(kind));
            }
            Some(Value::Object(kept))
        })
        .collect::<Vec<_>>()
        .into()
}

/// A file for a file field of `crm.deal.add` / `update`: `{"fileData": [name,
/// base64]}`. A multiple field takes a list of these.
pub fn file_upload(name: &str, content: &[u8]) -> Value {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    serde_json::json!({ "fileData": [name, encoded] })
}

/// A file a source deal's file field holds, as `crm.deal.get` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub id: u64,
    /// Relative to the portal (`/bitrix/components/...`) or absolute.
    pub download_url: String,
}

/// The files of a file field's value (one object, a list of them, or empty).
pub fn source_files(value: &Value) -> Vec<SourceFile> {
    let one = |file: &Value| {
        let id = match file.get("id")? {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        let download_url = file.get("downloadUrl")?.as_str()?.to_string();
        Some(SourceFile { id, download_url })
    };
    match value {
        Value::Array(files) => files.iter().filter_map(one).collect(),
        file => one(file).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests;
