//! [`ForwardService`]: one forward of one deal along one route, from the ledger claim
//! to the reply, in as few Bitrix24 requests as the data allows (see the crate
//! documentation for the request plan).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use b24_client::{B24Error, Client, ClientOptions, Command, CommandResult};
use b24_config::{Config, PortalConfig};
use b24_domain::forward::job::ForwardJob;
use b24_domain::forward::mapping::{
    ForwardContext, Origin, PortalSide, TargetDeal, file_upload, source_files,
};
use b24_domain::forward::parties::Party;
use b24_domain::forward::products::rows_for_target;
use b24_domain::forward::route::{ForwardRoute, MatchBy};
use b24_store::{Claim, ForwardKey, Lease, Store};
use b24_sync::PortalClients;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ForwardError;
use crate::files::Downloader;
use crate::metadata::{self, MetadataCache, PortalMeta, take_result};

/// How the service talks to the portals and holds the ledger.
#[derive(Clone)]
pub struct ForwardOptions {
    /// Timeouts and retries of the Bitrix24 clients (the limiter is each portal's
    /// shared budget in Postgres, whatever this holds).
    pub client: ClientOptions,
    /// How long a claim holds a deal: longer than one invocation can run (the
    /// function's timeout plus a margin), so a lease that ran out means its holder is gone.
    pub lease: Duration,
    /// How long a portal's field metadata and status lists are reused.
    pub metadata_ttl: Duration,
    /// Upper bound for downloading one file.
    pub download_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            client: ClientOptions::default(),
            // Lambda's longest invocation is 15 minutes.
            lease: Duration::from_secs(16 * 60),
            metadata_ttl: Duration::from_secs(5 * 60),
            download_timeout: Duration::from_secs(60),
        }
    }
}

/// Which delivery of the job this is: SQS's `ApproximateReceiveCount` and the queue's
/// `maxReceiveCount`. The last one records the failure as final and tells the deal's
/// responsible user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub receive_count: u32,
    pub max_receives: u32,
}

impl Attempt {
    /// A single attempt with no retry after it (`b24sync forward`).
    pub const ONLY: Attempt = Attempt {
        receive_count: 1,
        max_receives: 1,
    };

    pub fn is_final(self) -> bool {
        self.receive_count >= self.max_receives
    }
}

/// Bitrix24 requests one forward sent to each portal (a `batch` is one; the client's
/// own retries of a request are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    pub source: u32,
    pub target: u32,
}

/// What a successful forward did, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardOutcome {
    pub route: String,
    pub source_portal: String,
    pub source_deal_id: u64,
    pub target_portal: String,
    pub target_deal_id: u64,
    pub target_deal_url: String,
    /// This forward added the target deal (else it updated the one made before).
    pub created: bool,
    pub requests: Requests,
    pub product_rows: usize,
    pub files: usize,
    /// `bizproc.event.send` answered the waiting robot.
    pub replied: bool,
    /// Other target deals carrying the same origin (made outside this ledger, or by
    /// a race on a portal that does not enforce uniqueness); left alone.
    pub duplicates: Vec<u64>,
    pub elapsed_ms: u64,
}

/// The forwarder's adapters, built once per process and reused across invocations.
pub struct ForwardService {
    config: Config,
    store: Store,
    clients: PortalClients,
    metadata: MetadataCache,
    downloader: Downloader,
    lease: Duration,
}

impl ForwardService {
    /// Connects with the default options; `migrate` applies the migrations first.
    pub async fn connect(config: Config, migrate: bool) -> Result<ForwardService, ForwardError> {
        ForwardService::connect_with(config, migrate, ForwardOptions::default()).await
    }

