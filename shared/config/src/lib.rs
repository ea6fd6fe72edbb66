//! The one configuration document of the product: the mirror database and the portals
//! with their webhooks, event tokens, entities and limits. Read from TOML or JSON (a
//! file named by `--config` or `B24SYNC_CONFIG`, or the JSON itself in that variable;
//! in AWS the JSON of a Secrets Manager secret), validated once, and printed only with
//! every secret redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use b24_domain::entity::Entity;
use b24_domain::limits::LimitSettings;
use b24_domain::webhook::WebhookUrl;
use serde::Deserialize;

/// The environment variable holding a configuration path or the JSON document itself.
pub const CONFIG_ENV: &str = "B24SYNC_CONFIG";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub database: Option<DatabaseConfig>,
    pub portals: BTreeMap<String, PortalConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// The schema holding the mirror tables; default `b24`.
    pub schema: String,
}

/// `postgres://user:password@host:port/db?sslmode=...`. `Debug` and `Display` hide the
/// password; [`DatabaseUrl::expose`] gives the URL to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_database_url(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[derive(Clone, PartialEq)]
pub struct PortalConfig {
    pub webhook_url: WebhookUrl,
    /// The portal's host name; taken from the webhook URL when not given.
    pub domain: String,
    pub member_id: Option<String>,
    /// Outgoing-webhook / application tokens accepted from this portal (several during
    /// a rotation).
    pub application_tokens: Vec<String>,
    pub entities: Vec<Entity>,
    pub limits: LimitSettings,
    /// The largest share (0 to 1) of an entity's live rows one run may soft-delete
    /// without confirmation; default [`DEFAULT_MAX_DELETE_SHARE`].
    pub max_delete_share: f64,
}

/// A role change or a filter that hides most records must not empty the mirror: by
/// default a run may delete at most a tenth of the live rows unconfirmed.
pub const DEFAULT_MAX_DELETE_SHARE: f64 = 0.10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration: pass --config PATH or set {CONFIG_ENV} to a file path or to the JSON document"
    )]
    Missing,
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A key is missing, unknown or holds a bad value; `key` is its dotted path.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown portal {name:?}: configured portals are [{known}]")]
    UnknownPortal { name: String, known: String },
}

impl Config {
    /// Reads the document from `path` (the `--config` option) or else from
    /// `B24SYNC_CONFIG`.
    pub fn load(path: Option<&str>) -> Result<Config, ConfigError> {
        if let Some(path) = path {
            return Self::from_file(Path::new(path));
        }
        match std::env::var(CONFIG_ENV) {
            Ok(value) if value.trim_start().starts_with('{') => Self::from_json_str(&value),
            Ok(value) if !value.trim().is_empty() => Self::from_file(Path::new(value.trim())),
            _ => Err(ConfigError::Missing),
        }
    }

    /// JSON when the file is named `*.json` or its text starts with `{`, TOML otherwise.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        }
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| toml_syntax_error(text, &e))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| invalid_from_serde(e.path().to_string(), e.inner().message()))?;
        raw.validate()
    }

    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                ConfigError::Syntax {
                    origin: "JSON configuration".into(),
                    message: inner.to_string(),
                }
            } else {
                invalid_from_serde(e.path().to_string(), &inner.to_string())
            }
        })?;
        deserializer.end().map_err(|e| ConfigError::Syntax {
            origin: "JSON configuration".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    /// The portal called `name`, or an error listing the configured ones.
    pub fn portal(&self, name: &str) -> Result<&PortalConfig, ConfigError> {
        self.portals
            .get(name)
            .ok_or_else(|| ConfigError::UnknownPortal {
                name: name.to_string(),
                known: self.portals.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// TOML syntax errors: the parser's message and line, never its source excerpt (the
/// offending line may hold a secret).
fn toml_syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let origin = match error.span() {
        Some(span) => format!(
            "TOML configuration line {}",
            text[..span.start.min(text.len())].lines().count().max(1)
        ),
        None => "TOML configuration".to_string(),
    };
    ConfigError::Syntax {
        origin,
        message: error.message().trim().to_string(),
    }
}

/// Turns a serde message into `key: what was expected`, dropping the offending value
/// (it may be a secret typed into the wrong key) and moving unknown or missing key
/// names into the path.
fn invalid_from_serde(path: String, message: &str) -> ConfigError {
    let path = if path == "." { String::new() } else { path };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    let message = message.trim();
    let backticked = |m: &str| m.split('`').nth(1).map(str::to_string);

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let key = backticked(rest).unwrap_or_default();
        let allowed = rest
            .split_once(", expected ")
            .map(|(_, a)| a.replace('`', ""));
        let message = match allowed {
            Some(allowed) => format!("unknown key; expected {allowed}"),
            None => "unknown key".to_string(),
        };
        // serde_path_to_error already ends the path with the unknown key.
        let already_named = path.rsplit('.').next() == Some(key.as_str());
        let key = if already_named { path } else { join(&key) };
        return ConfigError::Invalid { key, message };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let key = backticked(rest).unwrap_or_default();
        return ConfigError::Invalid {
            key: join(&key),
            message: "required key is missing".into(),
        };
    }
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        let expected = message
            .split_once(", expected ")
            .map_or("a different value", |(_, e)| e);
        let expected = match expected.split(" at line ").next().unwrap_or(expected) {
            "f64" | "f32" | "i64" | "u64" | "u32" | "i32" => "a number",
            "a sequence" => "a list",
            other if other.starts_with("struct ") || other == "a map" => "a table",
            other => other,
        };
        return ConfigError::Invalid {
            key: path_or_root(path),
            message: format!("expected {expected}"),
        };
    }
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .replace('`', "");
    ConfigError::Invalid {
        key: path_or_root(path),
        message,
    }
}

fn path_or_root(path: String) -> String {
    if path.is_empty() {
        "(document)".into()
    } else {
        path
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<RawDatabase>,
    #[serde(default)]
    portals: BTreeMap<String, RawPortal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    schema: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    webhook_url: WebhookUrl,
    domain: Option<String>,
    member_id: Option<String>,
    #[serde(default)]
    application_tokens: Vec<String>,
    entities: Option<Vec<Entity>>,
    #[serde(default)]
    limits: RawLimits,
    max_delete_share: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    preset: Option<Preset>,
    burst: Option<f64>,
    drain: Option<f64>,
    operating_budget: Option<f64>,
    operating_window: Option<f64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Preset {
    Standard,
    Enterprise,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let database = self.database.map(RawDatabase::validate).transpose()?;
        let mut portals = BTreeMap::new();
        for (name, raw) in self.portals {
            let key = format!("portals.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    key,
                    "portal names may use only letters, digits, '_' and '-'",
                ));
            }
            portals.insert(name, raw.validate(&key)?);
        }
        Ok(Config { database, portals })
    }
}

impl RawDatabase {
    fn validate(self) -> Result<DatabaseConfig, ConfigError> {
        let url = self.url.trim().to_string();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "database.url",
                "expected a postgres:// or postgresql:// URL",
            ));
        }
        let schema = self.schema.unwrap_or_else(|| "b24".into());
        let valid_schema = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_schema {
            return Err(invalid(
                "database.schema",
                "expected a lower-case identifier (a-z, 0-9, '_', at most 63 characters)",
            ));
        }
        Ok(DatabaseConfig {
            url: DatabaseUrl(url),
            schema,
        })
    }
}

