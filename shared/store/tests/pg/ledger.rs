//! The deal-forwarding ledger: claims, leases, ambiguous adds, failures, listings, and
//! its migration on a database made by an earlier version.

use std::sync::Arc;
use std::time::Duration;

use b24_store::{Claim, ForwardFilter, ForwardKey, ForwardState, Lease, LedgerEntry, Store};
use tokio::sync::Barrier;

use crate::common::*;

const ROUTE: &str = "partners-to-central";
const SOURCE: &str = "partner-a";
const TARGET: &str = "central";
const LEASE: Duration = Duration::from_secs(120);

fn key(deal: u64) -> ForwardKey {
    ForwardKey::new(ROUTE, SOURCE, deal)
}

async fn claim(store: &Store, deal: u64, lease: Duration) -> Claim {
    store
        .claim_forward(&key(deal), TARGET, lease)
        .await
        .unwrap()
}

/// The lease of an `Add` claim, with its `look_up_first`.
fn add(claim: Claim) -> (Lease, bool) {
    match claim {
        Claim::Add {
            lease,
            look_up_first,
        } => (lease, look_up_first),
        other => panic!("expected an Add claim, got {other:?}"),
    }
}

async fn entry(store: &Store, deal: u64) -> LedgerEntry {
    store.ledger_entry(&key(deal)).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_forwarded_deal_is_updated_by_the_next_run() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    assert_eq!(store.ledger_entry(&key(42)).await.unwrap(), None);

    let (lease, look_up_first) = add(claim(&store, 42, LEASE).await);
    assert!(!look_up_first, "a fresh row needs no look-up");
    assert_eq!(lease.key(), &key(42));
    let adding = entry(&store, 42).await;
    assert_eq!(adding.state, ForwardState::Adding);
    assert_eq!(adding.target_portal, TARGET);
    assert_eq!(adding.lease_until, Some(lease.until()));
    let lease_left = lease.until() - adding.created_at;
    assert!(
        (lease_left.num_milliseconds() - 120_000).abs() < 5_000,
        "{lease_left}"
    );

    assert_eq!(store.record_target(&lease, 501).await.unwrap(), 501);
    let done = entry(&store, 42).await;
    assert_eq!(done.state, ForwardState::Done);
    assert_eq!(done.target_deal_id, Some(501));
    assert_eq!((done.forwards, done.attempts), (1, 0));
    assert_eq!(done.lease_until, None);
    let first_forward = done.forwarded_at.expect("forwarded_at set");

    let Claim::Update {
        lease,
        target_deal_id,
    } = claim(&store, 42, LEASE).await
    else {
        panic!("a forwarded deal is updated");
    };
    assert_eq!(target_deal_id, 501);
    assert_eq!(entry(&store, 42).await.state, ForwardState::Updating);
    store.record_forwarded(&lease).await.unwrap();
    let updated = entry(&store, 42).await;
    assert_eq!(updated.state, ForwardState::Done);
    assert_eq!((updated.forwards, updated.target_deal_id), (2, Some(501)));
    assert!(updated.forwarded_at.unwrap() >= first_forward);
    assert_eq!(updated.lease_until, None);
    assert!(updated.updated_at >= updated.created_at);

    // Another route, or another source portal's deal 42, is another row.
    let other_route = ForwardKey::new("other-route", SOURCE, 42);
    let other_portal = ForwardKey::new(ROUTE, "partner-b", 42);
    for other in [other_route, other_portal] {
        let claimed = store.claim_forward(&other, TARGET, LEASE).await.unwrap();
        assert!(
            matches!(
                claimed,
                Claim::Add {
                    look_up_first: false,
                    ..
                }
            ),
            "{other}"
        );
    }
}

