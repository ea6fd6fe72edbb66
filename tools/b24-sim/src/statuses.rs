//! Reference lists (`crm.status.list`): deal stages, lead statuses, sources and types
//! with their labels, so a client can map a value between portals by its label.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::params::param;
use crate::values::scalar_text;

/// One item of a reference list.
#[derive(Clone, Debug, PartialEq)]
struct StatusItem {
    id: u64,
    entity_id: String,
    status_id: String,
    name: String,
    sort: u32,
    system: bool,
    /// The pipeline of a stage list other than the general deal one (`DEAL_STAGE_7`,
    /// `DYNAMIC_1038_STAGE_12`).
    category_id: Option<i64>,
}

/// `POST /_sim/statuses`: adds an item, as a user does in the CRM settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `DEAL_STAGE`, `STATUS`, `SOURCE`, `DEAL_TYPE`, `CONTACT_TYPE`, `COMPANY_TYPE`...
    pub entity_id: String,
    /// The value records hold, e.g. `UC_K3J2QX`.
    pub status_id: String,
    pub name: String,
    #[serde(default = "default_sort")]
    pub sort: u32,
}

fn default_sort() -> u32 {
    500
}

/// The portal's reference lists.
pub(crate) struct Statuses {
    items: Vec<StatusItem>,
}

const DEFAULTS: &[(&str, &[(&str, &str)])] = &[
    (
        "DEAL_STAGE",
        &[
            ("NEW", "New"),
            ("PREPARATION", "Preparing documents"),
            ("PREPAYMENT_INVOICE", "Prepayment invoice"),
            ("EXECUTING", "In progress"),
            ("FINAL_INVOICE", "Final invoice"),
            ("WON", "Deal won"),
            ("LOSE", "Deal lost"),
        ],
    ),
    (
        "STATUS",
        &[
            ("NEW", "Unassigned"),
            ("IN_PROCESS", "In progress"),
            ("PROCESSED", "Processed"),
            ("CONVERTED", "Good lead"),
            ("JUNK", "Junk lead"),
        ],
    ),
    (
        "SOURCE",
        &[
            ("CALL", "Call"),
            ("EMAIL", "E-Mail"),
            ("WEB", "Website"),
            ("ADVERTISING", "Advertising"),
            ("PARTNER", "Existing client"),
            ("RECOMMENDATION", "By recommendation"),
            ("CALLBACK", "Callback"),
        ],
    ),
    (
        "DEAL_TYPE",
        &[
            ("SALE", "Sales"),
            ("COMPLEX", "Complex sale"),
            ("GOODS", "Merchandise sale"),
            ("SERVICES", "Service sale"),
        ],
    ),
    (
        "CONTACT_TYPE",
        &[
            ("CLIENT", "Clients"),
            ("SUPPLIER", "Suppliers"),
            ("PARTNER", "Partners"),
        ],
    ),
    (
        "COMPANY_TYPE",
        &[
            ("CUSTOMER", "Client"),
            ("SUPPLIER", "Supplier"),
            ("PARTNER", "Partner"),
        ],
    ),
];

impl Default for Statuses {
    fn default() -> Self {
        let mut items = Vec::new();
        for (entity_id, values) in DEFAULTS {
            for (i, (status_id, name)) in values.iter().enumerate() {
                items.push(StatusItem {
                    id: items.len() as u64 + 1,
                    entity_id: entity_id.to_string(),
                    status_id: status_id.to_string(),
                    name: name.to_string(),
                    sort: (i as u32 + 1) * 10,
                    system: true,
                    category_id: None,
                });
            }
        }
        Statuses { items }
    }
}

/// Whether a list holds stages (of leads, of a deal pipeline, of a smart-process pipeline).
fn is_stage_list(entity_id: &str) -> bool {
    entity_id == "STATUS"
        || entity_id.starts_with("DEAL_STAGE")
        || (entity_id.starts_with("DYNAMIC_") && entity_id.contains("_STAGE_"))
}

/// Stage semantics: `S` success, `F` failure, else in progress; a stage of another
/// pipeline (`C7:WON`, `DT1038_12:SUCCESS`) counts by the part after the colon.
fn semantics(entity_id: &str, status_id: &str) -> Option<&'static str> {
    let code = status_id.rsplit(':').next().unwrap_or(status_id);
    match (entity_id, code) {
        ("STATUS", "CONVERTED") => Some("S"),
        ("STATUS", "JUNK") => Some("F"),
        (deal, "WON") if deal.starts_with("DEAL_STAGE") => Some("S"),
        (deal, "LOSE" | "APOLOGY") if deal.starts_with("DEAL_STAGE") => Some("F"),
        (smart, "SUCCESS") if smart.starts_with("DYNAMIC_") => Some("S"),
        (smart, "FAIL") if smart.starts_with("DYNAMIC_") => Some("F"),
        _ => None,
    }
}

