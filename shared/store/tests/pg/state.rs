//! Migrations, sync state, runs, connection handling.

use std::time::Duration;

use b24_domain::entity::Entity;
use b24_domain::sync::IncrementalCheckpoint;
use b24_store::{Checkpoints, RunStats, Store, SyncState};
use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let db = TestDb::create().await;
    let a = Store::connect(&db.url, SCHEMA).await.unwrap();
    let b = Store::connect(&db.url, SCHEMA).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    a.migrate().await.unwrap();
    let c = db.client().await;
    let applied: i64 = scalar(&c, "SELECT count(*) FROM b24.refinery_schema_history").await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files);
}

/// Writes a whole state through the per-mode writers the engine uses.
async fn save_state(store: &Store, portal: &str, entity: Entity, state: &SyncState) {
    store
        .save_cursor(portal, entity, state.cursor.as_deref())
        .await
        .unwrap();
    store
        .save_full_checkpoint(portal, entity, state.full_checkpoint, state.full_started_at)
        .await
        .unwrap();
}

#[tokio::test]
async fn sync_state_round_trips_per_portal_and_entity() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    assert_eq!(
        store.load_state("p", Entity::Deal).await.unwrap(),
        SyncState::default()
    );
    let state = SyncState {
        cursor: Some("2024-08-30T14:29:00+02:00".into()),
        full_checkpoint: Some(123_456),
        full_started_at: Some(Utc.with_ymd_and_hms(2024, 8, 30, 12, 0, 0).unwrap()),
    };
    save_state(&store, "p", Entity::Deal, &state).await;
    assert_eq!(store.load_state("p", Entity::Deal).await.unwrap(), state);
    assert_eq!(
        store.load_state("p", Entity::Lead).await.unwrap(),
        SyncState::default()
    );
    assert_eq!(
        store.load_state("q", Entity::Deal).await.unwrap(),
        SyncState::default()
    );
    let finished = SyncState {
        full_checkpoint: None,
        full_started_at: None,
        ..state
    };
    save_state(&store, "p", Entity::Deal, &finished).await;
    assert_eq!(store.load_state("p", Entity::Deal).await.unwrap(), finished);
}

#[tokio::test]
async fn sync_runs_are_recorded() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let ok = store.start_run("p", Entity::Deal, "full").await.unwrap();
    let failed = store
        .start_run("p", Entity::Contact, "incremental")
        .await
        .unwrap();
    assert_ne!(ok, failed);
    let stats = RunStats {
        rows_read: 2_500,
        rows_written: 2_400,
        rows_deleted: 3,
        http_requests: 1,
        error: None,
        ..RunStats::default()
    };
    store.finish_run(ok, &stats).await.unwrap();
    let failure = RunStats {
        error: Some("portal answered 500".into()),
        ..RunStats::default()
    };
    store.finish_run(failed, &failure).await.unwrap();
    assert!(
        store
            .finish_run(999_999, &stats)
            .await
            .unwrap_err()
            .to_string()
            .contains("999999")
    );

    let c = db.client().await;
    let r = c
        .query_one(
            "SELECT portal, entity, mode, rows_read, rows_written, rows_deleted, http_requests, error,
                    finished_at >= started_at
             FROM b24._sync_runs WHERE id = $1",
            &[&ok],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ),
        ("p".into(), "deal".into(), "full".into())
    );
    assert_eq!(
        (
            r.get::<_, i64>(3),
            r.get::<_, i64>(4),
            r.get::<_, i64>(5),
            r.get::<_, i64>(6)
        ),
        (2_500, 2_400, 3, 1)
    );
    assert_eq!(r.get::<_, Option<String>>(7), None);
    assert!(r.get::<_, bool>(8));
    let error: String = c
        .query_one("SELECT error FROM b24._sync_runs WHERE id = $1", &[&failed])
        .await
        .unwrap()
        .get(0);
    assert_eq!(error, "portal answered 500");
}

#[tokio::test]
async fn a_closed_connection_is_reopened() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    save_state(
        &store,
        "p",
        Entity::Deal,
        &SyncState {
            cursor: Some("c".into()),
            ..SyncState::default()
        },
    )
    .await;
    let c = db.client().await;
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'b24-store'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // Give the connection task a moment to notice, as between warm invocations.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .load_state("p", Entity::Deal)
            .await
            .unwrap()
            .cursor
            .as_deref(),
        Some("c")
    );
}

#[tokio::test]
async fn tls_is_used_when_the_url_asks_for_it() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let server_ssl: String = scalar(&c, "SHOW ssl").await;
    if server_ssl != "on" {
        eprintln!("the local server has ssl=off; TLS cannot be exercised here");
        return;
    }
    let store = Store::connect(&format!("{}?sslmode=require", db.url), SCHEMA)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let encrypted: bool = c
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'b24-store'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);
    // The local server's certificate is self-signed: full verification refuses it.
    let err = Store::connect(&format!("{}?sslmode=verify-full", db.url), SCHEMA)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // And plain loopback stays plain.
    let plain = Store::connect(&db.url, SCHEMA).await.unwrap();
    plain.load_state("p", Entity::Deal).await.unwrap();
    let plain_count: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'b24-store' AND NOT s.ssl",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain_count, 1);
}