#[tokio::test]
async fn concurrent_claims_of_one_deal_give_exactly_one_add() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // Twenty invocations, each with its own connection, claiming at the same instant.
    let mut stores = Vec::new();
    for _ in 0..20 {
        stores.push(Store::connect(&db.url, SCHEMA).await.unwrap());
    }
    let race = |stores: &[Store]| {
        let barrier = Arc::new(Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    claim(&store, 7, LEASE).await
                })
            })
            .collect();
        async move {
            let mut claims = Vec::new();
            for task in tasks {
                claims.push(task.await.unwrap());
            }
            claims
        }
    };

    let claims = race(&stores).await;
    let adds: Vec<&Lease> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Add { lease, .. } => Some(lease),
            _ => None,
        })
        .collect();
    assert_eq!(adds.len(), 1, "{claims:?}");
    let winner = adds[0].clone();
    for claimed in &claims {
        match claimed {
            Claim::Add { look_up_first, .. } => assert!(!look_up_first),
            Claim::Busy { until } => assert_eq!(*until, winner.until()),
            Claim::Update { .. } => panic!("no target deal yet: {claimed:?}"),
        }
    }

    // Once forwarded, a burst of re-runs updates the deal one run at a time.
    store.record_target(&winner, 900).await.unwrap();
    let claims = race(&stores).await;
    let updates = claims
        .iter()
        .filter(|c| {
            matches!(
                c,
                Claim::Update {
                    target_deal_id: 900,
                    ..
                }
            )
        })
        .count();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, Claim::Busy { .. }))
        .count();
    assert_eq!((updates, busy), (1, 19), "{claims:?}");
}

#[tokio::test]
async fn an_expired_lease_lets_a_new_claim_through_looking_up_first() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (crashed, _) = add(claim(&store, 3, Duration::from_millis(400)).await);
    assert_eq!(
        claim(&store, 3, LEASE).await,
        Claim::Busy {
            until: crashed.until()
        }
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let (taken_over, look_up_first) = add(claim(&store, 3, LEASE).await);
    assert!(look_up_first, "the crashed claim may have added the deal");
    assert!(taken_over.until() > crashed.until());

    // The superseded claimant's late failure does not release the new holder's lease.
    store
        .record_failure(&crashed, "timed out", false)
        .await
        .unwrap();
    let held = entry(&store, 3).await;
    assert_eq!(held.state, ForwardState::Adding);
    assert_eq!(held.lease_until, Some(taken_over.until()));
    assert_eq!((held.attempts, held.last_error), (0, None));
    assert!(matches!(claim(&store, 3, LEASE).await, Claim::Busy { .. }));

    // The deal the superseded claimant did add is a fact: it is recorded, and the
    // holder's own add of another deal is reported as the duplicate it is.
    assert_eq!(store.record_target(&crashed, 31).await.unwrap(), 31);
    let recorded = entry(&store, 3).await;
    assert_eq!(recorded.target_deal_id, Some(31));
    assert_eq!(
        recorded.state,
        ForwardState::Adding,
        "the holder finishes it"
    );
    assert_eq!(store.record_target(&taken_over, 32).await.unwrap(), 31);
    let done = entry(&store, 3).await;
    assert_eq!(done.state, ForwardState::Done);
    assert_eq!((done.target_deal_id, done.forwards), (Some(31), 2));
    assert_eq!(done.lease_until, None);
}

#[tokio::test]
async fn after_an_ambiguous_add_every_claim_looks_up_first_until_the_deal_is_found() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (lease, _) = add(claim(&store, 5, LEASE).await);
    store
        .mark_ambiguous(&lease, "connection reset after sending crm.deal.add")
        .await
        .unwrap();
    let ambiguous = entry(&store, 5).await;
    assert!(ambiguous.ambiguous);
    assert_eq!(
        ambiguous.last_error.as_deref(),
        Some("connection reset after sending crm.deal.add")
    );
    // The holder keeps its lease to look the deal up.
    assert_eq!(ambiguous.state, ForwardState::Adding);
    assert!(matches!(claim(&store, 5, LEASE).await, Claim::Busy { .. }));

    // The look-up failed too; the retry must look up again.
    store
        .record_failure(&lease, "crm.deal.list: 503 QUERY_LIMIT_EXCEEDED", false)
        .await
        .unwrap();
    let (retry, look_up_first) = add(claim(&store, 5, LEASE).await);
    assert!(look_up_first);
    assert!(entry(&store, 5).await.ambiguous);

    // The look-up found the deal the first add created.
    assert_eq!(store.record_target(&retry, 77).await.unwrap(), 77);
    let found = entry(&store, 5).await;
    assert!(!found.ambiguous);
    assert_eq!(found.state, ForwardState::Done);
    assert_eq!((found.attempts, found.last_error), (0, None));
    // Nothing is ambiguous about a deal whose target is known.
    let Claim::Update { lease, .. } = claim(&store, 5, LEASE).await else {
        panic!("the deal is known");
    };
    store.mark_ambiguous(&lease, "late").await.unwrap();
    assert!(!entry(&store, 5).await.ambiguous);
}

