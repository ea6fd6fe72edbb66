//! The status snapshot: row counts kept exact by the triggers through every kind of
//! write, the latest runs of each kind, the forward and outbox backlogs (the outbox
//! absent before it exists), the schema of every portal table, and all of it readable
//! by a role that may only SELECT, in read-only sessions.

use b24_domain::entity::Entity;
use b24_domain::sync::{DeletesRefused, RunOutcome};
use b24_store::{RunStats, StatusQuery, StatusSnapshot, Store};
use chrono::{Duration, Utc};
use serde_json::json;
use tokio_postgres::Client;

use crate::common::*;

const PORTAL: &str = "acme";

fn query() -> StatusQuery {
    StatusQuery {
        entities: vec![
            (PORTAL.to_string(), Entity::Deal),
            (PORTAL.to_string(), Entity::Contact),
        ],
        runs_since: Utc::now() - Duration::hours(24),
        max_runs: 500,
    }
}

fn deals(ids: std::ops::RangeInclusive<u64>, modified: &str) -> Vec<b24_store::Row> {
    ids.map(|id| {
        row(json!({"ID": id.to_string(), "TITLE": format!("deal {id}"), "DATE_MODIFY": modified}))
    })
    .collect()
}

/// The snapshot's counts of `acme`'s deals and what `COUNT(*)` finds in the table.
async fn counts(store: &Store, c: &Client) -> ((Option<i64>, Option<i64>), (i64, i64)) {
    let snapshot = store.status_snapshot(&query()).await.unwrap();
    let deal = snapshot
        .entities
        .iter()
        .find(|e| e.entity == Entity::Deal)
        .unwrap();
    let table = deal.table_name.clone().unwrap();
    let counted = scalar_pair(
        c,
        &format!(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM b24.{table}"
        ),
    )
    .await;
    ((deal.live_rows, deal.deleted_rows), counted)
}

#[tokio::test]
async fn row_counts_stay_exact_through_every_kind_of_write() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    // Writes by hand below stand for the sync's own (the back-sync triggers, when
    // present, leave them alone); the counts must follow any writer.
    c.batch_execute("SET b24sync.writer = 'sync'")
        .await
        .unwrap();
    let fields = vec![
        field("ID", "integer"),
        field("TITLE", "string"),
        field("DATE_MODIFY", "datetime"),
    ];
    let layout = store
        .ensure_table(PORTAL, Entity::Deal, &fields)
        .await
        .unwrap();
    let exact = |(seen, counted): ((Option<i64>, Option<i64>), (i64, i64))| {
        assert_eq!(seen, (Some(counted.0), Some(counted.1)));
        counted
    };
    assert_eq!(exact(counts(&store, &c).await), (0, 0));

    let t0 = "2024-08-30T14:29:00+02:00";
    store
        .upsert(PORTAL, Entity::Deal, &layout, &deals(1..=3000, t0))
        .await
        .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (3000, 0));

    store
        .soft_delete(PORTAL, Entity::Deal, &(1..=120).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (2880, 120));

    // A later version of deleted rows brings them back; new rows come in the same call.
    let t1 = "2024-08-30T15:00:00+02:00";
    store
        .upsert(PORTAL, Entity::Deal, &layout, &deals(101..=3010, t1))
        .await
        .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (2910, 100));

    // Other writers: an UPDATE of values only, a DELETE of live and deleted rows, TRUNCATE.
    let table = portal_table(&c, PORTAL, Entity::Deal).await;
    c.batch_execute(&format!(
        "UPDATE b24.{table} SET title = 'x' WHERE id <= 500"
    ))
    .await
    .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (2910, 100));
    c.batch_execute(&format!(
        "DELETE FROM b24.{table} WHERE id BETWEEN 91 AND 110"
    ))
    .await
    .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (2900, 90));
    c.batch_execute(&format!(
        "UPDATE b24.{table} SET deleted_at = NULL WHERE id <= 5"
    ))
    .await
    .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (2905, 85));

    let snapshot = store.status_snapshot(&query()).await.unwrap();
    let newest = snapshot.entities[1].newest_date_modify.unwrap();
    assert_eq!(newest.to_rfc3339(), "2024-08-30T13:00:00+00:00");

    c.batch_execute(&format!("TRUNCATE b24.{table}"))
        .await
        .unwrap();
    assert_eq!(exact(counts(&store, &c).await), (0, 0));
}

