//! The guards around a run: the mass-deletion guard, confirming a deletion by ID, the
//! time box of every mode and every wait, and one run per portal entity.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use b24_client::{Client, ClientOptions, InProcessLimiter};
use b24_domain::entity::Entity;
use b24_domain::limits::OperatingReport;
use b24_domain::ports::RateLimiter;
use b24_domain::sync::{DeleteGuard, Mode, RunOutcome};
use b24_domain::webhook::WebhookUrl;
use b24_sim::SimConfig;
use b24_store::{Store, TableLayout};
use b24_sync::{SyncError, SyncOptions, SyncRequest, SyncService};
use common::*;
use serde_json::json;

fn seeded(deals: usize, contacts: usize) -> SimConfig {
    SimConfig {
        seed: 5,
        deals,
        contacts,
        ..SimConfig::default()
    }
}

/// Seeded, with the simulator's limits off (for tests about something else than pacing).
fn unlimited(deals: usize, contacts: usize) -> SimConfig {
    SimConfig {
        limits: no_limits(),
        ..seeded(deals, contacts)
    }
}

fn confirmed() -> SyncOptions {
    SyncOptions {
        delete_guard: DeleteGuard {
            confirmed: true,
            ..DeleteGuard::default()
        },
        ..SyncOptions::default()
    }
}

#[tokio::test]
async fn a_role_change_that_hides_most_deals_deletes_nothing_until_confirmed() {
    let (db, store, sim, client) = setup(seeded(1_000, 0)).await;
    let syncer = syncer(&client, &store);
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    let hidden = sim
        .hide_records(b24_sim::Entity::Deal, 0.9, 7)
        .await
        .unwrap();
    assert!((850..950).contains(&hidden), "{hidden} hidden");

    for mode in [Mode::Full, Mode::Reconcile, Mode::Resume] {
        let error = syncer
            .run(Entity::Deal, mode, &SyncOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(error, SyncError::Refused(_)), "{mode}: {error}");
        let expected = format!("would soft-delete {hidden} of 1000 live rows");
        assert!(error.to_string().contains(&expected), "{mode}: {error}");
        assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 1_000);
        let run = last_run(&db).await;
        assert_eq!(
            (run.outcome.as_deref(), run.would_delete, run.live_rows),
            (Some("refused"), Some(hidden as i64), Some(1_000)),
            "{mode}"
        );
        assert!(run.finished, "{mode}");
    }
    // The role change is undone: the refused runs' candidates are looked up again and
    // are back, so the runs complete without deleting anything, unconfirmed.
    sim.hide_records(b24_sim::Entity::Deal, 0.0, 7)
        .await
        .unwrap();
    for mode in [Mode::Resume, Mode::Reconcile] {
        let restored = syncer
            .run(Entity::Deal, mode, &SyncOptions::default())
            .await
            .unwrap();
        assert!(restored.completed, "{mode}");
        assert_eq!(restored.rows_deleted, 0, "{mode}");
    }
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 1_000);

    // It happens again, and this time the rows are really gone.
    sim.hide_records(b24_sim::Entity::Deal, 0.9, 7)
        .await
        .unwrap();
    let error = syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, SyncError::Refused(_)), "{error}");
    // The refused full sync kept its checkpoint and what it found: a confirmed resume
    // applies the deletions without listing from the start again.
    let state = store.load_state(PORTAL, Entity::Deal).await.unwrap();
    assert!(state.full_checkpoint.is_some());
    let applied = syncer
        .run(Entity::Deal, Mode::Resume, &confirmed())
        .await
        .unwrap();
    assert!(applied.completed);
    assert_eq!(applied.rows_deleted, hidden as u64);
    assert!(applied.rows_read < 100, "read {} rows", applied.rows_read);
    assert_eq!(
        mirror_records(&db, Entity::Deal).await.len(),
        1_000 - hidden
    );
    let run = last_run(&db).await;
    assert_eq!(run.outcome.as_deref(), Some("completed"));

    // A share of 1.0 lets a whole-mirror deletion through without a flag.
    sim.hide_records(b24_sim::Entity::Deal, 1.0, 7)
        .await
        .unwrap();
    let everything = SyncOptions {
        delete_guard: DeleteGuard {
            max_share: 1.0,
            confirmed: false,
        },
        ..SyncOptions::default()
    };
    let emptied = syncer
        .run(Entity::Deal, Mode::Full, &everything)
        .await
        .unwrap();
    assert_eq!(emptied.rows_deleted, (1_000 - hidden) as u64);
    assert!(mirror_records(&db, Entity::Deal).await.is_empty());
}

