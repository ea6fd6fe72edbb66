//! Beyond the four classic entities, end to end against the simulator and PostgreSQL:
//! smart processes through `crm.item.*` (full, incremental, reconcile, dynamic-item
//! events through the intake and the worker), the four entities through `crm.item.*`
//! on a portal configured for it, product rows, the reference tables, and pipeline
//! moves (which no webhook event announces).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use b24_client::Client;
use b24_domain::entity::Entity;
use b24_domain::item::KeyMap;
use b24_domain::sync::Mode;
use b24_sim::{
    CategoryRequest, CurrencyRequest, ItemMutateRequest, MutateOutcome, RunningSim, SimConfig,
    SmartProcessConfig, StatusRequest, UserRequest,
};
use b24_sync::{EntityOutcome, SyncRequest, SyncService};
use common::intake::*;
use common::*;
use futures::TryStreamExt;
use serde_json::{Map, Value, json};

/// A smart process with funnels, user fields and product rows.
const ORDERS: u32 = 1038;
/// A smart process with neither funnels nor products.
const PROJECTS: u32 = 128;

fn two_smart_processes(seed: u64) -> SimConfig {
    let mut orders = SmartProcessConfig::new(ORDERS, "Orders", 700);
    orders.user_fields = 12; // every type the simulator cycles through, enumeration and file included
    orders.with_products = true;
    orders.product_rows = 3;
    orders.categories = vec!["Export".into(), "Repairs".into()];
    let mut projects = SmartProcessConfig::new(PROJECTS, "Projects", 260);
    projects.user_fields = 3;
    SimConfig {
        seed,
        deals: 400,
        product_rows: 4,
        deal_categories: vec!["Wholesale".into()],
        limits: no_limits(),
        smart_processes: vec![orders, projects],
        ..SimConfig::default()
    }
}

/// A service mirroring deals and every smart process of the simulated portal, with
/// `extra` merged into the portal's configuration.
async fn smart_service(db: &TestDb, sim: &RunningSim, extra: Value) -> SyncService {
    let mut portal = json!({
        "webhook_url": sim.webhook_url(),
        "entities": ["deal"],
        "smart_processes": "all",
        "limits": {"burst": 10000, "drain": 1000},
    });
    for (key, value) in extra.as_object().unwrap() {
        portal[key] = value.clone();
    }
    service_of(db, json!({ PORTAL: portal })).await
}

async fn run(service: &SyncService, mode: Mode) -> Vec<EntityOutcome> {
    let request = SyncRequest {
        portal: PORTAL.to_string(),
        entities: None,
        mode,
        confirm_deletes: false,
    };
    service
        .handle(&request, None)
        .await
        .unwrap_or_else(|(_, error)| panic!("{mode}: {error}"))
}

/// The entities the outcomes are about, in order, each run completed.
fn completed(outcomes: &[EntityOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            EntityOutcome::Done(summary) => {
                assert!(summary.completed, "{summary:?}");
                summary.entity.clone()
            }
            failed => panic!("{failed:?}"),
        })
        .collect()
}

/// How `crm.item.*` names map to the mirror's codes for `entity_type_id`.
async fn key_map(client: &Client, entity_type_id: u32, multifields: &[&str]) -> KeyMap {
    let answer = client
        .call(
            "crm.item.fields",
            &json!({"entityTypeId": entity_type_id, "useOriginalUfNames": "Y"}),
        )
        .await
        .unwrap();
    let fields = answer.result["fields"].as_object().unwrap();
    KeyMap::from_fields(fields, multifields).0
}

/// Every live item of `entity_type_id` as `crm.item.get` shows it, in the mirror's codes.
async fn portal_items(
    sim: &RunningSim,
    client: &Client,
    entity_type_id: u32,
    multifields: &[&str],
) -> BTreeMap<u64, Map<String, Value>> {
    let keys = key_map(client, entity_type_id, multifields).await;
    sim.dump_items(entity_type_id, true)
        .await
        .unwrap()
        .into_iter()
        .map(|item| {
            let row = keys.classic_row(item);
            (row["ID"].as_u64().unwrap(), row)
        })
        .collect()
}

