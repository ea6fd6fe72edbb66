//! What the sync tests share: a throw-away database, a simulator, and the comparison of
//! the mirror with the portal's own dump.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod intake;

use std::collections::BTreeMap;
use std::time::Duration;

use b24_client::{Client, ClientOptions};
use b24_domain::change::{ChangeAction, ChangeMessage};
use b24_domain::entity::Entity;
use b24_domain::webhook::WebhookUrl;
use b24_sim::{
    MutateOutcome, MutateRequest, RunningSim, SimConfig, UserFieldRequest, UserFieldType,
};
use b24_store::{Store, TableLayout};
use b24_sync::{SyncService, Syncer};
pub use b24_testkit::TestDb;
use serde_json::{Value, json};

pub const PORTAL: &str = "test";
pub const SCHEMA: &str = "b24";

pub async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, SCHEMA).await.unwrap();
    store.migrate().await.unwrap();
    store
}

pub async fn sim(config: SimConfig) -> RunningSim {
    b24_sim::start(config).await.unwrap()
}

/// What most sync tests start from: a throw-away database with the store migrated, a
/// simulated portal and a client of it. Bind every part, even unused (`_db`): dropping
/// one drops the database or stops the simulator.
pub async fn setup(config: SimConfig) -> (TestDb, Store, RunningSim, Client) {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let sim = sim(config).await;
    let client = client(&sim);
    (db, store, sim, client)
}

/// Syncs the test portal through `client` into `store`.
pub fn syncer<'a>(client: &'a Client, store: &'a Store) -> Syncer<'a> {
    Syncer {
        client,
        store,
        portal: PORTAL,
        product_rows: &[],
    }
}

/// A client with short timeouts so injected hangs cost seconds, not minutes.
pub fn client(sim: &RunningSim) -> Client {
    let webhook = WebhookUrl::parse(&sim.webhook_url()).unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    Client::new(webhook, options).unwrap()
}

/// The simulator's name for a domain entity.
pub fn sim_entity(entity: Entity) -> b24_sim::Entity {
    match entity {
        Entity::Deal => b24_sim::Entity::Deal,
        Entity::Contact => b24_sim::Entity::Contact,
        Entity::Lead => b24_sim::Entity::Lead,
        Entity::Company => b24_sim::Entity::Company,
        Entity::Smart(id) => panic!("smart process {id}: not a classic simulator entity"),
    }
}

pub async fn mutate(
    sim: &RunningSim,
    entity: Entity,
    seed: u64,
    adds: usize,
    updates: usize,
    deletes: usize,
) -> MutateOutcome {
    let request = MutateRequest {
        entity: sim_entity(entity),
        seed,
        adds,
        updates,
        deletes,
    };
    sim.mutate(&request).await.unwrap()
}

/// Adds a user field to the portal's deals and returns its code: the simulator's own
/// code, or `code` as it is (unchecked, so hostile codes get through).
pub async fn add_deal_field(
    sim: &RunningSim,
    field_type: UserFieldType,
    multiple: bool,
    code: Option<&str>,
) -> String {
    let request = UserFieldRequest {
        entity: b24_sim::Entity::Deal,
        field_type,
        multiple,
        code: code.map(str::to_string),
        unchecked: code.is_some(),
    };
    sim.add_user_field(&request).await.unwrap()
}

/// The deal table's layout from the portal's field metadata, as a sync would make it.
pub async fn deal_layout(client: &Client, store: &Store) -> TableLayout {
    let fields = client.call("crm.deal.fields", &json!({})).await.unwrap();
    let fields = b24_domain::schema::parse_fields(&fields.result).unwrap();
    store
        .ensure_table(PORTAL, Entity::Deal, &fields)
        .await
        .unwrap()
}

