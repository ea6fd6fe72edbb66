//! The release-shaped binary as Lambda runs it: started against a local stand-in of the
//! Lambda Runtime API, its configuration in moto's Secrets Manager (named by
//! `B24SYNC_CONFIG_SECRET`), its forward queue in moto's SQS (`FORWARD_QUEUE_URL`).

mod common;

use std::path::Path;
use std::time::Duration;

use b24_domain::forward::job::ForwardJob;
use b24_testkit::function_process::{
    FunctionProcess, lambda_environment, moto_environment, request_id,
};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::RuntimeApi;
use common::{EVENT_TOKEN_PART, ROUTE, SECRET, WEBHOOK_CODE, config_json, sample_event};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_deal-robot"))
}

#[tokio::test]
async fn accepts_both_samples_onto_the_forward_queue_and_logs_json_with_the_request_id() {
    let moto = MotoServer::start();
    let queue_url = moto.create_queue("b24sync-forwards").await;
    let secret = moto.create_secret("b24sync/config", &config_json()).await;
    let runtime = RuntimeApi::start("deal-robot").await;
    let mut env = lambda_environment("deal-robot", 128, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    env.push(("FORWARD_QUEUE_URL".into(), queue_url.clone()));
    let function = FunctionProcess::start(binary(), &env);

    runtime.wait_ready(WAIT).await.unwrap();
    assert_eq!(runtime.init_error(), None);
    let webhook = runtime
        .invoke(&sample_event("webhook-robot.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        webhook.response["statusCode"], 202,
        "{:?}",
        webhook.response
    );
    let application = runtime
        .invoke(&sample_event("application-robot.json"), WAIT)
        .await
        .unwrap();
    assert_eq!(
        application.response["statusCode"], 202,
        "{:?}",
        application.response
    );
    let mut wrong_secret = sample_event("webhook-robot.json");
    wrong_secret["rawQueryString"] = format!("route={ROUTE}&secret=wrong-s3cr3t-0123456789").into();
    let refused = runtime.invoke(&wrong_secret, WAIT).await.unwrap();
    assert_eq!(
        refused.response["statusCode"], 401,
        "{:?}",
        refused.response
    );

    let bodies = moto.receive_bodies(&queue_url).await;
    let mut jobs: Vec<ForwardJob> = bodies
        .iter()
        .map(|body| ForwardJob::from_json(body).unwrap())
        .collect();
    jobs.sort_by_key(|job| job.deal_id);
    let summary: Vec<_> = jobs
        .iter()
        .map(|job| {
            (
                job.route.as_str(),
                job.source.as_str(),
                job.deal_id,
                job.waits_for_reply,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (ROUTE, "partner", 123, false),
            (ROUTE, "partner", 457, true)
        ],
        "{bodies:?}"
    );
    // The forwarder needs the event token to answer the waiting robot: it travels on the queue.
    assert!(
        jobs[1]
            .event_token
            .as_deref()
            .is_some_and(|token| token.contains(EVENT_TOKEN_PART))
    );

    let output = function.stop();
    assert!(output.exit.is_none(), "the function exited: {output:?}");
    let lines = output.json_lines();
    let logged_by = |message: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l.pointer("/fields/message").and_then(Value::as_str) == Some(message))
            .filter_map(request_id)
            .collect()
    };
    assert_eq!(
        logged_by("forward job queued"),
        [webhook.request_id.as_str(), application.request_id.as_str()],
        "{lines:#?}"
    );
    assert_eq!(
        logged_by("robot call refused"),
        [refused.request_id.as_str()],
        "{lines:#?}"
    );
    // Neither the route's secret, the event token nor the portals' webhook code is output.
    for secret in [SECRET, EVENT_TOKEN_PART, WEBHOOK_CODE] {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "{secret} in {output:?}"
        );
    }
}

/// Without `FORWARD_QUEUE_URL` the function does not start, and says which variable.
#[tokio::test]
async fn a_missing_queue_url_stops_the_start_naming_the_variable() {
    let moto = MotoServer::start();
    let secret = moto.create_secret("b24sync/config", &config_json()).await;
    let runtime = RuntimeApi::start("deal-robot").await;
    let mut env = lambda_environment("deal-robot", 128, &runtime);
    env.extend(moto_environment(&moto));
    env.push(("B24SYNC_CONFIG_SECRET".into(), secret));
    let mut function = FunctionProcess::start(binary(), &env);
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = function.exit_status() {
            break exit;
        }
        assert!(started.elapsed() < WAIT, "the function kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!exit.success(), "{exit}");
    assert_eq!(runtime.ready_at(), None, "it asked for an event");
    let output = function.stop();
    let report = runtime
        .init_error()
        .unwrap_or_else(|| panic!("no init error reported: {output:?}"));
    assert!(
        report
            .error_message
            .contains("FORWARD_QUEUE_URL is not set"),
        "{report:?}"
    );
}
