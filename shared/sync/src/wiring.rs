//! The application service every entry point shares (the CLI and the scheduled-sync
//! function): builds the adapters from the configuration document and runs requests.
//! Each portal's client uses the portal's shared budget row in Postgres as its rate
//! limiter, so every process syncing that portal stays inside one budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_client::{Client, ClientOptions};
use b24_config::Config;
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_store::{PgRateLimiter, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{SyncError, SyncOptions, SyncSummary, Syncer};

/// Time kept back from a deadline for the last chunk, the checkpoint and the answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The input of the scheduled-sync function (EventBridge Scheduler `Input`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub portal: String,
    /// Defaults to the portal's configured entities.
    #[serde(default)]
    pub entities: Option<Vec<Entity>>,
    pub mode: Mode,
}

/// One entity's outcome within a request.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum EntityOutcome {
    Done(SyncSummary),
    Failed {
        portal: String,
        entity: String,
        mode: String,
        error: String,
    },
}

/// The adapters, built once per process and reused across invocations.
pub struct SyncService {
    config: Config,
    store: Store,
    clients: Mutex<HashMap<String, Client>>,
}

impl SyncService {
    /// Connects to the mirror database, applying the migrations first when `migrate`
    /// is set (idempotent).
    pub async fn connect(config: Config, migrate: bool) -> Result<SyncService, SyncError> {
        let database = config.database.as_ref().ok_or_else(|| {
            SyncError::Config("the [database] section with url is required for a sync".into())
        })?;
        let store = Store::connect(database.url.expose(), &database.schema).await?;
        if migrate {
            store.migrate().await?;
        }
        Ok(SyncService {
            config,
            store,
            clients: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The portal's client, created on first use and kept for later invocations.
    pub async fn client(&self, portal: &str) -> Result<Client, SyncError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(portal) {
            return Ok(client.clone());
        }
        let portal_config = self.config.portals.get(portal).ok_or_else(|| {
            let known: Vec<&str> = self.config.portals.keys().map(String::as_str).collect();
            SyncError::Config(format!(
                "no portal named {portal:?} (configured: {})",
                known.join(", ")
            ))
        })?;
        let limiter = PgRateLimiter::new(&self.store, portal, portal_config.limits);
        let options = ClientOptions {
            limiter: Arc::new(limiter),
            ..ClientOptions::default()
        };
        let client = Client::new(portal_config.webhook_url.clone(), options)?;
        clients.insert(portal.to_string(), client.clone());
        Ok(client)
    }

    /// Runs one request, entity by entity. A failing entity does not stop the others;
    /// the error lists every entity that failed.
    pub async fn handle(
        &self,
        request: &SyncRequest,
        deadline: Option<Instant>,
    ) -> Result<Vec<EntityOutcome>, (Vec<EntityOutcome>, SyncError)> {
        let client = self
            .client(&request.portal)
            .await
            .map_err(|e| (Vec::new(), e))?;
        let entities = match &request.entities {
            Some(list) => list.clone(),
            None => self.config.portals[&request.portal].entities.clone(),
        };
        let options = deadline.map_or_else(SyncOptions::default, |d| {
            SyncOptions::until(d, DEADLINE_MARGIN)
        });
        let syncer = Syncer {
            client: &client,
            store: &self.store,
            portal: &request.portal,
        };
        let mut outcomes = Vec::new();
        let mut failed = Vec::new();
        for entity in entities {
            match syncer.run(entity, request.mode, &options).await {
                Ok(summary) => {
                    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "sync run finished");
                    outcomes.push(EntityOutcome::Done(summary));
                }
                Err(error) => {
                    tracing::error!(portal = %request.portal, %entity, mode = %request.mode, %error, "sync run failed");
                    failed.push(format!("{entity}: {error}"));
                    outcomes.push(EntityOutcome::Failed {
                        portal: request.portal.clone(),
                        entity: entity.to_string(),
                        mode: request.mode.to_string(),
                        error: error.to_string(),
                    });
                }
            }
        }
        if failed.is_empty() {
            Ok(outcomes)
        } else {
            Err((outcomes, SyncError::Failed(failed.join("; "))))
        }
    }
}
