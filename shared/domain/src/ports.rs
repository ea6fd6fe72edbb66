//! Ports: the narrow traits through which application code reaches the outside world.
//! Adapters (`b24-aws` for SQS, `b24-client` and `b24-store` for the rate limiter, ...)
//! implement them; in-memory twins serve tests and the local pipeline.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::change::ChangeMessage;
use crate::forward::job::ForwardJob;
use crate::limits::{Admission, OperatingReport};

/// A message a queue carries. Its JSON body is the contract between the producer and
/// the consumer; adapters send it as is.
pub trait QueueMessage: Clone + Send + Sync + 'static {
    fn to_json(&self) -> String;
}

impl QueueMessage for ChangeMessage {
    fn to_json(&self) -> String {
        ChangeMessage::to_json(self)
    }
}

impl QueueMessage for ForwardJob {
    fn to_json(&self) -> String {
        ForwardJob::to_json(self)
    }
}

/// Why the queue did not take messages. Holds the adapter's reason, never a message body
/// (a forward job carries an event token, and the reason must stay short for a log line).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the queue did not take {failed} of {sent} messages: {reason}")]
pub struct QueueError {
    pub sent: usize,
    pub failed: usize,
    pub reason: String,
}

/// A queue of `M`: the intake puts change messages on the change queue for the change
/// worker ([`ChangeQueue`]), the deal robot puts forward jobs on the forward queue for
/// the forwarder (`MessageQueue<ForwardJob>`). `M` defaults to the change message so
/// that `ChangeQueue`, this trait's first name, still means the change queue.
#[async_trait]
pub trait MessageQueue<M: QueueMessage = ChangeMessage>: Send + Sync {
    /// Sends every message, or fails; a failure may leave some of them sent (both
    /// consumers are idempotent, so sending those again is harmless).
    async fn send(&self, messages: &[M]) -> Result<(), QueueError>;
}

/// Where the intake puts change messages for the change worker.
pub use MessageQueue as ChangeQueue;

/// A queue in memory: the twin of the SQS adapter for handler tests and the local
/// pipeline. `fail_next` makes the next sends fail, as an unreachable queue would.
pub struct InMemoryQueue<M = ChangeMessage> {
    state: Mutex<InMemoryState<M>>,
}

struct InMemoryState<M> {
    messages: Vec<M>,
    failures_left: usize,
}

impl<M> Default for InMemoryQueue<M> {
    fn default() -> Self {
        InMemoryQueue {
            state: Mutex::new(InMemoryState {
                messages: Vec::new(),
                failures_left: 0,
            }),
        }
    }
}

impl<M> InMemoryQueue<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `sends` calls of `send` fail without taking anything.
    pub fn fail_next(&self, sends: usize) {
        self.lock().failures_left = sends;
    }

    /// Takes every message sent so far, oldest first.
    pub fn drain(&self) -> Vec<M> {
        std::mem::take(&mut self.lock().messages)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InMemoryState<M>> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl<M: QueueMessage> MessageQueue<M> for InMemoryQueue<M> {
    async fn send(&self, messages: &[M]) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.failures_left > 0 {
            state.failures_left -= 1;
            return Err(QueueError {
                sent: messages.len(),
                failed: messages.len(),
                reason: "the in-memory queue was told to fail".into(),
            });
        }
        state.messages.extend_from_slice(messages);
        Ok(())
    }
}

/// Keeps one portal's request rate and per-method operating time inside its limits.
/// Every HTTP request to a portal passes through one. `b24_client::InProcessLimiter`
/// serves one process, `b24_store::PgRateLimiter` several processes sharing a portal;
/// both keep a [`PortalBudget`](crate::limits::PortalBudget) and differ only in where
/// it lives.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Waits until one HTTP request that runs `methods` (one method for a single call,
    /// `batch` and the inner methods for a batch) may be sent, and reserves it.
    async fn acquire(&self, methods: &[&str]);

    /// Takes the operating totals one answer reported (none when the portal sent no
    /// `operating` keys) and returns how much they grew, in operating seconds (see
    /// [`PortalBudget::observe`](crate::limits::PortalBudget::observe)).
    async fn observe(&self, reports: &[OperatingReport]) -> f64;

    /// The portal refused with 503 `QUERY_LIMIT_EXCEEDED`: the bucket is full.
    async fn on_query_limit(&self);

    /// The portal refused `method` with 429 `OPERATION_TIME_LIMIT` until `reset_at`
    /// (unix seconds; `None` when the answer did not say).
    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>);
}

