//! The universal `crm.item.*` API over the same tables the old `crm.<entity>.*`
//! methods use (so both see one portal) and over the smart processes: camelCase names
//! (user fields `ufCrm...` unless `useOriginalUfNames=Y`), typed JSON values, `fm`
//! multi-fields, `result.items` / `result.item` / `result.fields` envelopes, and the
//! `crm.item.productrow.*`, `crm.type.*` methods.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::list::{Dialect, Query, object_param};
use crate::methods::{Done, cost};
use crate::params::param;
use crate::portal::{Portal, Unreadable, WriteMode, smart_not_found};
use crate::products::{ITEM_ROW_FIELDS, RowQuery};
use crate::reference::stage_list_id;
use crate::schema::{Change, Entity, FieldDef, Kind, ValueType, multifield_value_types};
use crate::shared::Shared;
use crate::table::{Cell, Table, list_items};
use crate::values::{
    PortalClock, format_money, is_empty_input, parse_flag, parse_int, scalar_text,
};

/// `ASSIGNED_BY_ID` -> `assignedById`: parts lower-cased and joined with the first
/// letter of each later part upper-cased; an underscore between two numbers stays.
pub(crate) fn camel(upper: &str) -> String {
    let mut out = String::with_capacity(upper.len());
    let mut previous_numeric = false;
    for (i, part) in upper.split('_').enumerate() {
        let numeric = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if i > 0 && numeric && previous_numeric {
            out.push('_');
        }
        let lower = part.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
        previous_numeric = numeric;
    }
    out
}

/// A user field's camelCase name as api-reference/crm/universal/index.md converts
/// them: `UF_CRM_3_1747309727` -> `ufCrm3_1747309727`, `UF_CRM_3_DIGIT` ->
/// `ufCrm3Digit`; a name that could not be converted back unambiguously (letters and
/// digits in one part, a number after a word, a lone number) keeps its parts as they
/// are after `ufCrm_`: `UF_CRM_1747309879` -> `ufCrm_1747309879`, `UF_CRM_3_DIGIT10`
/// -> `ufCrm_3_DIGIT10`.
pub(crate) fn uf_camel(name: &str) -> String {
    let Some(rest) = name.strip_prefix("UF_CRM_") else {
        return camel(name);
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let word = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphabetic());
    let ambiguous = parts.iter().any(|p| !numeric(p) && !word(p))
        || parts.windows(2).any(|w| word(w[0]) && numeric(w[1]))
        || (parts.len() == 1 && numeric(parts[0]));
    if ambiguous {
        return format!("ufCrm_{rest}");
    }
    let mut out = String::from("ufCrm");
    let mut previous_numeric = false;
    for part in parts {
        if numeric(part) {
            if previous_numeric {
                out.push('_');
            }
            out.push_str(part);
            previous_numeric = true;
        } else {
            let lower = part.to_ascii_lowercase();
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
            previous_numeric = false;
        }
    }
    out
}

/// Where an item field's value comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    Column(usize),
    /// `contactIds` / `companyIds`: the stored list, or the single link when none.
    Links {
        list: usize,
        single: usize,
    },
    /// The multi-fields, as `fm`.
    Fm,
    /// `entityTypeId`, added to full answers.
    EntityTypeId,
}

/// One field of the item view of a table.
#[derive(Clone, Debug)]
pub(crate) struct ItemField {
    name: String,
    upper: String,
    source: Source,
    /// Listed by `crm.item.fields` (response-only fields are not).
    described: bool,
    read_only: bool,
    immutable: bool,
    multiple: bool,
    deprecated: bool,
    required: bool,
    api_type: &'static str,
    title: String,
    status_type: Option<String>,
    settings: Option<Value>,
    dynamic: bool,
}

impl ItemField {
    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.upper == name
    }

    /// The key it carries in answers.
    fn key(&self, original_uf_names: bool) -> &str {
        if self.dynamic && original_uf_names {
            &self.upper
        } else {
            &self.name
        }
    }
}

/// Standard fields of the classic entities that `crm.item.*` names differently from
/// the old API, with the item name and its `upperName`.
fn classic_rename(entity: Entity, name: &str) -> Option<(&'static str, &'static str)> {
    Some(match (entity, name) {
        (_, "DATE_CREATE") => ("createdTime", "CREATED_TIME"),
        (_, "DATE_MODIFY") => ("updatedTime", "UPDATED_TIME"),
        (_, "CREATED_BY_ID") => ("createdBy", "CREATED_BY"),
        (_, "MODIFY_BY_ID") => ("updatedBy", "UPDATED_BY"),
        (_, "MOVED_BY_ID") => ("movedBy", "MOVED_BY"),
        (Entity::Lead, "STATUS_ID") => ("stageId", "STAGE_ID"),
        (Entity::Lead, "STATUS_SEMANTIC_ID") => ("stageSemanticId", "STAGE_SEMANTIC_ID"),
        (Entity::Company, "COMPANY_TYPE") => ("typeId", "TYPE_ID"),
        _ => return None,
    })
}

