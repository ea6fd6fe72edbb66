//! Product rows of deals, leads and smart processes that link products: one store that
//! `crm.deal.productrows.get/set` (UPPER_CASE keys, the deal's rows) and
//! `crm.item.productrow.list/set` (camelCase keys, typed, any owner) both read and write.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::list::PAGE;
use crate::params::param;
use crate::schema::Kind;
use crate::table::list_items;
use crate::values::{is_empty_input, parse_flag, parse_float, parse_int, scalar_text};

/// One product row, with the amounts the portal derives from the input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProductRow {
    pub id: u64,
    pub owner: Kind,
    pub owner_id: u64,
    pub product_id: i64,
    pub product_name: String,
    pub product_description: Option<String>,
    pub price: f64,
    pub price_exclusive: f64,
    pub price_netto: f64,
    pub price_brutto: f64,
    pub quantity: f64,
    pub discount_type_id: i64,
    pub discount_rate: f64,
    pub discount_sum: f64,
    /// `None` when the row has no tax (`taxRate: null`, `taxName: "No VAT"`).
    pub tax_rate: Option<f64>,
    pub tax_included: bool,
    pub tax_name: Option<String>,
    pub measure_code: i64,
    pub measure_name: String,
    pub sort: i64,
}

/// A row's input: its keys in any case, as `crm.deal.productrows.set` takes them
/// (`PRICE`) or as `crm.item.productrow.set` does (`price`, `discountTypeId`).
struct RowInput<'a>(&'a Map<String, Value>);

impl RowInput<'_> {
    fn get(&self, upper: &str) -> Option<&Value> {
        let compact: String = upper.chars().filter(|c| *c != '_').collect();
        self.0
            .iter()
            .find(|(k, _)| {
                k.eq_ignore_ascii_case(upper) || k.replace('_', "").eq_ignore_ascii_case(&compact)
            })
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }
}

