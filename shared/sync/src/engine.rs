//! One sync run of one portal entity: reads Bitrix24 through the client, writes the
//! mirror through the store. The decisions (cursor, ID diff) are pure functions in
//! `b24_domain::sync`; this file only sequences IO.

use std::time::{Duration, Instant};

use b24_client::{B24Error, Client, Command, CommandResult, ListQuery, Row};
use b24_domain::entity::Entity;
use b24_domain::schema::{self, FieldMeta};
use b24_domain::sync::{
    Mode, diff_sorted, diff_sorted_ids, incremental_since, later_time, parse_portal_time,
};
use b24_store::{RunStats, Store, SyncState, TableLayout};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::SyncError;

/// Rows written per store round trip. Small enough that the rows in flight (this chunk
/// plus the client's current batch of 2,500) stay within a 128 MB Lambda; large enough
/// for a few statements per thousand rows.
pub const CHUNK_ROWS: usize = 500;

/// How a run is bounded and how far back an incremental pass looks.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Re-read this much before the cursor: the portal's application servers do not
    /// share one perfectly monotonic clock, and a re-read row that did not change is
    /// skipped by the store at no write cost.
    pub overlap: chrono::Duration,
    /// Stop a full sync or reconcile after the chunk that ends past this instant,
    /// leaving a checkpoint to continue from.
    pub stop_after: Option<Instant>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            overlap: chrono::Duration::minutes(5),
            stop_after: None,
        }
    }
}

impl SyncOptions {
    /// Options for a run that must end before `deadline`, keeping `margin` for the last
    /// chunk, the state write and the response, but never more than a quarter of the
    /// time left, so a function with a short timeout still gets work done.
    pub fn until(deadline: Instant, margin: Duration) -> Self {
        let margin = margin.min(deadline.saturating_duration_since(Instant::now()) / 4);
        SyncOptions {
            stop_after: Some(deadline.checked_sub(margin).unwrap_or_else(Instant::now)),
            ..Self::default()
        }
    }

    fn out_of_time(&self) -> bool {
        self.stop_after.is_some_and(|t| Instant::now() >= t)
    }
}

/// What one run did; printed by the CLI and returned by the function.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SyncSummary {
    pub portal: String,
    pub entity: String,
    pub mode: String,
    pub rows_read: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_unchanged: u64,
    pub rows_deleted: u64,
    pub http_requests: u64,
    /// False when a full sync or reconcile stopped at its time box; the next `full` or
    /// `resume` run continues from `checkpoint`.
    pub completed: bool,
    pub checkpoint: Option<u64>,
    pub cursor: Option<String>,
    pub skipped_fields: Vec<String>,
    pub seconds: f64,
}

/// How the mirror compares with the portal, row by row (ID and `DATE_MODIFY`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub portal: String,
    pub entity: String,
    pub portal_rows: u64,
    pub mirror_rows: u64,
    pub missing_in_mirror: u64,
    pub gone_from_portal: u64,
    pub different_version: u64,
    /// Up to ten IDs that differ, for a closer look.
    pub examples: Vec<u64>,
    pub in_sync: bool,
    pub http_requests: u64,
}

impl CheckReport {
    /// Adds one ID window: `(id, DATE_MODIFY in microseconds)` from each side.
    fn add(&mut self, listed: &[(u64, Option<i64>)], mirror: &[(u64, Option<i64>)]) {
        let diff = diff_sorted(listed, mirror);
        self.portal_rows += listed.len() as u64;
        self.mirror_rows += mirror.len() as u64;
        self.missing_in_mirror += diff.missing_in_mirror.len() as u64;
        self.gone_from_portal += diff.gone_from_portal.len() as u64;
        self.different_version += diff.different.len() as u64;
        let room = 10usize.saturating_sub(self.examples.len());
        self.examples.extend(
            diff.missing_in_mirror
                .iter()
                .chain(&diff.gone_from_portal)
                .chain(&diff.different)
                .take(room),
        );
    }
}

/// Syncs the entities of one portal into the mirror.
pub struct Syncer<'a> {
    pub client: &'a Client,
    pub store: &'a Store,
    pub portal: &'a str,
}