/// Address parts the item view does not carry (only the legacy `address` line).
fn is_address_part(name: &str) -> bool {
    (name.starts_with("ADDRESS_") && name != "ADDRESS_LEGAL") || name.starts_with("REG_ADDRESS")
}

/// The item view of a kind's table, in the order `crm.item.fields` lists it.
pub(crate) fn item_fields(portal: &Portal, kind: Kind) -> Result<Vec<ItemField>, ApiError> {
    let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
    let smart = match kind {
        Kind::Smart(id) => portal.smart_process(id),
        _ => None,
    };
    let default_category = portal
        .categories
        .default_of(kind.entity_type_id())
        .map_or(0, |c| c.id);
    let mut fields = Vec::with_capacity(table.fields.len() + 2);
    let mut fm_added = false;
    for (column, field) in table.fields.iter().enumerate() {
        if let Some(uf) = &field.user_field {
            let mut settings = crate::methods::uf_settings(uf.user_type);
            if uf.user_type == crate::schema::UserFieldType::File {
                settings = json!({"MAX_SHOW_SIZE": 0, "MAX_ALLOWED_SIZE": 0, "EXTENSIONS": [], "TARGET_BLANK": "Y"});
            }
            fields.push(ItemField {
                name: uf_camel(&field.name),
                upper: field.name.clone(),
                source: Source::Column(column),
                described: true,
                read_only: false,
                immutable: false,
                multiple: field.multiple,
                deprecated: false,
                required: false,
                api_type: field.api_type,
                title: uf.label.clone(),
                status_type: None,
                settings: Some(settings),
                dynamic: true,
            });
            continue;
        }
        let entity = table.entity();
        if field.value_type == ValueType::Multifield {
            if !fm_added {
                fm_added = true;
                fields.push(ItemField {
                    name: "fm".into(),
                    upper: "FM".into(),
                    source: Source::Fm,
                    described: true,
                    read_only: false,
                    immutable: false,
                    multiple: true,
                    deprecated: false,
                    required: false,
                    api_type: "crm_multifield",
                    title: "Multifields".into(),
                    status_type: None,
                    settings: None,
                    dynamic: false,
                });
            }
            continue;
        }
        if is_address_part(&field.name) {
            continue;
        }
        let (name, upper) = match entity.and_then(|e| classic_rename(e, &field.name)) {
            Some((name, upper)) => (name.to_string(), upper.to_string()),
            None => (camel(&field.name), field.name.clone()),
        };
        let source = match field.name.as_str() {
            "CONTACT_IDS" => table.column("CONTACT_ID").map(|single| Source::Links {
                list: column,
                single,
            }),
            "COMPANY_IDS" => table.column("COMPANY_ID").map(|single| Source::Links {
                list: column,
                single,
            }),
            _ => None,
        }
        .unwrap_or(Source::Column(column));
        let mut read_only = field.read_only;
        let mut immutable = field.immutable;
        let mut described = true;
        match (entity, field.name.as_str()) {
            // Read-only in the item view (object-fields.md), writable in the old API.
            (Some(Entity::Deal), "IS_REPEATED_APPROACH" | "IS_RETURN_CUSTOMER") => read_only = true,
            // The pipeline changes through crm.item.update.
            (_, "CATEGORY_ID") => immutable = false,
            (Some(Entity::Company), "IS_MY_COMPANY") => immutable = true,
            (_, "LAST_ACTIVITY_BY" | "LAST_ACTIVITY_TIME") => read_only = false,
            // Legacy lines: in answers, not in crm.item.fields, not written.
            (_, "ADDRESS" | "ADDRESS_LEGAL") => {
                described = false;
                read_only = true;
            }
            _ => {}
        }
        if let Some(info) = smart.map(|s| &s.info)
            && !info.with_products
            && matches!(
                field.name.as_str(),
                "CURRENCY_ID" | "IS_MANUAL_OPPORTUNITY" | "OPPORTUNITY" | "TAX_VALUE"
            )
        {
            // A disabled setting: answered (null), not described, not written.
            described = false;
            read_only = true;
        }
        let api_type = match (field.api_type, field.name.as_str()) {
            ("char", _) => "boolean",
            (_, "COMMENTS" | "SOURCE_DESCRIPTION" | "STATUS_DESCRIPTION" | "BANKING_DETAILS") => {
                "text"
            }
            (other, _) => other,
        };
        let status_type = match (kind, field.name.as_str()) {
            (Kind::Smart(id), "STAGE_ID" | "PREVIOUS_STAGE_ID") => {
                Some(stage_list_id(id, default_category))
            }
            _ => field.status_type.map(str::to_string),
        };
        let settings = match field.name.as_str() {
            "COMPANY_ID" => Some(json!({"parentEntityTypeId": 4})),
            "MYCOMPANY_ID" => Some(
                json!({"isMyCompany": true, "parentEntityTypeId": 4, "isEmbeddedEditorEnabled": true}),
            ),
            _ => None,
        };
        fields.push(ItemField {
            name,
            upper,
            source,
            described,
            read_only,
            immutable,
            multiple: field.multiple,
            deprecated: field.deprecated,
            required: matches!(kind, Kind::Smart(_)) && field.required,
            api_type,
            title: field.title.clone(),
            status_type,
            settings,
            dynamic: false,
        });
    }
    fields.push(ItemField {
        name: "entityTypeId".into(),
        upper: "ENTITY_TYPE_ID".into(),
        source: Source::EntityTypeId,
        described: false,
        read_only: true,
        immutable: false,
        multiple: false,
        deprecated: false,
        required: false,
        api_type: "integer",
        title: "Entity type".into(),
        status_type: None,
        settings: None,
        dynamic: false,
    });
    Ok(fields)
}

