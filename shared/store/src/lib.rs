//! PostgreSQL store: the typed mirror of each portal's CRM, its field metadata, sync
//! state and runs, the shared rate-limit budget, and the deal-forwarding ledger.
//!
//! Every mirror row is keyed by `(portal, id)`. Tables live in one configurable schema
//! (`b24` by default) next to the service tables `_fields`, `_field_items`,
//! `_sync_state`, `_sync_runs`, `_rate_limit`, `_forward_ledger` and the back-sync
//! `_outbox` (see `migrations/` and the README).

mod connect;
mod copy;
mod layout;
mod ledger;
mod limiter;
mod outbox;
mod reference;
mod state;
mod status;
mod upsert;

use std::fmt;
use std::sync::Arc;

use b24_domain::database::SessionSettings;
use b24_domain::entity::Entity;
use b24_domain::schema::check_identifier;
use tokio_postgres::Client;

pub use layout::{ColumnInfo, LayoutColumn, TableLayout};
pub use ledger::{
    Claim, ForwardFilter, ForwardKey, ForwardState, Lease, LedgerEntry, MAX_ERROR_CHARS,
};
pub use limiter::PgRateLimiter;
pub use outbox::{OutboxClaim, OutboxCount, OutboxLease, OutboxOutcome, OutboxRow};
pub use reference::{ReferenceTable, Replaced};
pub use state::{Checkpoints, RunLock, RunStats, SyncState};
pub use status::{
    EntityStatus, ForwardBacklog, MirrorTableSchema, OutboxBacklog, RunRecord, StatusQuery,
    StatusSnapshot,
};
pub use upsert::UpsertStats;

/// A record as returned by `crm.<entity>.list` / `get`: Bitrix24 codes to values.
pub type Row = serde_json::Map<String, serde_json::Value>;

refinery::embed_migrations!("../../migrations");

/// Errors of the store. Database errors carry the server's own message and SQLSTATE
/// (see [`describe`]); none carries the password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchema { name: String, reason: &'static str },
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot connect to PostgreSQL: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("{context}: {}", describe(source))]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migrating schema {schema:?} failed: {}", describe_migration(source))]
    Migrate {
        schema: String,
        #[source]
        source: refinery::Error,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// A database error in the server's words: `permission denied for table deal (SQLSTATE
/// 42501)`, where tokio-postgres' own `Display` says only "db error". Other errors
/// get their cause appended (the refused connection, the TLS failure). The server's
/// DETAIL is left out: it can quote row values.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// refinery wraps the database error and shows it as "db error" too.
fn describe_migration(error: &refinery::Error) -> String {
    match error.kind() {
        refinery::error::Kind::Connection(what, cause) => {
            match cause.downcast_ref::<tokio_postgres::Error>() {
                Some(db) => format!("{what}: {}", describe(db)),
                None => format!("{what}: {cause}"),
            }
        }
        other => other.to_string(),
    }
}

/// Attaches what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: impl fmt::Display) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Db {
            context: what.to_string(),
            source,
        })
    }
}

/// The PostgreSQL adapter. Cheap to clone; clones share one connection, which is
/// opened at [`Store::connect`] and re-opened when it is found closed.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    schema: String,
    connection: connect::Connection,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `database_url` (a `postgres://` URL or libpq key=value string) with
    /// the default session limits and uses `schema` for every table. See
    /// [`Store::connect_with`].
    pub async fn connect(database_url: &str, schema: &str) -> Result<Store, StoreError> {
        Self::connect_with(database_url, schema, &SessionSettings::default()).await
    }

    /// Connects with `session`'s connect timeout, keepalives and server-side timeouts,
    /// applied again whenever the connection is re-opened. TLS follows `sslmode` as
    /// the README's table says: plain on loopback hosts unless asked otherwise,
    /// certificate and host name verified for any other host unless the URL relaxes it.
    pub async fn connect_with(
        database_url: &str,
        schema: &str,
        session: &SessionSettings,
    ) -> Result<Store, StoreError> {
        validate_schema(schema)?;
        let connector = connect::Connector::from_url(database_url, session)?;
        Ok(Store {
            inner: Arc::new(Inner {
                schema: schema.to_string(),
                connection: connect::Connection::open(connector).await?,
            }),
        })
    }

    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Creates the schema and applies the embedded migrations (idempotent, serialised
    /// by an advisory lock so concurrent cold starts do not race). After the lock, the
    /// statements go to the connection directly, never retried on a new one: the lock
    /// and `search_path` would not come along.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let schema = self.schema();
        let mut session = self.client().await?;
        let lock_key = format!("b24-store:migrate:{schema}");
        session
            .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
            .await
            .context("taking the migration lock")?;
        let client: &mut Client = &mut session;
        let migrated = async {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {q}; SET search_path TO {q}",
                    q = quote_ident(schema)
                ))
                .await
                .context(format_args!("creating schema {schema:?}"))?;
            migrations::runner()
                .run_async(&mut *client)
                .await
                .map(drop)
                .map_err(|source| StoreError::Migrate {
                    schema: schema.to_string(),
                    source,
                })
        }
        .await;
        let reset = client
            .batch_execute("RESET search_path")
            .await
            .context("resetting search_path");
        let unlock = client
            .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
            .await
            .context("releasing the migration lock");
        migrated.and(reset).and(unlock.map(drop))
    }

    /// Exclusive use of the connection; see [`connect::Session`] for which statements
    /// are retried on a new connection.
    pub(crate) async fn client(&self) -> Result<connect::Session<'_>, StoreError> {
        self.inner.connection.session().await
    }

    /// `"schema"."name"`, for service and mirror tables alike.
    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(self.schema()), quote_ident(name))
    }

    pub(crate) fn mirror_table(&self, entity: Entity) -> String {
        self.table(entity.as_str())
    }
}

fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidSchema {
        name: schema.to_string(),
        reason,
    };
    check_identifier(schema).map_err(invalid)?;
    if schema.starts_with("pg_") {
        return Err(invalid(
            "names starting with pg_ are reserved by PostgreSQL",
        ));
    }
    Ok(())
}

/// Quotes an identifier. Names reaching SQL are validated first; quoting makes even a
/// name that slipped through inert.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn check_portal(portal: &str) -> Result<(), StoreError> {
    if portal.trim().is_empty() {
        return Err(StoreError::Invalid("the portal name is empty".into()));
    }
    Ok(())
}

/// IDs are `bigint` columns; Bitrix24 IDs never reach 2^63, but say so if one does.
pub(crate) fn to_db_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Invalid(format!("ID {id} does not fit a bigint")))
}

/// Every ID as a `bigint`, or the error naming the first that does not fit.
pub(crate) fn to_db_ids(ids: &[u64]) -> Result<Vec<i64>, StoreError> {
    ids.iter().map(|&id| to_db_id(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("b24").is_ok());
        assert!(validate_schema("crm_mirror_2").is_ok());
        for bad in [
            "",
            "B24",
            "b24; drop",
            "1abc",
            "pg_catalog",
            "a\"b",
            &"x".repeat(64),
        ] {
            let err = validate_schema(bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidSchema { .. }), "{bad:?}");
        }
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident("deal"), "\"deal\"");
        assert_eq!(
            quote_ident("a\"; drop table x; --"),
            "\"a\"\"; drop table x; --\""
        );
    }
}
