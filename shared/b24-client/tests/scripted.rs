//! The client against a scripted loopback server that answers each request exactly as
//! told (including dropping the connection, stalling and truncating), to pin down the
//! retry rules deterministically. The simulator tests (tests/simulator.rs) cover the
//! same rules under random faults.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b24_client::{B24Error, Client, ClientOptions, Command, InProcessLimiter};
use b24_domain::limits::LimitSettings;
use b24_domain::ports::unix_now;
use b24_domain::webhook::WebhookUrl;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "t0ps3cretc0de42";

enum Reply {
    Json(u16, Value),
    Raw(u16, &'static str),
    /// Close the connection without answering.
    Close,
    /// Answer only after this long.
    Stall(Duration),
    /// Promise more body than is sent, then close.
    Truncated(&'static str),
    Redirect(&'static str),
}

struct FakePortal {
    url: WebhookUrl,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakePortal {
    async fn start(script: Vec<Reply>) -> FakePortal {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move { serve(socket, seen, script).await });
            }
        });
        let url = WebhookUrl::parse(&format!("http://{addr}/rest/1/{SECRET}/")).unwrap();
        FakePortal { url, requests }
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn client(&self, timeout: Duration) -> Client {
        let options = ClientOptions {
            timeout,
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            limiter: Arc::new(InProcessLimiter::new(LimitSettings::enterprise())),
            api: Default::default(),
        };
        Client::new(self.url.clone(), options).unwrap()
    }
}

async fn serve(
    mut socket: TcpStream,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, content_length) = loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            break (pos + 4, length);
        }
    };
    while buf.len() < head_end + content_length {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request_line = String::from_utf8_lossy(&buf[..head_end])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let body =
        serde_json::from_slice(&buf[head_end..head_end + content_length]).unwrap_or(Value::Null);
    seen.lock().unwrap().push((path, body));

    let reply = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Json(500, json!({"error": "SCRIPT_EXHAUSTED"})));
    let respond = |status: u16, body: &str, length: usize, extra: &str| {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n{extra}\r\n{body}"
        )
    };
    let text = match reply {
        Reply::Json(status, body) => {
            let body = body.to_string();
            respond(status, &body, body.len(), "")
        }
        Reply::Raw(status, body) => respond(status, body, body.len(), ""),
        Reply::Close => return,
        Reply::Stall(wait) => {
            tokio::time::sleep(wait).await;
            respond(200, "{\"result\":true}", 15, "")
        }
        Reply::Truncated(body) => respond(200, body, body.len() + 100, ""),
        Reply::Redirect(location) => respond(302, "", 0, &format!("location: {location}\r\n")),
    };
    let _ = socket.write_all(text.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn ok(result: Value) -> Reply {
    Reply::Json(200, json!({"result": result, "time": {"operating": 0.01}}))
}

fn assert_redacted(error: &B24Error) {
    assert!(!error.to_string().contains(SECRET), "{error}");
    assert!(!format!("{error:?}").contains(SECRET), "{error:?}");
}

fn assert_ambiguous(result: Result<impl std::fmt::Debug, B24Error>, method: &str) {
    match result {
        Err(B24Error::AmbiguousCreate { method: m, cause }) => {
            assert_eq!(m, method);
            assert_redacted(&cause);
        }
        other => panic!("expected AmbiguousCreate, got {other:?}"),
    }
}

#[tokio::test]
async fn a_create_is_never_retried_after_an_ambiguous_failure() {
    let cases = [
        Reply::Close,
        Reply::Stall(Duration::from_secs(3)),
        Reply::Raw(500, "<html>Internal error</html>"),
        Reply::Json(
            502,
            json!({"error": "INTERNAL_SERVER_ERROR", "error_description": "x"}),
        ),
        Reply::Truncated("{\"result\": 4"),
    ];
    for reply in cases {
        let portal = FakePortal::start(vec![reply, ok(json!(99))]).await;
        let client = portal.client(Duration::from_millis(400));
        let result = client
            .call("crm.deal.add", &json!({"fields": {"TITLE": "x"}}))
            .await;
        assert_ambiguous(result, "crm.deal.add");
        assert_eq!(portal.hits(), 1, "a create was sent twice");
    }
}

#[tokio::test]
async fn a_batch_holding_a_create_follows_the_create_rule() {
    let portal = FakePortal::start(vec![Reply::Close, ok(json!({}))]).await;
    let client = portal.client(Duration::from_secs(2));
    let commands = vec![
        Command::new(
            "find",
            "crm.deal.list",
            json!({"filter": {"ORIGIN_ID": "7"}}),
        ),
        Command::new("make", "crm.deal.add", json!({"fields": {"TITLE": "x"}})),
    ];
    assert_ambiguous(client.batch(commands, true).await, "batch");
    assert_eq!(portal.hits(), 1);
}

#[tokio::test]
async fn refusals_before_execution_are_retried_even_for_creates() {
    let portal = FakePortal::start(vec![
        Reply::Json(
            503,
            json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
        ),
        ok(json!(77)),
    ])
    .await;
    let client = portal.client(Duration::from_secs(2));
    let response = client
        .call("crm.deal.add", &json!({"fields": {"TITLE": "x"}}))
        .await
        .unwrap();
    assert_eq!(response.result, json!(77));
    assert_eq!(portal.hits(), 2);
    let stats = client.stats();
    assert_eq!(
        (stats.throttled_503, stats.retries, stats.http_requests),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn reads_are_retried_through_drops_timeouts_5xx_and_truncation() {
    let portal = FakePortal::start(vec![
        Reply::Close,
        Reply::Stall(Duration::from_secs(3)),
        Reply::Raw(500, "oops"),
        ok(json!({"ID": "5"})),
    ])
    .await;
    let client = portal.client(Duration::from_millis(300));
    let response = client
        .call("crm.deal.get", &json!({"id": 5}))
        .await
        .unwrap();
    assert_eq!(response.result, json!({"ID": "5"}));
    assert_eq!(portal.hits(), 4);
    assert_eq!(client.stats().retries, 3);

    let portal = FakePortal::start(vec![
        Reply::Truncated("{\"result\": [1, 2"),
        ok(json!([1, 2])),
    ])
    .await;
    let client = portal.client(Duration::from_secs(2));
    assert_eq!(
        client
            .call("crm.deal.list", &json!({}))
            .await
            .unwrap()
            .result,
        json!([1, 2])
    );
}

#[tokio::test]
async fn retries_stop_at_the_limit_with_the_last_error() {
    let portal = FakePortal::start((0..10).map(|_| Reply::Raw(500, "down")).collect()).await;
    let client = portal.client(Duration::from_secs(2));
    let err = client
        .call("crm.deal.get", &json!({"id": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, B24Error::Server { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(portal.hits(), 4, "1 try + 3 retries");
}

#[tokio::test]
async fn a_429_waits_for_operating_reset_at_before_retrying() {
    let reset_at = unix_now() + 1.0;
    let portal = FakePortal::start(vec![
        Reply::Json(
            429,
            json!({"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked", "time": {"operating_reset_at": reset_at}}),
        ),
        ok(json!([])),
    ])
    .await;
    let client = portal.client(Duration::from_secs(2));
    let started = Instant::now();
    client.call("crm.deal.list", &json!({})).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().throttled_429, 1);
}

#[tokio::test]
async fn auth_scope_and_unknown_method_errors_are_typed_and_not_retried() {
    let cases = [
        (
            Reply::Json(
                401,
                json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}),
            ),
            "NoAuth",
        ),
        (
            // What a real portal answers for a wrong webhook code.
            Reply::Json(
                401,
                json!({"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}),
            ),
            "InvalidCredentials",
        ),
        (
            Reply::Json(
                403,
                json!({"error": "insufficient_scope", "error_description": "higher privileges"}),
            ),
            "InsufficientScope",
        ),
        (
            Reply::Json(
                403,
                json!({"error": "ACCESS_DENIED", "error_description": "REST API is available only on commercial plans"}),
            ),
            "AccessDenied",
        ),
        (
            Reply::Json(
                404,
                json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}),
            ),
            "MethodNotFound",
        ),
        (
            Reply::Json(400, json!({"error": "", "error_description": "Not found"})),
            "NotFound",
        ),
        (
            Reply::Json(
                503,
                json!({"error": "OVERLOAD_LIMIT", "error_description": "blocked"}),
            ),
            "OverloadLimit",
        ),
    ];
    for (reply, expected) in cases {
        let portal = FakePortal::start(vec![reply, ok(json!(1))]).await;
        let client = portal.client(Duration::from_secs(2));
        let err = client
            .call("crm.deal.get", &json!({"id": 1}))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(portal.hits(), 1);
        assert_redacted(&err);
    }
}

#[tokio::test]
async fn a_redirect_reports_the_new_host_but_not_the_path() {
    let portal = FakePortal::start(vec![Reply::Redirect(
        "https://renamed.bitrix24.com/rest/1/t0ps3cretc0de42/crm.deal.get",
    )])
    .await;
    let client = portal.client(Duration::from_secs(2));
    let err = client
        .call("crm.deal.get", &json!({"id": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, B24Error::PortalMoved { location_host: Some(h), .. } if h == "renamed.bitrix24.com"),
        "{err:?}"
    );
    assert_redacted(&err);
}

#[tokio::test]
async fn an_unreachable_portal_fails_clearly_without_the_secret_and_a_create_may_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = WebhookUrl::parse(&format!("http://{addr}/rest/1/{SECRET}/")).unwrap();
    let options = ClientOptions {
        max_retries: 2,
        backoff_base: Duration::from_millis(5),
        ..ClientOptions::default()
    };
    let client = Client::new(url, options).unwrap();
    // The connection never opened, so even a create is safely retried; it ends Unreachable.
    let err = client.call("crm.deal.add", &json!({})).await.unwrap_err();
    assert!(matches!(err, B24Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert_redacted(&err);
    assert_eq!(client.stats().http_requests, 3);
    assert!(!format!("{client:?}").contains(SECRET));
}

#[tokio::test]
async fn batch_reports_per_command_results_and_errors_inside_a_200() {
    let answer = json!({
        "result": {
            "result": {"a": {"ID": "1"}, "c": [{"ID": "3"}]},
            "result_error": {"b": {"error": "", "error_description": "Not found"}},
            "result_total": {"c": 1},
            "result_next": [],
            "result_time": {"a": {"operating": 0.5}, "b": {"operating": 0.75}, "c": {"operating": 1.0}}
        },
        "time": {"operating": 0.125}
    });
    // The same commands again: every `operating` is its method's running total.
    let again = json!({
        "result": {
            "result": {"a": {"ID": "1"}, "b": {"ID": "2"}, "c": [{"ID": "3"}]},
            "result_time": {"a": {"operating": 0.875}, "b": {"operating": 1.0}, "c": {"operating": 1.5}}
        },
        "time": {"operating": 0.25}
    });
    let portal = FakePortal::start(vec![Reply::Json(200, answer), Reply::Json(200, again)]).await;
    let client = portal.client(Duration::from_secs(2));
    let commands = vec![
        Command::new("a", "crm.deal.get", json!({"id": 1})),
        Command::new("b", "crm.deal.get", json!({"id": 2})),
        Command::new(
            "c",
            "crm.deal.list",
            json!({"filter": {"ID": "$result[a][ID]"}}),
        ),
    ];
    let results = client.batch(commands.clone(), false).await.unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0].outcome.as_ref().unwrap().result,
        json!({"ID": "1"})
    );
    assert!(matches!(results[1].outcome, Err(B24Error::NotFound { .. })));
    let c = results[2].outcome.as_ref().unwrap();
    assert_eq!((c.total, c.operating), (Some(1), Some(1.0)));
    // crm.deal.get's total is 0.75 (not 0.5 + 0.75), crm.deal.list 1.0, batch 0.125.
    assert_eq!(client.stats().operating_seconds, 1.875);
    assert!(client.batch(commands.clone(), false).await.is_ok());
    // What the totals grew by: 0.25 + 0.5 + 0.125.
    assert_eq!(client.stats().operating_seconds, 2.75);

    // What went over the wire: one request, PHP-style commands, halt as 0.
    let requests = portal.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].0, format!("/rest/1/{SECRET}/batch"));
    assert_eq!(requests[0].1["halt"], json!(0));
    assert_eq!(
        requests[0].1["cmd"]["c"],
        json!("crm.deal.list?filter[ID]=%24result%5Ba%5D%5BID%5D")
    );
}

#[tokio::test]
async fn batch_with_halt_marks_unexecuted_commands_and_skips_later_requests() {
    let answer = json!({"result": {"result": {"c0": true}, "result_error": {"c1": {"error": "ACCESS_DENIED", "error_description": ""}},
                        "result_total": [], "result_next": [], "result_time": []}, "time": {}});
    let portal = FakePortal::start(vec![Reply::Json(200, answer)]).await;
    let client = portal.client(Duration::from_secs(2));
    let commands: Vec<Command> = (0..60)
        .map(|i| Command::new(format!("c{i}"), "crm.deal.update", json!({"id": i})))
        .collect();
    let results = client.batch(commands, true).await.unwrap();
    assert_eq!(results.len(), 60);
    assert!(results[0].outcome.is_ok());
    assert!(matches!(
        results[1].outcome,
        Err(B24Error::AccessDenied { .. })
    ));
    assert!(
        results[2..]
            .iter()
            .all(|r| matches!(r.outcome, Err(B24Error::CommandSkipped { .. })))
    );
    assert_eq!(
        portal.hits(),
        1,
        "the second request of 10 must not be sent after a halt"
    );
    assert_eq!(
        portal.requests.lock().unwrap()[0].1["cmd"]
            .as_object()
            .unwrap()
            .len(),
        50
    );
}

fn with_operating(total: f64, reset_at: f64) -> Reply {
    Reply::Json(
        200,
        json!({"result": [], "time": {"operating": total, "operating_reset_at": reset_at}}),
    )
}

fn tight_client(portal: &FakePortal, budget: f64, window: f64) -> Client {
    let settings = LimitSettings {
        operating_budget_secs: budget,
        operating_window_secs: window,
        ..LimitSettings::standard()
    };
    let options = ClientOptions {
        limiter: Arc::new(InProcessLimiter::new(settings)),
        ..ClientOptions::default()
    };
    Client::new(portal.url.clone(), options).unwrap()
}

#[tokio::test]
async fn near_the_budget_the_next_call_waits_for_the_window_taking_totals_not_sums() {
    // Budget 1 s per 2 s window. Totals 0.4 then 0.8: each call costs 0.4 (summing
    // would say 1.2 used and stall at once), and a third would end at 1.2, so it waits
    // until the first calls' usage leaves the window; then the total is 0.4 again and
    // the fourth call goes at once.
    let start = unix_now();
    let portal = FakePortal::start(vec![
        with_operating(0.4, start + 2.0),
        with_operating(0.8, start + 2.0),
        with_operating(0.4, start + 4.0),
        with_operating(0.8, start + 4.0),
    ])
    .await;
    let client = tight_client(&portal, 1.0, 2.0);
    let started = Instant::now();
    let mut sent_at = Vec::new();
    for _ in 0..4 {
        client.call("crm.deal.list", &json!({})).await.unwrap();
        sent_at.push(started.elapsed().as_secs_f64());
    }
    // Tolerances of a second: a wrong wait would be a whole 2 s window, and a loaded
    // 2-core CI machine can delay a wake-up by several hundred milliseconds.
    assert!(sent_at[1] < 1.0, "{sent_at:?}");
    assert!((1.8..3.5).contains(&sent_at[2]), "{sent_at:?}");
    assert!(sent_at[3] - sent_at[2] < 1.0, "{sent_at:?}");
    let stats = client.stats();
    assert_eq!(stats.throttled_429, 0);
    // 0.4 + 0.4, then 0.4 in a fresh window, then 0.4.
    assert!((stats.operating_seconds - 1.6).abs() < 1e-9, "{stats:?}");
}

#[tokio::test]
async fn answers_without_operating_keys_work_unpaced() {
    // On-premise portals (limiter off) send a time block without `operating` and
    // `operating_reset_at`; some answers have no time block at all.
    let bare_time = |result: Value| {
        Reply::Json(
            200,
            json!({"result": result, "time": {"start": 1.0, "finish": 1.1, "duration": 0.1, "processing": 0.1}}),
        )
    };
    let batch_answer = json!({
        "result": {"result": {"a": [{"ID": "1"}]}, "result_error": [], "result_total": [], "result_next": [],
                   "result_time": {"a": {"start": 1.0, "finish": 1.1}}},
        "time": {"start": 1.0}
    });
    let mut script: Vec<Reply> = (0..5).map(|_| bare_time(json!([]))).collect();
    script.push(Reply::Json(200, json!({"result": true})));
    script.push(Reply::Json(200, batch_answer));
    let portal = FakePortal::start(script).await;
    // A budget so small that any reported usage would hold calls back.
    let client = tight_client(&portal, 0.001, 60.0);
    let started = Instant::now();
    for _ in 0..5 {
        let answer = client.call("crm.deal.list", &json!({})).await.unwrap();
        assert_eq!((answer.operating, answer.operating_reset_at), (None, None));
    }
    assert_eq!(
        client
            .call("crm.deal.get", &json!({"id": 1}))
            .await
            .unwrap()
            .result,
        json!(true)
    );
    let results = client
        .batch(vec![Command::new("a", "crm.deal.list", json!({}))], false)
        .await
        .unwrap();
    assert_eq!(results[0].outcome.as_ref().unwrap().operating, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().operating_seconds, 0.0);
    assert_eq!(portal.hits(), 7);
}

#[tokio::test]
async fn garbled_operating_values_neither_panic_nor_block_beyond_the_window() {
    // 1e20 and a reset in milliseconds are clamped to the window (0.5 s here); a
    // non-numeric total is no total.
    let now = unix_now();
    let portal = FakePortal::start(vec![
        with_operating(5.0, 1e20),
        with_operating(6.0, now * 1000.0),
        Reply::Json(200, json!({"result": [], "time": {"operating": "soon", "operating_reset_at": -4}})),
        Reply::Json(
            429,
            json!({"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked", "time": {"operating_reset_at": 1e20}}),
        ),
        ok(json!([])),
    ])
    .await;
    let client = tight_client(&portal, 1.0, 0.5);
    let started = Instant::now();
    for _ in 0..4 {
        client.call("crm.deal.list", &json!({})).await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    // At most one window per call (four calls, one of them retried after the 429).
    assert!(took < 3.5, "{took}");
    assert_eq!(portal.hits(), 5);
    assert_eq!(client.stats().throttled_429, 1);
}

#[tokio::test]
async fn a_full_listing_sends_no_counting_command() {
    let page: Vec<Value> = (1..=10).map(|id| json!({"ID": id.to_string()})).collect();
    let answer = json!({
        "result": {"result": {"c0": page}, "result_error": [], "result_total": {"c0": 0}, "result_next": [],
                   "result_time": {"c0": {"operating": 0.01}}},
        "time": {"operating": 0.001}
    });
    let portal = FakePortal::start(vec![Reply::Json(200, answer)]).await;
    let client = portal.client(Duration::from_secs(2));
    let rows: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
        client.list_stream(b24_client::ListQuery::new("crm.deal.list")),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 10);
    let requests = portal.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let commands = requests[0].1["cmd"].as_object().unwrap();
    assert_eq!(commands.len(), 50);
    for (name, command) in commands {
        let command = command.as_str().unwrap();
        let starts: Vec<&str> = command
            .split(['?', '&'])
            .filter(|p| p.starts_with("start="))
            .collect();
        assert_eq!(starts, ["start=-1"], "{name}: {command}");
    }
}
