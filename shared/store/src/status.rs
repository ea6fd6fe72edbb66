//! What the status page and the schema description read: per portal entity the exact
//! row counts kept by migration V6's triggers (`_mirror_counts`, never a `COUNT` over a
//! mirror table), the sync state, the latest runs (index look-ups), the runs of a recent
//! window, the forward ledger's open rows and, once back-sync's `_outbox` exists, its
//! backlog; and every mirror table's columns. Only `SELECT`s, in one read-only
//! transaction per snapshot, so a read-only database role serves them all.

use std::collections::HashMap;
use std::str::FromStr;

use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use chrono::{DateTime, Utc};
use tokio_postgres::{IsolationLevel, Row as PgRow, Transaction};

use crate::layout::ColumnInfo;
use crate::{Context, Store, StoreError};

/// The modes whose last completed run the snapshot reports.
const MODES: [Mode; 4] = [Mode::Incremental, Mode::Full, Mode::Resume, Mode::Reconcile];

/// Outbox states reported as backlog or as needing attention (`done` and `skipped` rows,
/// the vast majority, are never counted).
const OUTBOX_STATES: [&str; 4] = ["pending", "pushing", "conflict", "failed"];

/// What a snapshot covers: the portal entities to report (the configured ones; every
/// registered table is reported too), the window of recent runs and how many of them
/// to return per portal entity at most.
#[derive(Clone, Debug)]
pub struct StatusQuery {
    pub entities: Vec<(String, Entity)>,
    pub runs_since: DateTime<Utc>,
    pub max_runs: i64,
}

/// Everything the status page shows, read in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusSnapshot {
    /// The database's clock when the snapshot was taken: the reference for every age.
    pub taken_at: DateTime<Utc>,
    /// Ordered by portal, then entity.
    pub entities: Vec<EntityStatus>,
    /// Open (not `done`) forward-ledger rows by route, source portal and state.
    pub forward_backlog: Vec<ForwardBacklog>,
    /// `None` while the database has no `_outbox` table (before back-sync's migration).
    pub outbox: Option<Vec<OutboxBacklog>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EntityStatus {
    pub portal: String,
    pub entity: Entity,
    /// `None` before the first run created the portal's table.
    pub table_name: Option<String>,
    pub live_rows: Option<i64>,
    pub deleted_rows: Option<i64>,
    /// The newest `DATE_MODIFY` stored in the table by any writer.
    pub newest_date_modify: Option<DateTime<Utc>>,
    /// The incremental cursor, verbatim (the portal's own offset).
    pub cursor: Option<String>,
    /// The last ID of an unfinished full sync, and when it started.
    pub full_checkpoint: Option<i64>,
    pub full_started_at: Option<DateTime<Utc>>,
    /// The last completed run of each mode that has one.
    pub last_completed: Vec<RunRecord>,
    /// The latest run, whatever its outcome (`None` outcome: still running, or ended
    /// without recording it).
    pub last_run: Option<RunRecord>,
    /// The latest failed or refused run, however old.
    pub last_unsuccessful: Option<RunRecord>,
    /// Runs started since `runs_since`, newest first, at most `max_runs`.
    pub recent_runs: Vec<RunRecord>,
}

/// One row of `_sync_runs`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub mode: String,
    pub outcome: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows_read: Option<i64>,
    pub rows_written: Option<i64>,
    pub rows_deleted: Option<i64>,
    pub http_requests: Option<i64>,
    pub error: Option<String>,
    /// A refusal's counts: what the run would have deleted, of how many live rows.
    pub would_delete: Option<i64>,
    pub live_rows: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardBacklog {
    pub route: String,
    pub source_portal: String,
    pub target_portal: String,
    pub state: String,
    pub rows: i64,
    pub oldest_updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxBacklog {
    pub portal: String,
    pub state: String,
    pub rows: i64,
    pub oldest_created_at: DateTime<Utc>,
}

/// One portal table as it is in the database, with the recorded meaning of its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorTableSchema {
    pub portal: String,
    pub entity: Entity,
    pub table_name: String,
    /// Every column in table order: name and PostgreSQL type (`format_type`).
    pub columns: Vec<(String, String)>,
    /// The portal's fields of the entity (see [`Store::describe_columns`]).
    pub fields: Vec<ColumnInfo>,
}

const RUN_COLUMNS: &str =
    "r.id, r.mode, r.outcome, r.started_at, r.finished_at, r.rows_read, r.rows_written,
    r.rows_deleted, r.http_requests, r.error, r.would_delete, r.live_rows";

fn run_record(row: &PgRow, first: usize) -> RunRecord {
    RunRecord {
        id: row.get(first),
        mode: row.get(first + 1),
        outcome: row.get(first + 2),
        started_at: row.get(first + 3),
        finished_at: row.get(first + 4),
        rows_read: row.get(first + 5),
        rows_written: row.get(first + 6),
        rows_deleted: row.get(first + 7),
        http_requests: row.get(first + 8),
        error: row.get(first + 9),
        would_delete: row.get(first + 10),
        live_rows: row.get(first + 11),
    }
}

