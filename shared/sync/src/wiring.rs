//! The application service every entry point shares (the CLI, the scheduled-sync function,
//! the change worker and back-sync): builds the adapters from the configuration document
//! and runs sync requests, batches of change messages and outbox drains.
//! Each portal's client uses the portal's shared budget row in Postgres as its rate
//! limiter, so every process syncing that portal stays inside one budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_client::{Client, ClientOptions};
use b24_config::{Config, PortalConfig, SmartProcesses, SmartRef};
use b24_domain::change::{ChangeMessage, group_changes};
use b24_domain::entity::Entity;
use b24_domain::item::{SmartType, smart_types};
use b24_domain::sync::{DeleteGuard, Mode, RunOutcome};
use b24_store::{PgRateLimiter, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{ChangesApplied, PushSummary, Refusal, SyncError, SyncOptions, SyncSummary, Syncer};

/// Time kept back from a deadline for the last chunk, the checkpoint and the answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// Time a drain keeps back from its deadline to record outcomes and refresh rows.
const PUSH_MARGIN: Duration = Duration::from_secs(15);

/// The input of the scheduled-sync function (EventBridge Scheduler `Input`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub portal: String,
    /// Defaults to the portal's configured entities.
    #[serde(default)]
    pub entities: Option<Vec<Entity>>,
    pub mode: Mode,
    /// Lets the runs soft-delete more than the portal's `max_delete_share` of an
    /// entity's live rows: for a mass deletion the operator has checked.
    #[serde(default)]
    pub confirm_deletes: bool,
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
        /// `failed`, or `refused` for too many deletions without confirmation.
        outcome: RunOutcome,
        error: String,
    },
}

/// What applying a batch of change messages did.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchApplied<K> {
    /// The keys of the messages that failed, to be delivered again.
    pub failed: Vec<K>,
    /// One summary (mode `changes`) per portal entity group that was applied, also
    /// when the guard refused some of its deletions; none for a group that failed.
    pub summaries: Vec<SyncSummary>,
}

/// How an operator lets a refused deletion through.
const HOW_TO_CONFIRM: &str = "If the portal really lost these rows, run again with \
    `b24sync sync --confirm-deletes` (or \"confirm_deletes\": true in the sync request), \
    or set portals.<name>.max_delete_share = 1.0";

/// How an operator lets deletions the change worker refused through.
const HOW_TO_CONFIRM_EVENTS: &str = "If the portal really lost these records, \
    `b24sync sync --mode reconcile --confirm-deletes` deletes them, \
    or set portals.<name>.max_delete_share = 1.0";

/// The adapters, built once per process and reused across invocations.
pub struct SyncService {
    config: Config,
    store: Store,
    clients: PortalClients,
    /// Each portal's smart processes as `crm.type.list` last reported them, and when.
    smart_types: Mutex<HashMap<String, (Instant, Vec<SmartType>)>>,
}

/// How long a portal's list of smart processes is trusted before it is asked again.
const SMART_TYPES_TTL: Duration = Duration::from_secs(300);

/// Each configured portal's client, created on first use and kept for later
/// invocations. Every client's rate limiter is the portal's shared budget row in
/// Postgres, so all processes (sync, change worker, forwarder) calling one portal stay
/// inside one budget. Shared by [`SyncService`] and the forwarder.
pub struct PortalClients {
    portals: BTreeMap<String, PortalConfig>,
    store: Store,
    /// Timeouts and retries of every client; the limiter is replaced per portal.
    options: ClientOptions,
    clients: Mutex<HashMap<String, Client>>,
}

impl PortalClients {
    pub fn new(
        portals: BTreeMap<String, PortalConfig>,
        store: Store,
        options: ClientOptions,
    ) -> PortalClients {
        PortalClients {
            portals,
            store,
            options,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The portal's client, created on first use.
    pub async fn client(&self, portal: &str) -> Result<Client, SyncError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(portal) {
            return Ok(client.clone());
        }
        let portal_config = self.portals.get(portal).ok_or_else(|| {
            let known: Vec<&str> = self.portals.keys().map(String::as_str).collect();
            SyncError::Config(format!(
                "no portal named {portal:?} (configured: {})",
                known.join(", ")
            ))
        })?;
        let limiter = PgRateLimiter::new(&self.store, portal, portal_config.limits);
        let options = ClientOptions {
            limiter: Arc::new(limiter),
            api: portal_config.api,
            ..self.options.clone()
        };
        let client = Client::new(portal_config.webhook_url.clone(), options)?;
        clients.insert(portal.to_string(), client.clone());
        Ok(client)
    }
}

impl SyncService {
    /// Connects to the mirror database, applying the migrations first when `migrate`
    /// is set (idempotent).
    pub async fn connect(config: Config, migrate: bool) -> Result<SyncService, SyncError> {
        Self::connect_with(config, migrate, ClientOptions::default()).await
    }

