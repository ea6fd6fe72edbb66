//! The deal-forwarding robot's ledger, `_forward_ledger`: one row per route and source
//! deal, which makes "exactly one target deal per source deal" hold across retries,
//! concurrent invocations and ambiguous failures.
//!
//! A forward starts with [`Store::claim_forward`], one `INSERT ... ON CONFLICT DO
//! UPDATE` that creates the row or takes it over atomically:
//!
//! - the row knows its target deal: [`Claim::Update`] (a re-run robot updates it);
//! - it does not: [`Claim::Add`]; the claimant alone may add the deal until its lease
//!   ends. `look_up_first` is false only for a row this claim created; any earlier
//!   attempt (ambiguous, crashed, failed) may have added the deal, so the claimant
//!   searches the target by `ORIGINATOR_ID` / `ORIGIN_ID` before adding;
//! - another claim holds a live lease: [`Claim::Busy`]; the caller fails the job and
//!   the queue retries it later.
//!
//! Every claim, update runs too, takes a lease, so at most one invocation works on a
//! source deal at a time (two concurrent claims of one deal never both get `Add`, and
//! two runs never interleave their writes to the target deal). The lease must outlast
//! the invocation (the function's timeout plus a margin): Lambda ends an invocation at
//! its timeout, so once a lease has run out its claimant is gone, and the takeover's
//! look-up sees whatever it added.
//!
//! A claim carries a random lease ID chosen before the statement is sent, so the
//! store's retry of a statement that met a lost connection recognises its own lease
//! instead of finding itself busy. The later writes name the [`Lease`]:
//!
//! - [`Store::mark_ambiguous`]: an add's outcome is unknown; the lease is kept (the
//!   claimant looks the deal up next), and every later claim looks up first until a
//!   target deal is recorded.
//! - [`Store::record_target`] / [`Store::record_forwarded`]: the add (or the look-up)
//!   found the deal / the update went through.
//! - [`Store::record_failure`]: the run failed; the lease is released, the row waits
//!   for the retry (`pending`) or, on the last attempt, is `failed` (the job goes to
//!   the dead-letter queue).
//!
//! What happened on the target is recorded whoever sends it (a target deal found, an
//! ambiguous add, a successful forward are facts); `state` and the lease change only
//! for the lease's holder, or on an idle row for a success. A failure reported under a
//! lease that was taken over is not recorded: the current holder's outcome counts.
//!
//! `last_error` is stored as given (cut to [`MAX_ERROR_CHARS`]): callers pass the
//! redacted text of their errors, never a webhook URL or token.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row as PgRow;

use crate::{Context, Store, StoreError, check_portal, to_db_id};

/// The longest `last_error` kept, in characters.
pub const MAX_ERROR_CHARS: usize = 2_000;

/// The longest lease a claim may take: longer than any Lambda invocation (15 minutes).
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// Rounds of claim and inspection before a claim that keeps racing a releasing holder
/// reports the deal busy.
const CLAIM_ROUNDS: usize = 3;

/// One source deal on one route: the ledger row's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForwardKey {
    pub route: String,
    pub source_portal: String,
    pub source_deal_id: u64,
}

impl ForwardKey {
    pub fn new(route: &str, source_portal: &str, source_deal_id: u64) -> ForwardKey {
        ForwardKey {
            route: route.to_string(),
            source_portal: source_portal.to_string(),
            source_deal_id,
        }
    }

    /// The deal ID as the `bigint` column holds it, after checking every part.
    fn checked(&self) -> Result<i64, StoreError> {
        if self.route.trim().is_empty() {
            return Err(StoreError::Invalid("the route name is empty".into()));
        }
        check_portal(&self.source_portal)?;
        if self.source_deal_id == 0 {
            return Err(StoreError::Invalid("source deal ID 0 is not a deal".into()));
        }
        to_db_id(self.source_deal_id)
    }
}

impl fmt::Display for ForwardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "route {:?}, source portal {:?}, deal {}",
            self.route, self.source_portal, self.source_deal_id
        )
    }
}

