//! `b24sync migrate`, `sync` and `check` as an operator runs them: a simulated portal,
//! a throw-away database, one-off flags and a configuration file.

mod common;

use std::process::Output;

use b24_sim::{MutateRequest, RunningSim, SimConfig};
use b24_testkit::TestDb;
use common::{assert_usage_errors, b24sync, stderr};
use serde_json::Value;

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

async fn sim() -> RunningSim {
    let config = SimConfig {
        deals: 3_000,
        contacts: 400,
        user_fields: 4,
        ..SimConfig::default()
    };
    b24_sim::start(config).await.unwrap()
}

#[tokio::test]
async fn one_off_flags_migrate_sync_and_check_without_a_configuration_file() {
    let sim = sim().await;
    let db = TestDb::create().await;
    let env = [
        ("B24SYNC_WEBHOOK", sim.webhook_url()),
        ("B24SYNC_DATABASE_URL", db.url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let migrated = b24sync(&["migrate"], &env).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    let synced = b24sync(
        &[
            "sync",
            "--portal",
            "acme",
            "--entity",
            "deal,contact",
            "--mode",
            "full",
        ],
        &env,
    )
    .await;
    assert!(synced.status.success(), "{}", stderr(&synced));
    let summaries = lines(&synced);
    assert_eq!(summaries.len(), 2);
    assert_eq!(
        (
            summaries[0]["entity"].as_str(),
            summaries[0]["rows_inserted"].as_u64()
        ),
        (Some("deal"), Some(3_000))
    );
    assert_eq!(
        (
            summaries[1]["entity"].as_str(),
            summaries[1]["rows_inserted"].as_u64()
        ),
        (Some("contact"), Some(400))
    );
    // What the portal answered and charged, per run.
    for summary in &summaries {
        assert!(summary["http_requests"].as_u64().unwrap() > 0, "{summary}");
        assert_eq!(summary["throttled_503"].as_u64(), Some(0), "{summary}");
        assert_eq!(summary["throttled_429"].as_u64(), Some(0), "{summary}");
        assert!(
            summary["operating_seconds"].as_f64().unwrap() > 0.0,
            "{summary}"
        );
    }
    let rows: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM b24.deal WHERE portal = 'acme'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3_000);

    let check = b24sync(&["check", "--portal", "acme", "--entity", "deal"], &env).await;
    assert!(check.status.success(), "{}", stderr(&check));
    assert_eq!(lines(&check)[0]["in_sync"], true);

    // The portal changes: check says so (exit 1) until an incremental pass and a
    // reconcile bring the mirror back.
    sim.mutate(&MutateRequest {
        entity: b24_sim::Entity::Deal,
        seed: 3,
        adds: 5,
        updates: 7,
        deletes: 4,
    })
    .await
    .unwrap();
    let check = b24sync(&["check", "--portal", "acme", "--entity", "deal"], &env).await;
    assert_eq!(check.status.code(), Some(1));
    let report = &lines(&check)[0];
    assert_eq!(
        (
            report["missing_in_mirror"].as_u64(),
            report["gone_from_portal"].as_u64()
        ),
        (Some(5), Some(4))
    );
    assert!(report["different_version"].as_u64().unwrap() >= 1);
    for mode in ["incremental", "reconcile"] {
        let run = b24sync(
            &[
                "sync", "--portal", "acme", "--entity", "deal", "--mode", mode,
            ],
            &env,
        )
        .await;
        assert!(run.status.success(), "{mode}: {}", stderr(&run));
    }
    let check = b24sync(&["check", "--portal", "acme", "--entity", "deal"], &env).await;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Nothing printed anywhere holds the webhook's secret.
    for output in [&migrated, &synced, &check] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        );
        assert!(!all.contains("simsecret"), "secret leaked: {all}");
    }
}

