//! A queue in-process (the change queue and the forward queue), with the SQS behaviour
//! their consumers rely on: messages are handed out in batches, a message the worker reports as failed comes back after a
//! visibility delay, and one that failed `max_receives` times moves to the dead-letter
//! list instead of being lost or retried for ever.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use b24_domain::change::ChangeMessage;
use b24_domain::ports::{MessageQueue, QueueError, QueueMessage};
use serde::Serialize;
use tokio::sync::Notify;

/// One message as the queue holds it: its body is the JSON the SQS adapter would send.
#[derive(Clone, Debug)]
pub struct Queued {
    pub id: String,
    pub body: String,
    pub receives: u32,
    visible_at: Instant,
}

/// Counts for the status page.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct QueueCounts {
    pub waiting: usize,
    pub in_flight: usize,
    pub dead_letter: usize,
    pub sent: u64,
    pub deleted: u64,
    pub redelivered: u64,
}

/// Holds messages of type `M` as their JSON bodies.
pub struct LocalQueue<M = ChangeMessage> {
    max_receives: u32,
    visibility: Duration,
    state: Mutex<State>,
    arrived: Notify,
    message: PhantomData<fn(M)>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Queued>,
    in_flight: usize,
    dead_letter: Vec<Queued>,
    next_id: u64,
    sent: u64,
    deleted: u64,
    redelivered: u64,
}

impl<M> LocalQueue<M> {
    /// `max_receives` as the redrive policy's `maxReceiveCount`; `visibility` is how
    /// long a failed message stays away before it is handed out again.
    pub fn new(max_receives: u32, visibility: Duration) -> LocalQueue<M> {
        LocalQueue {
            max_receives: max_receives.max(1),
            visibility,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            message: PhantomData,
        }
    }

    /// Up to `max` visible messages, oldest first; they are in flight until
    /// [`settle`](Self::settle) hears how they fared.
    pub fn receive(&self, max: usize) -> Vec<Queued> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(state.waiting.len());
        while let Some(mut message) = state.waiting.pop_front() {
            if taken.len() < max && message.visible_at <= now {
                message.receives += 1;
                taken.push(message);
            } else {
                kept.push_back(message);
            }
        }
        state.waiting = kept;
        state.in_flight += taken.len();
        taken
    }

    /// Ends a batch: the messages named in `failed` come back after the visibility
    /// delay, or go to the dead-letter list once they have been received `max_receives`
    /// times; the others are deleted.
    pub fn settle(&self, batch: Vec<Queued>, failed: &[String]) {
        let visible_at = Instant::now() + self.visibility;
        let mut state = self.lock();
        state.in_flight -= batch.len();
        for mut message in batch {
            if !failed.contains(&message.id) {
                state.deleted += 1;
            } else if message.receives >= self.max_receives {
                tracing::error!(message_id = %message.id, receives = message.receives,
                    body = %message.body, "message moved to the dead-letter list");
                state.dead_letter.push(message);
            } else {
                message.visible_at = visible_at;
                state.redelivered += 1;
                state.waiting.push_back(message);
            }
        }
    }

    /// Waits until a message arrives (or `timeout` passes).
    pub async fn wait_for_messages(&self, timeout: Duration) {
        if self.lock().waiting.is_empty() {
            let _ = tokio::time::timeout(timeout, self.arrived.notified()).await;
        }
    }

    pub fn counts(&self) -> QueueCounts {
        let state = self.lock();
        QueueCounts {
            waiting: state.waiting.len(),
            in_flight: state.in_flight,
            dead_letter: state.dead_letter.len(),
            sent: state.sent,
            deleted: state.deleted,
            redelivered: state.redelivered,
        }
    }

    /// The dead-letter list's bodies, oldest first (to replay or inspect).
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock()
            .dead_letter
            .iter()
            .map(|message| message.body.clone())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl<M: QueueMessage> MessageQueue<M> for LocalQueue<M> {
    async fn send(&self, messages: &[M]) -> Result<(), QueueError> {
        let now = Instant::now();
        {
            let mut state = self.lock();
            for message in messages {
                state.next_id += 1;
                let id = format!("local-{}", state.next_id);
                state.waiting.push_back(Queued {
                    id,
                    body: message.to_json(),
                    receives: 0,
                    visible_at: now,
                });
                state.sent += 1;
            }
        }
        self.arrived.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_domain::change::ChangeAction;
    use b24_domain::entity::Entity;
    use b24_domain::ports::ChangeQueue;

    fn change(id: u64) -> ChangeMessage {
        ChangeMessage {
            portal: "demo".into(),
            entity: Entity::Deal,
            id,
            action: ChangeAction::Update,
            event_time: None,
            received_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn hands_out_batches_and_deletes_what_succeeded() {
        let queue: LocalQueue = LocalQueue::new(3, Duration::ZERO);
        queue
            .send(&[change(1), change(2), change(3)])
            .await
            .unwrap();
        let batch = queue.receive(2);
        assert_eq!(batch.len(), 2);
        assert_eq!(ChangeMessage::from_json(&batch[0].body).unwrap().id, 1);
        assert_eq!(queue.counts().in_flight, 2);
        queue.settle(batch, &[]);
        let counts = queue.counts();
        assert_eq!(
            (counts.waiting, counts.in_flight, counts.deleted),
            (1, 0, 2)
        );
    }

    #[tokio::test]
    async fn a_failed_message_comes_back_after_the_delay_then_goes_to_the_dead_letters() {
        let queue: LocalQueue = LocalQueue::new(2, Duration::from_millis(100));
        queue.send(&[change(7)]).await.unwrap();
        let batch = queue.receive(10);
        let id = batch[0].id.clone();
        queue.settle(batch, std::slice::from_ref(&id));
        // Invisible during the delay.
        assert!(queue.receive(10).is_empty());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let batch = queue.receive(10);
        assert_eq!((batch[0].id.as_str(), batch[0].receives), (id.as_str(), 2));
        queue.settle(batch, std::slice::from_ref(&id));
        let counts = queue.counts();
        assert_eq!(
            (counts.waiting, counts.dead_letter, counts.redelivered),
            (0, 1, 1)
        );
        assert_eq!(
            ChangeMessage::from_json(&queue.dead_letters()[0])
                .unwrap()
                .id,
            7
        );
    }
}
