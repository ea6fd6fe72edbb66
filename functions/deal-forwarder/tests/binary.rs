//! The binary as Lambda runs it: started against a local stand-in of the Lambda Runtime
//! API, its configuration in moto's Secrets Manager (named by `B24SYNC_CONFIG_SECRET`),
//! the sample SQS events of `events/deal-forwarder` forwarding deals between two
//! simulated portals with the ledger in a throw-away database.

mod common;

use std::path::Path;
use std::time::Duration;

use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::{Invocation, RuntimeApi};
use common::Portals;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/deal-forwarder/{name}",
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

#[tokio::test]
async fn forwards_the_sample_jobs_and_fails_only_the_poisoned_ones() {
    let portals = Portals::start(5).await;
    let moto = MotoServer::start();
    // The samples' route.
    let mut config = portals.document();
    config["routes"] = json!({
        "partner-to-central": {
            "source": "partner", "target": "central", "secret": "f0rw4rd-s3cr3t-9c2e7a51d84b",
            "fields": {"TITLE": "TITLE"},
        },
    });
    let secret = moto
        .create_secret("b24sync/config", &config.to_string())
        .await;
    let runtime = RuntimeApi::start("deal-forwarder").await;
    let mut env = lambda_environment("deal-forwarder", 256, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    env.push(("B24SYNC_MIGRATE_ON_START".into(), "true".into()));
    env.push(("FORWARD_MAX_RECEIVES".into(), "5".into()));
    let function = FunctionProcess::start(Path::new(env!("CARGO_BIN_EXE_deal-forwarder")), &env);

    runtime.wait_ready(WAIT).await.unwrap();
    let jobs = runtime.invoke(&sample("jobs.json"), WAIT).await.unwrap();
    assert!(failed_ids(&jobs).is_empty(), "{:?}", jobs.response);
    for deal_id in [1, 2] {
        assert_eq!(portals.copies_of(deal_id).await.len(), 1, "deal {deal_id}");
    }
    let poisoned = runtime
        .invoke(&sample("poisoned.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        failed_ids(&poisoned),
        [
            "5d0c7e3a-0004-4f1b-9a2e-7c1d2b3a0004",
            "5d0c7e3a-0005-4f1b-9a2e-7c1d2b3a0005",
            "5d0c7e3a-0006-4f1b-9a2e-7c1d2b3a0006",
        ]
    );
    assert_eq!(portals.copies_of(3).await.len(), 1);
    // Deal 4242 does not exist: failed finally, its responsible user told once.
    assert_eq!(portals.source.notifications().await.unwrap().len(), 1);

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    let lines = output.json_lines();
    let batches: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some("forward batch"))
        .map(request_id)
        .collect();
    assert_eq!(
        batches,
        [
            Some(jobs.request_id.as_str()),
            Some(poisoned.request_id.as_str())
        ],
        "{lines:#?}"
    );
    let forwards = lines.iter().filter(|l| l.get("Forwards").is_some()).count();
    assert_eq!(forwards, 3, "{lines:#?}");
    let secret_code = "simsecret0123456";
    assert!(!output.stdout.contains(secret_code) && !output.stderr.contains(secret_code));
}
