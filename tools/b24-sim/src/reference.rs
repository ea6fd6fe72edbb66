//! Reference data a mirror joins against: pipelines (`crm.category.list`) and the stage
//! lists each one owns, currencies (`crm.currency.list`) and users (`user.get`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::list::{Classic, Paged, Query};
use crate::params::param;
use crate::schema::{Entity, Kind};
use crate::table::{Cell, Reader, Table};
use crate::values::{PortalClock, parse_int, scalar_text};

/// A pipeline ("funnel", "direction") of deals or of a smart process.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Category {
    pub id: i64,
    pub entity_type_id: u32,
    pub name: String,
    pub sort: i64,
    pub is_default: bool,
}

impl Category {
    /// As `crm.category.list` shows it; the deals' general pipeline (ID 0) carries no
    /// `originId`/`originatorId`, as in the docs' example.
    pub fn render(&self) -> Value {
        let mut row = json!({
            "id": self.id,
            "name": self.name,
            "sort": self.sort,
            "entityTypeId": self.entity_type_id,
            "isDefault": if self.is_default { "Y" } else { "N" },
        });
        if !(self.entity_type_id == 2 && self.id == 0) {
            row["originId"] = json!("");
            row["originatorId"] = json!("");
        }
        row
    }
}

/// `POST /_sim/categories`: a new pipeline with its stages, as a user adds one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    /// 2 (deals) or a smart process's `entityTypeId`.
    pub entity_type_id: u32,
    pub name: String,
    #[serde(default = "default_sort")]
    pub sort: i64,
}

fn default_sort() -> i64 {
    500
}

/// Every pipeline of the portal. IDs are shared by deals and smart processes, as on a
/// portal; the deals' general pipeline is ID 0.
pub(crate) struct Categories {
    items: Vec<Category>,
    next_id: i64,
}

impl Default for Categories {
    fn default() -> Self {
        Categories {
            items: vec![Category {
                id: 0,
                entity_type_id: 2,
                name: "General".to_string(),
                sort: 300,
                is_default: true,
            }],
            next_id: 1,
        }
    }
}

impl Categories {
    /// Adds a pipeline; the first one of a smart process is its default.
    pub fn add(&mut self, entity_type_id: u32, name: &str, sort: i64) -> Category {
        let is_default = !self
            .items
            .iter()
            .any(|c| c.entity_type_id == entity_type_id);
        let category = Category {
            id: self.next_id,
            entity_type_id,
            name: name.to_string(),
            sort,
            is_default,
        };
        self.next_id += 1;
        self.items.push(category.clone());
        category
    }

    /// The pipelines of a type, as `crm.category.list` orders them (by `sort`, then ID).
    pub fn of(&self, entity_type_id: u32) -> Vec<&Category> {
        let mut list: Vec<&Category> = self
            .items
            .iter()
            .filter(|c| c.entity_type_id == entity_type_id)
            .collect();
        list.sort_by_key(|c| (c.sort, c.id));
        list
    }

    pub fn default_of(&self, entity_type_id: u32) -> Option<&Category> {
        self.items
            .iter()
            .find(|c| c.entity_type_id == entity_type_id && c.is_default)
    }

    pub fn get(&self, entity_type_id: u32, id: i64) -> Option<&Category> {
        self.items
            .iter()
            .find(|c| c.entity_type_id == entity_type_id && c.id == id)
    }
}

/// The deal stages every pipeline starts with (labels of the general one).
pub(crate) const DEAL_STAGES: &[(&str, &str)] = &[
    ("NEW", "New"),
    ("PREPARATION", "Preparing documents"),
    ("PREPAYMENT_INVOICE", "Prepayment invoice"),
    ("EXECUTING", "In progress"),
    ("FINAL_INVOICE", "Final invoice"),
    ("WON", "Deal won"),
    ("LOSE", "Deal lost"),
];

/// The stages a smart-process pipeline starts with; the docs name `NEW` "Start", the
/// rest are this simulator's choice (`SUCCESS` succeeds, `FAIL` fails).
const SMART_STAGES: &[(&str, &str)] = &[
    ("NEW", "Start"),
    ("PREPARATION", "Preparation"),
    ("CLIENT", "Customer approval"),
    ("SUCCESS", "Success"),
    ("FAIL", "Fail"),
];

