//! The local stand-in for the AWS side of a deployment, so the whole pipeline runs on
//! one machine with the functions' own handlers:
//!
//! - the webhook intake behind `/lambda-url/webhook-intake/` (the request a function URL
//!   would pass it), queueing onto an in-process [`LocalQueue`];
//! - the change worker fed from that queue in batches after a batching window, failed
//!   messages coming back and, after `max_receives`, moving to a dead-letter list (as the
//!   SQS event source mapping and the redrive policy do);
//! - the status function behind `/lambda-url/status/` (when the configuration has
//!   `[status] tokens`): its page, `status.json` and `schema.md`;
//! - the deal robot behind `/lambda-url/deal-robot/`, queueing forward jobs onto a
//!   second in-process queue, and the deal forwarder fed from it the same way (each
//!   delivery with its `ApproximateReceiveCount`);
//! - the scheduled sync fired by timers with the schedules' inputs, and back-sync by its
//!   own timer (edits made in PostgreSQL pushed to the portals);
//! - the Lambda Invoke API path (`POST /2015-03-31/functions/{name}/invocations`) for
//!   `sync-scheduled`, `change-worker`, `deal-forwarder` and `back-sync`, so `cargo lambda invoke
//!   --invoke-port` and `aws lambda invoke --endpoint-url` reach them;
//! - `GET /_local/status` and `POST /_local/schedules/{name}` to watch and to fire a
//!   schedule now.
//!
//! Each concurrent invocation of a function gets its own instance (its own database
//! connection), as Lambda runs concurrent invocations in separate environments; an
//! instance is reused once it is idle, as a warm environment is.

pub mod queue;
mod routes;
mod schedules;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use b24_config::Config;
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::{ChangeQueue, MessageQueue};
use b24_forward::ForwardService;
use b24_lambda::FunctionError;
use b24_lambda::deadline::unix_now_ms;
use b24_lambda::sqs::{SqsEvent, event_of};
use b24_sync::SyncService;
use deal_robot::RobotState;
use lambda_runtime::{Context, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use status::StatusState;
use tokio::task::JoinHandle;
use webhook_intake::IntakeState;

pub use queue::{LocalQueue, QueueCounts};
pub use schedules::{ScheduleSpec, parse_schedule};

/// The functions' timeouts in the SAM template: an invocation's deadline.
const SYNC_TIMEOUT: Duration = Duration::from_secs(900);
const WORKER_TIMEOUT: Duration = Duration::from_secs(120);
const FORWARDER_TIMEOUT: Duration = Duration::from_secs(300);
const BACK_SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// The forwarder's event source: batches of 10, no batching window.
const FORWARD_BATCH_SIZE: usize = 10;

/// How the local stack behaves; the defaults are the SAM template's.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Each fires for every configured portal.
    pub schedules: Vec<ScheduleSpec>,
    /// How often back-sync drains the outbox (`BackSyncExpression`); `None`: only when
    /// invoked.
    pub back_sync_every: Option<Duration>,
    /// Messages per worker invocation (`WorkerBatchSize`).
    pub batch_size: usize,
    /// How long messages gather before the worker runs (`WorkerBatchingWindowSeconds`).
    pub batch_window: Duration,
    /// Receives before a message moves to the dead-letter list (`MaxReceiveCount`,
    /// and the forward queue's `FORWARD_MAX_RECEIVES`).
    pub max_receives: u32,
    /// How long a failed message stays away before it is handed out again.
    pub redelivery_delay: Duration,
    /// Apply the migrations when the first instance starts (`B24SYNC_MIGRATE_ON_START`).
    pub migrate: bool,
}

impl Default for LocalOptions {
    fn default() -> LocalOptions {
        LocalOptions {
            schedules: Vec::new(),
            back_sync_every: None,
            batch_size: 1000,
            batch_window: Duration::from_secs(5),
            max_receives: 5,
            redelivery_delay: Duration::from_secs(10),
            migrate: true,
        }
    }
}

/// The running stack; dropping it stops the server, the worker and the timers.
pub struct RunningLocal {
    pub addr: SocketAddr,
    pub state: Arc<LocalState>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningLocal {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where a portal's event handler (or the simulator's `--events-to`) should post.
    pub fn intake_url(&self) -> String {
        format!("{}/lambda-url/webhook-intake/", self.url())
    }

    /// Where a portal's robot calls go (the query names the route, see the README).
    pub fn robot_url(&self) -> String {
        format!("{}/lambda-url/deal-robot/", self.url())
    }

    /// The status function's page (`status.json` and `schema.md` beside it).
    pub fn status_url(&self) -> String {
        format!("{}/lambda-url/status/", self.url())
    }
}