/// A number as `crm.item.*` shows it: whole amounts without a fraction (`19000`,
/// `999.99`).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// One stored value as `crm.item.*` shows it.
fn typed(
    table: &Table,
    field: &FieldDef,
    row: usize,
    cell: Cell<'_>,
    clock: &PortalClock,
) -> Value {
    match (field.value_type, cell) {
        (_, Cell::Null) => Value::Null,
        (ValueType::Money, Cell::Int(cents)) => {
            number(format_money(cents).parse::<f64>().unwrap_or(0.0))
        }
        (ValueType::File, Cell::Int(file_id)) if field.user_field.is_some() => {
            item_file(table, field, row, file_id)
        }
        (_, Cell::Int(v)) => json!(v),
        (_, Cell::Float(v)) => number(v),
        (_, Cell::Flag(v)) => json!(if v { "Y" } else { "N" }),
        (_, Cell::Str(v)) => json!(v),
        (_, Cell::Day(v)) => json!(clock.format_day(v)),
        (_, Cell::Time(v)) => json!(clock.format_secs(v)),
        (_, Cell::List(items)) => Value::Array(
            items
                .iter()
                .map(|item| typed(table, field, row, item.cell(), clock))
                .collect(),
        ),
        (_, Cell::Json(v)) => v.clone(),
    }
}

/// A file user field's value in `crm.item.*`: `{id, url, urlMachine}`, both URLs served
/// by the simulator.
fn item_file(table: &Table, field: &FieldDef, row: usize, file_id: i64) -> Value {
    let owner = table.id_at(row);
    let entity_type_id = table.kind.entity_type_id();
    let field_name: String = form_urlencoded::byte_serialize(field.name.as_bytes()).collect();
    let query =
        format!("entityTypeId={entity_type_id}&id={owner}&fieldName={field_name}&fileId={file_id}");
    json!({
        "id": file_id,
        "url": format!("/bitrix/services/main/ajax.php?action=crm.controller.item.getFile&SITE_ID=s1&{query}"),
        "urlMachine": format!("/rest/crm.controller.item.getFile.json?auth=&{query}"),
    })
}

