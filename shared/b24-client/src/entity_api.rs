//! Which API reads and writes an entity, and how its requests and answers look: the
//! classic `crm.<entity>.*` methods, or the universal `crm.item.*` with the entity's
//! `entityTypeId` (the only way to smart processes; the docs mark the classic list
//! methods deprecated). Callers speak the mirror's codes (`ID`, `DATE_MODIFY`,
//! `UF_CRM_*`) either way: [`Dialect::Items`] translates names with the entity's
//! [`KeyMap`], learned from `crm.item.fields`, and unwraps `result.items`.

use std::sync::Arc;

use b24_domain::entity::Entity;
use b24_domain::item::KeyMap;
use serde_json::{Map, Value, json};

use crate::batch::Command;
use crate::client::as_u64;
use crate::error::B24Error;
use crate::list::{ListQuery, Row};

/// How a listing's requests and answers look.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Dialect {
    /// `crm.<entity>.list` and siblings: rows in `result`, the mirror's names.
    #[default]
    Classic,
    /// `crm.item.list`: `entityTypeId`, camelCase names, rows in `result.items`.
    Items {
        entity_type_id: u32,
        keys: Arc<KeyMap>,
    },
}

impl Dialect {
    /// The parameters of one list command: `filter` and `select` in the mirror's codes,
    /// ordered by ID, no count (`start=-1`).
    pub(crate) fn list_params(&self, filter: &Map<String, Value>, select: &[String]) -> Value {
        match self {
            Dialect::Classic => {
                let mut params = json!({"order": {"ID": "ASC"}, "filter": filter, "start": -1});
                if !select.is_empty() {
                    params["select"] = json!(select);
                }
                params
            }
            Dialect::Items {
                entity_type_id,
                keys,
            } => {
                let filter: Map<String, Value> = filter
                    .iter()
                    .map(|(key, value)| (keys.filter_key(key), value.clone()))
                    .collect();
                json!({
                    "entityTypeId": entity_type_id,
                    "useOriginalUfNames": "Y",
                    "order": {"id": "ASC"},
                    "filter": filter,
                    "select": item_select(keys, select),
                    "start": -1,
                })
            }
        }
    }

    /// The reference to the ID of the last row of list command `command`, for the next
    /// command's `>ID` bound.
    pub(crate) fn last_id_reference(&self, command: &str, last: usize) -> String {
        match self {
            Dialect::Classic => format!("$result[{command}][{last}][ID]"),
            Dialect::Items { .. } => format!("$result[{command}][items][{last}][id]"),
        }
    }

    /// The rows of a list command's `result`, keyed by the mirror's codes.
    pub(crate) fn rows(&self, method: &str, result: Value) -> Result<Vec<Row>, B24Error> {
        let unexpected = |detail: &str| unexpected(method, detail);
        let items = match (self, result) {
            (Dialect::Classic, Value::Array(items)) => items,
            (Dialect::Items { .. }, Value::Object(mut result)) => match result.remove("items") {
                Some(Value::Array(items)) => items,
                _ => return Err(unexpected("crm.item.list answered no result.items list")),
            },
            // PHP serializes an empty list page as [] but some proxies send {}.
            (Dialect::Classic, Value::Object(map)) if map.is_empty() => Vec::new(),
            _ => return Err(unexpected("a list page is not a list of rows")),
        };
        items
            .into_iter()
            .map(|item| match (self, item) {
                (Dialect::Classic, Value::Object(row)) => Ok(row),
                (Dialect::Items { keys, .. }, Value::Object(item)) => Ok(keys.classic_row(item)),
                _ => Err(unexpected("a list row is not an object")),
            })
            .collect()
    }
}

/// How a listing's requests and answers look: an entity's, or another list walked by
/// the same ID window.
#[derive(Clone, Debug, PartialEq)]
pub enum ListShape {
    Entity(Dialect),
    /// `crm.stagehistory.list`: `entityTypeId`, rows in `result.items` with the
    /// portal's UPPER_CASE names as they are.
    StageHistory {
        entity_type_id: u32,
    },
}

impl Default for ListShape {
    fn default() -> Self {
        ListShape::Entity(Dialect::Classic)
    }
}

impl ListShape {
    pub(crate) fn list_params(&self, filter: &Map<String, Value>, select: &[String]) -> Value {
        match self {
            ListShape::Entity(dialect) => dialect.list_params(filter, select),
            ListShape::StageHistory { entity_type_id } => {
                let mut params = json!({
                    "entityTypeId": entity_type_id,
                    "order": {"ID": "ASC"},
                    "filter": filter,
                    "start": -1,
                });
                if !select.is_empty() {
                    params["select"] = json!(select);
                }
                params
            }
        }
    }