#[tokio::test]
async fn failures_record_the_error_and_count_attempts() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (lease, _) = add(claim(&store, 9, LEASE).await);
    store
        .record_failure(&lease, "source deal 9: crm.deal.get answered 503", false)
        .await
        .unwrap();
    let pending = entry(&store, 9).await;
    assert_eq!(pending.state, ForwardState::Pending);
    assert_eq!(pending.attempts, 1);
    assert_eq!(
        pending.last_error.as_deref(),
        Some("source deal 9: crm.deal.get answered 503")
    );
    assert_eq!(
        pending.lease_until, None,
        "the retry must not wait for the lease"
    );

    let (lease, look_up_first) = add(claim(&store, 9, LEASE).await);
    assert!(look_up_first, "a row that was tried before is not fresh");
    let long = "x".repeat(5_000);
    store.record_failure(&lease, &long, true).await.unwrap();
    let failed = entry(&store, 9).await;
    assert_eq!(failed.state, ForwardState::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(
        failed.last_error.map(|e| e.len()),
        Some(b24_store::MAX_ERROR_CHARS)
    );

    // A later robot run claims a failed deal again; success clears the failures.
    let (lease, _) = add(claim(&store, 9, LEASE).await);
    store.record_target(&lease, 90).await.unwrap();
    let done = entry(&store, 9).await;
    assert_eq!(
        (done.state, done.attempts, done.last_error),
        (ForwardState::Done, 0, None)
    );

    // An update run that gives up leaves the target deal known for the next run.
    let Claim::Update { lease, .. } = claim(&store, 9, LEASE).await else {
        panic!("the deal is known");
    };
    store
        .record_failure(&lease, "crm.deal.update: ACCESS_DENIED", true)
        .await
        .unwrap();
    let failed = entry(&store, 9).await;
    assert_eq!(
        (failed.state, failed.target_deal_id),
        (ForwardState::Failed, Some(90))
    );
    assert!(matches!(
        claim(&store, 9, LEASE).await,
        Claim::Update {
            target_deal_id: 90,
            ..
        }
    ));
}

#[tokio::test]
async fn wrong_input_and_a_re_pointed_route_are_refused_with_what_is_wrong() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let (lease, _) = add(claim(&store, 11, LEASE).await);
    let error = store
        .claim_forward(&key(11), "elsewhere", LEASE)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"central\"") && error.contains("\"elsewhere\""),
        "{error}"
    );
    for (bad, lease, what) in [
        (key(0), LEASE, "deal"),
        (ForwardKey::new("", SOURCE, 1), LEASE, "route"),
        (ForwardKey::new(ROUTE, " ", 1), LEASE, "portal"),
        (key(u64::MAX), LEASE, "bigint"),
        (key(1), Duration::ZERO, "lease"),
    ] {
        let error = store
            .claim_forward(&bad, TARGET, lease)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(what), "{bad:?}: {error}");
    }

    let error = store
        .record_forwarded(&lease)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no target deal"), "{error}");
    let error = store
        .record_target(&lease, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("target deal ID 0"), "{error}");

    // A row removed under a claim's feet is named, not silently re-created.
    db.client()
        .await
        .execute("DELETE FROM b24._forward_ledger", &[])
        .await
        .unwrap();
    let error = store
        .record_target(&lease, 5)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no row") && error.contains("deal 11"),
        "{error}"
    );
    for error in [
        store.mark_ambiguous(&lease, "x").await.unwrap_err(),
        store.record_failure(&lease, "x", false).await.unwrap_err(),
    ] {
        assert!(error.to_string().contains("no row"), "{error}");
    }
}

