//! A Bitrix24 portal simulator: an HTTP server on loopback that answers like one
//! portal reached through an incoming webhook (`/rest/{user_id}/{secret}/{method}`),
//! with the documented limits, outgoing events and seeded fault injection, plus a
//! control surface under `/_sim/` for tests and demos. See README.md.

mod answer;
mod batch;
mod error;
mod events;
mod faults;
mod generate;
mod items;
mod limits;
mod list;
mod methods;
mod params;
mod portal;
mod products;
mod reference;
mod robots;
mod schema;
mod server;
mod shared;
mod smart;
mod stagehistory;
mod stats;
mod statuses;
mod table;
mod values;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::FixedOffset;
use parking_lot::{Mutex, RwLock};
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use events::EventTarget;
pub use faults::FaultSpec;
pub use limits::{LimitConfig, LimitsUpdate};
pub use portal::{
    HideRequest, ItemMutateRequest, ItemUserFieldRequest, MutateOutcome, MutateRequest,
    UserFieldRequest,
};
pub use reference::{CategoryRequest, CurrencyRequest, UserRequest};
pub use robots::{AppRobotCall, Application, RobotDelivery, WebhookRobotCall};
pub use schema::{Entity, UserFieldType};
pub use smart::SmartProcessConfig;
pub use stats::SimStats;
pub use statuses::StatusRequest;

use events::{EventAuth, EventQueue};
use faults::FaultInjector;
use generate::SimRng;
use limits::Limiter;
use portal::{Portal, SeedPlan};
use shared::Shared;
use values::PortalClock;

/// Everything the simulated portal is made of.
#[derive(Clone)]
pub struct SimConfig {
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Seed of the generated data (same seed, same records).
    pub seed: u64,
    pub deals: usize,
    pub contacts: usize,
    pub leads: usize,
    pub companies: usize,
    /// User fields (`UF_CRM_*`) per entity; their types cycle through every `UserFieldType`.
    pub user_fields: usize,
    pub limits: LimitConfig,
    /// Where outgoing events go; `None` sends none.
    pub events: Option<EventTarget>,
    pub faults: FaultSpec,
    /// The webhook's user (`/rest/{user_id}/...`).
    pub user_id: u64,
    /// The webhook's secret code (`/rest/1/{secret}/...`).
    pub secret: String,
    /// The portal's domain as events report it.
    pub domain: String,
    /// `auth[member_id]` of events; `None` derives 32 hex digits from the seed.
    pub member_id: Option<String>,
    /// The portal's UTC offset in seconds (dates are shown in it).
    pub utc_offset_secs: i32,
    /// The installed application: `/rest/{method}?auth=<access_token>` runs in its context.
    pub application: Application,
    /// Smart processes (custom CRM types) with their seeded items; none by default.
    pub smart_processes: Vec<SmartProcessConfig>,
    /// Deal pipelines besides the general one (ID 0); seeded deals spread over all
    /// pipelines by ID. None by default.
    pub deal_categories: Vec<String>,
    /// Seeded deals get up to this many product rows each, and so do deals that
    /// `mutate` adds or changes (0, the default: none).
    pub product_rows: usize,
    /// The Unix second seeded records were last modified by at the latest; `None` (the
    /// default): a minute before start. Two simulators with the same seed and anchor
    /// hold the same data, whenever they start.
    pub anchor: Option<i64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            seed: 1,
            deals: 0,
            contacts: 0,
            leads: 0,
            companies: 0,
            user_fields: 0,
            limits: LimitConfig::default(),
            events: None,
            faults: FaultSpec::default(),
            user_id: 1,
            secret: "simsecret0123456".to_string(),
            domain: "sim.bitrix24.test".to_string(),
            member_id: None,
            utc_offset_secs: 3 * 3600,
            application: Application::default(),
            smart_processes: Vec::new(),
            deal_categories: Vec::new(),
            product_rows: 0,
            anchor: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("seed", &self.seed)
            .field("deals", &self.deals)
            .field("contacts", &self.contacts)
            .field("leads", &self.leads)
            .field("companies", &self.companies)
            .field("user_fields", &self.user_fields)
            .field("limits", &self.limits)
            .field("events", &self.events)
            .field("faults", &self.faults)
            .field("user_id", &self.user_id)
            .field("secret", &"***")
            .field("domain", &self.domain)
            .field("member_id", &self.member_id)
            .field("utc_offset_secs", &self.utc_offset_secs)
            .field("application", &self.application)
            .field("smart_processes", &self.smart_processes)
            .field("deal_categories", &self.deal_categories)
            .field("product_rows", &self.product_rows)
            .field("anchor", &self.anchor)
            .finish()
    }
}