    pub async fn connect_with(
        config: Config,
        migrate: bool,
        options: ForwardOptions,
    ) -> Result<ForwardService, ForwardError> {
        let database = config.database.as_ref().ok_or_else(|| {
            ForwardError::Config(
                "the [database] section with url is required: the forward ledger lives there"
                    .into(),
            )
        })?;
        let store =
            Store::connect_with(database.url.expose(), &database.schema, &database.session).await?;
        if migrate {
            store.migrate().await?;
        }
        let clients = PortalClients::new(config.portals.clone(), store.clone(), options.client);
        Ok(ForwardService {
            clients,
            store,
            metadata: MetadataCache::new(options.metadata_ttl),
            downloader: Downloader::new(options.download_timeout)?,
            lease: options.lease,
            config,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Forwards the job's deal along its route; see the crate documentation. On
    /// failure the ledger records the error (final on the last attempt or when
    /// retrying cannot help, and then the deal's responsible user is notified).
    /// `deadline` bounds the work with the portals; pass the invocation's deadline
    /// minus a margin (a few seconds) for the ledger writes and the notification that
    /// follow a failure.
    pub async fn forward(
        &self,
        job: &ForwardJob,
        attempt: Attempt,
        deadline: Option<Instant>,
    ) -> Result<ForwardOutcome, ForwardError> {
        let started = Instant::now();
        let route = self
            .config
            .route(&job.route)
            .map_err(|e| ForwardError::Config(e.to_string()))?;
        if job.source != route.source {
            return Err(ForwardError::Config(format!(
                "route {} forwards deals of portal {}, the job names portal {}",
                route.name, route.source, job.source
            )));
        }
        let key = ForwardKey::new(&route.name, &route.source, job.deal_id);
        let (lease, known_target) = match self
            .store
            .claim_forward(&key, &route.target, self.lease)
            .await?
        {
            Claim::Busy { until } => {
                return Err(ForwardError::Busy {
                    deal_id: job.deal_id,
                    until,
                });
            }
            Claim::Update {
                lease,
                target_deal_id,
            } => (lease, Some(target_deal_id)),
            Claim::Add { lease, .. } => (lease, None),
        };
        let mut run = Run {
            service: self,
            route,
            job,
            deadline,
            lease,
            lease_held: true,
            requests: Requests::default(),
            assigned_by: None,
        };
        match run.execute(known_target).await {
            Ok(mut outcome) => {
                outcome.elapsed_ms = started.elapsed().as_millis() as u64;
                Ok(outcome)
            }
            Err(error) => {
                run.record_failure(&error, attempt).await;
                Err(error)
            }
        }
    }

    fn portal(&self, name: &str) -> Result<&PortalConfig, ForwardError> {
        self.config
            .portal(name)
            .map_err(|e| ForwardError::Config(e.to_string()))
    }

    async fn client(&self, name: &str) -> Result<Client, ForwardError> {
        self.clients
            .client(name)
            .await
            .map_err(|e| ForwardError::Config(e.to_string()))
    }
}

/// How long the notification of a final failure may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Batch command names.
const DEAL: &str = "deal";
const ROWS: &str = "rows";
const LOOKUP: &str = "lookup";
const COMMENT: &str = "comment";
const REPLY: &str = "reply";

/// The source deal as read in the first request.
struct SourceDeal {
    deal: Map<String, Value>,
    rows: Vec<Value>,
    meta: Arc<PortalMeta>,
    /// The contact / company records to copy, with their source IDs.
    parties: Vec<(Party, u64, Map<String, Value>)>,
}

/// What the target already holds for this deal.
struct TargetState {
    meta: Arc<PortalMeta>,
    /// The deal found by its origin (lowest ID), and any others.
    found: Option<u64>,
    duplicates: Vec<u64>,
    /// Per copied party: the target record found by its origin.
    parties: Vec<(Party, Option<u64>)>,
}

/// What the write to the target carries besides what was read.
#[derive(Clone, Copy)]
struct Payload<'p> {
    deal: &'p TargetDeal,
    /// `crm.deal.productrows.set` rows.
    rows: &'p [Value],
    /// `fileData` values per target file field.
    files: &'p [(String, Vec<Value>)],
    /// The source portal's domain: the parties' origin.
    source_domain: &'p str,
}

/// One forward in progress.
struct Run<'a> {
    service: &'a ForwardService,
    route: &'a ForwardRoute,
    job: &'a ForwardJob,
    deadline: Option<Instant>,
    lease: Lease,
    /// False once a success released the lease.
    lease_held: bool,
    requests: Requests,
    /// The source deal's responsible user, once read: who hears of a final failure.
    assigned_by: Option<u64>,
}

impl Run<'_> {
    async fn execute(&mut self, known_target: Option<u64>) -> Result<ForwardOutcome, ForwardError> {
        let route = self.route;
        let service = self.service;
        let source_config = service.portal(&route.source)?;
        let target_config = service.portal(&route.target)?;
        let source = service.client(&route.source).await?;
        let target = service.client(&route.target).await?;
        let with_statuses = route
            .plan
            .values
            .values()
            .any(|map| map.by == MatchBy::Label);

        let read = self.read_source(&source, with_statuses).await?;
        let origin = Origin::new(&source_config.domain, self.job.deal_id);
        let state = self
            .read_target(
                &target,
                &origin,
                known_target,
                &read,
                &source_config.domain,
                with_statuses,
            )
            .await?;

        let context = ForwardContext {
            plan: &route.plan,
            source_name: &route.source,
            source_domain: &source_config.domain,
            source: PortalSide {
                fields: &read.meta.fields,
                statuses: &read.meta.statuses,
            },
            target: PortalSide {
                fields: &state.meta.fields,
                statuses: &state.meta.statuses,
            },
        };
        let target_deal = context
            .target_deal(self.job.deal_id, &read.deal, Utc::now())
            .map_err(|source| {
                // The portals may have changed since the metadata was read.
                service.metadata.forget(&route.source);
                service.metadata.forget(&route.target);
                ForwardError::Mapping {
                    route: route.name.clone(),
                    source,
                }
            })?;
        let rows = if route.copy_products {
            rows_for_target(&read.rows).map_err(|source| ForwardError::ProductRows {
                route: route.name.clone(),
                source,
            })?
        } else {
            Vec::new()
        };
        let files = self
            .download_files(&source_config.webhook_url, &read, &state)
            .await?;

        let existing = known_target.or(state.found);
        let payload = Payload {
            deal: &target_deal,
            rows: &rows,
            files: &files,
            source_domain: &source_config.domain,
        };
        let (target_deal_id, created) = self
            .write_target(&target, existing, &payload, &read, &state)
            .await?;
        if known_target.is_none() && !created {
            self.record_target(target_deal_id).await?;
        }

        let url = format!(
            "https://{}/crm/deal/details/{target_deal_id}/",
            target_config.domain
        );
        let replied = self.reply(&source, target_deal_id, &url, created).await?;
        if known_target.is_some() {
            service.store.record_forwarded(&self.lease).await?;
            self.lease_held = false;
        }
        let files_count = files.iter().map(|(_, uploads)| uploads.len()).sum();
        Ok(ForwardOutcome {
            route: route.name.clone(),
            source_portal: route.source.clone(),
            source_deal_id: self.job.deal_id,
            target_portal: route.target.clone(),
            target_deal_id,
            target_deal_url: url,
            created,
            requests: self.requests,
            product_rows: rows.len(),
            files: files_count,
            replied,
            duplicates: state.duplicates,
            elapsed_ms: 0,
        })
    }

