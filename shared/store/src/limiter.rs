//! A portal's request budget shared by every process that calls it: one row per
//! portal in `_rate_limit`, read and written under `SELECT ... FOR UPDATE`, with the
//! database clock as the one clock all processes agree on.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use b24_client::{Observed, RateLimiter};
use b24_domain::limits::{LeakyBucket, LimitSettings, OperatingWindow};

use crate::{Context, Store, StoreError};

type Windows = BTreeMap<String, OperatingWindow>;

/// The Postgres-backed [`RateLimiter`]. Shares the store's connection.
pub struct PgRateLimiter {
    store: Store,
    portal: String,
    settings: LimitSettings,
}

/// The shared state of one portal, as locked for one update.
struct Budget {
    now: f64,
    bucket: LeakyBucket,
    windows: Windows,
}

impl PgRateLimiter {
    pub fn new(store: &Store, portal: &str, settings: LimitSettings) -> PgRateLimiter {
        PgRateLimiter {
            store: store.clone(),
            portal: portal.to_string(),
            settings,
        }
    }

    /// Locks the portal's row, applies `change` and writes the result back, all in
    /// one transaction, so concurrent processes see each other's reservations.
    async fn update<T>(&self, change: impl FnOnce(&mut Budget) -> T) -> Result<T, StoreError> {
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
        let windows = serde_json::from_value::<Windows>(row.get(2)).unwrap_or_else(|error| {
            tracing::warn!(portal = %self.portal, %error, "unreadable operating-time state; starting afresh");
            Windows::new()
        });
        let mut budget = Budget {
            now: row.get(3),
            bucket: LeakyBucket {
                level: row.get(0),
                updated_at: row.get(1),
            },
            windows,
        };
        let result = change(&mut budget);
        let window = self.settings.operating_window_secs;
        let now = budget.now;
        budget.windows.retain(|_, w| {
            w.used(now, window) > 0.0 || w.blocked_until.is_some_and(|until| until > now)
        });
        let operating = serde_json::to_value(&budget.windows).map_err(|e| {
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
    fn fallback_wait(&self, error: &StoreError) -> f64 {
        tracing::warn!(portal = %self.portal, %error, "shared rate limit unavailable; pacing locally");
        1.0 / self.settings.drain_per_sec
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    async fn acquire(&self, methods: &[&str]) {
        let settings = self.settings;
        let wait = self
            .update(|budget| {
                let now = budget.now;
                let operating_wait = methods
                    .iter()
                    .filter_map(|method| budget.windows.get(*method).map(|w| (*method, w)))
                    .map(|(method, w)| {
                        // Keep room for this request: as many calls of the method as it
                        // holds, each as costly as the costliest recent one.
                        let calls = methods.iter().filter(|m| **m == method).count() as f64;
                        let costliest = w.samples.iter().map(|(_, s)| *s).fold(0.0, f64::max);
                        w.wait_needed(now, &settings, calls * costliest)
                    })
                    .fold(0.0, f64::max);
                let bucket_wait =
                    budget
                        .bucket
                        .reserve(now, settings.burst, settings.drain_per_sec);
                operating_wait.max(bucket_wait)
            })
            .await
            .unwrap_or_else(|e| self.fallback_wait(&e));
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    async fn observe(&self, observed: &Observed) {
        if observed.operating.is_empty() {
            return;
        }
        let window = self.settings.operating_window_secs;
        let result = self
            .update(|budget| {
                for (method, seconds) in &observed.operating {
                    budget
                        .windows
                        .entry(method.clone())
                        .or_default()
                        .record(budget.now, *seconds, window);
                }
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(portal = %self.portal, %error, "could not record operating time");
        }
    }

    async fn on_query_limit(&self) {
        let burst = self.settings.burst;
        if let Err(error) = self
            .update(|budget| budget.bucket.saturate(budget.now, burst))
            .await
        {
            tracing::warn!(portal = %self.portal, %error, "could not record a 503 in the shared rate limit");
        }
    }

    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>) {
        let window = self.settings.operating_window_secs;
        let result = self
            .update(|budget| {
                let until = reset_at.unwrap_or(budget.now + window);
                budget
                    .windows
                    .entry(method.to_string())
                    .or_default()
                    .block_until(until);
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(portal = %self.portal, %error, "could not record a 429 in the shared rate limit");
        }
    }
}
