use super::*;

const EXAMPLE: &str = include_str!("../../../config.example.toml");
const SECRET: &str = "zz9secretcode77";

fn minimal(extra_portal_lines: &str) -> String {
    format!(
        "[portals.acme]\nwebhook_url = \"https://acme.bitrix24.com/rest/1/{SECRET}/\"\n{extra_portal_lines}\n"
    )
}

fn invalid_key(text: &str) -> (String, String) {
    match Config::from_toml_str(text) {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn the_shipped_example_is_valid_and_complete() {
    let config = Config::from_toml_str(EXAMPLE).unwrap();
    let db = config.database.as_ref().unwrap();
    assert_eq!(
        db.url.expose(),
        "postgres://b24sync:change-me@127.0.0.1:5432/b24mirror"
    );
    assert_eq!(
        db.url.to_string(),
        "postgres://b24sync:***@127.0.0.1:5432/b24mirror"
    );
    assert_eq!(db.schema, "b24");
    let acme = config.portal("acme").unwrap();
    assert_eq!(acme.domain, "acme.bitrix24.com");
    assert_eq!(
        acme.member_id.as_deref(),
        Some("d897063e1ce7c5eb9f04b9751eef5915")
    );
    assert_eq!(
        acme.application_tokens,
        vec!["jvh9y1ulvt2m6k5or90v9mg8nn32ozas".to_string()]
    );
    assert_eq!(acme.entities, Entity::ALL.to_vec());
    assert_eq!(acme.limits, LimitSettings::standard());
    assert_eq!(acme.max_delete_share, 0.1);
    let partner = config.portal("partner").unwrap();
    assert_eq!(partner.domain, "partner.bitrix24.com");
    assert_eq!(partner.webhook_url.user_id(), 12);
    assert_eq!(partner.entities, vec![Entity::Deal]);
    assert_eq!(partner.limits, LimitSettings::enterprise());
    assert_eq!(partner.max_delete_share, DEFAULT_MAX_DELETE_SHARE);
}

#[test]
fn json_form_gives_the_same_document_as_toml() {
    let json = format!(
        r#"{{"database": {{"url": "postgresql://u@localhost/db"}},
            "portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{SECRET}/",
                                   "entities": ["contact", "lead"],
                                   "limits": {{"preset": "enterprise", "drain": 3}}}}}}}}"#
    );
    let config = Config::from_json_str(&json).unwrap();
    assert_eq!(config.database.as_ref().unwrap().schema, "b24");
    let acme = config.portal("acme").unwrap();
    assert_eq!(acme.entities, vec![Entity::Contact, Entity::Lead]);
    assert_eq!(
        acme.limits,
        LimitSettings {
            drain_per_sec: 3.0,
            ..LimitSettings::enterprise()
        }
    );

    let toml = minimal(
        "entities = [\"contact\", \"lead\"]\nlimits = { preset = \"enterprise\", drain = 3 }",
    );
    let from_toml = Config::from_toml_str(&toml).unwrap();
    assert_eq!(from_toml.portals, config.portals);
}

#[test]
fn defaults_fill_the_optional_keys() {
    let config = Config::from_toml_str(&minimal("")).unwrap();
    assert!(config.database.is_none());
    let acme = config.portal("acme").unwrap();
    assert_eq!(acme.domain, "acme.bitrix24.com");
    assert_eq!(acme.member_id, None);
    assert!(acme.application_tokens.is_empty());
    assert_eq!(acme.entities, Entity::ALL.to_vec());
    assert_eq!(acme.limits, LimitSettings::standard());
    assert_eq!(acme.max_delete_share, 0.10);
}

