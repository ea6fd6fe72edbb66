//! Back-sync's application logic for one portal entity: claim the outbox's due rows,
//! fold them per record, read those records as the portal holds them now, decide each
//! (push, conflict, already applied, skipped), send the adds, updates and deletes in
//! batches, record every row's outcome, and refresh the mirror rows from the portal.
//!
//! Cost per claim of up to [`CLAIM_ROWS`] outbox rows: one `@ID` lookup request per
//! 2,500 records before, one per 2,500 after (the refresh), and one `batch` request per
//! 50 updates, deletes or adds; the field metadata once per entity and drain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_client::{B24Error, Command, CommandResult, Row};
use b24_config::{BackSyncConfig, ConflictPolicy};
use b24_domain::back_sync::{
    CREATE_ORIGINATOR, PushAction, WritableFields, already_applied, bitrix_fields, create_origin,
    fold, is_conflict, portal_offset,
};
use b24_domain::entity::Entity;
use b24_store::{OutboxClaim, OutboxLease, OutboxOutcome};
use chrono::FixedOffset;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Prepared, RECHECK_BATCH, within};
use crate::{SyncError, SyncSummary, Syncer};

/// The `mode` of the mirror refresh a drain does.
pub const PUSH_MODE: &str = "push";

/// Outbox rows per claim.
pub const CLAIM_ROWS: i64 = 1_000;

/// A claim's lease: longer than any invocation of the back-sync function (its timeout is
/// 5 minutes), so a lease only ends early when its drain is gone.
const LEASE: Duration = Duration::from_secs(20 * 60);

/// The first retry's delay; each further attempt doubles it, up to an hour.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// What one drain of one portal entity did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PushSummary {
    pub portal: String,
    pub entity: String,
    /// Outbox rows claimed, and the records they named.
    pub rows: u64,
    pub records: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Records the portal already held as edited (a retry after a lost answer).
    pub already_applied: u64,
    /// Records the portal changed after the editor saw them, kept as the portal has
    /// them (`portal-wins`), or pushed anyway (`database-wins`, counted in `updated`
    /// or `deleted` too).
    pub conflicts: u64,
    pub failed: u64,
    pub retried: u64,
    /// Deletes the configuration does not allow.
    pub skipped: u64,
    /// Rows inserted and deleted in PostgreSQL before they reached Bitrix24.
    pub cancelled: u64,
    /// Mirror rows written from the portal afterwards.
    pub refreshed: u64,
    pub http_requests: u64,
    pub throttled_503: u64,
    pub throttled_429: u64,
    pub operating_seconds: f64,
    /// False when the time ran out with rows still due.
    pub completed: bool,
    pub seconds: f64,
}

