//! The handler with an SQS event of forward jobs in and the partial-batch response out,
//! against two simulated portals and a throw-away ledger database.

mod common;

use b24_lambda::metrics::{MemorySink, Metrics};
use b24_store::{ForwardKey, ForwardState};
use common::*;
use deal_forwarder::forward_batch;

/// Metrics no test looks at.
fn unwatched() -> Metrics {
    MemorySink::new().metrics()
}

#[tokio::test]
async fn jobs_in_target_deals_out_and_only_the_failed_messages_named() {
    let portals = Portals::start(3).await;
    let service = portals.service().await;
    let event = sqs_event(
        &[
            ("m1", job("plain", 1)),
            ("m2", "{\"route\":\"plain\"}".to_string()),
            ("m3", job("plain", 4242)),
            ("m4", job("nowhere", 2)),
            ("m5", job("plain", 3)),
        ],
        1,
    );
    let response = forward_batch(&service, &unwatched(), &event, 5, None)
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m2", "m3", "m4"]);
    for deal_id in [1, 3] {
        let copies = portals.copies_of(deal_id).await;
        assert_eq!(copies.len(), 1, "deal {deal_id}: {copies:?}");
    }
    assert!(portals.copies_of(2).await.is_empty());

    // The robot runs again: the same target deals are updated, none is added.
    let again = sqs_event(&[("m6", job("plain", 1)), ("m7", job("plain", 3))], 1);
    let response = forward_batch(&service, &unwatched(), &again, 5, None)
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(
        portals
            .target
            .dump(b24_sim::Entity::Deal)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_missing_deal_is_failed_in_the_ledger_notified_once_and_left_for_the_dead_letter_queue() {
    let portals = Portals::start(1).await;
    let service = portals.service().await;
    let body = job("plain", 4242);
    let key = ForwardKey::new("plain", "partner", 4242);
    for receive_count in 1..=3 {
        let event = sqs_event(
            &[("m1", body.clone()), ("m2", job("plain", 1))],
            receive_count,
        );
        let response = forward_batch(&service, &unwatched(), &event, 3, None)
            .await
            .unwrap();
        assert_eq!(failed_ids(&response), ["m1"], "delivery {receive_count}");
        let entry = service.store().ledger_entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.state, ForwardState::Failed);
        assert!(entry.last_error.as_deref().unwrap().contains("4242"));
        // Only the delivery that met the error tried (and counted) it.
        assert_eq!(entry.attempts, 1);
        assert_eq!(portals.source.notifications().await.unwrap().len(), 1);
    }
    assert_eq!(portals.copies_of(1).await.len(), 1);

    // A new robot run is a new job: it is forwarded (and fails) again.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let event = sqs_event(&[("m3", job("plain", 4242))], 2);
    let response = forward_batch(&service, &unwatched(), &event, 3, None)
        .await
        .unwrap();
    assert_eq!(failed_ids(&response), ["m3"]);
    let entry = service.store().ledger_entry(&key).await.unwrap().unwrap();
    assert_eq!(entry.attempts, 2);
}

#[tokio::test]
async fn a_retryable_failure_is_pending_until_the_last_receive_which_notifies() {
    let portals = Portals::start(1).await;
    let service = portals.service().await;
    portals.target.set_faults("500=1.0").await.unwrap();
    let key = ForwardKey::new("plain", "partner", 1);
    let body = job("plain", 1);
    for receive_count in 1..=2 {
        let event = sqs_event(&[("m1", body.clone())], receive_count);
        let response = forward_batch(&service, &unwatched(), &event, 2, None)
            .await
            .unwrap();
        assert_eq!(failed_ids(&response), ["m1"]);
        let entry = service.store().ledger_entry(&key).await.unwrap().unwrap();
        let notified = portals.source.notifications().await.unwrap().len();
        if receive_count == 1 {
            assert_eq!((entry.state, notified), (ForwardState::Pending, 0));
        } else {
            assert_eq!((entry.state, notified), (ForwardState::Failed, 1));
        }
    }
    assert!(portals.copies_of(1).await.is_empty());
}
