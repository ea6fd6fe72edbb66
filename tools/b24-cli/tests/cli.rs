//! `b24sync list` as an operator runs it, against the simulator started by each test.

mod common;

use std::process::Output;

use b24_sim::{RunningSim, SimConfig};
use common::{assert_usage_errors, b24sync, stderr};
use serde_json::Value;

async fn sim(deals: usize, contacts: usize) -> RunningSim {
    b24_sim::start(SimConfig {
        deals,
        contacts,
        user_fields: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// The JSON summary: the last line on stderr.
fn summary(output: &Output) -> Value {
    let text = stderr(output);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no summary line ({e}): {text}"))
}

#[tokio::test]
async fn streams_rows_as_ndjson_and_prints_the_summary() {
    let sim = sim(2_600, 0).await;
    let output = b24sync(
        &[
            "list",
            "--entity",
            "deal",
            "--select",
            "ID,TITLE",
            "--filter",
            r#"{">ID": 100}"#,
        ],
        &[("B24SYNC_WEBHOOK", &sim.webhook_url())],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<Value> = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 2_500);
    assert_eq!(rows[0]["ID"], "101");
    assert!(
        rows.iter()
            .all(|r| r.as_object().unwrap().keys().eq(["ID", "TITLE"]))
    );

    let summary = summary(&output);
    let keys: Vec<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "rows",
            "http_requests",
            "seconds",
            "retries",
            "throttled_503",
            "throttled_429",
            "operating_seconds"
        ]
    );
    assert_eq!(summary["rows"], 2_500);
    // 2,500 rows fill one request; without a count, a second one confirms the end.
    assert_eq!(summary["http_requests"], 2);
    assert_eq!(summary["throttled_503"], 0);
    assert!(summary["operating_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn counts_the_rows_of_a_configured_portal() {
    let sim = sim(0, 130).await;
    let dir = std::env::temp_dir().join(format!("b24sync-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[portals.local]\nwebhook_url = \"{}\"\n", sim.webhook_url()),
    )
    .unwrap();

    let output = b24sync(
        &[
            "--config",
            config.to_str().unwrap(),
            "list",
            "--portal",
            "local",
            "--entity",
            "contact",
            "--format",
            "count",
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(summary(&output)["rows"], 130);

    // The same portal through B24SYNC_CONFIG holding the JSON itself, picked as the only one.
    let json = format!(
        r#"{{"portals": {{"local": {{"webhook_url": "{}"}}}}}}"#,
        sim.webhook_url()
    );
    let output = b24sync(
        &["list", "--entity", "contact", "--format", "count"],
        &[("B24SYNC_CONFIG", &json)],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary(&output)["rows"], 130);

    let output = b24sync(
        &[
            "--config",
            config.to_str().unwrap(),
            "list",
            "--portal",
            "other",
            "--entity",
            "deal",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown portal \"other\""),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_auth_error_exits_3_without_showing_the_secret() {
    let sim = sim(3, 0).await;
    let wrong = sim
        .webhook_url()
        .replace("simsecret0123456", "notthesecret4242");
    let output = b24sync(&["list", "--entity", "deal", "--webhook", &wrong], &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("authorization failed"), "{text}");
    assert!(!text.contains("notthesecret4242"), "{text}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("notthesecret4242"));
    assert_eq!(summary_line_before_error(&text)["rows"], 0);
}

/// On failure the summary comes first, then the error line.
fn summary_line_before_error(text: &str) -> Value {
    let line = text.lines().rev().nth(1).unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no summary line ({e}): {text}"))
}

#[tokio::test]
async fn bad_usage_exits_2_with_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "list",
                "--entity",
                "invoice",
                "--webhook",
                "http://127.0.0.1:1/rest/1/abc/",
            ],
            "expected one of deal, contact, lead, company",
        ),
        (
            &[
                "list",
                "--entity",
                "deal",
                "--webhook",
                "http://127.0.0.1:1/rest/1/s3cr3tvalue/x/y",
            ],
            "--webhook: webhook URL path",
        ),
        (
            &[
                "list",
                "--entity",
                "deal",
                "--webhook",
                "http://127.0.0.1:1/rest/1/abc/",
                "--filter",
                "[1]",
            ],
            "JSON object",
        ),
        (&["list", "--entity", "deal"], "no configuration"),
    ];
    assert_usage_errors(&cases, &["s3cr3tvalue"]).await;
}

#[tokio::test]
async fn an_unreachable_portal_exits_4() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/rest/1/hidden0secret1/");
    let output = b24sync(
        &[
            "list",
            "--entity",
            "lead",
            "--webhook",
            &url,
            "--max-retries",
            "1",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("portal unreachable"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("hidden0secret1"));
}
