//! A throw-away database per test on the local PostgreSQL.

use b24_domain::schema::{EnumItem, FieldMeta};
use b24_store::{Row, Store};
use serde_json::Value;
use tokio_postgres::types::FromSqlOwned;
use tokio_postgres::{Client, Row as PgRow};

pub use b24_testkit::TestDb;

pub const SCHEMA: &str = "b24";

/// A migrated store on a test database.
pub async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, SCHEMA).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A migrated store whose statements give up on a lock after `lock_timeout`, so a test
/// holding a lock sees the store's "wait for a later run" path quickly.
pub async fn store_with_lock_timeout(db: &TestDb, lock_timeout: std::time::Duration) -> Store {
    let session = b24_domain::database::SessionSettings {
        lock_timeout,
        ..Default::default()
    };
    let store = Store::connect_with(&db.url, SCHEMA, &session)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

pub fn field(code: &str, bitrix_type: &str) -> FieldMeta {
    FieldMeta {
        code: code.into(),
        title: code.into(),
        label: None,
        bitrix_type: bitrix_type.into(),
        is_multiple: false,
        is_dynamic: code.starts_with("UF_"),
        is_read_only: false,
        items: vec![],
    }
}

pub fn multiple(mut f: FieldMeta) -> FieldMeta {
    f.is_multiple = true;
    f
}

pub fn labelled(mut f: FieldMeta, label: &str) -> FieldMeta {
    f.label = Some(label.into());
    f
}

pub fn with_items(mut f: FieldMeta, items: &[(&str, &str)]) -> FieldMeta {
    f.items = items
        .iter()
        .map(|(id, value)| EnumItem {
            id: id.to_string(),
            value: value.to_string(),
        })
        .collect();
    f
}

pub fn row(value: Value) -> Row {
    value.as_object().expect("a JSON object").clone()
}

/// The name (unqualified, a plain identifier) of `portal`'s table of `entity` in
/// [`SCHEMA`], from the store's registry.
pub async fn portal_table(c: &Client, portal: &str, entity: b24_domain::entity::Entity) -> String {
    c.query_one(
        "SELECT table_name FROM b24._mirror_tables WHERE portal = $1 AND entity = $2",
        &[&portal, &entity.as_str()],
    )
    .await
    .unwrap()
    .get(0)
}

/// The one value the one row of `sql` holds.
pub async fn scalar<T: FromSqlOwned>(c: &Client, sql: &str) -> T {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every row of `sql`, each as `read` makes it.
pub async fn query_rows<T>(c: &Client, sql: &str, read: impl Fn(&PgRow) -> T) -> Vec<T> {
    c.query(sql, &[]).await.unwrap().iter().map(read).collect()
}

/// The two values the one row of `sql` holds.
pub async fn scalar_pair<A: FromSqlOwned, B: FromSqlOwned>(c: &Client, sql: &str) -> (A, B) {
    let row = c.query_one(sql, &[]).await.unwrap();
    (row.get(0), row.get(1))
}

/// `(column, data type)` of every column of `table` in [`SCHEMA`], in table order.
pub async fn column_types(c: &Client, table: &str) -> Vec<(String, String)> {
    c.query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'b24' AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The data type of column `name` among `columns` (from [`column_types`]).
pub fn type_of<'a>(columns: &'a [(String, String)], name: &str) -> Option<&'a str> {
    columns
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.as_str())
}