#[tokio::test]
async fn connection_errors_do_not_reveal_the_password() {
    let err = Store::connect("postgres://postgres:hunter2@127.0.0.1:1/nowhere", SCHEMA)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn each_mode_writes_only_its_own_state() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let started = Utc.with_ymd_and_hms(2024, 8, 30, 12, 0, 0).unwrap();
    let cursor = "2024-08-30T14:29:00+03:00";
    store
        .save_cursor("p", Entity::Deal, Some(cursor))
        .await
        .unwrap();
    store
        .save_full_checkpoint("p", Entity::Deal, Some(500), Some(started))
        .await
        .unwrap();
    let incremental = IncrementalCheckpoint {
        since: "2024-08-30T14:24:00+03:00".into(),
        after_id: 42,
        target: Some("2024-08-30T15:00:00+03:00".into()),
    };
    store
        .save_incremental_checkpoint("p", Entity::Deal, Some(&incremental))
        .await
        .unwrap();
    store
        .save_reconcile_checkpoint("p", Entity::Deal, Some(7))
        .await
        .unwrap();
    let full = SyncState {
        cursor: Some(cursor.into()),
        full_checkpoint: Some(500),
        full_started_at: Some(started),
    };
    assert_eq!(store.load_state("p", Entity::Deal).await.unwrap(), full);
    assert_eq!(
        store.load_checkpoints("p", Entity::Deal).await.unwrap(),
        Checkpoints {
            incremental: Some(incremental),
            reconcile: Some(7),
        }
    );
    // Completing the incremental pass moves the cursor and clears its checkpoint in
    // one write; the full sync's and reconcile's state stay.
    store
        .complete_incremental("p", Entity::Deal, Some("2024-08-30T15:00:00+03:00"))
        .await
        .unwrap();
    let state = store.load_state("p", Entity::Deal).await.unwrap();
    assert_eq!(state.cursor.as_deref(), Some("2024-08-30T15:00:00+03:00"));
    assert_eq!(state.full_checkpoint, Some(500));
    assert_eq!(
        store.load_checkpoints("p", Entity::Deal).await.unwrap(),
        Checkpoints {
            incremental: None,
            reconcile: Some(7),
        }
    );
    store
        .save_full_checkpoint("p", Entity::Deal, None, None)
        .await
        .unwrap();
    let state = store.load_state("p", Entity::Deal).await.unwrap();
    assert_eq!(
        (state.cursor.as_deref(), state.full_checkpoint),
        (Some("2024-08-30T15:00:00+03:00"), None)
    );
    assert_eq!(
        store.load_checkpoints("q", Entity::Deal).await.unwrap(),
        Checkpoints::default()
    );
}

#[tokio::test]
async fn deletion_candidates_are_kept_per_portal_entity_and_mode() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    // No mirror table yet: nothing is live, and no candidate either.
    assert_eq!(store.live_count("p", Entity::Deal).await.unwrap(), 0);
    store
        .add_pending_deletes("p", Entity::Deal, "full", &[1])
        .await
        .unwrap();
    assert!(
        store
            .pending_deletes("p", Entity::Deal, "full")
            .await
            .unwrap()
            .is_empty()
    );
    let fields = [field("ID", "integer"), field("DATE_MODIFY", "datetime")];
    for (portal, ids) in [("p", 1..=9), ("q", 1..=5)] {
        let layout = store
            .ensure_table(portal, Entity::Deal, &fields)
            .await
            .unwrap();
        let rows: Vec<_> = ids
            .map(|id| {
                row(json!({"ID": id.to_string(), "DATE_MODIFY": "2024-08-30T14:29:00+03:00"}))
            })
            .collect();
        store
            .upsert(portal, Entity::Deal, &layout, &rows)
            .await
            .unwrap();
    }
    assert_eq!(store.live_count("p", Entity::Deal).await.unwrap(), 9);
    store
        .add_pending_deletes("p", Entity::Deal, "full", &[3, 1, 2])
        .await
        .unwrap();
    store
        .add_pending_deletes("p", Entity::Deal, "full", &[2])
        .await
        .unwrap();
    store
        .add_pending_deletes("p", Entity::Deal, "reconcile", &[9])
        .await
        .unwrap();
    store
        .add_pending_deletes("q", Entity::Deal, "full", &[5])
        .await
        .unwrap();
    let pending = |portal: &'static str, mode: &'static str| {
        let store = store.clone();
        async move {
            store
                .pending_deletes(portal, Entity::Deal, mode)
                .await
                .unwrap()
        }
    };
    assert_eq!(pending("p", "full").await, vec![1, 2, 3]);
    // A candidate another run soft-deleted meanwhile is no longer one.
    store.soft_delete("p", Entity::Deal, &[1]).await.unwrap();
    assert_eq!(pending("p", "full").await, vec![2, 3]);
    assert_eq!(store.live_count("p", Entity::Deal).await.unwrap(), 8);
    store
        .clear_pending_deletes("p", Entity::Deal, "full", Some(&[2]))
        .await
        .unwrap();
    assert_eq!(pending("p", "full").await, vec![3]);
    store
        .clear_pending_deletes("p", Entity::Deal, "full", None)
        .await
        .unwrap();
    assert!(pending("p", "full").await.is_empty());
    assert_eq!(pending("p", "reconcile").await, vec![9]);
    assert_eq!(pending("q", "full").await, vec![5]);
}
