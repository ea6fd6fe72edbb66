//! One sync run of one portal entity: reads Bitrix24 through the client, writes the
//! mirror through the store. The decisions (cursor, ID diff, deletion guard) are pure
//! functions in `b24_domain::sync`; this file only sequences IO.
//!
//! Every run holds its portal entity's run lock, is bounded by its options' time box
//! (a soft stop between chunks and a hard deadline on every wait for the portal), and
//! ends recorded in `_sync_runs` with its outcome.

use std::future::Future;
use std::time::{Duration, Instant};

use b24_client::{B24Error, Client, ClientStats, CommandResult, EntityApi, Row};
use b24_domain::entity::Entity;
use b24_domain::schema::{self, FieldMeta};
use b24_domain::sync::{
    DeleteGuard, IncrementalCheckpoint, Mode, RunOutcome, diff_sorted, diff_sorted_ids, fair_share,
    incremental_since, later_time, parse_portal_time,
};
use b24_store::{RunLock, RunStats, Store, SyncState, TableLayout};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Refusal, SyncError};

/// Rows written per store round trip. Small enough that the rows in flight (this chunk
/// plus the client's current batch of 2,500) stay within a 128 MB Lambda; large enough
/// for a few statements per thousand rows.
pub const CHUNK_ROWS: usize = 500;

/// IDs soft-deleted per statement when a run applies the deletions it found.
const DELETE_BATCH: usize = 10_000;

/// IDs looked up per step (to confirm deletions, or fetch what a reconcile found
/// missing): one request's worth, 50 commands of 50 IDs, so a time box cuts a long
/// lookup between requests.
pub(crate) const RECHECK_BATCH: usize = 2_500;

/// How a run is bounded, how far back an incremental pass looks, and how much it may
/// delete.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Re-read this much before the cursor: the portal's application servers do not
    /// share one perfectly monotonic clock, and a re-read row that did not change is
    /// skipped by the store at no write cost.
    pub overlap: chrono::Duration,
    /// Start no further chunk after this instant, leaving a checkpoint to continue from.
    pub stop_after: Option<Instant>,
    /// Every wait for the portal (the next chunk, limiter sleeps, retries and their
    /// backoff) ends here; the run then stops at its last checkpoint.
    pub deadline: Option<Instant>,
    /// How much of the mirror one run may soft-delete without confirmation.
    pub delete_guard: DeleteGuard,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            overlap: chrono::Duration::minutes(5),
            stop_after: None,
            deadline: None,
            delete_guard: DeleteGuard::default(),
        }
    }
}

impl SyncOptions {
    /// Options for a run that must end before `deadline`, keeping `margin` for the last
    /// chunk, the state write and the response, but never more than a quarter of the
    /// time left, so a function with a short timeout still gets work done. Waits are
    /// cut at half the margin before the deadline, which leaves the other half for
    /// recording where the run stopped.
    pub fn until(deadline: Instant, margin: Duration) -> Self {
        let margin = margin.min(deadline.saturating_duration_since(Instant::now()) / 4);
        let before = |d: Duration| deadline.checked_sub(d).unwrap_or_else(Instant::now);
        SyncOptions {
            stop_after: Some(before(margin)),
            deadline: Some(before(margin / 2)),
            ..Self::default()
        }
    }

