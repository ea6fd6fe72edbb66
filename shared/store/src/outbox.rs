//! The back-sync outbox, `_outbox` (migration V7): edits made in PostgreSQL to the mirror
//! tables, written by triggers (`layout/capture.rs`), drained by back-sync.
//!
//! A drain claims rows with [`Store::claim_outbox`]: due rows in ID order, taken with
//! `FOR UPDATE SKIP LOCKED`, so concurrent drains share the work and never take the
//! same row. A record's rows go together and in order: a row is claimed only when every
//! earlier open row of its record is claimed with it, so a later edit never overtakes
//! an earlier one held by another drain (or waiting for its retry). Claimed rows are
//! `pushing` under a lease with a random ID; a drain that dies leaves them to be claimed
//! again once the lease ends, with `attempts` showing that an earlier claim may have
//! reached Bitrix24 (a create is then looked up before it is added again).
//!
//! Every claimed row ends in [`Store::settle_outbox`] (or [`Store::record_created`] for
//! a create) under its lease: done, conflict, failed, skipped, or back to pending for a
//! retry. Nothing is deleted: the outbox is the record of what was pushed.

use std::time::Duration;

use b24_domain::back_sync::{OutboxEntry, OutboxOp};
use b24_domain::entity::Entity;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::MAX_ERROR_CHARS;
use crate::{Context, Store, StoreError, check_portal, quote_ident, to_db_id};

/// The rows one claim took, under one lease.
#[derive(Clone, Debug)]
pub struct OutboxClaim {
    pub lease: OutboxLease,
    pub entries: Vec<OutboxEntry>,
}

/// The lease of a claim; settling names it, so a drain whose lease ran out (and whose
/// rows another drain took) cannot overwrite that drain's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLease(i64);

/// How one claimed row ended.
#[derive(Clone, Debug, PartialEq)]
pub enum OutboxOutcome {
    Done,
    /// The portal changed the record after the editor saw it; the policy kept the
    /// portal's values.
    Conflict(String),
    /// Try again after the delay.
    Retry {
        error: String,
        after: Duration,
    },
    Failed(String),
    Skipped(String),
}

