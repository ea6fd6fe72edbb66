//! The binary as Lambda runs it: started against a local stand-in of the Lambda Runtime
//! API, its configuration in moto's Secrets Manager (named by `B24SYNC_CONFIG_SECRET`),
//! a sample schedule input of `events/sync-scheduled` syncing a simulated portal into a
//! throw-away database.

use std::path::Path;
use std::time::Duration;

use b24_sim::SimConfig;
use b24_testkit::TestDb;
use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::RuntimeApi;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/sync-scheduled/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn live_rows(db: &TestDb, table: &str) -> i64 {
    let sql =
        format!("SELECT count(*) FROM b24.{table} WHERE portal = 'demo' AND deleted_at IS NULL");
    db.client().await.query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_full_sync_fills_the_mirror_and_logs_json_with_the_request_id() {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 120,
        contacts: 40,
        leads: 30,
        companies: 20,
        user_fields: 4,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let moto = MotoServer::start();
    let config = json!({
        "database": {"url": db.url},
        "portals": {"demo": {"webhook_url": sim.webhook_url()}},
    });
    let secret = moto
        .create_secret("b24sync/config", &config.to_string())
        .await;
    let runtime = RuntimeApi::start("sync-scheduled").await;
    let mut env = lambda_environment("sync-scheduled", 512, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    env.push(("B24SYNC_MIGRATE_ON_START".into(), "true".into()));
    let function = FunctionProcess::start(Path::new(env!("CARGO_BIN_EXE_sync-scheduled")), &env);

    runtime.wait_ready(WAIT).await.unwrap();
    let full = runtime.invoke(&sample("full.json"), WAIT).await.unwrap();
    let runs = full.response["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs: {:?}", full.response));
    assert_eq!(runs.len(), 4, "{runs:?}");
    for (table, rows) in [
        ("deal", 120),
        ("contact", 40),
        ("lead", 30),
        ("company", 20),
    ] {
        assert_eq!(live_rows(&db, table).await, rows, "{table}");
    }
    let incremental = runtime
        .invoke(&sample("incremental.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        incremental.response["runs"].as_array().map(Vec::len),
        Some(4)
    );
    // The reference tables: one outcome per table, each filled from the portal.
    let reference = runtime
        .invoke(&sample("reference.json"), WAIT)
        .await
        .unwrap();
    let tables: Vec<&str> = reference.response["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs: {:?}", reference.response))
        .iter()
        .filter_map(|run| run["entity"].as_str())
        .collect();
    assert_eq!(
        tables,
        ["crm_category", "crm_status", "crm_currency", "bitrix_user"]
    );
    for table in ["crm_category", "crm_status", "crm_currency", "bitrix_user"] {
        let sql = format!("SELECT count(*) FROM b24.{table} WHERE portal = 'demo'");
        let rows: i64 = db.client().await.query_one(&sql, &[]).await.unwrap().get(0);
        assert!(rows > 0, "{table} is empty");
    }

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    let lines = output.json_lines();
    let requests: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some("sync request"))
        .map(request_id)
        .collect();
    assert_eq!(
        requests,
        [
            Some(full.request_id.as_str()),
            Some(incremental.request_id.as_str()),
            Some(reference.request_id.as_str())
        ],
        "{lines:#?}"
    );
    // The engine's own lines (one summary per entity and run) belong to the invocation too.
    let finished: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| {
            l.pointer("/fields/message").and_then(Value::as_str) == Some("sync run finished")
        })
        .map(request_id)
        .collect();
    assert_eq!(finished.len(), 8, "{lines:#?}");
    assert!(
        finished[..4]
            .iter()
            .all(|id| *id == Some(full.request_id.as_str())),
        "{lines:#?}"
    );
    let secret_code = "simsecret0123456";
    assert!(!output.stdout.contains(secret_code) && !output.stderr.contains(secret_code));
}