/// A claim's right to work on one source deal until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    key: ForwardKey,
    id: i64,
    until: DateTime<Utc>,
}

impl Lease {
    pub fn key(&self) -> &ForwardKey {
        &self.key
    }

    /// When the lease ends (the database's clock): after it, another claim may take
    /// the deal over.
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }
}

/// The answer of [`Store::claim_forward`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The deal was forwarded before: update `target_deal_id` on the target.
    Update { lease: Lease, target_deal_id: u64 },
    /// No target deal is known: the lease's holder alone may add one. With
    /// `look_up_first`, an earlier attempt may have added it: search the target by
    /// `ORIGINATOR_ID` / `ORIGIN_ID` and record what is found instead of adding.
    Add { lease: Lease, look_up_first: bool },
    /// Another invocation holds the deal until `until` (which may have passed by the
    /// time the caller reads it): fail the job so the queue retries it later.
    Busy { until: DateTime<Utc> },
}

/// Where a source deal's forwarding stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardState {
    /// A run failed and a retry is expected.
    Pending,
    /// A claim holds the lease to add the target deal (or to find it).
    Adding,
    /// A claim holds the lease to update the known target deal.
    Updating,
    /// The last run forwarded the deal.
    Done,
    /// Given up after the last attempt; the job went to the dead-letter queue. The
    /// next robot run or `b24sync forward` claims the deal again.
    Failed,
}

impl ForwardState {
    pub const ALL: [ForwardState; 5] = [
        ForwardState::Pending,
        ForwardState::Adding,
        ForwardState::Updating,
        ForwardState::Done,
        ForwardState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ForwardState::Pending => "pending",
            ForwardState::Adding => "adding",
            ForwardState::Updating => "updating",
            ForwardState::Done => "done",
            ForwardState::Failed => "failed",
        }
    }
}

impl fmt::Display for ForwardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForwardState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ForwardState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown forward state {s:?}; expected one of pending, adding, updating, done, failed"
                ))
            })
    }
}

/// One ledger row, for the status page and the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: ForwardKey,
    pub target_portal: String,
    pub target_deal_id: Option<u64>,
    pub state: ForwardState,
    /// An add may have been applied unseen: the next claim looks up first.
    pub ambiguous: bool,
    /// Failed runs since the last successful forward.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The end of the current (or last, unreleased) claim's lease.
    pub lease_until: Option<DateTime<Utc>>,
    /// Successful forwards: the add, then each update.
    pub forwards: u32,
    pub forwarded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which rows [`Store::list_forwards`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardFilter {
    /// Only this route's rows.
    pub route: Option<String>,
    /// Only rows not `done`: the backlog, the failures and the forwards under way.
    pub open_only: bool,
}

const ENTRY_COLUMNS: &str = "route, source_portal, source_deal_id, target_portal, target_deal_id, state, \
     ambiguous, attempts, last_error, lease_until, forwards, forwarded_at, created_at, updated_at";

fn entry(row: &PgRow) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        key: ForwardKey {
            route: row.get(0),
            source_portal: row.get(1),
            source_deal_id: row.get::<_, i64>(2) as u64,
        },
        target_portal: row.get(3),
        target_deal_id: row.get::<_, Option<i64>>(4).map(|id| id as u64),
        state: row.get::<_, String>(5).parse()?,
        ambiguous: row.get(6),
        attempts: row.get::<_, i32>(7) as u32,
        last_error: row.get(8),
        lease_until: row.get(9),
        forwards: row.get::<_, i32>(10) as u32,
        forwarded_at: row.get(11),
        created_at: row.get(12),
        updated_at: row.get(13),
    })
}

/// `error` cut to [`MAX_ERROR_CHARS`] characters.
fn bounded(error: &str) -> &str {
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => &error[..end],
        None => error,
    }
}

fn lease_seconds(lease: Duration) -> Result<f64, StoreError> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(StoreError::Invalid(format!(
            "a forward lease of {lease:?} is out of range; expected more than zero and at most 24 hours"
        )));
    }
    Ok(lease.as_secs_f64())
}

