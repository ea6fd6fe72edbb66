//! End-to-end: the simulator as the portal, the real local PostgreSQL as the mirror.

mod common;

use std::time::Instant;

use b24_domain::entity::Entity;
use b24_domain::sync::Mode;
use b24_sim::{SimConfig, UserFieldType};
use b24_sync::{CHUNK_ROWS, SyncError, SyncOptions, SyncSummary};
use common::*;

fn seeded(deals: usize, contacts: usize, user_fields: usize) -> SimConfig {
    SimConfig {
        seed: 7,
        deals,
        contacts,
        leads: 300,
        companies: 200,
        user_fields,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn full_sync_mirrors_every_row_and_column_of_every_entity() {
    // 16 user fields: every type single, and multiple ones (every fifth is multiple).
    let (db, store, sim, client) = setup(seeded(6_000, 1_200, 16)).await;
    let syncer = syncer(&client, &store);
    for entity in Entity::ALL {
        let summary = syncer
            .run(entity, Mode::Full, &SyncOptions::default())
            .await
            .unwrap();
        assert!(summary.completed);
        assert_eq!(
            summary.rows_read, summary.rows_inserted,
            "{entity}: first sync inserts every row"
        );
        assert_mirror_equals_portal(&sim, &db, entity).await;
        let types = assert_typed_columns_match_raw(&db, entity).await;
        if entity == Entity::Contact {
            assert_eq!(types.get("phone").map(String::as_str), Some("jsonb"));
            assert_eq!(types.get("email").map(String::as_str), Some("jsonb"));
        }
        if entity == Entity::Deal {
            assert_eq!(
                types.get("opportunity").map(String::as_str),
                Some("numeric")
            );
            assert_eq!(
                types.get("date_modify").map(String::as_str),
                Some("timestamp with time zone")
            );
            assert_eq!(types.get("opened").map(String::as_str), Some("boolean"));
            assert_eq!(
                types.get("assigned_by_id").map(String::as_str),
                Some("bigint")
            );
            let uf_types: std::collections::BTreeSet<&str> = types
                .iter()
                .filter(|(c, _)| c.starts_with("uf_crm_"))
                .map(|(_, t)| t.as_str())
                .collect();
            for expected in [
                "bigint",
                "numeric",
                "boolean",
                "date",
                "timestamp with time zone",
                "text",
                "jsonb",
            ] {
                assert!(
                    uf_types.contains(expected),
                    "no user field column of type {expected}: {uf_types:?}"
                );
            }
        }
    }
    // Default limits, no throttling answers.
    let stats = sim.stats().await.unwrap();
    assert_eq!((stats.status_503, stats.status_429), (0, 0));

    // A second full sync writes nothing: every DATE_MODIFY is unchanged.
    let again = syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.rows_inserted, again.rows_updated, again.rows_deleted),
        (0, 0, 0)
    );
    assert_eq!(again.rows_unchanged, 6_000);
}

#[tokio::test]
async fn incremental_and_reconcile_converge_after_random_changes() {
    let (db, store, sim, client) = setup(seeded(3_000, 500, 6)).await;
    let syncer = syncer(&client, &store);
    for entity in [Entity::Deal, Entity::Contact] {
        syncer
            .run(entity, Mode::Full, &SyncOptions::default())
            .await
            .unwrap();
    }
    for round in 0..3u64 {
        for entity in [Entity::Deal, Entity::Contact] {
            let changed = mutate(&sim, entity, 100 + round, 40, 120, 25).await;
            assert_eq!(changed.deleted.len(), 25);
            let incremental = syncer
                .run(entity, Mode::Incremental, &SyncOptions::default())
                .await
                .unwrap();
            assert!(
                incremental.rows_read >= 160,
                "{entity}: incremental read {} rows",
                incremental.rows_read
            );
            assert!(
                incremental.rows_inserted >= 40,
                "{entity}: added rows arrive"
            );
            let reconcile = syncer
                .run(entity, Mode::Reconcile, &SyncOptions::default())
                .await
                .unwrap();
            assert_eq!(
                reconcile.rows_deleted, 25,
                "{entity}: reconcile soft-deletes exactly the deleted rows"
            );
            assert_mirror_equals_portal(&sim, &db, entity).await;
        }
    }
    // Deleted rows are kept, marked.
    assert_eq!(deleted_ids(&db, Entity::Deal).await.len(), 75);
}

#[tokio::test]
async fn incremental_pass_costs_a_handful_of_requests() {
    let (_db, store, sim, client) = setup(seeded(5_000, 0, 4)).await;
    let syncer = syncer(&client, &store);
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    let changed = mutate(&sim, Entity::Deal, 5, 0, 1_000, 0).await;
    let mut updated = changed.updated;
    updated.sort_unstable();
    updated.dedup();
    let pass = syncer
        .run(Entity::Deal, Mode::Incremental, &SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(pass.rows_updated, updated.len() as u64);
    // fields + newest-modification probe + the filtered listing, whose batches grow
    // 1, 10, 50 commands so a small pass does not pay for 49 empty commands.
    assert!(
        pass.http_requests <= 5,
        "incremental pass used {} requests",
        pass.http_requests
    );
}

#[tokio::test]
async fn a_new_user_field_becomes_a_column_without_losing_rows() {
    let (db, store, sim, client) = setup(seeded(1_000, 0, 3)).await;
    let syncer = syncer(&client, &store);
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    let code = add_deal_field(&sim, UserFieldType::Double, false, None).await;
    // The portal's existing records got a value without a DATE_MODIFY change: the
    // column is backfilled from what the next full pass reads.
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    let types = assert_typed_columns_match_raw(&db, Entity::Deal).await;
    assert_eq!(
        types.get(&code.to_lowercase()).map(String::as_str),
        Some("numeric"),
        "{code} column"
    );
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 1_000);
}