impl Drop for RunningLocal {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What one instance of a function holds (its own database connection): how it is
/// built from the configuration.
#[async_trait]
trait Instance: Sized + Send + Sync {
    async fn connect(config: Config, migrate: bool) -> Result<Self, String>;
}

#[async_trait]
impl Instance for SyncService {
    async fn connect(config: Config, migrate: bool) -> Result<Self, String> {
        SyncService::connect(config, migrate)
            .await
            .map_err(|error| error.to_string())
    }
}

#[async_trait]
impl Instance for ForwardService {
    async fn connect(config: Config, migrate: bool) -> Result<Self, String> {
        ForwardService::connect(config, migrate)
            .await
            .map_err(|error| error.to_string())
    }
}

/// Warm instances of one function.
struct Instances<S> {
    config: Config,
    migrate: bool,
    idle: Mutex<Vec<Arc<S>>>,
}

impl<S: Instance> Instances<S> {
    fn new(config: Config, migrate: bool) -> Self {
        Instances {
            config,
            migrate,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn take(&self) -> Result<Arc<S>, FunctionError> {
        let warm = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match warm {
            Some(instance) => Ok(instance),
            None => S::connect(self.config.clone(), self.migrate)
                .await
                .map(Arc::new)
                .map_err(FunctionError::Transient),
        }
    }

    fn give_back(&self, instance: Arc<S>) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
    }
}

/// What a queue's consumer (the change worker, the deal forwarder) has done, for the
/// status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerCounts {
    pub batches: u64,
    pub messages: u64,
    pub failed_messages: u64,
    pub failed_batches: u64,
}

/// A queue and the function it feeds, as an SQS event source mapping joins them.
struct Consumer<M> {
    queue: Arc<LocalQueue<M>>,
    batch_size: usize,
    batch_window: Duration,
    counts: Mutex<WorkerCounts>,
}

impl<M> Consumer<M> {
    fn new(options: &LocalOptions, batch_size: usize, batch_window: Duration) -> Self {
        Consumer {
            queue: Arc::new(LocalQueue::new(
                options.max_receives,
                options.redelivery_delay,
            )),
            batch_size,
            batch_window,
            counts: Mutex::new(WorkerCounts::default()),
        }
    }

