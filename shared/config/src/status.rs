//! `[status]`: who may read the status function's page, and the read-only database role
//! it reads with.
//!
//! ```toml
//! [status]
//! tokens = ["9c2e7a51d84b6e9a0c3f1d27"]   # Authorization: Bearer ...; several during a rotation
//! database_url = "postgres://b24sync_status:...@db.example.com/b24mirror"   # optional
//! ```

use std::fmt;

use serde::Deserialize;

use crate::routes::validate_secret;
use crate::{ConfigError, DatabaseConfig, DatabaseUrl, invalid, validate_database_url};

/// The status function's settings. `Debug` shows how many tokens there are, never one.
#[derive(Clone, PartialEq)]
pub struct StatusConfig {
    /// Bearer tokens the status function accepts, compared in constant time.
    pub tokens: Vec<String>,
    /// The URL of a role that may only read (see the README, "The status page");
    /// `None` reads with `database.url`.
    pub database_url: Option<DatabaseUrl>,
}

impl fmt::Debug for StatusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("database_url", &self.database_url)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatus {
    tokens: Vec<String>,
    database_url: Option<String>,
}

impl RawStatus {
    pub(crate) fn validate(self) -> Result<StatusConfig, ConfigError> {
        if self.tokens.is_empty() {
            return Err(invalid(
                "status.tokens",
                "expected at least one token (the status function refuses every request without one)",
            ));
        }
        let tokens = self
            .tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                validate_secret(&format!("status.tokens[{i}]"), token)
                    .map(|secret| secret.expose().to_string())
            })
            .collect::<Result<_, _>>()?;
        let database_url = self
            .database_url
            .map(|url| validate_database_url("status.database_url", url))
            .transpose()?;
        Ok(StatusConfig {
            tokens,
            database_url,
        })
    }
}

impl crate::Config {
    /// The database the status function reads: `status.database_url` (a read-only
    /// role) in the schema and with the session limits of `[database]`, or `[database]`
    /// itself.
    pub fn status_database(&self) -> Option<DatabaseConfig> {
        let url = self.status.as_ref().and_then(|s| s.database_url.clone());
        match (url, &self.database) {
            (Some(url), Some(database)) => Some(DatabaseConfig {
                url,
                ..database.clone()
            }),
            (Some(url), None) => Some(DatabaseConfig {
                url,
                schema: crate::DEFAULT_SCHEMA.to_string(),
                session: Default::default(),
            }),
            (None, database) => database.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    const TOKEN: &str = "st4tus-t0ken-9c2e7a51d84b";
    const WEBHOOK: &str = "https://acme.bitrix24.com/rest/1/c0de0123456789ab/";

    fn with_status(status: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!(
            "[database]\nurl = \"postgres://sync:pw@db.example.com/b24\"\nschema = \"crm\"\n\
             [portals.acme]\nwebhook_url = \"{WEBHOOK}\"\n[status]\n{status}"
        ))
    }

    #[test]
    fn tokens_are_kept_and_never_shown() {
        let config = with_status(&format!(
            "tokens = [\"{TOKEN}\", \"second-t0ken-for-rotation\"]"
        ))
        .unwrap();
        let status = config.status.as_ref().unwrap();
        assert_eq!(status.tokens, [TOKEN, "second-t0ken-for-rotation"]);
        let debug = format!("{config:?}");
        assert!(debug.contains("[2 redacted]"), "{debug}");
        assert!(
            !debug.contains(TOKEN) && !debug.contains("second-t0ken"),
            "{debug}"
        );
        // Without its own URL the status function reads with [database].
        assert_eq!(config.status_database(), config.database);
    }

    #[test]
    fn a_bad_token_is_refused_by_key_without_repeating_it() {
        for (tokens, key) in [
            ("[]", "status.tokens"),
            ("[\"short\"]", "status.tokens[0]"),
            (
                &format!("[\"{TOKEN}\", \"{TOKEN} with spaces\"]"),
                "status.tokens[1]",
            ),
            (&format!("[\"{TOKEN}/\"]"), "status.tokens[0]"),
        ] {
            let error = with_status(&format!("tokens = {tokens}")).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with(key), "{tokens}: {text}");
            assert!(!text.contains(TOKEN) && !text.contains("short"), "{text}");
        }
        let error =
            with_status(&format!("tokens = [\"{TOKEN}\"]\ntoken = \"{TOKEN}\"")).unwrap_err();
        assert!(error.to_string().starts_with("status.token"), "{error}");
        assert!(!error.to_string().contains(TOKEN), "{error}");
        let error = with_status("database_url = \"postgres://x@h/d\"").unwrap_err();
        assert!(error.to_string().contains("status.tokens"), "{error}");
    }

    #[test]
    fn a_read_only_role_keeps_the_schema_and_limits_of_database() {
        let config = with_status(&format!(
            "tokens = [\"{TOKEN}\"]\ndatabase_url = \"postgres://status:s3cret-pw@db.example.com/b24\""
        ))
        .unwrap();
        let database = config.status_database().unwrap();
        assert_eq!(
            database.url.expose(),
            "postgres://status:s3cret-pw@db.example.com/b24"
        );
        assert_eq!(database.schema, "crm");
        assert_eq!(database.session, config.database.as_ref().unwrap().session);
        assert!(!format!("{config:?}").contains("s3cret-pw"));
        let error = with_status(&format!(
            "tokens = [\"{TOKEN}\"]\ndatabase_url = \"mysql://status:s3cret-pw@db\""
        ))
        .unwrap_err();
        assert!(
            error.to_string().starts_with("status.database_url"),
            "{error}"
        );
        assert!(!error.to_string().contains("s3cret-pw"), "{error}");
    }
}