impl RawPortal {
    fn validate(self, key: &str) -> Result<PortalConfig, ConfigError> {
        let domain = match self.domain {
            Some(domain) => {
                let domain = domain.trim().to_ascii_lowercase();
                let valid = !domain.is_empty()
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if !valid {
                    return Err(invalid(
                        format!("{key}.domain"),
                        "expected a host name such as example.bitrix24.com",
                    ));
                }
                domain
            }
            None => self.webhook_url.domain().to_string(),
        };
        let member_id = match self.member_id {
            Some(id) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                return Err(invalid(
                    format!("{key}.member_id"),
                    "expected letters and digits only",
                ));
            }
            other => other,
        };
        for (i, token) in self.application_tokens.iter().enumerate() {
            if token.is_empty()
                || token
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(invalid(
                    format!("{key}.application_tokens[{i}]"),
                    "expected a non-empty token without whitespace",
                ));
            }
        }
        let entities = self.entities.unwrap_or_else(|| Entity::ALL.to_vec());
        if entities.is_empty() {
            return Err(invalid(
                format!("{key}.entities"),
                "expected at least one of deal, contact, lead, company",
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some(dup) = entities.iter().find(|e| !seen.insert(**e)) {
            return Err(invalid(
                format!("{key}.entities"),
                format!("{dup} is listed twice"),
            ));
        }
        let limits = self.limits.validate(&format!("{key}.limits"))?;
        let max_delete_share = match self.max_delete_share {
            None => DEFAULT_MAX_DELETE_SHARE,
            Some(share) if (0.0..=1.0).contains(&share) => share,
            Some(_) => {
                return Err(invalid(
                    format!("{key}.max_delete_share"),
                    "expected a number from 0 to 1 (a share of the live rows, 0.1 = 10 %)",
                ));
            }
        };
        Ok(PortalConfig {
            webhook_url: self.webhook_url,
            domain,
            member_id,
            application_tokens: self.application_tokens,
            entities,
            limits,
            max_delete_share,
        })
    }
}

impl RawLimits {
    fn validate(self, key: &str) -> Result<LimitSettings, ConfigError> {
        let base = match self.preset {
            Some(Preset::Enterprise) => LimitSettings::enterprise(),
            Some(Preset::Standard) | None => LimitSettings::standard(),
        };
        let check = |name: &str, value: Option<f64>, min: f64, default: f64| match value {
            None => Ok(default),
            Some(v) if v.is_finite() && v >= min => Ok(v),
            Some(_) => Err(invalid(
                format!("{key}.{name}"),
                format!("expected a number of at least {min}"),
            )),
        };
        let settings = LimitSettings {
            burst: check("burst", self.burst, 1.0, base.burst)?,
            drain_per_sec: check("drain", self.drain, 0.01, base.drain_per_sec)?,
            operating_budget_secs: check(
                "operating_budget",
                self.operating_budget,
                1.0,
                base.operating_budget_secs,
            )?,
            operating_window_secs: check(
                "operating_window",
                self.operating_window,
                1.0,
                base.operating_window_secs,
            )?,
        };
        Ok(settings)
    }
}

impl fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalConfig")
            .field("webhook_url", &self.webhook_url)
            .field("domain", &self.domain)
            .field("member_id", &self.member_id)
            .field(
                "application_tokens",
                &format_args!("[{} redacted]", self.application_tokens.len()),
            )
            .field("entities", &self.entities)
            .field("limits", &self.limits)
            .field("max_delete_share", &self.max_delete_share)
            .finish()
    }
}

/// `postgres://user:***@host/db?password=***`: the password in the user-info part and
/// in a `password=` query parameter replaced.
pub fn redact_database_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

#[cfg(test)]
mod tests;
