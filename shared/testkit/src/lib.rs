//! Test support: a throw-away database per test on the local PostgreSQL
//! (127.0.0.1:5432, trust auth; `scripts/test.sh` starts it). Override the server with
//! `B24_TEST_PG`. [`moto::MotoServer`]: a local stand-in for AWS.
//! [`runtime_api::RuntimeApi`] and [`function_process::FunctionProcess`]: a function's
//! real binary run as Lambda runs it, against a local stand-in of the Lambda Runtime API.

pub mod function_process;
pub mod moto;
pub mod runtime_api;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

/// Server URL without a database.
pub fn server_url() -> String {
    std::env::var("B24_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

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
            "b24_test_{}_{}_{nanos}",
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

    /// A plain client for looking at what the code under test wrote.
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

/// Connects without TLS (the test server is on loopback).
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (scripts/test.sh starts it): {e}"));
    tokio::spawn(connection);
    client
}

/// Ends backend `pid` the way a failover or a proxy's idle cut-off does: the server
/// closes the connection. Returns at once, possibly before the backend has gone.
pub async fn terminate_backend(admin: &Client, pid: i32) {
    let done: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(done, "backend {pid} was not terminated");
}

/// Waits (up to 10 s) until backend `pid` has left `pg_stat_activity`.
pub async fn wait_for_backend_exit(admin: &Client, pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if !alive {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backend {pid} did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