impl Syncer<'_> {
    /// Runs `mode` for `entity`, recording the run (and its error, if any) in the store.
    pub async fn run(
        &self,
        entity: Entity,
        mode: Mode,
        options: &SyncOptions,
    ) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        let requests_before = self.client.stats().http_requests;
        let run_id = self
            .store
            .start_run(self.portal, entity, mode.as_str())
            .await?;
        let mut summary = SyncSummary {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            mode: mode.to_string(),
            ..SyncSummary::default()
        };
        let outcome = self.run_mode(entity, mode, options, &mut summary).await;
        summary.http_requests = self.client.stats().http_requests - requests_before;
        summary.seconds = started.elapsed().as_secs_f64();
        let stats = RunStats {
            rows_read: summary.rows_read,
            rows_written: summary.rows_inserted + summary.rows_updated,
            rows_deleted: summary.rows_deleted,
            http_requests: summary.http_requests,
            error: outcome.as_ref().err().map(ToString::to_string),
        };
        self.store.finish_run(run_id, &stats).await?;
        outcome.map(|()| summary)
    }

    async fn run_mode(
        &self,
        entity: Entity,
        mode: Mode,
        options: &SyncOptions,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let mut state = self.store.load_state(self.portal, entity).await?;
        if mode == Mode::Resume && state.full_checkpoint.is_none() {
            summary.completed = true;
            summary.cursor = state.cursor;
            return Ok(());
        }
        let prepared = self.prepare(entity, summary).await?;
        match mode {
            Mode::Incremental if state.cursor.is_some() => {
                self.incremental(entity, &prepared, options, &mut state, summary)
                    .await?
            }
            Mode::Reconcile => self.reconcile(entity, &prepared, summary).await?,
            // The first incremental pass has no cursor: it is a full sync.
            Mode::Incremental | Mode::Full | Mode::Resume => {
                self.full(entity, &prepared, options, &mut state, summary)
                    .await?
            }
        }
        summary.cursor = state.cursor;
        summary.checkpoint = state.full_checkpoint;
        Ok(())
    }

    /// One request for the entity's field metadata and its newest modification time;
    /// brings the table up to date with the fields.
    async fn prepare(
        &self,
        entity: Entity,
        summary: &mut SyncSummary,
    ) -> Result<Prepared, SyncError> {
        // The newest DATE_MODIFY is read from the data itself, so the cursor lives on the
        // portal's clock and in its time zone. One row, no COUNT.
        let newest = json!({
            "order": {"DATE_MODIFY": "DESC", "ID": "DESC"},
            "select": ["ID", "DATE_MODIFY"],
            "start": -1,
        });
        let commands = vec![
            Command::new("fields", entity.method("fields"), json!({})),
            Command::new("newest", entity.method("list"), newest),
        ];
        let [fields, newest]: [CommandResult; 2] = self
            .client
            .batch(commands, true)
            .await?
            .try_into()
            .map_err(|results: Vec<CommandResult>| {
                SyncError::BadAnswer(format!(
                    "the batch answered {} results for 2 commands",
                    results.len()
                ))
            })?;
        let fields = schema::parse_fields(&fields.outcome?.result)?;
        let newest = newest
            .outcome?
            .result
            .as_array()
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("DATE_MODIFY"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let layout = self
            .store
            .ensure_table(self.portal, entity, &fields)
            .await?;
        summary.skipped_fields = layout.skipped_fields().to_vec();
        Ok(Prepared {
            layout,
            select: select_all(&fields),
            newest,
        })
    }

    async fn incremental(
        &self,
        entity: Entity,
        prepared: &Prepared,
        options: &SyncOptions,
        state: &mut SyncState,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let cursor = state.cursor.clone().unwrap_or_default();
        let since = incremental_since(&cursor, options.overlap)?;
        let mut filter = serde_json::Map::new();
        filter.insert(">=DATE_MODIFY".into(), Value::String(since));
        let query = ListQuery {
            method: entity.method("list"),
            select: prepared.select.clone(),
            filter,
            after_id: None,
        };
        let mut rows = self.client.list_stream(query).chunks(CHUNK_ROWS).boxed();
        while let Some(chunk) = rows.next().await {
            let chunk = chunk.into_iter().collect::<Result<Vec<Row>, B24Error>>()?;
            self.write_chunk(entity, &prepared.layout, &chunk, summary)
                .await?;
        }
        // Anything modified after the newest time read before this pass gets a later
        // DATE_MODIFY on the portal's own clock, so the next pass starting from it cannot
        // miss a row this pass went by.
        if let Some(newest) = &prepared.newest {
            state.cursor = later_time(state.cursor.take(), newest);
        }
        self.store.save_state(self.portal, entity, state).await?;
        summary.completed = true;
        Ok(())
    }

    /// A full listing in ID order, continuing from the checkpoint of an unfinished one.
    /// Each chunk covers an ID window, so rows the mirror holds in that window and the
    /// portal no longer lists are soft-deleted on the way.
    async fn full(
        &self,
        entity: Entity,
        prepared: &Prepared,
        options: &SyncOptions,
        state: &mut SyncState,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        if state.full_checkpoint.is_none() {
            if let Some(newest) = &prepared.newest {
                state.cursor = later_time(state.cursor.take(), newest);
            }
            state.full_checkpoint = Some(0);
            state.full_started_at = Some(chrono::Utc::now());
            self.store.save_state(self.portal, entity, state).await?;
        }
        let start_after = state.full_checkpoint.unwrap_or(0);
        let query = ListQuery {
            method: entity.method("list"),
            select: prepared.select.clone(),
            filter: serde_json::Map::new(),
            after_id: (start_after > 0).then_some(start_after),
        };
        let mut chunks = prefetched_chunks(self.client, query);
        let mut window_start = start_after;
        let mut next = chunks.recv().await;
        while let Some(chunk) = next {
            let chunk = chunk?;
            let window_end = row_id(chunk.last().expect("chunks are never empty"))?;
            self.write_chunk(entity, &prepared.layout, &chunk, summary)
                .await?;
            let listed = chunk.iter().map(row_id).collect::<Result<Vec<u64>, _>>()?;
            self.delete_gone(entity, window_start, Some(window_end), &listed, summary)
                .await?;
            window_start = window_end;
            state.full_checkpoint = Some(window_end);
            self.store.save_state(self.portal, entity, state).await?;
            // Looking one chunk ahead (already prefetched, as a rule) lets a slice that
            // reached the end complete instead of leaving an empty slice for later.
            next = chunks.recv().await;
            if next.is_some() && options.out_of_time() {
                return Ok(());
            }
        }
        self.delete_gone(entity, window_start, None, &[], summary)
            .await?;
        state.full_checkpoint = None;
        state.full_started_at = None;
        self.store.save_state(self.portal, entity, state).await?;
        summary.completed = true;
        Ok(())
    }

    /// Lists only IDs (2,500 per request) and compares them window by window with the
    /// mirror: rows the portal lost are soft-deleted, rows the mirror lacks are fetched.
    async fn reconcile(
        &self,
        entity: Entity,
        prepared: &Prepared,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let query = ListQuery {
            method: entity.method("list"),
            select: vec!["ID".into()],
            filter: serde_json::Map::new(),
            after_id: None,
        };
        let mut ids = self.client.list_stream(query).chunks(CHUNK_ROWS).boxed();
        let mut window_start = 0;
        while let Some(chunk) = ids.next().await {
            let listed = chunk
                .into_iter()
                .map(|row| row.map_err(SyncError::from).and_then(|r| row_id(&r)))
                .collect::<Result<Vec<u64>, SyncError>>()?;
            let window_end = *listed.last().expect("chunks are never empty");
            let missing = self
                .delete_gone(entity, window_start, Some(window_end), &listed, summary)
                .await?;
            if !missing.is_empty() {
                let rows = self
                    .client
                    .fetch_by_ids(&entity.method("list"), &missing, &prepared.select)
                    .await?;
                self.write_chunk(entity, &prepared.layout, &rows, summary)
                    .await?;
            }
            window_start = window_end;
        }
        self.delete_gone(entity, window_start, None, &[], summary)
            .await?;
        summary.completed = true;
        Ok(())
    }

    /// Compares the portal's IDs and modification times (2,500 per request) with the
    /// mirror's live rows, writing nothing.
    pub async fn check(&self, entity: Entity) -> Result<CheckReport, SyncError> {
        let requests_before = self.client.stats().http_requests;
        let mut report = CheckReport {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            ..CheckReport::default()
        };
        let query = ListQuery {
            method: entity.method("list"),
            select: vec!["ID".into(), "DATE_MODIFY".into()],
            filter: serde_json::Map::new(),
            after_id: None,
        };
        let mut rows = self.client.list_stream(query).chunks(CHUNK_ROWS).boxed();
        let mut window_start = 0;
        while let Some(chunk) = rows.next().await {
            let listed = chunk
                .into_iter()
                .map(|row| {
                    let row = row?;
                    let modified = row.get("DATE_MODIFY").and_then(Value::as_str);
                    let modified = modified
                        .map(|t| parse_portal_time("DATE_MODIFY", t))
                        .transpose()?;
                    Ok((row_id(&row)?, modified.map(|t| t.timestamp_micros())))
                })
                .collect::<Result<Vec<_>, SyncError>>()?;
            let window_end = listed.last().expect("chunks are never empty").0;
            let mirror = self
                .mirror_versions(entity, window_start, Some(window_end))
                .await?;
            report.add(&listed, &mirror);
            window_start = window_end;
        }
        let rest = self.mirror_versions(entity, window_start, None).await?;
        report.add(&[], &rest);
        report.in_sync =
            report.missing_in_mirror + report.gone_from_portal + report.different_version == 0;
        report.http_requests = self.client.stats().http_requests - requests_before;
        Ok(report)
    }

    async fn mirror_versions(
        &self,
        entity: Entity,
        after: u64,
        up_to: Option<u64>,
    ) -> Result<Vec<(u64, Option<i64>)>, SyncError> {
        let versions = self
            .store
            .live_versions(self.portal, entity, after, up_to)
            .await?;
        Ok(versions
            .into_iter()
            .map(|(id, t)| (id, t.map(|t| t.timestamp_micros())))
            .collect())
    }

    /// Soft-deletes the mirror's live rows in `(after, up_to]` that the portal did not
    /// list there and returns the listed IDs the mirror does not hold live.
    async fn delete_gone(
        &self,
        entity: Entity,
        after: u64,
        up_to: Option<u64>,
        listed: &[u64],
        summary: &mut SyncSummary,
    ) -> Result<Vec<u64>, SyncError> {
        let mirror = self
            .store
            .live_ids(self.portal, entity, after, up_to)
            .await?;
        let diff = diff_sorted_ids(listed, &mirror);
        if up_to.is_none() && after == 0 && !diff.gone_from_portal.is_empty() {
            // The portal listed nothing at all while the mirror holds rows: far more often
            // a webhook that lost its permissions than an emptied CRM.
            return Err(SyncError::Refused(format!(
                "the portal listed no {entity} rows while the mirror holds {} live ones: refusing to \
                 soft-delete them all (check the webhook's user and scopes)",
                diff.gone_from_portal.len()
            )));
        }
        if !diff.gone_from_portal.is_empty() {
            summary.rows_deleted += self
                .store
                .soft_delete(self.portal, entity, &diff.gone_from_portal)
                .await?;
        }
        Ok(diff.missing_in_mirror)
    }

    async fn write_chunk(
        &self,
        entity: Entity,
        layout: &TableLayout,
        rows: &[Row],
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        summary.rows_read += rows.len() as u64;
        let written = self.store.upsert(self.portal, entity, layout, rows).await?;
        summary.rows_inserted += written.inserted;
        summary.rows_updated += written.updated;
        summary.rows_unchanged += written.unchanged;
        Ok(())
    }
}