    /// These options for one of `parts_left` runs that share what is left of the time
    /// box equally (see [`fair_share`]): a run that finishes early leaves its time to
    /// those after it, and a run with a big backlog cannot starve the others.
    pub fn share(&self, parts_left: usize) -> SyncOptions {
        let now = Instant::now();
        let stop_after = self
            .stop_after
            .map(|stop| now + fair_share(stop.saturating_duration_since(now), parts_left));
        // The hard deadline keeps its distance from the soft stop, within the whole.
        let deadline = match (self.deadline, self.stop_after, stop_after) {
            (Some(whole), Some(stop), Some(share)) => {
                Some(whole.min(share + (whole - stop.min(whole))))
            }
            (deadline, ..) => deadline,
        };
        SyncOptions {
            stop_after,
            deadline,
            ..self.clone()
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
    /// `None` only before the run ended.
    pub outcome: Option<RunOutcome>,
    pub rows_read: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_unchanged: u64,
    pub rows_deleted: u64,
    pub http_requests: u64,
    /// Answers 503 (too many requests at once) and 429 (a method's operating time used
    /// up) the run got from the portal, each waited out and retried.
    pub throttled_503: u64,
    pub throttled_429: u64,
    /// The portal's operating time the run's requests cost, as far as its answers tell
    /// (see `b24_client::ClientStats::operating_seconds`).
    pub operating_seconds: f64,
    /// False when the run stopped at its time box (the next run of the mode continues
    /// from its checkpoint), was refused or found another run under way.
    pub completed: bool,
    /// The last ID the mode's unfinished pass got to (a full sync's, an incremental
    /// pass's or a reconcile's), where its next run continues.
    pub checkpoint: Option<u64>,
    pub cursor: Option<String>,
    pub skipped_fields: Vec<String>,
    /// Product rows written or removed with the run's owners (deals, smart processes).
    pub product_rows_written: u64,
    pub seconds: f64,
}

impl SyncSummary {
    /// Records what the client's requests cost between `before` and `after` (the
    /// client's counters only grow).
    pub(crate) fn record_usage(&mut self, before: &ClientStats, after: &ClientStats) {
        self.http_requests = after.http_requests.saturating_sub(before.http_requests);
        self.throttled_503 = after.throttled_503.saturating_sub(before.throttled_503);
        self.throttled_429 = after.throttled_429.saturating_sub(before.throttled_429);
        self.operating_seconds = (after.operating_seconds - before.operating_seconds).max(0.0);
    }

    /// The run's counts by the names the functions report them under (rows, requests,
    /// throttled answers), so every reporter names them alike.
    pub fn counts(&self) -> [(&'static str, u64); 7] {
        [
            ("RowsRead", self.rows_read),
            ("RowsWritten", self.rows_inserted + self.rows_updated),
            ("RowsUnchanged", self.rows_unchanged),
            ("RowsDeleted", self.rows_deleted),
            ("BitrixRequests", self.http_requests),
            ("Throttled503", self.throttled_503),
            ("Throttled429", self.throttled_429),
        ]
    }

    /// The run's durations in seconds: the portal's operating time it cost, and its own.
    pub fn durations(&self) -> [(&'static str, f64); 2] {
        [
            ("OperatingSeconds", self.operating_seconds),
            ("RunSeconds", self.seconds),
        ]
    }
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
    /// The entities whose product rows are mirrored with them (see `products.rs`).
    pub product_rows: &'a [Entity],
}

/// How far a step got before the run's time was up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Completed,
    Stopped,
}

/// A listing walked in ID windows, each compared with the same window of the mirror:
/// a full sync reads every field, a reconcile only IDs.
#[derive(Clone, Copy, Debug)]
enum Walk {
    Full {
        started_at: chrono::DateTime<chrono::Utc>,
    },
    Reconcile,
}

impl Walk {
    /// Where the walk's deletions wait (a resumed full sync continues `full`'s).
    fn deletions_key(self) -> &'static str {
        match self {
            Walk::Full { .. } => Mode::Full.as_str(),
            Walk::Reconcile => Mode::Reconcile.as_str(),
        }
    }
}

/// What every step of one run shares.
struct Run<'r> {
    entity: Entity,
    options: &'r SyncOptions,
    lock: &'r RunLock,
    prepared: Prepared,
    /// The IDs this run confirmed gone; older candidates are looked up again before
    /// they are deleted.
    confirmed_gone: std::sync::Mutex<Vec<u64>>,
}

impl Run<'_> {
    /// Checked before each state write: a run whose lock connection closed may no
    /// longer be the only one, so it stops rather than overwrite another's state.
    fn ensure_locked(&self) -> Result<(), SyncError> {
        if self.lock.is_held() {
            Ok(())
        } else {
            Err(SyncError::LockLost)
        }
    }
}