/// Asserts the mirror of `entity` holds exactly the portal's live items, every field equal.
async fn assert_items_mirrored(
    sim: &RunningSim,
    client: &Client,
    db: &TestDb,
    entity: Entity,
    multifields: &[&str],
) {
    let portal = portal_items(sim, client, entity.type_id(), multifields).await;
    let mirror = mirror_records(db, entity).await;
    assert!(!portal.is_empty(), "{entity}: nothing on the portal");
    assert_eq!(
        portal.keys().collect::<Vec<_>>(),
        mirror.keys().collect::<Vec<_>>(),
        "{entity}: live ID sets differ"
    );
    for (id, record) in &portal {
        assert_record_equals(entity, *id, record, &mirror[id]);
    }
}

fn item_changes(
    entity_type_id: u32,
    seed: u64,
    adds: usize,
    updates: usize,
    deletes: usize,
) -> ItemMutateRequest {
    ItemMutateRequest {
        entity_type_id,
        seed,
        adds,
        updates,
        deletes,
        repeat_share: 0.0,
    }
}

#[tokio::test]
async fn two_smart_processes_converge_through_full_incremental_and_reconcile() {
    let db = TestDb::create().await;
    let sim = sim(two_smart_processes(21)).await;
    let service = smart_service(&db, &sim, json!({})).await;
    let client = service.client(PORTAL).await.unwrap();
    let smart = [Entity::Smart(ORDERS), Entity::Smart(PROJECTS)];

    let full = run(&service, Mode::Full).await;
    assert_eq!(
        completed(&full),
        ["deal", "sp_1038", "sp_128"],
        "the configured entities, then every smart process crm.type.list has"
    );
    for entity in smart {
        assert_items_mirrored(&sim, &client, &db, entity, &[]).await;
        let types = assert_typed_columns_match_raw(&db, entity).await;
        assert_eq!(types.get("stage_id").map(String::as_str), Some("text"));
        assert_eq!(
            types.get("date_modify").map(String::as_str),
            Some("timestamp with time zone"),
            "updatedTime is kept as the classic DATE_MODIFY"
        );
        assert!(
            types.keys().any(|c| c.starts_with("uf_crm_")),
            "{entity}: user fields have their own columns: {types:?}"
        );
    }
    // Enumeration fields of smart processes resolve to their labels like the deals'.
    let labels: i64 = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {SCHEMA}._field_items WHERE portal = $1 AND entity = 'sp_1038'"
            ),
            &[&PORTAL],
        )
        .await
        .unwrap()
        .get(0);
    assert!(labels > 0, "no enumeration items stored for sp_1038");
    let stats = sim.stats().await.unwrap();
    assert!(
        stats.requests_by_method.contains_key("crm.item.list"),
        "{stats:?}"
    );

    // Adds, updates and deletes on both types: the incremental pass brings every added
    // and changed item; only the reconcile can see the deletions.
    let mut outcomes: Vec<(Entity, MutateOutcome)> = Vec::new();
    for (n, entity) in smart.into_iter().enumerate() {
        let request = item_changes(entity.type_id(), 30 + n as u64, 25, 60, 12);
        outcomes.push((entity, sim.mutate_items(&request).await.unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    completed(&run(&service, Mode::Incremental).await);
    for (entity, outcome) in &outcomes {
        let portal = portal_items(&sim, &client, entity.type_id(), &[]).await;
        let mirror = mirror_records(&db, *entity).await;
        for id in outcome.added.iter().chain(&outcome.updated) {
            if let Some(record) = portal.get(id) {
                assert_record_equals(*entity, *id, record, &mirror[id]);
            }
        }
        assert!(
            outcome.deleted.iter().all(|id| mirror.contains_key(id)),
            "{entity}: no deletion is seen before the reconcile"
        );
    }
    completed(&run(&service, Mode::Reconcile).await);
    for (entity, outcome) in &outcomes {
        assert_items_mirrored(&sim, &client, &db, *entity, &[]).await;
        let deleted: BTreeSet<i64> = deleted_ids(&db, *entity).await.into_iter().collect();
        let expected: BTreeSet<i64> = outcome.deleted.iter().map(|id| *id as i64).collect();
        assert_eq!(deleted, expected, "{entity}: soft-deleted by the reconcile");
    }
}

#[tokio::test]
async fn dynamic_item_events_reach_the_mirror_through_the_intake_and_the_worker() {
    let (intake, addr) = start_intake().await;
    let config = SimConfig {
        member_id: Some(MEMBER_ID.to_string()),
        events: Some(event_target(addr)),
        ..two_smart_processes(22)
    };
    let db = TestDb::create().await;
    let sim = sim(config).await;
    let service = smart_service(&db, &sim, json!({})).await;
    let client = service.client(PORTAL).await.unwrap();
    completed(&run(&service, Mode::Full).await);
    sim.reset_stats().await.unwrap();

    let orders = sim
        .mutate_items(&item_changes(ORDERS, 5, 10, 30, 6))
        .await
        .unwrap();
    let projects = sim
        .mutate_items(&item_changes(PROJECTS, 6, 4, 12, 3))
        .await
        .unwrap();
    let raised = [&orders, &projects]
        .iter()
        .map(|o| o.added.len() + o.updated.len() + o.deleted.len())
        .sum::<usize>();
    let started = Instant::now();
    let mut messages = Vec::new();
    while messages.len() < raised {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} of {raised} events arrived",
            messages.len()
        );
        messages.extend(intake.queue.drain());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(intake.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    let entities: BTreeSet<Entity> = messages.iter().map(|m| m.entity).collect();
    assert_eq!(
        entities,
        BTreeSet::from([Entity::Smart(PROJECTS), Entity::Smart(ORDERS)]),
        "ONCRMDYNAMICITEM* events name their type"
    );

    let applied = service.apply_changes(deliveries(messages), None).await;
    assert!(applied.failed.is_empty(), "{applied:?}");
    for entity in [Entity::Smart(ORDERS), Entity::Smart(PROJECTS)] {
        assert_items_mirrored(&sim, &client, &db, entity, &[]).await;
    }
    let deleted = deleted_ids(&db, Entity::Smart(ORDERS)).await;
    assert_eq!(
        deleted.len(),
        orders.deleted.len(),
        "deletions from their events"
    );
    let stats = sim.stats().await.unwrap();
    assert!(
        !stats.requests_by_method.contains_key("crm.deal.list"),
        "items are looked up through crm.item.list: {stats:?}"
    );
}

#[tokio::test]
async fn the_four_entities_mirror_through_crm_item_on_a_portal_set_to_items() {
    let config = SimConfig {
        seed: 23,
        deals: 300,
        contacts: 250,
        leads: 120,
        companies: 90,
        user_fields: 8,
        limits: no_limits(),
        ..SimConfig::default()
    };
    let db = TestDb::create().await;
    let sim = sim(config).await;
    let portal = json!({
        "webhook_url": sim.webhook_url(),
        "entities": ["deal", "contact", "lead", "company"],
        "api": "items",
        "limits": {"burst": 10000, "drain": 1000},
    });
    let service = service_of(&db, json!({ PORTAL: portal })).await;
    let client = service.client(PORTAL).await.unwrap();
    completed(&run(&service, Mode::Full).await);
    let multifields = ["PHONE", "EMAIL", "WEB", "IM"];
    for entity in Entity::ALL {
        let fm: &[&str] = if entity == Entity::Deal {
            &[]
        } else {
            &multifields
        };
        assert_items_mirrored(&sim, &client, &db, entity, fm).await;
    }
    let contacts = mirror_records(&db, Entity::Contact).await;
    assert!(
        contacts
            .values()
            .any(|raw| raw.get("PHONE").is_some_and(|p| p.is_array())),
        "fm becomes the classic PHONE lists"
    );
    let stats = sim.stats().await.unwrap();
    for classic in [
        "crm.deal.list",
        "crm.contact.list",
        "crm.lead.list",
        "crm.company.list",
    ] {
        assert!(!stats.requests_by_method.contains_key(classic), "{stats:?}");
    }

    // An incremental pass and an update through the worker use the same API.
    let outcome = sim
        .mutate_items(&item_changes(Entity::Deal.type_id(), 9, 5, 20, 0))
        .await
        .unwrap();
    let applied = service
        .apply_changes(deliveries(changes_of(Entity::Deal, &outcome)), None)
        .await;
    assert!(applied.failed.is_empty(), "{applied:?}");
    completed(&run(&service, Mode::Incremental).await);
    assert_items_mirrored(&sim, &client, &db, Entity::Deal, &[]).await;
}

/// `product_row` of one owner type as `(id, owner, product, price, quantity)`.
async fn mirrored_product_rows(
    db: &TestDb,
    owner_type: &str,
) -> BTreeSet<(i64, i64, String, String, String)> {
    let sql = format!(
        "SELECT id, owner_id, product_name, price::float8::text, quantity::float8::text
         FROM {SCHEMA}.product_row WHERE portal = $1 AND owner_type = $2"
    );
    db.client()
        .await
        .query(&sql, &[&PORTAL, &owner_type])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// The portal's product rows of `entity_type_id` in the same shape, those of live
/// owners only.
async fn portal_product_rows(
    sim: &RunningSim,
    entity_type_id: u32,
    live: &BTreeSet<u64>,
) -> BTreeSet<(i64, i64, String, String, String)> {
    let number = |v: &Value| v.as_f64().unwrap().to_string();
    sim.dump_product_rows(entity_type_id)
        .await
        .unwrap()
        .iter()
        .filter(|row| live.contains(&row["ownerId"].as_u64().unwrap()))
        .map(|row| {
            (
                row["id"].as_i64().unwrap(),
                row["ownerId"].as_i64().unwrap(),
                row["productName"].as_str().unwrap().to_string(),
                number(&row["price"]),
                number(&row["quantity"]),
            )
        })
        .collect()
}

async fn assert_product_rows_equal(
    sim: &RunningSim,
    db: &TestDb,
    entity: Entity,
    owner_type: &str,
) {
    let live: BTreeSet<u64> = mirror_records(db, entity).await.into_keys().collect();
    let portal = portal_product_rows(sim, entity.type_id(), &live).await;
    let mirror = mirrored_product_rows(db, owner_type).await;
    assert!(portal.len() > live.len(), "{entity}: most owners have rows");
    assert_eq!(portal.len(), mirror.len(), "{entity}: product row counts");
    assert_eq!(portal, mirror, "{entity}: product rows differ");
}

#[tokio::test]
async fn product_rows_of_deals_and_smart_processes_equal_the_portal_on_both_apis() {
    for api in ["classic", "items"] {
        let db = TestDb::create().await;
        let sim = sim(two_smart_processes(24)).await;
        let extra = json!({"product_rows": true, "api": api});
        let service = smart_service(&db, &sim, extra).await;
        let full = run(&service, Mode::Full).await;
        completed(&full);
        let written: BTreeMap<String, u64> = full
            .iter()
            .filter_map(|o| match o {
                EntityOutcome::Done(s) => Some((s.entity.clone(), s.product_rows_written)),
                _ => None,
            })
            .collect();
        assert!(written["deal"] > 400, "{api}: {written:?}");
        assert!(written["sp_1038"] > 700, "{api}: {written:?}");
        assert_eq!(written["sp_128"], 0, "{api}: Projects link no products");
        assert_product_rows_equal(&sim, &db, Entity::Deal, "D").await;
        assert_product_rows_equal(&sim, &db, Entity::Smart(ORDERS), "T40e").await;
        let stats = sim.stats().await.unwrap();
        let row_reads = ["crm.item.productrow.list", "crm.deal.productrows.get"]
            .iter()
            .filter_map(|m| stats.requests_by_method.get(*m))
            .sum::<u64>();
        assert!(
            row_reads >= 1_100,
            "{api}: one command per owner: {stats:?}"
        );

        // Changed deals get new product rows; the incremental pass and the worker
        // bring them.
        sim.reset_stats().await.unwrap();
        let deals = mutate(&sim, Entity::Deal, 3, 10, 40, 0).await;
        let orders = sim
            .mutate_items(&item_changes(ORDERS, 4, 8, 30, 0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        completed(&run(&service, Mode::Incremental).await);
        let applied = service
            .apply_changes(deliveries(changes_of(Entity::Smart(ORDERS), &orders)), None)
            .await;
        assert!(applied.failed.is_empty(), "{applied:?}");
        assert_product_rows_equal(&sim, &db, Entity::Deal, "D").await;
        assert_product_rows_equal(&sim, &db, Entity::Smart(ORDERS), "T40e").await;
        let stats = sim.stats().await.unwrap();
        assert!(
            stats.http_requests < 20,
            "{api}: {} changed deals and {} orders: a handful of requests, not one per owner: {stats:?}",
            deals.updated.len() + deals.added.len(),
            orders.updated.len() + orders.added.len()
        );
    }
}

/// `(key, raw)` of every row of a reference table of the test portal.
async fn reference_rows(db: &TestDb, table: &str, key: &str) -> BTreeMap<String, Value> {
    let sql = format!("SELECT {key}::text, raw FROM {SCHEMA}.{table} WHERE portal = $1");
    db.client()
        .await
        .query(&sql, &[&PORTAL])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn keyed(
    rows: impl IntoIterator<Item = Value>,
    key: impl Fn(&Value) -> String,
) -> BTreeMap<String, Value> {
    rows.into_iter().map(|row| (key(&row), row)).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn paged(client: &Client, method: &str) -> Vec<Value> {
    client
        .list_paged(method, Map::new())
        .map_ok(Value::Object)
        .try_collect()
        .await
        .unwrap()
}

async fn assert_reference_tables_equal_portal(client: &Client, db: &TestDb) {
    let mut categories = Vec::new();
    for entity_type_id in [2, ORDERS, PROJECTS] {
        let answer = client
            .call(
                "crm.category.list",
                &json!({"entityTypeId": entity_type_id}),
            )
            .await
            .unwrap();
        categories.extend(
            answer.result["categories"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let categories = keyed(categories, |c| format!("{}/{}", c["entityTypeId"], c["id"]));
    assert_eq!(
        reference_rows(db, "crm_category", "entity_type_id || '/' || id").await,
        categories,
        "crm_category"
    );
    let statuses = keyed(paged(client, "crm.status.list").await, |s| {
        format!("{}/{}", text(&s["ENTITY_ID"]), text(&s["STATUS_ID"]))
    });
    assert!(
        statuses
            .keys()
            .any(|k| k.starts_with("DYNAMIC_1038_STAGE_")),
        "{:?}",
        statuses.keys()
    );
    assert_eq!(
        reference_rows(db, "crm_status", "entity_id || '/' || status_id").await,
        statuses,
        "crm_status"
    );
    let currencies = client.call("crm.currency.list", &json!({})).await.unwrap();
    let currencies = keyed(currencies.result.as_array().unwrap().clone(), |c| {
        text(&c["CURRENCY"])
    });
    assert_eq!(
        reference_rows(db, "crm_currency", "currency").await,
        currencies
    );
    let users = keyed(paged(client, "user.get").await, |u| text(&u["ID"]));
    assert_eq!(reference_rows(db, "bitrix_user", "id").await, users);
}

#[tokio::test]
async fn reference_tables_equal_the_portal_and_follow_its_changes() {
    let db = TestDb::create().await;
    let sim = sim(two_smart_processes(25)).await;
    let service = smart_service(&db, &sim, json!({})).await;
    let client = service.client(PORTAL).await.unwrap();
    for n in 0..60 {
        let user = UserRequest {
            name: format!("User{n}"),
            last_name: "Example".into(),
            email: Some(format!("user{n}@example.test")),
            work_position: None,
            active: n % 7 != 0,
            departments: vec![1],
        };
        sim.add_user(&user).await.unwrap();
    }
    let tables = completed(&run(&service, Mode::Reference).await);
    assert_eq!(
        tables,
        ["crm_category", "crm_status", "crm_currency", "bitrix_user"]
    );
    assert_reference_tables_equal_portal(&client, &db).await;

    // A new funnel, stage list value, currency and user are there after the next refresh.
    let funnel = CategoryRequest {
        entity_type_id: ORDERS,
        name: "Returns".into(),
        sort: 900,
    };
    sim.add_category(&funnel).await.unwrap();
    let source = StatusRequest {
        entity_id: "SOURCE".into(),
        status_id: "UC_FAIR".into(),
        name: "Trade fair".into(),
        sort: 10,
    };
    sim.add_status(&source).await.unwrap();
    let currency = CurrencyRequest {
        currency: "GBP".into(),
        full_name: "Pound sterling".into(),
        amount: 1.17,
        sort: 300,
    };
    sim.add_currency(&currency).await.unwrap();
    completed(&run(&service, Mode::Reference).await);
    assert_reference_tables_equal_portal(&client, &db).await;
    let names: Vec<String> = db
        .client()
        .await
        .query(
            &format!("SELECT name FROM {SCHEMA}.crm_category WHERE portal = $1 AND entity_type_id = $2 ORDER BY sort, id"),
            &[&PORTAL, &(ORDERS as i32)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(names.contains(&"Returns".to_string()), "{names:?}");
}

/// The ID of the funnel of `entity_type_id` named `name`.
async fn category_id(client: &Client, entity_type_id: u32, name: &str) -> i64 {
    client
        .call(
            "crm.category.list",
            &json!({"entityTypeId": entity_type_id}),
        )
        .await
        .unwrap()
        .result["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no funnel {name}"))["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_deal_moved_to_another_pipeline_is_caught_by_the_incremental_sync_and_joins_its_names() {
    let (intake, addr) = start_intake().await;
    let config = SimConfig {
        member_id: Some(MEMBER_ID.to_string()),
        events: Some(event_target(addr)),
        ..two_smart_processes(26)
    };
    let db = TestDb::create().await;
    let sim = sim(config).await;
    let service = smart_service(&db, &sim, json!({})).await;
    let client = service.client(PORTAL).await.unwrap();
    completed(&run(&service, Mode::Full).await);
    completed(&run(&service, Mode::Reference).await);
    let wholesale = category_id(&client, 2, "Wholesale").await;
    let general: Vec<u64> = mirror_records(&db, Entity::Deal)
        .await
        .into_iter()
        .filter(|(_, raw)| raw["CATEGORY_ID"] == "0")
        .map(|(id, _)| id)
        .take(3)
        .collect();
    assert_eq!(general.len(), 3);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for id in &general {
        let moved = json!({"entityTypeId": 2, "id": id, "fields": {"categoryId": wholesale}});
        client.call("crm.item.update", &moved).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        intake.queue.drain().is_empty(),
        "a pipeline move sends no event a webhook can subscribe to"
    );

    completed(&run(&service, Mode::Incremental).await);
    assert_mirror_equals_portal(&sim, &db, Entity::Deal).await;
    // The README's example: deals with their pipeline's and stage's names.
    let sql = format!(
        "SELECT d.id, c.name AS pipeline, s.name AS stage
         FROM {SCHEMA}.deal d
         JOIN {SCHEMA}.crm_category c
           ON c.portal = d.portal AND c.entity_type_id = 2 AND c.id = d.category_id
         JOIN {SCHEMA}.crm_status s
           ON s.portal = d.portal AND s.status_id = d.stage_id
          AND s.entity_id = CASE d.category_id WHEN 0 THEN 'DEAL_STAGE'
                              ELSE 'DEAL_STAGE_' || d.category_id END
         WHERE d.portal = $1 AND d.id = ANY($2)"
    );
    let ids: Vec<i64> = general.iter().map(|id| *id as i64).collect();
    let joined = db
        .client()
        .await
        .query(&sql, &[&PORTAL, &ids])
        .await
        .unwrap();
    assert_eq!(
        joined.len(),
        3,
        "every moved deal joins its pipeline and stage"
    );
    for row in joined {
        assert_eq!(row.get::<_, String>(1), "Wholesale");
        let stage: String = row.get(2);
        assert!(!stage.is_empty());
    }
}

#[tokio::test]
async fn an_edit_of_a_smart_process_row_in_sql_reaches_the_portal_through_back_sync() {
    let db = TestDb::create().await;
    let sim = sim(two_smart_processes(27)).await;
    let service = smart_service(&db, &sim, json!({"back_sync": {"enabled": true}})).await;
    let client = service.client(PORTAL).await.unwrap();
    completed(&run(&service, Mode::Full).await);
    let sql =
        format!("UPDATE {SCHEMA}.sp_1038 SET title = 'Edited in SQL' WHERE portal = $1 AND id = 7");
    let edited = db.client().await.execute(&sql, &[&PORTAL]).await.unwrap();
    assert_eq!(edited, 1);

    let summaries = service.push(Some(PORTAL), None).await.unwrap();
    let pushed: u64 = summaries.iter().map(|s| s.updated).sum();
    assert_eq!(pushed, 1, "{summaries:?}");
    let item = client
        .call("crm.item.get", &json!({"entityTypeId": ORDERS, "id": 7}))
        .await
        .unwrap();
    assert_eq!(item.result["item"]["title"], "Edited in SQL");
    // The refreshed row has the portal's new version; nothing is left to push.
    assert_items_mirrored(&sim, &client, &db, Entity::Smart(ORDERS), &[]).await;
    let again = service.push(Some(PORTAL), None).await.unwrap();
    assert_eq!(again.iter().map(|s| s.rows).sum::<u64>(), 0, "{again:?}");
}

/// `(id, owner, type, stage)` of every stage-history entry of `entity_type_id`.
type HistoryEntry = (i64, i64, i64, String);

async fn mirrored_history(db: &TestDb, entity_type_id: u32) -> Vec<HistoryEntry> {
    let sql = format!(
        "SELECT id, owner_id, type_id, stage_id FROM {SCHEMA}.stage_history
         WHERE portal = $1 AND entity_type_id = $2 ORDER BY id"
    );
    db.client()
        .await
        .query(&sql, &[&PORTAL, &(entity_type_id as i32)])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn portal_history(sim: &RunningSim, entity_type_id: u32) -> Vec<HistoryEntry> {
    let mut entries: Vec<HistoryEntry> = sim
        .dump_stage_history(entity_type_id)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            let stage = e.get("STAGE_ID").or_else(|| e.get("STATUS_ID")).unwrap();
            (
                e["ID"].as_i64().unwrap(),
                e["OWNER_ID"].as_i64().unwrap(),
                e["TYPE_ID"].as_i64().unwrap(),
                stage.as_str().unwrap().to_string(),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// Rows read per stage-history summary of a reference refresh.
fn history_reads(outcomes: &[EntityOutcome]) -> BTreeMap<String, u64> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            EntityOutcome::Done(s) if s.entity.starts_with("stage_history_") => {
                Some((s.entity.clone(), s.rows_read))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn stage_history_is_appended_from_the_portal_and_later_refreshes_read_only_new_entries() {
    let config = SimConfig {
        leads: 150,
        ..two_smart_processes(28)
    };
    let db = TestDb::create().await;
    let sim = sim(config).await;
    let extra = json!({"entities": ["deal", "lead"], "stage_history": true});
    let service = smart_service(&db, &sim, extra).await;
    let client = service.client(PORTAL).await.unwrap();
    completed(&run(&service, Mode::Full).await);
    let first = run(&service, Mode::Reference).await;
    completed(&first);
    let types = [1, 2, ORDERS, PROJECTS];
    for entity_type_id in types {
        let portal = portal_history(&sim, entity_type_id).await;
        assert!(
            !portal.is_empty(),
            "{entity_type_id}: no history on the portal"
        );
        assert_eq!(
            mirrored_history(&db, entity_type_id).await,
            portal,
            "{entity_type_id}"
        );
    }
    assert_eq!(
        history_reads(&first)["stage_history_deal"],
        400,
        "one creation per deal"
    );

    // Stage moves by every path, a pipeline move and new records; the next refresh
    // reads exactly the entries they added.
    let before: BTreeMap<u32, usize> = {
        let mut counts = BTreeMap::new();
        for t in types {
            counts.insert(t, portal_history(&sim, t).await.len());
        }
        counts
    };
    mutate(&sim, Entity::Deal, 4, 5, 60, 0).await;
    mutate(&sim, Entity::Lead, 5, 3, 40, 0).await;
    sim.mutate_items(&item_changes(ORDERS, 6, 4, 50, 0))
        .await
        .unwrap();
    let wholesale = category_id(&client, 2, "Wholesale").await;
    // Deal 4 is in the general pipeline (seeded deals alternate between the two).
    let moved = json!({"entityTypeId": 2, "id": 4, "fields": {"categoryId": wholesale}});
    client.call("crm.item.update", &moved).await.unwrap();
    let second = run(&service, Mode::Reference).await;
    completed(&second);
    let reads = history_reads(&second);
    for (entity_type_id, name) in [
        (1, "stage_history_lead"),
        (2, "stage_history_deal"),
        (ORDERS, "stage_history_sp_1038"),
        (PROJECTS, "stage_history_sp_128"),
    ] {
        let portal = portal_history(&sim, entity_type_id).await;
        assert_eq!(
            mirrored_history(&db, entity_type_id).await,
            portal,
            "{name}"
        );
        let added = (portal.len() - before[&entity_type_id]) as u64;
        assert_eq!(reads[name], added, "{name}: only the new entries are read");
    }
    assert!(reads["stage_history_deal"] > 5, "{reads:?}");
    let funnel_changes = mirrored_history(&db, 2)
        .await
        .into_iter()
        .filter(|(_, owner, kind, _)| *owner == 4 && *kind == 5)
        .count();
    assert_eq!(funnel_changes, 1, "the pipeline move is in the history");
}
