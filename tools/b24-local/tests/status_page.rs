//! The status page as a person sees it: the local pipeline syncs a simulated portal,
//! then headless Chromium (Debian's `chromium`, which `scripts/test.sh` installs) loads
//! `/lambda-url/status/` with the token as the Basic password, as a browser on a phone
//! would ask for it. The rendered DOM names the portal, shows the counts the database
//! holds and one SVG element per chart; screenshots (desktop and phone width) are saved
//! under `target/test-output/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use b24_local::{LocalOptions, RunningLocal};
use b24_sim::{MutateRequest, RunningSim, SimConfig};
use b24_testkit::TestDb;
use serde_json::{Value, json};

const TOKEN: &str = "local-status-t0ken-4f9a2c7e";

async fn pipeline() -> (TestDb, RunningSim, RunningLocal) {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 400,
        contacts: 120,
        user_fields: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = json!({
        "database": {"url": db.url, "schema": "b24"},
        "portals": {"demo": {"webhook_url": sim.webhook_url(), "entities": ["deal", "contact"]}},
        "status": {"tokens": [TOKEN]},
    });
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = b24_local::start(config, LocalOptions::default(), listener)
        .await
        .unwrap();
    (db, sim, local)
}

/// Debian's binary; the test needs it (scripts/test.sh installs it with apt).
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("headless Chromium is needed: apt-get install chromium (scripts/test.sh does)");
}

/// Runs Chromium headless as the README describes, with a fresh profile each time.
fn run_chromium(args: &[&str], url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "b24-status-chromium-{}-{}",
        std::process::id(),
        args.len()
    ));
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn counts(db: &TestDb, table: &str) -> (i64, i64) {
    let c = db.client().await;
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM b24.{table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// One invocation of the scheduled sync through the Invoke API, and its answer.
async fn sync(local: &RunningLocal, input: Value) -> Value {
    let invoke = format!(
        "{}/2015-03-31/functions/sync-scheduled/invocations",
        local.url()
    );
    let response = reqwest::Client::new().post(&invoke).json(&input).send();
    response.await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_shows_the_portal_its_counts_and_a_chart_per_chart() {
    let (db, sim, local) = pipeline().await;
    let client = reqwest::Client::new();
    let answer = sync(&local, json!({"portal": "demo", "mode": "full"})).await;
    assert_eq!(answer["runs"][0]["rows_inserted"], 400, "{answer}");
    // Deletions on the portal, found by a reconcile: the page shows deleted rows too.
    sim.mutate(&MutateRequest {
        entity: b24_sim::Entity::Deal,
        seed: 5,
        adds: 0,
        updates: 0,
        deletes: 7,
    })
    .await
    .unwrap();
    let input = json!({"portal": "demo", "mode": "reconcile", "entities": ["deal"]});
    let answer = sync(&local, input).await;
    assert_eq!(answer["runs"][0]["rows_deleted"], 7, "{answer}");

    // Without the token, the status function refuses (and asks for it).
    let refused = client.get(local.status_url()).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let json: Value = client
        .get(format!("{}status.json", local.status_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["portals"][0]["name"], "demo", "{json}");

    let url = local
        .status_url()
        .replacen("http://", &format!("http://status:{TOKEN}@"), 1);
    let dom = run_chromium(&["--dump-dom", "--virtual-time-budget=3000"], &url);
    assert!(dom.contains("<h1>b24sync status</h1>"), "{dom}");
    assert!(dom.contains("data-portal=\"demo\""), "{dom}");
    assert!(!dom.contains(TOKEN), "the page repeats the token");
    for (entity, table) in [("deal", "deal__demo"), ("contact", "contact__demo")] {
        let (live, deleted) = counts(&db, table).await;
        let row = dom
            .split("<tr data-entity=\"")
            .find(|row| row.starts_with(&format!("{entity}\"")))
            .unwrap_or_else(|| panic!("no row for {entity}: {dom}"));
        assert!(
            row.contains(&format!("data-live=\"{live}\"")),
            "{entity}: {row}"
        );
        assert!(
            row.contains(&format!("data-deleted=\"{deleted}\"")),
            "{entity}: {row}"
        );
    }
    assert_eq!(counts(&db, "deal__demo").await, (393, 7));
    for chart in ["rows", "durations", "errors", "lag"] {
        let svgs = dom.matches(&format!("data-chart=\"{chart}\"")).count();
        assert_eq!(svgs, 1, "{chart}: one chart element per chart");
    }
    assert!(dom.matches("<rect class=\"bar").count() > 48, "bars drawn");

    let dir = output_dir();
    for (name, size) in [
        ("status-page.png", "1280,1400"),
        ("status-page-phone.png", "412,2200"),
    ] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        run_chromium(
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
            ],
            &url,
        );
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            path.display()
        );
    }
}
