//! Smart processes (custom CRM types, "SPA"): their configuration, the type as
//! `crm.type.list` / `crm.type.get` show it, and the names of their user fields.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::list::{PAGE, Paged};
use crate::params::param;
use crate::schema::is_smart_entity_type_id;
use crate::values::{PortalClock, parse_int, scalar_text};

/// A smart process the portal has: configured in `SimConfig::smart_processes`, on the
/// command line (`--smart-process 1038:Orders:500`) or added at run time
/// (`POST /_sim/smart-processes`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmartProcessConfig {
    /// `entityTypeId`: 128..=191, or even and at least 1030 (e.g. 1038).
    pub entity_type_id: u32,
    pub title: String,
    /// The type's symbolic `code` (`""` by default, as most portals have).
    pub code: String,
    /// Seeded items, IDs from 1.
    pub items: usize,
    /// User fields (`UF_CRM_<typeId>_<...>`); their types cycle like `SimConfig::user_fields`.
    pub user_fields: usize,
    /// `isLinkWithProductsEnabled`: the items have an amount, a currency and product rows.
    pub with_products: bool,
    /// Seeded items get up to this many product rows each (with `with_products`).
    pub product_rows: usize,
    /// Pipelines besides the default one ("General"); any makes `isCategoriesEnabled` Y.
    pub categories: Vec<String>,
    /// The type's `id` (`crm.type.get {id}`), which also names its user fields
    /// (`UF_CRM_5_...`); `None` takes the next free one from 1.
    pub type_id: Option<u32>,
}

impl SmartProcessConfig {
    /// A smart process with `items` seeded items and nothing else configured.
    pub fn new(entity_type_id: u32, title: &str, items: usize) -> SmartProcessConfig {
        SmartProcessConfig {
            entity_type_id,
            title: title.to_string(),
            items,
            ..SmartProcessConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !is_smart_entity_type_id(self.entity_type_id) {
            return Err(format!(
                "entityTypeId {} is no smart process type (128..=191, or even and at least 1030)",
                self.entity_type_id
            ));
        }
        if self.title.trim().is_empty() || self.title.chars().any(char::is_control) {
            return Err(format!(
                "smart process {}: the title must be non-empty text",
                self.entity_type_id
            ));
        }
        if self.type_id == Some(0) {
            return Err("the type id must be at least 1".to_string());
        }
        if self.items > 10_000_000 || self.user_fields > 500 || self.product_rows > 100 {
            return Err(format!(
                "smart process {}: at most 10,000,000 items, 500 user fields and 100 product rows per item",
                self.entity_type_id
            ));
        }
        if self.categories.iter().any(|c| c.trim().is_empty()) {
            return Err("pipeline names must not be empty".to_string());
        }
        Ok(())
    }
}

/// `ID:TITLE:ITEMS[:products][:uf=N][:rows=N][:categories=A|B][:code=C][:id=N]`, e.g.
/// `1038:Orders:500:products:uf=4`.
impl FromStr for SmartProcessConfig {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!(
                "smart process '{text}' must look like ENTITY_TYPE_ID:TITLE:ITEMS[:products][:uf=N][:rows=N][:categories=A|B][:code=C][:id=N]"
            )
        };
        let mut parts = text.split(':');
        let (Some(id), Some(title), Some(items)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(usage());
        };
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| usage());
        let mut config = SmartProcessConfig::new(
            id.trim().parse().map_err(|_| usage())?,
            title.trim(),
            number(items)?,
        );
        for option in parts {
            match option.split_once('=') {
                None if option.trim() == "products" => config.with_products = true,
                Some(("uf", n)) => config.user_fields = number(n)?,
                Some(("rows", n)) => {
                    config.product_rows = number(n)?;
                    config.with_products = true;
                }
                Some(("categories", names)) => {
                    config.categories = names.split('|').map(|n| n.trim().to_string()).collect();
                }
                Some(("code", code)) => config.code = code.trim().to_string(),
                Some(("id", n)) => config.type_id = Some(n.trim().parse().map_err(|_| usage())?),
                _ => return Err(usage()),
            }
        }
        config.validate()?;
        Ok(config)
    }
}

