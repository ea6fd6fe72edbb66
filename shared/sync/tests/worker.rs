//! The change worker against the simulator and PostgreSQL: what a batch of change
//! messages costs on the portal, which deletions it may make, and that redelivery and
//! reordering leave the same rows.

mod common;

use std::time::{Duration, Instant};

use b24_domain::change::ChangeAction;
use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::SimConfig;
use b24_sync::SyncOptions;
use common::*;

fn unlimited(deals: usize) -> SimConfig {
    SimConfig {
        seed: 11,
        deals,
        user_fields: 6,
        limits: no_limits(),
        ..SimConfig::default()
    }
}

/// The database, simulator, client and service of one test, the mirror filled by a
/// full sync. Bind every part: dropping one drops the database or stops the simulator.
async fn synced(
    config: SimConfig,
) -> (
    TestDb,
    b24_sim::RunningSim,
    b24_client::Client,
    b24_sync::SyncService,
) {
    let (db, store, sim, client) = setup(config).await;
    syncer(&client, &store)
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    let service = service(&db, &[(PORTAL, sim.webhook_url())]).await;
    (db, sim, client, service)
}

#[tokio::test]
async fn a_thousand_updates_of_one_entity_cost_two_requests() {
    let (db, sim, _client, service) = synced(unlimited(1_000)).await;
    let outcome = mutate(&sim, Entity::Deal, 3, 0, 1_000, 0).await;
    assert_eq!(outcome.updated.len(), 1_000);
    sim.reset_stats().await.unwrap();

    let applied = service
        .apply_changes(deliveries(changes_of(Entity::Deal, &outcome)), None)
        .await;

    assert!(applied.failed.is_empty(), "{applied:?}");
    let stats = sim.stats().await.unwrap();
    // The field metadata, then 20 `@ID` lookups of 50 in one batch.
    assert_eq!(stats.http_requests, 2, "{stats:?}");
    // One group, and its summary says what it did and what it cost.
    let [summary] = applied.summaries.as_slice() else {
        panic!("one summary per group: {applied:?}");
    };
    assert_eq!(
        (
            summary.portal.as_str(),
            summary.entity.as_str(),
            summary.mode.as_str()
        ),
        (PORTAL, "deal", "changes")
    );
    assert_eq!((summary.rows_read, summary.rows_updated), (1_000, 1_000));
    assert_eq!(summary.http_requests, 2);
    assert_eq!((summary.throttled_503, summary.throttled_429), (0, 0));
    assert!(summary.operating_seconds > 0.0, "{summary:?}");
    let calls = |method: &str| stats.requests_by_method.get(method).copied();
    assert_eq!(calls("crm.deal.fields"), Some(1), "{stats:?}");
    assert_eq!(calls("crm.deal.list"), Some(20), "{stats:?}");
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn a_batch_of_more_than_2500_records_takes_one_lookup_request_per_2500() {
    let (db, sim, _client, service) = synced(unlimited(3_000)).await;
    let outcome = mutate(&sim, Entity::Deal, 4, 0, 3_000, 0).await;
    sim.reset_stats().await.unwrap();
    let failed = service
        .apply_changes(deliveries(changes_of(Entity::Deal, &outcome)), None)
        .await
        .failed;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(sim.stats().await.unwrap().http_requests, 3);
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn deletions_are_confirmed_by_the_lookup() {
    let (db, sim, _client, service) = synced(unlimited(300)).await;
    let outcome = mutate(&sim, Entity::Deal, 5, 2, 3, 10).await;
    let mut messages = changes_of(Entity::Deal, &outcome);
    // A delete event for a record that is back (restored from the recycle bin), one for
    // a record no sync ever saw, and an update of a deleted record whose delete event
    // was lost: none of them deletes anything.
    let restored = (1..=300).find(|id| !outcome.deleted.contains(id)).unwrap();
    messages.push(change(Entity::Deal, restored, ChangeAction::Delete));
    messages.push(change(Entity::Deal, 900_000, ChangeAction::Delete));
    let lost = outcome.deleted[0];
    messages.retain(|m| !(m.id == lost && m.action == ChangeAction::Delete));
    messages.push(change(Entity::Deal, lost, ChangeAction::Update));

    let failed = service
        .apply_changes(deliveries(messages), None)
        .await
        .failed;

    assert!(failed.is_empty(), "{failed:?}");
    let mut expected: Vec<i64> = outcome.deleted[1..].iter().map(|&id| id as i64).collect();
    expected.sort_unstable();
    assert_eq!(deleted_ids(&db, Entity::Deal).await, expected);
    let live = mirror_records(&db, Entity::Deal).await;
    assert!(live.contains_key(&restored) && live.contains_key(&lost));
    assert_eq!(live.len(), 300 + 2 - 9);
    for id in outcome.added.iter().chain(&outcome.updated) {
        assert!(live.contains_key(id), "{id} not written");
    }
    // The next reconcile deletes what the lost event left.
    let store = service.store();
    let client = service.client(PORTAL).await.unwrap();
    syncer(&client, store)
        .run(Entity::Deal, Mode::Reconcile, &SyncOptions::default())
        .await
        .unwrap();
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn a_role_change_and_delete_events_for_the_hidden_records_delete_nothing_beyond_the_guard() {
    let (db, sim, client, service) = synced(unlimited(1_000)).await;
    let hidden_count = sim
        .hide_records(b24_sim::Entity::Deal, 0.9, 7)
        .await
        .unwrap();
    let all: Vec<u64> = (1..=1_000).collect();
    let visible = visible_ids(&client, Entity::Deal, &all).await;
    let hidden: Vec<u64> = all
        .iter()
        .copied()
        .filter(|id| visible.binary_search(id).is_err())
        .collect();
    assert_eq!(hidden.len(), hidden_count);
    assert!(hidden.len() > 100, "{hidden_count} hidden");

    // Updates of hidden records (other users edit them) never delete.
    let updates = hidden
        .iter()
        .map(|&id| change(Entity::Deal, id, ChangeAction::Update));
    assert!(
        service
            .apply_changes(deliveries(updates), None)
            .await
            .failed
            .is_empty()
    );
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 1_000);

    // Delete events the lookup cannot tell from a role change: more than a tenth of the
    // live rows is refused, and only their messages fail.
    let mut messages: Vec<_> = hidden
        .iter()
        .map(|&id| change(Entity::Deal, id, ChangeAction::Delete))
        .collect();
    messages.extend(
        visible[..5]
            .iter()
            .map(|&id| change(Entity::Deal, id, ChangeAction::Update)),
    );
    let batch = deliveries(messages);
    let refused: Vec<String> = batch[..hidden.len()]
        .iter()
        .map(|(m, _)| m.clone())
        .collect();
    let failed = service.apply_changes(batch.clone(), None).await.failed;
    assert_eq!(failed, refused);
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 1_000);
    assert!(deleted_ids(&db, Entity::Deal).await.is_empty());

    // The role change undone, the redelivered messages find every record: nothing is
    // deleted and nothing fails.
    sim.hide_records(b24_sim::Entity::Deal, 0.0, 7)
        .await
        .unwrap();
    let redelivered: Vec<_> = batch
        .into_iter()
        .filter(|(m, _)| failed.contains(m))
        .collect();
    assert!(
        service
            .apply_changes(redelivered, None)
            .await
            .failed
            .is_empty()
    );
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn a_batch_within_the_guard_deletes_and_one_beyond_it_fails_only_those_records() {
    let (db, sim, _client, service) = synced(unlimited(200)).await;
    // 20 of 200 live rows is the default tenth: allowed. 21 more of the 180 left is not.
    let first = mutate(&sim, Entity::Deal, 8, 0, 0, 20).await;
    assert!(
        service
            .apply_changes(deliveries(changes_of(Entity::Deal, &first)), None)
            .await
            .failed
            .is_empty()
    );
    assert_eq!(deleted_ids(&db, Entity::Deal).await.len(), 20);
    let second = mutate(&sim, Entity::Deal, 9, 0, 1, 21).await;
    let batch = deliveries(changes_of(Entity::Deal, &second));
    let failed = service.apply_changes(batch.clone(), None).await.failed;
    let deletes: Vec<String> = batch
        .iter()
        .filter(|(_, m)| m.action == ChangeAction::Delete)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(failed, deletes);
    assert_eq!(deleted_ids(&db, Entity::Deal).await.len(), 20);
    // The update in the refused batch was applied all the same.
    let updated = second.updated[0];
    let portal = portal_records(&sim, Entity::Deal).await;
    assert_eq!(
        mirror_records(&db, Entity::Deal).await[&updated],
        portal[&updated]
    );
}

#[tokio::test]
async fn redelivery_and_reordering_give_the_same_rows() {
    let config = SimConfig {
        contacts: 150,
        ..unlimited(150)
    };
    let sim = sim(config).await;
    let (db_forward, db_shuffled) = (TestDb::create().await, TestDb::create().await);
    let forward = service(&db_forward, &[(PORTAL, sim.webhook_url())]).await;
    let shuffled = service(&db_shuffled, &[(PORTAL, sim.webhook_url())]).await;
    let mut messages = Vec::new();
    for (seed, entity) in [(1, Entity::Deal), (2, Entity::Contact), (3, Entity::Deal)] {
        let outcome = mutate(&sim, entity, seed, 5, 20, 6).await;
        messages.extend(changes_of(entity, &outcome));
    }
    // Every record the portal holds, so both mirrors end complete.
    for entity in [Entity::Deal, Entity::Contact] {
        let ids = portal_records(&sim, entity).await.into_keys();
        messages.extend(ids.map(|id| change(entity, id, ChangeAction::Update)));
    }

    assert!(
        forward
            .apply_changes(deliveries(messages.clone()), None)
            .await
            .failed
            .is_empty()
    );
    // Reversed, every message twice, in two batches that split the duplicates.
    let mut again = messages.clone();
    again.reverse();
    again.extend(messages.iter().step_by(3).cloned());
    let (first, second) = again.split_at(again.len() / 2);
    assert!(
        shuffled
            .apply_changes(deliveries(first.to_vec()), None)
            .await
            .failed
            .is_empty()
    );
    assert!(
        shuffled
            .apply_changes(deliveries(second.to_vec()), None)
            .await
            .failed
            .is_empty()
    );
    assert!(
        shuffled
            .apply_changes(deliveries(messages.clone()), None)
            .await
            .failed
            .is_empty()
    );

    for entity in [Entity::Deal, Entity::Contact] {
        assert_mirror_equals_portal(&sim, &db_forward, entity).await;
        assert_mirror_equals_portal(&sim, &db_shuffled, entity).await;
        let (a, b) = (
            mirror_rows(&db_forward, entity).await,
            mirror_rows(&db_shuffled, entity).await,
        );
        assert_eq!(a, b, "{entity}");
    }
}

#[tokio::test]
async fn a_portal_that_fails_fails_only_its_own_messages() {
    let db = TestDb::create().await;
    let sim = sim(unlimited(50)).await;
    let wrong_secret = sim
        .webhook_url()
        .replace("simsecret0123456", "wrongsecret00000");
    // Nothing listens on port 9 of the loopback: every request is refused and retried
    // until the deadline.
    let unreachable = "http://127.0.0.1:9/rest/1/abcdef0123456789/".to_string();
    let service = service(
        &db,
        &[
            (PORTAL, sim.webhook_url()),
            ("locked", wrong_secret),
            ("gone", unreachable),
        ],
    )
    .await;
    let on = |portal: &str, id| b24_domain::change::ChangeMessage {
        portal: portal.to_string(),
        ..change(Entity::Deal, id, ChangeAction::Update)
    };
    let batch = vec![
        ("a".to_string(), on("locked", 1)),
        ("b".to_string(), on(PORTAL, 1)),
        ("c".to_string(), on("nowhere", 1)),
        ("d".to_string(), on("gone", 2)),
        ("e".to_string(), on(PORTAL, 2)),
        ("f".to_string(), on("locked", 3)),
    ];
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut failed = service.apply_changes(batch, Some(deadline)).await.failed;
    failed.sort();
    assert_eq!(failed, ["a", "c", "d", "f"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 2);
}

#[tokio::test]
async fn delete_events_for_records_no_sync_saw_delete_nothing_and_do_not_trip_the_guard() {
    let db = TestDb::create().await;
    let sim = sim(unlimited(40)).await;
    let service = service(&db, &[(PORTAL, sim.webhook_url())]).await;
    // Deals created and deleted before the mirror saw them, among a few it did see.
    let seen: Vec<_> = (31..=40)
        .map(|id| change(Entity::Deal, id, ChangeAction::Add))
        .collect();
    assert!(
        service
            .apply_changes(deliveries(seen), None)
            .await
            .failed
            .is_empty()
    );
    let client = service.client(PORTAL).await.unwrap();
    for id in 1..=30 {
        client
            .call("crm.deal.delete", &serde_json::json!({"id": id}))
            .await
            .unwrap();
    }
    let deletes = (1..=30).map(|id| change(Entity::Deal, id, ChangeAction::Delete));
    // 30 confirmed gone against 10 live rows would be refused, were they counted.
    assert!(
        service
            .apply_changes(deliveries(deletes), None)
            .await
            .failed
            .is_empty()
    );
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 10);
    assert!(deleted_ids(&db, Entity::Deal).await.is_empty());
}