    pub(crate) fn last_id_reference(&self, command: &str, last: usize) -> String {
        match self {
            ListShape::Entity(dialect) => dialect.last_id_reference(command, last),
            ListShape::StageHistory { .. } => format!("$result[{command}][items][{last}][ID]"),
        }
    }

    pub(crate) fn rows(&self, method: &str, result: Value) -> Result<Vec<Row>, B24Error> {
        match self {
            ListShape::Entity(dialect) => dialect.rows(method, result),
            ListShape::StageHistory { .. } => match result {
                Value::Object(mut result) => match result.remove("items") {
                    Some(Value::Array(items)) => items
                        .into_iter()
                        .map(|item| match item {
                            Value::Object(row) => Ok(row),
                            _ => Err(unexpected(method, "a list row is not an object")),
                        })
                        .collect(),
                    _ => Err(unexpected(method, "the list answered no result.items list")),
                },
                _ => Err(unexpected(
                    method,
                    "a list page is not an object with items",
                )),
            },
        }
    }
}

fn unexpected(method: &str, detail: &str) -> B24Error {
    B24Error::UnexpectedResponse {
        method: method.to_string(),
        detail: detail.to_string(),
    }
}

/// `crm.item.list`'s `select`: `*` covers every field, user fields and `fm` included;
/// the classic masks (`UF_*`) and the multi-fields named beside `*` are not needed.
fn item_select(keys: &KeyMap, select: &[String]) -> Vec<String> {
    if select.is_empty() || select.iter().any(|s| s == "*") {
        return vec!["*".into()];
    }
    select
        .iter()
        .filter(|s| s.as_str() != "UF_*")
        .map(|code| keys.item_name(code).to_string())
        .collect()
}

/// One entity in the API that serves it, with what its requests need.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityApi {
    pub entity: Entity,
    pub dialect: Dialect,
}

impl EntityApi {
    /// The classic methods (`crm.deal.*`...); a smart process has none and gets
    /// `crm.item.*` anyway.
    pub fn classic(entity: Entity) -> EntityApi {
        if !entity.is_classic() {
            return EntityApi::items(entity);
        }
        EntityApi {
            entity,
            dialect: Dialect::Classic,
        }
    }

    /// `crm.item.*`; the field names translate once [`EntityApi::with_fields`] has read
    /// the entity's `crm.item.fields`.
    pub fn items(entity: Entity) -> EntityApi {
        EntityApi {
            entity,
            dialect: Dialect::Items {
                entity_type_id: entity.type_id(),
                keys: Arc::new(KeyMap::from_fields(&Map::new(), &[]).0),
            },
        }
    }

    pub fn is_items(&self) -> bool {
        matches!(self.dialect, Dialect::Items { .. })
    }

    fn method(&self, op: &str) -> String {
        match self.dialect {
            Dialect::Classic => self.entity.method(op),
            Dialect::Items { .. } => format!("crm.item.{op}"),
        }
    }

    /// The list method, for [`ListQuery`] and `fetch_by_ids`.
    pub fn list_method(&self) -> String {
        self.method("list")
    }

    /// The request for the entity's field metadata.
    pub fn fields_command(&self, name: &str) -> Command {
        match &self.dialect {
            Dialect::Classic => Command::new(name, self.method("fields"), json!({})),
            Dialect::Items { entity_type_id, .. } => Command::new(
                name,
                self.method("fields"),
                json!({"entityTypeId": entity_type_id, "useOriginalUfNames": "Y"}),
            ),
        }
    }

    /// Takes the answer of [`EntityApi::fields_command`]: returns the field metadata
    /// keyed by the mirror's codes, as `crm.<entity>.fields` describes it, and learns
    /// how `crm.item.*` names them.
    pub fn with_fields(&mut self, result: &Value) -> Result<Value, B24Error> {
        match &mut self.dialect {
            Dialect::Classic => Ok(result.clone()),
            Dialect::Items { keys, .. } => {
                let fields = result
                    .get("fields")
                    .and_then(Value::as_object)
                    .ok_or_else(|| B24Error::UnexpectedResponse {
                        method: "crm.item.fields".into(),
                        detail: "the answer has no result.fields object".into(),
                    })?;
                let (map, by_code) = KeyMap::from_fields(fields, self.entity.multifields());
                *keys = Arc::new(map);
                Ok(Value::Object(by_code))
            }
        }
    }