    /// One request to the source: the deal, its product rows, the contact and company
    /// to copy (by reference to the deal's own `CONTACT_ID` / `COMPANY_ID`) and the
    /// metadata the cache lacks.
    async fn read_source(
        &mut self,
        source: &Client,
        with_statuses: bool,
    ) -> Result<SourceDeal, ForwardError> {
        let route = self.route;
        let portal = route.source.as_str();
        let step = "reading the source deal";
        let deal_id = self.job.deal_id;
        let cached = self.service.metadata.get(portal, with_statuses);
        let mut commands = vec![Command::new(DEAL, "crm.deal.get", json!({ "id": deal_id }))];
        if route.copy_products {
            commands.push(Command::new(
                ROWS,
                "crm.deal.productrows.get",
                json!({ "id": deal_id }),
            ));
        }
        for party in copied_parties(route) {
            commands.push(Command::new(
                party.entity(),
                format!("crm.{}.get", party.entity()),
                json!({ "id": format!("$result[{DEAL}][{}]", party.deal_field()) }),
            ));
        }
        commands.extend(metadata::commands(cached.as_deref(), with_statuses));
        let mut results = self.send(source, portal, step, commands, false).await?;
        self.requests.source += 1;

        let deal = match take_result(&mut results, DEAL, portal, step) {
            // `crm.deal.get` shows an empty user field as "": empty like null, so
            // the mapping leaves it out instead of translating "".
            Ok(Value::Object(deal)) => deal
                .into_iter()
                .filter(|(_, value)| value.as_str() != Some(""))
                .collect::<Map<String, Value>>(),
            Ok(_) => {
                return Err(bad_answer(
                    portal,
                    step,
                    "crm.deal.get did not answer an object",
                ));
            }
            Err(ForwardError::Portal { source, .. }) if is_missing(&source) => {
                return Err(ForwardError::DealNotFound {
                    portal: portal.to_string(),
                    deal_id,
                    detail: source.to_string(),
                });
            }
            Err(error) => return Err(error),
        };
        self.assigned_by = id_of(deal.get("ASSIGNED_BY_ID"));
        let rows = if route.copy_products {
            match take_result(&mut results, ROWS, portal, "reading the product rows")? {
                Value::Array(rows) => rows,
                _ => {
                    return Err(bad_answer(
                        portal,
                        "reading the product rows",
                        "crm.deal.productrows.get did not answer a list",
                    ));
                }
            }
        } else {
            Vec::new()
        };
        let mut parties = Vec::new();
        for party in copied_parties(route) {
            let answer = take_result(
                &mut results,
                party.entity(),
                portal,
                "reading the contact and company",
            );
            let Some(id) = party.source_id(&deal) else {
                continue; // The command had no ID to read; its error means nothing.
            };
            match answer? {
                Value::Object(record) => parties.push((party, id, record)),
                _ => {
                    return Err(bad_answer(
                        portal,
                        "reading the contact and company",
                        "the record is not an object",
                    ));
                }
            }
        }
        let meta = metadata::resolve(
            &self.service.metadata,
            portal,
            cached,
            &mut results,
            with_statuses,
        )?;
        Ok(SourceDeal {
            deal,
            rows,
            meta,
            parties,
        })
    }