/// Units the portal knows by code, for rows that name only the code.
fn measure_name(code: i64) -> &'static str {
    match code {
        6 => "m",
        112 => "l",
        163 => "g",
        166 => "kg",
        _ => "pcs",
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A JSON number as the item API shows it: whole values without a fraction.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

impl ProductRow {
    /// Reads one row of input. `index` numbers rows in error messages (from 1).
    fn parse(
        owner: Kind,
        owner_id: u64,
        id: u64,
        index: usize,
        input: &Map<String, Value>,
    ) -> Result<ProductRow, ApiError> {
        let input = RowInput(input);
        let number = |key: &str, default: f64| -> Result<f64, ApiError> {
            match input.get(key) {
                None => Ok(default),
                Some(v) => parse_float(v).ok_or_else(|| {
                    ApiError::crm(format!(
                        "Product row #{}: {key} {v} is not a number",
                        index + 1
                    ))
                }),
            }
        };
        let price = number("PRICE", 0.0)?;
        let quantity = number("QUANTITY", 1.0)?;
        let tax_rate = match input.get("TAX_RATE") {
            None => None,
            Some(_) => Some(number("TAX_RATE", 0.0)?),
        };
        let tax = tax_rate.unwrap_or(0.0);
        let discount_type = input
            .get("DISCOUNT_TYPE_ID")
            .and_then(parse_int)
            .unwrap_or(2);
        if discount_type != 1 && discount_type != 2 {
            return Err(ApiError::crm(format!(
                "Product row #{}: DISCOUNT_TYPE_ID must be 1 (absolute) or 2 (percent)",
                index + 1
            )));
        }
        let tax_included = input
            .get("TAX_INCLUDED")
            .and_then(parse_flag)
            .unwrap_or(false);
        let (discount_rate, discount_sum) = if discount_type == 1 {
            let sum = number("DISCOUNT_SUM", 0.0)?;
            let before = price + sum;
            (
                if before == 0.0 {
                    0.0
                } else {
                    sum / before * 100.0
                },
                sum,
            )
        } else {
            let rate = number("DISCOUNT_RATE", 0.0)?;
            if rate >= 100.0 {
                return Err(ApiError::new(
                    400,
                    "ERROR_CORE",
                    "Discount Sum (DISCOUNT_SUM) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) is defined and Discount Rate (DISCOUNT_RATE) is 100%<br>",
                ));
            }
            (rate, price / (1.0 - rate / 100.0) - price)
        };
        let exclusive = if tax_included {
            price / (1.0 + tax / 100.0)
        } else {
            price
        };
        let product_id = input.get("PRODUCT_ID").and_then(parse_int).unwrap_or(0);
        let product_name = input
            .get("PRODUCT_NAME")
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("[{product_id}]"));
        let measure_code = input.get("MEASURE_CODE").and_then(parse_int).unwrap_or(796);
        let measure_name = input
            .get("MEASURE_NAME")
            .and_then(scalar_text)
            .unwrap_or_else(|| measure_name(measure_code).to_string());
        Ok(ProductRow {
            id,
            owner,
            owner_id,
            product_id,
            product_name,
            product_description: input.get("PRODUCT_DESCRIPTION").and_then(scalar_text),
            price,
            price_exclusive: round2(exclusive),
            price_netto: round2(exclusive + discount_sum),
            price_brutto: round2((exclusive + discount_sum) * (1.0 + tax / 100.0)),
            quantity,
            discount_type_id: discount_type,
            discount_rate: round2(discount_rate),
            discount_sum: round2(discount_sum),
            tax_rate,
            tax_included,
            tax_name: input.get("TAX_NAME").and_then(scalar_text),
            measure_code,
            measure_name,
            sort: input
                .get("SORT")
                .and_then(parse_int)
                .unwrap_or((index as i64 + 1) * 10),
        })
    }

    /// As `crm.deal.productrows.get` shows it.
    pub fn render_classic(&self) -> Value {
        json!({
            "ID": self.id.to_string(),
            "OWNER_ID": self.owner_id.to_string(),
            "OWNER_TYPE": self.owner.abbr(),
            "PRODUCT_ID": self.product_id,
            "PRODUCT_NAME": self.product_name,
            "ORIGINAL_PRODUCT_NAME": self.product_name,
            "PRODUCT_DESCRIPTION": self.product_description,
            "PRICE": self.price,
            "PRICE_EXCLUSIVE": self.price_exclusive,
            "PRICE_NETTO": self.price_netto,
            "PRICE_BRUTTO": self.price_brutto,
            "PRICE_ACCOUNT": format!("{:.2}", self.price),
            "QUANTITY": self.quantity,
            "DISCOUNT_TYPE_ID": self.discount_type_id,
            "DISCOUNT_RATE": self.discount_rate,
            "DISCOUNT_SUM": self.discount_sum,
            "TAX_RATE": self.tax_rate.unwrap_or(0.0),
            "TAX_INCLUDED": if self.tax_included { "Y" } else { "N" },
            "CUSTOMIZED": "Y",
            "MEASURE_CODE": self.measure_code,
            "MEASURE_NAME": self.measure_name,
            "SORT": self.sort,
            "XML_ID": null,
            "TYPE": 1,
            "STORE_ID": null,
            "RESERVE_ID": null,
            "DATE_RESERVE_END": null,
            "RESERVE_QUANTITY": null,
        })
    }

    /// As `crm.item.productrow.list` shows it: camelCase keys, typed values.
    pub fn render_item(&self) -> Value {
        let taxed = self.tax_rate.is_some_and(|t| t != 0.0);
        json!({
            "id": self.id,
            "ownerId": self.owner_id,
            "ownerType": self.owner.abbr(),
            "productId": self.product_id,
            "productName": self.product_name,
            "price": number(self.price),
            "priceAccount": number(self.price),
            "priceExclusive": number(self.price_exclusive),
            "priceNetto": number(self.price_netto),
            "priceBrutto": number(self.price_brutto),
            "quantity": number(self.quantity),
            "discountTypeId": self.discount_type_id,
            "discountRate": number(self.discount_rate),
            "discountSum": number(self.discount_sum),
            "taxRate": self.tax_rate.map(number),
            "taxIncluded": if self.tax_included { "Y" } else { "N" },
            "taxName": self.tax_name.clone().unwrap_or_else(|| {
                if taxed {
                    format!("VAT {}", self.tax_rate.unwrap_or(0.0))
                } else {
                    "No VAT".to_string()
                }
            }),
            "customized": "Y",
            "measureCode": self.measure_code,
            "measureName": self.measure_name,
            "sort": self.sort,
            "xmlId": "",
            "type": 1,
            "storeId": null,
        })
    }
}

