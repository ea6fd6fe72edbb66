//! The status function's handler against a real (throw-away) mirror: the JSON report's
//! counts equal the table's, the Markdown names every column of a table with user
//! fields of every type, the page draws its charts, and nothing answers without the
//! token or repeats a secret, in an answer or a log line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use b24_config::Config;
use b24_domain::entity::Entity;
use b24_domain::schema::{EnumItem, FieldMeta};
use b24_domain::sync::RunOutcome;
use b24_store::{RunStats, Store};
use b24_testkit::TestDb;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use status::{StatusState, handle};

/// The token of the samples in `events/status/`.
const TOKEN: &str = "st4tus-t0ken-9c2e7a51d84b";
const WEBHOOK_CODE: &str = "w3bh00kc0de5ecre7";
const APP_TOKEN: &str = "app-t0ken-51856fefc120";
const PORTAL: &str = "acme";

/// Every Bitrix24 type the mirror maps (README, "Column types"), as user fields, and
/// standard fields among them: read-only, multiple, money, enumeration, labelled.
fn fields() -> Vec<FieldMeta> {
    let field = |code: &str, bitrix_type: &str| FieldMeta {
        code: code.into(),
        title: code.into(),
        label: None,
        bitrix_type: bitrix_type.into(),
        is_multiple: false,
        is_dynamic: code.starts_with("UF_"),
        is_read_only: false,
        items: vec![],
    };
    let mut fields = vec![
        FieldMeta {
            is_read_only: true,
            title: "ID".into(),
            ..field("ID", "integer")
        },
        FieldMeta {
            title: "Name".into(),
            ..field("TITLE", "string")
        },
        FieldMeta {
            is_read_only: true,
            title: "Modified on".into(),
            ..field("DATE_MODIFY", "datetime")
        },
        field("OPPORTUNITY", "double"),
        field("STAGE_ID", "crm_status"),
        FieldMeta {
            is_multiple: true,
            ..field("PHONE", "crm_multifield")
        },
    ];
    for bitrix_type in [
        "integer",
        "user",
        "employee",
        "crm_company",
        "crm_contact",
        "crm_lead",
        "crm_deal",
        "crm_quote",
        "crm_category",
        "crm_entity",
        "iblock_element",
        "iblock_section",
        "enumeration",
        "double",
        "money",
        "char",
        "boolean",
        "date",
        "datetime",
        "file",
        "string",
        "crm_status",
        "crm_currency",
        "crm",
        "url",
        "address",
        "rest_1_app_type",
    ] {
        let code = format!("UF_CRM_{}", bitrix_type.to_uppercase());
        let mut uf = field(&code, bitrix_type);
        uf.label = Some(format!(
            "Label of {} | field",
            bitrix_type.replace('_', " ")
        ));
        if bitrix_type == "enumeration" {
            uf.items = vec![
                EnumItem {
                    id: "41".into(),
                    value: "Hot lead".into(),
                },
                EnumItem {
                    id: "42".into(),
                    value: "Cold lead".into(),
                },
            ];
        }
        fields.push(uf);
    }
    let mut multiple = field("UF_CRM_MULTI_DATE", "date");
    multiple.is_multiple = true;
    fields.push(multiple);
    // A code that cannot be a column: listed with the reason.
    fields.push(field("UF_CRM_BAD-NAME", "string"));
    fields
}

struct Mirror {
    db: TestDb,
    config: Config,
}