/// A configuration file for portal `acme` (deals only) and the test database.
fn config_file(sim: &RunningSim, db: &TestDb, name: &str) -> String {
    let config = format!(
        "[database]\nurl = \"{}\"\n\n[portals.acme]\nwebhook_url = \"{}\"\nentities = [\"deal\"]\n",
        db.url,
        sim.webhook_url()
    );
    let path = std::env::temp_dir().join(format!("b24sync-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_string()
}

/// A throw-away database, migrated through a configuration file for it (see
/// [`config_file`]); returns the database and the file's path.
async fn migrated(sim: &RunningSim, name: &str) -> (TestDb, String) {
    let db = TestDb::create().await;
    let path = config_file(sim, &db, name);
    let migrated = b24sync(&["--config", &path, "migrate"], &[]).await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    (db, path)
}

#[tokio::test]
async fn a_time_box_leaves_a_checkpoint_that_resume_finishes() {
    let sim = b24_sim::start(SimConfig {
        deals: 12_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (_db, path) = migrated(&sim, "time-box").await;
    let path = path.as_str();

    // Slow answers: five listing requests cannot all fit in a 2-second box.
    sim.set_faults("latency=400@1").await.unwrap();
    let cut = b24sync(
        &[
            "--config",
            path,
            "sync",
            "--mode",
            "full",
            "--time-box",
            "2",
        ],
        &[],
    )
    .await;
    assert!(cut.status.success(), "{}", stderr(&cut));
    let first = &lines(&cut)[0];
    assert_eq!(
        (first["completed"].as_bool(), first["outcome"].as_str()),
        (Some(false), Some("stopped"))
    );
    let checkpoint = first["checkpoint"].as_u64().unwrap();
    let chunk = b24_sync::CHUNK_ROWS as u64;
    assert!(
        checkpoint > 0 && checkpoint.is_multiple_of(chunk),
        "{checkpoint}"
    );

    // Every mode honours the box, however slow the portal.
    sim.set_faults("latency=5000@1").await.unwrap();
    for mode in ["incremental", "reconcile", "resume"] {
        let started = std::time::Instant::now();
        let boxed = b24sync(
            &["--config", path, "sync", "--mode", mode, "--time-box", "2"],
            &[],
        )
        .await;
        assert!(boxed.status.success(), "{mode}: {}", stderr(&boxed));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{mode} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            lines(&boxed)[0]["outcome"].as_str(),
            Some("stopped"),
            "{mode}"
        );
    }

    sim.set_faults("").await.unwrap();
    let resumed = b24sync(&["--config", path, "sync", "--mode", "resume"], &[]).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let rest = &lines(&resumed)[0];
    assert_eq!(
        (rest["completed"].as_bool(), rest["rows_inserted"].as_u64()),
        (Some(true), Some(12_000 - checkpoint))
    );
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_role_change_is_refused_with_its_own_exit_code_until_confirmed() {
    let sim = sim().await;
    let db = TestDb::create().await;
    let path = config_file(&sim, &db, "refused");
    let path = path.as_str();
    let full = b24sync(
        &["--config", path, "sync", "--migrate", "--mode", "full"],
        &[],
    )
    .await;
    assert!(full.status.success(), "{}", stderr(&full));
    let hidden = sim
        .hide_records(b24_sim::Entity::Deal, 0.9, 11)
        .await
        .unwrap();

    let refused = b24sync(&["--config", path, "sync", "--mode", "full"], &[]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains(&format!("would soft-delete {hidden} of 3000 live rows")),
        "{message}"
    );
    assert!(message.contains("--confirm-deletes"), "{message}");
    assert!(message.contains("max_delete_share"), "{message}");
    let line = &lines(&refused)[0];
    assert_eq!(line["outcome"].as_str(), Some("refused"));
    let live = || async {
        db.client()
            .await
            .query_one(
                "SELECT count(*) FROM b24.deal WHERE portal = 'acme' AND deleted_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(live().await, 3_000);

    let confirmed = b24sync(
        &[
            "--config",
            path,
            "sync",
            "--mode",
            "resume",
            "--confirm-deletes",
        ],
        &[],
    )
    .await;
    assert!(confirmed.status.success(), "{}", stderr(&confirmed));
    assert_eq!(
        lines(&confirmed)[0]["rows_deleted"].as_u64(),
        Some(hidden as u64)
    );
    assert_eq!(live().await, 3_000 - hidden as i64);
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_run_that_finds_another_under_way_says_so_and_exits_cleanly() {
    let sim = sim().await;
    let (db, path) = migrated(&sim, "locked").await;
    let path = path.as_str();
    // Another process's run of acme's deals.
    let store = b24_store::Store::connect(&db.url, "b24").await.unwrap();
    let lock = store
        .try_lock_run("acme", b24_domain::entity::Entity::Deal)
        .await
        .unwrap()
        .unwrap();
    let second = b24sync(&["--config", path, "sync", "--mode", "incremental"], &[]).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    let line = &lines(&second)[0];
    assert_eq!(line["outcome"].as_str(), Some("already_running"));
    assert_eq!(line["rows_read"].as_u64(), Some(0));
    lock.release().await;
    let after = b24sync(&["--config", path, "sync", "--mode", "incremental"], &[]).await;
    assert!(after.status.success(), "{}", stderr(&after));
    assert_eq!(lines(&after)[0]["rows_inserted"].as_u64(), Some(3_000));
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_usage_exit_code() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "sync",
                "--mode",
                "hourly",
                "--webhook",
                "https://x.bitrix24.com/rest/1/abc/",
            ],
            "hourly",
        ),
        (
            &[
                "sync",
                "--mode",
                "full",
                "--entity",
                "invoice",
                "--webhook",
                "https://x.bitrix24.com/rest/1/abc/",
            ],
            "invoice",
        ),
        (&["migrate"], "B24SYNC_CONFIG"),
        (
            &[
                "sync",
                "--mode",
                "full",
                "--webhook",
                "https://x.bitrix24.com/rest/1/abc/",
                "--database-url",
                "mysql://x",
            ],
            "database",
        ),
    ];
    assert_usage_errors(&cases, &["rest/1/abc"]).await;
}