/// A smart process as the portal keeps it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SmartType {
    pub entity_type_id: u32,
    /// The type's own ID (`crm.type.get {id}`, `UF_CRM_<id>_...`, `CRM_<id>`).
    pub type_id: u32,
    pub title: String,
    pub code: String,
    pub with_products: bool,
    pub created: i64,
}

impl SmartType {
    /// A user field name the way the portal generates them: `UF_CRM_5_1721812760630`.
    pub fn user_field_name(&self, stamp: u64) -> String {
        format!("UF_CRM_{}_{stamp}", self.type_id)
    }

    /// As `crm.type.list` shows it; `crm.type.get` adds `relations`, `linkedUserFields`
    /// and `customSections`.
    pub fn render(&self, categories_enabled: bool, clock: &PortalClock, full: bool) -> Value {
        let yn = |b: bool| if b { "Y" } else { "N" };
        let mut row = json!({
            "id": self.type_id,
            "title": self.title,
            "code": self.code,
            "createdBy": 1,
            "entityTypeId": self.entity_type_id,
            "customSectionId": null,
            "isCategoriesEnabled": yn(categories_enabled),
            "isStagesEnabled": "Y",
            "isBeginCloseDatesEnabled": "Y",
            "isClientEnabled": "Y",
            "isUseInUserfieldEnabled": "Y",
            "isLinkWithProductsEnabled": yn(self.with_products),
            "isMycompanyEnabled": "Y",
            "isDocumentsEnabled": "Y",
            "isSourceEnabled": "Y",
            "isObserversEnabled": "N",
            "isRecyclebinEnabled": "Y",
            "isAutomationEnabled": "Y",
            "isBizProcEnabled": "Y",
            "isSetOpenPermissions": "Y",
            "isPaymentsEnabled": "N",
            "isCountersEnabled": "N",
            "createdTime": clock.format_secs(self.created),
            "updatedTime": clock.format_secs(self.created),
            "updatedBy": 1,
        });
        if full {
            row["relations"] = json!({
                "parent": [
                    {"entityTypeId": 3, "isChildrenListEnabled": "Y", "isPredefined": "Y"},
                    {"entityTypeId": 4, "isChildrenListEnabled": "Y", "isPredefined": "Y"},
                ],
                "child": [],
            });
            row["linkedUserFields"] = json!({
                "CALENDAR_EVENT|UF_CRM_CAL_EVENT": "N",
                "TASKS_TASK|UF_CRM_TASK": "N",
                "TASKS_TASK_TEMPLATE|UF_CRM_TASK": "N",
            });
            row["customSections"] = json!([]);
        }
        row
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(400, "INVALID_ARG_VALUE", message)
}

/// `crm.type.list {filter, order, start}` over the rendered types: filter keys are the
/// type's fields with `=`, `!=`/`!`, `%` or no prefix; unknown fields and sort
/// directions other than ASC/DESC are refused as the docs show.
pub(crate) fn type_list(types: Vec<Value>, params: &Map<String, Value>) -> Result<Paged, ApiError> {
    let known = |key: &str, sample: &Value| sample.get(key).is_some();
    let sample = SmartType {
        entity_type_id: 0,
        type_id: 0,
        title: String::new(),
        code: String::new(),
        with_products: false,
        created: 0,
    }
    .render(false, &PortalClock::utc(), false);
    let filter = match param(params, "filter") {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let mut conditions = Vec::new();
    for (key, wanted) in &filter {
        let (negate, contains, name) = if let Some(name) = key.strip_prefix("!%") {
            (true, true, name)
        } else if let Some(name) = key.strip_prefix("!=").or_else(|| key.strip_prefix('!')) {
            (true, false, name)
        } else if let Some(name) = key.strip_prefix('%') {
            (false, true, name)
        } else {
            (false, false, key.strip_prefix('=').unwrap_or(key))
        };
        if !known(name, &sample) {
            return Err(invalid(format!(
                "Invalid filter: field '{name}' is not allowed in filter"
            )));
        }
        let wanted = scalar_text(wanted)
            .ok_or_else(|| invalid(format!("Invalid filter: field '{name}' has invalid value")))?;
        conditions.push((name.to_string(), negate, contains, wanted));
    }
    let mut order = Vec::new();
    if let Some(Value::Object(map)) = param(params, "order") {
        for (name, direction) in map {
            if !known(name, &sample) {
                return Err(invalid(format!(
                    "Invalid order: field '{name}' is not allowed in order"
                )));
            }
            let direction = scalar_text(direction).unwrap_or_default();
            let descending = match direction.trim().to_ascii_uppercase().as_str() {
                "ASC" => false,
                "DESC" => true,
                _ => {
                    return Err(invalid(format!(
                        "Invalid order: allowed sort directions are ASC, DESC. But got '{direction}' for field '{name}'"
                    )));
                }
            };
            order.push((name.clone(), descending));
        }
    }
    let mut rows: Vec<Value> = types
        .into_iter()
        .filter(|row| {
            conditions.iter().all(|(name, negate, contains, wanted)| {
                let value = scalar_text(&row[name.as_str()]).unwrap_or_default();
                let hit = if *contains {
                    value.to_lowercase().contains(&wanted.to_lowercase())
                } else {
                    value == *wanted
                };
                hit != *negate
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        for (name, descending) in &order {
            let (x, y) = (&a[name.as_str()], &b[name.as_str()]);
            let ordering = match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => scalar_text(x).cmp(&scalar_text(y)),
            };
            let ordering = if *descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        a["id"].as_i64().cmp(&b["id"].as_i64())
    });
    let start = param(params, "start").and_then(parse_int).unwrap_or(0);
    let start = usize::try_from(start).ok().map(|s| s / PAGE * PAGE);
    let total = rows.len();
    let offset = start.unwrap_or(0).min(total);
    let page = rows.into_iter().skip(offset).take(PAGE).collect();
    let next = start.map(|s| s + PAGE).filter(|&n| n < total);
    Ok((page, Some(start.map_or(0, |_| total)), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_form_reads_every_option() {
        let config: SmartProcessConfig = "1038:Orders:500".parse().unwrap();
        assert_eq!(config, SmartProcessConfig::new(1038, "Orders", 500));
        let config: SmartProcessConfig =
            "1040:Projects:20:products:uf=3:rows=2:categories=Big|Small:code=proj:id=9"
                .parse()
                .unwrap();
        assert!(config.with_products);
        assert_eq!(
            (config.user_fields, config.product_rows, config.type_id),
            (3, 2, Some(9))
        );
        assert_eq!(config.categories, ["Big", "Small"]);
        assert_eq!(config.code, "proj");
        for bad in [
            "1038:Orders",
            "1037:Odd:5",
            "129x:A:1",
            "1038:A:1:colour=red",
            "200:A:1",
        ] {
            assert!(bad.parse::<SmartProcessConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn types_filter_and_order_as_documented() {
        let clock = PortalClock::utc();
        let types: Vec<Value> = [(1038, 1, "Orders"), (1040, 2, "Projects")]
            .into_iter()
            .map(|(entity_type_id, type_id, title)| {
                SmartType {
                    entity_type_id,
                    type_id,
                    title: title.into(),
                    code: String::new(),
                    with_products: type_id == 2,
                    created: 0,
                }
                .render(false, &clock, false)
            })
            .collect();
        let params = json!({"filter": {"isLinkWithProductsEnabled": "Y"}});
        let (rows, total, _) = type_list(types.clone(), params.as_object().unwrap()).unwrap();
        assert_eq!((rows.len(), total), (1, Some(1)));
        assert_eq!(rows[0]["entityTypeId"], 1040);
        let params = json!({"order": {"id": "DESC"}, "filter": {"%title": "o"}});
        let (rows, _, _) = type_list(types.clone(), params.as_object().unwrap()).unwrap();
        assert_eq!(rows[0]["id"], 2);
        let params = json!({"filter": {"colour": "red"}});
        let error = type_list(types.clone(), params.as_object().unwrap()).unwrap_err();
        assert_eq!(
            error.description,
            "Invalid filter: field 'colour' is not allowed in filter"
        );
        let params = json!({"order": {"id": "UP"}});
        let error = type_list(types, params.as_object().unwrap()).unwrap_err();
        assert!(
            error
                .description
                .starts_with("Invalid order: allowed sort directions")
        );
    }
}