/// Creates a deal on the portal and writes it into the mirror after every answer the
/// sync's client receives, as the change worker would for a deal created meanwhile:
/// the deal created after the listing's last answer is not in the listing.
struct InsertAfterEachAnswer {
    inner: InProcessLimiter,
    portal: Client,
    mirror: Store,
    layout: TableLayout,
    created: AtomicUsize,
}

#[async_trait]
impl RateLimiter for InsertAfterEachAnswer {
    async fn acquire(&self, methods: &[&str]) {
        self.inner.acquire(methods).await;
    }

    async fn observe(&self, reports: &[OperatingReport]) -> f64 {
        let grown = self.inner.observe(reports).await;
        let n = self.created.fetch_add(1, Ordering::SeqCst);
        let fields = json!({"fields": {"TITLE": format!("created during the sync {n}")}});
        let added = self.portal.call("crm.deal.add", &fields).await.unwrap();
        let id = added.result.as_u64().unwrap();
        let select = vec!["*".to_string(), "UF_*".to_string()];
        let rows = self
            .portal
            .fetch_by_ids("crm.deal.list", &[id], &select)
            .await
            .unwrap();
        self.mirror
            .upsert(PORTAL, Entity::Deal, &self.layout, &rows)
            .await
            .unwrap();
        grown
    }

    async fn on_query_limit(&self) {
        self.inner.on_query_limit().await;
    }

    async fn on_operation_limit(&self, method: &str, reset_at: Option<f64>) {
        self.inner.on_operation_limit(method, reset_at).await;
    }
}