impl Syncer<'_> {
    /// Runs `mode` for `entity` under the portal entity's run lock, recording the run
    /// (its outcome, and its error, if any) in the store. When another run holds the
    /// lock, nothing is done and the summary says `already_running`.
    pub async fn run(
        &self,
        entity: Entity,
        mode: Mode,
        options: &SyncOptions,
    ) -> Result<SyncSummary, SyncError> {
        let mut summary = SyncSummary {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            mode: mode.to_string(),
            ..SyncSummary::default()
        };
        if mode == Mode::Reference {
            return Err(reference_is_not_an_entity_mode());
        }
        let Some(lock) = self.store.try_lock_run(self.portal, entity).await? else {
            tracing::warn!(portal = %self.portal, %entity, %mode, "another run of this portal entity is under way; nothing done");
            summary.outcome = Some(RunOutcome::AlreadyRunning);
            return Ok(summary);
        };
        let result = self
            .locked_run(entity, mode, options, &lock, &mut summary)
            .await;
        lock.release().await;
        result.map(|()| summary)
    }

    async fn locked_run(
        &self,
        entity: Entity,
        mode: Mode,
        options: &SyncOptions,
        lock: &RunLock,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        let started = Instant::now();
        let usage_before = self.client.stats();
        let run_id = self
            .store
            .start_run(self.portal, entity, mode.as_str())
            .await?;
        let progress = self.run_mode(entity, mode, options, lock, summary).await;
        let outcome = match &progress {
            Ok(Progress::Completed) => RunOutcome::Completed,
            Ok(Progress::Stopped) => RunOutcome::Stopped,
            Err(SyncError::Refused(_)) => RunOutcome::Refused,
            Err(_) => RunOutcome::Failed,
        };
        summary.outcome = Some(outcome);
        summary.completed = outcome == RunOutcome::Completed;
        summary.record_usage(&usage_before, &self.client.stats());
        summary.seconds = started.elapsed().as_secs_f64();
        let stats = RunStats {
            rows_read: summary.rows_read,
            rows_written: summary.rows_inserted + summary.rows_updated,
            rows_deleted: summary.rows_deleted,
            http_requests: summary.http_requests,
            error: progress.as_ref().err().map(ToString::to_string),
            outcome: Some(outcome),
            refused: match &progress {
                Err(SyncError::Refused(refusal)) => refusal.counts,
                _ => None,
            },
        };
        self.store.finish_run(run_id, &stats).await?;
        progress.map(drop)
    }

    async fn run_mode(
        &self,
        entity: Entity,
        mode: Mode,
        options: &SyncOptions,
        lock: &RunLock,
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        let state = self.store.load_state(self.portal, entity).await?;
        let checkpoints = self.store.load_checkpoints(self.portal, entity).await?;
        summary.cursor.clone_from(&state.cursor);
        summary.checkpoint = state.full_checkpoint;
        if mode == Mode::Resume && state.full_checkpoint.is_none() {
            return Ok(Progress::Completed);
        }
        let Some(prepared) = self.prepare(entity, options, summary).await? else {
            return Ok(Progress::Stopped);
        };
        let run = Run {
            entity,
            options,
            lock,
            prepared,
            confirmed_gone: std::sync::Mutex::default(),
        };
        let progress = match mode {
            Mode::Incremental if state.cursor.is_some() => {
                self.incremental(&run, &state, checkpoints.incremental, summary)
                    .await?
            }
            Mode::Reconcile => {
                if checkpoints.reconcile.is_none() {
                    self.start_walk(&run, Walk::Reconcile).await?;
                }
                let start_after = checkpoints.reconcile.unwrap_or(0);
                self.walk(&run, Walk::Reconcile, start_after, summary)
                    .await?
            }
            // The first incremental pass has no cursor: it is a full sync.
            Mode::Incremental | Mode::Full | Mode::Resume => {
                self.full(&run, &state, summary).await?
            }
            Mode::Reference => return Err(reference_is_not_an_entity_mode()),
        };
        let after = self.store.load_state(self.portal, entity).await?;
        let checkpoints = self.store.load_checkpoints(self.portal, entity).await?;
        summary.checkpoint = match mode {
            Mode::Incremental if state.cursor.is_some() => {
                checkpoints.incremental.map(|c| c.after_id)
            }
            Mode::Reconcile => checkpoints.reconcile,
            Mode::Incremental | Mode::Full | Mode::Resume | Mode::Reference => {
                after.full_checkpoint
            }
        };
        summary.cursor = after.cursor;
        Ok(progress)
    }

    /// One request for the entity's field metadata and its newest modification time;
    /// brings the table up to date with the fields. `None` when the deadline came
    /// before the portal answered.
    async fn prepare(
        &self,
        entity: Entity,
        options: &SyncOptions,
        summary: &mut SyncSummary,
    ) -> Result<Option<Prepared>, SyncError> {
        let mut api = self.client.entity_api(entity);
        // The newest DATE_MODIFY is read from the data itself, so the cursor lives on the
        // portal's clock and in its time zone. One row, no COUNT.
        let commands = vec![
            api.fields_command("fields"),
            api.list_command(
                "newest",
                &[("DATE_MODIFY", "DESC"), ("ID", "DESC")],
                &["ID", "DATE_MODIFY"],
                Map::new(),
            ),
        ];
        let Some(answer) = within(options.deadline, self.client.batch(commands, true)).await else {
            return Ok(None);
        };
        let [fields, newest]: [CommandResult; 2] =
            answer?.try_into().map_err(|results: Vec<CommandResult>| {
                SyncError::BadAnswer(format!(
                    "the batch answered {} results for 2 commands",
                    results.len()
                ))
            })?;
        let fields = api.with_fields(&fields.outcome?.result)?;
        let newest = api
            .rows(newest.outcome?.result)?
            .first()
            .and_then(|row| row.get("DATE_MODIFY"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let prepared = self.prepare_table(api, &fields, newest, summary).await?;
        Ok(Some(prepared))
    }

    /// The entity's field metadata alone (one request), and its table brought up to
    /// date with it: what the change worker and back-sync read before their lookups.
    pub(crate) async fn prepare_fields(
        &self,
        entity: Entity,
        deadline: Option<Instant>,
        summary: &mut SyncSummary,
    ) -> Result<Prepared, SyncError> {
        let mut api = self.client.entity_api(entity);
        let command = api.fields_command("fields");
        let answer = within(deadline, self.client.call(&command.method, &command.params))
            .await
            .ok_or(SyncError::OutOfTime("reading the field metadata"))??;
        let fields = api.with_fields(&answer.result)?;
        self.prepare_table(api, &fields, None, summary).await
    }

    /// Brings the entity's table up to date with `fields` (the answer of
    /// `crm.<entity>.fields`).
    pub(crate) async fn prepare_table(
        &self,
        api: EntityApi,
        fields: &Value,
        newest: Option<String>,
        summary: &mut SyncSummary,
    ) -> Result<Prepared, SyncError> {
        let fields = schema::parse_fields(fields)?;
        let layout = self
            .store
            .ensure_table(self.portal, api.entity, &fields)
            .await?;
        summary.skipped_fields = layout.skipped_fields().to_vec();
        Ok(Prepared {
            layout,
            select: select_all(&fields),
            newest,
            fields,
            api,
        })
    }

    /// Rows modified since the cursor (minus the overlap), in ascending ID order and
    /// checkpointed as `(since, last ID)`: a pass bigger than one invocation (a bulk
    /// change of the whole CRM) continues where the last one stopped instead of
    /// starting over. The cursor moves only when the pass completes.
    async fn incremental(
        &self,
        run: &Run<'_>,
        state: &SyncState,
        checkpoint: Option<IncrementalCheckpoint>,
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        let mut checkpoint = match checkpoint {
            Some(checkpoint) => checkpoint,
            None => IncrementalCheckpoint {
                since: incremental_since(
                    state.cursor.as_deref().unwrap_or_default(),
                    run.options.overlap,
                )?,
                after_id: 0,
                target: run.prepared.newest.clone(),
            },
        };
        let mut filter = Map::new();
        filter.insert(
            ">=DATE_MODIFY".into(),
            Value::String(checkpoint.since.clone()),
        );
        let select = run.prepared.select.clone();
        let listing = listed_chunks(
            self.client,
            &run.prepared.api,
            select,
            filter,
            checkpoint.after_id,
        );
        let mut chunks = prefetch(listing);
        loop {
            let chunk = match chunks.next_within(run.options).await {
                Step::Item(chunk) => chunk?,
                Step::End => break,
                Step::OutOfTime => return Ok(Progress::Stopped),
            };
            self.write_chunk(&run.prepared.layout, &chunk, run.options.deadline, summary)
                .await?;
            checkpoint.after_id = last_id(&chunk)?;
            run.ensure_locked()?;
            self.store
                .save_incremental_checkpoint(self.portal, run.entity, Some(&checkpoint))
                .await?;
        }
        // Anything modified after the newest time read before the pass's first slice
        // gets a later DATE_MODIFY on the portal's own clock, so the next pass starting
        // from it cannot miss a row this pass went by.
        let cursor = match &checkpoint.target {
            Some(target) => later_time(state.cursor.clone(), target),
            None => state.cursor.clone(),
        };
        run.ensure_locked()?;
        self.store
            .complete_incremental(self.portal, run.entity, cursor.as_deref())
            .await?;
        Ok(Progress::Completed)
    }

    /// A full listing in ID order, continuing from the checkpoint of an unfinished one.
    async fn full(
        &self,
        run: &Run<'_>,
        state: &SyncState,
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        if let (Some(checkpoint), Some(started_at)) = (state.full_checkpoint, state.full_started_at)
        {
            return self
                .walk(run, Walk::Full { started_at }, checkpoint, summary)
                .await;
        }
        // Every row modified up to the newest time read before the listing is in it,
        // so the cursor can move there now.
        if let Some(newest) = &run.prepared.newest {
            let cursor = later_time(state.cursor.clone(), newest);
            if cursor != state.cursor {
                run.ensure_locked()?;
                self.store
                    .save_cursor(self.portal, run.entity, cursor.as_deref())
                    .await?;
            }
        }
        let walk = Walk::Full {
            started_at: chrono::Utc::now(),
        };
        self.start_walk(run, walk).await?;
        self.save_walk_checkpoint(run, walk, Some(0)).await?;
        self.walk(run, walk, 0, summary).await
    }

    /// A new listing forgets deletions an abandoned one may have left.
    async fn start_walk(&self, run: &Run<'_>, walk: Walk) -> Result<(), SyncError> {
        run.ensure_locked()?;
        self.store
            .clear_pending_deletes(self.portal, run.entity, walk.deletions_key(), None)
            .await?;
        Ok(())
    }

    /// Walks the listing after `start_after` window by window, checkpointing each.
    /// Rows the mirror holds in a window and the portal did not list there are looked
    /// up by ID; those still missing wait in `_sync_pending_deletes` and are
    /// soft-deleted only when the listing has ended.
    ///
    /// Why at the end: the guard must judge the run's whole picture. Deleting window by
    /// window, a listing that lost most rows (a webhook user moved to a narrower role,
    /// or the remaining range of a resumed sync listing empty) would have deleted a
    /// share in every slice before any slice saw the total. Keeping the candidates in
    /// the database carries them across the slices of a resumed full sync, and a
    /// refused run keeps both them and its checkpoint, so a confirmed run applies them
    /// without listing again.
    async fn walk(
        &self,
        run: &Run<'_>,
        walk: Walk,
        start_after: u64,
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        let select = match walk {
            Walk::Full { .. } => run.prepared.select.clone(),
            Walk::Reconcile => vec!["ID".into()],
        };
        let listing = listed_chunks(
            self.client,
            &run.prepared.api,
            select,
            Map::new(),
            start_after,
        );
        let mut chunks = prefetch(listing);
        let mut window_start = start_after;
        loop {
            let chunk = match chunks.next_within(run.options).await {
                Step::Item(chunk) => chunk?,
                Step::End => break,
                Step::OutOfTime => return Ok(Progress::Stopped),
            };
            if let Walk::Full { .. } = walk {
                self.write_chunk(&run.prepared.layout, &chunk, run.options.deadline, summary)
                    .await?;
            }
            let listed = chunk.iter().map(row_id).collect::<Result<Vec<u64>, _>>()?;
            let window_end = last_id(&chunk)?;
            if self
                .settle_window(run, walk, window_start, Some(window_end), &listed, summary)
                .await?
                == Progress::Stopped
            {
                return Ok(Progress::Stopped);
            }
            window_start = window_end;
            self.save_walk_checkpoint(run, walk, Some(window_end))
                .await?;
        }
        if self
            .settle_window(run, walk, window_start, None, &[], summary)
            .await?
            == Progress::Stopped
        {
            return Ok(Progress::Stopped);
        }
        if self.apply_deletions(run, walk, summary).await? == Progress::Stopped {
            return Ok(Progress::Stopped);
        }
        self.save_walk_checkpoint(run, walk, None).await?;
        Ok(Progress::Completed)
    }

    async fn save_walk_checkpoint(
        &self,
        run: &Run<'_>,
        walk: Walk,
        checkpoint: Option<u64>,
    ) -> Result<(), SyncError> {
        run.ensure_locked()?;
        match walk {
            Walk::Full { started_at } => {
                let started_at = checkpoint.map(|_| started_at);
                self.store
                    .save_full_checkpoint(self.portal, run.entity, checkpoint, started_at)
                    .await?
            }
            Walk::Reconcile => {
                self.store
                    .save_reconcile_checkpoint(self.portal, run.entity, checkpoint)
                    .await?
            }
        }
        Ok(())
    }

    /// Compares one window `(after, up_to]` of the listing with the mirror. IDs the
    /// mirror lacks (reconcile) and IDs the listing lacks are fetched by ID: what the
    /// lookup returns is on the portal and is written (a row created during a long
    /// listing, or missed at a page boundary, is never deleted); what it does not
    /// return is confirmed gone and waits for the end of the listing.
    ///
    /// A window where the portal lost a long run of IDs (or the tail after its last
    /// row) can hold far more mirror rows than one invocation can look up; it is
    /// looked up 2,500 IDs per request, and a run out of time keeps its place inside
    /// the window (every ID up to there is settled; new rows get higher IDs).
    async fn settle_window(
        &self,
        run: &Run<'_>,
        walk: Walk,
        after: u64,
        up_to: Option<u64>,
        listed: &[u64],
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        let mirror = self
            .store
            .live_ids(self.portal, run.entity, after, up_to)
            .await?;
        let diff = diff_sorted_ids(listed, &mirror);
        let mut lookup = diff.gone_from_portal.clone();
        if let Walk::Reconcile = walk {
            lookup.extend(&diff.missing_in_mirror);
            lookup.sort_unstable();
        }
        let mut batches = lookup.chunks(RECHECK_BATCH).peekable();
        while let Some(ids) = batches.next() {
            let Some(found_ids) = self
                .look_up(&run.prepared, run.options.deadline, ids, summary)
                .await?
            else {
                return Ok(Progress::Stopped);
            };
            let gone: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| {
                    diff.gone_from_portal.binary_search(id).is_ok()
                        && found_ids.binary_search(id).is_err()
                })
                .collect();
            self.store
                .add_pending_deletes(self.portal, run.entity, walk.deletions_key(), &gone)
                .await?;
            if let Ok(mut confirmed) = run.confirmed_gone.lock() {
                confirmed.extend(&gone);
            }
            if let (Some(_), Some(&settled)) = (batches.peek(), ids.last())
                && run.options.out_of_time()
            {
                self.save_walk_checkpoint(run, walk, Some(settled)).await?;
                return Ok(Progress::Stopped);
            }
        }
        Ok(Progress::Completed)
    }

    /// Looks `ids` up on the portal (one request per 2,500), writes the rows it still
    /// has and returns their IDs, sorted; `None` when the deadline came first.
    pub(crate) async fn look_up(
        &self,
        prepared: &Prepared,
        deadline: Option<Instant>,
        ids: &[u64],
        summary: &mut SyncSummary,
    ) -> Result<Option<Vec<u64>>, SyncError> {
        let api = &prepared.api;
        let method = api.list_method();
        let lookup = self
            .client
            .fetch_by_ids_in(&api.dialect, &method, ids, &prepared.select);
        let Some(found) = within(deadline, lookup).await else {
            return Ok(None);
        };
        let found = found?;
        self.write_chunk(&prepared.layout, &found, deadline, summary)
            .await?;
        let mut found_ids = found.iter().map(row_id).collect::<Result<Vec<u64>, _>>()?;
        found_ids.sort_unstable();
        Ok(Some(found_ids))
    }

    /// Soft-deletes what the finished listing found gone, if the guard allows that
    /// much; otherwise the run is refused, deleting nothing and keeping the candidates.
    /// Candidates found by an earlier run (a refused one, or an earlier slice) are
    /// looked up again first: after a role change is undone they are back, and a
    /// confirmation must never delete them.
    async fn apply_deletions(
        &self,
        run: &Run<'_>,
        walk: Walk,
        summary: &mut SyncSummary,
    ) -> Result<Progress, SyncError> {
        let key = walk.deletions_key();
        let mut pending = self
            .store
            .pending_deletes(self.portal, run.entity, key)
            .await?;
        let mut confirmed = run
            .confirmed_gone
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default();
        confirmed.sort_unstable();
        let older = diff_sorted_ids(&pending, &confirmed).missing_in_mirror;
        let live = self.store.live_count(self.portal, run.entity).await?;
        let guard = run.options.delete_guard;
        for ids in older.chunks(RECHECK_BATCH) {
            let Some(back) = self
                .look_up(&run.prepared, run.options.deadline, ids, summary)
                .await?
            else {
                return Ok(Progress::Stopped);
            };
            self.store
                .clear_pending_deletes(self.portal, run.entity, key, Some(&back))
                .await?;
            pending.retain(|id| back.binary_search(id).is_err());
            // Nothing came back and the guard refuses anyway: the rest would cost a
            // request per 2,500 IDs on every refused attempt and change nothing.
            if back.is_empty() && guard.check(pending.len() as u64, live).is_err() {
                break;
            }
        }
        if pending.is_empty() {
            return Ok(Progress::Completed);
        }
        if let Err(refused) = guard.check(pending.len() as u64, live) {
            let hint = if refused.would_delete >= refused.live_rows {
                " (the portal listed none of them: check the webhook user's access and scopes)"
            } else {
                ""
            };
            return Err(SyncError::Refused(Refusal {
                message: format!("{}: {refused}{hint}; nothing was deleted", run.entity),
                counts: Some(refused),
            }));
        }
        run.ensure_locked()?;
        for batch in pending.chunks(DELETE_BATCH) {
            summary.rows_deleted += self
                .store
                .soft_delete(self.portal, run.entity, batch)
                .await?;
        }
        self.store
            .clear_pending_deletes(self.portal, run.entity, key, None)
            .await?;
        Ok(Progress::Completed)
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
        let select = vec!["ID".into(), "DATE_MODIFY".into()];
        let api = self.client.entity_api(entity);
        let mut chunks = listed_chunks(self.client, &api, select, Map::new(), 0).boxed();
        let mut window_start = 0;
        while let Some(chunk) = chunks.next().await {
            let listed = chunk?
                .iter()
                .map(|row| {
                    let modified = row.get("DATE_MODIFY").and_then(Value::as_str);
                    let modified = modified
                        .map(|t| parse_portal_time("DATE_MODIFY", t))
                        .transpose()?;
                    Ok((row_id(row)?, modified.map(|t| t.timestamp_micros())))
                })
                .collect::<Result<Vec<_>, SyncError>>()?;
            let Some(&(window_end, _)) = listed.last() else {
                break;
            };
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

    /// Writes a chunk of rows; for an entity whose product rows are mirrored, first
    /// reads the chunk's product rows (none are written if that fails) and writes them
    /// after the rows.
    async fn write_chunk(
        &self,
        layout: &TableLayout,
        rows: &[Row],
        deadline: Option<Instant>,
        summary: &mut SyncSummary,
    ) -> Result<(), SyncError> {
        if rows.is_empty() {
            return Ok(());
        }
        let entity = layout.entity();
        let products = if self.product_rows.contains(&entity) {
            let owners = rows.iter().map(row_id).collect::<Result<Vec<u64>, _>>()?;
            Some(self.read_product_rows(entity, &owners, deadline).await?)
        } else {
            None
        };
        summary.rows_read += rows.len() as u64;
        let written = self.store.upsert(self.portal, entity, layout, rows).await?;
        summary.rows_inserted += written.inserted;
        summary.rows_updated += written.updated;
        summary.rows_unchanged += written.unchanged;
        if let Some(products) = products {
            summary.product_rows_written += self.write_product_rows(entity, products).await?;
        }
        Ok(())
    }
}

fn reference_is_not_an_entity_mode() -> SyncError {
    SyncError::Config(
        "mode reference refreshes the portal's reference tables, not an entity's rows".into(),
    )
}

/// What every mode needs before it lists: the table layout, the `select` that fetches
/// every field, and the portal's newest `DATE_MODIFY` before the run.
pub(crate) struct Prepared {
    pub(crate) layout: TableLayout,
    pub(crate) select: Vec<String>,
    newest: Option<String>,
    /// The portal's field metadata the table was prepared from.
    pub(crate) fields: Vec<FieldMeta>,
    /// The API that reads and writes the entity, its names learned from the fields.
    pub(crate) api: EntityApi,
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

/// The ID of a chunk's last row (chunks of a listing are never empty).
fn last_id(chunk: &[Row]) -> Result<u64, SyncError> {
    chunk
        .last()
        .ok_or_else(|| SyncError::BadAnswer("the listing yielded an empty chunk".into()))
        .and_then(row_id)
}

/// Waits for `work` until `deadline`; `None` when the deadline came first (the work is
/// dropped, which cancels its request, sleep or retry).
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = T>,
) -> Option<T> {
    match deadline {
        None => Some(work.await),
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work).await.ok(),
    }
}

/// The entity's listing in ID order after `after_id` (0: from the start), in chunks of
/// [`CHUNK_ROWS`], each failing with the listing's first error.
fn listed_chunks(
    client: &Client,
    api: &EntityApi,
    select: Vec<String>,
    filter: Map<String, Value>,
    after_id: u64,
) -> impl Stream<Item = Result<Vec<Row>, B24Error>> + Send + 'static {
    let query = api.list_query(select, filter, (after_id > 0).then_some(after_id));
    client
        .list_stream(query)
        .chunks(CHUNK_ROWS)
        .map(|chunk| chunk.into_iter().collect())
}

