//! A throw-away database per test on the local PostgreSQL.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use b24_domain::schema::{EnumItem, FieldMeta};
use b24_store::{Row, Store};
use serde_json::Value;
use tokio_postgres::{Client, NoTls};

/// Server URL without a database; override with `B24_TEST_PG`.
fn server_url() -> String {
    std::env::var("B24_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

pub const SCHEMA: &str = "b24";

/// A database created for one test and dropped (with its connections) when dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "b24_store_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&format!("{}/postgres", server_url())).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!("{}/{name}", server_url());
        TestDb { name, url }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, SCHEMA).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// A plain client for looking at what the store wrote.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a separate thread gets its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let admin = connect(&format!("{}/postgres", server_url())).await;
                    admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
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