    /// [`SyncService::connect`] with the portal clients' timeouts and retries (their
    /// limiter is always the portal's shared budget).
    pub async fn connect_with(
        config: Config,
        migrate: bool,
        client: ClientOptions,
    ) -> Result<SyncService, SyncError> {
        let database = config.database.as_ref().ok_or_else(|| {
            SyncError::Config("the [database] section with url is required for a sync".into())
        })?;
        let store =
            Store::connect_with(database.url.expose(), &database.schema, &database.session).await?;
        if migrate {
            store.migrate().await?;
        }
        let clients = PortalClients::new(config.portals.clone(), store.clone(), client);
        Ok(SyncService {
            config,
            store,
            clients,
            smart_types: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The portal's client, created on first use and kept for later invocations.
    pub async fn client(&self, portal: &str) -> Result<Client, SyncError> {
        self.clients.client(portal).await
    }

    /// The entities `portal` mirrors: its configured `entities`, then the smart
    /// processes its `smart_processes` selects (from `crm.type.list`, asked at most
    /// every five minutes), each once.
    pub async fn mirrored_entities(&self, portal: &str) -> Result<Vec<Entity>, SyncError> {
        let config = self.portal_config(portal)?;
        let mut entities = config.entities.clone();
        if config.smart_processes == SmartProcesses::None {
            return Ok(entities);
        }
        let selected: Vec<Entity> = match &config.smart_processes {
            SmartProcesses::Listed(refs) if !config.smart_processes.needs_types() => refs
                .iter()
                .filter_map(|r| match r {
                    SmartRef::TypeId(id) => Entity::smart(*id),
                    SmartRef::Title(_) => None,
                })
                .collect(),
            choice => self
                .smart_types(portal)
                .await?
                .iter()
                .filter(|t| choice.selects(t))
                .filter_map(|t| Entity::smart(t.entity_type_id))
                .collect(),
        };
        for entity in selected {
            if !entities.contains(&entity) {
                entities.push(entity);
            }
        }
        Ok(entities)
    }

    /// The mirrored entities whose product rows are mirrored too: deals and the smart
    /// processes that link products, when the portal's `product_rows` is on.
    pub async fn product_owners(&self, portal: &str) -> Result<Vec<Entity>, SyncError> {
        let config = self.portal_config(portal)?;
        if !config.product_rows {
            return Ok(Vec::new());
        }
        let mirrored = self.mirrored_entities(portal).await?;
        let mut owners: Vec<Entity> = mirrored
            .iter()
            .copied()
            .filter(|e| *e == Entity::Deal)
            .collect();
        if mirrored.iter().any(|e| !e.is_classic()) {
            let with_products: Vec<u32> = self
                .smart_types(portal)
                .await?
                .iter()
                .filter(|t| t.with_products)
                .map(|t| t.entity_type_id)
                .collect();
            owners.extend(
                mirrored
                    .iter()
                    .filter(|e| matches!(e, Entity::Smart(id) if with_products.contains(id))),
            );
        }
        Ok(owners)
    }

    /// Whether `portal` mirrors `entity` (see [`SyncService::mirrored_entities`]).
    pub async fn mirrors(&self, portal: &str, entity: Entity) -> Result<bool, SyncError> {
        let config = self.portal_config(portal)?;
        if config.entities.contains(&entity) {
            return Ok(true);
        }
        if entity.is_classic() || config.smart_processes == SmartProcesses::None {
            return Ok(false);
        }
        Ok(self.mirrored_entities(portal).await?.contains(&entity))
    }

    fn portal_config(&self, portal: &str) -> Result<&PortalConfig, SyncError> {
        self.config
            .portal(portal)
            .map_err(|error| SyncError::Config(error.to_string()))
    }

    /// The portal's smart processes, from `crm.type.list` (page by page).
    async fn smart_types(&self, portal: &str) -> Result<Vec<SmartType>, SyncError> {
        if let Some((at, types)) = self.smart_types.lock().await.get(portal)
            && at.elapsed() < SMART_TYPES_TTL
        {
            return Ok(types.clone());
        }
        let client = self.client(portal).await?;
        let mut types = Vec::new();
        let mut start = 0;
        loop {
            let page = client
                .call("crm.type.list", &serde_json::json!({"start": start}))
                .await?;
            types.extend(smart_types(&page.result));
            match page.next {
                Some(next) if next > start => start = next,
                _ => break,
            }
        }
        self.smart_types
            .lock()
            .await
            .insert(portal.to_string(), (Instant::now(), types.clone()));
        Ok(types)
    }

    /// Runs one request, entity by entity, each with an equal share of what is left
    /// of the time box (so an entity with a big backlog cannot starve the others). A
    /// failing entity does not stop the others; the error lists every entity that
    /// failed, and is [`SyncError::Refused`] when the only failures are refused
    /// deletions.
    pub async fn handle(
        &self,
        request: &SyncRequest,
        deadline: Option<Instant>,
    ) -> Result<Vec<EntityOutcome>, (Vec<EntityOutcome>, SyncError)> {
        let client = self
            .client(&request.portal)
            .await
            .map_err(|e| (Vec::new(), e))?;
        let portal_config = &self.config.portals[&request.portal];
        let entities = match &request.entities {
            Some(list) => list.clone(),
            None => self
                .mirrored_entities(&request.portal)
                .await
                .map_err(|e| (Vec::new(), e))?,
        };
        let whole = SyncOptions {
            delete_guard: DeleteGuard {
                max_share: portal_config.max_delete_share,
                confirmed: request.confirm_deletes,
            },
            ..deadline.map_or_else(SyncOptions::default, |d| {
                SyncOptions::until(d, DEADLINE_MARGIN)
            })
        };
        let product_rows = self
            .product_owners(&request.portal)
            .await
            .map_err(|e| (Vec::new(), e))?;
        let syncer = Syncer {
            client: &client,
            store: &self.store,
            portal: &request.portal,
            product_rows: &product_rows,
        };
        if request.mode == Mode::Reference {
            let smart: Vec<Entity> = entities
                .iter()
                .copied()
                .filter(|e| !e.is_classic())
                .collect();
            let history: Vec<Entity> = if portal_config.stage_history {
                entities.clone()
            } else {
                Vec::new()
            };
            return match syncer
                .refresh_reference(&smart, &history, whole.deadline)
                .await
            {
                Ok(summaries) => {
                    for summary in &summaries {
                        tracing::info!(summary = %serde_json::to_string(summary).unwrap_or_default(), "reference table refreshed");
                    }
                    Ok(summaries.into_iter().map(EntityOutcome::Done).collect())
                }
                Err(error) => {
                    tracing::error!(portal = %request.portal, %error, "refreshing the reference tables failed");
                    Err((
                        Vec::new(),
                        SyncError::Failed(format!("reference tables: {error}")),
                    ))
                }
            };
        }
        let mut outcomes = Vec::new();
        let mut failed = Vec::new();
        let mut refused = Vec::new();
        for (index, &entity) in entities.iter().enumerate() {
            let options = whole.share(entities.len() - index);
            match syncer.run(entity, request.mode, &options).await {
                Ok(summary) => {
                    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "sync run finished");
                    outcomes.push(EntityOutcome::Done(summary));
                }
                Err(error) => {
                    tracing::error!(portal = %request.portal, %entity, mode = %request.mode, %error, "sync run failed");
                    let outcome = match error {
                        SyncError::Refused(_) => {
                            refused.push(error.to_string());
                            RunOutcome::Refused
                        }
                        _ => {
                            failed.push(format!("{entity}: {error}"));
                            RunOutcome::Failed
                        }
                    };
                    outcomes.push(EntityOutcome::Failed {
                        portal: request.portal.clone(),
                        entity: entity.to_string(),
                        mode: request.mode.to_string(),
                        outcome,
                        error: error.to_string(),
                    });
                }
            }
        }
        if !failed.is_empty() {
            failed.extend(refused);
            Err((outcomes, SyncError::Failed(failed.join("; "))))
        } else if !refused.is_empty() {
            let refusal = Refusal {
                message: format!("{}. {HOW_TO_CONFIRM}", refused.join("; ")),
                counts: None,
            };
            Err((outcomes, SyncError::Refused(refusal)))
        } else {
            Ok(outcomes)
        }
    }

    /// Applies a batch of change messages `(key, message)` to the mirror, each portal
    /// entity's share on its own (see [`Syncer::apply_changes`]), and returns the keys
    /// (queue message IDs, say) of the messages that failed, to be delivered again (and
    /// in the end to the dead-letter queue), with the summary of each group applied. A share fails as a whole when its portal
    /// is not configured, cannot be reached or refuses the webhook, or its time runs
    /// out (each share gets an equal part of what is left, so one unreachable portal
    /// cannot use up the others' time); a refused deletion fails only the messages of
    /// the records it would have deleted. Changes of an entity the portal does not
    /// mirror are dropped with a warning.
    pub async fn apply_changes<K: Clone>(
        &self,
        batch: Vec<(K, ChangeMessage)>,
        deadline: Option<Instant>,
    ) -> BatchApplied<K> {
        let whole = deadline.map_or_else(SyncOptions::default, |d| {
            SyncOptions::until(d, DEADLINE_MARGIN)
        });
        let groups = group_changes(batch);
        let mut failed = Vec::new();
        let mut summaries = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            let deadline = whole.share(groups.len() - index).deadline;
            let (portal, entity) = (group.portal.as_str(), group.entity);
            let Some(portal_config) = self.config.portals.get(portal) else {
                let known: Vec<&str> = self.config.portals.keys().map(String::as_str).collect();
                tracing::error!(portal, %entity, messages = group.messages().len(), configured = %known.join(", "),
                    "change messages for a portal that is not configured; failing them (they end in the dead-letter queue)");
                failed.extend(group.messages());
                continue;
            };
            match self.mirrors(portal, entity).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(portal, %entity, messages = group.messages().len(),
                        "change messages for an entity this portal does not mirror; dropped");
                    continue;
                }
                Err(error) => {
                    tracing::error!(portal, %entity, %error, "cannot tell which smart processes the portal mirrors; the messages fail");
                    failed.extend(group.messages());
                    continue;
                }
            }
            let guard = DeleteGuard {
                max_share: portal_config.max_delete_share,
                confirmed: false,
            };
            let applied = match (self.client(portal).await, self.product_owners(portal).await) {
                (Ok(client), Ok(product_rows)) => {
                    let syncer = Syncer {
                        client: &client,
                        store: &self.store,
                        portal,
                        product_rows: &product_rows,
                    };
                    syncer.apply_changes(group, guard, deadline).await
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            match applied {
                Ok(ChangesApplied { summary, refused }) => {
                    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "changes applied");
                    if let Some(refused) = refused {
                        let messages = group.messages_of(&refused.ids);
                        tracing::error!(portal, %entity, would_delete = refused.counts.would_delete,
                            live_rows = refused.counts.live_rows, max_share = refused.counts.max_share,
                            failed_messages = messages.len(),
                            "deletions refused by the mass-deletion guard: {}; nothing of them was deleted and their messages fail. {HOW_TO_CONFIRM_EVENTS}",
                            refused.counts);
                        failed.extend(messages);
                    }
                    summaries.push(summary);
                }
                Err(error) => {
                    tracing::error!(portal, %entity, ids = group.records.len(), messages = group.messages().len(), %error,
                        "applying changes failed; their messages fail");
                    failed.extend(group.messages());
                }
            }
        }
        BatchApplied { failed, summaries }
    }

