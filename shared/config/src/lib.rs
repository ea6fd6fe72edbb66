//! The one configuration document of the product: the mirror database, the portals
//! with their webhooks, event tokens, entities and limits, and the routes that forward
//! deals from one portal to another. Read from TOML or JSON (a
//! file named by `--config` or `B24SYNC_CONFIG`, or the JSON itself in that variable;
//! in AWS the JSON of a Secrets Manager secret), validated once, and printed only with
//! every secret redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

pub use b24_domain::back_sync::ConflictPolicy;
use b24_domain::database::SessionSettings;
use b24_domain::entity::Entity;
use b24_domain::event::PortalIdentity;
use b24_domain::forward::route::ForwardRoute;
pub use b24_domain::item::{ApiChoice, SmartProcesses, SmartRef};
use b24_domain::limits::LimitSettings;
use b24_domain::webhook::WebhookUrl;
use serde::Deserialize;

/// The environment variable holding a configuration path or the JSON document itself.
pub const CONFIG_ENV: &str = "B24SYNC_CONFIG";

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub database: Option<DatabaseConfig>,
    pub portals: BTreeMap<String, PortalConfig>,
    /// Deal-forwarding routes by name (see [`routes`]); `Debug` hides their secrets.
    pub routes: BTreeMap<String, ForwardRoute>,
    /// The status function's tokens and database role (see [`status`]).
    pub status: Option<StatusConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// The schema holding the mirror tables; default `b24`.
    pub schema: String,
    /// Connect timeout, keepalive and server-side timeouts of every session.
    pub session: SessionSettings,
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
    /// Whether and how edits made in PostgreSQL are pushed to this portal.
    pub back_sync: BackSyncConfig,
    /// Which API reads the classic entities (smart processes always use `crm.item`).
    pub api: ApiChoice,
    /// Smart processes mirrored beyond those named in `entities`.
    pub smart_processes: SmartProcesses,
    /// Mirror the product rows of deals and of smart processes that link products.
    pub product_rows: bool,
    /// Append the stage history of leads, deals and the mirrored smart processes on
    /// every reference refresh.
    pub stage_history: bool,
}

/// `portals.NAME.back_sync`: edits made in the mirror pushed to the portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackSyncConfig {
    /// Off by default: edits are captured but wait in the outbox until it is on.
    pub enabled: bool,
    /// When the portal changed a record after the editor saw it.
    pub conflicts: ConflictPolicy,
    /// Whether deleting a mirror row deletes the record in Bitrix24; otherwise the
    /// delete is skipped and the row comes back from the portal.
    pub allow_deletes: bool,
    /// Attempts before a change that keeps failing (the portal unreachable, 5xx) is
    /// parked as failed.
    pub max_attempts: u32,
}

impl Default for BackSyncConfig {
    fn default() -> Self {
        BackSyncConfig {
            enabled: false,
            conflicts: ConflictPolicy::PortalWins,
            allow_deletes: false,
            max_attempts: DEFAULT_BACK_SYNC_ATTEMPTS,
        }
    }
}

/// Attempts of a change before it is parked as failed, by default.
pub const DEFAULT_BACK_SYNC_ATTEMPTS: u32 = 8;

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
    /// `--config` or `B24SYNC_CONFIG` (the `origin`) holds neither a readable path nor
    /// a JSON document. The value may be a secret (a pasted document or webhook URL), so
    /// only what it looks like is said, never any of it.
    #[error(
        "{origin} {found}; expected the path of a readable TOML or JSON file, or the JSON document itself (starting with '{{')"
    )]
    Unusable { origin: &'static str, found: String },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A key is missing, unknown or holds a bad value; `key` is its dotted path.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown portal {name:?}: configured portals are [{known}]")]
    UnknownPortal { name: String, known: String },
    #[error("unknown route {name:?}: configured routes are [{known}]")]
    UnknownRoute { name: String, known: String },
}