/// The value of one item field of a record.
fn value_of(table: &Table, field: &ItemField, row: usize, clock: &PortalClock) -> Value {
    match field.source {
        Source::Column(column) => {
            let def = &table.fields[column];
            match (table.cell(row, column), def.multiple) {
                (Cell::Null, true) => json!([]),
                (cell, _) => typed(table, def, row, cell, clock),
            }
        }
        Source::Links { list, single } => match table.cell(row, list) {
            Cell::List(items) if !items.is_empty() => Value::Array(
                items
                    .iter()
                    .filter_map(|item| match item.cell() {
                        Cell::Int(id) => Some(json!(id)),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => match table.cell(row, single) {
                Cell::Int(id) => json!([id]),
                _ => json!([]),
            },
        },
        Source::Fm => {
            let mut items = Vec::new();
            for def in table
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.value_type == ValueType::Multifield)
            {
                if let Cell::Json(Value::Array(values)) = table.cell(row, def.0) {
                    for value in values {
                        items.push(json!({
                            "id": value["ID"].as_str().and_then(|s| s.parse::<i64>().ok()),
                            "valueType": value["VALUE_TYPE"],
                            "value": value["VALUE"],
                            "typeId": value["TYPE_ID"],
                        }));
                    }
                }
            }
            Value::Array(items)
        }
        Source::EntityTypeId => json!(table.kind.entity_type_id()),
    }
}

/// Which fields an answer carries.
enum Selection {
    /// Every field; `fm` and `entityTypeId` only when `select` was omitted or `["*"]`.
    All { full: bool },
    /// These fields (indices into the view), `id` always among them.
    Named(Vec<usize>),
}

fn parse_selection(fields: &[ItemField], select: Option<&Value>) -> Selection {
    let names: Vec<String> = select
        .map(list_items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() || names == ["*"] {
        return Selection::All { full: true };
    }
    if names.iter().any(|n| n == "*") {
        return Selection::All { full: false };
    }
    let mut picked: Vec<usize> = vec![0];
    for name in &names {
        let found = fields.iter().position(|f| {
            f.answers_to(name) && matches!(f.source, Source::Column(_) | Source::Links { .. })
        });
        if let Some(index) = found
            && !picked.contains(&index)
        {
            picked.push(index);
        }
    }
    Selection::Named(picked)
}

/// A record as `crm.item.*` shows it.
fn render(
    table: &Table,
    fields: &[ItemField],
    row: usize,
    selection: &Selection,
    original_uf_names: bool,
    clock: &PortalClock,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |field: &ItemField| {
        out.insert(
            field.key(original_uf_names).to_string(),
            value_of(table, field, row, clock),
        );
    };
    match selection {
        Selection::All { full } => {
            for field in fields {
                if !full && matches!(field.source, Source::Fm | Source::EntityTypeId) {
                    continue;
                }
                put(field);
            }
        }
        Selection::Named(indices) => indices.iter().for_each(|&i| put(&fields[i])),
    }
    out
}

/// `crm.item.*` names: camelCase or UPPER_CASE, unknown ones refused as documented.
struct ItemDialect<'a> {
    fields: &'a [ItemField],
}

impl ItemDialect<'_> {
    fn lookup(&self, name: &str) -> Option<&ItemField> {
        self.fields.iter().find(|f| f.answers_to(name.trim()))
    }

    fn column(&self, name: &str, what: &str) -> Result<Option<usize>, ApiError> {
        let refused = || {
            ApiError::new(
                400,
                "INVALID_ARG_VALUE",
                format!(
                    "Invalid {what}: field '{}' is not allowed in {what}",
                    name.trim()
                ),
            )
        };
        match self.lookup(name).map(|f| f.source) {
            Some(Source::Column(column)) => Ok(Some(column)),
            // The list of links filters and sorts by its primary link.
            Some(Source::Links { single, .. }) => Ok(Some(single)),
            Some(Source::Fm | Source::EntityTypeId) => Err(ApiError::new(
                400,
                "100",
                format!("Field '{}' is not allowed in {what}", name.trim()),
            )),
            None => Err(refused()),
        }
    }
}

impl Dialect for ItemDialect<'_> {
    fn filter_column(&self, _table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        self.column(name, "filter")
    }

    fn order_column(&self, _table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        self.column(name, "order")
    }

    fn descending(&self, field: &str, direction: &Value) -> Result<bool, ApiError> {
        strict_direction(field, direction)
    }

    fn bad_value(&self, key: &str, _value: &Value, _value_type: ValueType) -> ApiError {
        invalid_filter_value(key)
    }

    fn groups(&self) -> bool {
        true
    }

    fn is_field(&self, _table: &Table, name: &str) -> bool {
        self.lookup(name).is_some()
    }
}

/// The `entityTypeId` parameter as a kind the portal has.
fn kind_param(portal: &Portal, params: &Map<String, Value>) -> Result<Kind, ApiError> {
    param(params, "entityTypeId")
        .and_then(parse_int)
        .and_then(|id| u32::try_from(id).ok())
        .and_then(|id| portal.kind(id))
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Smart process not found"))
}

fn original_uf_names(params: &Map<String, Value>) -> bool {
    param(params, "useOriginalUfNames")
        .and_then(parse_flag)
        .unwrap_or(false)
}

fn item_id(params: &Map<String, Value>) -> Result<u64, ApiError> {
    param(params, "id")
        .and_then(parse_int)
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Element not found"))
}

fn unreadable(why: Unreadable, missing: &str) -> ApiError {
    match why {
        Unreadable::Missing => ApiError::new(400, "NOT_FOUND", missing.to_string()),
        Unreadable::Hidden => ApiError::new(400, "ACCESS_DENIED", "Access denied"),
    }
}

/// `crm.item.fields {entityTypeId, useOriginalUfNames}`.
pub(crate) fn fields(portal: &Portal, params: &Map<String, Value>) -> Result<Done, ApiError> {
    let kind = kind_param(portal, params)?;
    let original = original_uf_names(params);
    let mut out = Map::new();
    for field in item_fields(portal, kind)?.iter().filter(|f| f.described) {
        let mut d = Map::new();
        d.insert("type".into(), json!(field.api_type));
        d.insert("isRequired".into(), json!(field.required));
        d.insert("isReadOnly".into(), json!(field.read_only));
        d.insert("isImmutable".into(), json!(field.immutable));
        d.insert("isMultiple".into(), json!(field.multiple));
        d.insert("isDynamic".into(), json!(field.dynamic));
        if field.deprecated {
            d.insert("isDeprecated".into(), json!(true));
        }
        if let Some(status_type) = &field.status_type {
            d.insert("statusType".into(), json!(status_type));
        }
        let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
        let uf = match field.source {
            Source::Column(column) if field.dynamic => table.fields[column].user_field.as_ref(),
            _ => None,
        };
        if let Some(uf) = uf
            && !uf.items.is_empty()
        {
            let items: Vec<Value> = uf
                .items
                .iter()
                .map(|(id, v)| json!({"ID": id.to_string(), "VALUE": v}))
                .collect();
            d.insert("items".into(), Value::Array(items));
        }
        d.insert("title".into(), json!(field.title));
        if field.dynamic {
            d.insert("listLabel".into(), json!(field.title));
            d.insert("formLabel".into(), json!(field.title));
            d.insert("filterLabel".into(), json!(field.title));
        }
        if let Some(settings) = &field.settings {
            d.insert("settings".into(), settings.clone());
        }
        d.insert("upperName".into(), json!(field.upper));
        out.insert(field.key(original).to_string(), Value::Object(d));
    }
    Ok(Done::plain(json!({ "fields": out })))
}

