use std::path::Path;
use std::time::Duration;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

fn policy(url: &str) -> TlsPolicy {
    parse_url(url).unwrap().1
}

fn refused(url: &str) -> String {
    let err = parse_url(url).map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{url}: {err:?}");
    err.to_string()
}

fn tls(mode: SslMode, verify: Verify) -> TlsPolicy {
    TlsPolicy::Tls { mode, verify }
}

#[test]
fn loopback_is_plain_and_any_other_host_is_fully_verified_by_default() {
    for url in [
        "postgres://postgres@127.0.0.1:5432/db",
        "postgres://postgres@localhost/db",
        "postgres://postgres@[::1]:5432/db",
        "host=/var/run/postgresql user=postgres",
    ] {
        assert_eq!(policy(url), TlsPolicy::Plain, "{url}");
    }
    assert_eq!(
        policy("postgres://u:p@db.example.rds.amazonaws.com/app"),
        tls(SslMode::Require, Verify::Full(None))
    );
    // A root certificate on loopback (an SSH tunnel to RDS) asks for verification.
    assert_eq!(
        policy("postgres://u@127.0.0.1:6432/app?sslrootcert=%2Fopt%2Frds.pem"),
        tls(SslMode::Require, Verify::Full(Some("/opt/rds.pem".into())))
    );
}

#[test]
fn each_sslmode_maps_to_its_documented_behaviour() {
    let cases = [
        ("sslmode=disable", TlsPolicy::Plain),
        ("sslmode=prefer", tls(SslMode::Prefer, Verify::Nothing)),
        ("sslmode=require", tls(SslMode::Require, Verify::Nothing)),
        (
            "sslmode=require&sslrootcert=/opt/ca.pem",
            tls(SslMode::Require, Verify::Chain("/opt/ca.pem".into())),
        ),
        (
            "sslmode=verify-ca&sslrootcert=/opt/ca.pem",
            tls(SslMode::Require, Verify::Chain("/opt/ca.pem".into())),
        ),
        (
            "sslmode=verify-full",
            tls(SslMode::Require, Verify::Full(None)),
        ),
        (
            "sslmode=verify-full&sslrootcert=system",
            tls(SslMode::Require, Verify::Full(None)),
        ),
        (
            "sslmode=verify-full&sslrootcert=%2Fopt%2Frds.pem&connect_timeout=5",
            tls(SslMode::Require, Verify::Full(Some("/opt/rds.pem".into()))),
        ),
    ];
    for (query, expected) in cases {
        for host in ["db.example.com", "127.0.0.1"] {
            let url = format!("postgres://u@{host}/app?{query}");
            assert_eq!(policy(&url), expected, "{url}");
        }
    }
    assert_eq!(
        policy("host=db.example.com sslmode=disable"),
        TlsPolicy::Plain
    );
    assert_eq!(
        policy("host=db.example.com sslmode=require"),
        tls(SslMode::Require, Verify::Nothing)
    );
}

