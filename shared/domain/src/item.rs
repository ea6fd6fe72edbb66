//! The universal `crm.item.*` API as the mirror reads it: its field names translated to
//! the codes the mirror keeps, so a portal entity has the same columns whichever API
//! reads it, and smart processes get columns named like the classic entities'.
//!
//! `crm.item.*` names fields in camelCase (`assignedById`, `stageId`, user fields
//! `ufCrm5_1721812760630`, or `UF_CRM_5_1721812760630` with `useOriginalUfNames=Y`) and
//! describes each in `crm.item.fields` with its `upperName` (`ASSIGNED_BY_ID`). The mirror
//! keeps the classic codes: the `upperName` (or the camelCase name in upper snake case),
//! except for the fields the classic API names otherwise ([`CLASSIC_NAMES`]: `id` is
//! `ID`, `updatedTime` is `DATE_MODIFY`...). The multi-fields travel as one `fm` list in
//! `crm.item.*` and as `PHONE`, `EMAIL`, `WEB`, `IM` in the classic API; the mirror keeps
//! the classic lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Which API reads a portal's classic entities (deals, contacts, leads, companies).
/// Smart processes have only `crm.item.*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiChoice {
    /// `crm.<entity>.*`: what every existing mirror was read with, and on-premise
    /// versions without `crm.item`. Deprecated in the docs, still served.
    #[default]
    Classic,
    /// `crm.item.*` with the entity's `entityTypeId`.
    Items,
}

/// Which smart processes a portal mirrors (`portals.NAME.smart_processes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SmartProcesses {
    /// None beyond those named in `entities` (`sp_<id>`).
    #[default]
    None,
    /// Every smart process `crm.type.list` reports.
    All,
    /// These, by `entityTypeId` or by title (exact, ignoring case and surrounding space).
    Listed(Vec<SmartRef>),
}

/// A smart process named in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmartRef {
    TypeId(u32),
    Title(String),
}

/// A smart process as `crm.type.list` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartType {
    pub entity_type_id: u32,
    pub title: String,
    /// `isLinkWithProductsEnabled`: its items have product rows.
    pub with_products: bool,
}

impl SmartProcesses {
    /// Whether the portal mirrors `smart`.
    pub fn selects(&self, smart: &SmartType) -> bool {
        match self {
            SmartProcesses::None => false,
            SmartProcesses::All => true,
            SmartProcesses::Listed(refs) => refs.iter().any(|r| match r {
                SmartRef::TypeId(id) => *id == smart.entity_type_id,
                SmartRef::Title(title) => title.trim().eq_ignore_ascii_case(smart.title.trim()),
            }),
        }
    }

    /// Whether the choice needs `crm.type.list` to know the smart processes (titles, or
    /// all); a list of type IDs does not.
    pub fn needs_types(&self) -> bool {
        match self {
            SmartProcesses::None => false,
            SmartProcesses::All => true,
            SmartProcesses::Listed(refs) => refs.iter().any(|r| matches!(r, SmartRef::Title(_))),
        }
    }
}

/// The smart processes of a `crm.type.list` answer (`result.types`); types that are
/// not smart processes, or that lack an `entityTypeId`, are left out.
pub fn smart_types(result: &Value) -> Vec<SmartType> {
    result
        .get("types")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let id = t.get("entityTypeId")?;
            let id = id.as_u64().or_else(|| id.as_str()?.trim().parse().ok())?;
            let id = u32::try_from(id).ok()?;
            crate::entity::Entity::smart(id)?;
            let with_products = match t.get("isLinkWithProductsEnabled") {
                Some(Value::Bool(on)) => *on,
                Some(Value::String(flag)) => flag.eq_ignore_ascii_case("Y"),
                _ => false,
            };
            Some(SmartType {
                entity_type_id: id,
                title: t
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                with_products,
            })
        })
        .collect()
}