/// `crm.item.list {entityTypeId, select, filter, order, start, useOriginalUfNames}`.
pub(crate) fn list(
    portal: &Portal,
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Done, ApiError> {
    let kind = kind_param(portal, params)?;
    let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
    let fields = item_fields(portal, kind)?;
    let invalid = |what: &str| {
        ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            format!("Parameter '{what}' must be an object"),
        )
    };
    // A filter sent as a list of groups (`[{"logic": "OR", ...}]`) is an object with
    // index keys.
    let filter = match param(params, "filter") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect(),
        _ => object_param(params, "filter", || invalid("filter"))?,
    };
    let order = object_param(params, "order", || invalid("order"))?;
    let start = param(params, "start").and_then(parse_int).unwrap_or(0);
    let dialect = ItemDialect { fields: &fields };
    let query = Query::new(table, &filter, &order, start, clock, &dialect)?;
    let picked = query.pick(table);
    let selection = parse_selection(&fields, param(params, "select"));
    let original = original_uf_names(params);
    let rows: Vec<Value> = picked
        .rows
        .iter()
        .map(|&row| Value::Object(render(table, &fields, row, &selection, original, clock)))
        .collect();
    let fields_per_row = rows.first().and_then(Value::as_object).map_or(0, Map::len);
    let charged = cost::list(
        rows.len(),
        fields_per_row,
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

/// A full item (`crm.item.get`, and the answer of `add`/`update`).
fn full_item(
    portal: &Portal,
    kind: Kind,
    row: usize,
    original: bool,
    clock: &PortalClock,
) -> Result<Map<String, Value>, ApiError> {
    let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
    let fields = item_fields(portal, kind)?;
    Ok(render(
        table,
        &fields,
        row,
        &Selection::All { full: true },
        original,
        clock,
    ))
}

/// `crm.item.get {entityTypeId, id, useOriginalUfNames}`.
pub(crate) fn get(
    portal: &Portal,
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Done, ApiError> {
    let kind = kind_param(portal, params)?;
    let id = item_id(params)?;
    let row = portal
        .row_for(kind, id)
        .map_err(|why| unreadable(why, "Element not found"))?;
    let item = full_item(portal, kind, row, original_uf_names(params), clock)?;
    let charged = cost::BASE + cost::PER_ROW_FIELD * item.len() as f64;
    Ok(Done {
        cost: charged,
        ..Done::plain(json!({ "item": item }))
    })
}

/// The JSON type of a value, as the portal names it in error messages.
fn php_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "double",
        Value::Bool(_) => "boolean",
        Value::Null => "NULL",
        _ => "array",
    }
}

/// Item input as the portal's column names, and the client's name for each.
type Translated = (Map<String, Value>, HashMap<String, String>);

