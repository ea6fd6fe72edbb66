//! Opening the PostgreSQL connection: URL options, TLS policy, session limits, and one
//! connection reused, re-opened when found closed, with a statement that met a closed
//! connection retried once on a new one.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use b24_domain::database::SessionSettings;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Error, NoTls, Row, ToStatement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{StoreError, describe};

/// How the connection is protected. See the README's TLS table for the `sslmode`
/// each one comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TlsPolicy {
    Plain,
    /// `mode` is `Prefer` (TLS if the server offers it, else plain) or `Require`.
    Tls {
        mode: SslMode,
        verify: Verify,
    },
}

/// What is checked of the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Nothing: the traffic is encrypted, but a man in the middle can present any
    /// certificate and read the password.
    Nothing,
    /// The chain up to the roots in this file, not the host name (libpq's `verify-ca`).
    Chain(PathBuf),
    /// Chain and host name, against the roots in this file or, without one, the
    /// Mozilla roots (libpq's `verify-full`).
    Full(Option<PathBuf>),
}

/// Marks every session the product opens as the sync's: the back-sync triggers on the
/// mirror tables skip writes made under it, so the sync's own writes never enter the
/// outbox (and nothing it wrote echoes back to Bitrix24).
pub(crate) const WRITER_SETTING: &str = "b24sync.writer";

/// Everything needed to (re)open the connection. Holds the password, so it has no
/// `Debug`.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    /// `SET` statements for the session limits and the writer mark, run on every new
    /// connection.
    session_sql: String,
}

impl Connector {
    pub(crate) fn from_url(url: &str, session: &SessionSettings) -> Result<Connector, StoreError> {
        let (config, policy) = parse_url(url)?;
        Connector::new(config, &policy, session)
    }

    fn new(
        mut config: Config,
        policy: &TlsPolicy,
        session: &SessionSettings,
    ) -> Result<Connector, StoreError> {
        if config.get_application_name().is_none() {
            config.application_name("b24-store");
        }
        // The configuration's limits win over the same options in the URL.
        config.connect_timeout(session.connect_timeout);
        config.keepalives(session.keepalive_idle.is_some());
        if let Some(idle) = session.keepalive_idle {
            let (interval, probes) = SessionSettings::keepalive_probes(idle);
            config
                .keepalives_idle(idle)
                .keepalives_interval(interval)
                .keepalives_retries(probes)
                .tcp_user_timeout(SessionSettings::unacknowledged_timeout(idle));
        }
        let session_sql = session
            .server_settings()
            .iter()
            .map(|(name, value)| format!("SET {name} = '{value}'"))
            .chain([format!("SET {WRITER_SETTING} = 'sync'")])
            .collect::<Vec<_>>()
            .join("; ");
        let tls = match policy {
            TlsPolicy::Plain => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            TlsPolicy::Tls { mode, verify } => {
                config.ssl_mode(*mode);
                Some(MakeRustlsConnect::new(client_config(verify)?))
            }
        };
        Ok(Connector {
            config,
            tls,
            session_sql,
        })
    }

    /// A new connection with the session limits applied.
    async fn open(&self) -> Result<Client, Error> {
        fn watch<F>(connection: F)
        where
            F: Future<Output = Result<(), Error>> + Send + 'static,
        {
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %describe(&error), "PostgreSQL connection closed");
                }
            });
        }
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                watch(connection);
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                watch(connection);
                client
            }
        };
        client.batch_execute(&self.session_sql).await?;
        Ok(client)
    }
}

/// One connection, opened on first use and re-opened when found closed (RDS and
/// proxies drop idle connections between warm Lambda invocations).
pub(crate) struct Connection {
    connector: Connector,
    client: Mutex<Option<Client>>,
}

impl Connection {
    pub(crate) async fn open(connector: Connector) -> Result<Connection, StoreError> {
        let client = connector.open().await.map_err(StoreError::Connect)?;
        Ok(Connection {
            connector,
            client: Mutex::new(Some(client)),
        })
    }