    /// At most one request to the target: the deal (unless the ledger knows it) and
    /// the parties looked up by their origin, and the metadata the cache lacks.
    async fn read_target(
        &mut self,
        target: &Client,
        origin: &Origin,
        known_target: Option<u64>,
        read: &SourceDeal,
        source_domain: &str,
        with_statuses: bool,
    ) -> Result<TargetState, ForwardError> {
        let portal = self.route.target.as_str();
        let step = "looking the deal up on the target";
        let cached = self.service.metadata.get(portal, with_statuses);
        let mut commands = Vec::new();
        if known_target.is_none() {
            commands.push(lookup(LOOKUP, "crm.deal.list", origin));
        }
        for (party, id, _) in &read.parties {
            let name = format!("{}_{LOOKUP}", party.entity());
            let method = format!("crm.{}.list", party.entity());
            commands.push(lookup(&name, &method, &Origin::new(source_domain, *id)));
        }
        commands.extend(metadata::commands(cached.as_deref(), with_statuses));
        let mut results = if commands.is_empty() {
            Vec::new()
        } else {
            let results = self.send(target, portal, step, commands, false).await?;
            self.requests.target += 1;
            results
        };
        let (found, duplicates) = if known_target.is_none() {
            let mut ids = found_ids(
                take_result(&mut results, LOOKUP, portal, step)?,
                portal,
                step,
            )?;
            let first = (!ids.is_empty()).then(|| ids.remove(0));
            (first, ids)
        } else {
            (None, Vec::new())
        };
        let mut parties = Vec::new();
        for (party, _, _) in &read.parties {
            let name = format!("{}_{LOOKUP}", party.entity());
            let ids = found_ids(
                take_result(&mut results, &name, portal, step)?,
                portal,
                step,
            )?;
            parties.push((*party, ids.first().copied()));
        }
        let meta = metadata::resolve(
            &self.service.metadata,
            portal,
            cached,
            &mut results,
            with_statuses,
        )?;
        Ok(TargetState {
            meta,
            found,
            duplicates,
            parties,
        })
    }