impl OutboxOutcome {
    fn state(&self) -> &'static str {
        match self {
            OutboxOutcome::Done => "done",
            OutboxOutcome::Conflict(_) => "conflict",
            OutboxOutcome::Retry { .. } => "pending",
            OutboxOutcome::Failed(_) => "failed",
            OutboxOutcome::Skipped(_) => "skipped",
        }
    }

    fn message(&self) -> Option<String> {
        match self {
            OutboxOutcome::Done => None,
            OutboxOutcome::Conflict(m)
            | OutboxOutcome::Failed(m)
            | OutboxOutcome::Skipped(m)
            | OutboxOutcome::Retry { error: m, .. } => {
                Some(m.chars().take(MAX_ERROR_CHARS).collect())
            }
        }
    }

    fn retry_secs(&self) -> f64 {
        match self {
            OutboxOutcome::Retry { after, .. } => after.as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Outbox rows of one portal, entity and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxCount {
    pub entity: String,
    pub state: String,
    pub rows: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// One outbox row for people to read (`b24sync push`, the status page).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub entity: String,
    pub record_id: i64,
    pub op: String,
    pub fields: Vec<String>,
    pub state: String,
    pub attempts: i32,
    pub changed_by: String,
    pub created_at: DateTime<Utc>,
    pub bitrix_id: Option<i64>,
    pub last_error: Option<String>,
}

/// Longest lease a claim may take.
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

impl Store {
    /// Entities of `portal` with rows due to be pushed (pending and due, or claimed
    /// under a lease that ended).
    pub async fn outbox_entities(&self, portal: &str) -> Result<Vec<Entity>, StoreError> {
        check_portal(portal)?;
        let outbox = self.table("_outbox");
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT DISTINCT entity FROM {outbox}
                     WHERE portal = $1 AND ((state = 'pending' AND next_attempt_at <= now())
                                         OR (state = 'pushing' AND lease_until < now()))"
                ),
                &[&portal],
            )
            .await
            .context("finding entities with changes to push")?;
        let mut entities: Vec<Entity> = rows
            .iter()
            .filter_map(|r| r.get::<_, String>(0).parse().ok())
            .collect();
        entities.sort_by_key(|e| e.as_str());
        Ok(entities)
    }

    /// Claims up to `max_rows` due rows of `portal`'s `entity` for `lease` (see the
    /// module documentation).
    pub async fn claim_outbox(
        &self,
        portal: &str,
        entity: Entity,
        max_rows: i64,
        lease: Duration,
    ) -> Result<OutboxClaim, StoreError> {
        check_portal(portal)?;
        let lease_secs = lease.min(MAX_LEASE).as_secs_f64();
        let lease_id: i64 = rand::random();
        let outbox = self.table("_outbox");
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH candidates AS (
                         SELECT id, record_id FROM {outbox}
                         WHERE portal = $1 AND entity = $2
                           AND ((state = 'pending' AND next_attempt_at <= now())
                             OR (state = 'pushing' AND lease_until < now()))
                         ORDER BY id
                         LIMIT $3
                         FOR UPDATE SKIP LOCKED
                     ), heads AS (
                         SELECT c.id FROM candidates c
                         WHERE NOT EXISTS (
                             SELECT 1 FROM {outbox} e
                             WHERE e.portal = $1 AND e.entity = $2 AND e.record_id = c.record_id
                               AND e.id < c.id AND e.state IN ('pending', 'pushing')
                               AND e.id NOT IN (SELECT id FROM candidates))
                     )
                     UPDATE {outbox} o
                     SET state = 'pushing', lease_id = $4, attempts = o.attempts + 1,
                         lease_until = now() + make_interval(secs => $5)
                     FROM heads WHERE o.id = heads.id
                     RETURNING o.id, o.record_id, o.op, o.changes, o.seen_date_modify, o.attempts"
                ),
                &[&portal, &entity.as_str(), &max_rows, &lease_id, &lease_secs],
            )
            .await
            .context("claiming outbox rows")?;
        let mut entries = rows
            .iter()
            .map(|r| {
                let op: String = r.get(2);
                let changes: serde_json::Value = r.get(3);
                Ok(OutboxEntry {
                    id: r.get(0),
                    record_id: r.get(1),
                    op: OutboxOp::parse(&op).ok_or_else(|| {
                        StoreError::Invalid(format!("outbox row has an unknown op {op:?}"))
                    })?,
                    changes: changes.as_object().cloned().unwrap_or_default(),
                    seen_date_modify: r.get(4),
                    attempts: r.get(5),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        entries.sort_by_key(|e| e.id);
        Ok(OutboxClaim {
            lease: OutboxLease(lease_id),
            entries,
        })
    }

    /// Records how claimed rows ended; rows no longer under `lease` are left alone.
    /// Returns how many were recorded.
    pub async fn settle_outbox(
        &self,
        lease: OutboxLease,
        outcomes: &[(i64, OutboxOutcome)],
    ) -> Result<u64, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        settle(&*client, self, lease, outcomes, None).await
    }

    /// A create went through as Bitrix24 record `bitrix_id`: the local row takes the new
    /// ID (or, when the sync already wrote the record under it, gives way to it), open
    /// rows of the local record still to come follow it, and the claimed rows are done;
    /// all in one transaction.
    pub async fn record_created(
        &self,
        portal: &str,
        entity: Entity,
        lease: OutboxLease,
        local_id: i64,
        bitrix_id: u64,
        entries: &[i64],
    ) -> Result<(), StoreError> {
        check_portal(portal)?;
        let bitrix_id = to_db_id(bitrix_id)?;
        let table = self.registered_table(portal, entity).await?;
        let outbox = self.table("_outbox");
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context("starting to record a created record")?;
        let taken: bool = tx
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE portal = $1 AND id = $2)"),
                &[&portal, &bitrix_id],
            )
            .await
            .context("looking for the created record in the mirror")?
            .get(0);
        let renamed = if taken {
            let delete = format!("DELETE FROM {table} WHERE portal = $1 AND id = $2");
            tx.execute(&delete, &[&portal, &local_id]).await
        } else {
            let update = format!("UPDATE {table} SET id = $3 WHERE portal = $1 AND id = $2");
            tx.execute(&update, &[&portal, &local_id, &bitrix_id]).await
        };
        renamed.context("writing the new ID to the mirror row")?;
        tx.execute(
            &format!(
                "UPDATE {outbox} SET record_id = $4
                 WHERE portal = $1 AND entity = $2 AND record_id = $3 AND NOT (id = ANY($5))
                   AND state IN ('pending', 'pushing')"
            ),
            &[&portal, &entity.as_str(), &local_id, &bitrix_id, &entries],
        )
        .await
        .context("pointing later edits at the new ID")?;
        let done: Vec<(i64, OutboxOutcome)> = entries
            .iter()
            .map(|id| (*id, OutboxOutcome::Done))
            .collect();
        settle(&tx, self, lease, &done, Some(bitrix_id)).await?;
        tx.commit().await.context("committing the created record")
    }

    /// The outbox of `portal` by entity and state, with the oldest row of each.
    pub async fn outbox_counts(&self, portal: &str) -> Result<Vec<OutboxCount>, StoreError> {
        check_portal(portal)?;
        let outbox = self.table("_outbox");
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT entity, state, count(*), min(created_at) FROM {outbox}
                     WHERE portal = $1 GROUP BY entity, state ORDER BY entity, state"
                ),
                &[&portal],
            )
            .await
            .context("counting outbox rows")?;
        Ok(rows
            .iter()
            .map(|r| OutboxCount {
                entity: r.get(0),
                state: r.get(1),
                rows: r.get(2),
                oldest: r.get(3),
            })
            .collect())
    }

    /// The latest rows of `portal` in `states` (all states when empty), newest first.
    pub async fn outbox_rows(
        &self,
        portal: &str,
        states: &[&str],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        check_portal(portal)?;
        let outbox = self.table("_outbox");
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT id, entity, record_id, op, ARRAY(SELECT jsonb_object_keys(changes)),
                            state, attempts, changed_by, created_at, bitrix_id, last_error
                     FROM {outbox}
                     WHERE portal = $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2))
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&portal, &states, &limit],
            )
            .await
            .context("listing outbox rows")?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get(0),
                entity: r.get(1),
                record_id: r.get(2),
                op: r.get(3),
                fields: r.get(4),
                state: r.get(5),
                attempts: r.get(6),
                changed_by: r.get(7),
                created_at: r.get(8),
                bitrix_id: r.get(9),
                last_error: r.get(10),
            })
            .collect())
    }

    /// The portal table of `portal`'s `entity`, from the registry.
    async fn registered_table(&self, portal: &str, entity: Entity) -> Result<String, StoreError> {
        let registry = self.table("_mirror_tables");
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT table_name FROM {registry} WHERE portal = $1 AND entity = $2"),
                &[&portal, &entity.as_str()],
            )
            .await
            .context("finding the portal table")?
            .ok_or_else(|| {
                StoreError::Invalid(format!("portal {portal:?} has no {entity} table yet"))
            })?;
        Ok(format!(
            "{}.{}",
            quote_ident(self.schema()),
            quote_ident(&row.get::<_, String>(0))
        ))
    }
}