    /// Exclusive use of the connection, so a transaction never interleaves with
    /// another caller's statements.
    pub(crate) async fn session(&self) -> Result<Session<'_>, StoreError> {
        let mut slot = self.client.lock().await;
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            previous => {
                if previous.is_some() {
                    tracing::info!("PostgreSQL connection was closed; reconnecting");
                }
                self.connector.open().await.map_err(StoreError::Connect)?
            }
        };
        Ok(Session {
            client: MutexGuard::map(slot, |slot| slot.insert(client)),
            reopened: OnceLock::new(),
            connector: &self.connector,
        })
    }

    /// A separate connection with the same settings, for what must not share the
    /// store's connection (a session-level lock that lives exactly as long as it).
    pub(crate) async fn open_another(&self) -> Result<Client, StoreError> {
        self.connector.open().await.map_err(StoreError::Connect)
    }
}

/// Exclusive use of the store's connection. `query`, `query_one`, `query_opt` and
/// `execute` called on the session itself retry a statement (given as SQL text) that
/// found the connection closed once, on a new connection, which then serves the rest
/// of the session and later sessions. Statements inside a transaction, and those
/// relying on session state (a session advisory lock, `SET search_path`), go to the
/// `Client` directly and are not retried: that state died with the connection. The
/// caller's next session starts on a new connection.
pub(crate) struct Session<'a> {
    client: MappedMutexGuard<'a, Client>,
    /// The connection opened by a retry; it replaces `client` as soon as the session
    /// is used mutably or ends.
    reopened: OnceLock<Client>,
    connector: &'a Connector,
}

impl Session<'_> {
    pub(crate) async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.retrying(|client| client.query(statement, params))
            .await
    }

    pub(crate) async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.retrying(|client| client.query_one(statement, params))
            .await
    }

    pub(crate) async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.retrying(|client| client.query_opt(statement, params))
            .await
    }

    pub(crate) async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.retrying(|client| client.execute(statement, params))
            .await
    }

    /// Runs `statement` on the live connection and, when that connection turns out to
    /// be lost, once more on a new one (see [`Session::reopen`]).
    async fn retrying<'c, R, Fut>(
        &'c self,
        statement: impl Fn(&'c Client) -> Fut,
    ) -> Result<R, Error>
    where
        Fut: std::future::Future<Output = Result<R, Error>>,
    {
        match statement(self).await {
            Err(error) => statement(self.reopen(error).await?).await,
            result => result,
        }
    }

    /// The connection to retry on when `error` shows the current one closed and this
    /// session has not reconnected yet; otherwise `error` itself (or the reason the
    /// new connection could not be opened).
    async fn reopen(&self, error: Error) -> Result<&Client, Error> {
        if self.reopened.get().is_some() || !connection_lost(&error, self) {
            return Err(error);
        }
        tracing::warn!(
            error = %describe(&error),
            "PostgreSQL connection lost; reconnecting to retry the statement"
        );
        let fresh = self.connector.open().await.inspect_err(|reconnect| {
            tracing::warn!(error = %describe(reconnect), "reconnecting to PostgreSQL failed");
        })?;
        Ok(self.reopened.get_or_init(|| fresh))
    }

    fn adopt_reopened(&mut self) {
        if let Some(fresh) = self.reopened.take() {
            *self.client = fresh;
        }
    }
}

/// The error came from a connection that is gone: closed by the server or network
/// (its task ended) or ended by an administrator or crash, before the statement ran.
fn connection_lost(error: &Error, client: &Client) -> bool {
    error.is_closed()
        || client.is_closed()
        || error
            .code()
            .is_some_and(|code| [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN].contains(code))
}

impl Deref for Session<'_> {
    type Target = Client;

    /// The live connection: the reopened one after a retry.
    fn deref(&self) -> &Client {
        self.reopened.get().unwrap_or(&self.client)
    }
}

impl DerefMut for Session<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.adopt_reopened();
        &mut self.client
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.adopt_reopened();
    }
}