#[test]
fn unsupported_or_unsafe_combinations_are_refused_clearly() {
    for (query, expected) in [
        ("sslmode=allow", "sslmode=allow is not supported"),
        ("sslmode=sometimes", "one of disable, prefer, require"),
        ("sslmode=verify-ca", "verify-ca needs sslrootcert"),
        (
            "sslmode=verify-ca&sslrootcert=system",
            "needs sslmode=verify-full",
        ),
        (
            "sslmode=require&sslrootcert=system",
            "needs sslmode=verify-full",
        ),
        (
            "sslmode=prefer&sslrootcert=/ca.pem",
            "only with sslmode=require",
        ),
        (
            "sslmode=disable&sslrootcert=/ca.pem",
            "only with sslmode=require",
        ),
    ] {
        let text = refused(&format!("postgres://u:hunter2@db.example.com/app?{query}"));
        assert!(text.contains(expected), "{query}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn bad_urls_are_rejected_without_echoing_the_password() {
    for (url, expected) in [
        ("postgres://u:hunter2@db.example.com:notaport/app", "port"),
        (
            "postgres://u:hunter2@db.example.com/app?bogus_option=1",
            "bogus_option",
        ),
        (
            "host=db user=u password=hunter2 'x",
            "invalid connection string",
        ),
        ("host=db user=u password='hunter2", "unterminated"),
    ] {
        let text = refused(url);
        assert!(text.contains(expected), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    // A syntax error names a position, not the character found there.
    let text = refused("host=db user x");
    assert!(
        text.contains("expected `=`") && !text.contains("but got"),
        "{text}"
    );
}

#[test]
fn a_missing_or_empty_root_certificate_is_a_clear_error() {
    let missing =
        "postgres://u@db.example.com/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let (config, policy) = parse_url(missing).unwrap();
    let settings = SessionSettings::default();
    let err = Connector::new(config, &policy, &settings)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let key_only = format!("{FIXTURES}/server-key.pem");
    let (config, policy) = parse_url(&format!(
        "postgres://u@db.example.com/app?sslmode=verify-ca&sslrootcert={key_only}"
    ))
    .unwrap();
    let err = Connector::new(config, &policy, &settings)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("no usable certificate"), "{err}");
}

#[test]
fn session_limits_reach_the_connection_settings() {
    let settings = SessionSettings {
        connect_timeout: Duration::from_secs(3),
        keepalive_idle: Some(Duration::from_secs(12)),
        ..SessionSettings::default()
    };
    let connector =
        Connector::from_url("postgres://u@127.0.0.1/app?connect_timeout=60", &settings).unwrap();
    let config = &connector.config;
    assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    assert!(config.get_keepalives());
    assert_eq!(config.get_keepalives_idle(), Duration::from_secs(12));
    assert_eq!(
        config.get_keepalives_interval(),
        Some(Duration::from_secs(4))
    );
    assert_eq!(config.get_keepalives_retries(), Some(3));
    assert_eq!(
        config.get_tcp_user_timeout(),
        Some(&Duration::from_secs(24))
    );
    assert!(
        connector
            .session_sql
            .contains("SET statement_timeout = '300000ms'")
    );
    assert!(
        connector
            .session_sql
            .contains("SET tcp_keepalives_idle = '12s'")
    );

    let off = SessionSettings {
        keepalive_idle: None,
        ..settings
    };
    let connector = Connector::from_url("postgres://u@127.0.0.1/app", &off).unwrap();
    assert!(!connector.config.get_keepalives());
    assert!(!connector.session_sql.contains("keepalives"));
}

fn pem(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(Path::new(FIXTURES).join(name)).unwrap()
}

fn verdict(verify: &Verify, cert: &str, host: &str) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = server_verifier(verify, &provider).unwrap();
    verifier
        .verify_server_cert(
            &pem(cert),
            &[],
            &ServerName::try_from(host.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(drop)
}

/// The verifier each mode chooses, fed real certificates: `server.pem` (for db.test,
/// localhost, 127.0.0.1) is signed by `ca.pem`; `rogue-server.pem` names the same
/// hosts but is signed by another CA, as a man in the middle's would be.
#[test]
fn verification_checks_what_each_mode_promises() {
    let ca = PathBuf::from(FIXTURES).join("ca.pem");
    let full = Verify::Full(Some(ca.clone()));
    let chain = Verify::Chain(ca);

    assert_eq!(verdict(&full, "server.pem", "db.test"), Ok(()));
    assert_eq!(verdict(&full, "server.pem", "127.0.0.1"), Ok(()));
    let wrong_host = verdict(&full, "server.pem", "other.test").unwrap_err();
    assert!(
        format!("{wrong_host:?}").contains("NotValidForName"),
        "{wrong_host:?}"
    );
    let rogue = verdict(&full, "rogue-server.pem", "db.test").unwrap_err();
    assert!(format!("{rogue:?}").contains("UnknownIssuer"), "{rogue:?}");

    // verify-ca: the chain, not the name.
    assert_eq!(verdict(&chain, "server.pem", "other.test"), Ok(()));
    let rogue = verdict(&chain, "rogue-server.pem", "db.test").unwrap_err();
    assert!(format!("{rogue:?}").contains("UnknownIssuer"), "{rogue:?}");

    // verify-full without sslrootcert trusts the public roots only, not a private CA.
    let public = verdict(&Verify::Full(None), "server.pem", "db.test").unwrap_err();
    assert!(
        format!("{public:?}").contains("UnknownIssuer"),
        "{public:?}"
    );

    // require / prefer: encryption only; anyone's certificate passes.
    assert_eq!(
        verdict(&Verify::Nothing, "rogue-server.pem", "x.test"),
        Ok(())
    );
}

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn kill(admin: &Client, pid: i32) {
    b24_testkit::terminate_backend(admin, pid).await;
    b24_testkit::wait_for_backend_exit(admin, pid).await;
}

/// `(setting, unit)` from pg_settings: the value PostgreSQL holds, in its base unit.
async fn setting(client: &Client, name: &str) -> (String, Option<String>) {
    let row = client
        .query_one(
            "SELECT setting, unit FROM pg_settings WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Inside one session (so no check between statements can notice): a statement that
/// meets a killed connection is retried once on a new connection, which has the
/// session limits too and serves the later sessions; a second loss in the same session
/// is reported, and the next session reconnects.
#[tokio::test]
async fn a_session_retries_a_statement_once_on_a_new_connection() {
    let db = b24_testkit::TestDb::create().await;
    let admin = db.client().await;
    let settings = SessionSettings {
        keepalive_idle: Some(Duration::from_secs(12)),
        statement_timeout: Duration::from_millis(1234),
        lock_timeout: Duration::from_millis(2500),
        idle_in_transaction_session_timeout: Duration::from_millis(300),
        ..SessionSettings::default()
    };
    let connection = Connection::open(Connector::from_url(&db.url, &settings).unwrap())
        .await
        .unwrap();

    let session = connection.session().await.unwrap();
    let first = backend_pid(&session).await;
    kill(&admin, first).await;
    let row = session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    let second: i32 = row.get(0);
    assert_ne!(second, first);
    for (name, expected) in [
        ("statement_timeout", ("1234", Some("ms"))),
        ("lock_timeout", ("2500", Some("ms"))),
        ("idle_in_transaction_session_timeout", ("300", Some("ms"))),
        ("tcp_keepalives_idle", ("12", Some("s"))),
        ("tcp_keepalives_interval", ("4", Some("s"))),
        ("tcp_keepalives_count", ("3", None)),
    ] {
        let expected = (expected.0.to_string(), expected.1.map(str::to_string));
        assert_eq!(setting(&session, name).await, expected, "{name}");
    }
    kill(&admin, second).await;
    let err = session.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(connection_lost(&err, &session), "{err:?}");
    drop(session);

    let session = connection.session().await.unwrap();
    let third = backend_pid(&session).await;
    assert!(third != first && third != second);
    drop(session);
    // The reopened connection is the store's from now on.
    let session = connection.session().await.unwrap();
    assert_eq!(backend_pid(&session).await, third);

    // idle_in_transaction_session_timeout: the server ends a session left idle inside a
    // transaction, and the next statement reconnects.
    let mut session = session;
    let client: &mut Client = &mut session;
    let transaction = client.transaction().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let err = transaction.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(
        err.as_db_error()
            .is_none_or(|db| db.code() == &SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT),
        "{err:?}"
    );
    drop(transaction);
    let row = session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, i32>(0), third);
}