    /// The `fileData` values per target field of the route's file fields.
    async fn download_files(
        &self,
        webhook: &b24_domain::webhook::WebhookUrl,
        read: &SourceDeal,
        state: &TargetState,
    ) -> Result<Vec<(String, Vec<Value>)>, ForwardError> {
        let mut out = Vec::new();
        for (source_field, target_field) in self.route.plan.file_fields() {
            let files = read
                .deal
                .get(source_field)
                .map(source_files)
                .unwrap_or_default();
            if files.is_empty() {
                continue; // Like any empty value: the target keeps what it has.
            }
            let multiple = state
                .meta
                .fields
                .get(target_field)
                .is_some_and(|f| f.meta.is_multiple);
            let wanted = if multiple { files.len() } else { 1 };
            let mut uploads = Vec::new();
            for file in files.iter().take(wanted) {
                let downloaded = within(
                    self.deadline,
                    "downloading files",
                    self.service.downloader.download(
                        &self.route.source,
                        webhook,
                        source_field,
                        file,
                    ),
                )
                .await??;
                uploads.push(file_upload(&downloaded.name, &downloaded.content));
            }
            out.push((target_field.to_string(), uploads));
        }
        Ok(out)
    }

    /// One request to the target, halting at the first failure: the parties not
    /// found, the deal (added, or updated when known), its product rows.
    async fn write_target(
        &mut self,
        target: &Client,
        existing: Option<u64>,
        payload: &Payload<'_>,
        read: &SourceDeal,
        state: &TargetState,
    ) -> Result<(u64, bool), ForwardError> {
        let Payload {
            deal: target_deal,
            rows,
            files,
            source_domain,
        } = *payload;
        let portal = self.route.target.as_str();
        let step = "writing the target deal";
        let mut fields = match existing {
            Some(_) => target_deal.update_fields(&state.meta.fields),
            None => target_deal.fields.clone(),
        };
        let mut commands = Vec::new();
        for ((party, found), (_, source_id, record)) in state.parties.iter().zip(&read.parties) {
            let value = match found {
                Some(id) => json!(id),
                None => {
                    let name = format!("{}_add", party.entity());
                    commands.push(Command::new(
                        &name,
                        format!("crm.{}.add", party.entity()),
                        json!({ "fields": party.fields_for_target(source_domain, *source_id, record) }),
                    ));
                    json!(format!("$result[{name}]"))
                }
            };
            fields.insert(party.deal_field().to_string(), value);
        }
        for (field, uploads) in files {
            let value = match uploads.as_slice() {
                [one]
                    if !state
                        .meta
                        .fields
                        .get(field)
                        .is_some_and(|f| f.meta.is_multiple) =>
                {
                    one.clone()
                }
                many => Value::from(many.to_vec()),
            };
            fields.insert(field.clone(), value);
        }
        let adds = !commands.is_empty() || existing.is_none();
        commands.push(match existing {
            Some(id) => Command::new(
                DEAL,
                "crm.deal.update",
                json!({ "id": id, "fields": fields }),
            ),
            None => Command::new(DEAL, "crm.deal.add", json!({ "fields": fields })),
        });
        // An empty list cannot be sent in a batch command (PHP drops it), so a deal
        // without rows leaves the target's rows alone.
        if self.route.copy_products && !rows.is_empty() {
            let id = existing.map_or_else(|| json!(format!("$result[{DEAL}]")), |id| json!(id));
            commands.push(Command::new(
                ROWS,
                "crm.deal.productrows.set",
                json!({ "id": id, "rows": rows }),
            ));
        }
        let sent = match self.deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.into(), target.batch(commands, true)).await
            }
            None => Ok(target.batch(commands, true).await),
        };
        self.requests.target += 1;
        let results = match sent {
            Ok(Ok(results)) => results,
            Err(_) if adds => {
                return Err(self
                    .ambiguous("the time ran out while the add was under way")
                    .await);
            }
            Err(_) => return Err(ForwardError::OutOfTime(step)),
            Ok(Err(error)) if adds && is_ambiguous(&error) => {
                return Err(self.ambiguous(&error.to_string()).await);
            }
            Ok(Err(source)) => {
                return Err(ForwardError::Portal {
                    portal: portal.to_string(),
                    step,
                    source,
                });
            }
        };
        let deal_id = match existing {
            Some(id) => id,
            None => match results.iter().find(|r| r.name == DEAL).map(|r| &r.outcome) {
                Some(Ok(output)) => id_of(Some(&output.result))
                    .ok_or_else(|| bad_answer(portal, step, "crm.deal.add did not answer an ID"))?,
                _ => 0,
            },
        };
        if existing.is_none() && deal_id > 0 {
            // The deal exists whatever failed after it: record it before anything else.
            self.record_target(deal_id).await?;
        }
        if let Some((name, source)) = first_failure(results) {
            return Err(match existing {
                Some(id) if name == DEAL && is_missing(&source) => ForwardError::TargetDealGone {
                    portal: portal.to_string(),
                    target_deal_id: id,
                    detail: source.to_string(),
                },
                _ => ForwardError::Portal {
                    portal: portal.to_string(),
                    step,
                    source,
                },
            });
        }
        if deal_id == 0 {
            return Err(bad_answer(portal, step, "no result for crm.deal.add"));
        }
        Ok((deal_id, existing.is_none()))
    }

    /// Records the target deal an add made or a look-up found; the lease is released.
    async fn record_target(&mut self, target_deal_id: u64) -> Result<(), ForwardError> {
        let recorded = self
            .service
            .store
            .record_target(&self.lease, target_deal_id)
            .await?;
        self.lease_held = false;
        if recorded != target_deal_id {
            tracing::warn!(route = %self.route.name, source_deal_id = self.job.deal_id, recorded, written = target_deal_id,
                "the ledger already named another target deal for this source deal; the target portal holds both");
        }
        Ok(())
    }

    /// Marks the ledger row ambiguous and returns the error saying so.
    async fn ambiguous(&self, detail: &str) -> ForwardError {
        let error = ForwardError::AmbiguousAdd {
            portal: self.route.target.clone(),
            detail: detail.to_string(),
        };
        if let Err(store) = self
            .service
            .store
            .mark_ambiguous(&self.lease, &error.to_string())
            .await
        {
            tracing::error!(error = %store, "could not mark the forward ambiguous; the next claim looks the deal up anyway");
        }
        error
    }

    /// One request to the source: the timeline comment naming the target deal and,
    /// when the robot waits, its reply. Returns whether the reply was accepted.
    async fn reply(
        &mut self,
        source: &Client,
        target_deal_id: u64,
        url: &str,
        created: bool,
    ) -> Result<bool, ForwardError> {
        let portal = self.route.source.as_str();
        let step = "commenting on the source deal";
        let how = if created {
            "Forwarded"
        } else {
            "Forwarded again"
        };
        let comment = format!(
            "{how} to portal {} as deal {target_deal_id} (route {}): {url}",
            self.route.target, self.route.name
        );
        let mut commands = vec![Command::new(
            COMMENT,
            "crm.timeline.comment.add",
            json!({"fields": {"ENTITY_ID": self.job.deal_id, "ENTITY_TYPE": "deal", "COMMENT": comment}}),
        )];
        let token = self
            .job
            .event_token
            .as_deref()
            .filter(|token| self.job.waits_for_reply && !token.is_empty());
        if let Some(token) = token {
            let values = self.route.reply.return_values(target_deal_id, url);
            commands.push(Command::new(
                REPLY,
                "bizproc.event.send",
                json!({"EVENT_TOKEN": token, "RETURN_VALUES": values, "LOG_MESSAGE": comment}),
            ));
        }
        let mut results = self.send(source, portal, step, commands, true).await?;
        self.requests.source += 1;
        take_result(&mut results, COMMENT, portal, step)?;
        if token.is_none() {
            return Ok(false);
        }
        match take_result(&mut results, REPLY, portal, "replying to the robot") {
            Ok(_) => Ok(true),
            // The token is spent (an earlier attempt's reply went through unseen) or
            // no longer valid: sending it again cannot succeed, and the deal is forwarded.
            Err(ForwardError::Portal {
                source: B24Error::AccessDenied { .. },
                ..
            }) => {
                tracing::warn!(route = %self.route.name, source_deal_id = self.job.deal_id,
                    "bizproc.event.send refused the event token (already answered or expired); the robot gets no reply");
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn send(
        &self,
        client: &Client,
        portal: &str,
        step: &'static str,
        commands: Vec<Command>,
        halt: bool,
    ) -> Result<Vec<CommandResult>, ForwardError> {
        within(self.deadline, step, client.batch(commands, halt))
            .await?
            .map_err(|source| ForwardError::Portal {
                portal: portal.to_string(),
                step,
                source,
            })
    }

    /// Records the failure in the ledger and, when it is final, tells the deal's
    /// responsible user. A `Busy` run never held the deal, so it records nothing.
    async fn record_failure(&mut self, error: &ForwardError, attempt: Attempt) {
        let service = self.service;
        let last = attempt.is_final() || error.is_permanent();
        let text = error.to_string();
        if !self.lease_held {
            // A success already released the lease (the target deal is recorded):
            // take the deal again to record what failed after it.
            let claim = service
                .store
                .claim_forward(self.lease.key(), &self.route.target, service.lease)
                .await;
            match claim {
                Ok(Claim::Update { lease, .. } | Claim::Add { lease, .. }) => self.lease = lease,
                Ok(Claim::Busy { .. }) => return,
                Err(store) => {
                    tracing::error!(error = %store, "could not record the failed forward in the ledger");
                    return;
                }
            }
        }
        if let Err(store) = service.store.record_failure(&self.lease, &text, last).await {
            tracing::error!(error = %store, "could not record the failed forward in the ledger");
        }
        tracing::warn!(route = %self.route.name, source_deal_id = self.job.deal_id, kind = error.kind(),
            permanent = error.is_permanent(), receive_count = attempt.receive_count, final_attempt = last,
            error = %text, "forward failed");
        if last {
            self.notify(&text).await;
        }
    }

    /// `im.notify.system.add` to the deal's responsible user (or, when the deal could
    /// not be read, the webhook's user) on the source portal.
    async fn notify(&self, error: &str) {
        let route = self.route;
        let Ok(source) = self.service.client(&route.source).await else {
            return;
        };
        let user = self
            .assigned_by
            .unwrap_or_else(|| source.webhook().user_id());
        let message = format!(
            "Deal {} could not be forwarded to portal {} (route {}): {error}",
            self.job.deal_id, route.target, route.name
        );
        // Not bound by the deadline, which may be what failed the forward; the
        // caller's margin covers this one request.
        let sent = tokio::time::timeout(
            NOTIFY_TIMEOUT,
            source.call(
                "im.notify.system.add",
                &json!({"USER_ID": user, "MESSAGE": message}),
            ),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::error!(route = %route.name, source_deal_id = self.job.deal_id, user,
                "could not notify the responsible user of the failed forward");
        }
    }
}

/// The parties the route copies.
fn copied_parties(route: &ForwardRoute) -> impl Iterator<Item = Party> {
    [
        (route.copy_contacts, Party::Contact),
        (route.copy_company, Party::Company),
    ]
    .into_iter()
    .filter_map(|(copy, party)| copy.then_some(party))
}

/// A `crm.<entity>.list` finding the records with `origin`, lowest ID first, no count.
fn lookup(name: &str, method: &str, origin: &Origin) -> Command {
    Command::new(
        name,
        method,
        json!({"filter": origin.list_filter(), "select": ["ID"], "order": {"ID": "ASC"}, "start": -1}),
    )
}

/// The IDs of a look-up's rows, ascending.
fn found_ids(result: Value, portal: &str, step: &'static str) -> Result<Vec<u64>, ForwardError> {
    let Value::Array(rows) = result else {
        return Err(bad_answer(
            portal,
            step,
            "a list method did not answer a list",
        ));
    };
    let mut ids: Vec<u64> = rows
        .iter()
        .map(|row| {
            id_of(row.get("ID")).ok_or_else(|| bad_answer(portal, step, "a row without an ID"))
        })
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// A positive ID given as a number or as text.
fn id_of(value: Option<&Value>) -> Option<u64> {
    let id = match value? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (id > 0).then_some(id)
}

/// A record that does not exist or that the webhook's user may not see (`Not found`,
/// or the old API's `Access denied.` with an empty code).
fn is_missing(error: &B24Error) -> bool {
    match error {
        B24Error::NotFound { .. } => true,
        B24Error::Api {
            code, description, ..
        } => code.is_empty() && description.to_ascii_lowercase().contains("access denied"),
        _ => false,
    }
}

/// A failed request after which a create in it may have been applied.
fn is_ambiguous(error: &B24Error) -> bool {
    matches!(
        error,
        B24Error::AmbiguousCreate { .. }
            | B24Error::Timeout { .. }
            | B24Error::Network { .. }
            | B24Error::Server { .. }
            | B24Error::InvalidJson { .. }
    )
}

/// The name and error of the first command that failed on its own (not one skipped
/// after it).
fn first_failure(results: Vec<CommandResult>) -> Option<(String, B24Error)> {
    results.into_iter().find_map(|r| match r.outcome {
        Err(B24Error::CommandSkipped { .. }) | Ok(_) => None,
        Err(error) => Some((r.name, error)),
    })
}

fn bad_answer(portal: &str, step: &'static str, detail: &str) -> ForwardError {
    ForwardError::BadAnswer {
        portal: portal.to_string(),
        step,
        detail: detail.to_string(),
    }
}

/// Runs `work`, giving up with [`ForwardError::OutOfTime`] at the deadline.
async fn within<T>(
    deadline: Option<Instant>,
    step: &'static str,
    work: impl Future<Output = T>,
) -> Result<T, ForwardError> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .map_err(|_| ForwardError::OutOfTime(step)),
        None => Ok(work.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_as_numbers_or_text_and_zero_is_none() {
        assert_eq!(id_of(Some(&json!("84"))), Some(84));
        assert_eq!(id_of(Some(&json!(9))), Some(9));
        assert_eq!(id_of(Some(&json!("0"))), None);
        assert_eq!(id_of(Some(&json!(null))), None);
        assert_eq!(id_of(None), None);
    }

    #[test]
    fn missing_records_are_not_found_or_hidden() {
        let m = || "crm.deal.get".to_string();
        assert!(is_missing(&B24Error::from_envelope(
            &m(),
            None,
            "",
            "Not found"
        )));
        assert!(is_missing(&B24Error::from_envelope(
            &m(),
            None,
            "",
            "Access denied."
        )));
        assert!(!is_missing(&B24Error::QueryLimitExceeded { method: m() }));
    }

    #[test]
    fn look_ups_are_exact_ascending_and_uncounted() {
        let command = lookup(
            "lookup",
            "crm.deal.list",
            &Origin::new("Partner.example", 7),
        );
        assert_eq!(
            command.params,
            json!({"filter": {"=ORIGINATOR_ID": "b24sync:partner.example", "=ORIGIN_ID": "7"},
                   "select": ["ID"], "order": {"ID": "ASC"}, "start": -1})
        );
        assert_eq!(
            found_ids(json!([{"ID": "9"}, {"ID": "3"}]), "p", "s").unwrap(),
            vec![3, 9]
        );
        assert!(found_ids(json!({}), "p", "s").is_err());
    }

    #[test]
    fn attempts_know_the_last_one() {
        assert!(Attempt::ONLY.is_final());
        assert!(
            !Attempt {
                receive_count: 2,
                max_receives: 5
            }
            .is_final()
        );
    }
}