impl Config {
    /// The portals as the function URLs (event intake, deal robot) recognise a caller:
    /// name, domain, member_id and application tokens.
    pub fn portal_identities(&self) -> Vec<PortalIdentity> {
        self.portals
            .iter()
            .map(|(name, portal)| PortalIdentity {
                name: name.clone(),
                domain: portal.domain.clone(),
                member_id: portal.member_id.clone(),
                tokens: portal.application_tokens.clone(),
            })
            .collect()
    }

    /// Reads the document from `option` (the `--config` option) or else from
    /// `B24SYNC_CONFIG`, either of them a path or the JSON document itself. A leading
    /// byte-order mark (as Windows editors write) is ignored.
    pub fn load(option: Option<&str>) -> Result<Config, ConfigError> {
        if let Some(value) = option {
            // A file path is named in errors (it is what the user typed); anything that
            // looks like a document or a URL instead is treated like the variable's value.
            let is_path = !value.trim_start().starts_with(['{', '\u{feff}'])
                && !value.contains("://")
                && !value.contains(['\n', '\r', '=']);
            return if is_path {
                Self::from_file(Path::new(value))
            } else {
                Self::from_value("--config", value)
            };
        }
        match std::env::var(CONFIG_ENV) {
            Ok(value) => Self::from_env_value(&value),
            Err(std::env::VarError::NotPresent) => Err(ConfigError::Missing),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Unusable {
                origin: CONFIG_ENV,
                found: "is not valid UTF-8".into(),
            }),
        }
    }

    /// The document named or held by a `B24SYNC_CONFIG` value.
    pub fn from_env_value(value: &str) -> Result<Config, ConfigError> {
        Self::from_value(CONFIG_ENV, value)
    }

    /// The document named or held by `value`, which came from `origin`; errors never
    /// show the value.
    fn from_value(origin: &'static str, value: &str) -> Result<Config, ConfigError> {
        let value = strip_bom(value).trim();
        if value.is_empty() {
            return Err(ConfigError::Missing);
        }
        if value.starts_with('{') {
            return Self::from_json_str(value);
        }
        let read_error = match std::fs::read_to_string(value) {
            Ok(text) => return Self::from_text(Path::new(value), &text),
            Err(error) => error,
        };
        let found = if value.starts_with('"') {
            "holds a JSON string, not a JSON object: the document seems to be encoded twice (store it as plain JSON)".to_string()
        } else if value.starts_with('[') || value.lines().any(|line| line.contains('=')) {
            "looks like an inline TOML document; only JSON can be given inline (or put the TOML in a file and give its path)".to_string()
        } else if value.contains(['\n', '\r']) {
            "holds several lines of text, not a path".to_string()
        } else {
            // An io::Error from opening a file carries no path, only the OS's reason.
            format!("names no readable file ({read_error})")
        };
        Err(ConfigError::Unusable { origin, found })
    }

    /// JSON when the file is named `*.json` or its text starts with `{`, TOML otherwise.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(path, &text)
    }

    fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || strip_bom(text).trim_start().starts_with('{');
        if is_json {
            Self::from_json_str(text)
        } else {
            Self::from_toml_str(text)
        }
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let text = strip_bom(text);
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| toml_syntax_error(text, &e))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| invalid_from_serde(e.path().to_string(), e.inner().message()))?;
        raw.validate()
    }

    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let text = strip_bom(text);
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

    /// The route called `name`, or an error listing the configured ones.
    pub fn route(&self, name: &str) -> Result<&ForwardRoute, ConfigError> {
        self.routes
            .get(name)
            .ok_or_else(|| ConfigError::UnknownRoute {
                name: name.to_string(),
                known: self.routes.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Text saved with a UTF-8 byte-order mark parses like the same text without one.
fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
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
    #[serde(default)]
    routes: BTreeMap<String, routes::RawRoute>,
    status: Option<status::RawStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    schema: Option<String>,
    connect_timeout: Option<f64>,
    tcp_keepalive: Option<f64>,
    statement_timeout: Option<f64>,
    lock_timeout: Option<f64>,
    idle_in_transaction_session_timeout: Option<f64>,
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
    #[serde(default)]
    back_sync: RawBackSync,
    #[serde(default)]
    api: ApiChoice,
    smart_processes: Option<RawSmartProcesses>,
    #[serde(default)]
    product_rows: bool,
    #[serde(default)]
    stage_history: bool,
}

/// `"all"`, or a list of entity type IDs and titles.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSmartProcesses {
    Word(String),
    List(Vec<RawSmartRef>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSmartRef {
    TypeId(u32),
    Title(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackSync {
    enabled: Option<bool>,
    conflicts: Option<ConflictPolicy>,
    allow_deletes: Option<bool>,
    max_attempts: Option<u32>,
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
            if !is_name(&name) {
                return Err(invalid(
                    key,
                    "portal names may use only letters, digits, '_' and '-'",
                ));
            }
            portals.insert(name, raw.validate(&key)?);
        }
        let routes = routes::validate(self.routes, &portals)?;
        let status = self.status.map(status::RawStatus::validate).transpose()?;
        Ok(Config {
            database,
            portals,
            routes,
            status,
        })
    }
}

/// A portal or route name: letters, digits, `_` and `-`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RawDatabase {
    fn validate(self) -> Result<DatabaseConfig, ConfigError> {
        let url = validate_database_url("database.url", self.url)?;
        let schema = self.schema.unwrap_or_else(|| DEFAULT_SCHEMA.into());
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
        let defaults = SessionSettings::default();
        let seconds = |name: &str, value: Option<f64>, default: Duration| {
            seconds_setting(&format!("database.{name}"), value, default)
        };
        let connect_timeout = seconds(
            "connect_timeout",
            self.connect_timeout,
            defaults.connect_timeout,
        )?;
        if connect_timeout.is_zero() {
            return Err(invalid(
                "database.connect_timeout",
                "expected a positive number of seconds",
            ));
        }
        let keepalive_idle = seconds(
            "tcp_keepalive",
            self.tcp_keepalive,
            defaults.keepalive_idle.unwrap_or_default(),
        )?;
        let session = SessionSettings {
            connect_timeout,
            keepalive_idle: (!keepalive_idle.is_zero()).then_some(keepalive_idle),
            statement_timeout: seconds(
                "statement_timeout",
                self.statement_timeout,
                defaults.statement_timeout,
            )?,
            lock_timeout: seconds("lock_timeout", self.lock_timeout, defaults.lock_timeout)?,
            idle_in_transaction_session_timeout: seconds(
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_session_timeout,
                defaults.idle_in_transaction_session_timeout,
            )?,
        };
        Ok(DatabaseConfig {
            url,
            schema,
            session,
        })
    }
}

/// The schema of the mirror tables when `database.schema` is not given.
pub const DEFAULT_SCHEMA: &str = "b24";

fn validate_database_url(key: &str, url: String) -> Result<DatabaseUrl, ConfigError> {
    let url = url.trim().to_string();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(key, "expected a postgres:// or postgresql:// URL"));
    }
    Ok(DatabaseUrl(url))
}