#[tokio::test]
async fn tables_that_existed_before_the_migration_are_counted_once_then_kept() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let fields = vec![field("ID", "integer"), field("DATE_MODIFY", "datetime")];
    let layout = store
        .ensure_table(PORTAL, Entity::Contact, &fields)
        .await
        .unwrap();
    let rows: Vec<_> = (1..=40)
        .map(|id| row(json!({"ID": id.to_string(), "DATE_MODIFY": "2024-08-30T14:29:00+02:00"})))
        .collect();
    store
        .upsert(PORTAL, Entity::Contact, &layout, &rows)
        .await
        .unwrap();
    // As migration V6 finds a table of an earlier version: no triggers, no count yet.
    let table = portal_table(&c, PORTAL, Entity::Contact).await;
    c.batch_execute(&format!(
        "DROP TRIGGER _b24sync_count_insert ON b24.{table}; DELETE FROM b24._mirror_counts;"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "SET search_path TO b24; SELECT _mirror_counts_install('{table}'); RESET search_path;"
    ))
    .await
    .unwrap();
    let snapshot = store.status_snapshot(&query()).await.unwrap();
    let contact = &snapshot.entities[0];
    assert_eq!(contact.entity, Entity::Contact);
    assert_eq!(
        (contact.live_rows, contact.deleted_rows),
        (Some(40), Some(0))
    );
    let more: Vec<_> = (41..=45)
        .map(|id| row(json!({"ID": id.to_string(), "DATE_MODIFY": "2024-08-30T14:29:00+02:00"})))
        .collect();
    store
        .upsert(PORTAL, Entity::Contact, &layout, &more)
        .await
        .unwrap();
    let snapshot = store.status_snapshot(&query()).await.unwrap();
    assert_eq!(snapshot.entities[0].live_rows, Some(45));
}

async fn run(store: &Store, entity: Entity, mode: &str, outcome: RunOutcome, written: u64) -> i64 {
    let id = store.start_run(PORTAL, entity, mode).await.unwrap();
    let refused = (outcome == RunOutcome::Refused).then_some(DeletesRefused {
        would_delete: 70,
        live_rows: 100,
        max_share: 0.1,
    });
    let stats = RunStats {
        rows_read: written,
        rows_written: written,
        rows_deleted: 0,
        http_requests: 3,
        error: (outcome == RunOutcome::Failed).then(|| "portal unreachable".to_string()),
        outcome: Some(outcome),
        refused,
    };
    store.finish_run(id, &stats).await.unwrap();
    id
}

