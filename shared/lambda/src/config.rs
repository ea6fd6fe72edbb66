//! The function's settings: the configuration document and boolean switches from the
//! environment. Every failure here is [`FunctionError::Configuration`], except a secret
//! that could not be read, which is [`FunctionError::Transient`].

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use b24_aws::{SecretConfig, SecretConfigError};
use b24_config::{Config, ConfigError};

use crate::error::FunctionError;

/// The configuration document from `B24SYNC_CONFIG` (a path, or the JSON itself). The
/// error names what is wrong and never repeats the value, which may hold secrets.
pub fn load_config() -> Result<Config, FunctionError> {
    Config::load(None).map_err(FunctionError::from)
}

/// Where the configuration document comes from: in AWS the Secrets Manager secret named
/// by `B24SYNC_CONFIG_SECRET` (re-read every `B24SYNC_CONFIG_REFRESH_SECS`, so a rotated
/// token reaches warm instances), locally `B24SYNC_CONFIG` (read once).
pub enum ConfigSource {
    Secret(SecretConfig),
    Local(Arc<Config>),
}

impl ConfigSource {
    /// The secret when `B24SYNC_CONFIG_SECRET` is set, else `B24SYNC_CONFIG`. The
    /// document is read here once, so a function that cannot have one fails at start.
    pub async fn from_env() -> Result<ConfigSource, FunctionError> {
        let source = match SecretConfig::from_env().await? {
            Some(secret) => ConfigSource::Secret(secret),
            None => ConfigSource::Local(Arc::new(load_config()?)),
        };
        source.current().await?;
        Ok(source)
    }

    /// The document for this invocation (the same `Arc` until the secret is re-read).
    pub async fn current(&self) -> Result<Arc<Config>, FunctionError> {
        match self {
            ConfigSource::Secret(secret) => Ok(secret.current().await?),
            ConfigSource::Local(config) => Ok(Arc::clone(config)),
        }
    }
}

/// What a function builds from the configuration document (portal clients, the
/// database connection, the intake's portal list), kept across warm invocations and
/// rebuilt when the document changes: a rotated secret reaches warm instances without a
/// redeploy. Lambda gives an instance one invocation at a time, so the lock is never
/// contended there.
pub struct Derived<T> {
    source: ConfigSource,
    build: Box<dyn Fn(Arc<Config>) -> BoxedBuild<T> + Send + Sync>,
    current: tokio::sync::Mutex<(Arc<Config>, Arc<T>)>,
}

type BoxedBuild<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

impl<T> Derived<T> {
    /// Reads the document and builds from it once; a function that cannot build at
    /// start fails its init with `build`'s error.
    pub async fn new<F, Fut, E>(source: ConfigSource, build: F) -> Result<Derived<T>, E>
    where
        F: Fn(Arc<Config>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: From<FunctionError> + Display + 'static,
    {
        let config = source.current().await?;
        let built = build(Arc::clone(&config)).await?;
        let build = move |config| -> BoxedBuild<T> {
            let building = build(config);
            Box::pin(async move { building.await.map_err(|error| error.to_string()) })
        };
        Ok(Derived {
            source,
            build: Box::new(build),
            current: tokio::sync::Mutex::new((config, Arc::new(built))),
        })
    }

    /// What to serve this invocation with: rebuilt first when the document changed.
    /// When the rebuild fails (a new database URL that does not answer, say), the last
    /// good one serves and the rebuild is tried again on the next invocation.
    pub async fn get(&self) -> Result<Arc<T>, FunctionError> {
        let config = self.source.current().await?;
        let mut current = self.current.lock().await;
        if !Arc::ptr_eq(&current.0, &config) {
            match (self.build)(Arc::clone(&config)).await {
                Ok(rebuilt) => {
                    tracing::info!("the configuration changed; rebuilt from the new document");
                    *current = (config, Arc::new(rebuilt));
                }
                Err(error) => tracing::error!(
                    %error,
                    "the configuration changed but could not be applied; serving with the previous one"
                ),
            }
        }
        Ok(Arc::clone(&current.1))
    }
}

impl From<SecretConfigError> for FunctionError {
    fn from(error: SecretConfigError) -> FunctionError {
        match error {
            SecretConfigError::Fetch { .. } => FunctionError::Transient(error.to_string()),
            _ => FunctionError::Configuration(error.to_string()),
        }
    }
}

impl From<ConfigError> for FunctionError {
    fn from(error: ConfigError) -> FunctionError {
        FunctionError::Configuration(error.to_string())
    }
}

/// A boolean switch from the environment: unset or empty is `false`; `true`/`false`,
/// `1`/`0`, `yes`/`no` in any case; anything else is an error naming the variable, so a
/// typo never silently turns a switch off.
pub fn env_flag(name: &str) -> Result<bool, FunctionError> {
    parse_flag(name, std::env::var(name).ok().as_deref())
}

fn parse_flag(name: &str, value: Option<&str>) -> Result<bool, FunctionError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(FunctionError::Configuration(format!(
            "{name} is {other:?}; expected true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_switches_and_refuses_anything_else_by_name() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("0"), false),
            (Some("No"), false),
            (Some("true"), true),
            (Some(" TRUE "), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(parse_flag("MIGRATE", value), Ok(expected), "{value:?}");
        }
        let error = parse_flag("MIGRATE", Some("ture")).unwrap_err();
        assert_eq!(error.error_type(), "Configuration");
        assert!(
            error.to_string().contains("MIGRATE") && error.to_string().contains("ture"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_document_is_a_configuration_error_without_its_secrets() {
        let secret = "s3cr3tc0de";
        let document = format!(
            r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{secret}/", "entitys": []}}}}}}"#
        );
        let error = FunctionError::from(Config::from_json_str(&document).unwrap_err());
        assert_eq!(error.error_type(), "Configuration");
        assert!(error.to_string().contains("entitys"), "{error}");
        assert!(!error.to_string().contains(secret), "{error}");
    }
}
