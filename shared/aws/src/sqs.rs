//! The queues on SQS: the change queue and the forward queue, one adapter generic over
//! the message. Messages go out with `SendMessageBatch`, ten per call.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use b24_domain::change::ChangeMessage;
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::{MessageQueue, QueueError, QueueMessage};

use crate::client::{bounded, describe};

/// The environment variable holding the change queue's URL.
pub const QUEUE_URL_ENV: &str = "CHANGE_QUEUE_URL";
/// The environment variable holding the forward queue's URL.
pub const FORWARD_QUEUE_URL_ENV: &str = "FORWARD_QUEUE_URL";

/// SQS takes at most ten entries per `SendMessageBatch`.
const BATCH_SIZE: usize = 10;

/// A message with a queue of its own on SQS: which variable names that queue's URL.
pub trait SqsMessage: QueueMessage {
    const QUEUE_URL_ENV: &'static str;
    /// The queue in errors: "change queue", "forward queue".
    const QUEUE: &'static str;
}

impl SqsMessage for ChangeMessage {
    const QUEUE_URL_ENV: &'static str = QUEUE_URL_ENV;
    const QUEUE: &'static str = "change queue";
}

impl SqsMessage for ForwardJob {
    const QUEUE_URL_ENV: &'static str = FORWARD_QUEUE_URL_ENV;
    const QUEUE: &'static str = "forward queue";
}

/// Why a queue cannot be set up; each names the setting to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetupError {
    #[error(
        "{variable} is not set: it must hold the {queue}'s URL \
         (https://sqs.<region>.amazonaws.com/<account>/<queue>; with moto, the URL that create-queue returned)"
    )]
    MissingQueueUrl {
        variable: &'static str,
        queue: &'static str,
    },
    #[error("{variable} {url:?} is not a queue URL: expected http(s)://<host>/<account>/<queue>")]
    InvalidQueueUrl { variable: &'static str, url: String },
    #[error("no AWS region: set AWS_REGION (Lambda sets it for every function)")]
    MissingRegion,
}

impl SetupError {
    fn missing<M: SqsMessage>() -> SetupError {
        SetupError::MissingQueueUrl {
            variable: M::QUEUE_URL_ENV,
            queue: M::QUEUE,
        }
    }
}

/// A queue of `M` on SQS ([`MessageQueue`]).
pub struct SqsQueue<M> {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// It sends `M`s and holds none.
    message: PhantomData<fn(M)>,
}

/// The change queue on SQS (`CHANGE_QUEUE_URL`).
pub type SqsChangeQueue = SqsQueue<ChangeMessage>;
/// The forward queue on SQS (`FORWARD_QUEUE_URL`).
pub type SqsForwardQueue = SqsQueue<ForwardJob>;

impl<M: SqsMessage> SqsQueue<M> {
    /// The queue named by `M`'s variable (`CHANGE_QUEUE_URL`, `FORWARD_QUEUE_URL`),
    /// reached with the SDK's configuration from the environment
    /// (`AWS_ENDPOINT_URL_SQS` points it at moto).
    pub async fn from_env() -> Result<SqsQueue<M>, SetupError> {
        let queue_url = std::env::var(M::QUEUE_URL_ENV).unwrap_or_default();
        if queue_url.trim().is_empty() {
            return Err(SetupError::missing::<M>());
        }
        let sdk_config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        SqsQueue::new(&sdk_config, &queue_url)
    }

    /// The queue at `queue_url`, reached with `sdk_config` plus this adapter's timeouts
    /// and retries.
    pub fn new(sdk_config: &SdkConfig, queue_url: &str) -> Result<SqsQueue<M>, SetupError> {
        let queue_url = queue_url.trim();
        if queue_url.is_empty() {
            return Err(SetupError::missing::<M>());
        }
        if !is_queue_url(queue_url) {
            return Err(SetupError::InvalidQueueUrl {
                variable: M::QUEUE_URL_ENV,
                url: queue_url.to_string(),
            });
        }
        let sdk_config = bounded(sdk_config).ok_or(SetupError::MissingRegion)?;
        Ok(SqsQueue {
            client: aws_sdk_sqs::Client::new(&sdk_config),
            queue_url: queue_url.to_string(),
            message: PhantomData,
        })
    }
}

/// `http(s)://host/account/queue`, as SQS and moto hand them out.
fn is_queue_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() == 3 && parts.iter().all(|part| !part.is_empty())
}

#[async_trait]
impl<M: SqsMessage> MessageQueue<M> for SqsQueue<M> {
    async fn send(&self, messages: &[M]) -> Result<(), QueueError> {
        send_in_batches(self, messages).await
    }
}

/// One entry of a `SendMessageBatch` call; `id` is unique within its call.
struct Entry {
    id: String,
    body: String,
}

/// An entry the service did not take, with its reason code.
struct Refused {
    id: String,
    code: String,
}

/// One `SendMessageBatch` call: the entries the service refused, or why the call as a
/// whole failed (after the SDK's own retries).
#[async_trait]
trait SendBatch: Sync {
    async fn send_batch(&self, entries: &[Entry]) -> Result<Vec<Refused>, String>;
}