/// The item input as column names the portal writes, and which client name each came
/// from. Read-only, response-only and unknown fields are ignored; `fm` items are added
/// to the multi-fields; booleans are `Y` for `true`, `"true"`, `"y"`, `"Y"` and `N`
/// otherwise; `photo`/`logo` take a file ID only.
fn translate(
    table: &Table,
    fields: &[ItemField],
    input: &Map<String, Value>,
    updating: bool,
) -> Result<Translated, ApiError> {
    let mut out = Map::new();
    let mut names = HashMap::new();
    let mut fm: HashMap<String, Vec<Value>> = HashMap::new();
    for (key, value) in input {
        let Some(field) = fields.iter().find(|f| f.answers_to(key)) else {
            continue; // an incorrect field is ignored
        };
        if updating && field.name == "id" {
            return Err(ApiError::new(
                400,
                "INVALID_ARG_VALUE",
                "Setting value for Primary ID is not allowed, it is read-only field",
            ));
        }
        if field.read_only || (updating && field.immutable) {
            continue;
        }
        if field.multiple
            && !matches!(value, Value::Array(_) | Value::Object(_))
            && !is_empty_input(value)
        {
            return Err(ApiError::new(
                400,
                "100",
                format!(
                    "Expected iterable value for multiple field, but got {} instead",
                    php_type(value)
                ),
            ));
        }
        let column = match field.source {
            Source::Column(column) => column,
            Source::Links { list, .. } => list,
            Source::Fm => {
                for item in list_items(value) {
                    let Some(item) = item.as_object() else {
                        return Err(ApiError::new(
                            400,
                            "CRM_FIELD_ERROR_VALUE_NOT_VALID",
                            "Invalid value for field \"fm\": items must be objects",
                        ));
                    };
                    let type_id = item
                        .get("typeId")
                        .and_then(scalar_text)
                        .unwrap_or_default()
                        .to_ascii_uppercase();
                    if table
                        .column(&type_id)
                        .is_none_or(|c| table.fields[c].value_type != ValueType::Multifield)
                    {
                        return Err(ApiError::new(
                            400,
                            "CRM_FIELD_ERROR_VALUE_NOT_VALID",
                            format!("Invalid value for field \"fm\": unknown typeId '{type_id}'"),
                        ));
                    }
                    let value_type = item
                        .get("valueType")
                        .and_then(scalar_text)
                        .map(|t| t.to_ascii_uppercase())
                        .unwrap_or_else(|| multifield_value_types(&type_id)[0].to_string());
                    fm.entry(type_id).or_default().push(json!({
                        "VALUE": item.get("value").cloned().unwrap_or(Value::Null),
                        "VALUE_TYPE": value_type,
                    }));
                }
                continue;
            }
            Source::EntityTypeId => continue,
        };
        let def = &table.fields[column];
        let value = match def.value_type {
            ValueType::Char => {
                let yes = match value {
                    Value::Bool(b) => *b,
                    Value::String(s) => matches!(s.trim(), "Y" | "y" | "true"),
                    _ => false,
                };
                json!(if yes { "Y" } else { "N" })
            }
            ValueType::File if def.user_field.is_none() => match value {
                v if is_empty_input(v) => json!(""),
                v => match parse_int(v) {
                    Some(id) => json!({ "id": id }),
                    None => {
                        return Err(ApiError::new(
                            400,
                            "FILE_NOT_FOUND",
                            format!(
                                "File for field \"{key}\" is not found: pass the ID of an uploaded file"
                            ),
                        ));
                    }
                },
            },
            _ => value.clone(),
        };
        out.insert(def.name.clone(), value);
        names.insert(def.name.clone(), key.clone());
    }
    for (type_id, items) in fm {
        names.insert(type_id.clone(), "fm".to_string());
        out.insert(type_id, Value::Array(items));
    }
    Ok((out, names))
}

fn fields_input(params: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match param(params, "fields") {
        Some(Value::Object(map)) => Ok(map.clone()),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Array(items)) if items.is_empty() => Ok(Map::new()),
        Some(_) => Err(ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            "Parameter 'fields' must be an object",
        )),
    }
}

/// `crm.item.add {entityTypeId, fields, useOriginalUfNames}`: `result.item`.
pub(crate) fn add(
    shared: &Shared,
    params: &Map<String, Value>,
    user: i64,
) -> Result<Done, ApiError> {
    let clock = &shared.clock;
    let mut portal = shared.portal.write();
    let kind = kind_param(&portal, params)?;
    let fields = item_fields(&portal, kind)?;
    let input = fields_input(params)?;
    let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
    let (columns, names) = translate(table, &fields, &input, false)?;
    let id = portal.add(
        kind,
        &columns,
        clock.now_secs(),
        user,
        clock,
        WriteMode::Item { names: &names },
    )?;
    let row = portal
        .row_for(kind, id)
        .map_err(|why| unreadable(why, "Element not found"))?;
    let item = full_item(&portal, kind, row, original_uf_names(params), clock)?;
    Ok(Done {
        changes: vec![(kind, Change::Add, id)],
        ..Done::plain(json!({ "item": item }))
    })
}

/// `crm.item.update {entityTypeId, id, fields, useOriginalUfNames}`: `result.item`.
/// Nothing is saved (no new `updatedTime`, no event) when no value changes; a deal
/// that moves to another pipeline fires no `ONCRMDEALUPDATE` (the portal sends
/// `ONCRMDEALMOVETOCATEGORY`, which an outgoing webhook cannot subscribe to).
pub(crate) fn update(
    shared: &Shared,
    params: &Map<String, Value>,
    user: i64,
) -> Result<Done, ApiError> {
    let clock = &shared.clock;
    let mut portal = shared.portal.write();
    let kind = kind_param(&portal, params)?;
    let (id, row) = item_row(&portal, kind, params)?;
    let fields = item_fields(&portal, kind)?;
    let input = fields_input(params)?;
    let table = portal.table_of(kind).ok_or_else(|| smart_not_found(kind))?;
    let (columns, names) = translate(table, &fields, &input, true)?;
    let updated = portal.update_row(
        kind,
        row,
        &columns,
        clock.now_secs(),
        user,
        clock,
        WriteMode::Item { names: &names },
    )?;
    let item = full_item(&portal, kind, row, original_uf_names(params), clock)?;
    let silent = !updated.saved || (updated.category_moved && kind == Kind::Classic(Entity::Deal));
    Ok(Done {
        changes: if silent {
            Vec::new()
        } else {
            vec![(kind, Change::Update, id)]
        },
        ..Done::plain(json!({ "item": item }))
    })
}

