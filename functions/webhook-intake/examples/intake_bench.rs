//! Intake micro-benchmark: parse + verify + message build per event (the pure
//! `event::accept`), and the whole handler with an in-memory queue.
//!
//! `cargo run --release -p webhook-intake --example intake_bench [-- EVENTS]`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use b24_config::Config;
use b24_domain::event::{self, IntakeRequest};
use b24_domain::ports::InMemoryQueue;
use lambda_http::Body;
use webhook_intake::{IntakeState, handle};

const TOKEN: &str = "sdk-playground-token-7f3a";

fn main() {
    let events: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("EVENTS must be a whole number"))
        .unwrap_or(200_000);
    // Five portals of two tokens each: the match walks the list and compares both.
    let mut portals = String::new();
    for n in 0..4 {
        portals.push_str(&format!(
            r#""p{n}": {{"webhook_url": "https://p{n}.bitrix24.com/rest/1/code/", "application_tokens": ["old-{n}", "new-{n}"]}},"#
        ));
    }
    let config = Config::from_json_str(&format!(
        r#"{{"portals": {{{portals} "sdk": {{"webhook_url": "https://bitrix24-php-sdk-playground.bitrix24.com/rest/1/code/",
            "member_id": "010b6886ebc205e43ae65000ee00addb", "application_tokens": ["old-token", "{TOKEN}"]}}}}}}"#
    ))
    .expect("valid benchmark configuration");
    let identities = config.portal_identities();

    // The real captured SDK body with the token appended.
    let form = format!(
        "event=ONCRMCONTACTADD&event_handler_id=58&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Baccess_token%5D=be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48&auth%5Bexpires%5D=1727022526&auth%5Bexpires_in%5D=3600&auth%5Bscope%5D=crm%2Cplacement%2Cuser_brief&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=L&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbitrix24-php-sdk-playground.bitrix24.com%2Frest%2F&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Buser_id%5D=1&auth%5Bapplication_token%5D={TOKEN}"
    );
    let json = format!(
        r#"{{"event":"ONCRMDEALUPDATE","data":{{"FIELDS":{{"ID":"759"}}}},"ts":"1736405807","auth":{{"domain":"bitrix24-php-sdk-playground.bitrix24.com","member_id":"010b6886ebc205e43ae65000ee00addb","application_token":"{TOKEN}"}}}}"#
    );

    println!("intake_bench: {events} events per case, 5 portals x 2 tokens");
    for (name, content_type, body) in [
        (
            "form (captured SDK body)",
            "application/x-www-form-urlencoded",
            &form,
        ),
        ("json (custom hook)", "application/json", &json),
    ] {
        let headers = [("content-type", content_type.as_bytes())];
        let request = IntakeRequest {
            method: "POST",
            headers: &headers,
            query: None,
            body: body.as_bytes(),
            body_is_base64: false,
        };
        let received_at = chrono::Utc::now();
        let accept = || event::accept(black_box(&request), &identities, received_at);
        accept().expect("the benchmark event is accepted");
        let micros = per_event(events, || {
            black_box(accept().ok());
        });
        println!(
            "  parse + verify + message, {name}, {} B: {micros:.2} us/event",
            body.len()
        );
    }

    let queue = Arc::new(InMemoryQueue::new());
    let state = IntakeState::new(&config, queue.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let micros = per_event(events, || {
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("https://intake.example/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::Binary(form.clone().into_bytes()))
            .expect("a valid request");
        let response = runtime.block_on(handle(&state, request));
        assert_eq!(response.status(), 202);
        if queue.drain().len() != 1 {
            panic!("the event was not queued");
        }
    });
    println!(
        "  whole handler (request build, accept, in-memory queue, answer), form: {micros:.2} us/event"
    );
}

/// Mean microseconds per call after a warm-up of a tenth of the calls.
fn per_event(events: u32, mut run: impl FnMut()) -> f64 {
    for _ in 0..events / 10 {
        run();
    }
    let start = Instant::now();
    for _ in 0..events {
        run();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(events)
}
