//! Robots (both call styles fired from the control surface), the application context,
//! `bizproc.robot.*`, `bizproc.event.send` with issued tokens, deals found by
//! `ORIGINATOR_ID`/`ORIGIN_ID`, file fields with `fileData` uploads and downloads, and
//! `crm.status.list` labels for mapping stages between portals.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use b24_sim::{
    AppRobotCall, Entity, RunningSim, SimConfig, StatusRequest, UserFieldRequest, UserFieldType,
};
use base64::Engine;
use common::*;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// One request a robot handler received.
#[derive(Clone, Debug)]
struct Received {
    /// Path and query as sent.
    target: String,
    content_type: String,
    /// The form body's pairs in order.
    form: Vec<(String, String)>,
}

/// A robot handler on loopback that records every request and answers `status`.
struct Handler {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn handler(status: StatusCode) -> Handler {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = Arc::clone(&log);
        async move {
            let form = form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            log.lock().push(Received {
                target: uri.to_string(),
                content_type: headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                form,
            });
            status
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Handler {
        url,
        received,
        _server: server,
    }
}

impl Handler {
    fn only(&self) -> Received {
        let received = self.received.lock();
        assert_eq!(received.len(), 1, "{received:?}");
        received[0].clone()
    }
}

/// POSTs JSON to `/rest/{method}` in the application's context (`auth` = `token`).
async fn app_call(sim: &RunningSim, method: &str, token: &str, mut body: Value) -> (u16, Value) {
    body["auth"] = json!(token);
    let response = http()
        .post(format!("{}{method}", sim.application_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn as_app(sim: &RunningSim, method: &str, body: Value) -> (u16, Value) {
    let token = sim.application().access_token.clone();
    app_call(sim, method, &token, body).await
}

fn registration(code: &str, handler: &str) -> Value {
    json!({
        "CODE": code,
        "HANDLER": handler,
        "AUTH_USER_ID": 1,
        "NAME": {"en": "Forward the deal"},
        "PROPERTIES": {"route": {"Name": "Route", "Type": "string", "Required": "Y"}},
        "RETURN_PROPERTIES": {"targetDealId": {"Name": "Target deal", "Type": "int"}},
        "FILTER": {"INCLUDE": [["crm", "CCrmDocumentDeal"]]},
    })
}

#[tokio::test]
async fn webhook_robot_posts_only_document_id_to_the_url_the_user_typed() {
    let sim = sim_with(5, 0).await;
    let target = handler(StatusCode::OK).await;
    let url = format!("{}/deal-robot?route=partner-a&secret=s3cr3t", target.url);
    let delivery = sim.fire_webhook_robot(&url, 3).await.unwrap();
    assert_eq!(delivery.status, Some(200));
    assert_eq!(
        delivery.event_token, None,
        "the built-in robot has no token"
    );
    let received = target.only();
    assert_eq!(received.target, "/deal-robot?route=partner-a&secret=s3cr3t");
    assert_eq!(received.content_type, "application/x-www-form-urlencoded");
    let expected = [
        ("document_id[0]", "crm"),
        ("document_id[1]", "CCrmDocumentDeal"),
        ("document_id[2]", "DEAL_3"),
    ];
    let pairs: Vec<(&str, &str)> = received
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(pairs, expected, "document_id only: no auth, no token");
    assert_eq!(delivery.sent.len(), 3);

    // The handler's answer is reported, not acted upon; template expressions in the
    // URL become the deal's ID.
    let failing = handler(StatusCode::SERVICE_UNAVAILABLE).await;
    let delivery = sim
        .fire_webhook_robot(&format!("{}/hook?deal={{=Document:ID}}", failing.url), 4)
        .await
        .unwrap();
    assert_eq!(delivery.status, Some(503));
    assert_eq!(failing.only().target, "/hook?deal=4");

    for (url, deal) in [
        (format!("{}/hook", target.url), 99),
        ("http://localhost/hook".to_string(), 1),
        ("ftp://robots.example.com/hook".to_string(), 1),
    ] {
        let refused = sim.fire_webhook_robot(&url, deal).await.unwrap_err();
        assert!(refused.to_string().contains("400"), "{url}: {refused}");
    }
    // Nothing listens here: the delivery says so, and the control call still succeeds.
    let delivery = sim
        .fire_webhook_robot("http://127.0.0.1:9/closed", 1)
        .await
        .unwrap();
    assert_eq!(delivery.status, None);
    assert!(delivery.error.is_some());
}

#[tokio::test]
async fn app_robot_carries_the_documented_payload_and_its_token_is_accepted_once() {
    let sim = sim_with(5, 0).await;
    let target = handler(StatusCode::OK).await;
    let handler_url = format!("{}/robot?x=1", target.url);
    let (status, answer) = as_app(
        &sim,
        "bizproc.robot.add",
        registration("forward_deal", &handler_url),
    )
    .await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");

    let robot = AppRobotCall {
        url: None,
        deal_id: 2,
        code: "forward_deal".into(),
        properties: json!({"route": "partner-a", "tags": ["a", "b"]})
            .as_object()
            .cloned()
            .unwrap(),
        use_subscription: None,
    };
    let delivery = sim.fire_app_robot(&robot).await.unwrap();
    assert_eq!(delivery.status, Some(200));
    assert_eq!(delivery.url, handler_url, "the registered HANDLER");
    let token = delivery.event_token.clone().unwrap();
    let received = target.only();
    assert_eq!(received.target, "/robot?x=1");
    assert_eq!(received.content_type, "application/x-www-form-urlencoded");
    let keys: Vec<&str> = received.form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "workflow_id",
            "code",
            "document_id[0]",
            "document_id[1]",
            "document_id[2]",
            "document_type[0]",
            "document_type[1]",
            "document_type[2]",
            "event_token",
            "properties[route]",
            "properties[tags][0]",
            "properties[tags][1]",
            "use_subscription",
            "timeout_duration",
            "ts",
            "auth[access_token]",
            "auth[expires]",
            "auth[expires_in]",
            "auth[scope]",
            "auth[domain]",
            "auth[server_endpoint]",
            "auth[status]",
            "auth[client_endpoint]",
            "auth[member_id]",
            "auth[user_id]",
            "auth[refresh_token]",
            "auth[application_token]",
        ]
    );
    let form: Map<String, Value> = received
        .form
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    assert_eq!(form, delivery.sent, "the answer shows what was sent");
    let app = sim.application();
    for (key, value) in [
        ("code", "forward_deal"),
        ("document_id[0]", "crm"),
        ("document_id[1]", "CCrmDocumentDeal"),
        ("document_id[2]", "DEAL_2"),
        ("document_type[2]", "DEAL"),
        ("event_token", token.as_str()),
        ("properties[route]", "partner-a"),
        ("use_subscription", "Y"),
        ("auth[access_token]", app.access_token.as_str()),
        ("auth[application_token]", app.application_token.as_str()),
        ("auth[domain]", sim.domain()),
        ("auth[member_id]", sim.member_id()),
        ("auth[client_endpoint]", sim.application_url().as_str()),
        ("auth[user_id]", "1"),
    ] {
        assert_eq!(form[key], value, "{key}");
    }
    assert_eq!(
        form["workflow_id"].as_str(),
        delivery.workflow_id.as_deref()
    );
    assert!(token.starts_with(delivery.workflow_id.as_deref().unwrap()));

    // The handler answers through the webhook (any user may call bizproc.event.send).
    let reply = json!({"EVENT_TOKEN": token, "RETURN_VALUES": {"TargetDealId": 77, "unknown": 1}, "LOG_MESSAGE": "forwarded"});
    assert_eq!(
        ok(&sim, "bizproc.event.send", reply.clone()).await["result"],
        json!(true)
    );
    let replies = sim.workflow_replies().await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["EVENT_TOKEN"], token);
    assert_eq!(replies[0]["DOCUMENT_ID"], "DEAL_2");
    assert_eq!(
        replies[0]["RETURN_VALUES"],
        json!({"targetDealId": 77}),
        "keys match RETURN_PROPERTIES case-insensitively; others are dropped"
    );
    assert_eq!(replies[0]["LOG_MESSAGE"], "forwarded");
    let denied = json!({"error": "ACCESS_DENIED", "error_description": "Access denied!"});
    let (status, body) = call(&sim, "bizproc.event.send", reply).await;
    assert_eq!((status, body), (403, denied.clone()), "a token works once");

    // A robot that does not wait completes at once: its token is no longer accepted.
    let no_wait = AppRobotCall {
        use_subscription: Some(false),
        ..robot.clone()
    };
    let delivery = sim.fire_app_robot(&no_wait).await.unwrap();
    assert_eq!(delivery.sent["use_subscription"], "N");
    let (status, body) = call(
        &sim,
        "bizproc.event.send",
        json!({"event_token": delivery.event_token}),
    )
    .await;
    assert_eq!((status, body), (403, denied.clone()));

    // Another portal's token is refused, even well formed; so is this portal's token
    // sent to the other portal.
    let other = sim_with(5, 0).await;
    let elsewhere = other
        .fire_app_robot(&AppRobotCall {
            url: Some(format!("{}/robot", target.url)),
            ..robot.clone()
        })
        .await
        .unwrap();
    let (status, _) = call(
        &sim,
        "bizproc.event.send",
        json!({"EVENT_TOKEN": elsewhere.event_token}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        ok(
            &other,
            "bizproc.event.send",
            json!({"EVENT_TOKEN": elsewhere.event_token})
        )
        .await["result"],
        json!(true),
        "an unregistered code with an explicit url waits by default"
    );

    // The access token the robot carried gives the application context.
    let access_token = form["auth[access_token]"].as_str().unwrap().to_string();
    let (status, answer) = app_call(&sim, "crm.deal.get", &access_token, json!({"id": 2})).await;
    assert_eq!((status, &answer["result"]["ID"]), (200, &json!("2")));

    // A robot fires only for a deal that exists; an unregistered code needs a url.
    let missing = sim
        .fire_app_robot(&AppRobotCall {
            deal_id: 999,
            ..robot.clone()
        })
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("deal 999"), "{missing}");
    let no_url = sim
        .fire_app_robot(&AppRobotCall {
            code: "unknown".into(),
            ..robot
        })
        .await
        .unwrap_err();
    assert!(no_url.to_string().contains("needs a url"), "{no_url}");
}

#[tokio::test]
async fn robot_registration_needs_the_application_context_and_valid_fields() {
    let sim = sim_with(1, 0).await;
    let handler_url = "https://127.0.0.1/robot";
    let context =
        json!({"error": "ACCESS_DENIED", "error_description": "Application context required"});
    for (method, body) in [
        ("bizproc.robot.add", registration("forward", handler_url)),
        ("bizproc.robot.list", json!({})),
        ("bizproc.robot.delete", json!({"CODE": "forward"})),
        (
            "bizproc.robot.update",
            json!({"CODE": "forward", "FIELDS": {"NAME": "x"}}),
        ),
    ] {
        let (status, answer) = call(&sim, method, body).await;
        assert_eq!(
            (status, answer),
            (400, context.clone()),
            "{method} by webhook"
        );
    }
    let (status, answer) = app_call(&sim, "bizproc.robot.list", "not-the-token", json!({})).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let response = http()
        .post(format!("{}bizproc.robot.list", sim.application_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "NO_AUTH_FOUND");

    let (status, answer) = as_app(
        &sim,
        "bizproc.robot.add",
        registration("forward", handler_url),
    )
    .await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");
    assert_time_block(&answer["time"]);
    let (status, answer) = as_app(
        &sim,
        "bizproc.robot.add",
        registration("forward", handler_url),
    )
    .await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!({"error": "ERROR_ACTIVITY_ALREADY_INSTALLED", "error_description": "Activity or Automation rule already installed!"})
        )
    );
    for (body, code, description) in [
        (
            registration("other", "https://partner.example.com/robot"),
            "ERROR_WRONG_HANDLER_URL",
            "Wrong handler URL",
        ),
        (
            registration("other", "ftp://127.0.0.1/robot"),
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ),
        (
            registration("bad code!", handler_url),
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong activity code!",
        ),
        (
            json!({"CODE": "other", "HANDLER": handler_url}),
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Empty activity NAME!",
        ),
        (
            json!({"CODE": "other", "HANDLER": handler_url, "NAME": "n", "PROPERTIES": {"_x": {"Name": "x"}}}),
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Wrong property key _x!",
        ),
        (
            json!({"CODE": "other", "HANDLER": handler_url, "NAME": "n", "RETURN_PROPERTIES": {"x": {"Type": "int"}}}),
            "ERROR_ACTIVITY_VALIDATION_FAILURE",
            "Empty property NAME x!",
        ),
    ] {
        let (status, answer) = as_app(&sim, "bizproc.robot.add", body.clone()).await;
        assert_eq!(
            (status, answer),
            (
                400,
                json!({"error": code, "error_description": description})
            ),
            "{body}"
        );
    }

