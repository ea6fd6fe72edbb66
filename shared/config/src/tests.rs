use std::time::Duration;

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
    assert_eq!(db.session, SessionSettings::default());
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
    assert!(acme.back_sync.enabled);
    assert_eq!(acme.back_sync.conflicts, ConflictPolicy::PortalWins);
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

/// Every `B24SYNC_CONFIG` value that is neither a readable path nor a JSON document is
/// refused with an error that repeats none of it and says what was expected.
#[test]
fn unusable_environment_values_are_described_never_repeated() {
    let json = format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{SECRET}/"}}}}}}"#
    );
    let toml = minimal("");
    let cases = [
        (serde_json::to_string(&json).unwrap(), "encoded twice"),
        (toml.clone(), "inline TOML"),
        (format!("\u{feff}{toml}"), "inline TOML"),
        (
            format!("portals.acme.webhook_url = \"{SECRET}\""),
            "inline TOML",
        ),
        (
            format!("https://acme.bitrix24.com/rest/1/{SECRET}/"),
            "no readable file",
        ),
        (format!("/nonexistent/{SECRET}.toml"), "no readable file"),
        (format!("{SECRET}\n{SECRET}"), "several lines"),
        (format!("garbage {SECRET} \u{1}\u{7f}"), "no readable file"),
    ];
    for (value, expected) in cases {
        let err = Config::from_env_value(&value).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ConfigError::Unusable { .. }),
            "{value:?}: {err:?}"
        );
        assert!(text.contains(expected), "{value:?}: {text}");
        assert!(
            text.starts_with(CONFIG_ENV) && text.contains("expected the path"),
            "{text}"
        );
        for shown in [text, format!("{err:?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("acme"), "{shown}");
        }
    }
    // `--config` takes the same values, and its errors keep them out as well.
    let webhook = format!("https://acme.bitrix24.com/rest/1/{SECRET}/");
    let err = Config::load(Some(&webhook)).unwrap_err().to_string();
    assert!(err.starts_with("--config names no readable file"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    let inline = Config::load(Some(&json.to_string())).unwrap();
    assert_eq!(inline, Config::from_env_value(&json.to_string()).unwrap());
    // A JSON document with a syntax error is reported as JSON, without its text.
    let err = Config::from_env_value(&format!("{{\"portals\": \"{SECRET}")).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(SECRET));
    assert!(matches!(
        Config::from_env_value("\u{feff}  \n"),
        Err(ConfigError::Missing)
    ));
}

