//! The store's connection as the sync sees it: a connection killed under it recovers,
//! the session limits are in force, and errors carry the server's own words.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b24_domain::database::SessionSettings;
use b24_domain::entity::Entity;
use b24_store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use tokio_postgres::Client;
use tokio_postgres::config::Host;

use crate::common::*;

/// The backends the store holds on the test database.
async fn store_backends(admin: &Client, db: &TestDb) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'b24-store'",
            &[&db.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn terminate(admin: &Client, pid: i32, wait_until_gone: bool) {
    b24_testkit::terminate_backend(admin, pid).await;
    if wait_until_gone {
        b24_testkit::wait_for_backend_exit(admin, pid).await;
    }
}

/// `pg_terminate_backend` is what an RDS failover or a proxy's idle cut-off looks like
/// to the client: the server ends the connection. The next statement runs on a new
/// connection, whether or not the client noticed the end before sending it, and runs
/// exactly once.
#[tokio::test]
async fn a_killed_connection_recovers_on_the_next_statement() {
    let db = TestDb::create().await;
    let store = store(&db).await;
    let admin = db.client().await;
    store.start_run("acme", Entity::Deal, "full").await.unwrap();

    let mut seen = Vec::new();
    for wait_until_gone in [false, true, false, true] {
        let backends = store_backends(&admin, &db).await;
        assert_eq!(backends.len(), 1, "{backends:?}");
        let pid = backends[0];
        assert!(
            !seen.contains(&pid),
            "backend {pid} reused after being killed"
        );
        seen.push(pid);
        terminate(&admin, pid, wait_until_gone).await;
        store
            .start_run("acme", Entity::Deal, "incremental")
            .await
            .unwrap();
        store.load_state("acme", Entity::Deal).await.unwrap();
    }
    let runs: i64 = scalar(&admin, "SELECT count(*) FROM b24._sync_runs").await;
    assert_eq!(runs, 5, "every start_run recorded once");
    assert_eq!(store_backends(&admin, &db).await.len(), 1);
}

/// A table locked by someone else's open transaction: the store's statement gives up
/// after `lock_timeout`, or `statement_timeout` when lock waits are unlimited, with the
/// server's reason and SQLSTATE in the error, and the connection stays usable.
#[tokio::test]
async fn lock_and_statement_timeouts_are_in_force() {
    let db = TestDb::create().await;
    store(&db).await;
    let cases = [
        (
            SessionSettings {
                lock_timeout: Duration::from_millis(200),
                statement_timeout: Duration::ZERO,
                ..SessionSettings::default()
            },
            "canceling statement due to lock timeout (SQLSTATE 55P03)",
        ),
        (
            SessionSettings {
                lock_timeout: Duration::ZERO,
                statement_timeout: Duration::from_millis(300),
                ..SessionSettings::default()
            },
            "canceling statement due to statement timeout (SQLSTATE 57014)",
        ),
    ];
    for (settings, expected) in cases {
        let store = Store::connect_with(&db.url, SCHEMA, &settings)
            .await
            .unwrap();
        let holder = db.client().await;
        holder
            .batch_execute("BEGIN; LOCK TABLE b24._sync_state IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let started = Instant::now();
        let err = store.load_state("acme", Entity::Deal).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(
            err.to_string(),
            format!("loading sync state: {expected}"),
            "{err:?}"
        );
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        holder.batch_execute("ROLLBACK").await.unwrap();
        store.load_state("acme", Entity::Deal).await.unwrap();
    }
}

/// A role without rights on the mirror: the error says what the server said, not
/// "db error", so the run's recorded error and the log line explain themselves.
#[tokio::test]
async fn permission_errors_carry_the_servers_message() {
    let db = TestDb::create().await;
    store(&db).await;
    let admin = db.client().await;
    let role = format!("{}_reader", db.name);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA b24 TO {role}"
        ))
        .await
        .unwrap();
    let reader = Store::connect(&format!("{}?user={role}", db.url), SCHEMA)
        .await
        .unwrap();
    let load = reader.load_state("acme", Entity::Deal).await;
    let start = reader.start_run("acme", Entity::Deal, "full").await;
    drop(reader);
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';
             DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .unwrap();

    let err = load.unwrap_err();
    assert_eq!(
        err.to_string(),
        "loading sync state: permission denied for table _sync_state (SQLSTATE 42501)"
    );
    let err = start.unwrap_err();
    assert_eq!(
        err.to_string(),
        "recording the start of a sync run: permission denied for table _sync_runs (SQLSTATE 42501)"
    );
}

#[tokio::test]
async fn connection_errors_say_why_without_the_password() {
    let missing = format!("b24_missing_{}", std::process::id());
    let url = format!(
        "{}/{missing}",
        b24_testkit::server_url().replacen("://postgres@", "://postgres:hunter2@", 1)
    );
    let err = Store::connect(&url, SCHEMA).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to PostgreSQL: database \"{missing}\" does not exist (SQLSTATE 3D000)"
        )),
        "{err}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    let settings = SessionSettings {
        connect_timeout: Duration::from_secs(1),
        ..SessionSettings::default()
    };
    let err = Store::connect_with(
        "postgres://postgres:hunter2@127.0.0.1:1/x",
        SCHEMA,
        &settings,
    )
    .await
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot connect to PostgreSQL: error connecting to server: "),
        "{err}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A stand-in for a managed PostgreSQL that only speaks TLS: it answers the client's
