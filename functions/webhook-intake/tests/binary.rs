//! The release-shaped binary as Lambda runs it: started against a local stand-in of the
//! Lambda Runtime API, its configuration in moto's Secrets Manager (named by
//! `B24SYNC_CONFIG_SECRET`, as the SAM template sets it), its queue in moto's SQS.

use std::path::Path;
use std::time::Duration;

use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::RuntimeApi;
use serde_json::Value;

/// The token of `events/webhook-intake/*.json`.
const APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";
/// The portal's webhook code: in the secret, never in any output.
const WEBHOOK_CODE: &str = "w3bh00kc0de5ecre7";
const WAIT: Duration = Duration::from_secs(30);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_webhook-intake"))
}

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/webhook-intake/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The function's environment: Lambda's variables, moto for the SDK, the secret's name
/// and the queue.
fn environment(
    runtime: &RuntimeApi,
    moto: &MotoServer,
    secret: &str,
    queue_url: &str,
) -> Vec<(String, String)> {
    let mut env = lambda_environment("webhook-intake", 128, runtime);
    env.extend(moto_environment(moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret.into()));
    env.push(("CHANGE_QUEUE_URL".into(), queue_url.into()));
    env
}

#[tokio::test]
async fn accepts_a_sample_event_onto_the_queue_and_logs_json_with_the_request_id() {
    let moto = MotoServer::start();
    let queue_url = moto.create_queue("b24sync-changes").await;
    let config = format!(
        r#"{{"portals": {{"demo": {{"webhook_url": "https://some-domain.bitrix24.com/rest/1/{WEBHOOK_CODE}/",
            "application_tokens": ["{APP_TOKEN}"]}}}}}}"#
    );
    let secret = moto.create_secret("b24sync/config", &config).await;
    let runtime = RuntimeApi::start("webhook-intake").await;
    let function =
        FunctionProcess::start(binary(), &environment(&runtime, &moto, &secret, &queue_url));

    let ready = runtime.wait_ready(WAIT).await.unwrap();
    assert!(ready > function.started_at());
    assert_eq!(runtime.init_error(), None);
    let accepted = runtime
        .invoke(&sample("form-event.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        accepted.response["statusCode"], 202,
        "{:?}",
        accepted.response
    );
    let mut refused_event = sample("form-event.json");
    refused_event["body"] = refused_event["body"]
        .as_str()
        .unwrap()
        .replace(APP_TOKEN, "0123456789abcdef0123456789abcdef")
        .into();
    let refused = runtime.invoke(&refused_event, WAIT).await.unwrap();
    assert_eq!(
        refused.response["statusCode"], 401,
        "{:?}",
        refused.response
    );

    let bodies = moto.receive_bodies(&queue_url).await;
    let messages: Vec<ChangeMessage> = bodies
        .iter()
        .map(|b| ChangeMessage::from_json(b).unwrap())
        .collect();
    assert_eq!(messages.len(), 1, "{bodies:?}");
    assert_eq!(
        (
            messages[0].portal.as_str(),
            messages[0].entity,
            messages[0].id,
            messages[0].action
        ),
        ("demo", Entity::Deal, 759, ChangeAction::Update)
    );

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    // Every line is JSON (log lines and metrics); each invocation's log line carries its
    // request ID.
    let lines = output.json_lines();
    let logged_by = |message: &str| {
        lines
            .iter()
            .find(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some(message))
            .and_then(request_id)
    };
    assert_eq!(
        logged_by("event queued"),
        Some(accepted.request_id.as_str()),
        "{lines:#?}"
    );
    assert_eq!(
        logged_by("event refused"),
        Some(refused.request_id.as_str()),
        "{lines:#?}"
    );
    assert!(!output.stdout.contains(WEBHOOK_CODE) && !output.stderr.contains(WEBHOOK_CODE));
}

/// A configuration that is missing or bad stops the function before it asks for an
/// event; what it reports names the problem and never the webhook code.
///
/// The functions' `main` returns the error before the runtime starts, so nothing is
/// posted to `/runtime/init/error` today (Lambda records `Runtime.ExitError` with the
/// process's output); an init error, once reported, must say the same.
#[tokio::test]
async fn a_missing_or_bad_configuration_stops_the_start_naming_the_problem_not_the_secret() {
    let moto = MotoServer::start();
    let queue_url = moto.create_queue("b24sync-changes").await;
    let bad = format!(
        r#"{{"portals": {{"demo": {{"webhook_url": "https://some-domain.bitrix24.com/rest/1/{WEBHOOK_CODE}/",
            "application_tokens": ["{APP_TOKEN}"], "entitys": ["deal"]}}}}}}"#
    );
    let secret = moto.create_secret("b24sync/bad", &bad).await;
    let cases = [
        (Some(secret), "portals.demo.entitys"),
        (None, "B24SYNC_CONFIG"),
    ];
    for (secret, problem) in cases {
        let runtime = RuntimeApi::start("webhook-intake").await;
        let mut env = lambda_environment("webhook-intake", 128, &runtime);
        env.extend(moto_environment(&moto));
        env.push(("CHANGE_QUEUE_URL".into(), queue_url.clone()));
        if let Some(secret) = &secret {
            env.push(("B24SYNC_CONFIG_SECRET".into(), secret.clone()));
        }
        let mut function = FunctionProcess::start(binary(), &env);
        let started = std::time::Instant::now();
        let exit = loop {
            if let Some(exit) = function.exit_status() {
                break exit;
            }
            assert!(
                started.elapsed() < WAIT,
                "the function kept running ({problem})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!exit.success(), "{problem}: {exit}");
        assert_eq!(runtime.ready_at(), None, "{problem}: it asked for an event");
        let output = function.stop();
        let report = runtime
            .init_error()
            .unwrap_or_else(|| panic!("{problem}: no init error reported: {output:?}"));
        let reported = format!("{} {}", report.error_type, report.error_message);
        assert!(reported.contains(problem), "{problem}: {reported}");
        assert!(reported.contains("Configuration"), "{problem}: {reported}");
        assert!(
            !output.stdout.contains(WEBHOOK_CODE) && !reported.contains(WEBHOOK_CODE),
            "{problem}: {output:?}"
        );
    }
}
