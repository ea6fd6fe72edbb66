//! Ports: the narrow traits through which application code reaches the outside world.
//! Adapters (`b24-aws` for SQS, ...) implement them; in-memory twins serve tests and the
//! local pipeline.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::change::ChangeMessage;

/// Why the queue did not take messages. Holds the adapter's reason, never a message body
/// (message bodies are not secret, but the reason must stay short for a log line).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the change queue did not take {failed} of {sent} messages: {reason}")]
pub struct QueueError {
    pub sent: usize,
    pub failed: usize,
    pub reason: String,
}

/// Where the intake puts change messages for the change worker.
#[async_trait]
pub trait ChangeQueue: Send + Sync {
    /// Sends every message, or fails; a failure may leave some of them sent (the worker
    /// is idempotent, so sending those again is harmless).
    async fn send(&self, messages: &[ChangeMessage]) -> Result<(), QueueError>;
}

/// A queue in memory: the twin of the SQS adapter for handler tests and the local
/// pipeline. `fail_next` makes the next sends fail, as an unreachable queue would.
#[derive(Default)]
pub struct InMemoryQueue {
    state: Mutex<InMemoryState>,
}

#[derive(Default)]
struct InMemoryState {
    messages: Vec<ChangeMessage>,
    failures_left: usize,
}

impl InMemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `sends` calls of `send` fail without taking anything.
    pub fn fail_next(&self, sends: usize) {
        self.lock().failures_left = sends;
    }

    /// Takes every message sent so far, oldest first.
    pub fn drain(&self) -> Vec<ChangeMessage> {
        std::mem::take(&mut self.lock().messages)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InMemoryState> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ChangeQueue for InMemoryQueue {
    async fn send(&self, messages: &[ChangeMessage]) -> Result<(), QueueError> {
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

    /// The in-memory queue never awaits anything, so one poll finishes a send.
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => unreachable!("the in-memory queue never waits"),
        }
    }
}
