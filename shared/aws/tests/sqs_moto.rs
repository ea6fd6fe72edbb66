//! The SQS queues against moto (a real SQS-protocol server, started per test).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use b24_aws::{SqsChangeQueue, SqsForwardQueue};
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::MessageQueue;
use b24_testkit::moto::MotoServer;
use common::{changes, create_queue, forward_jobs, receive_all, sdk_config, sorted, sorted_jobs};

/// Far above the adapter's own bound (5 s per call), far below a hung test.
const GENEROUS: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_message_arrives_intact_exactly_once() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let queue_url = create_queue(&config, "b24-changes").await;
    let queue = SqsChangeQueue::new(&config, &queue_url).unwrap();

    // 23 messages: three SendMessageBatch calls (10, 10, 3).
    let sent = changes(23);
    queue.send(&sent).await.unwrap();
    let received = receive_all(&config, &queue_url).await;
    assert_eq!(received.len(), 23);
    assert_eq!(sorted(received), sorted(sent));
}

#[tokio::test]
async fn every_forward_job_arrives_intact_exactly_once_with_its_event_token() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let queue_url = create_queue(&config, "b24-forwards").await;
    let queue = SqsForwardQueue::new(&config, &queue_url).unwrap();

    // 12 jobs: two SendMessageBatch calls (10, 2).
    let sent = forward_jobs(12);
    queue.send(&sent).await.unwrap();
    let received: Vec<ForwardJob> = moto
        .receive_bodies(&queue_url)
        .await
        .iter()
        .map(|body| ForwardJob::from_json(body).expect("a forward job"))
        .collect();
    assert_eq!(received.len(), 12);
    assert!(received.iter().any(|job| job.event_token.is_some()));
    assert_eq!(sorted_jobs(received), sorted_jobs(sent));
}

#[tokio::test]
async fn a_forward_queue_that_does_not_exist_fails_with_the_reason_but_no_token() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let missing = format!("{}/123456789012/no-such-forwards", moto.endpoint());
    let queue = SqsForwardQueue::new(&config, &missing).unwrap();
    let error = queue.send(&forward_jobs(2)).await.unwrap_err();
    assert_eq!((error.sent, error.failed), (2, 2));
    assert!(
        error.reason.contains("NonExistentQueue") || error.reason.contains("QueueDoesNotExist"),
        "{error}"
    );
    assert!(!error.to_string().contains("hsyUws1j4"), "{error}");
}

#[tokio::test]
async fn a_queue_that_does_not_exist_fails_with_the_services_reason() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let missing = format!("{}/123456789012/no-such-queue", moto.endpoint());
    let queue = SqsChangeQueue::new(&config, &missing).unwrap();
    let error = queue.send(&changes(12)).await.unwrap_err();
    // The first call fails as a whole, so the second is never tried.
    assert_eq!((error.sent, error.failed), (12, 12));
    assert!(
        error.reason.contains("NonExistentQueue") || error.reason.contains("QueueDoesNotExist"),
        "{error}"
    );
    assert!(!error.reason.contains("globex"), "{error}");
}

#[tokio::test]
async fn a_refused_connection_fails_within_seconds() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let config = sdk_config(&format!("http://127.0.0.1:{closed_port}")).await;
    let queue_url = format!("http://127.0.0.1:{closed_port}/123456789012/changes");
    let queue = SqsChangeQueue::new(&config, &queue_url).unwrap();
    let started = Instant::now();
    let error = queue.send(&changes(3)).await.unwrap_err();
    assert!(started.elapsed() < GENEROUS, "took {:?}", started.elapsed());
    assert_eq!((error.sent, error.failed), (3, 3));
    assert!(error.reason.contains("dispatch failure"), "{error}");
}

/// A server that accepts connections and never answers: without timeouts the send
/// would wait for as long as the invocation lives.
#[tokio::test]
async fn a_silent_endpoint_times_out_instead_of_hanging() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Keep accepted connections open and unanswered.
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(16).collect();
        std::thread::sleep(GENEROUS);
        drop(held);
    });
    let config = sdk_config(&format!("http://127.0.0.1:{port}")).await;
    let queue_url = format!("http://127.0.0.1:{port}/123456789012/changes");
    let queue = SqsChangeQueue::new(&config, &queue_url).unwrap();
    let started = Instant::now();
    let error = queue.send(&changes(3)).await.unwrap_err();
    assert!(started.elapsed() < GENEROUS, "took {:?}", started.elapsed());
    assert_eq!((error.sent, error.failed), (3, 3));
    assert!(error.reason.contains("timeout"), "{error}");
}
