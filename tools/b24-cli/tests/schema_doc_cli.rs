//! `b24sync schema-doc` after a sync of a simulated portal with user fields of every
//! type the simulator offers: every column of the table is described, from the
//! database alone.

mod common;

use b24_sim::SimConfig;
use b24_testkit::TestDb;
use common::{assert_usage_errors, b24sync, stderr};

#[tokio::test]
async fn describes_every_column_of_a_synced_table() {
    // Twelve user fields cycle through the ten types, multiple ones included.
    let sim = b24_sim::start(SimConfig {
        deals: 50,
        user_fields: 12,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestDb::create().await;
    let env = [
        ("B24SYNC_WEBHOOK", sim.webhook_url()),
        ("B24SYNC_DATABASE_URL", db.url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let synced = b24sync(
        &[
            "sync",
            "--portal",
            "acme",
            "--entity",
            "deal",
            "--mode",
            "full",
            "--migrate",
        ],
        &env,
    )
    .await;
    assert!(synced.status.success(), "{}", stderr(&synced));

    let described = b24sync(&["schema-doc", "--entity", "deal"], &env[1..]).await;
    assert!(described.status.success(), "{}", stderr(&described));
    let markdown = String::from_utf8(described.stdout).unwrap();
    assert!(
        markdown.contains("## `b24.deal__acme`: portal `acme`, deal"),
        "{markdown}"
    );
    let c = db.client().await;
    let columns: Vec<String> = c
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'b24' AND table_name = 'deal__acme'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let user_columns = columns.iter().filter(|c| c.starts_with("uf_crm_")).count();
    assert!(user_columns >= 12, "{columns:?}");
    for column in &columns {
        assert!(
            markdown.contains(&format!("| `{column}` |")),
            "{column} is not described:\n{markdown}"
        );
    }
    // The simulator's labels and enumeration items, with their labels.
    assert!(markdown.contains("Custom enumeration field"), "{markdown}");
    assert!(markdown.contains("| List item #1 |"), "{markdown}");
    // No table of another entity, and a usage error for an unknown one.
    assert!(!markdown.contains("contact__acme"));
    assert_usage_errors(&[(&["schema-doc", "--entity", "deals"], "deals")], &[]).await;
}
