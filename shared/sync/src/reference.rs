//! The reference tables of one portal, refreshed as a whole (mode `reference`): the
//! funnels of deals and of the mirrored smart processes (`crm.category.list`), every
//! list and stage of `crm.status.list`, the currencies (`crm.currency.list`) and the
//! users (`user.get`, page by page: it has no modification-time filter). Each table is
//! replaced in one transaction, so a reader sees the old list or the new one. With the
//! portal's `stage_history` on, the stage history of leads, deals and the mirrored smart
//! processes is appended too: only the entries after the newest one stored (the
//! history is append-only), read by the same ID window as the mirror's listings.

use std::time::Instant;

use b24_client::{Command, ListQuery, ListShape, Row};
use b24_domain::entity::Entity;
use b24_domain::sync::{Mode, RunOutcome};
use b24_store::{ReferenceTable, Replaced};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::engine::within;
use crate::{CHUNK_ROWS, SyncError, SyncSummary, Syncer};

/// The entities with a stage history on a portal.
pub(crate) fn has_stage_history(entity: Entity) -> bool {
    matches!(entity, Entity::Lead | Entity::Deal | Entity::Smart(_))
}

impl Syncer<'_> {
    /// Refreshes the reference tables; `smart` are the mirrored smart processes whose
    /// funnels are kept with the deals', `history` the entities whose stage history is
    /// appended. One summary per table (mode `reference`, the table's name as the
    /// entity; `stage_history_<entity>` for each history).
    pub async fn refresh_reference(
        &self,
        smart: &[Entity],
        history: &[Entity],
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

        for &entity in history.iter().filter(|e| has_stage_history(**e)) {
            summaries.push(self.append_stage_history(entity, deadline).await?);
        }
        Ok(summaries)
    }

    /// Appends `entity`'s stage-history entries after the newest one stored, chunk by
    /// chunk, until the listing ends or the deadline comes (then the summary says
    /// `stopped`: the next refresh continues after what was written).
    async fn append_stage_history(
        &self,
        entity: Entity,
        deadline: Option<Instant>,
    ) -> Result<SyncSummary, SyncError> {
        let started = self.started();
        let entity_type_id = entity.type_id();
        let query = ListQuery {
            method: "crm.stagehistory.list".into(),
            shape: ListShape::StageHistory { entity_type_id },
            after_id: self
                .store
                .last_stage_history_id(self.portal, entity_type_id)
                .await?,
            ..ListQuery::default()
        };
        let mut chunks = self.client.list_stream(query).chunks(CHUNK_ROWS).boxed();
        let mut summed = Summed::default();
        let mut completed = true;
        loop {
            let Some(next) = within(deadline, chunks.next()).await else {
                completed = false;
                break;
            };
            let Some(chunk) = next else { break };
            let rows: Vec<Row> = chunk.into_iter().collect::<Result<_, _>>()?;
            let appended = self
                .store
                .append_stage_history(self.portal, entity_type_id, &rows)
                .await?;
            summed.add(rows.len(), appended);
        }
        let mut summary = self.summary(&format!("stage_history_{entity}"), started, summed);
        if !completed {
            summary.completed = false;
            summary.outcome = Some(RunOutcome::Stopped);
        }
        Ok(summary)
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
