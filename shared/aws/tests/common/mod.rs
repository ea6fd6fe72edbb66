//! Helpers for the tests against moto: an SDK configuration for it, a fresh queue,
//! reading a queue until it is empty, and messages of both queues to send.

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_domain::forward::job::ForwardJob;

/// The SDK configuration for an endpoint with moto's dummy credentials, from code rather
/// than from the environment, so tests in one process can run in parallel.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Creates a standard queue and returns its URL.
pub async fn create_queue(sdk_config: &SdkConfig, name: &str) -> String {
    let created = aws_sdk_sqs::Client::new(sdk_config)
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create_queue on moto");
    created.queue_url().expect("a queue URL").to_string()
}

/// Every message on the queue, read until a receive comes back empty (or 20 s pass).
/// Received messages stay invisible for the queue's visibility timeout (30 s), so each
/// is read at most once here.
pub async fn receive_all(sdk_config: &SdkConfig, queue_url: &str) -> Vec<ChangeMessage> {
    let client = aws_sdk_sqs::Client::new(sdk_config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    while Instant::now() < deadline {
        let answer = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive_message on moto");
        if answer.messages().is_empty() {
            break;
        }
        for message in answer.messages() {
            let body = message.body().expect("a message body");
            received.push(ChangeMessage::from_json(body).expect("a change message"));
        }
    }
    received
}

/// `count` distinct change messages across portals, entities and actions.
pub fn changes(count: u64) -> Vec<ChangeMessage> {
    (1..=count)
        .map(|id| ChangeMessage {
            portal: if id % 2 == 0 { "acme" } else { "globex" }.into(),
            entity: Entity::ALL[id as usize % Entity::ALL.len()],
            id: id * 1_000_003,
            action: [
                ChangeAction::Add,
                ChangeAction::Update,
                ChangeAction::Delete,
            ][id as usize % 3],
            event_time: (id % 2 == 0)
                .then(|| chrono::DateTime::from_timestamp(1_700_000_000 + id as i64, 0))
                .flatten(),
            received_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123 + id as i64)
                .expect("a valid time"),
        })
        .collect()
}

/// Sorted by their JSON, to compare sets of messages with duplicates counted.
pub fn sorted(mut messages: Vec<ChangeMessage>) -> Vec<String> {
    let mut json: Vec<String> = messages.drain(..).map(|m| m.to_json()).collect();
    json.sort();
    json
}

/// `count` distinct forward jobs, every other one from an application robot (with an
/// event token and properties).
pub fn forward_jobs(count: u64) -> Vec<ForwardJob> {
    (1..=count)
        .map(|id| {
            let application = id % 2 == 0;
            ForwardJob {
                route: "partner-to-central".into(),
                source: "partner".into(),
                deal_id: id * 7,
                received_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123 + id as i64)
                    .expect("a valid time"),
                event_token: application
                    .then(|| format!("55c1dc1c3f0d75.{id}|A51601_82584|hsyUws1j4")),
                waits_for_reply: application,
                properties: if application {
                    serde_json::Map::from_iter([(
                        "comment".to_string(),
                        serde_json::json!("urgent"),
                    )])
                } else {
                    serde_json::Map::new()
                },
            }
        })
        .collect()
}

/// Sorted by their JSON, to compare sets of jobs with duplicates counted.
pub fn sorted_jobs(jobs: Vec<ForwardJob>) -> Vec<String> {
    let mut json: Vec<String> = jobs.iter().map(ForwardJob::to_json).collect();
    json.sort();
    json
}
