//! The function's settings: the configuration document and boolean switches from the
//! environment. Every failure here is [`FunctionError::Configuration`].

use b24_config::{Config, ConfigError};

use crate::error::FunctionError;

/// The configuration document from `B24SYNC_CONFIG` (a path, or the JSON itself). The
/// error names what is wrong and never repeats the value, which may hold secrets.
pub fn load_config() -> Result<Config, FunctionError> {
    Config::load(None).map_err(FunctionError::from)
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