#[tokio::test]
async fn the_snapshot_has_the_latest_runs_of_each_kind_and_the_backlogs() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    let full = run(&store, Entity::Deal, "full", RunOutcome::Completed, 500).await;
    let failed = run(&store, Entity::Deal, "incremental", RunOutcome::Failed, 0).await;
    let incremental = run(
        &store,
        Entity::Deal,
        "incremental",
        RunOutcome::Completed,
        7,
    )
    .await;
    let refused = run(&store, Entity::Deal, "reconcile", RunOutcome::Refused, 0).await;
    let old = run(
        &store,
        Entity::Deal,
        "incremental",
        RunOutcome::Completed,
        1,
    )
    .await;
    c.execute(
        "UPDATE b24._sync_runs SET started_at = now() - interval '3 days' WHERE id = $1",
        &[&old],
    )
    .await
    .unwrap();
    let running = store
        .start_run(PORTAL, Entity::Deal, "resume")
        .await
        .unwrap();
    store
        .save_cursor(PORTAL, Entity::Deal, Some("2024-08-30T14:29:00+02:00"))
        .await
        .unwrap();

    let snapshot = store.status_snapshot(&query()).await.unwrap();
    // Both configured entities are reported, the contact without a table or runs yet.
    let names: Vec<_> = snapshot.entities.iter().map(|e| e.entity).collect();
    assert_eq!(names, [Entity::Contact, Entity::Deal]);
    let contact = &snapshot.entities[0];
    assert_eq!(
        (&contact.table_name, contact.live_rows, &contact.last_run),
        (&None, None, &None)
    );
    let deal = &snapshot.entities[1];
    assert_eq!(deal.cursor.as_deref(), Some("2024-08-30T14:29:00+02:00"));
    let mut completed: Vec<_> = deal
        .last_completed
        .iter()
        .map(|r| (r.mode.as_str(), r.id, r.rows_written))
        .collect();
    completed.sort();
    assert_eq!(
        completed,
        [
            ("full", full, Some(500)),
            ("incremental", incremental, Some(7))
        ]
    );
    let last = deal.last_run.as_ref().unwrap();
    assert_eq!((last.id, last.outcome.as_deref()), (running, None));
    let unsuccessful = deal.last_unsuccessful.as_ref().unwrap();
    assert_eq!(
        (
            unsuccessful.id,
            unsuccessful.would_delete,
            unsuccessful.live_rows
        ),
        (refused, Some(70), Some(100))
    );
    // The window: newest first, the run of three days ago left out.
    let recent: Vec<_> = deal.recent_runs.iter().map(|r| r.id).collect();
    assert_eq!(recent, [running, refused, incremental, failed, full]);
    assert_eq!(
        deal.recent_runs[3].error.as_deref(),
        Some("portal unreachable")
    );

    assert!(snapshot.forward_backlog.is_empty());
    c.batch_execute(
        "INSERT INTO b24._forward_ledger (route, source_portal, source_deal_id, target_portal, state, lease_id, lease_until, updated_at)
         VALUES ('r', 'acme', 1, 'central', 'pending', NULL, NULL, now() - interval '2 hours'),
                ('r', 'acme', 2, 'central', 'pending', NULL, NULL, now()),
                ('r', 'acme', 3, 'central', 'failed', NULL, NULL, now()),
                ('r', 'acme', 4, 'central', 'done', NULL, NULL, now()),
                ('r', 'acme', 5, 'central', 'adding', 9, now() + interval '5 minutes', now())",
    )
    .await
    .unwrap();
    let backlog = store
        .status_snapshot(&query())
        .await
        .unwrap()
        .forward_backlog;
    let states: Vec<_> = backlog
        .iter()
        .map(|b| {
            (
                b.route.as_str(),
                b.target_portal.as_str(),
                b.state.as_str(),
                b.rows,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("r", "central", "adding", 1),
            ("r", "central", "failed", 1),
            ("r", "central", "pending", 2)
        ]
    );
    assert!(backlog[2].oldest_updated_at < Utc::now() - Duration::minutes(110));
}

async fn outbox(store: &Store) -> Option<Vec<(String, String, i64)>> {
    let snapshot: StatusSnapshot = store.status_snapshot(&query()).await.unwrap();
    snapshot.outbox.map(|rows| {
        rows.into_iter()
            .map(|o| (o.portal, o.state, o.rows))
            .collect()
    })
}

#[tokio::test]
async fn the_outbox_backlog_is_absent_until_the_outbox_exists() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let c = db.client().await;
    // Back-sync's migration makes the table; without it the key is absent, not zero.
    c.batch_execute("DROP TABLE IF EXISTS b24._outbox CASCADE")
        .await
        .unwrap();
    assert_eq!(outbox(&store).await, None);
    c.batch_execute(
        "CREATE TABLE b24._outbox (id bigserial PRIMARY KEY, portal text NOT NULL, entity text NOT NULL,
                                   state text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                                   finished_at timestamptz)",
    )
    .await
    .unwrap();
    assert_eq!(outbox(&store).await, Some(vec![]));
    c.batch_execute(
        "INSERT INTO b24._outbox (portal, entity, state, finished_at) VALUES
             ('acme', 'deal', 'pending', NULL), ('acme', 'deal', 'pending', NULL),
             ('acme', 'contact', 'failed', now()), ('acme', 'deal', 'done', now()),
             ('acme', 'deal', 'skipped', now()), ('other', 'deal', 'pending', NULL),
             -- Conflicts and failures of more than a day ago no longer count.
             ('acme', 'deal', 'conflict', now() - interval '2 days'),
             ('acme', 'deal', 'failed', now() - interval '25 hours')",
    )
    .await
    .unwrap();
    assert_eq!(
        outbox(&store).await,
        Some(vec![
            ("acme".into(), "failed".into(), 1),
            ("acme".into(), "pending".into(), 2)
        ])
    );
}