    fn counts(&self) -> WorkerCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hands one batch to `invoke`, as the event source mapping does: waits for a first
    /// message, then for the batching window (or a full batch); settles the batch by
    /// the partial-batch answer (a failed invocation returns the whole batch).
    async fn deliver_one_batch<F, Fut>(&self, name: &str, invoke: F)
    where
        F: FnOnce(SqsEvent) -> Fut,
        Fut: std::future::Future<Output = Result<Value, FunctionError>>,
    {
        self.queue.wait_for_messages(Duration::from_secs(1)).await;
        if self.queue.counts().waiting == 0 {
            return;
        }
        let gathering_until = Instant::now() + self.batch_window;
        while Instant::now() < gathering_until && self.queue.counts().waiting < self.batch_size {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let batch = self.queue.receive(self.batch_size);
        if batch.is_empty() {
            return;
        }
        let mut event = event_of(
            batch
                .iter()
                .map(|message| (Some(message.id.as_str()), message.body.as_str())),
        );
        for (record, message) in event.records.iter_mut().zip(&batch) {
            record.attributes.insert(
                "ApproximateReceiveCount".into(),
                message.receives.to_string(),
            );
        }
        let failed: Vec<String> = match invoke(event).await {
            Ok(answer) => answer["batchItemFailures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|failure| failure["itemIdentifier"].as_str().map(str::to_string))
                .collect(),
            Err(error) => {
                tracing::error!(function = name, %error, messages = batch.len(), "the invocation failed the whole batch");
                batch.iter().map(|message| message.id.clone()).collect()
            }
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts.batches += 1;
            counts.messages += batch.len() as u64;
            counts.failed_messages += failed.len() as u64;
            counts.failed_batches += u64::from(!failed.is_empty());
        }
        self.queue.settle(batch, &failed);
    }
}

/// Everything the routes, the consumers and the timers share.
pub struct LocalState {
    intake: IntakeState,
    robot: RobotState,
    /// `None` without `[status] tokens`: the status function would refuse everyone.
    status: Option<StatusState>,
    sync: Instances<SyncService>,
    worker: Instances<SyncService>,
    back_sync: Instances<SyncService>,
    forwarder: Instances<ForwardService>,
    changes: Consumer<b24_domain::change::ChangeMessage>,
    forwards: Consumer<ForwardJob>,
    options: LocalOptions,
    schedules: Vec<schedules::Schedule>,
    invocations: std::sync::atomic::AtomicU64,
}

impl LocalState {
    /// One invocation of the scheduled sync with `payload` as its input, as the
    /// function answers it.
    pub async fn invoke_sync(&self, payload: Value) -> Result<Value, FunctionError> {
        let instance = self.sync.take().await?;
        let event = LambdaEvent::new(payload, self.context(SYNC_TIMEOUT));
        let answer = sync_scheduled::handle(&instance, event).await;
        self.sync.give_back(instance);
        answer
    }

    /// One invocation of back-sync with `payload` (`{}` or `{"portal": ...}`) as its
    /// input, as the function answers it.
    pub async fn invoke_back_sync(&self, payload: Value) -> Result<Value, FunctionError> {
        let instance = self.back_sync.take().await?;
        let event = LambdaEvent::new(payload, self.context(BACK_SYNC_TIMEOUT));
        let answer = back_sync::handle(&instance, event).await;
        self.back_sync.give_back(instance);
        answer
    }

    /// One invocation of the change worker with an SQS event, as the function answers it.
    pub async fn invoke_worker(&self, event: SqsEvent) -> Result<Value, FunctionError> {
        let instance = self.worker.take().await?;
        let event = LambdaEvent::new(event, self.context(WORKER_TIMEOUT));
        let answer = change_worker::handle(&instance, event).await;
        self.worker.give_back(instance);
        batch_answer(answer?)
    }

    /// One invocation of the deal forwarder with an SQS event of forward jobs.
    pub async fn invoke_forwarder(&self, event: SqsEvent) -> Result<Value, FunctionError> {
        let instance = self.forwarder.take().await?;
        let event = LambdaEvent::new(event, self.context(FORWARDER_TIMEOUT));
        let answer = deal_forwarder::handle(&instance, self.options.max_receives, event).await;
        self.forwarder.give_back(instance);
        batch_answer(answer?)
    }

    /// The change queue (the intake's).
    pub fn change_queue(&self) -> &Arc<LocalQueue> {
        &self.changes.queue
    }

    /// The forward queue (the deal robot's).
    pub fn forward_queue(&self) -> &Arc<LocalQueue<ForwardJob>> {
        &self.forwards.queue
    }

    pub fn worker_counts(&self) -> WorkerCounts {
        self.changes.counts()
    }

    pub fn forwarder_counts(&self) -> WorkerCounts {
        self.forwards.counts()
    }

    fn context(&self, timeout: Duration) -> Context {
        let number = self
            .invocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut context = Context::default();
        context.request_id = format!("local-{number}");
        context.deadline = unix_now_ms() + timeout.as_millis() as u64;
        context
    }
}

fn batch_answer(answer: impl Serialize) -> Result<Value, FunctionError> {
    serde_json::to_value(answer)
        .map_err(|error| FunctionError::Transient(format!("the function's answer: {error}")))
}

/// Starts the stack for `config` on `listener` (bound by the caller, so a portal can be
/// told the intake's URL before the stack starts): connects the worker's first instance
/// (applying the migrations when asked), then serves and starts the worker and timers.
pub async fn start(
    config: Config,
    options: LocalOptions,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<RunningLocal> {
    let changes = Consumer::new(&options, options.batch_size, options.batch_window);
    let forwards = Consumer::new(&options, FORWARD_BATCH_SIZE, Duration::ZERO);
    let intake = IntakeState::new(&config, Arc::clone(&changes.queue) as Arc<dyn ChangeQueue>);
    let robot = RobotState::new(
        &config,
        Arc::clone(&forwards.queue) as Arc<dyn MessageQueue<ForwardJob>>,
    );
    let status = match config.status {
        Some(_) => Some(StatusState::connect(&config).await?),
        None => None,
    };
    let schedules = schedules::for_portals(&options.schedules, options.back_sync_every, &config);
    let worker = Instances::new(config.clone(), options.migrate);
    // The first instance now: a database that does not answer fails the start, not
    // the first event.
    let first = worker.take().await?;
    worker.give_back(first);
    let state = Arc::new(LocalState {
        intake,
        robot,
        status,
        sync: Instances::new(config.clone(), false),
        back_sync: Instances::new(config.clone(), false),
        forwarder: Instances::new(config, false),
        worker,
        changes,
        forwards,
        options,
        schedules,
        invocations: std::sync::atomic::AtomicU64::new(0),
    });
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let app = routes::router(Arc::clone(&state));
    tasks.push(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the local server stopped");
        }
    }));
    let worker_state = Arc::clone(&state);
    tasks.push(tokio::spawn(async move {
        let state = &*worker_state;
        loop {
            state
                .changes
                .deliver_one_batch("change-worker", |event| state.invoke_worker(event))
                .await;
        }
    }));
    let forwarder_state = Arc::clone(&state);
    tasks.push(tokio::spawn(async move {
        let state = &*forwarder_state;
        loop {
            state
                .forwards
                .deliver_one_batch("deal-forwarder", |event| state.invoke_forwarder(event))
                .await;
        }
    }));
    for index in 0..state.schedules.len() {
        let schedule_state = Arc::clone(&state);
        tasks.push(tokio::spawn(async move {
            schedules::run_timer(&schedule_state, index).await;
        }));
    }
    Ok(RunningLocal { addr, state, tasks })
}