/// Every statement passes the key as `$1`..`$3`.
const KEY_MATCH: &str = "route = $1 AND source_portal = $2 AND source_deal_id = $3";

/// A success under the lease `$4` finishes the row (state, lease, error) when that
/// lease holds it or nobody does. In `SET`, columns on the right are the row as found.
const SUCCESS_FINISHES: &str = "(lease_id = $4 OR lease_id IS NULL)";

impl Store {
    /// Creates the source deal's ledger row or takes it over, holding it for `lease`:
    /// see the module documentation. A row whose target portal differs from
    /// `target_portal` (the route was re-pointed) is refused with an error naming both.
    pub async fn claim_forward(
        &self,
        key: &ForwardKey,
        target_portal: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let deal_id = key.checked()?;
        check_portal(target_portal)?;
        let seconds = lease_seconds(lease)?;
        let lease_id: i64 = rand::random();
        let table = self.table("_forward_ledger");
        let claim = format!(
            "INSERT INTO {table} AS l (route, source_portal, source_deal_id, target_portal, state, lease_id, lease_until)
             VALUES ($1, $2, $3, $4, 'adding', $5, now() + make_interval(secs => $6))
             ON CONFLICT (route, source_portal, source_deal_id) DO UPDATE SET
                 state = CASE WHEN l.target_deal_id IS NULL THEN 'adding' ELSE 'updating' END,
                 lease_id = EXCLUDED.lease_id,
                 lease_until = EXCLUDED.lease_until,
                 updated_at = now()
             WHERE l.target_portal = EXCLUDED.target_portal
               AND (l.lease_until IS NULL OR l.lease_until <= now() OR l.lease_id = EXCLUDED.lease_id)
             RETURNING l.target_deal_id, l.ambiguous, l.xmax = 0, l.lease_until"
        );
        let inspect = format!(
            "SELECT target_portal, lease_until > now(), coalesce(lease_until, now()) FROM {table} WHERE {KEY_MATCH}"
        );
        let client = self.client().await?;
        let mut busy_until = None;
        for _ in 0..CLAIM_ROUNDS {
            let claimed = client
                .query_opt(
                    &claim,
                    &[
                        &key.route,
                        &key.source_portal,
                        &deal_id,
                        &target_portal,
                        &lease_id,
                        &seconds,
                    ],
                )
                .await
                .context(format_args!("claiming the forward of {key}"))?;
            if let Some(row) = claimed {
                let lease = Lease {
                    key: key.clone(),
                    id: lease_id,
                    until: row.get(3),
                };
                return Ok(match row.get::<_, Option<i64>>(0) {
                    Some(target) => Claim::Update {
                        lease,
                        target_deal_id: target as u64,
                    },
                    None => Claim::Add {
                        lease,
                        look_up_first: row.get::<_, bool>(1) || !row.get::<_, bool>(2),
                    },
                });
            }
            let Some(holder) = client
                .query_opt(&inspect, &[&key.route, &key.source_portal, &deal_id])
                .await
                .context(format_args!("reading the forward ledger row of {key}"))?
            else {
                continue; // deleted since: claim again
            };
            let recorded: String = holder.get(0);
            if recorded != target_portal {
                return Err(StoreError::Invalid(format!(
                    "the forward ledger row of {key} is for target portal {recorded:?}, not {target_portal:?}: \
                     the route's target changed; its deals were forwarded to the old target"
                )));
            }
            let until: DateTime<Utc> = holder.get(2);
            if holder.get::<_, Option<bool>>(1) == Some(true) {
                return Ok(Claim::Busy { until });
            }
            // The holder released the lease between the two statements: claim again.
            busy_until = Some(until);
        }
        Ok(Claim::Busy {
            until: busy_until.unwrap_or_else(Utc::now),
        })
    }