#[tokio::test]
async fn listings_show_the_newest_rows_per_route_and_the_backlog() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    for deal in 1..=3 {
        let (lease, _) = add(claim(&store, deal, LEASE).await);
        store.record_target(&lease, 100 + deal).await.unwrap();
    }
    let (failing, _) = add(claim(&store, 4, LEASE).await);
    store.record_failure(&failing, "503", false).await.unwrap();
    let other = ForwardKey::new("other-route", SOURCE, 1);
    store.claim_forward(&other, TARGET, LEASE).await.unwrap();

    let deals = |entries: Vec<LedgerEntry>| -> Vec<(String, u64)> {
        entries
            .into_iter()
            .map(|e| (e.key.route, e.key.source_deal_id))
            .collect()
    };
    let all = store
        .list_forwards(&ForwardFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        deals(all),
        [
            ("other-route".to_string(), 1),
            (ROUTE.to_string(), 4),
            (ROUTE.to_string(), 3),
            (ROUTE.to_string(), 2),
            (ROUTE.to_string(), 1),
        ]
    );
    let route = ForwardFilter {
        route: Some(ROUTE.into()),
        open_only: false,
    };
    assert_eq!(
        deals(store.list_forwards(&route, 2).await.unwrap()),
        [(ROUTE.to_string(), 4), (ROUTE.to_string(), 3)]
    );
    let backlog = ForwardFilter {
        route: None,
        open_only: true,
    };
    let open = store.list_forwards(&backlog, 100).await.unwrap();
    assert_eq!(
        open.iter()
            .map(|e| (e.key.source_deal_id, e.state))
            .collect::<Vec<_>>(),
        [(1, ForwardState::Adding), (4, ForwardState::Pending)]
    );
    assert_eq!(open[1].last_error.as_deref(), Some("503"));
}

mod earlier_version {
    refinery::embed_migrations!("../../migrations");
}

#[tokio::test]
async fn the_ledger_migration_applies_to_a_database_of_the_previous_version() {
    let db = TestDb::create().await;
    let mut c = db.client().await;
    c.batch_execute("CREATE SCHEMA b24; SET search_path TO b24")
        .await
        .unwrap();
    earlier_version::migrations::runner()
        .set_target(refinery::Target::Version(4))
        .run_async(&mut c)
        .await
        .unwrap();
    c.batch_execute(
        "INSERT INTO _sync_state (portal, entity, cursor) VALUES ('p', 'deal', '2024-08-30T14:29:00+02:00');
         INSERT INTO _mirror_tables (portal, entity, table_name, mapping_version) VALUES ('p', 'deal', 'deal__p', 2);
         RESET search_path",
    )
    .await
    .unwrap();
    let ledger_before: Option<String> =
        scalar(&c, "SELECT to_regclass('b24._forward_ledger')::text").await;
    assert_eq!(ledger_before, None);

    let store = store(&db).await;
    let version: i32 = scalar(&c, "SELECT max(version) FROM b24.refinery_schema_history").await;
    assert!(version >= 5, "{version}");
    let kept: (String, i32) = scalar_pair(
        &c,
        "SELECT s.cursor, m.mapping_version FROM b24._sync_state s, b24._mirror_tables m",
    )
    .await;
    assert_eq!(kept, ("2024-08-30T14:29:00+02:00".to_string(), 2));
    let (lease, look_up_first) = add(claim(&store, 1, LEASE).await);
    assert!(!look_up_first);
    store.record_target(&lease, 10).await.unwrap();
    assert_eq!(entry(&store, 1).await.target_deal_id, Some(10));
    let indexes: Vec<String> = query_rows(
        &c,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'b24' AND tablename = '_forward_ledger' ORDER BY 1",
        |r| r.get(0),
    )
    .await;
    assert_eq!(
        indexes,
        [
            "_forward_ledger_open_updated",
            "_forward_ledger_pkey",
            "_forward_ledger_route_updated"
        ]
    );
}