/// PostgreSQL keeps its timeouts as a 32-bit count of milliseconds.
const MAX_SECONDS: f64 = i32::MAX as f64 / 1000.0;

/// A number of seconds (fractions allowed) from 0 to PostgreSQL's limit.
fn seconds_setting(
    key: &str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if (0.0..=MAX_SECONDS).contains(&v) => Ok(Duration::from_secs_f64(v)),
        Some(_) => Err(invalid(
            key,
            format!(
                "expected a number of seconds from 0 to {}",
                MAX_SECONDS.floor()
            ),
        )),
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
                "expected at least one of deal, contact, lead, company or sp_<entityTypeId>",
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
        let defaults = BackSyncConfig::default();
        let back_sync = BackSyncConfig {
            enabled: self.back_sync.enabled.unwrap_or(defaults.enabled),
            conflicts: self.back_sync.conflicts.unwrap_or(defaults.conflicts),
            allow_deletes: self
                .back_sync
                .allow_deletes
                .unwrap_or(defaults.allow_deletes),
            max_attempts: match self.back_sync.max_attempts {
                None => defaults.max_attempts,
                Some(n) if (1..=100).contains(&n) => n,
                Some(_) => {
                    return Err(invalid(
                        format!("{key}.back_sync.max_attempts"),
                        "expected a whole number from 1 to 100",
                    ));
                }
            },
        };
        let key_of = |what: &str| format!("{key}.smart_processes{what}");
        let smart_processes = match self.smart_processes {
            None => SmartProcesses::None,
            Some(RawSmartProcesses::Word(word)) if word.trim().eq_ignore_ascii_case("all") => {
                SmartProcesses::All
            }
            Some(RawSmartProcesses::Word(_)) => {
                return Err(invalid(
                    key_of(""),
                    "expected \"all\" or a list of smart-process entity type IDs (128 and above) and titles",
                ));
            }
            Some(RawSmartProcesses::List(refs)) => {
                let mut listed = Vec::with_capacity(refs.len());
                for (i, r) in refs.into_iter().enumerate() {
                    listed.push(match r {
                        RawSmartRef::TypeId(id) if Entity::smart(id).is_some() => {
                            SmartRef::TypeId(id)
                        }
                        RawSmartRef::TypeId(_) => {
                            return Err(invalid(
                                key_of(&format!("[{i}]")),
                                "a smart process's entity type ID is 128 or above",
                            ));
                        }
                        RawSmartRef::Title(t) if !t.trim().is_empty() => SmartRef::Title(t),
                        RawSmartRef::Title(_) => {
                            return Err(invalid(
                                key_of(&format!("[{i}]")),
                                "expected a title, not an empty text",
                            ));
                        }
                    });
                }
                SmartProcesses::Listed(listed)
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
            back_sync,
            api: self.api,
            smart_processes,
            product_rows: self.product_rows,
            stage_history: self.stage_history,
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
            .field("back_sync", &self.back_sync)
            .field("api", &self.api)
            .field("smart_processes", &self.smart_processes)
            .field("product_rows", &self.product_rows)
            .field("stage_history", &self.stage_history)
            .finish()
    }
}

/// `postgres://user:***@host/db?password=***`: the password in the user-info part and
/// in a `password=` query parameter replaced.
///
/// Meant for URLs that are malformed too: a password holding an unencoded `@`, `/`,
/// `?`, `#`, `:` or `&` must not show either. Everything that could belong to a password
/// is hidden, at the price of hiding more than the password in such URLs: the user
/// info runs from the first `:` after the scheme to the *last* `@`, and a `password=`
/// parameter to the next `&`; where the two overlap they are hidden as one.
pub fn redact_database_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let mut hidden: Vec<Range<usize>> = Vec::new();
    if let Some(at) = url[start..].rfind('@').map(|i| start + i)
        && let Some(colon) = url[start..at].find(':')
    {
        hidden.push(start + colon + 1..at);
    }
    let lower = url.to_ascii_lowercase();
    let mut from = start;
    while let Some(found) = lower[from..].find("password=").map(|i| from + i) {
        let value = found + "password=".len();
        if found > 0 && matches!(url.as_bytes()[found - 1], b'?' | b'&') {
            let end = url[value..].find('&').map_or(url.len(), |i| value + i);
            hidden.push(value..end);
        }
        from = value;
    }
    hidden.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for range in hidden {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    let mut redacted = String::with_capacity(url.len());
    let mut shown_up_to = 0;
    for range in merged {
        redacted.push_str(&url[shown_up_to..range.start]);
        redacted.push_str("***");
        shown_up_to = range.end;
    }
    redacted.push_str(&url[shown_up_to..]);
    redacted
}

pub mod routes;
pub mod status;

pub use status::StatusConfig;

#[cfg(test)]
mod tests;
