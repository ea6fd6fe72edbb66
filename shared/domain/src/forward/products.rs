//! Product rows for the target deal (`copy_products`): the rows of
//! `crm.deal.productrows.get` on the source, as `crm.deal.productrows.set` takes them
//! on the target.
//!
//! Kept: the fields `crm.deal.productrows.set` documents except `PRODUCT_ID`:
//! `PRODUCT_NAME`, the prices, `QUANTITY`, the discount, the tax, the measure and
//! `SORT`. Dropped: the row's `ID`, `OWNER_ID`, `OWNER_TYPE` (they belong to the source
//! deal), and `PRODUCT_ID`, a catalog ID of the source portal: on the target the row
//! is a free-text row (`PRODUCT_ID` 0) named like the source row. A row without its
//! own `PRODUCT_NAME` takes `ORIGINAL_PRODUCT_NAME` (the catalog's name).

use serde_json::{Map, Value};

/// The fields copied, as `crm.deal.productrows.set` documents them.
pub const COPIED_ROW_FIELDS: [&str; 14] = [
    "PRODUCT_NAME",
    "PRICE",
    "PRICE_EXCLUSIVE",
    "PRICE_NETTO",
    "PRICE_BRUTTO",
    "QUANTITY",
    "DISCOUNT_TYPE_ID",
    "DISCOUNT_RATE",
    "DISCOUNT_SUM",
    "TAX_RATE",
    "TAX_INCLUDED",
    "MEASURE_CODE",
    "MEASURE_NAME",
    "SORT",
];

/// Why the source rows cannot be copied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("crm.deal.productrows.get: row {index} is not an object")]
pub struct ProductRowError {
    pub index: usize,
}

/// The `rows` of `crm.deal.productrows.set` for the target, in the source's order.
pub fn rows_for_target(source_rows: &[Value]) -> Result<Vec<Value>, ProductRowError> {
    source_rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let row = row.as_object().ok_or(ProductRowError { index })?;
            let mut kept: Map<String, Value> = COPIED_ROW_FIELDS
                .iter()
                .filter_map(|&code| {
                    let value = row.get(code).filter(|v| !is_empty(v))?;
                    Some((code.to_string(), value.clone()))
                })
                .collect();
            if !kept.contains_key("PRODUCT_NAME")
                && let Some(name) = row.get("ORIGINAL_PRODUCT_NAME").filter(|v| !is_empty(v))
            {
                kept.insert("PRODUCT_NAME".into(), name.clone());
            }
            Ok(Value::Object(kept))
        })
        .collect()
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_keep_the_documented_fields_and_lose_ids_owner_and_catalog_product() {
        let source = [json!({
            "ID": "41", "OWNER_ID": "123", "OWNER_TYPE": "D",
            "PRODUCT_ID": "456", "PRODUCT_NAME": "Widget", "ORIGINAL_PRODUCT_NAME": "Widget (catalog)",
            "PRODUCT_DESCRIPTION": "blue", "PRICE": 900.0, "PRICE_EXCLUSIVE": 900.0,
            "PRICE_NETTO": 1000.0, "PRICE_BRUTTO": 1130.0, "PRICE_ACCOUNT": "900.00",
            "QUANTITY": 10, "DISCOUNT_TYPE_ID": 1, "DISCOUNT_RATE": 10, "DISCOUNT_SUM": 100,
            "TAX_RATE": 13, "TAX_INCLUDED": "N", "CUSTOMIZED": "Y",
            "MEASURE_CODE": 796, "MEASURE_NAME": "pcs", "SORT": 10,
            "XML_ID": "x", "TYPE": 1, "STORE_ID": null, "RESERVE_ID": null,
        })];
        assert_eq!(
            rows_for_target(&source).unwrap(),
            vec![json!({
                "PRODUCT_NAME": "Widget", "PRICE": 900.0, "PRICE_EXCLUSIVE": 900.0,
                "PRICE_NETTO": 1000.0, "PRICE_BRUTTO": 1130.0, "QUANTITY": 10,
                "DISCOUNT_TYPE_ID": 1, "DISCOUNT_RATE": 10, "DISCOUNT_SUM": 100,
                "TAX_RATE": 13, "TAX_INCLUDED": "N", "MEASURE_CODE": 796,
                "MEASURE_NAME": "pcs", "SORT": 10,
            })]
        );
    }

    #[test]
    fn a_catalog_row_without_its_own_name_takes_the_catalog_name() {
        let source = [
            json!({"ID": "1", "PRODUCT_ID": "456", "PRODUCT_NAME": null, "ORIGINAL_PRODUCT_NAME": "Widget", "PRICE": 5}),
            json!({"ID": "2", "PRODUCT_ID": "0", "PRODUCT_NAME": "", "PRICE": 7}),
        ];
        assert_eq!(
            rows_for_target(&source).unwrap(),
            vec![
                json!({"PRODUCT_NAME": "Widget", "PRICE": 5}),
                json!({"PRICE": 7})
            ]
        );
    }

    #[test]
    fn no_rows_stay_no_rows_and_a_non_object_row_is_named() {
        assert_eq!(rows_for_target(&[]).unwrap(), Vec::<Value>::new());
        let error = rows_for_target(&[json!({"PRICE": 1}), json!("x")]).unwrap_err();
        assert_eq!(error, ProductRowError { index: 1 });
        assert_eq!(
            error.to_string(),
            "crm.deal.productrows.get: row 1 is not an object"
        );
    }
}
