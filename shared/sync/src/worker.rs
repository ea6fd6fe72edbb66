//! The change worker's application logic: one portal entity's share of a batch of change
//! messages, applied to the mirror by reading the named records again from the portal.
//! A message is a hint, never the data, so duplicates and reordering change nothing.
//!
//! Cost: one request for the field metadata (the table layout follows the portal's
//! fields, as in every sync run), then one `batch` request of 50 `@ID` lookups of 50 IDs
//! per 2,500 records.

use std::time::Instant;

use b24_domain::change::ChangeGroup;
use b24_domain::sync::{DeleteGuard, DeletesRefused, RunOutcome};

use crate::engine::RECHECK_BATCH;
use crate::{SyncError, SyncSummary, Syncer};

/// The `mode` of a change worker's summary.
pub const CHANGES_MODE: &str = "changes";

/// What applying one portal entity's changes did.
#[derive(Clone, Debug)]
pub struct ChangesApplied {
    /// `mode` is [`CHANGES_MODE`]; `rows_read` counts the records the portal returned.
    pub summary: SyncSummary,
    /// Confirmed deletions the guard refused, with its counts: nothing of them was
    /// deleted, and the messages that named them should be delivered again.
    pub refused: Option<RefusedDeletions>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefusedDeletions {
    /// Ascending.
    pub ids: Vec<u64>,
    pub counts: DeletesRefused,
}

impl Syncer<'_> {
    /// Applies one group of changes: looks every named record up by ID and upserts what
    /// the portal returned (a row never goes back to an older `DATE_MODIFY`), then
    /// soft-deletes the records a delete event named that the lookup no longer finds,
    /// if the guard allows that many of the entity's live rows; otherwise it deletes
    /// none of them and says so in [`ChangesApplied::refused`].
    ///
    /// Takes no run lock, so events keep flowing while a long scheduled run holds it:
    /// it writes only rows, which the store's version rule orders between concurrent
    /// writers, and deletions the portal confirmed, never a run's cursor or checkpoints.
    /// Fails with [`SyncError::OutOfTime`] when `deadline` comes before the portal
    /// answers; what was written by then stays (applying the group again is harmless).
    pub async fn apply_changes<K: Clone>(
        &self,
        group: &ChangeGroup<K>,
        guard: DeleteGuard,
        deadline: Option<Instant>,
    ) -> Result<ChangesApplied, SyncError> {
        let started = Instant::now();
        let usage_before = self.client.stats();
        let entity = group.entity;
        let mut summary = SyncSummary {
            portal: self.portal.to_string(),
            entity: entity.to_string(),
            mode: CHANGES_MODE.to_string(),
            ..SyncSummary::default()
        };
        let prepared = self.prepare_fields(entity, deadline, &mut summary).await?;
        let mut found = Vec::new();
        for ids in group.ids().chunks(RECHECK_BATCH) {
            let found_ids = self
                .look_up(&prepared, deadline, ids, &mut summary)
                .await?
                .ok_or(SyncError::OutOfTime("looking the records up"))?;
            found.extend(found_ids);
        }
        found.sort_unstable();
        let gone = group.confirmed_deletions(&found);
        // Only live rows count: a record added and deleted before any sync saw it has
        // nothing to delete and must not make the guard refuse.
        let gone = self.store.live_among(self.portal, entity, &gone).await?;
        let mut refused = None;
        if !gone.is_empty() {
            let live = self.store.live_count(self.portal, entity).await?;
            match guard.check(gone.len() as u64, live) {
                Ok(()) => {
                    summary.rows_deleted =
                        self.store.soft_delete(self.portal, entity, &gone).await?
                }
                Err(counts) => refused = Some(RefusedDeletions { ids: gone, counts }),
            }
        }
        let outcome = match refused {
            None => RunOutcome::Completed,
            Some(_) => RunOutcome::Refused,
        };
        summary.outcome = Some(outcome);
        summary.completed = refused.is_none();
        summary.record_usage(&usage_before, &self.client.stats());
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(ChangesApplied { summary, refused })
    }
}