/// The `crm.status.list` `ENTITY_ID` of a pipeline's stages: `DEAL_STAGE` (general deal
/// pipeline), `DEAL_STAGE_7`, `DYNAMIC_1038_STAGE_12`.
pub(crate) fn stage_list_id(entity_type_id: u32, category_id: i64) -> String {
    match (entity_type_id, category_id) {
        (2, 0) => "DEAL_STAGE".to_string(),
        (2, id) => format!("DEAL_STAGE_{id}"),
        (type_id, id) => format!("DYNAMIC_{type_id}_STAGE_{id}"),
    }
}

/// The stage IDs (with labels) a new pipeline gets: `C7:NEW`... for deals,
/// `DT1038_12:NEW`... for a smart process.
pub(crate) fn stages_of(entity_type_id: u32, category_id: i64) -> Vec<(String, String)> {
    let (prefix, stages) = match (entity_type_id, category_id) {
        (2, 0) => (String::new(), DEAL_STAGES),
        (2, id) => (format!("C{id}:"), DEAL_STAGES),
        (type_id, id) => (format!("DT{type_id}_{id}:"), SMART_STAGES),
    };
    stages
        .iter()
        .map(|(code, name)| (format!("{prefix}{code}"), name.to_string()))
        .collect()
}

/// `crm.category.list {entityTypeId}`.
pub(crate) fn category_list(
    categories: &Categories,
    kind: Result<Kind, ApiError>,
) -> Result<(Value, usize), ApiError> {
    let kind = kind?;
    match kind {
        Kind::Classic(Entity::Lead) => Err(ApiError::new(
            400,
            "ENTITY_TYPE_NOT_SUPPORTED",
            "Entity type `Lead` is not supported",
        )),
        Kind::Classic(entity @ (Entity::Contact | Entity::Company)) => {
            // Contacts and companies have one pipeline, the general one.
            let general = Category {
                id: 0,
                entity_type_id: entity.entity_type_id(),
                name: "General".to_string(),
                sort: 500,
                is_default: true,
            };
            Ok((json!({"categories": [general.render()]}), 1))
        }
        _ => {
            let list: Vec<Value> = categories
                .of(kind.entity_type_id())
                .into_iter()
                .map(Category::render)
                .collect();
            let count = list.len();
            Ok((json!({ "categories": list }), count))
        }
    }
}

/// One currency of the portal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Currency {
    pub code: String,
    pub full_name: String,
    /// Rate against the base currency.
    pub amount: f64,
    pub sort: i64,
    pub base: bool,
    pub format: String,
    pub updated: i64,
}

/// `POST /_sim/currencies`: a currency added in the CRM settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyRequest {
    /// ISO 4217 code, e.g. `GBP`.
    pub currency: String,
    pub full_name: String,
    /// Rate against the base currency (default 1).
    #[serde(default = "default_amount")]
    pub amount: f64,
    #[serde(default = "default_sort")]
    pub sort: i64,
}

fn default_amount() -> f64 {
    1.0
}

impl Currency {
    /// As `crm.currency.list` shows it: every value a string, rates with four decimals.
    fn render(&self, clock: &PortalClock) -> Value {
        json!({
            "CURRENCY": self.code,
            "AMOUNT_CNT": "1",
            "AMOUNT": format!("{:.4}", self.amount),
            "SORT": self.sort.to_string(),
            "BASE": if self.base { "Y" } else { "N" },
            "FULL_NAME": self.full_name,
            "LID": "en",
            "FORMAT_STRING": self.format,
            "DEC_POINT": ".",
            "THOUSANDS_SEP": ",",
            "DECIMALS": "2",
            "DATE_UPDATE": clock.format_secs(self.updated),
        })
    }
}

/// The seeded currencies (the ones seeded records use); USD is the base.
pub(crate) fn seeded_currencies(anchor: i64) -> Vec<Currency> {
    [
        ("USD", "US Dollar", 1.0, 100, "$#"),
        ("EUR", "Euro", 1.08, 200, "&euro;#"),
        ("RUB", "Russian Ruble", 0.011, 300, "# &#8381;"),
    ]
    .into_iter()
    .map(|(code, name, amount, sort, format)| Currency {
        code: code.to_string(),
        full_name: name.to_string(),
        amount,
        sort,
        base: code == "USD",
        format: format.to_string(),
        updated: anchor,
    })
    .collect()
}

