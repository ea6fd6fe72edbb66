//! The handler with an in-memory queue: every event example of the reference sheet,
//! the `cargo lambda invoke` samples, each refusal's answer, and a failing queue.

mod common;

use std::sync::{Arc, Mutex};

use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use common::*;
use lambda_http::http::{StatusCode, header};

fn sample(name: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../../events/webhook-intake/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn summary(message: &ChangeMessage) -> (&str, Entity, u64, ChangeAction) {
    (&message.portal, message.entity, message.id, message.action)
}

#[test]
fn queues_the_invoke_samples() {
    let (state, queue) = intake();
    let cases = [
        ("form-event.json", (Entity::Deal, 759, ChangeAction::Update)),
        (
            "form-event-base64.json",
            (Entity::Deal, 7405, ChangeAction::Add),
        ),
        ("json-event.json", (Entity::Contact, 42, ChangeAction::Add)),
        (
            "dynamic-item-event.json",
            (Entity::Smart(1220), 24, ChangeAction::Update),
        ),
    ];
    for (name, (entity, id, action)) in cases {
        let response = answer(&state, sample(name));
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
        assert_eq!(
            json_body(&response),
            serde_json::json!({"status": "queued"})
        );
        assert_own_headers(response.headers());
        let queued = queue.drain();
        assert_eq!(queued.len(), 1, "{name}");
        assert_eq!(summary(&queued[0]), ("acme", entity, id, action), "{name}");
        assert!(queued[0].event_time.is_some(), "{name}");
    }
}

/// The real captured SDK body (verbatim, token appended as the SDK's test does).
fn captured_sdk_body(token: &str) -> String {
    format!(
        "event=ONCRMCONTACTADD&event_handler_id=58&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Baccess_token%5D=be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48&auth%5Bexpires%5D=1727022526&auth%5Bexpires_in%5D=3600&auth%5Bscope%5D=crm%2Cplacement%2Cuser_brief&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=L&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbitrix24-php-sdk-playground.bitrix24.com%2Frest%2F&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Buser_id%5D=1&auth%5Bapplication_token%5D={token}"
    )
}

#[test]
fn queues_every_event_example_of_the_reference_sheet() {
    let (state, queue) = intake();
    let acme_auth = "auth%5Bdomain%5D=some-domain.bitrix24.com&auth%5Bclient_endpoint%5D=https%3A%2F%2Fsome-domain.bitrix24.com%2Frest%2F&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bmember_id%5D=d897063e1ce7c5eb9f04b9751eef5915";
    let cases = [
        // Application handler ([D] api-reference/events/index.md), as http_build_query sends it.
        (
            FORM,
            format!(
                "event=ONCRMDEALADD&event_handler_id=185&data%5BFIELDS%5D%5BID%5D=7405&ts=1766047124&auth%5Baccess_token%5D=s6p6eclrvim6da22ft9ch94ekreb52lv&auth%5Bexpires_in%5D=3600&auth%5Bscope%5D=crm&auth%5Bstatus%5D=L&{acme_auth}&auth%5Bapplication_token%5D={APP_TOKEN}"
            ),
            ("acme", Entity::Deal, 7405, ChangeAction::Add),
        ),
        // Outgoing webhook handler (same page): only domain, endpoints, member_id, token.
        (
            FORM,
            format!(
                "event=ONCRMDEALADD&event_handler_id=975&data%5BFIELDS%5D%5BID%5D=7405&ts=1766047124&{acme_auth}&auth%5Bapplication_token%5D={HOOK_TOKEN}"
            ),
            ("acme", Entity::Deal, 7405, ChangeAction::Add),
        ),
        // The `$_REQUEST` dump of [D] local-integrations/local-webhooks.md.
        (
            FORM,
            format!(
                "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=662&ts=1724140800&auth%5Bdomain%5D=example.bitrix24.com&auth%5Bmember_id%5D=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx&auth%5Bapplication_token%5D={EXAMPLE_TOKEN}"
            ),
            ("example", Entity::Deal, 662, ChangeAction::Update),
        ),
        // The deal update example (crm-deal-update.md), as JSON from a custom hook.
        (
            "application/json",
            format!(
                r#"{{"event":"ONCRMDEALUPDATE","event_handler_id":"201","data":{{"FIELDS":{{"ID":"759"}}}},"ts":"1736405807","auth":{{"access_token":"s6p6eclrvim6da22ft9ch94ekreb52lv","expires_in":"3600","scope":"crm","domain":"some-domain.bitrix24.com","server_endpoint":"https://oauth.bitrix.info/rest/","status":"F","client_endpoint":"https://some-domain.bitrix24.com/rest/","member_id":"a223c6b3710f85df22e9377d6c4f7553","refresh_token":"4s386p3q0tr8dy89xvmt96234v3dljg8","application_token":"{APP_TOKEN}"}}}}"#
            ),
            ("acme", Entity::Deal, 759, ChangeAction::Update),
        ),
        // A funnel change (on-crm-deal-move-to-category.md).
        (
            FORM,
            format!(
                "event=ONCRMDEALMOVETOCATEGORY&data%5BFIELDS%5D%5BID%5D=6675&data%5BFIELDS%5D%5BCATEGORY_ID%5D=1&data%5BFIELDS%5D%5BSTAGE_ID%5D=C1%3ANEW&ts=1766047124&{acme_auth}&auth%5Bapplication_token%5D={APP_TOKEN}"
            ),
            ("acme", Entity::Deal, 6675, ChangeAction::Update),
        ),
        // The real captured SDK body.
        (
            FORM,
            captured_sdk_body(SDK_TOKEN),
            ("sdk", Entity::Contact, 134806, ChangeAction::Add),
        ),
    ];
    for (content_type, body, expected) in cases {
        let request = request(
            "POST",
            "https://intake.example/",
            &[("content-type", content_type)],
            body.into_bytes(),
        );
        let response = answer(&state, request);
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{expected:?}");
        let queued = queue.drain();
        assert_eq!(queued.iter().map(summary).collect::<Vec<_>>(), [expected]);
    }
}

#[test]
fn answers_each_refusal_with_its_status_and_a_reason() {
    let (state, queue) = intake();
    let good = captured_sdk_body(SDK_TOKEN);
    let cases = [
        (
            request("GET", "https://intake.example/", &[], vec![]),
            405,
            "only POST",
        ),
        (
            request(
                "POST",
                "https://intake.example/",
                &[("content-type", "text/plain")],
                good.clone().into_bytes(),
            ),
            415,
            "text/plain",
        ),
        (
            form_post(&format!("{good}&pad={}", "x".repeat(70_000))),
            413,
            "larger than",
        ),
        (
            form_post("data%5BFIELDS%5D=1&data%5BFIELDS%5D%5BID%5D=2"),
            400,
            "bad form body",
        ),
        (
            form_post(&captured_sdk_body("wrong-token")),
            401,
            "the token is wrong",
        ),
        (form_post(&captured_sdk_body("")), 401, "no token"),
        (
            form_post(&captured_sdk_body(SDK_TOKEN).replace("ONCRMCONTACTADD", "ONAPPINSTALL")),
            422,
            "ONAPPINSTALL",
        ),
        (
            form_post(&good.replace("134806", "0")),
            400,
            "data[FIELDS][ID]",
        ),
    ];
    for (request, status, reason) in cases {
        let response = answer(&state, request);
        assert_eq!(response.status().as_u16(), status, "{reason}");
        let error = json_body(&response)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(reason), "{error}");
        assert!(!error.contains(SDK_TOKEN), "{error}");
        assert_own_headers(response.headers());
        let allow = response.headers().get(header::ALLOW);
        assert_eq!(allow.is_some(), status == 405);
    }
    assert!(queue.drain().is_empty());
}

