//! Opening the PostgreSQL connection: URL options, TLS policy, and one connection
//! reused and re-opened when the server or network closed it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// How the connection is protected, following libpq's `sslmode` meanings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TlsPolicy {
    Plain,
    /// Encrypted; the certificate is checked only when `verify` is set (libpq's
    /// `require` checks nothing unless a root certificate is given).
    Encrypted {
        verify: bool,
        root_cert: Option<PathBuf>,
        mode: SslMode,
    },
}

/// Everything needed to (re)open the connection. Holds the password, so it has no
/// `Debug`.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    pub(crate) fn from_url(url: &str) -> Result<Connector, StoreError> {
        let (config, policy) = parse_url(url)?;
        Connector::new(config, &policy)
    }

    fn new(mut config: Config, policy: &TlsPolicy) -> Result<Connector, StoreError> {
        if config.get_application_name().is_none() {
            config.application_name("b24-store");
        }
        let tls = match policy {
            TlsPolicy::Plain => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            TlsPolicy::Encrypted {
                verify,
                root_cert,
                mode,
            } => {
                config.ssl_mode(*mode);
                Some(MakeRustlsConnect::new(client_config(
                    *verify,
                    root_cert.as_ref(),
                )?))
            }
        };
        Ok(Connector { config, tls })
    }

    pub(crate) async fn connect(&self) -> Result<Client, StoreError> {
        fn watch<F>(connection: F)
        where
            F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
        {
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "PostgreSQL connection closed");
                }
            });
        }
        let client = match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(StoreError::Connect)?;
                watch(connection);
                client
            }
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(StoreError::Connect)?;
                watch(connection);
                client
            }
        };
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
    pub(crate) fn new(connector: Connector, client: Client) -> Connection {
        Connection {
            connector,
            client: Mutex::new(Some(client)),
        }
    }

    /// Exclusive use of the connection, so a transaction never interleaves with
    /// another caller's statements.
    pub(crate) async fn get(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        let mut slot = self.client.lock().await;
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            previous => {
                if previous.is_some() {
                    tracing::info!("PostgreSQL connection was closed; reconnecting");
                }
                self.connector.connect().await?
            }
        };
        Ok(MutexGuard::map(slot, |slot| slot.insert(client)))
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
            "sslrootcert" => root_cert = Some(PathBuf::from(value.into_owned())),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // tokio-postgres' messages name the option, never echo the URL or its password.
    let config = Config::from_str(&rest).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
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

fn tls_policy(
    sslmode: Option<&str>,
    root_cert: Option<PathBuf>,
    loopback: bool,
) -> Result<TlsPolicy, StoreError> {
    let verify_given_root = root_cert.is_some();
    Ok(match sslmode {
        Some("disable") => TlsPolicy::Plain,
        Some("allow" | "prefer") => TlsPolicy::Encrypted {
            verify: false,
            root_cert,
            mode: SslMode::Prefer,
        },
        Some("require") => TlsPolicy::Encrypted {
            verify: verify_given_root,
            root_cert,
            mode: SslMode::Require,
        },
        Some("verify-ca" | "verify-full") => TlsPolicy::Encrypted {
            verify: true,
            root_cert,
            mode: SslMode::Require,
        },
        Some(other) => {
            return Err(StoreError::InvalidUrl(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
        None if loopback => TlsPolicy::Plain,
        None => TlsPolicy::Encrypted {
            verify: verify_given_root,
            root_cert,
            mode: SslMode::Require,
        },
    })
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

fn client_config(
    verify: bool,
    root_cert: Option<&PathBuf>,
) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Tls(e.to_string()))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StoreError::Tls(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(StoreError::Tls(format!(
                "sslrootcert {} holds no usable certificate",
                path.display()
            )));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// libpq's `sslmode=require` without a root certificate: the traffic is encrypted and
/// the handshake signatures checked, but the certificate chain is not (managed
/// databases such as RDS sign with their own CA).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(url: &str) -> TlsPolicy {
        parse_url(url).unwrap().1
    }

    #[test]
    fn loopback_is_plain_and_remote_is_encrypted_by_default() {
        assert_eq!(
            policy("postgres://postgres@127.0.0.1:5432/db"),
            TlsPolicy::Plain
        );
        assert_eq!(policy("postgres://postgres@localhost/db"), TlsPolicy::Plain);
        assert_eq!(
            policy("postgres://postgres@[::1]:5432/db"),
            TlsPolicy::Plain
        );
        assert_eq!(
            policy("host=/var/run/postgresql user=postgres"),
            TlsPolicy::Plain
        );
        assert_eq!(
            policy("postgres://u:p@db.example.rds.amazonaws.com/app"),
            TlsPolicy::Encrypted {
                verify: false,
                root_cert: None,
                mode: SslMode::Require
            }
        );
    }

    #[test]
    fn sslmode_follows_libpq() {
        assert_eq!(
            policy("postgres://u@db.example.com/app?sslmode=disable"),
            TlsPolicy::Plain
        );
        assert_eq!(
            policy("postgres://u@127.0.0.1/app?sslmode=require"),
            TlsPolicy::Encrypted {
                verify: false,
                root_cert: None,
                mode: SslMode::Require
            }
        );
        assert_eq!(
            policy(
                "postgres://u@db.example.com/app?sslmode=verify-full&sslrootcert=%2Fopt%2Frds.pem&connect_timeout=5"
            ),
            TlsPolicy::Encrypted {
                verify: true,
                root_cert: Some("/opt/rds.pem".into()),
                mode: SslMode::Require
            }
        );
        assert_eq!(
            policy("postgres://u@db.example.com/app?sslmode=prefer"),
            TlsPolicy::Encrypted {
                verify: false,
                root_cert: None,
                mode: SslMode::Prefer
            }
        );
        assert_eq!(
            policy("host=db.example.com sslmode=disable"),
            TlsPolicy::Plain
        );
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_the_password() {
        for url in [
            "postgres://u:hunter2@db.example.com/app?sslmode=sometimes",
            "postgres://u:hunter2@db.example.com:notaport/app",
            "postgres://u:hunter2@db.example.com/app?bogus_option=1",
        ] {
            let err = parse_url(url).map(|_| ()).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(matches!(err, StoreError::InvalidUrl(_)), "{text}");
        }
    }

    #[test]
    fn a_missing_root_certificate_is_a_clear_error() {
        let (config, policy) = parse_url(
            "postgres://u@db.example.com/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let err = Connector::new(config, &policy).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