impl StatusItem {
    fn render(&self) -> Value {
        let stage = is_stage_list(&self.entity_id);
        let semantic = semantics(&self.entity_id, &self.status_id);
        let color = match semantic {
            Some("S") => "#7BD500",
            Some(_) => "#FF5752",
            None => "#39A8EF",
        };
        let mut row = json!({
            "ID": self.id.to_string(),
            "ENTITY_ID": self.entity_id,
            "STATUS_ID": self.status_id,
            "NAME": self.name,
            "NAME_INIT": if self.system { json!(self.name) } else { json!("") },
            "SORT": self.sort.to_string(),
            "SYSTEM": if self.system { "Y" } else { "N" },
            "CATEGORY_ID": self.category_id.map(|id| id.to_string()),
            "COLOR": if stage { json!(color) } else { Value::Null },
            "SEMANTICS": semantic,
        });
        if stage {
            let extra = match semantic {
                Some("S") => "success",
                Some(_) => "failure",
                None => "process",
            };
            row["EXTRA"] = json!({"SEMANTICS": extra, "COLOR": color});
        }
        row
    }
}

impl Statuses {
    /// `crm.status.list {order, filter}`: equality filters on any key, ordered by the
    /// given keys (default `SORT`, then `ID`).
    pub fn list(&self, params: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
        let invalid = || ApiError::new(400, "Invalid parameters.", "Incorrect parameters passed.");
        let filter = match param(params, "filter") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Array(items)) if items.is_empty() => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(invalid()),
        };
        let mut rows: Vec<Value> = self
            .items
            .iter()
            .map(StatusItem::render)
            .filter(|row| {
                filter.iter().all(|(key, wanted)| {
                    let key = key.trim_start_matches('=');
                    match (row.get(key), scalar_text(wanted)) {
                        (Some(value), Some(wanted)) => {
                            scalar_text(value).is_some_and(|v| v == wanted)
                        }
                        _ => false,
                    }
                })
            })
            .collect();
        let order: Vec<(String, bool)> = match param(params, "order") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let descending = scalar_text(v).is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                    (k.clone(), descending)
                })
                .collect(),
            _ => vec![("SORT".to_string(), false)],
        };
        let numeric = |row: &Value, key: &str| -> Option<i64> {
            row.get(key)
                .and_then(scalar_text)
                .and_then(|s| s.parse().ok())
        };
        rows.sort_by(|a, b| {
            for (key, descending) in &order {
                let ordering = match (numeric(a, key), numeric(b, key)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    _ => scalar_text(&a[key.as_str()]).cmp(&scalar_text(&b[key.as_str()])),
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
            numeric(a, "ID").cmp(&numeric(b, "ID"))
        });
        Ok(rows)
    }

    /// Adds the stage list of a new pipeline (`DEAL_STAGE_7`, `DYNAMIC_1038_STAGE_12`).
    pub fn add_stage_list(
        &mut self,
        entity_id: &str,
        category_id: i64,
        stages: &[(String, String)],
    ) {
        for (i, (status_id, name)) in stages.iter().enumerate() {
            let id = self.items.iter().map(|i| i.id).max().unwrap_or(0) + 1;
            self.items.push(StatusItem {
                id,
                entity_id: entity_id.to_string(),
                status_id: status_id.clone(),
                name: name.clone(),
                sort: (i as u32 + 1) * 10,
                system: true,
                category_id: Some(category_id),
            });
        }
    }

    /// Adds an item; its `STATUS_ID` must be new in its list.
    pub fn add(&mut self, request: &StatusRequest) -> Result<Value, String> {
        let entity_id = request.entity_id.trim().to_ascii_uppercase();
        let status_id = request.status_id.trim();
        if entity_id.is_empty() || status_id.is_empty() || request.name.trim().is_empty() {
            return Err("entity_id, status_id and name must not be empty".to_string());
        }
        if self
            .items
            .iter()
            .any(|i| i.entity_id == entity_id && i.status_id == status_id)
        {
            return Err(format!("{entity_id} already has {status_id}"));
        }
        let item = StatusItem {
            id: self.items.iter().map(|i| i.id).max().unwrap_or(0) + 1,
            entity_id,
            status_id: status_id.to_string(),
            name: request.name.trim().to_string(),
            sort: request.sort,
            system: false,
            category_id: None,
        };
        // A custom stage of another pipeline belongs to that pipeline.
        let item = StatusItem {
            category_id: is_stage_list(&item.entity_id)
                .then(|| item.entity_id.rsplit('_').next()?.parse().ok())
                .flatten(),
            ..item
        };
        let row = item.render();
        self.items.push(item);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_carry_the_documented_shape_and_semantics() {
        let statuses = Statuses::default();
        let params = json!({"filter": {"ENTITY_ID": "DEAL_STAGE"}});
        let rows = statuses.list(params.as_object().unwrap()).unwrap();
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[0]["STATUS_ID"], "NEW");
        assert_eq!(rows[0]["SORT"], "10");
        assert_eq!(rows[0]["EXTRA"]["SEMANTICS"], "process");
        let won = rows.iter().find(|r| r["STATUS_ID"] == "WON").unwrap();
        assert_eq!(
            (&won["SEMANTICS"], &won["EXTRA"]["SEMANTICS"]),
            (&json!("S"), &json!("success"))
        );
        let source = statuses
            .list(
                json!({"filter": {"ENTITY_ID": "SOURCE", "STATUS_ID": "WEB"}})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(source.len(), 1);
        assert!(source[0].get("EXTRA").is_none());
    }
}