#[tokio::test]
async fn a_full_sync_racing_with_inserts_deletes_nothing_live() {
    let (db, store, sim, plain) = setup(unlimited(3_000, 0)).await;
    // The table and its layout, as the change worker would have them.
    let writer = Store::connect(&db.url, SCHEMA).await.unwrap();
    let layout = deal_layout(&plain, &writer).await;
    let racing = Arc::new(InsertAfterEachAnswer {
        inner: InProcessLimiter::default(),
        portal: plain.clone(),
        mirror: writer,
        layout,
        created: AtomicUsize::new(0),
    });
    let webhook = WebhookUrl::parse(&sim.webhook_url()).unwrap();
    let options = ClientOptions {
        limiter: racing.clone(),
        ..ClientOptions::default()
    };
    let client = Client::new(webhook, options).unwrap();
    let syncer = syncer(&client, &store);
    for mode in [Mode::Full, Mode::Full, Mode::Reconcile] {
        let summary = syncer
            .run(Entity::Deal, mode, &SyncOptions::default())
            .await
            .unwrap();
        assert!(summary.completed, "{mode}");
        assert_eq!(summary.rows_deleted, 0, "{mode}");
    }
    assert!(racing.created.load(Ordering::SeqCst) >= 6);
    assert!(deleted_ids(&db, Entity::Deal).await.is_empty());
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn a_long_run_of_ids_gone_from_the_portal_is_settled_across_time_boxed_runs() {
    let (db, store, sim, client) = setup(unlimited(1_000, 0)).await;
    let syncer = syncer(&client, &store);
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    // The mirror holds 6,000 rows after the portal's last one that the portal lost.
    let layout = deal_layout(&client, &store).await;
    let lost: Vec<_> = (5_001..=11_000u64)
        .map(|id| {
            json!({"ID": id.to_string(), "DATE_MODIFY": "2024-01-01T00:00:00+03:00"})
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    store
        .upsert(PORTAL, Entity::Deal, &layout, &lost)
        .await
        .unwrap();
    // Every run is out of time after its first step.
    let cut = SyncOptions {
        stop_after: Some(Instant::now()),
        ..confirmed()
    };
    let mut checkpoints = Vec::new();
    let mut deleted = 0;
    for _ in 0..10 {
        let summary = syncer.run(Entity::Deal, Mode::Full, &cut).await.unwrap();
        deleted += summary.rows_deleted;
        if summary.completed {
            break;
        }
        checkpoints.push(summary.checkpoint.unwrap());
    }
    assert_eq!(deleted, 6_000);
    // The first listing chunk; the last one and the first 2,500 lost IDs; then the
    // rest 2,500 at a time, each run keeping its place inside the last window.
    assert_eq!(checkpoints, vec![500, 7_500, 10_000]);
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

/// The 40,000 rows scaled to what a debug build reads in a few 3-second runs
/// (about 4,000 rows a second here): several runs are still needed.
#[tokio::test]
async fn an_incremental_over_a_bulk_change_progresses_across_time_boxed_runs() {
    const CHANGED: usize = 20_000;
    let (db, store, sim, client) = setup(unlimited(CHANGED, 0)).await;
    let syncer = syncer(&client, &store);
    // A cursor from before every row: all of them changed since, as after a bulk
    // change of the whole CRM.
    const OLD: &str = "2001-01-01T00:00:00+03:00";
    store
        .save_cursor(PORTAL, Entity::Deal, Some(OLD))
        .await
        .unwrap();
    let mut runs = 0;
    let mut read = 0;
    loop {
        runs += 1;
        assert!(runs <= 40, "no convergence after {runs} runs");
        let deadline = Instant::now() + Duration::from_secs(3);
        let options = SyncOptions::until(deadline, Duration::from_secs(60));
        let summary = syncer
            .run(Entity::Deal, Mode::Incremental, &options)
            .await
            .unwrap();
        assert!(
            Instant::now() < deadline + Duration::from_secs(2),
            "run {runs} overran its time box"
        );
        read += summary.rows_read;
        if summary.completed {
            break;
        }
        assert_eq!(summary.outcome, Some(RunOutcome::Stopped));
        // Each stopped run progressed, kept its place and left the cursor alone.
        assert!(summary.rows_read > 0, "run {runs} read nothing");
        let checkpoint = store
            .load_checkpoints(PORTAL, Entity::Deal)
            .await
            .unwrap()
            .incremental
            .expect("a stopped pass keeps its checkpoint");
        assert!(checkpoint.after_id > 0);
        assert_eq!(summary.cursor.as_deref(), Some(OLD));
    }
    assert!(
        runs >= 2,
        "one run did it all: the time box was not honoured"
    );
    // Rows are read about once: each run continues after the last one's checkpoint.
    assert!(
        read < CHANGED as u64 + (runs as u64) * 2_500,
        "read {read} rows in {runs} runs"
    );
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
    let checkpoints = store.load_checkpoints(PORTAL, Entity::Deal).await.unwrap();
    assert_eq!(checkpoints.incremental, None);
    let state = store.load_state(PORTAL, Entity::Deal).await.unwrap();
    assert_ne!(state.cursor.as_deref(), Some(OLD));
    assert_eq!(runs_without_end(&db).await, 0);
}

#[tokio::test]
async fn two_concurrent_runs_keep_one_consistent_state() {
    let (db, first_store, sim, client) = setup(unlimited(4_000, 0)).await;
    let second_store = Store::connect(&db.url, SCHEMA).await.unwrap();
    let first = syncer(&client, &first_store);
    let second = syncer(&client, &second_store);
    let options = SyncOptions::default();
    let (a, b) = tokio::join!(
        first.run(Entity::Deal, Mode::Full, &options),
        second.run(Entity::Deal, Mode::Incremental, &options),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let outcomes = [a.outcome, b.outcome];
    assert!(
        outcomes.contains(&Some(RunOutcome::Completed))
            && outcomes.contains(&Some(RunOutcome::AlreadyRunning)),
        "{outcomes:?}"
    );
    let state = first_store.load_state(PORTAL, Entity::Deal).await.unwrap();
    assert_eq!(state.full_checkpoint, None);
    assert!(state.cursor.is_some());
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
    // Only the run that worked is recorded.
    assert_eq!(run_count(&db).await, 1);

    // While another process holds the lock, a run changes nothing and says so; once it
    // is released, runs go ahead again.
    let held = second_store
        .try_lock_run(PORTAL, Entity::Deal)
        .await
        .unwrap()
        .expect("the lock is free");
    assert!(
        first_store
            .try_lock_run(PORTAL, Entity::Deal)
            .await
            .unwrap()
            .is_none()
    );
    mutate(&sim, Entity::Deal, 3, 5, 5, 0).await;
    let blocked = first
        .run(Entity::Deal, Mode::Incremental, &options)
        .await
        .unwrap();
    assert_eq!(blocked.outcome, Some(RunOutcome::AlreadyRunning));
    assert_eq!(blocked.rows_read, 0);
    assert_eq!(
        first_store.load_state(PORTAL, Entity::Deal).await.unwrap(),
        state
    );
    // Other entities are not blocked.
    let contacts = first
        .run(Entity::Contact, Mode::Full, &options)
        .await
        .unwrap();
    assert_eq!(contacts.outcome, Some(RunOutcome::Completed));
    held.release().await;
    let after = first
        .run(Entity::Deal, Mode::Incremental, &options)
        .await
        .unwrap();
    assert_eq!(after.outcome, Some(RunOutcome::Completed));
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}

#[tokio::test]
async fn a_dropped_lock_connection_frees_the_lock() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let held = store.try_lock_run(PORTAL, Entity::Lead).await.unwrap();
    assert!(held.as_ref().is_some_and(|lock| lock.is_held()));
    assert!(
        store
            .try_lock_run(PORTAL, Entity::Lead)
            .await
            .unwrap()
            .is_none()
    );
    // A run cancelled mid-way drops its lock without releasing it.
    drop(held);
    let mut retaken = None;
    for _ in 0..50 {
        retaken = store.try_lock_run(PORTAL, Entity::Lead).await.unwrap();
        if retaken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(retaken.is_some(), "the lock outlived its connection");
}

#[tokio::test]
async fn reconcile_is_time_boxed_and_every_entity_progresses_in_every_invocation() {
    let db = TestDb::create().await;
    let sim = sim(unlimited(8_000, 8_000)).await;
    let config = json!({
        "database": {"url": db.url, "schema": SCHEMA},
        "portals": {PORTAL: {"webhook_url": sim.webhook_url(), "entities": ["deal", "contact"]}},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let service = SyncService::connect(config, true).await.unwrap();
    let request = SyncRequest {
        portal: PORTAL.to_string(),
        entities: None,
        mode: Mode::Reconcile,
        confirm_deletes: false,
    };
    let mut invocations = 0;
    loop {
        invocations += 1;
        assert!(invocations <= 30, "no convergence");
        let deadline = Instant::now() + Duration::from_secs(2);
        let outcomes = service.handle(&request, Some(deadline)).await.unwrap();
        assert!(Instant::now() < deadline + Duration::from_secs(2));
        let summaries: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                b24_sync::EntityOutcome::Done(summary) => summary.clone(),
                failed => panic!("{failed:?}"),
            })
            .collect();
        assert_eq!(summaries.len(), 2);
        if summaries.iter().all(|s| s.completed) {
            break;
        }
        // Neither entity waits for the other to finish: both get work done.
        for summary in &summaries {
            assert!(
                summary.completed || summary.rows_inserted > 0,
                "invocation {invocations}: {} made no progress",
                summary.entity
            );
        }
    }
    assert!(invocations >= 2, "the time box was not honoured");
    for entity in [Entity::Deal, Entity::Contact] {
        assert_mirror_equals_portal(&sim, &db, entity).await;
        let checkpoints = service
            .store()
            .load_checkpoints(PORTAL, entity)
            .await
            .unwrap();
        assert_eq!(checkpoints.reconcile, None);
    }
    assert_eq!(runs_without_end(&db).await, 0);
}

#[tokio::test]
async fn the_deadline_cuts_every_wait_and_the_run_still_ends_recorded() {
    let (db, store, sim, client) = setup(seeded(600, 0)).await;
    let syncer = syncer(&client, &store);
    // Every answer takes longer than the client's 3-second timeout: each request
    // times out and is retried with backoff, for minutes without a deadline.
    sim.set_faults("latency=5000@1").await.unwrap();
    for mode in [Mode::Full, Mode::Incremental, Mode::Reconcile] {
        let started = Instant::now();
        let options = SyncOptions::until(started + Duration::from_secs(2), Duration::from_secs(60));
        let summary = syncer.run(Entity::Deal, mode, &options).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{mode} took {:?}",
            started.elapsed()
        );
        assert_eq!(summary.outcome, Some(RunOutcome::Stopped), "{mode}");
        let run = last_run(&db).await;
        assert!(run.finished, "{mode}");
        assert_eq!(run.outcome.as_deref(), Some("stopped"), "{mode}");
    }
    assert_eq!(runs_without_end(&db).await, 0);
    // Once the portal answers again, the runs get through.
    sim.set_faults("").await.unwrap();
    let summary = syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    assert!(summary.completed);
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
}