/// `crm.item.delete {entityTypeId, id}`: `result` is `[]`.
pub(crate) fn delete(shared: &Shared, params: &Map<String, Value>) -> Result<Done, ApiError> {
    let mut portal = shared.portal.write();
    let kind = kind_param(&portal, params)?;
    let (id, row) = item_row(&portal, kind, params)?;
    portal.delete_row(kind, row, id);
    Ok(Done {
        changes: vec![(kind, Change::Delete, id)],
        ..Done::plain(json!([]))
    })
}

/// Every live record of a kind (hidden ones too), as `crm.item.get` shows it.
pub(crate) fn dump(
    portal: &Portal,
    kind: Kind,
    original: bool,
    clock: &PortalClock,
) -> Result<Vec<Value>, String> {
    let table = portal
        .table_of(kind)
        .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?;
    let fields = item_fields(portal, kind).map_err(|e| e.description)?;
    Ok((0..table.rows())
        .filter(|&row| table.is_live(row))
        .map(|row| {
            Value::Object(render(
                table,
                &fields,
                row,
                &Selection::All { full: true },
                original,
                clock,
            ))
        })
        .collect())
}

/// The owner a product-row request names (`D`, `L`, `T<hex>` of a smart process that
/// links products), if the webhook's user may read it; anything else is `ACCESS_DENIED`,
/// as the docs say for a missing owner or a type without product rows.
fn row_owner(portal: &Portal, owner_type: &str, owner_id: u64) -> Result<Kind, ApiError> {
    let denied = || ApiError::new(400, "ACCESS_DENIED", "Access denied");
    let kind = match owner_type.trim() {
        "D" => Kind::Classic(Entity::Deal),
        "L" => Kind::Classic(Entity::Lead),
        other => {
            let hex = other
                .strip_prefix('T')
                .or_else(|| other.strip_prefix('t'))
                .ok_or_else(denied)?;
            let id = u32::from_str_radix(hex, 16).map_err(|_| denied())?;
            match portal.smart_process(id) {
                Some(smart) if smart.info.with_products => Kind::Smart(id),
                _ => return Err(denied()),
            }
        }
    };
    portal.row_for(kind, owner_id).map_err(|_| denied())?;
    Ok(kind)
}

/// `crm.item.productrow.list {filter: {=ownerType, =ownerId, ...}, order, start}`:
/// `result.productRows`; no `total` with `start=-1`.
pub(crate) fn productrow_list(
    portal: &Portal,
    params: &Map<String, Value>,
) -> Result<Done, ApiError> {
    let query = RowQuery::parse(params)?;
    let kind = row_owner(portal, &query.owner_type, query.owner_id)?;
    let (rows, total, next) = query.page(portal.products.of(kind, query.owner_id));
    let rendered: Vec<Value> = rows.iter().map(|r| r.render_item()).collect();
    let count = rendered.len();
    Ok(Done {
        total,
        next,
        rows_returned: count,
        cost: cost::BASE + cost::PER_ROW_FIELD * (count * ITEM_ROW_FIELDS) as f64,
        ..Done::plain(json!({ "productRows": rendered }))
    })
}

/// `crm.item.productrow.set {ownerType, ownerId, productRows}`: replaces the owner's
/// rows as a whole (a row that fails leaves them unchanged); `result.productRows`.
pub(crate) fn productrow_set(
    shared: &Shared,
    params: &Map<String, Value>,
) -> Result<Done, ApiError> {
    let missing = || {
        ApiError::new(
            400,
            "REQUIRED_ARG_MISSING",
            "Required parameters ownerType, ownerId and productRows are missing",
        )
    };
    let owner_type = param(params, "ownerType")
        .and_then(scalar_text)
        .ok_or_else(missing)?;
    let owner_id = param(params, "ownerId")
        .and_then(parse_int)
        .and_then(|id| u64::try_from(id).ok())
        .ok_or_else(missing)?;
    let rows = match param(params, "productRows") {
        Some(v @ (Value::Array(_) | Value::Object(_))) => list_items(v),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        _ => return Err(missing()),
    };
    let mut portal = shared.portal.write();
    let kind = row_owner(&portal, &owner_type, owner_id)?;
    let saved = portal
        .products
        .set(kind, owner_id, &rows, true)
        .map_err(|e| ApiError::new(400, "INVALID_ARG_VALUE", e.description))?;
    let rendered: Vec<Value> = saved.iter().map(|r| r.render_item()).collect();
    Ok(Done::plain(json!({ "productRows": rendered })))
}

/// The smart processes as `crm.type.list` shows them.
fn types(portal: &Portal, clock: &PortalClock, full: bool) -> Vec<Value> {
    portal
        .smart
        .iter()
        .map(|s| {
            let enabled = portal.categories_enabled(s.info.entity_type_id);
            s.info.render(enabled, clock, full)
        })
        .collect()
}