/// Splits libpq options tokio-postgres does not know (`sslmode=verify-full`,
/// `sslrootcert`) out of a `postgres://` URL and decides the TLS policy.
pub(crate) fn parse_url(url: &str) -> Result<(Config, TlsPolicy), StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, query) = match url.split_once('?') {
        Some((base, query)) if is_url => (base, query),
        _ => (url, ""),
    };
    let mut sslmode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = form_urlencoded::parse(pair.as_bytes())
            .next()
            .unwrap_or_default();
        match key.as_ref() {
            "sslmode" => sslmode = Some(value.into_owned()),
            "sslrootcert" => root_cert = Some(value.into_owned()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = Config::from_str(&rest).map_err(|e| StoreError::InvalidUrl(url_error(&e)))?;
    // A key=value string's sslmode was parsed by tokio-postgres, where an explicit
    // `prefer` looks like the default and is treated as unset.
    let sslmode = sslmode.or_else(|| match config.get_ssl_mode() {
        SslMode::Disable => Some("disable".to_string()),
        SslMode::Require => Some("require".to_string()),
        _ => None,
    });
    let policy = tls_policy(sslmode.as_deref(), root_cert, all_loopback(&config))?;
    Ok((config, policy))
}

/// tokio-postgres' reason for refusing a URL. Its messages name the option, never its
/// value, except a syntax error's "but got `c`", which could be a password character.
fn url_error(error: &Error) -> String {
    let text = describe(error);
    match text.split_once(" but got ") {
        Some((before, _)) => before.to_string(),
        None => text,
    }
}

/// libpq's `sslmode` values as this product implements them; see the README.
fn tls_policy(
    sslmode: Option<&str>,
    root_cert: Option<String>,
    loopback: bool,
) -> Result<TlsPolicy, StoreError> {
    let invalid = |message: &str| Err(StoreError::InvalidUrl(message.to_string()));
    // `sslrootcert=system` (libpq 16): the bundled Mozilla roots, with verify-full only.
    let (file, system) = match root_cert {
        Some(value) if value == "system" => (None, true),
        Some(path) => (Some(PathBuf::from(path)), false),
        None => (None, false),
    };
    let tls = |mode, verify| Ok(TlsPolicy::Tls { mode, verify });
    match sslmode {
        Some("disable" | "prefer") if file.is_some() || system => invalid(
            "sslrootcert is used only with sslmode=require, verify-ca or verify-full \
             (with disable or prefer a man in the middle can avoid TLS altogether)",
        ),
        Some("verify-ca" | "require") if system => invalid(
            "sslrootcert=system needs sslmode=verify-full: without a host-name check, any \
             certificate from a public CA would be accepted",
        ),
        Some("disable") => Ok(TlsPolicy::Plain),
        Some("prefer") => tls(SslMode::Prefer, Verify::Nothing),
        // libpq: `require` with a root certificate verifies the chain, as verify-ca.
        Some("require") => tls(
            SslMode::Require,
            file.map_or(Verify::Nothing, Verify::Chain),
        ),
        Some("verify-ca") => match file {
            Some(file) => tls(SslMode::Require, Verify::Chain(file)),
            None => invalid(
                "sslmode=verify-ca needs sslrootcert=PATH, the CA that signed the server's \
                 certificate: without a host-name check, any certificate from a public CA \
                 would be accepted",
            ),
        },
        Some("verify-full") => tls(SslMode::Require, Verify::Full(file)),
        Some("allow") => invalid(
            "sslmode=allow is not supported (it tries an unencrypted connection first); use \
             verify-full, require, prefer or disable",
        ),
        Some(_) => {
            invalid("sslmode must be one of disable, prefer, require, verify-ca, verify-full")
        }
        None if loopback && file.is_none() && !system => Ok(TlsPolicy::Plain),
        None => tls(SslMode::Require, Verify::Full(file)),
    }
}

fn all_loopback(config: &Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

fn client_config(verify: &Verify) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = server_verifier(verify, &provider)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The check `verify` asks for. `Full` is rustls' standard WebPKI verifier.
fn server_verifier(
    verify: &Verify,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, StoreError> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(match verify {
        Verify::Nothing => Arc::new(EncryptOnly(algorithms)),
        Verify::Chain(file) => Arc::new(ChainOnly {
            roots: roots_from_file(file)?,
            algorithms,
        }),
        Verify::Full(file) => {
            let roots = match file {
                Some(file) => roots_from_file(file)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| StoreError::Tls(e.to_string()))?
        }
    })
}

/// Only the certificates in `file` are trusted, as libpq does with `sslrootcert`.
fn roots_from_file(file: &PathBuf) -> Result<RootCertStore, StoreError> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::Tls(format!("cannot read sslrootcert {}: {e}", file.display())))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(StoreError::Tls(format!(
            "sslrootcert {} holds no usable certificate",
            file.display()
        )));
    }
    Ok(roots)
}

/// `sslmode=require` / `prefer`: the traffic is encrypted and the handshake signatures
/// checked, but not who signed the certificate.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to one of `roots`; the host name is not
/// checked (for connecting by IP address or through an alias the certificate does not
/// name).
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