    /// Drains the outbox of `portal` to Bitrix24, or of every portal with back-sync on
    /// when `None` (see [`Syncer::push`]); each portal entity with due rows gets an
    /// equal share of what is left of the time. A portal named here with back-sync off
    /// is a configuration error saying how to turn it on. A failing entity does not
    /// stop the others; the error lists every entity that failed.
    pub async fn push(
        &self,
        portal: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<Vec<PushSummary>, (Vec<PushSummary>, SyncError)> {
        let portals: Vec<&str> = match portal {
            Some(name) => {
                let config = self
                    .config
                    .portal(name)
                    .map_err(|e| (Vec::new(), SyncError::Config(e.to_string())))?;
                if !config.back_sync.enabled {
                    return Err((
                        Vec::new(),
                        SyncError::Config(format!(
                            "back-sync is off for portal {name}: edits made in PostgreSQL wait in the outbox until portals.{name}.back_sync.enabled = true"
                        )),
                    ));
                }
                vec![name]
            }
            None => self
                .config
                .portals
                .iter()
                .filter(|(_, p)| p.back_sync.enabled)
                .map(|(name, _)| name.as_str())
                .collect(),
        };
        let mut due = Vec::new();
        for portal in portals {
            let entities = self
                .store
                .outbox_entities(portal)
                .await
                .map_err(|e| (Vec::new(), e.into()))?;
            due.extend(entities.into_iter().map(|entity| (portal, entity)));
        }
        let whole =
            deadline.map_or_else(SyncOptions::default, |d| SyncOptions::until(d, PUSH_MARGIN));
        let mut summaries = Vec::new();
        let mut failed = Vec::new();
        for (index, (portal, entity)) in due.iter().enumerate() {
            let deadline = whole.share(due.len() - index).deadline;
            let settings = self.config.portals[*portal].back_sync;
            let pushed = match (self.client(portal).await, self.product_owners(portal).await) {
                (Ok(client), Ok(product_rows)) => {
                    let syncer = Syncer {
                        client: &client,
                        store: &self.store,
                        portal,
                        product_rows: &product_rows,
                    };
                    syncer.push(*entity, &settings, deadline).await
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            match pushed {
                Ok(summary) => {
                    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "outbox drained");
                    summaries.push(summary);
                }
                Err(error) => {
                    tracing::error!(portal, %entity, %error, "pushing the outbox failed; its rows wait for their retry");
                    failed.push(format!("{portal} {entity}: {error}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(summaries)
        } else {
            Err((summaries, SyncError::Failed(failed.join("; "))))
        }
    }
}