/// `crm.type.list {filter, order, start}`: `result.types`.
pub(crate) fn type_list(
    portal: &Portal,
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Done, ApiError> {
    let (rows, total, next) = crate::smart::type_list(types(portal, clock, false), params)?;
    let count = rows.len();
    Ok(Done {
        total,
        next,
        rows_returned: count,
        ..Done::plain(json!({ "types": rows }))
    })
}

/// `crm.type.get {id}` / `crm.type.getByEntityTypeId {entityTypeId}`: `result.type`;
/// an unknown type is 400 with the documented numeric code `0`.
pub(crate) fn type_get(
    portal: &Portal,
    params: &Map<String, Value>,
    clock: &PortalClock,
    by_entity_type_id: bool,
) -> Result<Done, ApiError> {
    let key = if by_entity_type_id {
        "entityTypeId"
    } else {
        "id"
    };
    let wanted = param(params, key).and_then(parse_int);
    let found = portal.smart.iter().find(|s| {
        let id = if by_entity_type_id {
            s.info.entity_type_id
        } else {
            s.info.type_id
        };
        wanted == Some(i64::from(id))
    });
    let Some(smart) = found else {
        return Err(ApiError::new(400, "0", "SPA not found"));
    };
    let enabled = portal.categories_enabled(smart.info.entity_type_id);
    Ok(Done::plain(
        json!({ "type": smart.info.render(enabled, clock, true) }),
    ))
}

/// `ASC` or `DESC` (any case), else the `crm.item.*` family's error naming the field.
pub(crate) fn strict_direction(field: &str, direction: &Value) -> Result<bool, ApiError> {
    let text = scalar_text(direction).unwrap_or_default();
    match text.trim().to_ascii_uppercase().as_str() {
        "ASC" => Ok(false),
        "DESC" => Ok(true),
        _ => Err(ApiError::new(
            400,
            "INVALID_ARG_VALUE",
            format!(
                "Invalid order: allowed sort directions are ASC, DESC. But got '{text}' for field '{field}'"
            ),
        )),
    }
}

/// The `crm.item.*` family's error for a filter value its field cannot hold.
pub(crate) fn invalid_filter_value(key: &str) -> ApiError {
    let name = key.trim_start_matches(['!', '=', '<', '>', '@', '%']);
    ApiError::new(
        400,
        "INVALID_ARG_VALUE",
        format!("Invalid filter: field '{name}' has invalid value"),
    )
}

/// The `id` parameter of an item call and the row it names; `NOT_FOUND` as the portal
/// answers for a missing, invalid or unreadable one.
fn item_row(
    portal: &Portal,
    kind: Kind,
    params: &Map<String, Value>,
) -> Result<(u64, usize), ApiError> {
    let id = param(params, "id")
        .and_then(parse_int)
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Item not found"))?;
    let row = portal
        .row_for(kind, id)
        .map_err(|why| unreadable(why, "Item not found"))?;
    Ok((id, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_convert_as_the_docs_table_shows() {
        // Verbatim from api-reference/crm/universal/index.md, and the docs' examples.
        for (upper, camel_name) in [
            ("UF_CRM_3_DIGIT", "ufCrm3Digit"),
            ("UF_CRM_3_DIGIT10", "ufCrm_3_DIGIT10"),
            ("UF_CRM_3_DIGIT_10", "ufCrm_3_DIGIT_10"),
            ("UF_CRM_3_1747309727", "ufCrm3_1747309727"),
            ("UF_CRM_1747309879", "ufCrm_1747309879"),
            ("UF_CRM_10_5186744711", "ufCrm10_5186744711"),
            ("UF_CRM_44_1721812760630", "ufCrm44_1721812760630"),
            ("UF_CRM_1721244707107", "ufCrm_1721244707107"),
            ("UF_CRM_MANAGER_NOTE", "ufCrmManagerNote"),
            ("UF_CRM_64A29A1CD5CC2", "ufCrm_64A29A1CD5CC2"),
        ] {
            assert_eq!(uf_camel(upper), camel_name, "{upper}");
        }
    }

    #[test]
    fn standard_fields_convert_to_camel_case() {
        for (upper, camel_name) in [
            ("ID", "id"),
            ("ASSIGNED_BY_ID", "assignedById"),
            ("IS_MANUAL_OPPORTUNITY", "isManualOpportunity"),
            ("PARENT_ID_1220", "parentId1220"),
            ("MYCOMPANY_ID", "mycompanyId"),
            ("UTM_SOURCE", "utmSource"),
            ("BEGINDATE", "begindate"),
        ] {
            assert_eq!(camel(upper), camel_name, "{upper}");
        }
    }

    #[test]
    fn amounts_are_numbers_without_a_needless_fraction() {
        assert_eq!(number(19000.0), json!(19000));
        assert_eq!(number(999.99), json!(999.99));
        assert_eq!(php_type(&json!(5)), "integer");
        assert_eq!(php_type(&json!("5")), "string");
    }
}
