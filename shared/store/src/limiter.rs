//! A portal's request budget shared by every process that calls it: one row per
//! portal in `_rate_limit`, read and written under `SELECT ... FOR UPDATE`, with the
//! database clock as the one clock all processes agree on. The arithmetic is
//! [`PortalBudget`]'s, the same as the in-process limiter's; a garbled row (a level or
//! moment that is not a number, a block until 1e20) delays the portal by one window
//! at most and is written back bounded.

use std::collections::BTreeMap;

use async_trait::async_trait;
use b24_domain::limits::{
    Admission, LeakyBucket, LimitSettings, OperatingReport, OperatingWindow, PortalBudget,
};
use b24_domain::ports::{RateLimiter, wait_for_admission};
use tracing::Instrument;

use crate::{Context, Store, StoreError};

/// The Postgres-backed [`RateLimiter`]. Shares the store's connection.
pub struct PgRateLimiter {
    store: Store,
    portal: String,
    settings: LimitSettings,
}

impl PgRateLimiter {
    pub fn new(store: &Store, portal: &str, settings: LimitSettings) -> PgRateLimiter {
        PgRateLimiter {
            store: store.clone(),
            portal: portal.to_string(),
            settings,
        }
    }

    /// Locks the portal's row, applies `change` at the database's `now` and writes the
    /// result back, all in one transaction, so concurrent processes see each other's
    /// reservations.
    async fn update<T>(
        &self,
        change: impl FnOnce(&mut PortalBudget, f64) -> T,
    ) -> Result<T, StoreError> {
        let table = self.store.table("_rate_limit");
        let mut client = self.store.client().await?;
        let tx = client
            .transaction()
            .await
            .context("starting a rate-limit update")?;
        tx.execute(
            &format!("INSERT INTO {table} (portal) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&self.portal],
        )
        .await
        .context("creating the rate-limit row")?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT bucket_level, bucket_updated_at, operating, extract(epoch FROM clock_timestamp())::float8
                     FROM {table} WHERE portal = $1 FOR UPDATE"
                ),
                &[&self.portal],
            )
            .await
            .context("locking the rate-limit row")?;
        let methods = serde_json::from_value::<BTreeMap<String, OperatingWindow>>(row.get(2))
            .unwrap_or_else(|error| {
                tracing::warn!(portal = %self.portal, %error, "unreadable operating-time state; starting afresh");
                BTreeMap::new()
            });
        let now: f64 = row.get(3);
        let mut budget = PortalBudget {
            bucket: LeakyBucket {
                level: row.get(0),
                updated_at: row.get(1),
            },
            methods,
        };
        let result = change(&mut budget, now);
        budget.forget_idle(now, &self.settings);
        let operating = serde_json::to_value(&budget.methods).map_err(|e| {
            StoreError::Invalid(format!("cannot serialise operating-time state: {e}"))
        })?;
        tx.execute(
            &format!(
                "UPDATE {table} SET bucket_level = $2, bucket_updated_at = $3, operating = $4, updated_at = now()
                 WHERE portal = $1"
            ),
            &[&self.portal, &budget.bucket.level, &budget.bucket.updated_at, &operating],
        )
        .await
        .context("saving the rate-limit row")?;
        tx.commit()
            .await
            .context("committing a rate-limit update")?;
        Ok(result)
    }

    /// Without the shared state, pace at the drain rate: never faster than the portal
    /// allows, whatever the other processes do.
    fn fallback(&self, error: &StoreError) -> Admission {
        tracing::warn!(portal = %self.portal, %error, "shared rate limit unavailable; pacing locally");
        Admission::Send {
            after: 1.0 / self.settings.drain_per_sec,
        }
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    async fn acquire(&self, methods: &[&str]) {
        let settings = self.settings;
        let admit = || async {
            self.update(|budget, now| budget.admit(now, methods, &settings))
                .await
                .unwrap_or_else(|e| self.fallback(&e))
        };
        wait_for_admission(methods, admit, tokio::time::sleep)
            .instrument(tracing::info_span!("shared_rate_limit", portal = %self.portal))
            .await;
    }

    async fn observe(&self, reports: &[OperatingReport]) -> f64 {
        if reports.is_empty() {
            return 0.0;
        }
        let settings = self.settings;
        self.update(|budget, now| budget.observe(now, reports, &settings))
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(portal = %self.portal, %error, "could not record operating time");
                0.0
            })
    }

    async fn on_query_limit(&self) {
        let settings = self.settings;
        if let Err(error) = self
            .update(|budget, now| budget.request_refused(now, &settings))
            .await
        {
            tracing::warn!(portal = %self.portal, %error, "could not record a 503 in the shared rate limit");
        }
    }

    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>) {
        let settings = self.settings;
        if let Err(error) = self
            .update(|budget, now| budget.method_refused(now, method, reset_at, &settings))
            .await
        {
            tracing::warn!(portal = %self.portal, %error, "could not record a 429 in the shared rate limit");
        }
    }
}
