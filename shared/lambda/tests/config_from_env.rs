//! `load_config` reads `B24SYNC_CONFIG`. One test in its own binary, because it changes
//! the process environment.

use b24_config::CONFIG_ENV;
use b24_lambda::load_config;

#[test]
fn loads_the_document_from_the_environment_and_classifies_failures() {
    // SAFETY: the only test of this binary; nothing else reads or writes the environment.
    unsafe { std::env::remove_var(CONFIG_ENV) };
    let error = load_config().unwrap_err();
    assert_eq!(error.error_type(), "Configuration");
    assert!(error.to_string().contains(CONFIG_ENV), "{error}");

    let secret = "c0de4d3ad";
    let webhook = format!("https://acme.bitrix24.com/rest/1/{secret}/");
    unsafe { std::env::set_var(CONFIG_ENV, &webhook) };
    let error = load_config().unwrap_err();
    assert_eq!(error.error_type(), "Configuration");
    assert!(!error.to_string().contains(secret), "{error}");

    let document = format!(r#"{{"portals": {{"acme": {{"webhook_url": "{webhook}"}}}}}}"#);
    unsafe { std::env::set_var(CONFIG_ENV, document) };
    let config = load_config().unwrap();
    assert!(config.portals.contains_key("acme"));
    unsafe { std::env::remove_var(CONFIG_ENV) };
}
