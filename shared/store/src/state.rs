//! Where each portal entity's sync continues, and the record of sync runs.

use b24_domain::entity::Entity;
use chrono::{DateTime, Utc};

use crate::{Context, Store, StoreError, check_portal, to_db_id};

/// The resumable position of one portal entity's sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The last `DATE_MODIFY` seen, verbatim (the portal's own offset kept).
    pub cursor: Option<String>,
    /// The last ID written by a full sync that has not finished.
    pub full_checkpoint: Option<u64>,
    pub full_started_at: Option<DateTime<Utc>>,
}

/// The outcome of one sync run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_deleted: u64,
    pub http_requests: u64,
    /// Why the run failed, if it did (must not contain secrets).
    pub error: Option<String>,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    pub async fn load_state(&self, portal: &str, entity: Entity) -> Result<SyncState, StoreError> {
        check_portal(portal)?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT cursor, full_checkpoint, full_started_at FROM {} WHERE portal = $1 AND entity = $2",
                    self.table("_sync_state")
                ),
                &[&portal, &entity.as_str()],
            )
            .await
            .context("loading sync state")?;
        Ok(row.map_or_else(SyncState::default, |r| SyncState {
            cursor: r.get(0),
            full_checkpoint: r.get::<_, Option<i64>>(1).map(|id| id as u64),
            full_started_at: r.get(2),
        }))
    }

    pub async fn save_state(
        &self,
        portal: &str,
        entity: Entity,
        state: &SyncState,
    ) -> Result<(), StoreError> {
        check_portal(portal)?;
        let checkpoint = state.full_checkpoint.map(to_db_id).transpose()?;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO {} (portal, entity, cursor, full_checkpoint, full_started_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, now())
                     ON CONFLICT (portal, entity) DO UPDATE SET cursor = EXCLUDED.cursor,
                         full_checkpoint = EXCLUDED.full_checkpoint, full_started_at = EXCLUDED.full_started_at,
                         updated_at = now()",
                    self.table("_sync_state")
                ),
                &[&portal, &entity.as_str(), &state.cursor, &checkpoint, &state.full_started_at],
            )
            .await
            .context("saving sync state")?;
        Ok(())
    }

    /// Records the start of a run; `mode` is free text such as `full` or `incremental`.
    pub async fn start_run(
        &self,
        portal: &str,
        entity: Entity,
        mode: &str,
    ) -> Result<i64, StoreError> {
        check_portal(portal)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {} (portal, entity, mode) VALUES ($1, $2, $3) RETURNING id",
                    self.table("_sync_runs")
                ),
                &[&portal, &entity.as_str(), &mode],
            )
            .await
            .context("recording the start of a sync run")?;
        Ok(row.get(0))
    }

    pub async fn finish_run(&self, run_id: i64, stats: &RunStats) -> Result<(), StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                &format!(
                    "UPDATE {} SET finished_at = clock_timestamp(), rows_read = $2, rows_written = $3, rows_deleted = $4,
                         http_requests = $5, error = $6
                     WHERE id = $1",
                    self.table("_sync_runs")
                ),
                &[
                    &run_id,
                    &count(stats.rows_read),
                    &count(stats.rows_written),
                    &count(stats.rows_deleted),
                    &count(stats.http_requests),
                    &stats.error,
                ],
            )
            .await
            .context("recording the end of a sync run")?;
        if updated == 0 {
            return Err(StoreError::Invalid(format!("no sync run with id {run_id}")));
        }
        Ok(())
    }
}
