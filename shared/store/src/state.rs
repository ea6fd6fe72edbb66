//! Where each portal entity's sync continues, the deletions a run found, the lock that
//! lets one run at a time work on a portal entity, and the record of sync runs.
//!
//! Each mode writes only the columns it owns: the cursor (incremental, and a full sync
//! that starts), the full checkpoint, the incremental checkpoint, the reconcile
//! checkpoint.

use b24_domain::entity::Entity;
use b24_domain::sync::{DeletesRefused, IncrementalCheckpoint, RunOutcome};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::{Context, Store, StoreError, check_portal, to_db_id, to_db_ids};

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_deleted: u64,
    pub http_requests: u64,
    /// Why the run failed or was refused, if it was (must not contain secrets).
    pub error: Option<String>,
    /// `None` leaves `_sync_runs.outcome` empty.
    pub outcome: Option<RunOutcome>,
    /// The counts behind a refused deletion.
    pub refused: Option<DeletesRefused>,
}

/// The checkpoints of the modes that continue across runs besides a full sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    pub incremental: Option<IncrementalCheckpoint>,
    /// The last ID an unfinished reconcile compared.
    pub reconcile: Option<u64>,
}

/// Holds the run lock of one portal entity: a session-level advisory lock on a
/// connection of its own, so the lock lives exactly as long as this value. Dropping it
/// closes the connection, which releases the lock even when [`RunLock::release`] was
/// never reached (a cancelled or panicking run): it cannot leak onto the shared
/// connection of a warm process.
pub struct RunLock {
    client: Client,
}

impl RunLock {
    /// False once the lock's connection was closed (and with it the lock).
    pub fn is_held(&self) -> bool {
        !self.client.is_closed()
    }

    /// Releases the lock now rather than when the connection closes, so a process that
    /// is frozen right after the run (a Lambda between invocations) holds nothing.
    pub async fn release(self) {
        // Closing the connection (on drop) releases it anyway.
        let _ = self
            .client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await;
    }
}

