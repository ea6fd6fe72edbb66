//! The reference tables of one portal, refreshed as a whole (mode `reference`): the
//! funnels of deals and of the mirrored smart processes (`crm.category.list`), every
//! list and stage of `crm.status.list`, the currencies (`crm.currency.list`) and the
//! users (`user.get`, page by page: it has no modification-time filter). Each table is
//! replaced in one transaction, so a reader sees the old list or the new one.

use std::time::Instant;

use b24_client::{Command, Row};
use b24_domain::entity::Entity;
use b24_domain::sync::{Mode, RunOutcome};
use b24_store::{ReferenceTable, Replaced};
use futures::TryStreamExt;
use serde_json::{Value, json};

use crate::engine::within;
use crate::{SyncError, SyncSummary, Syncer};

impl Syncer<'_> {
    /// Refreshes the reference tables; `smart` are the mirrored smart processes whose
    /// funnels are kept with the deals'. One summary per table (mode `reference`, the
    /// table's name as the entity).
    pub async fn refresh_reference(
        &self,
        smart: &[Entity],
        deadline: Option<Instant>,
    ) -> Result<Vec<SyncSummary>, SyncError> {
        let mut summaries = Vec::new();

        let started = self.started();
        let types: Vec<u32> = std::iter::once(Entity::Deal)
            .chain(smart.iter().copied())
            .map(Entity::type_id)
            .collect();
        let commands: Vec<Command> = types
            .iter()
            .map(|t| {
                Command::new(
                    format!("t{t}"),
                    "crm.category.list",
                    json!({"entityTypeId": t}),
                )
            })
            .collect();
        let answers = within(deadline, self.client.batch(commands, false))
            .await
            .ok_or(SyncError::OutOfTime("reading the funnels"))??;
        let mut categories = Summed::default();
        for (entity_type_id, answer) in types.iter().zip(answers) {
            let rows = match answer.outcome {
                Ok(output) => list_of(output.result.get("categories").cloned()),
                // A smart process without funnels says so; the deals' must be there.
                Err(error) if *entity_type_id != Entity::Deal.type_id() => {
                    tracing::warn!(portal = %self.portal, entity_type_id, %error, "no funnels read for this smart process");
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let table = ReferenceTable::Categories {
                entity_type_id: *entity_type_id,
            };
            categories.add(
                rows.len(),
                self.store
                    .replace_reference(self.portal, table, &rows)
                    .await?,
            );
        }
        summaries.push(self.summary("crm_category", started, categories));

        let started = self.started();
        let statuses: Vec<Row> = within(
            deadline,
            self.client
                .list_paged(
                    "crm.status.list",
                    json!({"order": {"SORT": "ASC"}})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                )
                .try_collect(),
        )
        .await
        .ok_or(SyncError::OutOfTime("reading the reference lists"))??;
        let replaced = self
            .store
            .replace_reference(self.portal, ReferenceTable::Statuses, &statuses)
            .await?;
        summaries.push(self.summary("crm_status", started, Summed::of(statuses.len(), replaced)));

        let started = self.started();
        let currencies = within(deadline, self.client.call("crm.currency.list", &json!({})))
            .await
            .ok_or(SyncError::OutOfTime("reading the currencies"))??;
        let currencies = list_of(Some(currencies.result));
        let replaced = self
            .store
            .replace_reference(self.portal, ReferenceTable::Currencies, &currencies)
            .await?;
        summaries.push(self.summary(
            "crm_currency",
            started,
            Summed::of(currencies.len(), replaced),
        ));

        let started = self.started();
        let users: Vec<Row> = within(
            deadline,
            self.client
                .list_paged("user.get", Default::default())
                .try_collect(),
        )
        .await
        .ok_or(SyncError::OutOfTime("reading the users"))??;
        let replaced = self
            .store
            .replace_reference(self.portal, ReferenceTable::Users, &users)
            .await?;
        summaries.push(self.summary("bitrix_user", started, Summed::of(users.len(), replaced)));
        Ok(summaries)
    }

    fn started(&self) -> (Instant, b24_client::ClientStats) {
        (Instant::now(), self.client.stats())
    }

    fn summary(
        &self,
        table: &str,
        (started, usage_before): (Instant, b24_client::ClientStats),
        summed: Summed,
    ) -> SyncSummary {
        let mut summary = SyncSummary {
            portal: self.portal.to_string(),
            entity: table.to_string(),
            mode: Mode::Reference.to_string(),
            rows_read: summed.read,
            rows_inserted: summed.replaced.written,
            rows_deleted: summed.replaced.removed,
            outcome: Some(RunOutcome::Completed),
            completed: true,
            ..SyncSummary::default()
        };
        summary.record_usage(&usage_before, &self.client.stats());
        summary.seconds = started.elapsed().as_secs_f64();
        summary
    }
}

/// What the replacements of one table did, added up.
#[derive(Default)]
struct Summed {
    read: u64,
    replaced: Replaced,
}

impl Summed {
    fn of(read: usize, replaced: Replaced) -> Summed {
        let mut summed = Summed::default();
        summed.add(read, replaced);
        summed
    }

    fn add(&mut self, read: usize, replaced: Replaced) {
        self.read += read as u64;
        self.replaced.written += replaced.written;
        self.replaced.removed += replaced.removed;
        self.replaced.invalid += replaced.invalid;
    }
}

/// The rows of a list answer (an array of objects; anything else is no rows).
fn list_of(value: Option<Value>) -> Vec<Row> {
    match value {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Object(row) => Some(row),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