impl PushSummary {
    /// The drain's counts by the names the functions report them under.
    pub fn counts(&self) -> [(&'static str, u64); 11] {
        [
            ("OutboxRows", self.rows),
            ("Created", self.created),
            ("Updated", self.updated),
            ("Deleted", self.deleted),
            ("AlreadyApplied", self.already_applied),
            ("Conflicts", self.conflicts),
            ("PushFailed", self.failed),
            ("PushRetried", self.retried),
            ("BitrixRequests", self.http_requests),
            ("Throttled503", self.throttled_503),
            ("Throttled429", self.throttled_429),
        ]
    }

    /// The drain's durations in seconds: the portal's operating time it cost, and its own.
    pub fn durations(&self) -> [(&'static str, f64); 2] {
        [
            ("OperatingSeconds", self.operating_seconds),
            ("RunSeconds", self.seconds),
        ]
    }
}

/// One record's push on its way: the rows it settles and their most attempts.
struct Planned {
    entries: Vec<i64>,
    attempts: i32,
}

/// A write to an existing record.
#[derive(Clone, Copy)]
enum Write {
    Update(u64),
    Delete(u64),
}

impl Syncer<'_> {
    /// Drains `entity`'s due outbox rows of this portal to Bitrix24 until none is left
    /// or `deadline` comes (see the module documentation). A portal that cannot be
    /// reached stops the drain; its rows wait for their retry.
    pub async fn push(
        &self,
        entity: Entity,
        settings: &BackSyncConfig,
        deadline: Option<Instant>,
    ) -> Result<PushSummary, SyncError> {
        let started = Instant::now();
        let usage_before = self.client.stats();
        let mut summary = PushSummary {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            ..PushSummary::default()
        };
        let mut mirror = SyncSummary {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            mode: PUSH_MODE.to_string(),
            ..SyncSummary::default()
        };
        let prepared = self.prepare_fields(entity, deadline, &mut mirror).await?;
        let writable = WritableFields::new(&prepared.fields);
        let result = loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Ok(());
            }
            let claim = self
                .store
                .claim_outbox(self.portal, entity, CLAIM_ROWS, LEASE)
                .await?;
            if claim.entries.is_empty() {
                summary.completed = true;
                break Ok(());
            }
            let pushed = self
                .push_claim(
                    &prepared,
                    &writable,
                    settings,
                    claim,
                    deadline,
                    &mut summary,
                )
                .await;
            if let Err(error) = pushed {
                break Err(error);
            }
        };
        let after = self.client.stats();
        summary.http_requests = after
            .http_requests
            .saturating_sub(usage_before.http_requests);
        summary.throttled_503 = after
            .throttled_503
            .saturating_sub(usage_before.throttled_503);
        summary.throttled_429 = after
            .throttled_429
            .saturating_sub(usage_before.throttled_429);
        summary.operating_seconds =
            (after.operating_seconds - usage_before.operating_seconds).max(0.0);
        summary.seconds = started.elapsed().as_secs_f64();
        result.map(|()| summary)
    }

    /// One claim, from the portal's current records to every row settled.
    async fn push_claim(
        &self,
        prepared: &Prepared,
        writable: &WritableFields,
        settings: &BackSyncConfig,
        claim: OutboxClaim,
        deadline: Option<Instant>,
        summary: &mut PushSummary,
    ) -> Result<(), SyncError> {
        let entity = prepared.layout.entity();
        let lease = claim.lease;
        let attempts: HashMap<i64, i32> =
            claim.entries.iter().map(|e| (e.id, e.attempts)).collect();
        let pushes = fold(&claim.entries);
        summary.rows += claim.entries.len() as u64;
        summary.records += pushes.len() as u64;
        let max_attempts =
            |entries: &[i64]| entries.iter().map(|id| attempts[id]).max().unwrap_or(1);

        let existing: Vec<u64> = pushes
            .iter()
            .filter_map(|p| match p.action {
                PushAction::Update { id, .. } | PushAction::Delete { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        let mut outcomes: Vec<(i64, OutboxOutcome)> = Vec::new();
        let current = match self.current_records(prepared, &existing, deadline).await {
            Ok(current) => current,
            Err(error) => {
                // Nothing was sent: every row waits for its retry, and the drain stops.
                for push in &pushes {
                    let outcome = match &error {
                        SyncError::Portal(error) => {
                            failure(error, max_attempts(&push.entries), settings)
                        }
                        other => OutboxOutcome::Retry {
                            error: other.to_string(),
                            after: Duration::ZERO,
                        },
                    };
                    settle_all(&mut outcomes, &push.entries, &outcome, summary);
                }
                self.store.settle_outbox(lease, &outcomes).await?;
                return Err(error);
            }
        };
        let offset = current
            .values()
            .find_map(portal_offset)
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"));

        let api = &prepared.api;
        let mut refresh: Vec<u64> = Vec::new();
        let mut writes: Vec<(Command, (Write, Planned))> = Vec::new();
        let mut adds: Vec<(Command, i64, Planned, usize)> = Vec::new();
        let mut lookups: Vec<(Command, usize)> = Vec::new();
        for (index, push) in pushes.into_iter().enumerate() {
            let tries = max_attempts(&push.entries);
            let entries = push.entries;
            match push.action {
                PushAction::Cancelled => {
                    summary.cancelled += 1;
                    settle_all(&mut outcomes, &entries, &OutboxOutcome::Done, summary);
                }
                PushAction::Orphaned => {
                    let outcome = OutboxOutcome::Failed(
                        "the row was inserted in PostgreSQL, but creating it in Bitrix24 failed (see its create row in the outbox): these edits cannot reach Bitrix24".into(),
                    );
                    settle_all(&mut outcomes, &entries, &outcome, summary);
                }
                PushAction::Update {
                    id, changes, seen, ..
                } => {
                    let Some(record) = current.get(&id) else {
                        let outcome = OutboxOutcome::Failed(format!(
                            "{entity} {id} is not in Bitrix24 any more (or the webhook's user cannot see it)"
                        ));
                        settle_all(&mut outcomes, &entries, &outcome, summary);
                        continue;
                    };
                    let fields = match bitrix_fields(&changes, writable, Some(record), offset) {
                        Ok(fields) => fields,
                        Err(error) => {
                            refresh.push(id);
                            settle_all(
                                &mut outcomes,
                                &entries,
                                &OutboxOutcome::Failed(error.to_string()),
                                summary,
                            );
                            continue;
                        }
                    };
                    if already_applied(&fields, writable, record) {
                        summary.already_applied += 1;
                        refresh.push(id);
                        settle_all(&mut outcomes, &entries, &OutboxOutcome::Done, summary);
                        continue;
                    }
                    if is_conflict(seen, record) {
                        summary.conflicts += 1;
                        if settings.conflicts == ConflictPolicy::PortalWins {
                            refresh.push(id);
                            let outcome = OutboxOutcome::Conflict(conflict_note(record));
                            settle_all(&mut outcomes, &entries, &outcome, summary);
                            continue;
                        }
                    }
                    let command = api.update_command(&format!("u{index}"), id, &fields);
                    writes.push((
                        command,
                        (
                            Write::Update(id),
                            Planned {
                                entries,
                                attempts: tries,
                            },
                        ),
                    ));
                }
                PushAction::Delete { id, seen } => {
                    if !settings.allow_deletes {
                        summary.skipped += 1;
                        refresh.push(id);
                        let outcome = OutboxOutcome::Skipped(format!(
                            "deletes are not pushed to this portal (portals.{}.back_sync.allow_deletes is false): the row comes back from Bitrix24",
                            self.portal
                        ));
                        settle_all(&mut outcomes, &entries, &outcome, summary);
                        continue;
                    }
                    let Some(record) = current.get(&id) else {
                        // Gone already: what the delete wanted.
                        summary.deleted += 1;
                        settle_all(&mut outcomes, &entries, &OutboxOutcome::Done, summary);
                        continue;
                    };
                    if is_conflict(seen, record) {
                        summary.conflicts += 1;
                        if settings.conflicts == ConflictPolicy::PortalWins {
                            refresh.push(id);
                            let outcome = OutboxOutcome::Conflict(conflict_note(record));
                            settle_all(&mut outcomes, &entries, &outcome, summary);
                            continue;
                        }
                    }
                    let command = api.delete_command(&format!("d{index}"), id);
                    writes.push((
                        command,
                        (
                            Write::Delete(id),
                            Planned {
                                entries,
                                attempts: tries,
                            },
                        ),
                    ));
                }
                PushAction::Create {
                    local_id,
                    key,
                    changes,
                    look_up_first,
                } => {
                    let mut fields = match bitrix_fields(&changes, writable, None, offset) {
                        Ok(fields) => fields,
                        Err(error) => {
                            settle_all(
                                &mut outcomes,
                                &entries,
                                &OutboxOutcome::Failed(error.to_string()),
                                summary,
                            );
                            continue;
                        }
                    };
                    let origin = create_origin(self.store.schema(), key);
                    fields.insert("ORIGINATOR_ID".into(), json!(CREATE_ORIGINATOR));
                    fields.insert("ORIGIN_ID".into(), json!(origin));
                    if look_up_first {
                        let mut filter = serde_json::Map::new();
                        filter.insert("ORIGINATOR_ID".into(), json!(CREATE_ORIGINATOR));
                        filter.insert("ORIGIN_ID".into(), json!(origin));
                        let lookup = api.list_command(
                            &format!("l{index}"),
                            &[("ID", "ASC")],
                            &["ID"],
                            filter,
                        );
                        lookups.push((lookup, index));
                    }
                    let command = api.add_command(&format!("a{index}"), &fields);
                    adds.push((
                        command,
                        local_id,
                        Planned {
                            entries,
                            attempts: tries,
                        },
                        index,
                    ));
                }
            }
        }

        // A create that an earlier claim may have sent is looked up first: found, it is
        // recorded; not found, it is added now; a failed look-up leaves it for later.
        let looked_up: HashMap<usize, Result<Option<u64>, Arc<B24Error>>> = self
            .send_all(lookups, deadline)
            .await
            .into_iter()
            .map(|(index, result)| {
                let found = result.map(|answer| {
                    let rows = api.rows(answer).unwrap_or_default();
                    rows.first()
                        .and_then(|row| row.get("ID"))
                        .and_then(first_id)
                });
                (index, found)
            })
            .collect();
        let mut looked_up = looked_up;
        let mut to_add = Vec::new();
        for (command, local_id, planned, index) in adds {
            match looked_up.remove(&index) {
                Some(Ok(Some(id))) => {
                    self.created(
                        entity,
                        lease,
                        local_id,
                        id,
                        &planned.entries,
                        summary,
                        &mut refresh,
                    )
                    .await?
                }
                Some(Err(error)) => {
                    let outcome = failure(&error, planned.attempts, settings);
                    settle_all(&mut outcomes, &planned.entries, &outcome, summary);
                }
                Some(Ok(None)) | None => to_add.push((command, (local_id, planned))),
            }
        }
        // Adds go in requests of their own: the client never repeats a request holding
        // an add whose answer was lost, and the next claim looks such adds up.
        for ((local_id, planned), result) in self.send_all(to_add, deadline).await {
            let id = result.and_then(|answer| {
                api.created_id(&answer).ok_or_else(|| {
                    Arc::new(B24Error::UnexpectedResponse {
                        method: entity.method("add"),
                        detail: "the add did not answer a record ID".into(),
                    })
                })
            });
            match id {
                Ok(id) => {
                    self.created(
                        entity,
                        lease,
                        local_id,
                        id,
                        &planned.entries,
                        summary,
                        &mut refresh,
                    )
                    .await?
                }
                Err(error) => {
                    let outcome = failure(&error, planned.attempts, settings);
                    settle_all(&mut outcomes, &planned.entries, &outcome, summary);
                }
            }
        }
        for ((write, planned), result) in self.send_all(writes, deadline).await {
            let outcome = match (write, result) {
                (Write::Delete(_), Ok(_)) => {
                    summary.deleted += 1;
                    OutboxOutcome::Done
                }
                (Write::Delete(_), Err(error)) if matches!(*error, B24Error::NotFound { .. }) => {
                    // Deleted meanwhile is what the delete wanted.
                    summary.deleted += 1;
                    OutboxOutcome::Done
                }
                (Write::Update(id), Ok(_)) => {
                    summary.updated += 1;
                    refresh.push(id);
                    OutboxOutcome::Done
                }
                (Write::Update(id) | Write::Delete(id), Err(error)) => {
                    let outcome = failure(&error, planned.attempts, settings);
                    if matches!(outcome, OutboxOutcome::Failed(_)) {
                        // The portal refused the edit: the mirror shows what it holds.
                        refresh.push(id);
                    }
                    outcome
                }
            };
            settle_all(&mut outcomes, &planned.entries, &outcome, summary);
        }
        self.store.settle_outbox(lease, &outcomes).await?;
        refresh.sort_unstable();
        refresh.dedup();
        let mut mirror = SyncSummary::default();
        for ids in refresh.chunks(RECHECK_BATCH) {
            if self
                .look_up(prepared, deadline, ids, &mut mirror)
                .await?
                .is_none()
            {
                // Out of time: the next sync or event brings the rows.
                break;
            }
        }
        summary.refreshed += mirror.rows_inserted + mirror.rows_updated;
        Ok(())
    }

    /// The portal's current records among `ids`, by ID.
    async fn current_records(
        &self,
        prepared: &Prepared,
        ids: &[u64],
        deadline: Option<Instant>,
    ) -> Result<HashMap<u64, Row>, SyncError> {
        let mut current = HashMap::new();
        let api = &prepared.api;
        let method = api.list_method();
        for chunk in ids.chunks(RECHECK_BATCH) {
            let rows = within(
                deadline,
                self.client
                    .fetch_by_ids_in(&api.dialect, &method, chunk, &prepared.select),
            )
            .await
            .ok_or(SyncError::OutOfTime("reading the records to push"))??;
            for row in rows {
                if let Some(id) = first_id(&row.get("ID").cloned().unwrap_or(Value::Null)) {
                    current.insert(id, row);
                }
            }
        }
        Ok(current)
    }

    /// Sends `commands` in batches of 50 (`halt` off: each command on its own), one
    /// result per command, or the error that failed the whole request.
    async fn send(
        &self,
        commands: Vec<Command>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Result<Value, B24Error>>, B24Error> {
        let results = within(deadline, self.client.batch(commands, false))
            .await
            .unwrap_or_else(|| Err(out_of_time()))?;
        Ok(results
            .into_iter()
            .map(|CommandResult { outcome, .. }| outcome.map(|o| o.result))
            .collect())
    }

    /// [`Self::send`] with each command's companion: a request that failed as a whole
    /// fails each of its commands with that (shared) error.
    async fn send_all<T>(
        &self,
        items: Vec<(Command, T)>,
        deadline: Option<Instant>,
    ) -> Vec<(T, Result<Value, Arc<B24Error>>)> {
        if items.is_empty() {
            return Vec::new();
        }
        let (commands, companions): (Vec<Command>, Vec<T>) = items.into_iter().unzip();
        match self.send(commands, deadline).await {
            Ok(results) => companions
                .into_iter()
                .zip(results.into_iter().map(|r| r.map_err(Arc::new)))
                .collect(),
            Err(error) => {
                let error = Arc::new(error);
                companions
                    .into_iter()
                    .map(|c| (c, Err(Arc::clone(&error))))
                    .collect()
            }
        }
    }

    /// Records a created record and queues its mirror row's refresh.
    #[allow(clippy::too_many_arguments)]
    async fn created(
        &self,
        entity: Entity,
        lease: OutboxLease,
        local_id: i64,
        bitrix_id: u64,
        entries: &[i64],
        summary: &mut PushSummary,
        refresh: &mut Vec<u64>,
    ) -> Result<(), SyncError> {
        self.store
            .record_created(self.portal, entity, lease, local_id, bitrix_id, entries)
            .await?;
        summary.created += 1;
        refresh.push(bitrix_id);
        Ok(())
    }
}

/// Every row of one push settled alike, counted once per push.
fn settle_all(
    outcomes: &mut Vec<(i64, OutboxOutcome)>,
    entries: &[i64],
    outcome: &OutboxOutcome,
    summary: &mut PushSummary,
) {
    match outcome {
        OutboxOutcome::Failed(_) => summary.failed += 1,
        OutboxOutcome::Retry { .. } => summary.retried += 1,
        _ => {}
    }
    outcomes.extend(entries.iter().map(|id| (*id, outcome.clone())));
}

/// A failed push: tried again later while the error may pass and attempts remain,
/// else failed for good with the error (which names no secret).
fn failure(error: &B24Error, attempts: i32, settings: &BackSyncConfig) -> OutboxOutcome {
    let passing = error.is_retryable()
        || error.is_auth()
        || matches!(error, B24Error::AmbiguousCreate { .. });
    if passing && attempts < settings.max_attempts as i32 {
        let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
        let after = FIRST_RETRY
            .saturating_mul(1 << doublings)
            .min(LONGEST_RETRY);
        OutboxOutcome::Retry {
            error: error.to_string(),
            after,
        }
    } else {
        OutboxOutcome::Failed(error.to_string())
    }
}

fn out_of_time() -> B24Error {
    B24Error::Timeout {
        method: "back-sync (the invocation's time ran out)".into(),
    }
}

fn conflict_note(record: &Row) -> String {
    let modified = record
        .get("DATE_MODIFY")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!(
        "Bitrix24 changed the record at {modified}, after the edited row's version; kept Bitrix24's values (conflicts = portal-wins)"
    )
}

/// A record ID in an answer: a number, a numeric string, a row's `ID`, or the first
/// row of a list.
fn first_id(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(row) => row.get("ID").and_then(first_id),
        Value::Array(rows) => rows.first().and_then(first_id),
        _ => None,
    }
}