/// Seconds since the Unix epoch, the clock of the in-process limiter and of the
/// `reset_at` moments the portal reports.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Asks `admit` (which reserves against wherever the budget lives) until it lets one
/// request for `methods` go, passing each wait it names to `sleep` (the adapter's timer,
/// e.g. `tokio::time::sleep`, so this crate stays free of a runtime); returns once the
/// request may be sent. Every limiter's `acquire`.
pub async fn wait_for_admission<Admit, Admitted, Sleep, Slept>(
    methods: &[&str],
    mut admit: Admit,
    mut sleep: Sleep,
) where
    Admit: FnMut() -> Admitted,
    Admitted: Future<Output = Admission>,
    Sleep: FnMut(Duration) -> Slept,
    Slept: Future<Output = ()>,
{
    loop {
        match admit().await {
            Admission::Wait(secs) => {
                tracing::info!(
                    ?methods,
                    wait_secs = secs,
                    "operating budget nearly spent, waiting"
                );
                if let Some(duration) = wait_duration(secs) {
                    sleep(duration).await;
                }
            }
            Admission::Send { after } => {
                if let Some(duration) = wait_duration(after) {
                    sleep(duration).await;
                }
                return;
            }
        }
    }
}

/// A wait the limit arithmetic computed (already clamped to the window) as a duration;
/// anything that is not a positive finite number is no wait.
fn wait_duration(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|duration| !duration.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChangeAction;
    use crate::entity::Entity;

    fn message(id: u64) -> ChangeMessage {
        ChangeMessage {
            portal: "acme".into(),
            entity: Entity::Deal,
            id,
            action: ChangeAction::Add,
            event_time: None,
            received_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn keeps_messages_in_order_and_fails_when_told() {
        let queue = InMemoryQueue::new();
        let send = |ids: &[u64]| {
            let messages: Vec<_> = ids.iter().map(|&id| message(id)).collect();
            poll_once(queue.send(&messages))
        };
        assert_eq!(send(&[1, 2]), Ok(()));
        queue.fail_next(1);
        let error = send(&[3]).unwrap_err();
        assert_eq!((error.sent, error.failed), (1, 1));
        assert_eq!(send(&[4]), Ok(()));
        let ids: Vec<u64> = queue.drain().iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 4]);
        assert!(queue.drain().is_empty());
    }

    #[test]
    fn the_same_twin_carries_forward_jobs_under_their_own_json() {
        let job = ForwardJob {
            route: "to-central".into(),
            source: "partner".into(),
            deal_id: 123,
            received_at: chrono::DateTime::UNIX_EPOCH,
            event_token: None,
            waits_for_reply: false,
            properties: serde_json::Map::new(),
        };
        let queue: InMemoryQueue<ForwardJob> = InMemoryQueue::new();
        queue.fail_next(1);
        assert!(poll_once(queue.send(std::slice::from_ref(&job))).is_err());
        assert_eq!(poll_once(queue.send(std::slice::from_ref(&job))), Ok(()));
        assert_eq!(queue.drain(), std::slice::from_ref(&job));
        assert_eq!(QueueMessage::to_json(&job), job.to_json());
        let change = message(7);
        assert_eq!(QueueMessage::to_json(&change), change.to_json());
    }

    /// The in-memory queue and the scripted limiter never await anything, so one poll
    /// finishes them.
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => unreachable!("nothing here waits"),
        }
    }

    /// Runs `wait_for_admission` with scripted admissions and a sleep that only records
    /// what it was asked.
    fn waits_for(admissions: &[Admission]) -> (usize, Vec<Duration>) {
        let mut script = admissions.iter().copied();
        let mut asked = 0;
        let mut slept = Vec::new();
        let waiting = wait_for_admission(
            &["crm.deal.list"],
            || {
                asked += 1;
                std::future::ready(script.next().expect("admit asked past the script"))
            },
            |duration| {
                slept.push(duration);
                std::future::ready(())
            },
        );
        poll_once(waiting);
        (asked, slept)
    }

    #[test]
    fn waits_as_told_and_asks_again_until_the_request_may_go() {
        let (asked, slept) = waits_for(&[
            Admission::Wait(2.5),
            Admission::Wait(0.25),
            Admission::Send { after: 0.5 },
        ]);
        assert_eq!(asked, 3);
        assert_eq!(
            slept,
            [2.5, 0.25, 0.5].map(Duration::from_secs_f64).to_vec()
        );
    }

    #[test]
    fn a_send_without_delay_does_not_sleep() {
        assert_eq!(waits_for(&[Admission::Send { after: 0.0 }]), (1, vec![]));
    }

    #[test]
    fn garbage_waits_are_no_waits() {
        for secs in [f64::NAN, f64::NEG_INFINITY, -1.0, 0.0, f64::INFINITY, 1e300] {
            assert_eq!(wait_duration(secs), None, "{secs}");
            let (asked, slept) =
                waits_for(&[Admission::Wait(secs), Admission::Send { after: secs }]);
            assert_eq!((asked, slept), (2, vec![]), "{secs}");
        }
        assert_eq!(wait_duration(1.5), Some(Duration::from_millis(1500)));
    }
}