    // Form-encoded with PHP keys, as CRest sends it, and the access token in the query.
    let form = format!(
        "CODE=sms_robot&HANDLER={}&NAME[en]=SMS&USE_SUBSCRIPTION=N&PROPERTIES[text][Name]=Text&PROPERTIES[text][Type]=text",
        form_urlencoded::byte_serialize(handler_url.as_bytes()).collect::<String>()
    );
    let response = http()
        .post(format!(
            "{}bizproc.robot.add.json?auth={}",
            sim.application_url(),
            sim.application().access_token
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, answer) = as_app(&sim, "bizproc.robot.list", json!({})).await;
    assert_eq!(answer["result"], json!(["forward", "sms_robot"]));
    let robots = sim.robots().await.unwrap();
    assert_eq!(robots[1]["USE_SUBSCRIPTION"], "N");
    assert_eq!(robots[1]["PROPERTIES"]["text"]["Type"], "text");

    let (status, _) = as_app(
        &sim,
        "bizproc.robot.update",
        json!({"CODE": "sms_robot", "FIELDS": {"USE_SUBSCRIPTION": "Y"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.robots().await.unwrap()[1]["USE_SUBSCRIPTION"], "Y");
    let (status, answer) = as_app(&sim, "bizproc.robot.delete", json!({"CODE": "sms_robot"})).await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)));
    let (status, answer) = as_app(&sim, "bizproc.robot.delete", json!({"CODE": "sms_robot"})).await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!({"error": "ERROR_ACTIVITY_NOT_FOUND", "error_description": "Activity or Robot not found!"})
        )
    );