/// How long the portal's queue waits for a robot handler to answer.
const ROBOT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// 32 hex digits, stable for a seed.
fn member_id_for(seed: u64) -> String {
    let mut rng = SimRng::seed_from_u64(seed ^ 0x6d65_6d62_6572);
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// Every smart process valid, no `entityTypeId` or type id twice.
fn validate_smart_processes(configs: &[SmartProcessConfig]) -> anyhow::Result<()> {
    for (i, config) in configs.iter().enumerate() {
        config.validate().map_err(anyhow::Error::msg)?;
        let earlier = &configs[..i];
        if earlier
            .iter()
            .any(|c| c.entity_type_id == config.entity_type_id)
        {
            bail!(
                "smart process {} is configured twice",
                config.entity_type_id
            );
        }
        if let Some(id) = config.type_id
            && earlier.iter().any(|c| c.type_id == Some(id))
        {
            bail!("two smart processes have type id {id}");
        }
    }
    Ok(())
}

/// A running simulator; dropping it stops the server.
pub struct RunningSim {
    addr: SocketAddr,
    user_id: u64,
    secret: String,
    member_id: String,
    domain: String,
    application: Application,
    http: reqwest::Client,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningSim")
            .field("addr", &self.addr)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Starts the simulator: generates the seeded data and serves on `config.listen`.
pub async fn start(config: SimConfig) -> anyhow::Result<RunningSim> {
    config
        .limits
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid limits")?;
    if config.secret.is_empty() || !config.secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("the webhook secret must be non-empty and made of letters and digits");
    }
    let app = &config.application;
    if app.access_token.is_empty() || app.application_token.is_empty() {
        bail!("the application's access token and application token must be non-empty");
    }
    let offset = FixedOffset::east_opt(config.utc_offset_secs).with_context(|| {
        format!(
            "UTC offset of {} seconds is out of range",
            config.utc_offset_secs
        )
    })?;
    validate_smart_processes(&config.smart_processes)?;
    if config.deal_categories.iter().any(|c| c.trim().is_empty()) {
        bail!("deal pipeline names must not be empty");
    }
    if config.product_rows > 100 {
        bail!("at most 100 product rows per deal");
    }
    let clock = PortalClock { offset };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let plan = SeedPlan {
        seed: config.seed,
        deals: config.deals,
        contacts: config.contacts,
        leads: config.leads,
        companies: config.companies,
        user_fields: config.user_fields,
        // Seeded records were last modified a minute ago at the latest, so every
        // change through the API is later than all of them.
        anchor: config.anchor.unwrap_or(clock.now_secs() - 60),
        deal_categories: config.deal_categories.clone(),
        product_rows: config.product_rows,
        smart_processes: config.smart_processes.clone(),
    };
    let seeding = plan.clone();
    let portal = tokio::task::spawn_blocking(move || Portal::seeded(&seeding))
        .await
        .context("generating data")?;
    let member_id = config
        .member_id
        .clone()
        .unwrap_or_else(|| member_id_for(config.seed));
    let stats = Arc::new(Mutex::new(SimStats::default()));
    let identity = EventAuth {
        domain: config.domain.clone(),
        client_endpoint: format!("http://{addr}/rest/"),
        member_id: member_id.clone(),
    };
    let events = config
        .events
        .clone()
        .map(|target| EventQueue::start(target, identity.clone(), Arc::clone(&stats)));
    let robot_http = reqwest::Client::builder()
        .no_proxy()
        .timeout(ROBOT_CALL_TIMEOUT)
        .build()
        .context("building the robot client")?;
    let shared = Arc::new(Shared {
        portal: RwLock::new(portal),
        plan,
        clock,
        user_id: config.user_id,
        secret: config.secret.clone(),
        limiter: Mutex::new(Limiter::new(config.limits)),
        stats,
        faults: Mutex::new(FaultInjector::new(config.faults.clone())),
        events,
        identity,
        application: config.application.clone(),
        refresh_token: format!("{:032x}", rand::rng().random::<u128>()),
        http: robot_http,
    });
    let (shutdown, stop) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, server::router(shared), stop));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the control client")?;
    Ok(RunningSim {
        addr,
        user_id: config.user_id,
        secret: config.secret,
        member_id,
        domain: config.domain,
        application: config.application,
        http,
        shutdown,
        server,
    })
}

