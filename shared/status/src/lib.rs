//! The status page and the schema description, shared by the `status` function and
//! `b24sync schema-doc`:
//!
//! - [`report`]: the status report (`/status.json`) from the store's read-only snapshot
//!   and the configuration, with a verdict per portal ([`health`]) and every error text
//!   passed through [`redact`];
//! - [`page`]: the HTML page with server-drawn SVG [`charts`], no script;
//! - [`schema_doc`]: Markdown of every mirror table and column.
//!
//! All of it is pure; [`StatusService`] reads the store and hands the data over.

pub mod charts;
pub mod health;
pub mod page;
pub mod redact;
pub mod report;
pub mod schema_doc;

use b24_config::Config;
use b24_store::{StatusQuery, Store, StoreError};
use chrono::{Duration, Utc};

pub use report::{ReportSettings, StatusReport};
pub use schema_doc::SchemaFilter;

/// Runs per portal entity the page's charts may draw: a day of runs every 5 minutes of
/// two modes and then some; the window (24 hours) usually ends first.
const MAX_RUNS: i64 = 1000;

/// The status data of one configuration, read through one store connection.
pub struct StatusService {
    store: Store,
    settings: ReportSettings,
}

impl StatusService {
    pub fn new(store: Store, config: &Config) -> StatusService {
        StatusService {
            store,
            settings: ReportSettings::new(config),
        }
    }

    /// The report as of now (the database's clock).
    pub async fn report(&self) -> Result<StatusReport, StoreError> {
        let query = StatusQuery {
            entities: self.settings.entities(),
            runs_since: Utc::now() - Duration::hours(24),
            max_runs: MAX_RUNS,
        };
        let snapshot = self.store.status_snapshot(&query).await?;
        Ok(StatusReport::build(&snapshot, &self.settings))
    }

    /// The Markdown description of the mirror tables `filter` admits.
    pub async fn schema_markdown(&self, filter: &SchemaFilter) -> Result<String, StoreError> {
        let tables = self.store.mirror_schema().await?;
        Ok(schema_doc::render(self.store.schema(), &tables, filter))
    }
}