/// Keys a product row shows in `crm.item.productrow.list` (charged per row).
pub(crate) const ITEM_ROW_FIELDS: usize = 24;

/// Every product row of the portal, by owner.
#[derive(Default)]
pub(crate) struct ProductRows {
    by_owner: HashMap<(Kind, u64), Vec<ProductRow>>,
    next_id: u64,
}

impl ProductRows {
    pub fn of(&self, owner: Kind, owner_id: u64) -> &[ProductRow] {
        self.by_owner
            .get(&(owner, owner_id))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every row of a type's records, by owner, then as the owner lists them.
    pub fn all_of(&self, owner: Kind) -> Vec<&ProductRow> {
        let mut rows: Vec<&ProductRow> = self
            .by_owner
            .iter()
            .filter(|((kind, _), _)| *kind == owner)
            .flat_map(|(_, rows)| rows.iter())
            .collect();
        rows.sort_by_key(|r| (r.owner_id, r.sort, r.id));
        rows
    }

    pub fn remove(&mut self, owner: Kind, owner_id: u64) {
        self.by_owner.remove(&(owner, owner_id));
    }

    /// Replaces the owner's rows with `rows` (all parsed before anything changes). A row
    /// may name the `id` of one of the owner's rows to keep that ID (`crm.item.productrow.set`).
    pub fn set(
        &mut self,
        owner: Kind,
        owner_id: u64,
        rows: &[&Value],
        keep_ids: bool,
    ) -> Result<&[ProductRow], ApiError> {
        let current: Vec<u64> = self.of(owner, owner_id).iter().map(|r| r.id).collect();
        let mut parsed = Vec::with_capacity(rows.len());
        let mut next = self.next_id;
        for (index, row) in rows.iter().enumerate() {
            let Some(row) = row.as_object() else {
                return Err(ApiError::crm(format!(
                    "Product row #{} must be an object of fields",
                    index + 1
                )));
            };
            let kept = keep_ids
                .then(|| RowInput(row).get("ID").and_then(parse_int))
                .flatten()
                .and_then(|id| u64::try_from(id).ok())
                .filter(|id| current.contains(id));
            let id = kept.unwrap_or_else(|| {
                next += 1;
                next
            });
            parsed.push(ProductRow::parse(owner, owner_id, id, index, row)?);
        }
        self.next_id = next;
        let list = self.by_owner.entry((owner, owner_id)).or_default();
        *list = parsed;
        Ok(list.as_slice())
    }

    /// Seeds rows (generated input) for a new record.
    pub fn seed(&mut self, owner: Kind, owner_id: u64, rows: &[Value]) {
        let refs: Vec<&Value> = rows.iter().collect();
        if refs.is_empty() {
            self.remove(owner, owner_id);
            return;
        }
        // Generated rows are always valid; a refusal would leave the record without rows.
        let _ = self.set(owner, owner_id, &refs, false);
    }
}

/// A `crm.item.productrow.list` request: the owner named by `=ownerType` and `=ownerId`,
/// optional conditions on `id` and `productId`, order by `id` or `sort`.
pub(crate) struct RowQuery {
    pub owner_type: String,
    pub owner_id: u64,
    conditions: Vec<(RowKey, Cmp, Vec<i64>)>,
    order: Vec<(RowKey, bool)>,
    pub start: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RowKey {
    Id,
    ProductId,
    Sort,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "INVALID_ARG_VALUE", message)
}

impl RowQuery {
    /// Parses the documented filter: `=ownerType` and `=ownerId` are required (with the
    /// `=` prefix, one owner); `id` and `productId` take `=`, `!=`, `>`, `>=`, `<`, `<=`
    /// and `@` (only `@id` takes an array; an array elsewhere is refused); conditions on
    /// other fields are ignored silently, as the docs say.
    pub fn parse(params: &Map<String, Value>) -> Result<RowQuery, ApiError> {
        let missing = || {
            ApiError::new(
                400,
                "REQUIRED_ARG_MISSING",
                "Required filter keys =ownerType and =ownerId are missing",
            )
        };
        let filter = match param(params, "filter") {
            Some(Value::Object(map)) => map,
            _ => return Err(missing()),
        };
        let owner_type = filter
            .get("=ownerType")
            .and_then(scalar_text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(missing)?;
        let owner_id = match filter.get("=ownerId") {
            None => return Err(missing()),
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(invalid(
                    "Invalid filter: '=ownerId' takes one owner ID, not an array",
                ));
            }
            Some(v) => parse_int(v)
                .and_then(|id| u64::try_from(id).ok())
                .ok_or_else(|| invalid("Invalid filter: field '=ownerId' has invalid value"))?,
        };
        let mut conditions = Vec::new();
        for (key, value) in filter {
            if key == "=ownerType" || key == "=ownerId" {
                continue;
            }
            let (cmp, name) = [
                ("!=", Cmp::Ne),
                (">=", Cmp::Ge),
                ("<=", Cmp::Le),
                ("@", Cmp::In),
                (">", Cmp::Gt),
                ("<", Cmp::Lt),
                ("=", Cmp::Eq),
            ]
            .iter()
            .find_map(|(prefix, cmp)| key.strip_prefix(prefix).map(|name| (*cmp, name)))
            .unwrap_or((Cmp::Eq, key.as_str()));
            let field = match name {
                "id" => RowKey::Id,
                "productId" => RowKey::ProductId,
                _ => continue, // no index on other fields: ignored
            };
            let values: Vec<i64> = match (cmp, field, value) {
                (Cmp::In, RowKey::Id, Value::Array(_) | Value::Object(_)) => {
                    let mut ids = Vec::new();
                    for item in list_items(value) {
                        ids.push(parse_int(item).ok_or_else(|| {
                            invalid(format!("Invalid filter: field '{key}' has invalid value"))
                        })?);
                    }
                    ids
                }
                (_, _, Value::Array(_) | Value::Object(_)) => {
                    return Err(invalid(format!(
                        "Invalid filter: field '{key}' takes one value, not an array"
                    )));
                }
                (_, _, v) if is_empty_input(v) => continue,
                (_, _, v) => vec![parse_int(v).ok_or_else(|| {
                    invalid(format!("Invalid filter: field '{key}' has invalid value"))
                })?],
            };
            conditions.push((field, cmp, values));
        }
        let mut order = Vec::new();
        if let Some(Value::Object(map)) = param(params, "order") {
            for (key, direction) in map {
                let field = match key.as_str() {
                    "id" | "ID" => RowKey::Id,
                    "sort" | "SORT" => RowKey::Sort,
                    _ => continue, // only id and sort sort; others are ignored
                };
                let descending =
                    scalar_text(direction).is_some_and(|d| d.trim().eq_ignore_ascii_case("desc"));
                order.push((field, descending));
            }
        }
        if order.is_empty() {
            order.push((RowKey::Sort, false));
        }
        let start = param(params, "start").and_then(parse_int).unwrap_or(0);
        Ok(RowQuery {
            owner_type,
            owner_id,
            conditions,
            order,
            start: usize::try_from(start).ok().map(|s| s / PAGE * PAGE),
        })
    }