    // A batch keeps its caller's context.
    let batch = json!({"cmd": {"list": "bizproc.robot.list"}});
    let (_, answer) = as_app(&sim, "batch", batch.clone()).await;
    assert_eq!(answer["result"]["result"]["list"], json!(["forward"]));
    let answer = ok(&sim, "batch", batch).await;
    assert_eq!(
        answer["result"]["result_error"]["list"]["error"],
        "ACCESS_DENIED"
    );

    // Updating the application removes its robots: registration must run again.
    assert_eq!(sim.update_application().await.unwrap(), 1);
    let (_, answer) = as_app(&sim, "bizproc.robot.list", json!({})).await;
    assert_eq!(answer["result"], json!([]));
    let (status, _) = as_app(
        &sim,
        "bizproc.robot.add",
        registration("forward", handler_url),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_application_host_and_tokens_come_from_the_config() {
    let sim = sim(SimConfig {
        application: b24_sim::Application {
            access_token: "tokenA".into(),
            application_token: "apptokenA".into(),
            handler_host: "robots.example.com".into(),
        },
        deals: 1,
        limits: unlimited(),
        ..SimConfig::default()
    })
    .await;
    let (status, answer) = app_call(
        &sim,
        "bizproc.robot.add",
        "tokenA",
        registration("forward", "https://robots.example.com/robot"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = app_call(
        &sim,
        "bizproc.robot.add",
        "tokenA",
        registration("local", "http://127.0.0.1/robot"),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("ERROR_WRONG_HANDLER_URL"))
    );
    let shown = http()
        .get(format!("{}/_sim/application", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(shown["application_token"], "apptokenA");
    assert_eq!(shown["handler_host"], "robots.example.com");
    assert_eq!(shown["client_endpoint"], sim.application_url());
    assert!(!format!("{:?}", sim.application()).contains("tokenA"));
}

#[tokio::test]
async fn deals_are_found_by_originator_and_origin_id_together() {
    let sim = sim_with(20, 0).await;
    let fields = fields_of(&sim, "deal").await;
    for code in ["ORIGINATOR_ID", "ORIGIN_ID"] {
        assert_eq!(fields[code]["type"], "string", "{code}");
        assert_eq!(fields[code]["isReadOnly"], false, "{code}");
    }
    let mut ids = Vec::new();
    for (originator, origin) in [
        ("partner-a.bitrix24.com", "17"),
        ("partner-a.bitrix24.com", "18"),
        ("partner-b.bitrix24.com", "17"),
    ] {
        let answer = ok(
            &sim,
            "crm.deal.add",
            json!({"fields": {"TITLE": "forwarded", "ORIGINATOR_ID": originator, "ORIGIN_ID": origin}}),
        )
        .await;
        ids.push(answer["result"].as_u64().unwrap());
    }
    let found = listed_ids(
        &sim,
        "deal",
        json!({"=ORIGINATOR_ID": "partner-a.bitrix24.com", "=ORIGIN_ID": "17"}),
    )
    .await;
    assert_eq!(found, vec![ids[0]]);
    let found = listed_ids(
        &sim,
        "deal",
        json!({"ORIGINATOR_ID": "partner-b.bitrix24.com", "ORIGIN_ID": "17"}),
    )
    .await;
    assert_eq!(found, vec![ids[2]], "no operator means equality too");
    let found = listed_ids(
        &sim,
        "deal",
        json!({"=ORIGINATOR_ID": "partner-a.bitrix24.com", "=ORIGIN_ID": "1"}),
    )
    .await;
    assert!(
        found.is_empty(),
        "ORIGIN_ID matches exactly, not as a prefix"
    );

    let got = ok(&sim, "crm.deal.get", json!({"id": ids[1]})).await["result"].clone();
    assert_eq!(got["ORIGINATOR_ID"], "partner-a.bitrix24.com");
    assert_eq!(got["ORIGIN_ID"], "18");
    let listed = ok(
        &sim,
        "crm.deal.list",
        json!({"filter": {"=ID": ids[1]}, "select": ["ID", "ORIGINATOR_ID", "ORIGIN_ID"]}),
    )
    .await;
    assert_eq!(listed["result"][0]["ORIGIN_ID"], "18");
    let seeded = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"].clone();
    assert_eq!(
        seeded["ORIGIN_ID"],
        Value::Null,
        "unset: null, as in the docs' example"
    );

    ok(
        &sim,
        "crm.deal.update",
        json!({"id": ids[1], "fields": {"ORIGIN_ID": "19"}}),
    )
    .await;
    let found = listed_ids(
        &sim,
        "deal",
        json!({"=ORIGINATOR_ID": "partner-a.bitrix24.com", "=ORIGIN_ID": "19"}),
    )
    .await;
    assert_eq!(found, vec![ids[1]]);
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// GETs a file URL as a deal's file field shows it (relative to the portal).
async fn download(sim: &RunningSim, url: &Value) -> (u16, Vec<u8>, String) {
    let response = http()
        .get(format!("{}{}", sim.base_url(), url.as_str().unwrap()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let disposition = response
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        response.bytes().await.unwrap().to_vec(),
        disposition,
    )
}

async fn file_fields(sim: &RunningSim) -> (String, String) {
    let add = |multiple| UserFieldRequest {
        entity: Entity::Deal,
        field_type: UserFieldType::File,
        multiple,
        code: None,
        unchecked: false,
    };
    (
        sim.add_user_field(&add(false)).await.unwrap(),
        sim.add_user_field(&add(true)).await.unwrap(),
    )
}

#[tokio::test]
async fn file_fields_take_file_data_uploads_and_serve_the_bytes() {
    let sim = sim_with(3, 0).await;
    let (single, multiple) = file_fields(&sim).await;
    let pdf = b"%PDF-1.4 contract".to_vec();
    let answer = ok(
        &sim,
        "crm.deal.add",
        json!({"fields": {
            "TITLE": "with files",
            single.clone(): {"fileData": ["contract.pdf", b64(&pdf)]},
            multiple.clone(): [
                {"fileData": ["a.txt", b64(b"first")]},
                ["b.txt", b64(b"second")],
            ],
        }}),
    )
    .await;
    let id = answer["result"].as_u64().unwrap();
    let deal = ok(&sim, "crm.deal.get", json!({"id": id})).await["result"].clone();
    let file = &deal[&single];
    let file_id = file["id"].as_i64().expect("file id");
    assert_eq!(
        file["showUrl"],
        format!(
            "/bitrix/components/bitrix/crm.deal.show/show_file.php?ownerId={id}&fieldName={single}&dynamic=Y&fileId={file_id}"
        )
    );
    assert_eq!(
        file["downloadUrl"],
        format!(
            "/bitrix/components/bitrix/crm.deal.show/show_file.php?auth=&ownerId={id}&fieldName={single}&dynamic=Y&fileId={file_id}"
        )
    );
    let (status, bytes, disposition) = download(&sim, &file["downloadUrl"]).await;
    assert_eq!((status, bytes), (200, pdf.clone()));
    assert!(disposition.contains("contract.pdf"), "{disposition}");
    let files = deal[&multiple].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let (_, first, _) = download(&sim, &files[0]["downloadUrl"]).await;
    let (_, second, _) = download(&sim, &files[1]["showUrl"]).await;
    assert_eq!((first, second), (b"first".to_vec(), b"second".to_vec()));

    // Copy a file from this portal to another, as a forwarder does.
    let target = sim_with(0, 0).await;
    let (target_single, _) = file_fields(&target).await;
    let copied = ok(
        &target,
        "crm.deal.add",
        json!({"fields": {target_single.clone(): {"fileData": ["contract.pdf", b64(&pdf)]}}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let on_target = ok(&target, "crm.deal.get", json!({"id": copied})).await["result"].clone();
    let (_, bytes, _) = download(&target, &on_target[&target_single]["downloadUrl"]).await;
    assert_eq!(bytes, pdf);

    // A single field also takes the plain pair; `{"id": N}` keeps a file; a multiple
    // field given one plain pair holds one file.
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": id, "fields": {single.clone(): ["new.txt", b64(b"replaced")], multiple.clone(): [{"id": files[1]["id"]}]}}),
    )
    .await;
    let deal = ok(&sim, "crm.deal.get", json!({"id": id})).await["result"].clone();
    let (_, bytes, _) = download(&sim, &deal[&single]["downloadUrl"]).await;
    assert_eq!(bytes, b"replaced");
    assert_eq!(deal[&multiple].as_array().unwrap().len(), 1);
    assert_eq!(deal[&multiple][0]["id"], files[1]["id"]);
    ok(
        &sim,
        "crm.deal.update",
        json!({"id": id, "fields": {multiple.clone(): ["one.txt", b64(b"one")]}}),
    )
    .await;
    let deal = ok(&sim, "crm.deal.get", json!({"id": id})).await["result"].clone();
    assert_eq!(deal[&multiple].as_array().unwrap().len(), 1);

    // The old file is no longer the record's: its URL answers 404, as do URLs of
    // files that never were.
    let (status, _, _) = download(&sim, &file["downloadUrl"]).await;
    assert_eq!(status, 404);
    let bogus = json!(format!(
        "/bitrix/components/bitrix/crm.deal.show/show_file.php?ownerId={id}&fieldName={single}&fileId=999999"
    ));
    assert_eq!(download(&sim, &bogus).await.0, 404);

    // Form-encoded, as PHP clients send it.
    let body = format!(
        "fields[TITLE]=form&fields[{single}][fileData][0]=form.txt&fields[{single}][fileData][1]={}",
        form_urlencoded::byte_serialize(b64(b"from a form").as_bytes()).collect::<String>()
    );
    let response = http()
        .post(format!("{}crm.deal.add", sim.webhook_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let form_deal = answer["result"].as_u64().expect("added");
    let deal = ok(&sim, "crm.deal.get", json!({"id": form_deal})).await["result"].clone();
    let (_, bytes, disposition) = download(&sim, &deal[&single]["downloadUrl"]).await;
    assert_eq!(bytes, b"from a form");
    assert!(disposition.contains("form.txt"));
}

#[tokio::test]
async fn bad_file_uploads_are_refused_and_change_nothing() {
    let sim = sim_with(2, 0).await;
    let (single, _) = file_fields(&sim).await;
    let before = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"].clone();
    for value in [
        json!({"fileData": ["a.txt", "not base64 at all!"]}),
        json!({"fileData": ["a.txt"]}),
        json!({"fileData": "YWJj"}),
        json!(["a.txt", "@@@"]),
    ] {
        let (status, answer) = call(
            &sim,
            "crm.deal.update",
            json!({"id": 1, "fields": {single.clone(): value.clone(), "TITLE": "changed"}}),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("")),
            "{value}"
        );
        let description = answer["error_description"].as_str().unwrap();
        assert!(description.contains(&single), "{description}");
    }
    let after = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"].clone();
    assert_eq!(before, after);
}

#[tokio::test]
async fn seeded_file_values_are_downloadable() {
    // Ten user fields cover every type once, the file type included.
    let sim = sim_with(3, 10).await;
    let fields = fields_of(&sim, "deal").await;
    let code = user_field(&fields, Some("file"), false);
    let deals = sim.dump(Entity::Deal).await.unwrap();
    let file = deals
        .iter()
        .find_map(|d| d.get(&code).filter(|f| f.is_object()))
        .expect("a seeded deal with a file");
    let (status, bytes, _) = download(&sim, &file["downloadUrl"]).await;
    assert_eq!(status, 200);
    assert!(!bytes.is_empty());
    // Contacts' PHOTO and companies' LOGO use the same URLs.
    let dump = sim.dump(Entity::Contact).await.unwrap();
    let photo = dump
        .iter()
        .find_map(|c| c.get("PHOTO").filter(|p| p.is_object()))
        .expect("a seeded contact with a photo");
    assert!(
        photo["downloadUrl"]
            .as_str()
            .unwrap()
            .starts_with("/bitrix/components/bitrix/crm.contact.show/show_file.php?auth=&")
    );
    assert_eq!(download(&sim, &photo["downloadUrl"]).await.0, 200);
}

#[tokio::test]
async fn stages_and_sources_map_between_portals_by_label() {
    let (source, target) = (sim_with(3, 0).await, sim_with(0, 0).await);
    source
        .add_status(&StatusRequest {
            entity_id: "DEAL_STAGE".into(),
            status_id: "UC_7Q2K1X".into(),
            name: "Negotiation".into(),
            sort: 35,
        })
        .await
        .unwrap();
    let added = target
        .add_status(&StatusRequest {
            entity_id: "DEAL_STAGE".into(),
            status_id: "UC_A1B2C3".into(),
            name: "Negotiation".into(),
            sort: 35,
        })
        .await
        .unwrap();
    assert_eq!(added["SYSTEM"], "N");
    let stages = |answer: Value| -> Vec<(String, String)> {
        answer["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["STATUS_ID"].as_str().unwrap().to_string(),
                    r["NAME"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let filter = json!({"filter": {"ENTITY_ID": "DEAL_STAGE"}, "order": {"SORT": "ASC"}});
    let on_source = stages(ok(&source, "crm.status.list", filter.clone()).await);
    let answer = ok(&target, "crm.status.list", filter).await;
    assert_eq!(answer["total"], 8);
    let on_target = stages(answer);
    assert_eq!(
        on_source[3],
        ("UC_7Q2K1X".into(), "Negotiation".into()),
        "by SORT"
    );
    let mapped = on_target
        .iter()
        .find(|(_, name)| *name == on_source[3].1)
        .map(|(id, _)| id.clone());
    assert_eq!(mapped.as_deref(), Some("UC_A1B2C3"));
    let deal = ok(
        &target,
        "crm.deal.add",
        json!({"fields": {"STAGE_ID": "UC_A1B2C3"}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let got = ok(&target, "crm.deal.get", json!({"id": deal})).await["result"].clone();
    assert_eq!(got["STAGE_ID"], "UC_A1B2C3");

    let sources = ok(
        &source,
        "crm.status.list",
        json!({"filter": {"ENTITY_ID": "SOURCE", "STATUS_ID": "WEB"}}),
    )
    .await;
    assert_eq!(sources["result"][0]["NAME"], "Website");
    let (status, answer) = call(&source, "crm.status.list", json!({"filter": "x"})).await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!({"error": "Invalid parameters.", "error_description": "Incorrect parameters passed."})
        )
    );
    let refused = target
        .add_status(&StatusRequest {
            entity_id: "DEAL_STAGE".into(),
            status_id: "UC_A1B2C3".into(),
            name: "Again".into(),
            sort: 1,
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("already has"), "{refused}");
}