impl RunningSim {
    /// `http://127.0.0.1:PORT/rest/{user_id}/{secret}/` (holds the secret).
    pub fn webhook_url(&self) -> String {
        format!("{}/rest/{}/{}/", self.base_url(), self.user_id, self.secret)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `auth[member_id]` of outgoing events.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// `auth[domain]` of outgoing events.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    async fn control<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .context("calling the simulator's control surface")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("reading the control surface's answer")?;
        if !status.is_success() {
            bail!(
                "control surface answered {status}: {}",
                body["error"].as_str().unwrap_or_default()
            );
        }
        serde_json::from_value(body).context("unexpected control surface answer")
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}/_sim/{path}", self.base_url()))
    }

    fn post(&self, path: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/_sim/{path}", self.base_url()))
            .json(body)
    }

    /// `GET /_sim/stats`
    pub async fn stats(&self) -> anyhow::Result<SimStats> {
        self.control(self.get("stats")).await
    }

    /// `POST /_sim/stats/reset`
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.control::<Value>(self.post("stats/reset", &json!({})))
            .await
            .map(drop)
    }

    /// `POST /_sim/reset`: back to the seeded data.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.control::<Value>(self.post("reset", &json!({})))
            .await
            .map(drop)
    }

    /// `POST /_sim/mutate`: seeded random adds, updates and deletes (events fire).
    pub async fn mutate(&self, request: &MutateRequest) -> anyhow::Result<MutateOutcome> {
        self.control(self.post("mutate", request)).await
    }

    /// `POST /_sim/mutate` where a share (0..1) of the updated records is changed a
    /// second time within the same second (same `DATE_MODIFY`, two events);
    /// `outcome.repeated` lists them.
    pub async fn mutate_with_repeats(
        &self,
        request: &MutateRequest,
        repeat_share: f64,
    ) -> anyhow::Result<MutateOutcome> {
        let mut body = serde_json::to_value(request).context("encoding the mutation")?;
        body["repeat_share"] = json!(repeat_share);
        self.control(self.post("mutate", &body)).await
    }

    /// `POST /_sim/hide`: hides a seeded share of the entity's records from the
    /// webhook's user, as a role change does (`share` 0 shows them all again).
    /// Returns how many live records are hidden now.
    pub async fn hide_records(
        &self,
        entity: Entity,
        share: f64,
        seed: u64,
    ) -> anyhow::Result<usize> {
        let request = HideRequest {
            entity,
            share,
            seed,
        };
        let answer: Value = self.control(self.post("hide", &request)).await?;
        answer["hidden"]
            .as_u64()
            .map(|n| n as usize)
            .context("no hidden count in the answer")
    }

    /// `GET /_sim/dump/{entity}`: every live record with every field, by ID.
    pub async fn dump(&self, entity: Entity) -> anyhow::Result<Vec<Map<String, Value>>> {
        self.control(self.get(&format!("dump/{entity}"))).await
    }

    /// `POST /_sim/userfields`: returns the new field's `FIELD_NAME`.
    pub async fn add_user_field(&self, request: &UserFieldRequest) -> anyhow::Result<String> {
        let answer: Value = self.control(self.post("userfields", request)).await?;
        answer["FIELD_NAME"]
            .as_str()
            .map(str::to_string)
            .context("no FIELD_NAME in the answer")
    }

    /// `POST /_sim/faults` with a fault spec (`""` turns faults off).
    pub async fn set_faults(&self, spec: &str) -> anyhow::Result<()> {
        self.control::<Value>(self.post("faults", &json!({"spec": spec})))
            .await
            .map(drop)
    }

    /// `POST /_sim/limits`: returns the limits now in force.
    pub async fn set_limits(&self, update: &LimitsUpdate) -> anyhow::Result<LimitConfig> {
        self.control(self.post("limits", update)).await
    }

    /// `GET /_sim/timeline`: comments added with `crm.timeline.comment.add`.
    pub async fn timeline_comments(&self) -> anyhow::Result<Vec<Value>> {
        self.control(self.get("timeline")).await
    }

    /// `GET /_sim/notifications`: notifications sent with `im.notify.system.add`.
    pub async fn notifications(&self) -> anyhow::Result<Vec<Value>> {
        self.control(self.get("notifications")).await
    }

    /// `GET /_sim/workflow-replies`: what `bizproc.event.send` returned to robots.
    pub async fn workflow_replies(&self) -> anyhow::Result<Vec<Value>> {
        self.control(self.get("workflow-replies")).await
    }

    /// The installed application: its tokens and the host its robot handlers live on.
    pub fn application(&self) -> &Application {
        &self.application
    }

    /// `http://127.0.0.1:PORT/rest/`: call `{url}{method}` with `auth=<access_token>`
    /// to act in the application's context.
    pub fn application_url(&self) -> String {
        format!("{}/rest/", self.base_url())
    }

    /// `POST /_sim/robot/webhook`: the built-in "Webhook" robot fires for a deal.
    pub async fn fire_webhook_robot(
        &self,
        url: &str,
        deal_id: u64,
    ) -> anyhow::Result<RobotDelivery> {
        let call = WebhookRobotCall {
            url: url.to_string(),
            deal_id,
        };
        self.control(self.post("robot/webhook", &call)).await
    }

    /// `POST /_sim/robot/app`: an application robot fires for a deal; the answer holds
    /// the event token the portal now accepts in `bizproc.event.send`.
    pub async fn fire_app_robot(&self, call: &AppRobotCall) -> anyhow::Result<RobotDelivery> {
        self.control(self.post("robot/app", call)).await
    }

    /// `POST /_sim/statuses`: adds a reference list item (a custom deal stage, source...);
    /// returns it as `crm.status.list` shows it.
    pub async fn add_status(&self, request: &StatusRequest) -> anyhow::Result<Value> {
        self.control(self.post("statuses", request)).await
    }

    /// `GET /_sim/robots`: the registrations made with `bizproc.robot.add`.
    pub async fn robots(&self) -> anyhow::Result<Vec<Value>> {
        self.control(self.get("robots")).await
    }

    /// `POST /_sim/application/update`: the application is updated, which removes its
    /// robots (they must be registered again). Returns how many were removed.
    pub async fn update_application(&self) -> anyhow::Result<usize> {
        let answer: Value = self
            .control(self.post("application/update", &json!({})))
            .await?;
        answer["removed"]
            .as_u64()
            .map(|n| n as usize)
            .context("no removed count in the answer")
    }

    /// `POST /_sim/smart-processes`: adds a smart process (its pipelines, stages, user
    /// fields and seeded items); returns the type as `crm.type.list` shows it.
    pub async fn add_smart_process(&self, config: &SmartProcessConfig) -> anyhow::Result<Value> {
        self.control(self.post("smart-processes", config)).await
    }

    /// `GET /_sim/smart-processes`: the types as `crm.type.get` shows them.
    pub async fn smart_processes(&self) -> anyhow::Result<Vec<Value>> {
        self.control(self.get("smart-processes")).await
    }

    /// `POST /_sim/mutate` by `entityTypeId`: seeded random changes of a smart process's
    /// items (or of a classic entity, 1..=4); events fire as for `mutate`.
    pub async fn mutate_items(&self, request: &ItemMutateRequest) -> anyhow::Result<MutateOutcome> {
        self.control(self.post("mutate", request)).await
    }

    /// `POST /_sim/hide` by `entityTypeId`: hides a seeded share of the items from the
    /// webhook's user; returns how many live items are hidden.
    pub async fn hide_items(
        &self,
        entity_type_id: u32,
        share: f64,
        seed: u64,
    ) -> anyhow::Result<usize> {
        let body = json!({"entity_type_id": entity_type_id, "share": share, "seed": seed});
        let answer: Value = self.control(self.post("hide", &body)).await?;
        answer["hidden"]
            .as_u64()
            .map(|n| n as usize)
            .context("no hidden count in the answer")
    }

    /// `GET /_sim/dump/{entityTypeId}`: every live item (hidden ones too) as
    /// `crm.item.get` shows it, by ID; user fields as `UF_CRM_*` with
    /// `original_uf_names`, else camelCase.
    pub async fn dump_items(
        &self,
        entity_type_id: u32,
        original_uf_names: bool,
    ) -> anyhow::Result<Vec<Map<String, Value>>> {
        let flag = if original_uf_names { "Y" } else { "N" };
        self.control(self.get(&format!("dump/{entity_type_id}?useOriginalUfNames={flag}")))
            .await
    }

    /// `POST /_sim/userfields` by `entityTypeId`: returns the new field's `UF_CRM_*` name.
    pub async fn add_item_user_field(
        &self,
        request: &ItemUserFieldRequest,
    ) -> anyhow::Result<String> {
        let answer: Value = self.control(self.post("userfields", request)).await?;
        answer["FIELD_NAME"]
            .as_str()
            .map(str::to_string)
            .context("no FIELD_NAME in the answer")
    }

    /// `POST /_sim/categories`: adds a pipeline (and its stages); returns it as
    /// `crm.category.list` shows it.
    pub async fn add_category(&self, request: &CategoryRequest) -> anyhow::Result<Value> {
        self.control(self.post("categories", request)).await
    }

    /// `POST /_sim/currencies`: adds a currency.
    pub async fn add_currency(&self, request: &CurrencyRequest) -> anyhow::Result<Value> {
        self.control(self.post("currencies", request)).await
    }

    /// `POST /_sim/users`: adds a user; returns it as `user.get` shows it.
    pub async fn add_user(&self, request: &UserRequest) -> anyhow::Result<Value> {
        self.control(self.post("users", request)).await
    }

    /// `GET /_sim/productrows/{entityTypeId}`: every product row of the type's records,
    /// as `crm.item.productrow.list` shows them, by owner then row.
    pub async fn dump_product_rows(&self, entity_type_id: u32) -> anyhow::Result<Vec<Value>> {
        self.control(self.get(&format!("productrows/{entity_type_id}")))
            .await
    }

    /// `GET /_sim/stagehistory/{entityTypeId}`: every stage history entry of leads (1),
    /// deals (2) or a smart process, as `crm.stagehistory.list` shows them with every
    /// field, by ID.
    pub async fn dump_stage_history(&self, entity_type_id: u32) -> anyhow::Result<Vec<Value>> {
        self.control(self.get(&format!("stagehistory/{entity_type_id}")))
            .await
    }

    /// Waits until the server stops (it does not, unless the task fails): for the binary.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("the server task failed")
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // Closing the channel stops the accept loop and every connection.
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}