/// Tries the 64-bit advisory lock of a portal entity's runs in a schema.
const TRY_RUN_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";

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

    /// Moves the cursor (incremental's column) and nothing else.
    pub async fn save_cursor(
        &self,
        portal: &str,
        entity: Entity,
        cursor: Option<&str>,
    ) -> Result<(), StoreError> {
        self.upsert_state(
            portal,
            entity,
            "saving the sync cursor",
            &["cursor"],
            &[&cursor],
        )
        .await
    }

    /// Writes a full sync's checkpoint and start time and nothing else.
    pub async fn save_full_checkpoint(
        &self,
        portal: &str,
        entity: Entity,
        checkpoint: Option<u64>,
        started_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let checkpoint = checkpoint.map(to_db_id).transpose()?;
        self.upsert_state(
            portal,
            entity,
            "saving the full sync checkpoint",
            &["full_checkpoint", "full_started_at"],
            &[&checkpoint, &started_at],
        )
        .await
    }

    pub async fn load_checkpoints(
        &self,
        portal: &str,
        entity: Entity,
    ) -> Result<Checkpoints, StoreError> {
        check_portal(portal)?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT incremental_since, incremental_after_id, incremental_target, reconcile_checkpoint
                     FROM {} WHERE portal = $1 AND entity = $2",
                    self.table("_sync_state")
                ),
                &[&portal, &entity.as_str()],
            )
            .await
            .context("loading sync checkpoints")?;
        Ok(row.map_or_else(Checkpoints::default, |r| Checkpoints {
            incremental: r
                .get::<_, Option<String>>(0)
                .map(|since| IncrementalCheckpoint {
                    since,
                    after_id: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
                    target: r.get(2),
                }),
            reconcile: r.get::<_, Option<i64>>(3).map(|id| id as u64),
        }))
    }

    /// Writes (or with `None` clears) the incremental checkpoint, and nothing else.
    pub async fn save_incremental_checkpoint(
        &self,
        portal: &str,
        entity: Entity,
        checkpoint: Option<&IncrementalCheckpoint>,
    ) -> Result<(), StoreError> {
        let since = checkpoint.map(|c| c.since.as_str());
        let after_id = checkpoint.map(|c| to_db_id(c.after_id)).transpose()?;
        let target = checkpoint.and_then(|c| c.target.as_deref());
        self.upsert_state(
            portal,
            entity,
            "saving the incremental checkpoint",
            &[
                "incremental_since",
                "incremental_after_id",
                "incremental_target",
            ],
            &[&since, &after_id, &target],
        )
        .await
    }

    /// Ends an incremental pass: the new cursor and the cleared checkpoint in one
    /// statement, so a crash cannot leave one without the other.
    pub async fn complete_incremental(
        &self,
        portal: &str,
        entity: Entity,
        cursor: Option<&str>,
    ) -> Result<(), StoreError> {
        let none: Option<&str> = None;
        let no_id: Option<i64> = None;
        self.upsert_state(
            portal,
            entity,
            "completing the incremental pass",
            &[
                "cursor",
                "incremental_since",
                "incremental_after_id",
                "incremental_target",
            ],
            &[&cursor, &none, &no_id, &none],
        )
        .await
    }

    /// Writes (or with `None` clears) the reconcile checkpoint, and nothing else.
    pub async fn save_reconcile_checkpoint(
        &self,
        portal: &str,
        entity: Entity,
        checkpoint: Option<u64>,
    ) -> Result<(), StoreError> {
        let checkpoint = checkpoint.map(to_db_id).transpose()?;
        self.upsert_state(
            portal,
            entity,
            "saving the reconcile checkpoint",
            &["reconcile_checkpoint"],
            &[&checkpoint],
        )
        .await
    }

    /// Inserts the portal entity's state row or updates only `columns` of it.
    async fn upsert_state(
        &self,
        portal: &str,
        entity: Entity,
        what: &str,
        columns: &[&str],
        values: &[&(dyn ToSql + Sync)],
    ) -> Result<(), StoreError> {
        check_portal(portal)?;
        let placeholders: Vec<String> = (3..3 + columns.len()).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO {} (portal, entity, {}, updated_at) VALUES ($1, $2, {}, now())
             ON CONFLICT (portal, entity) DO UPDATE SET {}, updated_at = now()",
            self.table("_sync_state"),
            columns.join(", "),
            placeholders.join(", "),
            updates.join(", "),
        );
        let entity = entity.as_str();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&portal, &entity];
        params.extend_from_slice(values);
        let client = self.client().await?;
        client.execute(&sql, &params).await.context(what)?;
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
        let outcome = stats.outcome.map(RunOutcome::as_str);
        let would_delete = stats.refused.map(|r| count(r.would_delete));
        let live_rows = stats.refused.map(|r| count(r.live_rows));
        let client = self.client().await?;
        let updated = client
            .execute(
                &format!(
                    "UPDATE {} SET finished_at = clock_timestamp(), rows_read = $2, rows_written = $3, rows_deleted = $4,
                         http_requests = $5, error = $6, outcome = $7, would_delete = $8, live_rows = $9
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
                    &outcome,
                    &would_delete,
                    &live_rows,
                ],
            )
            .await
            .context("recording the end of a sync run")?;
        if updated == 0 {
            return Err(StoreError::Invalid(format!("no sync run with id {run_id}")));
        }
        Ok(())
    }

    /// Takes the run lock of a portal entity, or answers `None` when another run (in
    /// this process or any other) holds it.
    pub async fn try_lock_run(
        &self,
        portal: &str,
        entity: Entity,
    ) -> Result<Option<RunLock>, StoreError> {
        check_portal(portal)?;
        let client = self.inner.connection.open_another().await?;
        // The server probes this otherwise idle connection, so a process that died
        // mid-run (a Lambda killed at its timeout) frees the lock within about a
        // minute rather than after the operating system's two-hour keepalive default.
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3",
            )
            .await
            .context("setting keepalives on the run lock's connection")?;
        let key = format!("b24-sync:run:{}:{portal}:{entity}", self.schema());
        let locked: bool = client
            .query_one(TRY_RUN_LOCK, &[&key])
            .await
            .context("taking the run lock")?
            .get(0);
        Ok(locked.then_some(RunLock { client }))
    }

    /// Live (not soft-deleted) mirror rows of the portal entity.
    pub async fn live_count(&self, portal: &str, entity: Entity) -> Result<u64, StoreError> {
        check_portal(portal)?;
        let client = self.client().await?;
        let sql = format!(
            "SELECT count(*) FROM {} WHERE portal = $1 AND deleted_at IS NULL",
            self.portal_table(portal, entity)
        );
        match client.query_one(&sql, &[&portal]).await {
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0),
            result => Ok(result
                .context(format_args!("counting live {entity} rows"))?
                .get::<_, i64>(0) as u64),
        }
    }

    /// Remembers IDs a `mode` run found gone, until its listing ends.
    pub async fn add_pending_deletes(
        &self,
        portal: &str,
        entity: Entity,
        mode: &str,
        ids: &[u64],
    ) -> Result<(), StoreError> {
        check_portal(portal)?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids = to_db_ids(ids)?;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO {} (portal, entity, mode, id) SELECT $1, $2, $3, unnest($4::bigint[])
                     ON CONFLICT DO NOTHING",
                    self.table("_sync_pending_deletes")
                ),
                &[&portal, &entity.as_str(), &mode, &ids],
            )
            .await
            .context("remembering rows gone from the portal")?;
        Ok(())
    }

    /// The IDs a `mode` run found gone that are still live in the mirror (another run
    /// may have soft-deleted some meanwhile), ascending.
    pub async fn pending_deletes(
        &self,
        portal: &str,
        entity: Entity,
        mode: &str,
    ) -> Result<Vec<u64>, StoreError> {
        check_portal(portal)?;
        let client = self.client().await?;
        let sql = format!(
            "SELECT p.id FROM {} p JOIN {} m ON m.portal = p.portal AND m.id = p.id
             WHERE p.portal = $1 AND p.entity = $2 AND p.mode = $3 AND m.deleted_at IS NULL
             ORDER BY p.id",
            self.table("_sync_pending_deletes"),
            self.portal_table(portal, entity)
        );
        match client
            .query(&sql, &[&portal, &entity.as_str(), &mode])
            .await
        {
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(Vec::new()),
            result => Ok(result
                .context("reading rows gone from the portal")?
                .iter()
                .map(|r| r.get::<_, i64>(0) as u64)
                .collect()),
        }
    }

    /// Forgets the IDs a `mode` run found gone: all of them, or only `ids`.
    pub async fn clear_pending_deletes(
        &self,
        portal: &str,
        entity: Entity,
        mode: &str,
        ids: Option<&[u64]>,
    ) -> Result<(), StoreError> {
        check_portal(portal)?;
        let ids = ids.map(to_db_ids).transpose()?;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE portal = $1 AND entity = $2 AND mode = $3
                     AND ($4::bigint[] IS NULL OR id = ANY($4))",
                    self.table("_sync_pending_deletes")
                ),
                &[&portal, &entity.as_str(), &mode, &ids],
            )
            .await
            .context("forgetting rows gone from the portal")?;
        Ok(())
    }
}
