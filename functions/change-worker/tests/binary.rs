//! The binary as Lambda runs it: started against a local stand-in of the Lambda Runtime
//! API, its configuration in moto's Secrets Manager (named by `B24SYNC_CONFIG_SECRET`),
//! the sample SQS events of `events/change-worker` applied to a simulated portal's
//! mirror in a throw-away database.

use std::path::Path;
use std::time::Duration;

use b24_sim::SimConfig;
use b24_testkit::TestDb;
use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::{Invocation, RuntimeApi};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/change-worker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn failed_ids(invocation: &Invocation) -> Vec<&str> {
    invocation.response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not a partial-batch answer: {:?}", invocation.response))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect()
}

/// The IDs of `demo`'s live mirror rows in `table`, ascending.
async fn mirror(db: &TestDb, table: &str) -> Vec<i64> {
    let sql = format!(
        "SELECT id FROM b24.{table} WHERE portal = 'demo' AND deleted_at IS NULL ORDER BY id"
    );
    let rows = db.client().await.query(&sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn applies_the_sample_batches_and_logs_json_with_the_request_id() {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 10,
        contacts: 10,
        leads: 10,
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
    let runtime = RuntimeApi::start("change-worker").await;
    let mut env = lambda_environment("change-worker", 256, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    env.push(("B24SYNC_MIGRATE_ON_START".into(), "true".into()));
    let function = FunctionProcess::start(Path::new(env!("CARGO_BIN_EXE_change-worker")), &env);

    runtime.wait_ready(WAIT).await.unwrap();
    let updates = runtime.invoke(&sample("updates.json"), WAIT).await.unwrap();
    assert!(failed_ids(&updates).is_empty(), "{:?}", updates.response);
    assert_eq!(mirror(&db, "deal").await, [1, 2]);
    assert_eq!(mirror(&db, "contact").await, [3]);
    let poisoned = runtime
        .invoke(&sample("poisoned.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        failed_ids(&poisoned),
        [
            "9a0f61b2-0007-4c1e-8f5e-3f4a2b7c0007",
            "9a0f61b2-0008-4c1e-8f5e-3f4a2b7c0008"
        ]
    );
    assert_eq!(mirror(&db, "lead").await, [4]);

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    let lines = output.json_lines();
    let batches: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some("change batch"))
        .map(request_id)
        .collect();
    assert_eq!(
        batches,
        [
            Some(updates.request_id.as_str()),
            Some(poisoned.request_id.as_str())
        ],
        "{lines:#?}"
    );
    let secret_code = "simsecret0123456";
    assert!(!output.stdout.contains(secret_code) && !output.stderr.contains(secret_code));
}
