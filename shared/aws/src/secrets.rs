//! The configuration document from one Secrets Manager secret (its JSON `SecretString`),
//! validated by the same schema as a local file, and cached across warm invocations
//! with a refresh interval so a rotated token is picked up without a redeploy.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use b24_config::{Config, ConfigError};

use crate::client::{bounded, describe};

/// The environment variable naming the secret (its name or ARN).
pub const CONFIG_SECRET_ENV: &str = "B24SYNC_CONFIG_SECRET";
/// The environment variable holding the refresh interval in whole seconds.
pub const CONFIG_REFRESH_ENV: &str = "B24SYNC_CONFIG_REFRESH_SECS";
/// How long a fetched document is served before the secret is read again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Why the document could not be had from the secret. None of them repeats any of the
/// secret's content: a bad document is named by its key path, as the config crate does.
#[derive(Debug, thiserror::Error)]
pub enum SecretConfigError {
    #[error("{CONFIG_REFRESH_ENV} {0:?} is not a whole number of seconds (default 300)")]
    InvalidRefresh(String),
    #[error("no AWS region: set AWS_REGION (Lambda sets it for every function)")]
    MissingRegion,
    #[error("cannot read secret {secret}: {reason}")]
    Fetch { secret: String, reason: String },
    #[error(
        "secret {secret} holds no SecretString (binary secrets are not read): store the configuration as JSON text"
    )]
    NotText { secret: String },
    #[error("secret {secret}: {source}")]
    Invalid { secret: String, source: ConfigError },
}

/// The configuration document held by one secret.
pub struct SecretConfig {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    refresh_every: Duration,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    config: Arc<Config>,
    /// The secret version the document came from, so an unchanged secret keeps serving
    /// the same `Arc` and what callers derived from it stays valid.
    version: Option<String>,
    next_refresh: Instant,
}

impl SecretConfig {
    /// The secret named by `B24SYNC_CONFIG_SECRET`, refreshed every
    /// `B24SYNC_CONFIG_REFRESH_SECS` (default 300), reached with the SDK's configuration
    /// from the environment (`AWS_ENDPOINT_URL_SECRETS_MANAGER` points it at moto).
    /// `None` when the variable is unset or empty: the document comes from elsewhere.
    pub async fn from_env() -> Result<Option<SecretConfig>, SecretConfigError> {
        let secret_id = std::env::var(CONFIG_SECRET_ENV).unwrap_or_default();
        if secret_id.trim().is_empty() {
            return Ok(None);
        }
        let refresh_every = refresh_interval(std::env::var(CONFIG_REFRESH_ENV).ok().as_deref())?;
        let sdk_config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        SecretConfig::new(&sdk_config, &secret_id, refresh_every).map(Some)
    }

    /// The secret `secret_id` (name or ARN), reached with `sdk_config` plus this crate's
    /// timeouts and retries; its document is served for `refresh_every` between reads.
    pub fn new(
        sdk_config: &SdkConfig,
        secret_id: &str,
        refresh_every: Duration,
    ) -> Result<SecretConfig, SecretConfigError> {
        let sdk_config = bounded(sdk_config).ok_or(SecretConfigError::MissingRegion)?;
        Ok(SecretConfig {
            client: aws_sdk_secretsmanager::Client::new(&sdk_config),
            secret_id: secret_id.trim().to_string(),
            refresh_every,
            cached: Mutex::new(None),
        })
    }

    /// The document to serve now: the cached one until its interval has passed, then a
    /// fresh read. The same `Arc` comes back while the secret's version is unchanged, so
    /// a caller can compare pointers to see a rotation. A failed refresh keeps serving
    /// the last good document (logged, and tried again one interval later); only without
    /// one does the error reach the caller.
    pub async fn current(&self) -> Result<Arc<Config>, SecretConfigError> {
        let last_good = {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            match cached.as_ref() {
                Some(cached) if Instant::now() < cached.next_refresh => {
                    return Ok(Arc::clone(&cached.config));
                }
                other => other.map(|cached| (Arc::clone(&cached.config), cached.version.clone())),
            }
        };
        let fresh = match self.read().await {
            Ok((version, text)) => match &last_good {
                Some((config, known)) if version.is_some() && version == *known => {
                    Ok((Arc::clone(config), version))
                }
                _ => self.parse(&text).map(|config| (Arc::new(config), version)),
            },
            Err(error) => Err(error),
        };
        let (config, version) = match (fresh, last_good) {
            (Ok(fresh), _) => fresh,
            (Err(error), Some(last_good)) => {
                tracing::warn!(
                    secret = %self.secret_id,
                    error = %error,
                    "configuration refresh failed; serving the last good document"
                );
                last_good
            }
            (Err(error), None) => return Err(error),
        };
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            config: Arc::clone(&config),
            version,
            next_refresh: Instant::now() + self.refresh_every,
        });
        Ok(config)
    }

    /// One read of the secret, validated; no cache.
    pub async fn fetch(&self) -> Result<Config, SecretConfigError> {
        let (_, text) = self.read().await?;
        self.parse(&text)
    }

    /// The secret's current version ID and text.
    async fn read(&self) -> Result<(Option<String>, String), SecretConfigError> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|error| SecretConfigError::Fetch {
                secret: self.secret_id.clone(),
                reason: describe(&error),
            })?;
        let text = answer
            .secret_string()
            .ok_or_else(|| SecretConfigError::NotText {
                secret: self.secret_id.clone(),
            })?;
        Ok((answer.version_id().map(str::to_string), text.to_string()))
    }

    fn parse(&self, text: &str) -> Result<Config, SecretConfigError> {
        Config::from_json_str(text).map_err(|source| SecretConfigError::Invalid {
            secret: self.secret_id.clone(),
            source,
        })
    }
}

/// The refresh interval from its variable's value; unset or empty is the default.
fn refresh_interval(value: Option<&str>) -> Result<Duration, SecretConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_REFRESH),
        Some(text) => text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| SecretConfigError::InvalidRefresh(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_refresh_interval_and_names_a_bad_one() {
        assert_eq!(refresh_interval(None).unwrap(), DEFAULT_REFRESH);
        assert_eq!(refresh_interval(Some(" ")).unwrap(), DEFAULT_REFRESH);
        assert_eq!(
            refresh_interval(Some("60")).unwrap(),
            Duration::from_secs(60)
        );
        for bad in ["5m", "-1", "1.5"] {
            let error = refresh_interval(Some(bad)).unwrap_err().to_string();
            assert!(
                error.contains(CONFIG_REFRESH_ENV) && error.contains(bad),
                "{error}"
            );
        }
    }

    #[test]
    fn a_configuration_without_region_is_refused() {
        let sdk_config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        assert!(matches!(
            SecretConfig::new(&sdk_config, "b24sync/config", DEFAULT_REFRESH),
            Err(SecretConfigError::MissingRegion)
        ));
    }
}