    /// A listing of the entity (`select` and `filter` in the mirror's codes).
    pub fn list_query(
        &self,
        select: Vec<String>,
        filter: Map<String, Value>,
        after_id: Option<u64>,
    ) -> ListQuery {
        ListQuery {
            method: self.list_method(),
            shape: ListShape::Entity(self.dialect.clone()),
            select,
            filter,
            after_id,
        }
    }

    /// One list command ordered by `order` (codes and `ASC`/`DESC`), e.g. the newest row.
    pub fn list_command(
        &self,
        name: &str,
        order: &[(&str, &str)],
        select: &[&str],
        filter: Map<String, Value>,
    ) -> Command {
        let order = |translate: &dyn Fn(&str) -> String| -> Map<String, Value> {
            order
                .iter()
                .map(|(code, direction)| (translate(code), json!(direction)))
                .collect()
        };
        let params = match &self.dialect {
            Dialect::Classic => json!({
                "order": order(&|c| c.to_string()), "select": select, "filter": filter, "start": -1,
            }),
            Dialect::Items {
                entity_type_id,
                keys,
            } => {
                let filter: Map<String, Value> = filter
                    .iter()
                    .map(|(k, v)| (keys.filter_key(k), v.clone()))
                    .collect();
                let select: Vec<String> = select
                    .iter()
                    .map(|c| keys.item_name(c).to_string())
                    .collect();
                json!({
                    "entityTypeId": entity_type_id, "useOriginalUfNames": "Y",
                    "order": order(&|c| keys.item_name(c).to_string()),
                    "select": select, "filter": filter, "start": -1,
                })
            }
        };
        Command::new(name, self.list_method(), params)
    }

    /// The rows of a list command's `result`, keyed by the mirror's codes.
    pub fn rows(&self, result: Value) -> Result<Vec<Row>, B24Error> {
        self.dialect.rows(&self.list_method(), result)
    }

    /// `fields` (codes to values in Bitrix24's formats) in the API's names.
    fn item_fields(&self, fields: &Map<String, Value>) -> Value {
        match &self.dialect {
            Dialect::Classic => Value::Object(fields.clone()),
            Dialect::Items { keys, .. } => Value::Object(
                fields
                    .iter()
                    .map(|(code, value)| (keys.item_name(code).to_string(), value.clone()))
                    .collect(),
            ),
        }
    }

    fn with_type(&self, mut params: Value) -> Value {
        if let Dialect::Items { entity_type_id, .. } = &self.dialect {
            params["entityTypeId"] = json!(entity_type_id);
        }
        params
    }

    /// Updating record `id` with `fields` (the mirror's codes).
    pub fn update_command(&self, name: &str, id: u64, fields: &Map<String, Value>) -> Command {
        let params = self.with_type(json!({"id": id, "fields": self.item_fields(fields)}));
        Command::new(name, self.method("update"), params)
    }