#[tokio::test]
async fn a_role_that_may_only_select_reads_the_snapshot_and_the_schema() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let fields = vec![
        field("ID", "integer"),
        field("DATE_MODIFY", "datetime"),
        labelled(field("UF_CRM_KIND", "enumeration"), "Kind"),
    ];
    let layout = store
        .ensure_table(PORTAL, Entity::Deal, &fields)
        .await
        .unwrap();
    store
        .upsert(
            PORTAL,
            Entity::Deal,
            &layout,
            &deals(1..=10, "2024-08-30T14:29:00+02:00"),
        )
        .await
        .unwrap();
    run(&store, Entity::Deal, "full", RunOutcome::Completed, 10).await;
    let role = ReadOnlyRole::create(&db).await;
    let readonly = Store::connect(&role.url, SCHEMA).await.unwrap();
    let snapshot = readonly.status_snapshot(&query()).await.unwrap();
    assert_eq!(snapshot.entities[1].live_rows, Some(10));
    assert_eq!(snapshot.entities[1].last_completed.len(), 1);
    let schema = readonly.mirror_schema().await.unwrap();
    assert_eq!(schema.len(), 1);
    assert_eq!(
        schema[0].table_name,
        portal_table(&db.client().await, PORTAL, Entity::Deal).await
    );
    let column_names: Vec<_> = schema[0].columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        column_names,
        [
            "portal",
            "id",
            "raw",
            "date_modify",
            "synced_at",
            "deleted_at",
            "uf_crm_kind"
        ]
    );
    assert_eq!(schema[0].fields[2].label.as_deref(), Some("Kind"));
    // The role cannot write, and cannot read the CRM data itself.
    let c = b24_testkit::connect(&role.url).await;
    let table = &schema[0].table_name;
    assert!(
        c.batch_execute(&format!("SELECT * FROM b24.{table}"))
            .await
            .is_err()
    );
    assert!(c.batch_execute("DELETE FROM b24._sync_runs").await.is_err());
}

/// A login role as the README's "read-only role" recipe makes it (SELECT on the service
/// tables the status page reads, back-sync's outbox once it exists, sessions read-only
/// by default), dropped afterwards.
struct ReadOnlyRole {
    name: String,
    url: String,
    db_url: String,
}

impl ReadOnlyRole {
    async fn create(db: &TestDb) -> ReadOnlyRole {
        let name = format!("{}_status", db.name);
        let c = db.client().await;
        c.batch_execute(&format!(
            "CREATE ROLE {name} LOGIN;
             ALTER ROLE {name} SET default_transaction_read_only = on;
             GRANT USAGE ON SCHEMA b24 TO {name};
             GRANT SELECT ON b24._mirror_tables, b24._mirror_counts, b24._sync_state, b24._sync_runs,
                             b24._fields, b24._field_items, b24._forward_ledger TO {name};
             DO $$ BEGIN
                 IF to_regclass('b24._outbox') IS NOT NULL THEN GRANT SELECT ON b24._outbox TO {name}; END IF;
             END $$;"
        ))
        .await
        .unwrap();
        let url = db.url.replacen("postgres@", &format!("{name}@"), 1);
        assert_ne!(url, db.url, "the test server URL names the postgres user");
        ReadOnlyRole {
            name,
            url,
            db_url: db.url.clone(),
        }
    }
}

impl Drop for ReadOnlyRole {
    fn drop(&mut self) {
        let (name, db_url) = (self.name.clone(), self.db_url.clone());
        // Roles outlive databases: drop it (and what it was granted) before the database.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let c = b24_testkit::connect(&db_url).await;
                    c.batch_execute(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}';
                         DROP OWNED BY {name}; DROP ROLE {name}"
                    ))
                    .await
                })
        })
        .join();
    }
}