#[async_trait]
impl<M: SqsMessage> SendBatch for SqsQueue<M> {
    async fn send_batch(&self, entries: &[Entry]) -> Result<Vec<Refused>, String> {
        let entries = entries
            .iter()
            .map(|entry| {
                SendMessageBatchRequestEntry::builder()
                    .id(&entry.id)
                    .message_body(&entry.body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| error.to_string())?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| describe(&error))?;
        Ok(output
            .failed()
            .iter()
            .map(|failed| Refused {
                id: failed.id().to_string(),
                code: failed.code().to_string(),
            })
            .collect())
    }
}

/// Sends every message in calls of ten. Entries the service refuses are sent once more;
/// a call that fails as a whole stops the send (the next would wait just as long). The
/// error counts what was not taken and lists the reasons, never a message body.
async fn send_in_batches<M: QueueMessage>(
    sender: &impl SendBatch,
    messages: &[M],
) -> Result<(), QueueError> {
    let mut failed = 0;
    let mut reasons = BTreeSet::new();
    for (index, chunk) in messages.chunks(BATCH_SIZE).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(id, message)| Entry {
                id: id.to_string(),
                body: message.to_json(),
            })
            .collect();
        match send_with_one_retry(sender, entries).await {
            Ok(()) => {}
            Err(BatchFailure::Refused(refused)) => {
                failed += refused.len();
                reasons.extend(
                    refused
                        .into_iter()
                        .map(|r| format!("{} (after a retry)", r.code)),
                );
            }
            Err(BatchFailure::Call { unsent, reason }) => {
                let later = messages.len().saturating_sub((index + 1) * BATCH_SIZE);
                failed += unsent + later;
                reasons.insert(reason);
                break;
            }
        }
    }
    if failed == 0 {
        return Ok(());
    }
    Err(QueueError {
        sent: messages.len(),
        failed,
        reason: reasons.into_iter().collect::<Vec<_>>().join("; "),
    })
}

enum BatchFailure {
    /// Entries refused twice.
    Refused(Vec<Refused>),
    /// The call failed; `unsent` entries of it were not taken.
    Call { unsent: usize, reason: String },
}