    /// The page of the owner's rows: (rows, total, next); no `total` without a count.
    pub fn page<'a>(
        &self,
        rows: &'a [ProductRow],
    ) -> (Vec<&'a ProductRow>, Option<usize>, Option<usize>) {
        let key = |row: &ProductRow, k: RowKey| match k {
            RowKey::Id => row.id as i64,
            RowKey::ProductId => row.product_id,
            RowKey::Sort => row.sort,
        };
        let mut matching: Vec<&ProductRow> = rows
            .iter()
            .filter(|row| {
                self.conditions.iter().all(|(k, cmp, values)| {
                    let v = key(row, *k);
                    match cmp {
                        Cmp::Eq => v == values[0],
                        Cmp::Ne => v != values[0],
                        Cmp::Gt => v > values[0],
                        Cmp::Ge => v >= values[0],
                        Cmp::Lt => v < values[0],
                        Cmp::Le => v <= values[0],
                        Cmp::In => values.contains(&v),
                    }
                })
            })
            .collect();
        matching.sort_by(|a, b| {
            for &(k, descending) in &self.order {
                let ordering = key(a, k).cmp(&key(b, k));
                let ordering = if descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering.is_ne() {
                    return ordering;
                }
            }
            a.id.cmp(&b.id)
        });
        let total = matching.len();
        let offset = self.start.unwrap_or(0).min(total);
        let page: Vec<&ProductRow> = matching.into_iter().skip(offset).take(PAGE).collect();
        let next = self.start.map(|s| s + PAGE).filter(|&n| n < total);
        (page, self.start.map(|_| total), next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Entity;

    fn deal() -> Kind {
        Entity::Deal.into()
    }

    #[test]
    fn rows_keep_the_classic_amounts_and_render_both_ways() {
        let mut store = ProductRows::default();
        let input = json!([{"PRODUCT_ID":456,"PRICE":1000,"QUANTITY":10,"DISCOUNT_TYPE_ID":1,"DISCOUNT_SUM":100,"TAX_RATE":13,"MEASURE_CODE":796,"MEASURE_NAME":"pcs","SORT":10}]);
        let rows = list_items(&input);
        let saved = store.set(deal(), 5, &rows, false).unwrap().to_vec();
        let classic = saved[0].render_classic();
        assert_eq!(classic["OWNER_TYPE"], "D");
        assert_eq!(classic["PRICE"], json!(1000.0));
        assert_eq!(classic["PRICE_ACCOUNT"], "1000.00");
        let item = saved[0].render_item();
        assert_eq!(item["ownerId"], json!(5));
        assert_eq!(item["price"], json!(1000));
        assert_eq!(item["taxRate"], json!(13));
        assert_eq!(item["taxName"], "VAT 13");
        // camelCase input reads the same.
        let camel =
            json!([{"productName": "Kit", "price": 99.5, "discountTypeId": 2, "discountRate": 10}]);
        let rows = list_items(&camel);
        let saved = store
            .set(Kind::Smart(1038), 1, &rows, true)
            .unwrap()
            .to_vec();
        assert_eq!(saved[0].render_item()["ownerType"], "T40e");
        assert_eq!(saved[0].render_item()["taxRate"], Value::Null);
        assert_eq!(saved[0].render_item()["taxName"], "No VAT");
        assert_eq!(saved[0].product_name, "Kit");
        assert_eq!(saved[0].discount_rate, 10.0);
    }

    #[test]
    fn set_keeps_named_ids_of_the_owner_only() {
        let mut store = ProductRows::default();
        let first = json!([{"PRICE": 1}, {"PRICE": 2}]);
        let ids: Vec<u64> = store
            .set(deal(), 1, &list_items(&first), false)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let elsewhere = json!([{"PRICE": 3}]);
        let other = store
            .set(deal(), 2, &list_items(&elsewhere), false)
            .unwrap()[0]
            .id;
        let again = json!([{"id": ids[1], "price": 5}, {"id": other, "price": 6}]);
        let saved = store.set(deal(), 1, &list_items(&again), true).unwrap();
        assert_eq!(saved[0].id, ids[1]);
        assert!(saved[1].id > other, "another owner's id creates a new row");
        assert_eq!(store.of(deal(), 1).len(), 2);
    }

    #[test]
    fn the_list_filter_is_the_documented_one() {
        let parse = |filter: Value| RowQuery::parse(json!({"filter": filter}).as_object().unwrap());
        assert!(parse(json!({"=ownerType": "D", "=ownerId": 5, "@id": [1, 2]})).is_ok());
        let missing = parse(json!({"=ownerType": "D", "@ownerId": [5, 6]}))
            .err()
            .unwrap();
        assert_eq!(missing.code, "REQUIRED_ARG_MISSING");
        let array = parse(json!({"=ownerType": "D", "=ownerId": [5, 6]}))
            .err()
            .unwrap();
        assert_eq!(array.code, "INVALID_ARG_VALUE");
        let array = parse(json!({"=ownerType": "D", "=ownerId": 5, ">id": [1]}))
            .err()
            .unwrap();
        assert_eq!(array.code, "INVALID_ARG_VALUE");
        // Other fields are ignored.
        let query = parse(json!({"=ownerType": "D", "=ownerId": 5, ">price": 10})).unwrap();
        assert!(query.conditions.is_empty());
    }
}