#[test]
fn max_delete_share_accepts_the_closed_unit_interval() {
    for (text, expected) in [("0", 0.0), ("0.25", 0.25), ("1", 1.0), ("1.0", 1.0)] {
        let config =
            Config::from_toml_str(&minimal(&format!("max_delete_share = {text}"))).unwrap();
        assert_eq!(
            config.portal("acme").unwrap().max_delete_share,
            expected,
            "{text}"
        );
    }
    let json = format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{SECRET}/", "max_delete_share": 1}}}}}}"#
    );
    let config = Config::from_json_str(&json).unwrap();
    assert_eq!(config.portal("acme").unwrap().max_delete_share, 1.0);
    for bad in ["-0.1", "1.5", "nan", "inf", "\"10%\""] {
        let (key, message) = invalid_key(&minimal(&format!("max_delete_share = {bad}")));
        assert_eq!(key, "portals.acme.max_delete_share", "{bad}");
        assert!(
            message.contains("0 to 1") || message.contains("number"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let (key, message) = invalid_key(&minimal("[portals.acme.limits]\nbursts = 5"));
    assert_eq!(key, "portals.acme.limits.bursts");
    assert!(
        message.contains("unknown key") && message.contains("burst"),
        "{message}"
    );

    let (key, _) = invalid_key(&format!("{}\nwebhook = 1", minimal("")));
    assert_eq!(key, "portals.acme.webhook");
    let (key, _) = invalid_key("[databse]\nurl = \"postgres://x\"");
    assert_eq!(key, "databse");
}

#[test]
fn bad_values_are_named_with_their_path() {
    let cases = [
        (
            minimal("limits = { burst = \"many\" }"),
            "portals.acme.limits.burst",
            "expected a number",
        ),
        (
            minimal("limits = { drain = 0 }"),
            "portals.acme.limits.drain",
            "at least",
        ),
        (
            minimal("limits = { preset = \"gold\" }"),
            "portals.acme.limits.preset",
            "enterprise",
        ),
        (
            minimal("entities = [\"deal\", \"invoice\"]"),
            "portals.acme.entities[1]",
            "deal",
        ),
        (
            minimal("entities = []"),
            "portals.acme.entities",
            "at least one",
        ),
        (
            minimal("entities = [\"deal\", \"deal\"]"),
            "portals.acme.entities",
            "twice",
        ),
        (
            minimal("member_id = \"a b\""),
            "portals.acme.member_id",
            "letters",
        ),
        (
            minimal("domain = \"bad host!\""),
            "portals.acme.domain",
            "host name",
        ),
        (
            minimal("application_tokens = [\"ok\", \"\"]"),
            "portals.acme.application_tokens[1]",
            "non-empty",
        ),
        (
            "[database]\nurl = \"mysql://x\"".to_string(),
            "database.url",
            "postgres://",
        ),
        (
            "[database]\nurl = \"postgres://x\"\nschema = \"Drop Table\"".to_string(),
            "database.schema",
            "identifier",
        ),
        (
            "[database]\nschema = \"b24\"".to_string(),
            "database.url",
            "missing",
        ),
        (
            "[portals.acme]\ndomain = \"a.com\"".to_string(),
            "portals.acme.webhook_url",
            "missing",
        ),
        (
            minimal("").replace("[portals.acme]", "[portals.\"a b\"]"),
            "portals.a b",
            "letters",
        ),
    ];
    for (text, expected_key, expected_message) in cases {
        let (key, message) = invalid_key(&text);
        assert_eq!(key, expected_key, "{text}");
        assert!(message.contains(expected_message), "{key}: {message}");
    }
}

#[test]
fn errors_never_echo_secrets() {
    // A token typed where a list belongs, a malformed webhook URL, a syntax error on the
    // webhook line: none of the messages may repeat the secret.
    let texts = [
        minimal(&format!("application_tokens = \"{SECRET}\"")),
        format!("[portals.acme]\nwebhook_url = \"https://acme.bitrix24.com/rest/x/{SECRET}/\""),
        format!("[portals.acme]\nwebhook_url = \"https://acme.bitrix24.com/rest/1/{SECRET}/"),
        format!("[portals.acme]\nwebhook_url = 'https://acme.bitrix24.com/rest/1/{SECRET}/' x"),
    ];
    for text in texts {
        let err = Config::from_toml_str(&text).unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
    }
    let err = Config::from_toml_str(&texts_key_url()).unwrap_err();
    assert!(
        err.to_string().starts_with("portals.acme.webhook_url: "),
        "{err}"
    );

    let json = format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://a.com/rest/1/{SECRET}/", "application_tokens": "{SECRET}"}}}}}}"#
    );
    let err = Config::from_json_str(&json).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("portals.acme.application_tokens: expected a list"),
        "{err}"
    );
    assert!(!err.to_string().contains(SECRET));
}