/// What every mode needs before it lists: the table layout, the `select` that fetches
/// every field, and the portal's newest `DATE_MODIFY` before the run.
struct Prepared {
    layout: TableLayout,
    select: Vec<String>,
    newest: Option<String>,
}

/// `*` and `UF_*` plus every multi-value field by name.
fn select_all(fields: &[FieldMeta]) -> Vec<String> {
    let mut select = vec!["*".to_string(), "UF_*".to_string()];
    select.extend(
        fields
            .iter()
            .filter(|f| f.is_multiple)
            .map(|f| f.code.clone()),
    );
    select
}

fn row_id(row: &Row) -> Result<u64, SyncError> {
    let id = row.get("ID");
    id.and_then(|v| match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    })
    .ok_or_else(|| SyncError::BadAnswer(format!("a listed row has no numeric ID (ID = {id:?})")))
}

/// Reads the listing on its own task, a chunk ahead, so the portal's next answer is
/// read and parsed while the database works on the current chunk. Memory stays bounded:
/// the client's current batch plus three chunks.
fn prefetched_chunks(
    client: &Client,
    query: ListQuery,
) -> mpsc::Receiver<Result<Vec<Row>, SyncError>> {
    let (tx, rx) = mpsc::channel(1);
    let mut chunks = client.list_stream(query).chunks(CHUNK_ROWS).boxed();
    tokio::spawn(async move {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .into_iter()
                .collect::<Result<Vec<Row>, B24Error>>()
                .map_err(SyncError::from);
            let failed = chunk.is_err();
            // A closed channel means the run stopped (time box or error): stop reading.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_at_most_a_quarter_of_the_time_left() {
        let now = Instant::now();
        let long = SyncOptions::until(now + Duration::from_secs(900), Duration::from_secs(60));
        let left = long.stop_after.unwrap() - now;
        assert!(
            left > Duration::from_secs(839) && left < Duration::from_secs(841),
            "{left:?}"
        );
        let short = SyncOptions::until(now + Duration::from_secs(20), Duration::from_secs(60));
        let left = short.stop_after.unwrap() - now;
        assert!(
            left > Duration::from_secs(14) && left < Duration::from_secs(16),
            "{left:?}"
        );
        assert!(!short.out_of_time());
    }
}