async fn mirror() -> Mirror {
    let db = TestDb::create().await;
    let store = Store::connect(&db.url, "b24").await.unwrap();
    store.migrate().await.unwrap();
    let layout = store
        .ensure_table(PORTAL, Entity::Deal, &fields())
        .await
        .unwrap();
    let rows: Vec<_> = (1..=250)
        .map(|id| {
            json!({"ID": id.to_string(), "TITLE": format!("deal {id}"), "DATE_MODIFY": "2026-12-08T11:59:00+03:00"})
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    store
        .upsert(PORTAL, Entity::Deal, &layout, &rows)
        .await
        .unwrap();
    store
        .soft_delete(PORTAL, Entity::Deal, &[3, 5, 8])
        .await
        .unwrap();
    for (mode, outcome, error) in [
        ("full", RunOutcome::Completed, None),
        (
            "incremental",
            RunOutcome::Failed,
            Some(format!(
                "crm.deal.list at https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/crm.deal.list: 500"
            )),
        ),
        ("incremental", RunOutcome::Completed, None),
    ] {
        let id = store.start_run(PORTAL, Entity::Deal, mode).await.unwrap();
        let stats = RunStats {
            rows_read: 250,
            rows_written: 250,
            http_requests: 2,
            error,
            outcome: Some(outcome),
            ..RunStats::default()
        };
        store.finish_run(id, &stats).await.unwrap();
    }
    let config = Config::from_json_str(
        &json!({
            "database": {"url": db.url, "schema": "b24"},
            "portals": {PORTAL: {
                "webhook_url": format!("https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/"),
                "application_tokens": [APP_TOKEN],
                "entities": ["deal", "contact"],
            }},
            "status": {"tokens": ["old-status-t0ken-00000", TOKEN]},
        })
        .to_string(),
    )
    .unwrap();
    Mirror { db, config }
}

fn sample(name: &str) -> Value {
    let path = format!("{}/../../events/status/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// A sample with another path, query, method or Authorization header.
fn variant(name: &str, change: impl FnOnce(&mut Value)) -> Request {
    let mut event = sample(name);
    change(&mut event);
    request(&event)
}

fn body(response: &Response<Body>) -> String {
    String::from_utf8(response.body().to_vec()).unwrap()
}

fn assert_no_secret(text: &str) {
    for secret in [TOKEN, "old-status-t0ken", WEBHOOK_CODE, APP_TOKEN] {
        assert!(!text.contains(secret), "{text} repeats a secret");
    }
}

async fn counted(m: &Mirror) -> (i64, i64) {
    let c = m.db.client().await;
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL)
             FROM b24.deal__acme",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "current_thread")]
async fn the_json_report_counts_what_the_table_holds_and_hides_secrets() {
    let m = mirror().await;
    let state = StatusState::connect(&m.config).await.unwrap();
    let response = handle(&state, request(&sample("status-json.json"))).await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = body(&response);
    assert_no_secret(&text);
    let report: Value = serde_json::from_str(&text).unwrap();
    let portal = &report["portals"][0];
    assert_eq!(portal["name"], PORTAL);
    let entities = portal["entities"].as_array().unwrap();
    let entity = |name: &str| entities.iter().find(|e| e["entity"] == name).unwrap();
    let deal = entity("deal");
    let (live, deleted) = counted(&m).await;
    assert_eq!((live, deleted), (247, 3));
    assert_eq!(deal["rows"], json!({"live": live, "deleted": deleted}));
    assert_eq!(deal["last_success"]["full"]["rows_written"], 250);
    assert_eq!(deal["last_success"]["incremental"]["outcome"], "completed");
    assert_eq!(deal["last_24h"]["runs"], 3);
    assert_eq!(deal["last_24h"]["failed"], 1);
    assert_eq!(deal["health"]["level"], "amber", "{deal}");
    let error = deal["last_failure"]["error"].as_str().unwrap();
    assert!(error.contains("/rest/1/***/crm.deal.list"), "{error}");
    assert!(
        deal["cursor_lag_seconds"].as_f64().unwrap() >= 0.0,
        "{deal}"
    );
    // A configured entity never synced: reported, without rows, amber.
    let contact = entity("contact");
    assert!(contact.get("rows").is_none(), "{contact}");
    assert_eq!(contact["health"]["reasons"][0], "not synced yet");
    assert_eq!(report["health"]["level"], "amber");
    // The outbox exists (back-sync's migration): reported; before it, absent.
    assert_eq!(portal["outbox"]["pending"], 0, "{portal}");
    let c = m.db.client().await;
    c.batch_execute("DROP TABLE b24._outbox CASCADE")
        .await
        .unwrap();
    let response = handle(&state, request(&sample("status-json.json"))).await;
    let report: Value = serde_json::from_str(&body(&response)).unwrap();
    assert!(report["portals"][0].get("outbox").is_none(), "{report}");
    assert!(report["portals"][0].get("forward_backlog").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn the_markdown_names_every_column_of_a_table_with_user_fields_of_every_type() {
    let m = mirror().await;
    let state = StatusState::connect(&m.config).await.unwrap();
    let response = handle(&state, request(&sample("schema-md.json"))).await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    assert_eq!(
        response.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let markdown = body(&response);
    assert_no_secret(&markdown);
    assert!(
        markdown.contains("## `b24.deal__acme`: portal `acme`, deal"),
        "{markdown}"
    );
    let c = m.db.client().await;
    let columns: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, format_type(a.atttypid, a.atttypmod) FROM information_schema.columns i
             JOIN pg_attribute a ON a.attrelid = 'b24.deal__acme'::regclass AND a.attname = i.column_name
             WHERE table_schema = 'b24' AND table_name = 'deal__acme' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(columns.len() > 35, "{columns:?}");
    for (column, pg_type) in &columns {
        let row = format!("| `{column}` | {pg_type} |");
        assert!(markdown.contains(&row), "no row {row:?} in\n{markdown}");
    }
    for field in fields() {
        if field.code.contains('-') {
            continue;
        }
        let code = format!("`{}`", field.code);
        assert!(markdown.contains(&code), "{code} missing");
        if let Some(label) = &field.label {
            assert!(
                markdown.contains(&label.replace('|', "\\|")),
                "{label} missing"
            );
        }
    }
    let line = |column: &str| {
        markdown
            .lines()
            .find(|l| l.starts_with(&format!("| `{column}` |")))
            .unwrap()
            .to_string()
    };
    assert!(line("uf_crm_money").contains("its currency is in `uf_crm_money_currency`"));
    assert!(line("uf_crm_money_currency").contains("(currency)"));
    assert!(line("id").contains("no (read-only)"), "{}", line("id"));
    assert!(
        line("title").contains("| Name | string | yes |"),
        "{}",
        line("title")
    );
    assert!(line("phone").contains("JSON array"));
    assert!(line("uf_crm_enumeration").contains("2 items listed below"));
    assert!(line("deleted_at").contains("NULL for live rows"));
    assert!(markdown.contains("| `41` | Hot lead |") && markdown.contains("| `42` | Cold lead |"));
    assert!(
        markdown.contains("| `UF_CRM_BAD-NAME` |"),
        "the rejected field is listed"
    );

    // Filters narrow it; bad ones are named.
    let contacts = handle(
        &state,
        variant("schema-md.json", |e| {
            e["rawQueryString"] = json!("entity=contact")
        }),
    )
    .await;
    assert!(!body(&contacts).contains("deal__acme"));
    for (query, named) in [("entity=deals", "entity"), ("table=x", "\"table\"")] {
        let response = handle(
            &state,
            variant("schema-md.json", |e| e["rawQueryString"] = json!(query)),
        )
        .await;
        assert_eq!(response.status(), 400, "{query}");
        assert!(body(&response).contains(named), "{}", body(&response));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_page_shows_each_portal_with_its_counts_and_four_charts() {
    let m = mirror().await;
    let state = StatusState::connect(&m.config).await.unwrap();
    let response = handle(&state, request(&sample("page.json"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let html = body(&response);
    assert_no_secret(&html);
    assert!(!html.contains("<script"));
    let (live, deleted) = counted(&m).await;
    assert!(html.contains(&format!("data-live=\"{live}\"")), "{html}");
    assert!(html.contains(&format!("data-deleted=\"{deleted}\"")));
    assert!(
        html.contains("data-portal=\"acme\" data-level=\"amber\""),
        "{html}"
    );
    for chart in ["rows", "durations", "errors", "lag"] {
        assert_eq!(
            html.matches(&format!("data-chart=\"{chart}\"")).count(),
            1,
            "{chart}"
        );
    }
}

/// Log lines written while the handler runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_token_nothing_is_served_and_nothing_leaks() {
    let m = mirror().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let state = StatusState::connect(&m.config).await.unwrap();
    let refused = handle(&state, request(&sample("no-token.json"))).await;
    assert_eq!(refused.status(), 401);
    let challenges: Vec<_> = refused
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        challenges,
        [
            "Bearer realm=\"b24sync status\"",
            "Basic realm=\"b24sync status\", charset=\"UTF-8\""
        ]
    );
    let refusal = body(&refused);
    let wrong_token = format!("Bearer {}x", TOKEN);
    for (path, authorization) in [
        ("/status.json", wrong_token.as_str()),
        ("/", "Bearer st4tus-t0ken"),
        ("/schema.md", "Basic c3RhdHVzOndyb25n"),
        ("/no-such-page", "nonsense"),
    ] {
        let response = handle(
            &state,
            variant("status-json.json", |e| {
                e["rawPath"] = json!(path);
                e["headers"]["authorization"] = json!(authorization);
            }),
        )
        .await;
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            body(&response),
            refusal,
            "the same answer whatever was wrong"
        );
    }
    // The token as a Basic password, as a browser sends it after asking.
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("status:{TOKEN}")
        )
    );
    let page = handle(
        &state,
        variant("page.json", |e| {
            e["headers"]["authorization"] = json!(basic)
        }),
    )
    .await;
    assert_eq!(page.status(), 200);
    // With the token: methods, paths and HEAD.
    let posted = handle(
        &state,
        variant("page.json", |e| {
            e["requestContext"]["http"]["method"] = json!("POST")
        }),
    )
    .await;
    assert_eq!(posted.status(), 405);
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
    let missing = handle(
        &state,
        variant("page.json", |e| e["rawPath"] = json!("/status.xml")),
    )
    .await;
    assert_eq!(missing.status(), 404);
    assert!(body(&missing).contains("/status.json"));
    let head = handle(
        &state,
        variant("status-json.json", |e| {
            e["requestContext"]["http"]["method"] = json!("HEAD")
        }),
    )
    .await;
    assert_eq!(head.status(), 200);
    assert!(head.body().is_empty());
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("status request"), "{logged}");
    assert_no_secret(&logged);
    assert!(!logged.contains("c3RhdHVzOndyb25n"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_configuration_without_tokens_cannot_start_the_function() {
    let mut config = mirror().await.config;
    config.status = None;
    let error = StatusState::connect(&config).await.err().unwrap();
    assert_eq!(error.error_type(), "Configuration");
    assert!(error.to_string().contains("status.tokens"), "{error}");
}
