//! The whole pipeline on one machine: a simulated portal posting its events to the local
//! stack's function URL, the intake queueing them, the worker applying them to a
//! throw-away database, the scheduled sync invoked through the Invoke API and through a
//! schedule, a dead-letter list for what cannot be applied, and a robot on the portal
//! forwarding a deal to a second portal through the deal robot's URL and the forwarder.

use std::time::{Duration, Instant};

use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_domain::ports::ChangeQueue;
use b24_local::{LocalOptions, RunningLocal, parse_schedule};
use b24_sim::{AppRobotCall, EventTarget, MutateRequest, RunningSim, SimConfig};
use b24_sync::{SyncService, Syncer};
use b24_testkit::TestDb;
use serde_json::{Value, json};

const TOKEN: &str = "local-app-token";

/// A portal with 300 deals and 100 contacts whose events go to a local stack syncing
/// into a fresh database. Keep all three: dropping one stops it.
async fn pipeline(options: LocalOptions) -> (TestDb, RunningSim, RunningLocal) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let intake = format!(
        "http://{}/lambda-url/webhook-intake/",
        listener.local_addr().unwrap()
    );
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 300,
        contacts: 100,
        events: Some(EventTarget {
            url: intake,
            application_token: TOKEN.into(),
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {"demo": {
            "webhook_url": sim.webhook_url(),
            "entities": ["deal", "contact"],
            "domain": "sim.bitrix24.test",
            "application_tokens": [TOKEN],
            "back_sync": {"enabled": true},
        }},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let local = b24_local::start(config, options, listener).await.unwrap();
    (db, sim, local)
}

fn quick() -> LocalOptions {
    LocalOptions {
        batch_window: Duration::from_millis(200),
        redelivery_delay: Duration::from_millis(200),
        ..LocalOptions::default()
    }
}

async fn post(url: &str, body: &Value) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let function_error = response
        .headers()
        .get("x-amz-function-error")
        .map(|v| v.to_str().unwrap().to_string());
    (status, function_error, response.json().await.unwrap())
}