    /// Records that an add under `lease` may have been applied without its answer
    /// arriving. The lease is kept (its holder looks the deal up next); every later
    /// claim gets `look_up_first` until a target deal is recorded. Nothing changes once
    /// the target deal is known.
    pub async fn mark_ambiguous(&self, lease: &Lease, error: &str) -> Result<(), StoreError> {
        let key = &lease.key;
        let deal_id = key.checked()?;
        let updated = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE {} SET
                         ambiguous = true,
                         last_error = $4,
                         updated_at = now()
                     WHERE {KEY_MATCH} AND target_deal_id IS NULL",
                    self.table("_forward_ledger")
                ),
                &[&key.route, &key.source_portal, &deal_id, &bounded(error)],
            )
            .await
            .context(format_args!("marking the add of {key} ambiguous"))?;
        if updated == 0 {
            self.entry_or_missing(key).await?;
        }
        Ok(())
    }

    /// Records the target deal that an add created or a look-up found: the forward is
    /// done, the lease released, `forwards` counts it. Returns the target deal of
    /// record, which differs from `target_deal_id` only when another claim recorded
    /// one first: then the target holds two deals for this source deal, and the
    /// caller reports the duplicate (the ledger keeps the first).
    pub async fn record_target(
        &self,
        lease: &Lease,
        target_deal_id: u64,
    ) -> Result<u64, StoreError> {
        let key = &lease.key;
        let deal_id = key.checked()?;
        if target_deal_id == 0 {
            return Err(StoreError::Invalid(format!(
                "target deal ID 0 is not a deal ({key})"
            )));
        }
        let target = to_db_id(target_deal_id)?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE {} SET
                         target_deal_id = coalesce(target_deal_id, $5),
                         ambiguous = false,
                         forwards = forwards + 1,
                         forwarded_at = now(),
                         state = CASE WHEN {SUCCESS_FINISHES} THEN 'done' ELSE state END,
                         attempts = CASE WHEN {SUCCESS_FINISHES} THEN 0 ELSE attempts END,
                         last_error = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE last_error END,
                         lease_until = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE lease_until END,
                         lease_id = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE lease_id END,
                         updated_at = now()
                     WHERE {KEY_MATCH}
                     RETURNING target_deal_id",
                    self.table("_forward_ledger")
                ),
                &[&key.route, &key.source_portal, &deal_id, &lease.id, &target],
            )
            .await
            .context(format_args!("recording the target deal of {key}"))?;
        match row {
            Some(row) => Ok(row.get::<_, i64>(0) as u64),
            None => Err(missing(key)),
        }
    }

    /// Records a successful update of the known target deal: `forwards` counts it and
    /// the lease is released.
    pub async fn record_forwarded(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = &lease.key;
        let deal_id = key.checked()?;
        let updated = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE {} SET
                         forwards = forwards + 1,
                         forwarded_at = now(),
                         state = CASE WHEN {SUCCESS_FINISHES} THEN 'done' ELSE state END,
                         attempts = CASE WHEN {SUCCESS_FINISHES} THEN 0 ELSE attempts END,
                         last_error = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE last_error END,
                         lease_until = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE lease_until END,
                         lease_id = CASE WHEN {SUCCESS_FINISHES} THEN NULL ELSE lease_id END,
                         updated_at = now()
                     WHERE {KEY_MATCH} AND target_deal_id IS NOT NULL",
                    self.table("_forward_ledger")
                ),
                &[&key.route, &key.source_portal, &deal_id, &lease.id],
            )
            .await
            .context(format_args!("recording the forward of {key}"))?;
        if updated == 0 {
            let found = self.entry_or_missing(key).await?;
            return Err(StoreError::Invalid(format!(
                "cannot record an update of {key}: the ledger knows no target deal (state {})",
                found.state
            )));
        }
        Ok(())
    }

    /// Records a failed run: `attempts` + 1, `last_error`, the lease released, the row
    /// `pending` for the retry or, when `final_attempt` (the job goes to the
    /// dead-letter queue), `failed`. A failure under a lease another claim has taken
    /// over is not recorded (that claim's outcome counts), only logged.
    pub async fn record_failure(
        &self,
        lease: &Lease,
        error: &str,
        final_attempt: bool,
    ) -> Result<(), StoreError> {
        let key = &lease.key;
        let deal_id = key.checked()?;
        let state = if final_attempt {
            ForwardState::Failed
        } else {
            ForwardState::Pending
        };
        let updated = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE {} SET
                         state = $5,
                         attempts = attempts + 1,
                         last_error = $6,
                         lease_until = NULL,
                         lease_id = NULL,
                         updated_at = now()
                     WHERE {KEY_MATCH} AND lease_id = $4",
                    self.table("_forward_ledger")
                ),
                &[
                    &key.route,
                    &key.source_portal,
                    &deal_id,
                    &lease.id,
                    &state.as_str(),
                    &bounded(error),
                ],
            )
            .await
            .context(format_args!("recording a failed forward of {key}"))?;
        if updated == 0 {
            let found = self.entry_or_missing(key).await?;
            tracing::warn!(
                route = %key.route,
                source_portal = %key.source_portal,
                source_deal_id = key.source_deal_id,
                state = %found.state,
                "a forward failed after its lease was taken over; the failure is not recorded"
            );
        }
        Ok(())
    }

    /// The ledger row of one source deal, if it was ever claimed.
    pub async fn ledger_entry(&self, key: &ForwardKey) -> Result<Option<LedgerEntry>, StoreError> {
        let deal_id = key.checked()?;
        let client = self.client().await?;
        client
            .query_opt(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM {} WHERE {KEY_MATCH}",
                    self.table("_forward_ledger")
                ),
                &[&key.route, &key.source_portal, &deal_id],
            )
            .await
            .context(format_args!("reading the forward ledger row of {key}"))?
            .as_ref()
            .map(entry)
            .transpose()
    }

    /// The `limit` most recently changed ledger rows that `filter` selects, newest
    /// first.
    pub async fn list_forwards(
        &self,
        filter: &ForwardFilter,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        // Literal conditions, so the planner can use the open-rows partial index.
        let mut conditions = vec!["($1::text IS NULL OR route = $1)"];
        if filter.open_only {
            conditions.push("state <> 'done'");
        }
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM {} WHERE {} ORDER BY updated_at DESC LIMIT $2",
                    self.table("_forward_ledger"),
                    conditions.join(" AND ")
                ),
                &[&filter.route, &i64::from(limit)],
            )
            .await
            .context("listing the forward ledger")?
            .iter()
            .map(entry)
            .collect()
    }

    /// The row of `key`, or the error saying it is missing.
    async fn entry_or_missing(&self, key: &ForwardKey) -> Result<LedgerEntry, StoreError> {
        self.ledger_entry(key).await?.ok_or_else(|| missing(key))
    }
}

fn missing(key: &ForwardKey) -> StoreError {
    StoreError::Invalid(format!(
        "the forward ledger has no row for {key}: it must be claimed first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_ones_are_named() {
        for state in ForwardState::ALL {
            assert_eq!(state.as_str().parse::<ForwardState>().unwrap(), state);
        }
        let error = "Done".parse::<ForwardState>().unwrap_err().to_string();
        assert!(error.contains("\"Done\""), "{error}");
    }

    #[test]
    fn errors_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_ERROR_CHARS);
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn keys_and_leases_are_checked() {
        assert!(ForwardKey::new("r", "p", 1).checked().is_ok());
        for bad in [
            ForwardKey::new(" ", "p", 1),
            ForwardKey::new("r", "", 1),
            ForwardKey::new("r", "p", 0),
            ForwardKey::new("r", "p", u64::MAX),
        ] {
            assert!(bad.checked().is_err(), "{bad:?}");
        }
        assert!(lease_seconds(Duration::ZERO).is_err());
        assert!(lease_seconds(MAX_LEASE + Duration::from_secs(1)).is_err());
        assert_eq!(lease_seconds(Duration::from_millis(1500)).unwrap(), 1.5);
    }
}
