//! `b24sync push` as an operator runs it: an edit in SQL pushed to a simulated portal,
//! the outbox listed, and back-sync switched off refused with how to turn it on.

mod common;

use b24_sim::SimConfig;
use b24_testkit::TestDb;
use common::{assert_usage_errors, b24sync, stderr};
use serde_json::{Value, json};

async fn b24sync_with(args: Vec<&'static str>, env: [(&str, &str); 1]) -> std::process::Output {
    b24sync(&args, &env).await
}

#[tokio::test]
async fn pushes_an_edit_lists_the_outbox_and_names_what_is_off() {
    let sim = b24_sim::start(SimConfig {
        deals: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestDb::create().await;
    let dir = std::env::temp_dir().join(format!("b24sync-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    let document = json!({
        "database": {"url": db.url},
        "portals": {
            "acme": {"webhook_url": sim.webhook_url(), "entities": ["deal"], "back_sync": {"enabled": true}},
            "off": {"webhook_url": sim.webhook_url(), "domain": "off.example.com", "entities": ["deal"]},
        },
    });
    std::fs::write(&config, document.to_string()).unwrap();
    let env = [("B24SYNC_CONFIG", config.to_str().unwrap())];
    let run = |args: Vec<&'static str>| b24sync_with(args, env);
    let synced = run(vec![
        "sync",
        "--portal",
        "acme",
        "--mode",
        "full",
        "--migrate",
    ])
    .await;
    assert!(synced.status.success(), "{}", stderr(&synced));
    db.client()
        .await
        .execute(
            "UPDATE b24.deal__acme SET title = 'from the CLI' WHERE id = 2",
            &[],
        )
        .await
        .unwrap();

    let pushed = run(vec!["push", "--portal", "acme"]).await;
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let summary: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(
        (summary["entity"].as_str(), summary["updated"].as_u64()),
        (Some("deal"), Some(1))
    );
    let deals = sim.dump(b24_sim::Entity::Deal).await.unwrap();
    assert_eq!(
        deals.iter().find(|d| d["ID"] == "2").unwrap()["TITLE"],
        "from the CLI"
    );

    let listed = run(vec!["push", "--portal", "acme", "--list", "done"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let row: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        (row["record_id"].as_i64(), row["fields"].clone()),
        (Some(2), json!(["TITLE"]))
    );

    assert_usage_errors(
        &[
            (&["push"], "--portal"),
            (&["push", "--portal", "acme", "--list", "stuck"], "conflict"),
        ],
        &[],
    )
    .await;
    let off = run(vec!["push", "--portal", "off"]).await;
    assert_eq!(off.status.code(), Some(2), "{}", stderr(&off));
    assert!(
        stderr(&off).contains("portals.off.back_sync.enabled"),
        "{}",
        stderr(&off)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