async fn send_with_one_retry(
    sender: &impl SendBatch,
    mut entries: Vec<Entry>,
) -> Result<(), BatchFailure> {
    let mut refused = Vec::new();
    for _attempt in 0..2 {
        refused = sender
            .send_batch(&entries)
            .await
            .map_err(|reason| BatchFailure::Call {
                unsent: entries.len(),
                reason,
            })?;
        // Only entries of this call count, whatever else the answer lists.
        entries.retain(|entry| refused.iter().any(|r| r.id == entry.id));
        refused.retain(|r| entries.iter().any(|entry| entry.id == r.id));
        if entries.is_empty() {
            return Ok(());
        }
    }
    Err(BatchFailure::Refused(refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24_domain::change::ChangeAction;
    use b24_domain::entity::Entity;
    use std::sync::Mutex;

    fn messages(count: u64) -> Vec<ChangeMessage> {
        (1..=count)
            .map(|id| ChangeMessage {
                portal: "acme".into(),
                entity: Entity::Contact,
                id,
                action: ChangeAction::Update,
                event_time: None,
                received_at: chrono::DateTime::UNIX_EPOCH,
            })
            .collect()
    }

    /// Records every call; `answer(call number, entry body)` says whether the service
    /// refuses an entry (`Some(code)`), and `broken_call` fails one call as a whole.
    struct FakeSqs {
        calls: Mutex<Vec<Vec<(String, String)>>>,
        refuse: fn(usize, &str) -> Option<&'static str>,
        broken_call: Option<usize>,
    }

    impl FakeSqs {
        fn new(refuse: fn(usize, &str) -> Option<&'static str>) -> FakeSqs {
            FakeSqs {
                calls: Mutex::new(Vec::new()),
                refuse,
                broken_call: None,
            }
        }

        fn calls(&self) -> Vec<Vec<(String, String)>> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl SendBatch for FakeSqs {
        async fn send_batch(&self, entries: &[Entry]) -> Result<Vec<Refused>, String> {
            let mut calls = self.calls.lock().unwrap();
            let call = calls.len();
            calls.push(
                entries
                    .iter()
                    .map(|e| (e.id.clone(), e.body.clone()))
                    .collect(),
            );
            if self.broken_call == Some(call) {
                return Err("dispatch failure: connection refused".into());
            }
            Ok(entries
                .iter()
                .filter_map(|e| {
                    (self.refuse)(call, &e.body).map(|code| Refused {
                        id: e.id.clone(),
                        code: code.into(),
                    })
                })
                .collect())
        }
    }

    fn id_of(body: &str) -> u64 {
        ChangeMessage::from_json(body).unwrap().id
    }

    #[tokio::test]
    async fn sends_in_calls_of_ten_with_ids_unique_per_call() {
        let sqs = FakeSqs::new(|_, _| None);
        send_in_batches(&sqs, &messages(23)).await.unwrap();
        let calls = sqs.calls();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
        for call in &calls {
            let ids: BTreeSet<&str> = call.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(ids.len(), call.len(), "duplicate entry ids in {call:?}");
        }
        let sent: Vec<u64> = calls
            .iter()
            .flatten()
            .map(|(_, body)| id_of(body))
            .collect();
        assert_eq!(sent, (1..=23).collect::<Vec<_>>());
        assert!(send_in_batches::<ChangeMessage>(&sqs, &[]).await.is_ok());
        assert_eq!(sqs.calls().len(), 3, "an empty send makes no call");
    }

    #[tokio::test]
    async fn refused_entries_are_sent_once_more_and_alone() {
        // The first call refuses messages 3 and 7; every later call takes everything.
        let sqs = FakeSqs::new(|call, body| {
            (call == 0 && [3, 7].contains(&id_of(body))).then_some("InternalError")
        });
        send_in_batches(&sqs, &messages(12)).await.unwrap();
        let calls = sqs.calls();
        let retried: Vec<u64> = calls[1].iter().map(|(_, body)| id_of(body)).collect();
        assert_eq!(retried, [3, 7]);
        assert_eq!(calls.len(), 3);
    }

    #[tokio::test]
    async fn entries_refused_twice_fail_with_counts_and_codes_but_no_bodies() {
        let sqs = FakeSqs::new(|_, body| match id_of(body) {
            4 => Some("InternalError"),
            15 => Some("ThrottlingException"),
            _ => None,
        });
        let error = send_in_batches(&sqs, &messages(23)).await.unwrap_err();
        assert_eq!((error.sent, error.failed), (23, 2));
        assert!(error.reason.contains("InternalError"), "{error}");
        assert!(error.reason.contains("ThrottlingException"), "{error}");
        assert!(!error.to_string().contains("acme"), "{error}");
        // Every batch was still sent, the refused ones twice.
        assert_eq!(sqs.calls().len(), 5);
    }

    #[tokio::test]
    async fn a_failed_call_stops_the_send_and_counts_everything_not_taken() {
        let sqs = FakeSqs {
            broken_call: Some(1),
            ..FakeSqs::new(|_, _| None)
        };
        let error = send_in_batches(&sqs, &messages(23)).await.unwrap_err();
        assert_eq!((error.sent, error.failed), (23, 13));
        assert!(error.reason.contains("connection refused"), "{error}");
        assert_eq!(sqs.calls().len(), 2);
    }

    #[test]
    fn accepts_queue_urls_and_names_the_bad_ones() {
        assert!(is_queue_url(
            "https://sqs.eu-central-1.amazonaws.com/123456789012/b24-changes"
        ));
        assert!(is_queue_url("http://127.0.0.1:5123/123456789012/changes"));
        for bad in [
            "sqs.eu-central-1.amazonaws.com/123456789012/q",
            "https://sqs.eu-central-1.amazonaws.com/q",
            "https://sqs.eu-central-1.amazonaws.com/123456789012/",
            "arn:aws:sqs:eu-central-1:123456789012:q",
        ] {
            assert!(!is_queue_url(bad), "{bad}");
        }
        let sdk_config = SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(BehaviorVersion::latest())
            .build();
        let error = SqsChangeQueue::new(&sdk_config, "changes").err().unwrap();
        assert!(error.to_string().contains("\"changes\""), "{error}");
        assert!(error.to_string().starts_with(QUEUE_URL_ENV), "{error}");
        let missing = SqsChangeQueue::new(&sdk_config, " ").err().unwrap();
        assert_eq!(
            missing.to_string().split(':').next(),
            Some("CHANGE_QUEUE_URL is not set"),
            "{missing}"
        );
        assert!(missing.to_string().contains("the change queue's URL"));
    }

    #[test]
    fn the_forward_queue_names_its_own_variable() {
        let sdk_config = SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(BehaviorVersion::latest())
            .build();
        let missing = SqsForwardQueue::new(&sdk_config, "").err().unwrap();
        assert_eq!(
            missing,
            SetupError::MissingQueueUrl {
                variable: FORWARD_QUEUE_URL_ENV,
                queue: "forward queue"
            }
        );
        assert!(
            missing
                .to_string()
                .starts_with("FORWARD_QUEUE_URL is not set: it must hold the forward queue's URL"),
            "{missing}"
        );
        let invalid = SqsForwardQueue::new(&sdk_config, "forwards").err().unwrap();
        assert!(
            invalid
                .to_string()
                .starts_with("FORWARD_QUEUE_URL \"forwards\" is not a queue URL"),
            "{invalid}"
        );
        let url = "https://sqs.eu-central-1.amazonaws.com/123456789012/b24-forwards";
        assert!(SqsForwardQueue::new(&sdk_config, url).is_ok());
    }

    #[test]
    fn a_configuration_without_region_is_refused() {
        let sdk_config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let url = "https://sqs.eu-central-1.amazonaws.com/123456789012/q";
        assert_eq!(
            SqsChangeQueue::new(&sdk_config, url).err(),
            Some(SetupError::MissingRegion)
        );
    }
}
