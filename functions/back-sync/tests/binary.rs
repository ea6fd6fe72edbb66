//! The binary as Lambda runs it: started against a local stand-in of the Lambda Runtime
//! API, its configuration in moto's Secrets Manager, the sample input of
//! `events/back-sync` pushing an edit made in SQL to a simulated portal.

use std::path::Path;
use std::time::Duration;

use b24_sim::SimConfig;
use b24_sync::SyncService;
use b24_testkit::TestDb;
use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::RuntimeApi;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_edit_in_sql_reaches_the_portal_and_the_log_names_the_request() {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = json!({
        "database": {"url": db.url},
        "portals": {"demo": {"webhook_url": sim.webhook_url(), "entities": ["deal"], "back_sync": {"enabled": true}}},
    });
    let service = SyncService::connect(
        b24_config::Config::from_json_str(&config.to_string()).unwrap(),
        true,
    )
    .await
    .unwrap();
    let request = serde_json::from_value(json!({"portal": "demo", "mode": "full"})).unwrap();
    service.handle(&request, None).await.unwrap();
    db.client()
        .await
        .execute(
            "UPDATE b24.deal__demo SET title = 'from the function' WHERE id = 4",
            &[],
        )
        .await
        .unwrap();

    let moto = MotoServer::start();
    let secret = moto
        .create_secret("b24sync/config", &config.to_string())
        .await;
    let runtime = RuntimeApi::start("back-sync").await;
    let mut env = lambda_environment("back-sync", 256, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    let function = FunctionProcess::start(Path::new(env!("CARGO_BIN_EXE_back-sync")), &env);
    runtime.wait_ready(WAIT).await.unwrap();
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/back-sync/one-portal.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let answer = runtime.invoke(&sample, WAIT).await.unwrap();
    assert_eq!(
        answer.response["pushes"][0]["updated"], 1,
        "{:?}",
        answer.response
    );
    let deals = sim.dump(b24_sim::Entity::Deal).await.unwrap();
    assert_eq!(
        deals.iter().find(|d| d["ID"] == "4").unwrap()["TITLE"],
        "from the function"
    );

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    let lines = output.json_lines();
    let drained: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some("outbox drained"))
        .map(request_id)
        .collect();
    assert_eq!(drained, [Some(answer.request_id.as_str())], "{lines:#?}");
    assert!(
        !output.stdout.contains("simsecret0123456") && !output.stderr.contains("simsecret0123456")
    );
}