#[tokio::test]
async fn a_full_sync_cut_by_its_deadline_resumes_without_gaps_or_duplicates() {
    // Three full chunks and part of a fourth.
    let (db, store, sim, client) = setup(seeded(3 * CHUNK_ROWS + 200, 0, 4)).await;
    let syncer = syncer(&client, &store);
    // A deadline already passed: the run stops after its first chunk.
    let cut = SyncOptions {
        stop_after: Some(Instant::now()),
        ..SyncOptions::default()
    };
    let first = syncer.run(Entity::Deal, Mode::Full, &cut).await.unwrap();
    assert!(!first.completed);
    assert_eq!(first.checkpoint, Some(CHUNK_ROWS as u64));
    assert_eq!(first.rows_read, CHUNK_ROWS as u64);
    // Changes between slices: a deletion behind the checkpoint and ahead of it.
    mutate(&sim, Entity::Deal, 3, 10, 10, 10).await;
    let mut slices = 1;
    loop {
        let next = syncer.run(Entity::Deal, Mode::Resume, &cut).await.unwrap();
        slices += 1;
        if next.completed {
            assert_eq!(next.checkpoint, None);
            break;
        }
        assert!(slices < 10, "resume never finished");
    }
    assert_eq!(slices, 4, "3 chunks + 210 rows take four slices");
    // Resume with nothing to do is a no-op.
    let idle = syncer.run(Entity::Deal, Mode::Resume, &cut).await.unwrap();
    assert!(idle.completed && idle.rows_read == 0 && idle.http_requests == 0);
    // The deletion behind the checkpoint is for reconcile (or the next full); after it
    // the mirror is exact.
    syncer
        .run(Entity::Deal, Mode::Incremental, &SyncOptions::default())
        .await
        .unwrap();
    syncer
        .run(Entity::Deal, Mode::Reconcile, &SyncOptions::default())
        .await
        .unwrap();
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
    // Every run is recorded.
    assert!(run_count(&db).await >= slices + 3);
}

#[tokio::test]
async fn hostile_field_names_are_kept_out_of_sql() {
    let (db, store, sim, client) = setup(seeded(200, 0, 2)).await;
    for code in [
        r#"UF_CRM_X"; DROP TABLE b24.deal; --"#,
        "UF_CRM_Y') OR 1=1 --",
        "RAW",
        "DELETED_AT",
    ] {
        add_deal_field(&sim, UserFieldType::String, false, Some(code)).await;
    }
    let syncer = syncer(&client, &store);
    let summary = syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    assert!(
        summary
            .skipped_fields
            .iter()
            .any(|f| f.contains("DROP TABLE")),
        "{:?}",
        summary.skipped_fields
    );
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
    let tables: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'b24' AND table_name = 'deal'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn injected_faults_delay_but_never_corrupt_the_mirror() {
    let (db, store, sim, client) = setup(seeded(4_000, 600, 5)).await;
    sim.set_faults("503=0.1,500=0.1,timeout=0.03,truncate=0.05,drop_before=0.05,seed=11")
        .await
        .unwrap();
    let syncer = syncer(&client, &store);
    let before = client.stats();
    let mut summaries = Vec::new();
    for entity in [Entity::Deal, Entity::Contact] {
        let options = SyncOptions::default();
        summaries.push(syncer.run(entity, Mode::Full, &options).await.unwrap());
        mutate(&sim, entity, 9, 20, 50, 15).await;
        summaries.push(
            syncer
                .run(entity, Mode::Incremental, &options)
                .await
                .unwrap(),
        );
        summaries.push(syncer.run(entity, Mode::Reconcile, &options).await.unwrap());
    }
    let after = client.stats();
    assert!(after.retries > 0, "faults were injected and retried");
    // Every request was one of a run's, so the runs' summaries add up to the client's
    // counters: the 503s the faults caused included.
    let total = |field: fn(&SyncSummary) -> u64| summaries.iter().map(field).sum::<u64>();
    assert!(after.throttled_503 > before.throttled_503);
    assert_eq!(
        total(|s| s.throttled_503),
        after.throttled_503 - before.throttled_503
    );
    assert_eq!(
        total(|s| s.throttled_429),
        after.throttled_429 - before.throttled_429
    );
    assert_eq!(
        total(|s| s.http_requests),
        after.http_requests - before.http_requests
    );
    let operating: f64 = summaries.iter().map(|s| s.operating_seconds).sum();
    assert!(
        (operating - (after.operating_seconds - before.operating_seconds)).abs() < 1e-6,
        "{operating} vs {after:?}"
    );
    sim.set_faults("").await.unwrap();
    for entity in [Entity::Deal, Entity::Contact] {
        assert_mirror_equals_portal(&sim, &db, entity).await;
    }
}

#[tokio::test]
async fn an_empty_listing_never_soft_deletes_the_whole_mirror() {
    let (db, store, sim, client) = setup(seeded(300, 0, 0)).await;
    let syncer = syncer(&client, &store);
    syncer
        .run(Entity::Deal, Mode::Full, &SyncOptions::default())
        .await
        .unwrap();
    mutate(&sim, Entity::Deal, 1, 0, 0, 300).await;
    let err = syncer
        .run(Entity::Deal, Mode::Reconcile, &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Refused(_)), "{err}");
    assert_eq!(mirror_records(&db, Entity::Deal).await.len(), 300);
}