/// `crm.item.*` names whose classic code is not their `upperName`.
pub const CLASSIC_NAMES: [(&str, &str); 7] = [
    ("id", "ID"),
    ("updatedTime", "DATE_MODIFY"),
    ("createdTime", "DATE_CREATE"),
    ("createdBy", "CREATED_BY_ID"),
    ("updatedBy", "MODIFY_BY_ID"),
    ("movedBy", "MOVED_BY_ID"),
    ("contactIds", "CONTACT_IDS"),
];

/// The multi-field list of `crm.item.*`.
pub const MULTIFIELD_LIST: &str = "fm";

/// The classic multi-fields `fm` holds, by its items' `typeId`.
pub const MULTIFIELDS: [&str; 4] = ["PHONE", "EMAIL", "WEB", "IM"];

/// `assignedById` -> `ASSIGNED_BY_ID`, `parentId1220` -> `PARENT_ID_1220`,
/// `ufCrm5_1721812760630` -> `UF_CRM_5_1721812760630`: an underscore before every
/// upper-case letter and between letters and digits, all upper case. A name already
/// in upper case stays as it is.
pub fn upper_snake(name: &str) -> String {
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 8);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if let Some(p) = previous {
            let boundary = (c.is_ascii_uppercase()
                && (p.is_ascii_lowercase() || p.is_ascii_digit()))
                || (c.is_ascii_digit() && p.is_ascii_alphabetic());
            if boundary && p != '_' {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
        previous = Some(c);
    }
    out
}

/// The mirror's code of a `crm.item.*` field named `name` whose `upperName` is
/// `upper_name` (when `crm.item.fields` gives one).
pub fn code_of(name: &str, upper_name: Option<&str>) -> String {
    if let Some((_, code)) = CLASSIC_NAMES.iter().find(|(item, _)| *item == name) {
        return code.to_string();
    }
    match upper_name.map(str::trim).filter(|u| !u.is_empty()) {
        Some(upper) => upper.to_string(),
        None => upper_snake(name),
    }
}

/// Both directions between `crm.item.*` names and the mirror's codes for one entity,
/// learned from its `crm.item.fields`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyMap {
    to_code: BTreeMap<String, String>,
    to_item: BTreeMap<String, String>,
}

impl KeyMap {
    /// From the `fields` object of a `crm.item.fields` answer (keyed by item name).
    /// Returns the map and the fields keyed by the mirror's codes, as the classic
    /// `crm.<entity>.fields` would describe them: `fm` becomes the four multi-field
    /// descriptors when `multifields` says the entity has them.
    pub fn from_fields(
        fields: &Map<String, Value>,
        multifields: &[&str],
    ) -> (KeyMap, Map<String, Value>) {
        let mut map = KeyMap::default();
        let mut by_code = Map::new();
        for (name, descriptor) in fields {
            if name == MULTIFIELD_LIST {
                continue;
            }
            let code = code_of(name, descriptor.get("upperName").and_then(Value::as_str));
            map.insert(name, &code);
            by_code.insert(code, descriptor.clone());
        }
        for field in multifields {
            let descriptor = json!({
                "type": "crm_multifield", "isMultiple": true, "isReadOnly": false,
                "isDynamic": false, "title": field,
            });
            by_code.entry(field.to_string()).or_insert(descriptor);
        }
        for (item, code) in CLASSIC_NAMES {
            if !map.to_code.contains_key(item) {
                map.insert(item, code);
            }
        }
        (map, by_code)
    }

    fn insert(&mut self, item: &str, code: &str) {
        self.to_code.insert(item.to_string(), code.to_string());
        self.to_item.insert(code.to_string(), item.to_string());
    }

    /// The `crm.item.*` name of a mirror code, for filters, order and writes; a code
    /// the map does not know goes as it is (`crm.item.*` takes UPPER_CASE names too).
    pub fn item_name<'a>(&'a self, code: &'a str) -> &'a str {
        self.to_item.get(code).map_or(code, String::as_str)
    }