#[test]
fn echoes_no_header_of_the_request() {
    let (state, _queue) = intake();
    let request = request(
        "POST",
        "https://intake.example/?token=x",
        &[
            ("content-type", FORM),
            ("origin", "https://evil.example"),
            ("x-request-id", "abc"),
            ("access-control-request-method", "POST"),
        ],
        captured_sdk_body(SDK_TOKEN).into_bytes(),
    );
    let response = answer(&state, request);
    // The query's token contradicts the body's: refused, and still only our headers.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_own_headers(response.headers());
}

/// Log lines written while the closure runs, on this thread.
fn logged<T>(run: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

#[test]
fn a_failing_queue_gets_503_and_a_replayable_log_line_without_the_token() {
    let (state, queue) = intake();
    queue.fail_next(1);
    let (response, log) = logged(|| answer(&state, form_post(&captured_sdk_body(SDK_TOKEN))));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json_body(&response)["error"]
            .as_str()
            .unwrap()
            .contains("queue")
    );
    assert_own_headers(response.headers());
    assert!(queue.drain().is_empty());

    assert!(!log.contains(SDK_TOKEN), "{log}");
    let line: serde_json::Value = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line in {log}"));
    let fields = &line["fields"];
    assert_eq!(fields["portal"], "sdk");
    assert_eq!(fields["entity"], "contact");
    assert_eq!(fields["id"], 134806);
    assert_eq!(fields["action"], "Add");
    // The message itself, ready to send again.
    let replay = ChangeMessage::from_json(fields["change_message"].as_str().unwrap()).unwrap();
    assert_eq!(
        summary(&replay),
        ("sdk", Entity::Contact, 134806, ChangeAction::Add)
    );

    // The queue is back: the next event is queued.
    let response = answer(&state, form_post(&captured_sdk_body(SDK_TOKEN)));
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(queue.drain().len(), 1);
}

#[test]
fn refusals_are_logged_without_the_token() {
    let (state, _queue) = intake();
    let (response, log) = logged(|| answer(&state, form_post(&captured_sdk_body(APP_TOKEN))));
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        log.contains("event refused") && log.contains("401"),
        "{log}"
    );
    assert!(!log.contains(APP_TOKEN), "{log}");
}