fn texts_key_url() -> String {
    format!("[portals.acme]\nwebhook_url = \"https://acme.bitrix24.com/rest/x/{SECRET}/\"")
}

#[test]
fn syntax_errors_name_the_line() {
    let err = Config::from_toml_str("[database]\nurl = \"postgres://x\"\nschema = \n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("line 3"), "{err}");
    let err = Config::from_json_str("{\"portals\": ").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    let err = Config::from_json_str("{} trailing").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
}

#[test]
fn debug_redacts_webhook_secret_tokens_and_database_password() {
    let text = format!(
        "[database]\nurl = \"postgres://sync:pa55word@db:5432/m?sslmode=require&password=pa55word\"\n{}",
        minimal("application_tokens = [\"tok3n-one\", \"tok3n-two\"]")
    );
    let config = Config::from_toml_str(&text).unwrap();
    let debug = format!("{config:?}");
    for secret in [SECRET, "pa55word", "tok3n-one", "tok3n-two"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(
        debug.contains("postgres://sync:***@db:5432/m?sslmode=require&password=***"),
        "{debug}"
    );
    assert!(debug.contains("[2 redacted]"), "{debug}");
    assert!(
        debug.contains("https://acme.bitrix24.com/rest/1/***/"),
        "{debug}"
    );
}

#[test]
fn database_url_redaction_handles_urls_without_password() {
    assert_eq!(
        redact_database_url("postgres://u@h/db"),
        "postgres://u@h/db"
    );
    assert_eq!(redact_database_url("postgres://h/db"), "postgres://h/db");
    assert_eq!(
        redact_database_url("postgres://u:p@w@h"),
        "postgres://u:***@h"
    );
}

#[test]
fn unknown_portal_lists_the_configured_ones() {
    let config = Config::from_toml_str(EXAMPLE).unwrap();
    let err = config.portal("nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown portal \"nope\": configured portals are [acme, partner]"
    );
}

/// The only test touching the process environment, so no other test races with it.
#[test]
fn load_prefers_the_path_then_the_environment() {
    let dir = std::env::temp_dir().join(format!("b24-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("c.toml");
    std::fs::write(&toml_path, minimal("entities = [\"deal\"]")).unwrap();
    let json_path = dir.join("c.json");
    std::fs::write(
        &json_path,
        format!(r#"{{"portals": {{"j": {{"webhook_url": "https://j.com/rest/1/{SECRET}"}}}}}}"#),
    )
    .unwrap();

    // SAFETY: no other test in this crate reads or writes the environment.
    unsafe { std::env::remove_var(CONFIG_ENV) };
    assert!(matches!(Config::load(None), Err(ConfigError::Missing)));
    let from_path = Config::load(Some(toml_path.to_str().unwrap())).unwrap();
    assert!(from_path.portals.contains_key("acme"));
    let from_json_file = Config::load(Some(json_path.to_str().unwrap())).unwrap();
    assert!(from_json_file.portals.contains_key("j"));

    unsafe { std::env::set_var(CONFIG_ENV, json_path.to_str().unwrap()) };
    assert!(Config::load(None).unwrap().portals.contains_key("j"));
    // The explicit path wins over the environment.
    assert!(
        Config::load(Some(toml_path.to_str().unwrap()))
            .unwrap()
            .portals
            .contains_key("acme")
    );
    unsafe { std::env::set_var(CONFIG_ENV, r#" {"portals": {}}"#) };
    assert!(Config::load(None).unwrap().portals.is_empty());
    unsafe { std::env::remove_var(CONFIG_ENV) };

    let err = Config::load(Some(dir.join("missing.toml").to_str().unwrap())).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