/// A listing read on its own task, a chunk ahead, so the portal's next answer is read
/// and parsed while the database works on the current chunk. Memory stays bounded: the
/// client's current batch plus three chunks.
struct Prefetch<T> {
    items: mpsc::Receiver<T>,
    /// Whether an item was taken: the soft stop applies from the second one on.
    taken_one: bool,
    _reader: AbortOnDrop,
}

/// What a run does next with a listing.
enum Step<T> {
    Item(T),
    End,
    OutOfTime,
}

impl<T> Prefetch<T> {
    /// The next item, unless the run must stop: the deadline came before it, or (after
    /// the first item, so every run gets some work done) the soft stop has passed and
    /// there is more to do. Looking one item ahead (already prefetched, as a rule) lets
    /// a slice that reached the end complete instead of leaving an empty slice for later.
    async fn next_within(&mut self, options: &SyncOptions) -> Step<T> {
        match within(options.deadline, self.items.recv()).await {
            None => Step::OutOfTime,
            Some(None) => Step::End,
            Some(Some(_)) if self.taken_one && options.out_of_time() => Step::OutOfTime,
            Some(Some(item)) => {
                self.taken_one = true;
                Step::Item(item)
            }
        }
    }
}

/// Aborts the task when dropped. The reader ends with the run that started it, even
/// mid-request: no request, retry sleep or limiter transaction (which holds the
/// portal's shared budget row) outlives the run, e.g. into a frozen Lambda.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn prefetch<S, V, E>(stream: S) -> Prefetch<Result<V, E>>
where
    S: Stream<Item = Result<V, E>> + Send + 'static,
    V: Send + 'static,
    E: Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    let reader = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Prefetch {
        items: rx,
        taken_one: false,
        _reader: AbortOnDrop(reader),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        let hard = long.deadline.unwrap() - now;
        assert!(
            hard > Duration::from_secs(869) && hard < Duration::from_secs(871),
            "{hard:?}"
        );
        let short = SyncOptions::until(now + Duration::from_secs(20), Duration::from_secs(60));
        let left = short.stop_after.unwrap() - now;
        assert!(
            left > Duration::from_secs(14) && left < Duration::from_secs(16),
            "{left:?}"
        );
        assert!(short.deadline.unwrap() > short.stop_after.unwrap());
        assert!(!short.out_of_time());
    }

    #[test]
    fn each_run_gets_an_equal_share_of_what_is_left() {
        let now = Instant::now();
        let whole = SyncOptions::until(now + Duration::from_secs(400), Duration::from_secs(60));
        // 340 s to the soft stop, 370 s to the hard deadline.
        let first = whole.share(4);
        let soft = first.stop_after.unwrap() - now;
        assert!(
            soft > Duration::from_secs(84) && soft < Duration::from_secs(86),
            "{soft:?}"
        );
        let gap = first.deadline.unwrap() - first.stop_after.unwrap();
        assert!(
            gap > Duration::from_secs(29) && gap < Duration::from_secs(31),
            "{gap:?}"
        );
        let last = whole.share(1);
        assert_eq!(last.deadline, whole.deadline);
        assert!(last.stop_after.unwrap() <= whole.stop_after.unwrap());
        let unbounded = SyncOptions::default().share(3);
        assert_eq!((unbounded.stop_after, unbounded.deadline), (None, None));
    }

    #[tokio::test]
    async fn within_cuts_a_wait_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let cut = within(Some(deadline), tokio::time::sleep(Duration::from_secs(30))).await;
        assert!(cut.is_none());
        assert!(Instant::now() < deadline + Duration::from_secs(5));
        assert_eq!(within(None, async { 7 }).await, Some(7));
        assert_eq!(within(Some(deadline), async { 7 }).await, Some(7));
    }

    /// Dropping the prefetch (the run returned) stops the reader mid-item: the item it
    /// was producing (a request in flight) never completes.
    #[tokio::test]
    async fn the_reader_never_outlives_the_prefetch() {
        let completed = Arc::new(AtomicUsize::new(0));
        let counter = completed.clone();
        let slow = futures::stream::unfold(counter, |counter| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            counter.fetch_add(1, Ordering::SeqCst);
            Some((Ok::<(), ()>(()), counter))
        });
        let mut items = prefetch(slow);
        assert_eq!(items.items.recv().await, Some(Ok(())));
        // The reader is now producing the second item.
        drop(items);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(completed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_run_out_of_time_takes_one_item_and_still_sees_the_end() {
        let past = SyncOptions {
            stop_after: Some(Instant::now()),
            ..SyncOptions::default()
        };
        let mut items = prefetch(futures::stream::iter([Ok::<_, ()>(1), Ok(2)]));
        assert!(matches!(items.next_within(&past).await, Step::Item(Ok(1))));
        assert!(matches!(items.next_within(&past).await, Step::OutOfTime));
        let mut items = prefetch(futures::stream::iter([Ok::<_, ()>(1)]));
        assert!(matches!(items.next_within(&past).await, Step::Item(Ok(1))));
        assert!(matches!(items.next_within(&past).await, Step::End));
        // A deadline that passes before the next item arrives.
        let hard = SyncOptions {
            deadline: Some(Instant::now() + Duration::from_millis(50)),
            ..SyncOptions::default()
        };
        let mut items = prefetch(futures::stream::pending::<Result<(), ()>>());
        assert!(matches!(items.next_within(&hard).await, Step::OutOfTime));
    }

    #[tokio::test]
    async fn the_reader_stops_after_an_error() {
        let items = futures::stream::iter([Ok(1), Err("broken"), Ok(3)]);
        let mut items = prefetch(items);
        assert_eq!(items.items.recv().await, Some(Ok(1)));
        assert_eq!(items.items.recv().await, Some(Err("broken")));
        assert_eq!(items.items.recv().await, None);
    }
}