    /// A filter key with its operator prefix (`>=DATE_MODIFY`, `@ID`) in `crm.item.*`'s
    /// names (`>=updatedTime`, `@id`).
    pub fn filter_key(&self, key: &str) -> String {
        let split = key
            .find(|c: char| c.is_ascii_alphanumeric() || c == '_')
            .unwrap_or(key.len());
        let (operator, code) = key.split_at(split);
        format!("{operator}{}", self.item_name(code))
    }

    /// A `crm.item.*` row as the mirror keeps it: keys as codes, `fm` split into the
    /// classic multi-field lists (`{"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}` items).
    pub fn classic_row(&self, item: Map<String, Value>) -> Map<String, Value> {
        let mut row = Map::with_capacity(item.len());
        for (name, value) in item {
            if name == MULTIFIELD_LIST {
                for (field, items) in split_multifields(&value) {
                    row.insert(field, items);
                }
                continue;
            }
            let code = self
                .to_code
                .get(&name)
                .cloned()
                .unwrap_or_else(|| code_of(&name, None));
            row.insert(code, value);
        }
        row
    }
}

/// `fm: [{"id": 5, "typeId": "PHONE", "valueType": "WORK", "value": "+1"}]` as the
/// classic lists: `{"PHONE": [{"ID": "5", "VALUE_TYPE": "WORK", "VALUE": "+1", "TYPE_ID":
/// "PHONE"}]}`. Items without a known type are left out.
fn split_multifields(fm: &Value) -> Vec<(String, Value)> {
    let mut lists: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for item in fm.as_array().into_iter().flatten() {
        let Some(item) = item.as_object() else {
            continue;
        };
        let get = |key: &str| {
            item.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        };
        let type_id = get("typeId");
        let Some(field) = MULTIFIELDS
            .iter()
            .find(|f| type_id.as_str().is_some_and(|t| t.eq_ignore_ascii_case(f)))
        else {
            continue;
        };
        let id = match get("id") {
            Value::Number(n) => Value::String(n.to_string()),
            other => other,
        };
        lists.entry(field).or_default().push(json!({
            "ID": id, "VALUE_TYPE": get("valueType"), "VALUE": get("value"), "TYPE_ID": field,
        }));
    }
    lists
        .into_iter()
        .map(|(field, items)| (field.to_string(), Value::Array(items)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_processes_are_chosen_by_type_id_or_title() {
        let types = smart_types(&json!({"types": [
            {"id": 1, "entityTypeId": 1038, "title": "Orders", "isLinkWithProductsEnabled": "Y"},
            {"id": 2, "entityTypeId": "1042", "title": " Tickets "},
            {"id": 3, "entityTypeId": 31, "title": "Invoices"},
            {"id": 4, "title": "broken"},
        ]}));
        assert_eq!(types.len(), 2, "{types:?}");
        assert!(types[0].with_products && !types[1].with_products);
        let listed = SmartProcesses::Listed(vec![SmartRef::Title("tickets".into())]);
        assert!(!listed.selects(&types[0]) && listed.selects(&types[1]));
        assert!(listed.needs_types());
        let by_id = SmartProcesses::Listed(vec![SmartRef::TypeId(1038)]);
        assert!(by_id.selects(&types[0]) && !by_id.needs_types());
        assert!(SmartProcesses::All.selects(&types[1]));
        assert!(!SmartProcesses::None.selects(&types[1]));
    }

    #[test]
    fn camel_case_names_become_upper_snake_case() {
        for (camel, upper) in [
            ("assignedById", "ASSIGNED_BY_ID"),
            ("stageId", "STAGE_ID"),
            ("parentId1220", "PARENT_ID_1220"),
            ("ufCrm5_1721812760630", "UF_CRM_5_1721812760630"),
            ("ufCrm10Digit10", "UF_CRM_10_DIGIT_10"),
            ("begindate", "BEGINDATE"),
            ("utmSource", "UTM_SOURCE"),
            ("UF_CRM_5_1721812760630", "UF_CRM_5_1721812760630"),
            ("TITLE", "TITLE"),
        ] {
            assert_eq!(upper_snake(camel), upper, "{camel}");
        }
        assert_eq!(code_of("updatedTime", Some("UPDATED_TIME")), "DATE_MODIFY");
        assert_eq!(code_of("stageId", Some("STAGE_ID")), "STAGE_ID");
        // The portal's upperName wins over the rule where they differ.
        assert_eq!(
            code_of("ufCrm10Digit10", Some("UF_CRM_10_DIGIT10")),
            "UF_CRM_10_DIGIT10"
        );
    }

    fn fields() -> Map<String, Value> {
        json!({
            "id": {"type": "integer", "isReadOnly": true, "upperName": "ID", "title": "ID"},
            "title": {"type": "string", "upperName": "TITLE", "title": "Name"},
            "updatedTime": {"type": "datetime", "isReadOnly": true, "upperName": "UPDATED_TIME", "title": "Modified"},
            "assignedById": {"type": "user", "upperName": "ASSIGNED_BY_ID", "title": "Responsible"},
            "UF_CRM_5_1721812760630": {"type": "string", "isDynamic": true, "upperName": "UF_CRM_5_1721812760630", "title": "Note"},
            "fm": {"type": "crm_multifield", "isMultiple": true, "title": "Communications"},
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn fields_and_rows_read_as_the_classic_api_names_them() {
        let (map, by_code) = KeyMap::from_fields(&fields(), &MULTIFIELDS);
        let codes: Vec<&str> = by_code.keys().map(String::as_str).collect();
        assert!(
            codes.contains(&"DATE_MODIFY") && codes.contains(&"ASSIGNED_BY_ID"),
            "{codes:?}"
        );
        assert!(
            codes.contains(&"PHONE") && !codes.contains(&"fm"),
            "{codes:?}"
        );
        assert_eq!(by_code["PHONE"]["type"], "crm_multifield");
        let row = map.classic_row(
            json!({
                "id": 7, "title": "Order", "updatedTime": "2024-08-30T14:29:00+03:00",
                "assignedById": 1, "UF_CRM_5_1721812760630": "x", "observers": [1, 2],
                "fm": [
                    {"id": 11, "typeId": "PHONE", "valueType": "WORK", "value": "+100"},
                    {"id": 12, "typeId": "EMAIL", "valueType": "HOME", "value": "a@b.c"},
                    {"id": 13, "typeId": "FAX?", "valueType": "WORK", "value": "?"},
                ],
            })
            .as_object()
            .cloned()
            .unwrap(),
        );
        assert_eq!(
            Value::Object(row),
            json!({
                "ID": 7, "TITLE": "Order", "DATE_MODIFY": "2024-08-30T14:29:00+03:00",
                "ASSIGNED_BY_ID": 1, "UF_CRM_5_1721812760630": "x", "OBSERVERS": [1, 2],
                "EMAIL": [{"ID": "12", "VALUE_TYPE": "HOME", "VALUE": "a@b.c", "TYPE_ID": "EMAIL"}],
                "PHONE": [{"ID": "11", "VALUE_TYPE": "WORK", "VALUE": "+100", "TYPE_ID": "PHONE"}],
            })
        );
    }

    #[test]
    fn filters_and_writes_speak_the_item_names() {
        let (map, _) = KeyMap::from_fields(&fields(), &[]);
        assert_eq!(map.filter_key(">=DATE_MODIFY"), ">=updatedTime");
        assert_eq!(map.filter_key("@ID"), "@id");
        assert_eq!(map.filter_key(">ID"), ">id");
        assert_eq!(map.filter_key("!=ASSIGNED_BY_ID"), "!=assignedById");
        assert_eq!(map.item_name("TITLE"), "title");
        assert_eq!(map.item_name("UNKNOWN_FIELD"), "UNKNOWN_FIELD");
        // Without any metadata the classic names still translate.
        assert_eq!(
            KeyMap::from_fields(&Map::new(), &[]).0.filter_key(">ID"),
            ">id"
        );
    }
}