/// The name of the table holding the test portal's rows of `entity` (the view named
/// after the entity has only the standard columns every portal shares).
pub async fn table_name(db: &TestDb, entity: Entity) -> String {
    db.client()
        .await
        .query_one(
            &format!(
                "SELECT table_name FROM {SCHEMA}._mirror_tables WHERE portal = $1 AND entity = $2"
            ),
            &[&PORTAL, &entity.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every live record on the portal, by ID.
pub async fn portal_records(
    sim: &RunningSim,
    entity: Entity,
) -> BTreeMap<u64, serde_json::Map<String, Value>> {
    let records = sim.dump(sim_entity(entity)).await.unwrap();
    records.into_iter().map(|r| (id_of(&r), r)).collect()
}

fn id_of(record: &serde_json::Map<String, Value>) -> u64 {
    match &record["ID"] {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_u64().unwrap(),
    }
}

/// Every live mirror row's `raw`, by ID.
pub async fn mirror_records(
    db: &TestDb,
    entity: Entity,
) -> BTreeMap<u64, serde_json::Map<String, Value>> {
    let client = db.client().await;
    let sql = format!(
        "SELECT id, raw FROM {SCHEMA}.{} WHERE portal = $1 AND deleted_at IS NULL",
        entity.as_str()
    );
    client
        .query(&sql, &[&PORTAL])
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let id: i64 = row.get(0);
            let raw: Value = row.get(1);
            (id as u64, raw.as_object().unwrap().clone())
        })
        .collect()
}

/// Asserts the mirror holds exactly the portal's live records, every field equal.
pub async fn assert_mirror_equals_portal(sim: &RunningSim, db: &TestDb, entity: Entity) {
    let portal = portal_records(sim, entity).await;
    let mirror = mirror_records(db, entity).await;
    let portal_ids: Vec<&u64> = portal.keys().collect();
    let mirror_ids: Vec<&u64> = mirror.keys().collect();
    assert_eq!(
        portal_ids.len(),
        mirror_ids.len(),
        "{entity}: live row counts differ"
    );
    assert_eq!(portal_ids, mirror_ids, "{entity}: live ID sets differ");
    for (id, record) in &portal {
        assert_record_equals(entity, *id, record, &mirror[id]);
    }
}

/// Asserts a mirror row's `raw` holds every field of the portal's record.
pub fn assert_record_equals(
    entity: Entity,
    id: u64,
    record: &serde_json::Map<String, Value>,
    raw: &serde_json::Map<String, Value>,
) {
    for (field, value) in record {
        // The dump has `get`'s form, where an empty user field is "", while `list`
        // (the mirror's source) gives null.
        let empty_in_both = value == "" && raw.get(field) == Some(&Value::Null);
        if !empty_in_both {
            assert_eq!(
                raw.get(field),
                Some(value),
                "{entity} {id}: field {field} differs"
            );
        }
    }
}

/// Asserts every typed column holds its field's value from `raw`, converted the way the
/// README documents (so a broken conversion of any type fails here).
pub async fn assert_typed_columns_match_raw(
    db: &TestDb,
    entity: Entity,
) -> BTreeMap<String, String> {
    let client = db.client().await;
    let table = table_name(db, entity).await;
    let columns = client
        .query(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 \
             AND column_name NOT IN ('portal', 'id', 'raw', 'synced_at', 'deleted_at')",
            &[&SCHEMA, &table],
        )
        .await
        .unwrap();
    let multiple_dates: Vec<String> = client
        .query(
            &format!(
                "SELECT column_name FROM {SCHEMA}._fields \
                 WHERE portal = $1 AND entity = $2 AND bitrix_type = 'date' AND is_multiple"
            ),
            &[&PORTAL, &entity.as_str()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut types = BTreeMap::new();
    for column in columns {
        let name: String = column.get(0);
        let data_type: String = column.get(1);
        let code = name.to_uppercase();
        let (code, expected) = if let Some(base) = code
            .strip_suffix("_CURRENCY")
            .filter(|_| name.starts_with("uf_"))
        {
            (
                base.to_string(),
                format!("nullif(split_part(raw->>'{base}', '|', 2), '')"),
            )
        } else {
            let text = format!("nullif(raw->>'{code}', '')");
            let expected = match data_type.as_str() {
                "bigint" => format!("({text})::bigint"),
                "numeric" => format!("(split_part({text}, '|', 1))::numeric"),
                "boolean" => format!("({text}) IN ('Y', '1', 'true')"),
                "date" => calendar_date_sql(&text),
                "timestamp with time zone" => format!("({text})::timestamptz"),
                "jsonb" if multiple_dates.contains(&name) => {
                    let date = calendar_date_sql("nullif(e, '')");
                    format!(
                        "(SELECT jsonb_agg(to_jsonb({date}::text) ORDER BY n) \
                         FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(raw->'{code}') = 'array' \
                         THEN raw->'{code}' END) WITH ORDINALITY AS x(e, n))"
                    )
                }
                "jsonb" => format!(
                    "nullif(nullif(nullif(raw->'{code}', '\"\"'::jsonb), '[]'::jsonb), 'null'::jsonb)"
                ),
                _ => text,
            };
            (code, expected)
        };
        let actual = if data_type == "jsonb" {
            format!("nullif(\"{name}\", '[]'::jsonb)")
        } else {
            format!("\"{name}\"")
        };
        let sql = format!(
            "SELECT count(*) FROM {SCHEMA}.{table} WHERE portal = $1 AND raw ? '{code}' AND {actual} IS DISTINCT FROM {expected}"
        );
        let mismatches: i64 = client
            .query_one(&sql, &[&PORTAL])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        assert_eq!(
            mismatches, 0,
            "{entity}.{name} ({data_type}) differs from raw in {mismatches} rows"
        );
        types.insert(name, data_type);
    }
    types
}

/// SQL for the calendar date a date field's text means: `YYYY-MM-DD` as it is, a
/// datetime (midnight UTC in the portal's offset) as the UTC date of that instant.
fn calendar_date_sql(text: &str) -> String {
    format!(
        "(CASE WHEN length({text}) = 10 THEN ({text})::date \
         ELSE (({text})::timestamptz AT TIME ZONE 'UTC')::date END)"
    )
}

/// Simulator limits switched off, for tests about something else than pacing.
pub fn no_limits() -> b24_sim::LimitConfig {
    b24_sim::LimitConfig {
        enabled: false,
        ..b24_sim::LimitConfig::default()
    }
}

/// The latest `_sync_runs` row, as far as the run guards record it.
#[derive(Debug)]
pub struct RecordedRun {
    pub outcome: Option<String>,
    pub would_delete: Option<i64>,
    pub live_rows: Option<i64>,
    pub finished: bool,
}

pub async fn last_run(db: &TestDb) -> RecordedRun {
    let row = db
        .client()
        .await
        .query_one(
            &format!(
                "SELECT outcome, would_delete, live_rows, finished_at IS NOT NULL
                 FROM {SCHEMA}._sync_runs ORDER BY id DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap();
    RecordedRun {
        outcome: row.get(0),
        would_delete: row.get(1),
        live_rows: row.get(2),
        finished: row.get(3),
    }
}

pub async fn run_count(db: &TestDb) -> i64 {
    let sql = format!("SELECT count(*) FROM {SCHEMA}._sync_runs");
    db.client().await.query_one(&sql, &[]).await.unwrap().get(0)
}

/// Runs recorded without an end (a run must always record how it ended).
pub async fn runs_without_end(db: &TestDb) -> i64 {
    let sql = format!("SELECT count(*) FROM {SCHEMA}._sync_runs WHERE finished_at IS NULL");
    db.client().await.query_one(&sql, &[]).await.unwrap().get(0)
}

/// IDs of the portal's soft-deleted mirror rows.
pub async fn deleted_ids(db: &TestDb, entity: Entity) -> Vec<i64> {
    let sql = format!(
        "SELECT id FROM {SCHEMA}.{} WHERE portal = $1 AND deleted_at IS NOT NULL ORDER BY id",
        entity.as_str()
    );
    let rows = db.client().await.query(&sql, &[&PORTAL]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// A service over `db` whose portals are `(name, webhook URL)`, each mirroring every
/// entity with the default limits and deletion guard.
pub async fn service(db: &TestDb, portals: &[(&str, String)]) -> SyncService {
    let portals: serde_json::Map<String, Value> = portals
        .iter()
        .map(|(name, url)| {
            let portal =
                json!({"webhook_url": url, "entities": ["deal", "contact", "lead", "company"]});
            (name.to_string(), portal)
        })
        .collect();
    service_of(db, Value::Object(portals)).await
}

/// A service over `db` with the configuration's `portals` section as given.
pub async fn service_of(db: &TestDb, portals: Value) -> SyncService {
    let config = json!({"database": {"url": db.url, "schema": SCHEMA}, "portals": portals});
    let config = b24_config::Config::from_json_str(&config.to_string()).unwrap();
    SyncService::connect(config, true).await.unwrap()
}

/// A change message of the test portal, as the intake builds it.
pub fn change(entity: Entity, id: u64, action: ChangeAction) -> ChangeMessage {
    ChangeMessage {
        portal: PORTAL.to_string(),
        entity,
        id,
        action,
        event_time: None,
        received_at: chrono::Utc::now(),
    }
}

/// The messages a mutation's events become, in the order the portal raised them
/// (adds, updates, deletes).
pub fn changes_of(entity: Entity, outcome: &MutateOutcome) -> Vec<ChangeMessage> {
    let actions = [
        (&outcome.added, ChangeAction::Add),
        (&outcome.updated, ChangeAction::Update),
        (&outcome.deleted, ChangeAction::Delete),
    ];
    actions
        .into_iter()
        .flat_map(|(ids, action)| ids.iter().map(move |&id| change(entity, id, action)))
        .collect()
}

/// Queue deliveries of `messages`, each with its own message ID (`m0`, `m1`, ...).
pub fn deliveries(
    messages: impl IntoIterator<Item = ChangeMessage>,
) -> Vec<(String, ChangeMessage)> {
    messages
        .into_iter()
        .enumerate()
        .map(|(n, message)| (format!("m{n}"), message))
        .collect()
}

/// Every mirror row of the test portal's `entity`, soft-deleted ones too:
/// `(id, raw, deleted)`, by ID.
pub async fn mirror_rows(db: &TestDb, entity: Entity) -> Vec<(i64, Value, bool)> {
    let sql = format!(
        "SELECT id, raw, deleted_at IS NOT NULL FROM {SCHEMA}.{} WHERE portal = $1 ORDER BY id",
        entity.as_str()
    );
    let rows = db.client().await.query(&sql, &[&PORTAL]).await.unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The IDs among `ids` the webhook's user can see (one lookup request per 2,500).
pub async fn visible_ids(client: &Client, entity: Entity, ids: &[u64]) -> Vec<u64> {
    let select = ["ID".to_string()];
    let rows = client
        .fetch_by_ids(&entity.method("list"), ids, &select)
        .await
        .unwrap();
    let mut visible: Vec<u64> = rows.iter().map(id_of).collect();
    visible.sort_unstable();
    visible
}