async fn settle(
    client: &impl tokio_postgres::GenericClient,
    store: &Store,
    lease: OutboxLease,
    outcomes: &[(i64, OutboxOutcome)],
    bitrix_id: Option<i64>,
) -> Result<u64, StoreError> {
    let outbox = store.table("_outbox");
    let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
    let states: Vec<&str> = outcomes.iter().map(|(_, o)| o.state()).collect();
    let errors: Vec<Option<String>> = outcomes.iter().map(|(_, o)| o.message()).collect();
    let delays: Vec<f64> = outcomes.iter().map(|(_, o)| o.retry_secs()).collect();
    client
        .execute(
            &format!(
                "UPDATE {outbox} o
                 SET state = u.state, last_error = u.error, lease_id = NULL, lease_until = NULL,
                     bitrix_id = coalesce($6, o.bitrix_id),
                     next_attempt_at = CASE WHEN u.state = 'pending'
                                            THEN now() + make_interval(secs => u.delay)
                                            ELSE o.next_attempt_at END,
                     finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[]) AS u(id, state, error, delay)
                 WHERE o.id = u.id AND o.state = 'pushing' AND o.lease_id = $5"
            ),
            &[&ids, &states, &errors, &delays, &lease.0, &bitrix_id],
        )
        .await
        .context("recording outbox outcomes")
}
