//! The sync engine: full, incremental and reconcile runs of one portal entity into the
//! PostgreSQL mirror, each time-boxed, checkpointed and under a per-(portal, entity)
//! run lock; the change worker's application of event batches; and the wiring that
//! every entry point (the CLI and the Lambda functions) shares.

mod back_sync;
mod engine;
mod products;
mod reference;
mod wiring;
mod worker;

pub use back_sync::{CLAIM_ROWS, PUSH_MODE, PushSummary};
pub use engine::{CHUNK_ROWS, CheckReport, SyncOptions, SyncSummary, Syncer};
pub use products::owner_type;
pub use wiring::{BatchApplied, EntityOutcome, PortalClients, SyncRequest, SyncService};
pub use worker::{CHANGES_MODE, ChangesApplied, RefusedDeletions};

use b24_client::B24Error;
use b24_domain::schema::SchemaError;
use b24_domain::sync::{BadPortalTime, DeletesRefused};
use b24_store::StoreError;

/// Why a sync run failed. Messages never contain a webhook secret or a password.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Bitrix24: {0}")]
    Portal(#[from] B24Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("field metadata: {0}")]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    BadTime(#[from] BadPortalTime),
    #[error("{0}")]
    BadAnswer(String),
    /// A run found more deletions than its guard allows without confirmation.
    #[error("{0}")]
    Refused(Refusal),
    #[error(
        "the run lock's database connection closed; stopping so that two runs of one portal entity never overlap"
    )]
    LockLost,
    /// The invocation's deadline came first.
    #[error("the time ran out before {0} finished")]
    OutOfTime(&'static str),
    #[error("configuration: {0}")]
    Config(String),
    #[error("sync failed for {0}")]
    Failed(String),
}

/// Why deletions were refused: the message and, for one run, the counts behind it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub message: String,
    pub counts: Option<DeletesRefused>,
}
