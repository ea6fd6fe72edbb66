//! `b24sync forward` and `b24sync robot-register` as an operator runs them: two
//! simulated portals (the source in its application context too), a throw-away ledger
//! database and the configuration in `$B24SYNC_CONFIG`.

mod common;

use std::process::Output;

use b24_sim::{Entity, LimitConfig, RunningSim, SimConfig};
use b24_testkit::TestDb;
use common::{assert_usage_errors, b24sync, stderr};
use serde_json::{Value, json};

const SECRET: &str = "Route-Secret_0123456789";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The only stdout line, as JSON.
fn line(output: &Output) -> Value {
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}\n{}", stderr(output));
    serde_json::from_str(lines[0]).unwrap()
}

async fn sim(domain: &str, deals: usize) -> RunningSim {
    b24_sim::start(SimConfig {
        deals,
        domain: domain.to_string(),
        limits: LimitConfig {
            enabled: false,
            ..LimitConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// Route `plain` (titles from `partner` to `central`) and route `waiting` (an
/// application robot that waits for the target deal's ID and URL) with `target` as
/// the central portal's webhook.
fn document(db: Option<&TestDb>, source: &RunningSim, target_webhook: &str) -> String {
    let mut document = json!({
        "portals": {
            "partner": {
                "webhook_url": source.webhook_url(), "domain": "partner.sim.test",
                "application_tokens": [source.application().application_token],
            },
            "central": {"webhook_url": target_webhook, "domain": "central.sim.test"},
        },
        "routes": {
            "plain": {"source": "partner", "target": "central", "secret": SECRET, "fields": {"TITLE": "TITLE"}},
            "waiting": {
                "source": "partner", "target": "central", "robot_code": "forward_to_central",
                "fields": {"TITLE": "TITLE"}, "wait_for_reply": true,
                "return_values": {"targetDealId": "target_deal_id", "targetDealUrl": "target_deal_url"},
            },
        },
    });
    if let Some(db) = db {
        document["database"] = json!({"url": db.url, "schema": "b24"});
    }
    document.to_string()
}

#[tokio::test]
async fn forward_adds_then_updates_and_a_missing_deal_exits_6() {
    let source = sim("partner.sim.test", 3).await;
    let target = sim("central.sim.test", 0).await;
    let db = TestDb::create().await;
    let config = document(Some(&db), &source, &target.webhook_url());
    let env = [("B24SYNC_CONFIG", config.as_str())];

    let first = b24sync(
        &["forward", "--route", "plain", "--deal", "2", "--migrate"],
        &env,
    )
    .await;
    assert!(first.status.success(), "{}", stderr(&first));
    let outcome = line(&first);
    assert_eq!(outcome["created"], true, "{outcome}");
    assert_eq!(outcome["source_deal_id"], 2);
    let target_deal_id = outcome["target_deal_id"].as_u64().unwrap();
    assert!(
        outcome["target_deal_url"]
            .as_str()
            .unwrap()
            .starts_with("https://central.sim.test/crm/deal/details/"),
        "{outcome}"
    );

    let again = b24sync(&["forward", "--route", "plain", "--deal", "2"], &env).await;
    assert!(again.status.success(), "{}", stderr(&again));
    let outcome = line(&again);
    assert_eq!(outcome["created"], false, "{outcome}");
    assert_eq!(outcome["target_deal_id"].as_u64(), Some(target_deal_id));
    assert_eq!(target.dump(Entity::Deal).await.unwrap().len(), 1);

    let missing = b24sync(&["forward", "--route", "plain", "--deal", "4242"], &env).await;
    assert_eq!(missing.status.code(), Some(6), "{}", stderr(&missing));
    let failure = line(&missing);
    assert_eq!(failure["kind"], "deal_not_found", "{failure}");
    assert_eq!(failure["permanent"], true);
    assert!(failure["error"].as_str().unwrap().contains("4242"));
    assert!(
        stderr(&missing).contains("deal 4242"),
        "{}",
        stderr(&missing)
    );

    let unknown = b24sync(&["forward", "--route", "nope", "--deal", "1"], &env).await;
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("unknown route \"nope\""),
        "{}",
        stderr(&unknown)
    );
    let zero = b24sync(&["forward", "--route", "plain", "--deal", "0"], &env).await;
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}

#[tokio::test]
async fn forward_exits_3_on_a_refused_webhook_and_4_on_an_unreachable_portal() {
    let source = sim("partner.sim.test", 1).await;
    let target = sim("central.sim.test", 0).await;
    let db = TestDb::create().await;
    let wrong = target
        .webhook_url()
        .replace("simsecret0123456", "notthesecret4242");
    let config = document(Some(&db), &source, &wrong);
    let args = ["forward", "--route", "plain", "--deal", "1", "--migrate"];
    let refused = b24sync(&args, &[("B24SYNC_CONFIG", &config)]).await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("authorization failed"),
        "{}",
        stderr(&refused)
    );
    for text in [stderr(&refused), stdout(&refused)] {
        assert!(!text.contains("notthesecret4242"), "{text}");
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = document(
        Some(&db),
        &source,
        &format!("http://127.0.0.1:{port}/rest/1/hidden0secret1/"),
    );
    let unreachable = b24sync(
        &[
            "forward",
            "--route",
            "plain",
            "--deal",
            "1",
            "--max-retries",
            "0",
        ],
        &[("B24SYNC_CONFIG", &config)],
    )
    .await;
    assert_eq!(
        unreachable.status.code(),
        Some(4),
        "{}",
        stderr(&unreachable)
    );
    assert!(!stderr(&unreachable).contains("hidden0secret1"));
}

#[tokio::test]
async fn robot_register_prints_the_parameters_and_the_webhook_url_only_on_request() {
    let source = sim("partner.sim.test", 0).await;
    let config = document(None, &source, &source.webhook_url());
    let env = [("B24SYNC_CONFIG", config.as_str())];
    let handler = "https://abc123.lambda-url.eu-central-1.on.aws/";

    let printed = b24sync(
        &["robot-register", "--route", "waiting", "--handler", handler],
        &env,
    )
    .await;
    assert!(printed.status.success(), "{}", stderr(&printed));
    let answer = line(&printed);
    assert_eq!(
        answer["bizproc.robot.add"],
        json!({
            "CODE": "forward_to_central",
            "HANDLER": handler,
            "NAME": "Forward the deal to central (route waiting)",
            "USE_SUBSCRIPTION": "Y",
            "RETURN_PROPERTIES": {
                "targetDealId": {"Name": "Target deal ID", "Type": "int"},
                "targetDealUrl": {"Name": "Target deal URL", "Type": "string"},
            },
            "DOCUMENT_TYPE": ["crm", "CCrmDocumentDeal", "DEAL"],
        })
    );
    assert_eq!(answer["webhook_robot_url"], Value::Null);
    assert_eq!(answer["registered"], Value::Null);

    let plain = b24sync(
        &["robot-register", "--route", "plain", "--handler", handler],
        &env,
    )
    .await;
    let answer = line(&plain);
    assert_eq!(answer["bizproc.robot.add"]["USE_SUBSCRIPTION"], "N");
    assert_eq!(answer["bizproc.robot.add"]["CODE"], "plain");
    assert!(!stdout(&plain).contains(SECRET));

    let shown = b24sync(
        &[
            "robot-register",
            "--route",
            "plain",
            "--handler",
            handler,
            "--show-secret",
        ],
        &env,
    )
    .await;
    assert_eq!(
        line(&shown)["webhook_robot_url"],
        format!("{handler}?route=plain&secret={SECRET}")
    );
    assert!(!stderr(&shown).contains(SECRET));

    // The waiting route has no secret: there is no Webhook robot URL to show.
    let no_secret = b24sync(
        &[
            "robot-register",
            "--route",
            "waiting",
            "--handler",
            handler,
            "--show-secret",
        ],
        &env,
    )
    .await;
    assert_eq!(no_secret.status.code(), Some(2), "{}", stderr(&no_secret));
    let bad_handler = b24sync(
        &[
            "robot-register",
            "--route",
            "plain",
            "--handler",
            "robot.example.com",
        ],
        &env,
    )
    .await;
    assert_eq!(
        bad_handler.status.code(),
        Some(2),
        "{}",
        stderr(&bad_handler)
    );
    assert!(stderr(&bad_handler).contains("--handler"));
}

#[tokio::test]
async fn robot_register_with_an_application_token_registers_again_after_an_update() {
    let source = sim("partner.sim.test", 0).await;
    let config = document(None, &source, &source.webhook_url());
    let endpoint = source.application_url();
    let token = source.application().access_token.clone();
    // Bitrix24 wants the handler on the application's host.
    let handler = format!("http://{}:9000/robot", source.application().handler_host);
    let register = |auth: String, handler: String| {
        let config = config.clone();
        let endpoint = endpoint.clone();
        async move {
            let args = [
                "robot-register",
                "--route",
                "waiting",
                "--handler",
                &handler,
                "--endpoint",
                &endpoint,
            ];
            b24sync(
                &args,
                &[("B24SYNC_CONFIG", &config), ("B24SYNC_APP_AUTH", &auth)],
            )
            .await
        }
    };

    let added = register(token.clone(), handler.clone()).await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(line(&added)["registered"], "added");
    let robots = source.robots().await.unwrap();
    assert_eq!(robots.len(), 1, "{robots:?}");
    assert_eq!(robots[0]["CODE"], "forward_to_central");
    assert_eq!(robots[0]["HANDLER"], handler.as_str());
    assert_eq!(robots[0]["USE_SUBSCRIPTION"], "Y");
    let returned: Vec<&String> = robots[0]["RETURN_PROPERTIES"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(returned, ["targetDealId", "targetDealUrl"]);

    // Run again without an update: the registration is updated, not duplicated.
    let again = register(token.clone(), handler.clone()).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(line(&again)["registered"], "updated");

    // Updating the application removes its robots; the command puts it back.
    assert_eq!(source.update_application().await.unwrap(), 1);
    assert!(source.robots().await.unwrap().is_empty());
    let restored = register(token.clone(), handler.clone()).await;
    assert_eq!(line(&restored)["registered"], "added");
    assert_eq!(source.robots().await.unwrap().len(), 1);

    let wrong_token = register("notthetoken0123456789".into(), handler.clone()).await;
    assert_eq!(
        wrong_token.status.code(),
        Some(3),
        "{}",
        stderr(&wrong_token)
    );
    assert!(!stderr(&wrong_token).contains("notthetoken0123456789"));
    let foreign = register(token, "https://robots.example.com/robot".into()).await;
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert!(
        stderr(&foreign).contains("ERROR_WRONG_HANDLER_URL"),
        "{}",
        stderr(&foreign)
    );
}

#[tokio::test]
async fn missing_or_bad_arguments_are_usage_errors() {
    let cases: [(&[&str], &str); 4] = [
        (&["forward", "--route", "plain"], "--deal"),
        (&["forward", "--route", "plain", "--deal", "0"], "--deal"),
        (
            &["forward", "--route", "plain", "--deal", "1"],
            "no configuration",
        ),
        (&["robot-register", "--route", "plain"], "--handler"),
    ];
    assert_usage_errors(&cases, &[]).await;
}
