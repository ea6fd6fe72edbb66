//! Postgres ingest throughput for wide deal rows (about 60 standard fields and 20
//! user fields), through the same `ensure_table` + `upsert` path the sync uses.
//!
//! ```text
//! cargo run --release -p b24-store --example upsert_bench -- [--rows 100000] [--batch 2500]
//! ```
//!
//! Creates its own database on `--server` (default postgres://postgres@127.0.0.1:5432),
//! reports rows/s for a first insert, a re-upsert of unchanged rows and a re-upsert
//! of changed rows, and drops the database.

// A wide deal as one `json!` literal needs deeper macro recursion.
#![recursion_limit = "256"]

use std::time::Instant;

use b24_domain::entity::Entity;
use b24_domain::schema::{EnumItem, FieldMeta};
use b24_store::{Row, Store, TableLayout, UpsertStats};
use clap::Parser;
use serde_json::{Value, json};
use tokio_postgres::NoTls;

#[derive(Parser)]
struct Args {
    /// Rows to write in each phase.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Rows per upsert call (a full sync writes one chained batch, up to 2,500 rows).
    #[arg(long, default_value_t = 2_500)]
    batch: usize,
    /// PostgreSQL server URL without a database name.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    server: String,
}

/// Standard deal fields (crm.deal.fields) plus user fields of every common type.
fn deal_fields() -> Vec<FieldMeta> {
    let standard: &[(&str, &str)] = &[
        ("ID", "integer"),
        ("TITLE", "string"),
        ("TYPE_ID", "crm_status"),
        ("CATEGORY_ID", "crm_category"),
        ("STAGE_ID", "crm_status"),
        ("STAGE_SEMANTIC_ID", "string"),
        ("IS_NEW", "char"),
        ("IS_RECURRING", "char"),
        ("IS_RETURN_CUSTOMER", "char"),
        ("IS_REPEATED_APPROACH", "char"),
        ("PROBABILITY", "integer"),
        ("CURRENCY_ID", "crm_currency"),
        ("OPPORTUNITY", "double"),
        ("IS_MANUAL_OPPORTUNITY", "char"),
        ("TAX_VALUE", "double"),
        ("COMPANY_ID", "crm_company"),
        ("CONTACT_ID", "crm_contact"),
        ("QUOTE_ID", "crm_quote"),
        ("BEGINDATE", "date"),
        ("CLOSEDATE", "date"),
        ("OPENED", "char"),
        ("CLOSED", "char"),
        ("COMMENTS", "string"),
        ("ASSIGNED_BY_ID", "user"),
        ("CREATED_BY_ID", "user"),
        ("MODIFY_BY_ID", "user"),
        ("MOVED_BY_ID", "user"),
        ("DATE_CREATE", "datetime"),
        ("DATE_MODIFY", "datetime"),
        ("MOVED_TIME", "datetime"),
        ("SOURCE_ID", "crm_status"),
        ("SOURCE_DESCRIPTION", "string"),
        ("LEAD_ID", "crm_lead"),
        ("ADDITIONAL_INFO", "string"),
        ("LOCATION_ID", "location"),
        ("ORIGINATOR_ID", "string"),
        ("ORIGIN_ID", "string"),
        ("UTM_SOURCE", "string"),
        ("UTM_MEDIUM", "string"),
        ("UTM_CAMPAIGN", "string"),
        ("UTM_CONTENT", "string"),
        ("UTM_TERM", "string"),
        ("LAST_ACTIVITY_TIME", "datetime"),
        ("LAST_ACTIVITY_BY", "user"),
        ("PARENT_ID_1220", "crm_entity"),
        ("PARENT_ID_1224", "crm_entity"),
        ("LAST_COMMUNICATION_TIME", "string"),
        ("TRACE", "string"),
        ("IS_WORK", "char"),
        ("IS_WON", "char"),
        ("IS_LOSE", "char"),
        ("RECEIVED_AMOUNT", "double"),
        ("LOST_AMOUNT", "double"),
        ("HAS_PRODUCTS", "char"),
        ("SEARCH_CONTENT", "string"),
        ("ORDER_STAGE", "string"),
        ("EVENT_DATE", "datetime"),
        ("EVENT_ID", "crm_status"),
        ("EVENT_DESCRIPTION", "string"),
        ("PRODUCT_ID", "integer"),
    ];
    let user: &[(&str, &str)] = &[
        ("UF_CRM_TEXT1", "string"),
        ("UF_CRM_TEXT2", "string"),
        ("UF_CRM_TEXT3", "string"),
        ("UF_CRM_NOTE", "string"),
        ("UF_CRM_INT1", "integer"),
        ("UF_CRM_INT2", "integer"),
        ("UF_CRM_DBL1", "double"),
        ("UF_CRM_DBL2", "double"),
        ("UF_CRM_FLAG1", "boolean"),
        ("UF_CRM_FLAG2", "boolean"),
        ("UF_CRM_DATE1", "date"),
        ("UF_CRM_DT1", "datetime"),
        ("UF_CRM_LIST1", "enumeration"),
        ("UF_CRM_LIST2", "enumeration"),
        ("UF_CRM_BUDGET", "money"),
        ("UF_CRM_MANAGER", "employee"),
        ("UF_CRM_LINK", "crm"),
        ("UF_CRM_SITE", "url"),
        ("UF_CRM_ADDR", "address"),
        ("UF_CRM_TAGS", "string"),
    ];
    let items = vec![
        EnumItem {
            id: "79".into(),
            value: "First".into(),
        },
        EnumItem {
            id: "80".into(),
            value: "Second".into(),
        },
    ];
    standard
        .iter()
        .chain(user)
        .map(|(code, ty)| FieldMeta {
            code: code.to_string(),
            title: code.to_string(),
            label: code.starts_with("UF_").then(|| format!("Label of {code}")),
            bitrix_type: ty.to_string(),
            is_multiple: *code == "UF_CRM_TAGS",
            is_dynamic: code.starts_with("UF_"),
            is_read_only: false,
            items: if *ty == "enumeration" {
                items.clone()
            } else {
                vec![]
            },
        })
        .collect()
}

