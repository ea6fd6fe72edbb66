//! Product rows of deals and smart processes, kept in step with their owners: whenever
//! the sync writes a chunk of owners (a full or incremental pass, the change worker's
//! lookups, back-sync's refresh), it first reads those owners' product rows, 50 owners
//! per request, then replaces them in `product_row`. Read before the owners are
//! written: a chunk whose product rows could not be read is not written either, so its
//! listing (or its message) comes back to it.
//!
//! `crm.item.productrow.list` lists one owner's rows per command (`=ownerType` and
//! `=ownerId` are required; only `@id` takes a list), 50 rows a page; an owner with more
//! gets further pages after its last row's `id`. The classic API's
//! `crm.deal.productrows.get` answers all of one deal's rows at once.

use std::collections::BTreeMap;
use std::time::Instant;

use b24_client::{B24Error, Command, Row};
use b24_domain::entity::Entity;
use serde_json::{Value, json};

use crate::engine::within;
use crate::{SyncError, Syncer};

/// Owners per request: one command each.
const OWNERS_PER_REQUEST: usize = 50;

/// The rows of one page of `crm.item.productrow.list`.
const PAGE: usize = 50;

/// The `ownerType` of an entity's product rows: `D` for deals, `T` and the type's ID
/// in hexadecimal for a smart process; `None` for entities without product rows here.
pub fn owner_type(entity: Entity) -> Option<String> {
    match entity {
        Entity::Deal => Some("D".into()),
        Entity::Smart(id) => Some(format!("T{id:x}")),
        _ => None,
    }
}

impl Syncer<'_> {
    /// Reads the product rows of `owners` of `entity` (see the module documentation),
    /// every owner's complete list, keyed by owner.
    pub(crate) async fn read_product_rows(
        &self,
        entity: Entity,
        owners: &[u64],
        deadline: Option<Instant>,
    ) -> Result<BTreeMap<u64, Vec<Row>>, SyncError> {
        let owner_type = owner_type(entity)
            .ok_or_else(|| SyncError::Config(format!("{entity} has no product rows")))?;
        let classic = entity == Entity::Deal && !self.client.entity_api(entity).is_items();
        let mut rows: BTreeMap<u64, Vec<Row>> = owners.iter().map(|o| (*o, Vec::new())).collect();
        // Owners with possibly more rows, and the last row seen.
        let mut pending: Vec<(u64, Option<u64>)> = owners.iter().map(|o| (*o, None)).collect();
        while !pending.is_empty() {
            let round: Vec<(u64, Option<u64>)> = pending
                .drain(..pending.len().min(OWNERS_PER_REQUEST))
                .collect();
            let commands: Vec<Command> = round
                .iter()
                .enumerate()
                .map(|(i, (owner, after))| {
                    if classic {
                        Command::new(
                            format!("p{i}"),
                            "crm.deal.productrows.get",
                            json!({"id": owner}),
                        )
                    } else {
                        let mut filter = json!({"=ownerType": owner_type, "=ownerId": owner});
                        if let Some(after) = after {
                            filter[">id"] = json!(after);
                        }
                        Command::new(
                            format!("p{i}"),
                            "crm.item.productrow.list",
                            json!({"filter": filter, "order": {"id": "asc"}, "start": -1}),
                        )
                    }
                })
                .collect();
            let results = within(deadline, self.client.batch(commands, false))
                .await
                .ok_or(SyncError::OutOfTime("reading product rows"))??;
            for ((owner, _), result) in round.into_iter().zip(results) {
                let page = product_rows_of(result.outcome?.result, classic)?;
                let full_page = !classic && page.len() >= PAGE;
                let last = page
                    .last()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_u64);
                rows.entry(owner).or_default().extend(page);
                if let (true, Some(last)) = (full_page, last) {
                    pending.push((owner, Some(last)));
                }
            }
        }
        Ok(rows)
    }

    /// Writes the product rows [`Syncer::read_product_rows`] read, every owner's list
    /// replacing what the mirror had.
    pub(crate) async fn write_product_rows(
        &self,
        entity: Entity,
        rows: BTreeMap<u64, Vec<Row>>,
    ) -> Result<u64, SyncError> {
        let Some(owner_type) = owner_type(entity) else {
            return Ok(0);
        };
        let owners: Vec<u64> = rows.keys().copied().collect();
        let all: Vec<Row> = rows.into_values().flatten().collect();
        let replaced = self
            .store
            .replace_product_rows(self.portal, &owner_type, &owners, &all)
            .await?;
        Ok(replaced.written + replaced.removed)
    }
}

/// One command's product rows: `result.productRows` of `crm.item.productrow.list`, or
/// the list `crm.deal.productrows.get` answers.
fn product_rows_of(result: Value, classic: bool) -> Result<Vec<Row>, SyncError> {
    let list = match (classic, result) {
        (true, Value::Array(rows)) => rows,
        (false, Value::Object(mut result)) => match result.remove("productRows") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(bad(
                    "crm.item.productrow.list answered no result.productRows list",
                ));
            }
        },
        _ => return Err(bad("a product row answer is not a list")),
    };
    list.into_iter()
        .map(|row| match row {
            Value::Object(row) => Ok(row),
            _ => Err(bad("a product row is not an object")),
        })
        .collect()
}

fn bad(detail: &str) -> SyncError {
    SyncError::Portal(B24Error::UnexpectedResponse {
        method: "crm.item.productrow.list".into(),
        detail: detail.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_types_follow_the_docs() {
        assert_eq!(owner_type(Entity::Deal).as_deref(), Some("D"));
        assert_eq!(owner_type(Entity::Smart(1038)).as_deref(), Some("T40e"));
        assert_eq!(owner_type(Entity::Contact), None);
    }

    #[test]
    fn answers_of_both_apis_are_read() {
        let rows = product_rows_of(json!({"productRows": [{"id": 1}]}), false).unwrap();
        assert_eq!(rows.len(), 1);
        let rows = product_rows_of(json!([{"ID": "1"}, {"ID": "2"}]), true).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(product_rows_of(json!([{"ID": "1"}]), false).is_err());
        assert!(product_rows_of(json!({"productRows": 5}), false).is_err());
    }
}