/// Adds a currency; its code must be three letters and new.
pub(crate) fn add_currency(
    currencies: &mut Vec<Currency>,
    request: &CurrencyRequest,
    now: i64,
) -> Result<Value, String> {
    let code = request.currency.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "currency '{}' is not a three-letter code",
            request.currency
        ));
    }
    if currencies.iter().any(|c| c.code == code) {
        return Err(format!("currency {code} already exists"));
    }
    if !(request.amount.is_finite() && request.amount > 0.0) {
        return Err(format!(
            "amount must be a positive number, got {}",
            request.amount
        ));
    }
    let currency = Currency {
        full_name: if request.full_name.trim().is_empty() {
            code.clone()
        } else {
            request.full_name.trim().to_string()
        },
        format: format!("# {code}"),
        code,
        amount: request.amount,
        sort: request.sort,
        base: false,
        updated: now,
    };
    let row = json!({"CURRENCY": currency.code, "FULL_NAME": currency.full_name});
    currencies.push(currency);
    Ok(row)
}

/// `crm.currency.list {order}`: `order` keys in any case (`sort`, `currency`), default
/// by `SORT`; `total` is always 0, as the docs say.
pub(crate) fn currency_list(
    currencies: &[Currency],
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Vec<Value> {
    let mut rows: Vec<Value> = currencies.iter().map(|c| c.render(clock)).collect();
    let order: Vec<(String, bool)> = match param(params, "order") {
        Some(Value::Object(map)) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| {
                let descending = scalar_text(v).is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                (k.to_ascii_uppercase(), descending)
            })
            .collect(),
        _ => vec![("SORT".to_string(), false)],
    };
    rows.sort_by(|a, b| {
        for (key, descending) in &order {
            let (x, y) = (&a[key.as_str()], &b[key.as_str()]);
            let ordering = match (
                scalar_text(x).and_then(|s| s.parse::<f64>().ok()),
                scalar_text(y).and_then(|s| s.parse::<f64>().ok()),
            ) {
                (Some(x), Some(y)) => x.total_cmp(&y),
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
        std::cmp::Ordering::Equal
    });
    rows
}

/// `POST /_sim/users`: a user joins the portal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub last_name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub work_position: Option<String>,
    /// `false` for a user who has left (`ACTIVE` false).
    #[serde(default = "yes")]
    pub active: bool,
    /// `UF_DEPARTMENT` (default `[1]`).
    #[serde(default = "first_department")]
    pub departments: Vec<i64>,
}

fn yes() -> bool {
    true
}

fn first_department() -> Vec<i64> {
    vec![1]
}

/// Parameters of `user.get` that are no filter (every other top-level key is one).
const USER_GET_PARAMS: [&str; 6] = ["sort", "order", "start", "filter", "admin_mode", "auth"];

/// A user as `user.get` shows it: `ID` a string, `ACTIVE` a JSON boolean,
/// `UF_DEPARTMENT` an array of numbers, everything else a string (`""` when empty).
pub(crate) fn render_user(table: &Table, row: usize, clock: &PortalClock) -> Value {
    let mut out = Map::new();
    for (column, field) in table.fields.iter().enumerate() {
        let value = match (field.name.as_str(), table.cell(row, column)) {
            ("ACTIVE", Cell::Flag(active)) => json!(active),
            ("UF_DEPARTMENT", Cell::List(items)) => Value::Array(
                items
                    .iter()
                    .filter_map(|item| match item.cell() {
                        Cell::Int(id) => Some(json!(id)),
                        _ => None,
                    })
                    .collect(),
            ),
            ("UF_DEPARTMENT", _) => json!([]),
            (_, Cell::Null) => json!(""),
            _ => table
                .render(row, column, clock, Reader::Get)
                .unwrap_or(Value::Null),
        };
        out.insert(field.name.clone(), value);
    }
    Value::Object(out)
}

/// Adds a user from a control request; returns the user as `user.get` shows it.
pub(crate) fn add_user(
    table: &mut Table,
    request: &UserRequest,
    now: i64,
    clock: &PortalClock,
) -> Result<Value, String> {
    use crate::table::Stored;
    if request.name.trim().is_empty() && request.last_name.trim().is_empty() {
        return Err("a user needs a name or a last name".to_string());
    }
    let id = table.next_id;
    let text = |s: &str| {
        let s = s.trim();
        if s.is_empty() {
            Stored::Null
        } else {
            Stored::Str(s.into())
        }
    };
    let values: Vec<Stored> = table
        .fields
        .iter()
        .map(|field| match field.name.as_str() {
            "ID" => Stored::Int(id as i64),
            "ACTIVE" => Stored::Flag(request.active),
            "NAME" => text(&request.name),
            "LAST_NAME" => text(&request.last_name),
            "EMAIL" => text(request.email.as_deref().unwrap_or_default()),
            "WORK_POSITION" => text(request.work_position.as_deref().unwrap_or_default()),
            "DATE_REGISTER" => Stored::Time(now),
            "IS_ONLINE" => Stored::Flag(false),
            "UF_DEPARTMENT" => Stored::List(
                request
                    .departments
                    .iter()
                    .map(|d| Stored::Int(*d))
                    .collect(),
            ),
            "USER_TYPE" => Stored::Str("employee".into()),
            _ => Stored::Null,
        })
        .collect();
    table.push(values);
    table.next_id += 1;
    Ok(render_user(table, table.rows() - 1, clock))
}

/// `user.get`: filters as top-level keys or under `FILTER`, with the prefixes of the
/// CRM lists; `sort` (a field) and `order` (`ASC`/`DESC`); 50 a page with `start`.
pub(crate) fn user_get(
    table: &Table,
    params: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Paged, ApiError> {
    let mut filter = match param(params, "filter") {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in params {
        if !USER_GET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p)) {
            filter.insert(key.clone(), value.clone());
        }
    }
    let mut order = Map::new();
    match param(params, "order") {
        Some(Value::Object(map)) => order = map.clone(),
        direction => {
            if let Some(field) = param(params, "sort").and_then(scalar_text) {
                let direction = direction.and_then(scalar_text).unwrap_or_default();
                order.insert(field.trim().to_ascii_uppercase(), json!(direction));
            }
        }
    }
    let start = param(params, "start").and_then(parse_int).unwrap_or(0);
    let query = Query::new(table, &filter, &order, start, clock, &Classic)?;
    let picked = query.pick(table);
    let rows = picked
        .rows
        .iter()
        .map(|&row| render_user(table, row, clock))
        .collect();
    Ok((rows, picked.total, picked.next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_share_ids_and_order_by_sort() {
        let mut categories = Categories::default();
        let first = categories.add(1038, "General", 500);
        let second = categories.add(2, "Wholesale", 200);
        let third = categories.add(1038, "Returns", 100);
        assert!(first.is_default && !second.is_default && !third.is_default);
        assert_eq!((first.id, second.id, third.id), (1, 2, 3));
        let deals: Vec<i64> = categories.of(2).iter().map(|c| c.id).collect();
        assert_eq!(deals, [2, 0]);
        assert_eq!(categories.default_of(1038).unwrap().id, 1);
        // The general deal pipeline is the docs' row: no origin keys.
        assert_eq!(
            categories.get(2, 0).unwrap().render(),
            json!({"id":0,"name":"General","sort":300,"entityTypeId":2,"isDefault":"Y"})
        );
        assert_eq!(second.render()["originId"], "");
    }

    #[test]
    fn stage_lists_are_named_and_prefixed_as_on_a_portal() {
        assert_eq!(stage_list_id(2, 0), "DEAL_STAGE");
        assert_eq!(stage_list_id(2, 7), "DEAL_STAGE_7");
        assert_eq!(stage_list_id(1038, 12), "DYNAMIC_1038_STAGE_12");
        assert_eq!(stages_of(2, 7)[0].0, "C7:NEW");
        assert_eq!(
            stages_of(1038, 12)[0],
            ("DT1038_12:NEW".into(), "Start".into())
        );
        assert_eq!(stages_of(2, 0)[5].0, "WON");
    }
}