/// A deal as crm.deal.list returns it: every value a string.
fn deal_row(id: u64, version: u32) -> Row {
    let modified = format!("2024-08-30T14:{:02}:{:02}+02:00", version % 60, id % 60);
    let row = json!({
        "ID": id.to_string(), "TITLE": format!("Deal #{id} for customer {}", id * 7919 % 100_000), "TYPE_ID": "COMPLEX",
        "CATEGORY_ID": "1", "STAGE_ID": "C1:PREPARATION", "STAGE_SEMANTIC_ID": "P", "IS_NEW": "N", "IS_RECURRING": "N",
        "IS_RETURN_CUSTOMER": "Y", "IS_REPEATED_APPROACH": "N", "PROBABILITY": "50", "CURRENCY_ID": "EUR",
        "OPPORTUNITY": format!("{}.{:02}", id * 13 % 1_000_000, id % 100), "IS_MANUAL_OPPORTUNITY": "Y", "TAX_VALUE": "0.00",
        "COMPANY_ID": (id % 5000 + 1).to_string(), "CONTACT_ID": (id % 9000 + 1).to_string(), "QUOTE_ID": null,
        "BEGINDATE": "2024-08-30T02:00:00+02:00", "CLOSEDATE": "2024-09-09T02:00:00+02:00", "OPENED": "Y", "CLOSED": "N",
        "COMMENTS": format!("[B]Call back[/B] about order {id}\nSecond line of the comment, version {version}."),
        "ASSIGNED_BY_ID": (id % 40 + 1).to_string(), "CREATED_BY_ID": "1", "MODIFY_BY_ID": "1", "MOVED_BY_ID": "1",
        "DATE_CREATE": "2024-08-30T14:29:00+02:00", "DATE_MODIFY": modified, "MOVED_TIME": "2024-08-30T14:29:00+02:00",
        "SOURCE_ID": "CALLBACK", "SOURCE_DESCRIPTION": "Website callback form", "LEAD_ID": null,
        "ADDITIONAL_INFO": "Additional information", "LOCATION_ID": null, "ORIGINATOR_ID": null, "ORIGIN_ID": null,
        "UTM_SOURCE": "google", "UTM_MEDIUM": "CPC", "UTM_CAMPAIGN": "autumn", "UTM_CONTENT": null, "UTM_TERM": null,
        "LAST_ACTIVITY_TIME": "2024-08-30T14:29:00+02:00", "LAST_ACTIVITY_BY": "1", "PARENT_ID_1220": "22",
        "PARENT_ID_1224": null, "LAST_COMMUNICATION_TIME": "30.08.2024 14:29:00", "TRACE": null, "IS_WORK": "Y",
        "IS_WON": "N", "IS_LOSE": "N", "RECEIVED_AMOUNT": "0.00", "LOST_AMOUNT": "0.00", "HAS_PRODUCTS": "Y",
        "SEARCH_CONTENT": format!("{id} Deal customer google autumn"), "ORDER_STAGE": null, "EVENT_DATE": null,
        "EVENT_ID": null, "EVENT_DESCRIPTION": null, "PRODUCT_ID": null,
        "UF_CRM_TEXT1": "Some free text typed by a manager", "UF_CRM_TEXT2": format!("REF-{id:08}"), "UF_CRM_TEXT3": "",
        "UF_CRM_NOTE": "Customer prefers e-mail", "UF_CRM_INT1": (id % 1000).to_string(), "UF_CRM_INT2": "7",
        "UF_CRM_DBL1": "12.5", "UF_CRM_DBL2": format!("{}.25", id % 500), "UF_CRM_FLAG1": "1", "UF_CRM_FLAG2": "0",
        "UF_CRM_DATE1": "2024-09-09T00:00:00+03:00", "UF_CRM_DT1": "2024-09-09T16:31:12+03:00", "UF_CRM_LIST1": "79",
        "UF_CRM_LIST2": "80", "UF_CRM_BUDGET": format!("{}|EUR", id % 10_000), "UF_CRM_MANAGER": "6",
        "UF_CRM_LINK": format!("CO_{}", id % 5000 + 1), "UF_CRM_SITE": "https://example.com/landing",
        "UF_CRM_ADDR": "Main St 1, Berlin|52.52;13.40", "UF_CRM_TAGS": ["vip", "autumn"]
    });
    match row {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

async fn phase(
    store: &Store,
    layout: &TableLayout,
    args: &Args,
    name: &str,
    version: u32,
) -> anyhow::Result<()> {
    let mut total = UpsertStats::default();
    let mut busy = 0.0;
    let mut first = 1;
    while first <= args.rows {
        let last = (first + args.batch as u64 - 1).min(args.rows);
        let rows: Vec<Row> = (first..=last).map(|id| deal_row(id, version)).collect();
        let started = Instant::now();
        let stats = store
            .upsert("bench.bitrix24.com", Entity::Deal, layout, &rows)
            .await?;
        busy += started.elapsed().as_secs_f64();
        total.inserted += stats.inserted;
        total.updated += stats.updated;
        total.unchanged += stats.unchanged;
        total.invalid_values += stats.invalid_values;
        first = last + 1;
    }
    println!(
        "{name:<18} {:>9} rows in {busy:>6.2} s = {:>7.0} rows/s  (inserted {}, updated {}, unchanged {}, invalid values {})",
        args.rows,
        args.rows as f64 / busy,
        total.inserted,
        total.updated,
        total.unchanged,
        total.invalid_values
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = format!("b24_upsert_bench_{}", std::process::id());
    let (admin, connection) =
        tokio_postgres::connect(&format!("{}/postgres", args.server), NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let result = async {
        let store = Store::connect(&format!("{}/{database}", args.server), "b24").await?;
        store.migrate().await?;
        let fields = deal_fields();
        let layout = store
            .ensure_table("bench.bitrix24.com", Entity::Deal, &fields)
            .await?;
        let sample = serde_json::to_string(&deal_row(1, 0))?;
        println!(
            "{} fields -> {} columns; raw record {} bytes; batches of {}",
            fields.len(),
            layout.columns().len() + 6,
            sample.len(),
            args.batch
        );
        phase(&store, &layout, &args, "first insert", 0).await?;
        phase(&store, &layout, &args, "unchanged re-upsert", 0).await?;
        phase(&store, &layout, &args, "changed re-upsert", 1).await?;
        anyhow::Ok(())
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    result
}