    /// Adding a record with `fields`, without posting to the activity stream.
    pub fn add_command(&self, name: &str, fields: &Map<String, Value>) -> Command {
        let params = match &self.dialect {
            Dialect::Classic => json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}}),
            Dialect::Items { .. } => self.with_type(json!({"fields": self.item_fields(fields)})),
        };
        Command::new(name, self.method("add"), params)
    }

    pub fn delete_command(&self, name: &str, id: u64) -> Command {
        Command::new(
            name,
            self.method("delete"),
            self.with_type(json!({"id": id})),
        )
    }

    /// The new record's ID in an add's `result`: a number for the classic add,
    /// `result.item.id` for `crm.item.add`.
    pub fn created_id(&self, result: &Value) -> Option<u64> {
        match &self.dialect {
            Dialect::Classic => as_u64(result),
            Dialect::Items { .. } => result
                .get("item")
                .and_then(|item| item.get("id"))
                .and_then(as_u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smart() -> EntityApi {
        let mut api = EntityApi::items(Entity::Smart(1038));
        let fields = json!({"fields": {
            "id": {"type": "integer", "upperName": "ID"},
            "title": {"type": "string", "upperName": "TITLE"},
            "updatedTime": {"type": "datetime", "upperName": "UPDATED_TIME"},
            "stageId": {"type": "crm_status", "upperName": "STAGE_ID"},
        }});
        let by_code = api.with_fields(&fields).unwrap();
        assert!(by_code.get("DATE_MODIFY").is_some() && by_code.get("STAGE_ID").is_some());
        api
    }

    #[test]
    fn stage_history_is_listed_by_id_with_its_rows_as_they_are() {
        let shape = ListShape::StageHistory { entity_type_id: 2 };
        let filter = json!({">ID": 35}).as_object().cloned().unwrap();
        assert_eq!(
            shape.list_params(&filter, &[]),
            json!({"entityTypeId": 2, "order": {"ID": "ASC"}, "filter": {">ID": 35}, "start": -1})
        );
        assert_eq!(
            shape.last_id_reference("c1", 49),
            "$result[c1][items][49][ID]"
        );
        let entry = json!({"ID": 36, "TYPE_ID": 2, "OWNER_ID": 21, "STAGE_ID": "PREPARATION"});
        let rows = shape
            .rows("crm.stagehistory.list", json!({"items": [entry.clone()]}))
            .unwrap();
        assert_eq!(Value::Object(rows[0].clone()), entry);
        assert!(shape.rows("crm.stagehistory.list", json!([entry])).is_err());
        assert!(
            shape
                .rows("crm.stagehistory.list", json!({"items": [1]}))
                .is_err()
        );
    }

    #[test]
    fn item_requests_speak_item_names_and_answers_come_back_as_codes() {
        let api = smart();
        let filter = json!({">=DATE_MODIFY": "2024-01-01T00:00:00+00:00", "STAGE_ID": "NEW"});
        let query = api.list_query(
            vec!["*".into(), "UF_*".into()],
            filter.as_object().cloned().unwrap(),
            None,
        );
        assert_eq!(query.method, "crm.item.list");
        let params = query.shape.list_params(&query.filter, &query.select);
        assert_eq!(params["entityTypeId"], 1038);
        assert_eq!(params["useOriginalUfNames"], "Y");
        assert_eq!(params["order"], json!({"id": "ASC"}));
        assert_eq!(params["select"], json!(["*"]));
        assert_eq!(
            params["filter"],
            json!({">=updatedTime": "2024-01-01T00:00:00+00:00", "stageId": "NEW"})
        );
        assert_eq!(
            query.shape.last_id_reference("c3", 49),
            "$result[c3][items][49][id]"
        );
        let rows = api
            .rows(json!({"items": [{"id": 5, "title": "A", "updatedTime": "2024-08-30T14:29:00+03:00"}]}))
            .unwrap();
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"ID": 5, "TITLE": "A", "DATE_MODIFY": "2024-08-30T14:29:00+03:00"})
        );
        assert!(
            api.rows(json!([{"ID": "5"}])).is_err(),
            "a classic answer to an item request"
        );
        let update = api.update_command("u0", 5, json!({"TITLE": "B"}).as_object().unwrap());
        assert_eq!(update.method, "crm.item.update");
        assert_eq!(
            update.params,
            json!({"id": 5, "fields": {"title": "B"}, "entityTypeId": 1038})
        );
        assert_eq!(api.created_id(&json!({"item": {"id": 77}})), Some(77));
        let newest = api.list_command(
            "n",
            &[("DATE_MODIFY", "DESC"), ("ID", "DESC")],
            &["ID", "DATE_MODIFY"],
            Map::new(),
        );
        assert_eq!(
            newest.params["order"],
            json!({"updatedTime": "DESC", "id": "DESC"})
        );
        assert_eq!(newest.params["select"], json!(["id", "updatedTime"]));
    }

    #[test]
    fn classic_requests_are_as_before() {
        let mut api = EntityApi::classic(Entity::Deal);
        assert_eq!(api.list_method(), "crm.deal.list");
        assert_eq!(api.fields_command("f").method, "crm.deal.fields");
        assert_eq!(
            api.with_fields(&json!({"ID": {}})).unwrap(),
            json!({"ID": {}})
        );
        let params = Dialect::Classic.list_params(&Map::new(), &["ID".into()]);
        assert_eq!(
            params,
            json!({"order": {"ID": "ASC"}, "filter": {}, "start": -1, "select": ["ID"]})
        );
        assert_eq!(
            Dialect::Classic.last_id_reference("c0", 49),
            "$result[c0][49][ID]"
        );
        assert_eq!(api.created_id(&json!(394)), Some(394));
        let add = api.add_command("a", json!({"TITLE": "x"}).as_object().unwrap());
        assert_eq!(add.params["params"]["REGISTER_SONET_EVENT"], "N");
        // A smart process always goes through crm.item.
        assert!(EntityApi::classic(Entity::Smart(1038)).is_items());
    }
}