#[test]
fn a_byte_order_mark_before_a_valid_document_is_ignored() {
    let json = format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{SECRET}/"}}}}}}"#
    );
    let expected = Config::from_json_str(&json).unwrap();
    assert_eq!(
        Config::from_env_value(&format!("\u{feff}{json}")).unwrap(),
        expected
    );
    assert_eq!(
        Config::from_json_str(&format!("\u{feff}{json}")).unwrap(),
        expected
    );
    assert_eq!(
        Config::from_toml_str(&format!("\u{feff}{}", minimal(""))).unwrap(),
        Config::from_toml_str(&minimal("")).unwrap()
    );

    let dir = std::env::temp_dir().join(format!("b24-config-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A BOM-prefixed JSON file without the .json extension is still recognised as JSON.
    let json_path = dir.join("secret-config");
    std::fs::write(&json_path, format!("\u{feff}{json}")).unwrap();
    let toml_path = dir.join("c.toml");
    std::fs::write(&toml_path, format!("\u{feff}{}", minimal(""))).unwrap();
    for path in [&json_path, &toml_path] {
        let value = format!("\u{feff}{}", path.display());
        let config = Config::from_env_value(&value).unwrap();
        assert!(config.portals.contains_key("acme"), "{value}");
        assert_eq!(Config::from_file(path).unwrap(), config);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn database_session_settings_have_defaults_and_bounds() {
    let config = Config::from_toml_str("[database]\nurl = \"postgres://h/db\"").unwrap();
    assert_eq!(config.database.unwrap().session, SessionSettings::default());

    let config = Config::from_toml_str(
        "[database]\nurl = \"postgres://h/db\"\nconnect_timeout = 2.5\ntcp_keepalive = 0\n\
         statement_timeout = 0\nlock_timeout = 0.25\nidle_in_transaction_session_timeout = 600",
    )
    .unwrap();
    assert_eq!(
        config.database.unwrap().session,
        SessionSettings {
            connect_timeout: Duration::from_millis(2500),
            keepalive_idle: None,
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::from_millis(250),
            idle_in_transaction_session_timeout: Duration::from_secs(600),
        }
    );
    let json = Config::from_json_str(
        r#"{"database": {"url": "postgres://h/db", "tcp_keepalive": 45, "statement_timeout": 60}}"#,
    )
    .unwrap();
    let session = json.database.unwrap().session;
    assert_eq!(session.keepalive_idle, Some(Duration::from_secs(45)));
    assert_eq!(session.statement_timeout, Duration::from_secs(60));

    for (line, key, expected) in [
        (
            "connect_timeout = 0",
            "database.connect_timeout",
            "positive",
        ),
        (
            "connect_timeout = -1",
            "database.connect_timeout",
            "from 0 to 2147483",
        ),
        (
            "statement_timeout = 3000000",
            "database.statement_timeout",
            "from 0 to",
        ),
        ("lock_timeout = nan", "database.lock_timeout", "seconds"),
        (
            "tcp_keepalive = \"30s\"",
            "database.tcp_keepalive",
            "a number",
        ),
        (
            "idle_in_transaction_session_timeout = -5",
            "database.idle_in_transaction_session_timeout",
            "seconds",
        ),
        (
            "statement_timeout_ms = 5",
            "database.statement_timeout_ms",
            "statement_timeout",
        ),
    ] {
        let (got_key, message) =
            invalid_key(&format!("[database]\nurl = \"postgres://h/db\"\n{line}"));
        assert_eq!(got_key, key, "{line}");
        assert!(message.contains(expected), "{line}: {message}");
    }
}

/// Passwords holding URL delimiters, raw or percent-encoded, in the user info or in a
/// `password=` parameter: none of their text survives redaction, in `Display` and
/// `Debug` of the configured URL alike. (A raw `&` cannot be told apart from the next
/// parameter in a query, so there it must be encoded.)
#[test]
fn database_url_redaction_hides_passwords_with_delimiters() {
    let passwords = [
        "pa?ss",
        "p/w",
        "p@ss",
        "p#ss",
        "p:ss",
        "a@b/c?d#e:f",
        "@",
        "x@",
    ];
    for password in passwords {
        let encoded = percent_encode(password);
        let in_both = "postgres://sync:***@db.example.com/m?PassWord=***";
        let cases = [
            (
                format!("postgres://sync:{password}@db.example.com:5432/m?sslmode=require"),
                "postgres://sync:***@db.example.com:5432/m?sslmode=require",
            ),
            (
                format!("postgres://sync:{encoded}@db.example.com:5432/m?sslmode=require"),
                "postgres://sync:***@db.example.com:5432/m?sslmode=require",
            ),
            (
                format!("postgresql://sync@db.example.com/m?password={encoded}&sslmode=require"),
                "postgresql://sync@db.example.com/m?password=***&sslmode=require",
            ),
            (
                format!("postgresql://sync@db.example.com/m?sslmode=require&password={password}"),
                "postgresql://sync@db.example.com/m?sslmode=require&password=***",
            ),
            (
                format!("postgres://sync:{password}@db.example.com/m?PassWord={password}"),
                // A raw `@` in the query password overlaps the user-info guess.
                if password.contains('@') {
                    "postgres://sync:***"
                } else {
                    in_both
                },
            ),
        ];
        for (url, expected) in cases {
            let config = Config::from_toml_str(&format!("[database]\nurl = {url:?}")).unwrap();
            let db = config.database.unwrap();
            assert_eq!(db.url.expose(), url);
            assert_eq!(db.url.to_string(), expected, "{url}");
            assert_eq!(format!("{:?}", db.url), format!("DatabaseUrl({expected})"));
            assert!(format!("{db:?}").contains(expected), "{db:?}");
        }
    }
    assert_eq!(
        redact_database_url("postgres://u@h:5432/db?password=x@y"),
        "postgres://u@h:***"
    );
    assert_eq!(
        redact_database_url("postgres://u:@h/db"),
        "postgres://u:***@h/db"
    );
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn back_sync_is_off_unless_enabled_and_its_keys_are_checked() {
    let config = Config::from_toml_str(&minimal("")).unwrap();
    assert_eq!(
        config.portal("acme").unwrap().back_sync,
        BackSyncConfig::default()
    );
    assert!(!BackSyncConfig::default().enabled);
    let config = Config::from_toml_str(&minimal(
        "back_sync = { enabled = true, conflicts = \"database-wins\", allow_deletes = true, max_attempts = 3 }",
    ))
    .unwrap();
    assert_eq!(
        config.portal("acme").unwrap().back_sync,
        BackSyncConfig {
            enabled: true,
            conflicts: ConflictPolicy::DatabaseWins,
            allow_deletes: true,
            max_attempts: 3,
        }
    );
    for (line, named) in [
        (
            "back_sync = { conflicts = \"newest-wins\" }",
            "portals.acme.back_sync.conflicts",
        ),
        (
            "back_sync = { max_attempts = 0 }",
            "portals.acme.back_sync.max_attempts",
        ),
        (
            "back_sync = { enable = true }",
            "portals.acme.back_sync.enable",
        ),
    ] {
        let (key, message) = invalid_key(&minimal(line));
        assert_eq!(key, named, "{line}: {message}");
    }
}

#[test]
fn smart_processes_and_the_api_are_chosen_per_portal() {
    let config = Config::from_toml_str(&minimal("")).unwrap();
    let acme = config.portal("acme").unwrap();
    assert_eq!(acme.api, ApiChoice::Classic);
    assert_eq!(acme.smart_processes, SmartProcesses::None);
    assert!(!acme.product_rows && !acme.stage_history);
    let config =
        Config::from_toml_str(&minimal("product_rows = true\nstage_history = true")).unwrap();
    let acme = config.portal("acme").unwrap();
    assert!(acme.product_rows && acme.stage_history);
    let config = Config::from_toml_str(&minimal(
        "api = \"items\"\nentities = [\"deal\", \"sp_1038\"]\nsmart_processes = [1042, \"Tickets\"]",
    ))
    .unwrap();
    let acme = config.portal("acme").unwrap();
    assert_eq!(acme.api, ApiChoice::Items);
    assert_eq!(acme.entities, [Entity::Deal, Entity::Smart(1038)]);
    assert_eq!(
        acme.smart_processes,
        SmartProcesses::Listed(vec![
            SmartRef::TypeId(1042),
            SmartRef::Title("Tickets".into())
        ])
    );
    let config = Config::from_toml_str(&minimal("smart_processes = \"All\"")).unwrap();
    assert_eq!(
        config.portal("acme").unwrap().smart_processes,
        SmartProcesses::All
    );
    for (line, named) in [
        ("smart_processes = \"some\"", "portals.acme.smart_processes"),
        ("smart_processes = [31]", "portals.acme.smart_processes[0]"),
        (
            "smart_processes = [\" \"]",
            "portals.acme.smart_processes[0]",
        ),
        ("api = \"rest\"", "portals.acme.api"),
        ("entities = [\"sp_12\"]", "portals.acme.entities"),
        ("stage_history = \"yes\"", "portals.acme.stage_history"),
    ] {
        let (key, message) = invalid_key(&minimal(line));
        assert!(key.starts_with(named), "{line}: {key}: {message}");
    }
}