/// SSLRequest, completes the handshake with `server.pem` (signed by the fixture CA for
/// db.test, localhost and 127.0.0.1) and relays the protocol to the local server.
/// Returns its port on 127.0.0.1.
fn start_tls_server() -> u16 {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_file(fixture("server.pem")).unwrap()],
                PrivateKeyDer::from_pem_file(fixture("server-key.pem")).unwrap(),
            )
            .unwrap(),
    );
    let upstream = tokio_postgres::Config::from_str(&b24_testkit::server_url()).unwrap();
    let host = match upstream.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = upstream.get_ports().first().copied().unwrap_or(5432);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (config, host) = (config.clone(), host.clone());
            std::thread::spawn(move || relay(client, config, (host.as_str(), port)));
        }
    });
    local_port
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn relay(
    mut client: TcpStream,
    config: Arc<ServerConfig>,
    upstream: (&str, u16),
) -> io::Result<()> {
    let mut request = [0; 8];
    client.read_exact(&mut request)?;
    if request != SSL_REQUEST {
        return Ok(());
    }
    client.write_all(b"S")?;
    let mut server = TcpStream::connect(upstream)?;
    let tls = Arc::new(Mutex::new(
        ServerConnection::new(config).map_err(io::Error::other)?,
    ));
    // Server to client: plain bytes in, TLS records out.
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let outgoing = tls.clone();
    std::thread::spawn(move || -> io::Result<()> {
        let mut buf = [0; 16 * 1024];
        loop {
            let n = from_server.read(&mut buf)?;
            let mut tls = outgoing.lock().unwrap();
            if n == 0 {
                tls.send_close_notify();
            } else {
                tls.writer().write_all(&buf[..n])?;
            }
            while tls.wants_write() {
                tls.write_tls(&mut to_client)?;
            }
            if n == 0 {
                return Ok(());
            }
        }
    });
    // Client to server: TLS records in (the handshake first), plain bytes out.
    let mut buf = [0; 16 * 1024];
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut tls = tls.lock().unwrap();
        let mut records = &buf[..n];
        while !records.is_empty() {
            tls.read_tls(&mut records)?;
            // A client that refused the certificate sends an alert: the relay ends.
            tls.process_new_packets().map_err(io::Error::other)?;
            let mut plain = Vec::new();
            match tls.reader().read_to_end(&mut plain) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => server.write_all(&plain)?,
            }
        }
        while tls.wants_write() {
            tls.write_tls(&mut client)?;
        }
    }
}

/// What the README recommends for RDS, Aurora and Supabase, against a server whose
/// certificate comes from a private CA: `verify-full` with that CA's file connects;
/// trusting another CA, the public roots only, or reaching the server under a name its
/// certificate does not carry is refused before the password is sent. (`hostaddr`
/// points every name at the local TLS server.)
#[tokio::test]
async fn verify_full_with_the_providers_ca_connects_and_refuses_impostors() {
    let db = TestDb::create().await;
    let port = start_tls_server();
    let (ca, rogue) = (fixture("ca.pem"), fixture("rogue-ca.pem"));
    let url = |host: &str, options: &str| {
        format!(
            "postgres://postgres:hunter2@{host}:{port}/{}?hostaddr=127.0.0.1&{options}",
            db.name
        )
    };

    let store = Store::connect(
        &url("db.test", &format!("sslmode=verify-full&sslrootcert={ca}")),
        SCHEMA,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.load_state("acme", Entity::Deal).await.unwrap();
    for (host, options) in [
        // No sslmode on a non-loopback host: verify-full.
        ("db.test", format!("sslrootcert={ca}")),
        // verify-ca checks the chain, not the name; require checks nothing.
        ("other.test", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("other.test", "sslmode=require".to_string()),
    ] {
        let store = Store::connect(&url(host, &options), SCHEMA).await;
        assert!(store.is_ok(), "{host} {options}: {:?}", store.err());
    }

    for (host, options, reason) in [
        (
            "db.test",
            format!("sslmode=verify-full&sslrootcert={rogue}"),
            "UnknownIssuer",
        ),
        (
            "db.test",
            format!("sslmode=verify-ca&sslrootcert={rogue}"),
            "UnknownIssuer",
        ),
        (
            "db.test",
            "sslmode=verify-full".to_string(),
            "UnknownIssuer",
        ),
        ("db.test", String::new(), "UnknownIssuer"),
        (
            "other.test",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "not valid for name \"other.test\"",
        ),
    ] {
        let err = Store::connect(&url(host, &options), SCHEMA)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to PostgreSQL: error performing TLS handshake")
                && text.contains(reason),
            "{host} {options}: {text}"
        );
        assert!(!format!("{text} {err:?}").contains("hunter2"), "{text}");
    }
}