impl Store {
    /// The status page's data in one read-only transaction (a consistent view). Every
    /// query is an index look-up or reads a summary row; none counts a mirror table.
    pub async fn status_snapshot(&self, query: &StatusQuery) -> Result<StatusSnapshot, StoreError> {
        let mut session = self.client().await?;
        let tx = session
            .build_transaction()
            .read_only(true)
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await
            .context("starting the status snapshot")?;
        let taken_at: DateTime<Utc> = tx
            .query_one("SELECT now()", &[])
            .await
            .context("reading the database clock")?
            .get(0);
        let mut entities = self.entity_rows(&tx, &query.entities).await?;
        let portals: Vec<String> = entities.iter().map(|e| e.portal.clone()).collect();
        let names: Vec<&str> = entities.iter().map(|e| e.entity.as_str()).collect();
        let index: HashMap<(String, String), usize> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.portal.clone(), e.entity.as_str().to_string()), i))
            .collect();
        let runs = self.table("_sync_runs");
        let pairs = "unnest($1::text[], $2::text[]) AS p(portal, entity)";
        let modes: Vec<&str> = MODES.iter().map(|m| m.as_str()).collect();
        let completed = tx
            .query(
                &format!(
                    "SELECT p.portal, p.entity, {RUN_COLUMNS} FROM {pairs} CROSS JOIN unnest($3::text[]) AS m(mode)
                     CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE r.portal = p.portal AND r.entity = p.entity
                         AND r.mode = m.mode AND r.outcome = 'completed' ORDER BY r.started_at DESC LIMIT 1) r"
                ),
                &[&portals, &names, &modes],
            )
            .await
            .context("reading the last completed runs")?;
        let latest = tx
            .query(
                &format!(
                    "SELECT p.portal, p.entity, {RUN_COLUMNS} FROM {pairs}
                     CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE r.portal = p.portal AND r.entity = p.entity
                         ORDER BY r.started_at DESC LIMIT 1) r"
                ),
                &[&portals, &names],
            )
            .await
            .context("reading the latest runs")?;
        let unsuccessful = tx
            .query(
                &format!(
                    "SELECT p.portal, p.entity, {RUN_COLUMNS} FROM {pairs}
                     CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE r.portal = p.portal AND r.entity = p.entity
                         AND r.outcome IN ('failed', 'refused') ORDER BY r.started_at DESC LIMIT 1) r"
                ),
                &[&portals, &names],
            )
            .await
            .context("reading the latest failed runs")?;
        let recent = tx
            .query(
                &format!(
                    "SELECT p.portal, p.entity, {RUN_COLUMNS} FROM {pairs}
                     CROSS JOIN LATERAL (SELECT * FROM {runs} r WHERE r.portal = p.portal AND r.entity = p.entity
                         AND r.started_at >= $3 ORDER BY r.started_at DESC LIMIT $4) r"
                ),
                &[&portals, &names, &query.runs_since, &query.max_runs],
            )
            .await
            .context("reading the recent runs")?;
        let mut place = |rows: Vec<PgRow>, put: fn(&mut EntityStatus, RunRecord)| {
            for row in rows {
                let key = (row.get::<_, String>(0), row.get::<_, String>(1));
                if let Some(&i) = index.get(&key) {
                    put(&mut entities[i], run_record(&row, 2));
                }
            }
        };
        place(completed, |e, run| e.last_completed.push(run));
        place(latest, |e, run| e.last_run = Some(run));
        place(unsuccessful, |e, run| e.last_unsuccessful = Some(run));
        place(recent, |e, run| e.recent_runs.push(run));
        let forward_backlog = self.forward_backlog(&tx).await?;
        let outbox = self.outbox_backlog(&tx, &portals).await?;
        tx.commit().await.context("ending the status snapshot")?;
        Ok(StatusSnapshot {
            taken_at,
            entities,
            forward_backlog,
            outbox,
        })
    }

    /// The portal entities asked for and every registered table, with their counts and
    /// sync state.
    async fn entity_rows(
        &self,
        tx: &Transaction<'_>,
        wanted: &[(String, Entity)],
    ) -> Result<Vec<EntityStatus>, StoreError> {
        let portals: Vec<&str> = wanted.iter().map(|(p, _)| p.as_str()).collect();
        let names: Vec<&str> = wanted.iter().map(|(_, e)| e.as_str()).collect();
        let rows = tx
            .query(
                &format!(
                    "WITH pairs AS (
                         SELECT portal, entity FROM unnest($1::text[], $2::text[]) AS p(portal, entity)
                         UNION SELECT portal, entity FROM {tables})
                     SELECT p.portal, p.entity, t.table_name, c.live_rows, c.deleted_rows, c.newest_date_modify,
                            s.cursor, s.full_checkpoint, s.full_started_at
                     FROM pairs p
                     LEFT JOIN {tables} t ON t.portal = p.portal AND t.entity = p.entity
                     LEFT JOIN {counts} c ON c.table_name = t.table_name
                     LEFT JOIN {state} s ON s.portal = p.portal AND s.entity = p.entity
                     ORDER BY p.portal, p.entity",
                    tables = self.table("_mirror_tables"),
                    counts = self.table("_mirror_counts"),
                    state = self.table("_sync_state"),
                ),
                &[&portals, &names],
            )
            .await
            .context("reading the mirror counts and sync state")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                // A registered entity this version does not know is not reported.
                let entity = Entity::from_str(r.get(1)).ok()?;
                Some(EntityStatus {
                    portal: r.get(0),
                    entity,
                    table_name: r.get(2),
                    live_rows: r.get(3),
                    deleted_rows: r.get(4),
                    newest_date_modify: r.get(5),
                    cursor: r.get(6),
                    full_checkpoint: r.get(7),
                    full_started_at: r.get(8),
                    last_completed: Vec::new(),
                    last_run: None,
                    last_unsuccessful: None,
                    recent_runs: Vec::new(),
                })
            })
            .collect())
    }

    /// The ledger's open rows, read through its partial index of rows not `done`.
    async fn forward_backlog(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<ForwardBacklog>, StoreError> {
        let rows = tx
            .query(
                &format!(
                    "SELECT route, source_portal, target_portal, state, count(*), min(updated_at)
                     FROM {} WHERE state <> 'done'
                     GROUP BY route, source_portal, target_portal, state ORDER BY route, source_portal, state",
                    self.table("_forward_ledger")
                ),
                &[],
            )
            .await
            .context("reading the forward backlog")?;
        Ok(rows
            .iter()
            .map(|r| ForwardBacklog {
                route: r.get(0),
                source_portal: r.get(1),
                target_portal: r.get(2),
                state: r.get(3),
                rows: r.get(4),
                oldest_updated_at: r.get(5),
            })
            .collect())
    }

    /// The outbox's rows to push or to look at, per portal and state (an index range
    /// each), or `None` when there is no outbox yet.
    async fn outbox_backlog(
        &self,
        tx: &Transaction<'_>,
        portals: &[String],
    ) -> Result<Option<Vec<OutboxBacklog>>, StoreError> {
        let outbox = self.table("_outbox");
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&outbox])
            .await
            .context("looking for the outbox")?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let mut portals = portals.to_vec();
        portals.dedup();
        let states = OUTBOX_STATES.to_vec();
        let rows = tx
            .query(
                &format!(
                    "SELECT p.portal, s.state, o.rows, o.oldest
                     FROM unnest($1::text[]) AS p(portal) CROSS JOIN unnest($2::text[]) AS s(state)
                     CROSS JOIN LATERAL (SELECT count(*) AS rows, min(created_at) AS oldest FROM {outbox}
                                         WHERE portal = p.portal AND state = s.state
                                           -- Conflicts and failures stay in the outbox: the
                                           -- last day's say how back-sync is doing.
                                           AND (s.state NOT IN ('conflict', 'failed')
                                                OR finished_at > now() - interval '24 hours')) o
                     WHERE o.rows > 0 ORDER BY p.portal, s.state"
                ),
                &[&portals, &states],
            )
            .await
            .context("reading the outbox backlog")?;
        Ok(Some(
            rows.iter()
                .map(|r| OutboxBacklog {
                    portal: r.get(0),
                    state: r.get(1),
                    rows: r.get(2),
                    oldest_created_at: r.get(3),
                })
                .collect(),
        ))
    }

    /// Every registered portal table that exists, with its columns as they are and the
    /// recorded meaning of its fields, ordered by portal and entity.
    pub async fn mirror_schema(&self) -> Result<Vec<MirrorTableSchema>, StoreError> {
        let tables = {
            let client = self.client().await?;
            client
                .query(
                    &format!(
                        "SELECT t.portal, t.entity, t.table_name,
                                array_agg(a.attname::text ORDER BY a.attnum),
                                array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                         FROM {} t
                         JOIN pg_attribute a
                           ON a.attrelid = to_regclass(quote_ident($1) || '.' || quote_ident(t.table_name))
                          AND a.attnum > 0 AND NOT a.attisdropped
                         GROUP BY t.portal, t.entity, t.table_name
                         ORDER BY t.portal, t.entity",
                        self.table("_mirror_tables")
                    ),
                    &[&self.schema()],
                )
                .await
                .context("reading the mirror tables' columns")?
        };
        let mut schema = Vec::with_capacity(tables.len());
        for row in &tables {
            let Ok(entity) = Entity::from_str(row.get(1)) else {
                continue;
            };
            let portal: String = row.get(0);
            let names: Vec<String> = row.get(3);
            let types: Vec<String> = row.get(4);
            schema.push(MirrorTableSchema {
                fields: self.describe_columns(&portal, entity).await?,
                portal,
                entity,
                table_name: row.get(2),
                columns: names.into_iter().zip(types).collect(),
            });
        }
        Ok(schema)
    }
}
