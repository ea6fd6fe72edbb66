//! `SecretConfig::from_env` reads `B24SYNC_CONFIG_SECRET`, `B24SYNC_CONFIG_REFRESH_SECS`
//! and the SDK's own variables (`AWS_ENDPOINT_URL_SECRETS_MANAGER`), as a function does.
//! One test in its own binary, because it changes the process environment.

// The queue helpers there serve the SQS tests; these use its SDK configuration only.
#[allow(dead_code)]
mod common;

use b24_aws::{CONFIG_REFRESH_ENV, CONFIG_SECRET_ENV, SecretConfig, SecretConfigError};
use b24_testkit::moto::MotoServer;
use common::sdk_config;

#[tokio::test(flavor = "current_thread")]
async fn reads_the_secret_and_its_interval_from_the_environment() {
    // SAFETY: the only test of this binary, on one thread; nothing else reads or
    // writes the environment meanwhile.
    unsafe { std::env::remove_var(CONFIG_SECRET_ENV) };
    assert!(SecretConfig::from_env().await.unwrap().is_none());

    let moto = MotoServer::start();
    let document =
        r#"{"portals": {"acme": {"webhook_url": "https://acme.bitrix24.com/rest/1/c0de/"}}}"#;
    aws_sdk_secretsmanager::Client::new(&sdk_config(moto.endpoint()).await)
        .create_secret()
        .name("b24sync/config")
        .secret_string(document)
        .send()
        .await
        .unwrap();
    for (name, value) in moto.sdk_env() {
        unsafe { std::env::set_var(name, value) };
    }
    unsafe { std::env::set_var("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint()) };
    unsafe { std::env::set_var(CONFIG_SECRET_ENV, "b24sync/config") };
    unsafe { std::env::set_var(CONFIG_REFRESH_ENV, "five minutes") };
    assert!(matches!(
        SecretConfig::from_env().await,
        Err(SecretConfigError::InvalidRefresh(_))
    ));

    unsafe { std::env::set_var(CONFIG_REFRESH_ENV, "60") };
    let source = SecretConfig::from_env().await.unwrap().unwrap();
    assert!(source.current().await.unwrap().portals.contains_key("acme"));
}