async fn local_status(local: &RunningLocal) -> Value {
    reqwest::get(format!("{}/_local/status", local.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the change queue has taken `sent` messages and none is waiting or in
/// flight.
async fn drained(local: &RunningLocal, sent: u64) -> Value {
    drained_queue(local, "queue", sent).await
}

/// [`drained`] for the queue under `key` of the status page.
async fn drained_queue(local: &RunningLocal, key: &str, sent: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = local_status(local).await;
        let queue = &status[key];
        if queue["sent"].as_u64() >= Some(sent) && queue["waiting"] == 0 && queue["in_flight"] == 0
        {
            return status;
        }
        assert!(Instant::now() < deadline, "not drained: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The mirror equals the portal, row by row.
async fn assert_in_sync(sim: &RunningSim, db: &TestDb, entity: Entity) {
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {"demo": {"webhook_url": sim.webhook_url(), "entities": ["deal", "contact"]}},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let service = SyncService::connect(config, false).await.unwrap();
    let client = service.client("demo").await.unwrap();
    let syncer = Syncer {
        client: &client,
        store: service.store(),
        portal: "demo",
        product_rows: &[],
    };
    let report = syncer.check(entity).await.unwrap();
    assert!(report.in_sync, "{entity}: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_changes_reach_the_mirror_through_the_intake_and_the_worker() {
    let mut options = quick();
    options.schedules = vec![parse_schedule("incremental=1h").unwrap()];
    let (db, sim, local) = pipeline(options).await;

    // The initial full sync, invoked as `cargo lambda invoke` or `aws lambda invoke` would.
    let invoke = format!(
        "{}/2015-03-31/functions/sync-scheduled/invocations",
        local.url()
    );
    let (code, error, answer) = post(&invoke, &json!({"portal": "demo", "mode": "full"})).await;
    assert_eq!((code, error), (200, None), "{answer}");
    assert_eq!(answer["runs"][0]["rows_inserted"], 300, "{answer}");
    assert_eq!(answer["runs"][1]["rows_inserted"], 100, "{answer}");

    // Live changes: every one is an event posted to the intake.
    sim.reset_stats().await.unwrap();
    for (entity, seed) in [(b24_sim::Entity::Deal, 3), (b24_sim::Entity::Contact, 4)] {
        sim.mutate(&MutateRequest {
            entity,
            seed,
            adds: 10,
            updates: 30,
            deletes: 5,
        })
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().await.unwrap().events_sent < 90 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            sim.stats().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.stats().await.unwrap().events_failed, 0);
    let status = drained(&local, 90).await;
    assert_eq!(status["queue"]["deleted"], 90, "{status}");
    assert_eq!(status["queue"]["dead_letter"], 0, "{status}");
    assert_eq!(status["worker"]["failed_messages"], 0, "{status}");
    // Batched as the event source mapping does: far fewer invocations than events.
    assert!(
        status["worker"]["batches"].as_u64().unwrap() < 10,
        "{status}"
    );
    assert_in_sync(&sim, &db, Entity::Deal).await;
    assert_in_sync(&sim, &db, Entity::Contact).await;

    // The schedule fired by hand runs the incremental pass with its input, and is
    // recorded on the status page.
    let (code, _, answer) = post(
        &format!("{}/_local/schedules/incremental-demo", local.url()),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["runs"][0]["mode"], "incremental", "{answer}");
    let status = local_status(&local).await;
    let schedule = &status["schedules"][0];
    assert_eq!(schedule["name"], "incremental-demo");
    assert_eq!(
        schedule["input"],
        json!({"portal": "demo", "mode": "incremental"})
    );
    assert_eq!(schedule["runs"]["runs"], 1, "{status}");
    let (code, _, answer) = post(
        &format!("{}/_local/schedules/hourly-demo", local.url()),
        &json!({}),
    )
    .await;
    assert_eq!(code, 404);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("incremental-demo")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_applied_ends_in_the_dead_letter_list() {
    let mut options = quick();
    options.max_receives = 2;
    let (_db, _sim, local) = pipeline(options).await;
    let stray = ChangeMessage {
        portal: "elsewhere".into(),
        entity: Entity::Deal,
        id: 5,
        action: ChangeAction::Update,
        event_time: None,
        received_at: chrono::Utc::now(),
    };
    local.state.change_queue().send(&[stray]).await.unwrap();
    let status = drained(&local, 1).await;
    assert_eq!(status["queue"]["dead_letter"], 1, "{status}");
    assert_eq!(status["queue"]["redelivered"], 1, "{status}");
    assert_eq!(status["worker"]["failed_messages"], 2, "{status}");
    let dead: Value = reqwest::get(format!("{}/_local/dead-letters", local.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["changes"][0]["portal"], "elsewhere", "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_reports_errors_as_lambda_does() {
    let (_db, _sim, local) = pipeline(quick()).await;
    let invoke = |name: &str| format!("{}/2015-03-31/functions/{name}/invocations", local.url());
    let (code, error, answer) = post(
        &invoke("sync-scheduled"),
        &json!({"portal": "demo", "mode": "hourly"}),
    )
    .await;
    assert_eq!((code, error.as_deref()), (200, Some("Unhandled")));
    assert_eq!(answer["errorType"], "BadInput");
    assert!(
        answer["errorMessage"].as_str().unwrap().contains("hourly"),
        "{answer}"
    );

    for function in ["change-worker", "deal-forwarder"] {
        let (code, error, answer) = post(&invoke(function), &json!({"Records": 5})).await;
        assert_eq!(
            (code, error.as_deref()),
            (200, Some("Unhandled")),
            "{function}: {answer}"
        );
        assert_eq!(answer["errorType"], "BadInput", "{function}");
    }

    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/change-worker/updates.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let (code, error, answer) = post(&invoke("change-worker"), &event).await;
    assert_eq!((code, error), (200, None), "{answer}");
    assert!(answer["batchItemFailures"].is_array(), "{answer}");

    let (code, _, answer) = post(&invoke("webhook-intake"), &json!({})).await;
    assert_eq!(code, 404);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("/lambda-url/webhook-intake/")
    );
}

const ROUTE_SECRET: &str = "Local-Route-Secret_0123456789";
const CENTRAL_DOMAIN: &str = "central.sim.test";

/// The stack over two portals: `demo` with 20 deals and an installed application, and
/// `central`, empty, receiving deals along route `to-central`.
async fn forwarding() -> (TestDb, RunningSim, RunningSim, RunningLocal) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db = TestDb::create().await;
    let source = b24_sim::start(SimConfig {
        deals: 20,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let target = b24_sim::start(SimConfig {
        domain: CENTRAL_DOMAIN.into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {
            "demo": {
                "webhook_url": source.webhook_url(),
                "domain": "sim.bitrix24.test",
                "application_tokens": [source.application().application_token],
            },
            "central": {"webhook_url": target.webhook_url(), "domain": CENTRAL_DOMAIN},
        },
        "routes": {"to-central": {
            "source": "demo", "target": "central", "secret": ROUTE_SECRET,
            "fields": {"TITLE": "TITLE", "OPPORTUNITY": "OPPORTUNITY", "CURRENCY_ID": "CURRENCY_ID"},
            "wait_for_reply": true,
            "return_values": {"targetDealId": "target_deal_id"},
        }},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let local = b24_local::start(config, quick(), listener).await.unwrap();
    (db, source, target, local)
}

/// The central portal's deals that came from demo deal `deal_id`.
async fn copies_of(target: &RunningSim, deal_id: u64) -> Vec<serde_json::Map<String, Value>> {
    target
        .dump(b24_sim::Entity::Deal)
        .await
        .unwrap()
        .into_iter()
        .filter(|deal| deal["ORIGIN_ID"] == json!(deal_id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_on_the_portal_forwards_a_deal_once_through_the_robot_url_and_the_forwarder() {
    let (_db, source, target, local) = forwarding().await;
    let source_deal = source
        .dump(b24_sim::Entity::Deal)
        .await
        .unwrap()
        .into_iter()
        .find(|deal| deal["ID"] == "5")
        .unwrap();

    // The built-in Webhook robot: the route and its secret in the URL the user typed.
    let url = format!(
        "{}?route=to-central&secret={ROUTE_SECRET}",
        local.robot_url()
    );
    let hit = source.fire_webhook_robot(&url, 5).await.unwrap();
    assert_eq!(hit.status, Some(202), "{hit:?}");
    let status = drained_queue(&local, "forward_queue", 1).await;
    assert_eq!(status["forward_queue"]["deleted"], 1, "{status}");
    assert_eq!(status["forwarder"]["failed_messages"], 0, "{status}");
    let copies = copies_of(&target, 5).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["TITLE"], source_deal["TITLE"]);
    assert_eq!(copies[0]["ORIGINATOR_ID"], "b24sync:sim.bitrix24.test");

    // The application robot on the same deal, waiting for its reply: the deal made
    // before is updated, and the robot hears which one it is.
    let hit = source
        .fire_app_robot(&AppRobotCall {
            url: Some(local.robot_url()),
            deal_id: 5,
            code: "to-central".into(),
            properties: Default::default(),
            use_subscription: Some(true),
        })
        .await
        .unwrap();
    assert_eq!(hit.status, Some(202), "{hit:?}");
    let status = drained_queue(&local, "forward_queue", 2).await;
    assert_eq!(status["forward_queue"]["deleted"], 2, "{status}");
    let copies = copies_of(&target, 5).await;
    assert_eq!(copies.len(), 1, "a re-run updates: {copies:?}");
    let replies = source.workflow_replies().await.unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0]
            .to_string()
            .contains(copies[0]["ID"].as_str().unwrap()),
        "{replies:?}"
    );
    assert_eq!(source.timeline_comments().await.unwrap().len(), 2);

    // A wrong secret is refused at the door, and nothing is queued.
    let wrong = format!(
        "{}?route=to-central&secret=not-the-secret-at-all",
        local.robot_url()
    );
    let hit = source.fire_webhook_robot(&wrong, 5).await.unwrap();
    assert_eq!(hit.status, Some(401), "{hit:?}");
    assert_eq!(local_status(&local).await["forward_queue"]["sent"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_that_cannot_succeed_ends_in_the_dead_letter_list() {
    let (_db, _source, target, local) = forwarding().await;
    // What the Webhook robot would send for a deal the portal does not have.
    let response = reqwest::Client::new()
        .post(format!(
            "{}?route=to-central&secret={ROUTE_SECRET}",
            local.robot_url()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_99999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = local_status(&local).await;
        if status["forward_queue"]["dead_letter"] == 1 {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every delivery up to max_receives failed, and nothing reached the target.
    assert_eq!(status["forwarder"]["failed_messages"], 5, "{status}");
    assert!(copies_of(&target, 99999).await.is_empty());
    let dead: Value = reqwest::get(format!("{}/_local/dead-letters", local.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["forwards"][0]["deal_id"], 99999, "{dead}");
    assert_eq!(dead["forwards"][0]["route"], "to-central", "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_postgresql_reaches_the_portal_through_back_sync() {
    let mut options = quick();
    options.back_sync_every = Some(Duration::from_secs(3600));
    let (db, sim, local) = pipeline(options).await;
    let invoke = |name: &str| format!("{}/2015-03-31/functions/{name}/invocations", local.url());
    let (code, _, answer) = post(
        &invoke("sync-scheduled"),
        &json!({"portal": "demo", "mode": "full"}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let c = db.client().await;
    c.execute(
        "UPDATE b24.deal__demo SET title = 'edited in SQL' WHERE id = 5",
        &[],
    )
    .await
    .unwrap();
    // The schedule fired now, as EventBridge Scheduler would every minute.
    let (code, _, answer) = post(
        &format!("{}/_local/schedules/back-sync", local.url()),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["pushes"][0]["updated"], 1, "{answer}");
    let deals = sim.dump(b24_sim::Entity::Deal).await.unwrap();
    assert_eq!(
        deals.iter().find(|d| d["ID"] == "5").unwrap()["TITLE"],
        "edited in SQL"
    );
    // And through the Invoke API: nothing left.
    let (code, error, answer) = post(&invoke("back-sync"), &json!({"portal": "demo"})).await;
    assert_eq!((code, error), (200, None), "{answer}");
    assert_eq!(answer["pushes"], json!([]), "{answer}");
}
