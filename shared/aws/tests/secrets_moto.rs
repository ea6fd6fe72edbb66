//! The configuration document from Secrets Manager against moto (started per test).

// The queue helpers there serve the SQS tests; these use its SDK configuration only.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use b24_aws::{SecretConfig, SecretConfigError};
use b24_testkit::moto::MotoServer;
use common::sdk_config;

const WEBHOOK_CODE: &str = "wh00kc0de";

/// A valid document whose portal accepts `token`.
fn document(token: &str) -> String {
    format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/", "application_tokens": ["{token}"]}}}}}}"#
    )
}

async fn create_secret(config: &SdkConfig, name: &str, text: &str) {
    aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(name)
        .secret_string(text)
        .send()
        .await
        .expect("create_secret on moto");
}

async fn put_secret(config: &SdkConfig, name: &str, text: &str) {
    aws_sdk_secretsmanager::Client::new(config)
        .put_secret_value()
        .secret_id(name)
        .secret_string(text)
        .send()
        .await
        .expect("put_secret_value on moto");
}

fn tokens(config: &b24_config::Config) -> Vec<String> {
    config.portals["acme"].application_tokens.clone()
}

#[tokio::test]
async fn loads_the_document_by_name_and_by_arn() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    create_secret(&config, "b24sync/config", &document("tok-1")).await;
    let by_name = SecretConfig::new(&config, "b24sync/config", Duration::from_secs(300)).unwrap();
    let loaded = by_name.current().await.unwrap();
    assert_eq!(tokens(&loaded), ["tok-1"]);
    assert_eq!(
        loaded.portals["acme"].webhook_url.expose_base(),
        format!("https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/")
    );

    let arn = aws_sdk_secretsmanager::Client::new(&config)
        .describe_secret()
        .secret_id("b24sync/config")
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let by_arn = SecretConfig::new(&config, &arn, Duration::from_secs(300)).unwrap();
    assert_eq!(by_arn.fetch().await.unwrap(), *loaded);
}

#[tokio::test]
async fn a_bad_document_names_the_key_and_never_its_content() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let cases = [
        // A token where a list belongs.
        (
            "wrong-type",
            format!(
                r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/", "application_tokens": "tok-s3cret"}}}}}}"#
            ),
            "portals.acme.application_tokens",
        ),
        // A misspelt key next to the webhook URL.
        (
            "unknown-key",
            format!(
                r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/", "entitys": ["tok-s3cret"]}}}}}}"#
            ),
            "entitys",
        ),
        // Not JSON at all: the webhook URL pasted on its own.
        (
            "not-json",
            format!("https://acme.bitrix24.com/rest/1/{WEBHOOK_CODE}/ tok-s3cret"),
            "JSON",
        ),
        // The document encoded twice, as a JSON string.
        (
            "twice",
            serde_json::to_string(&document("tok-s3cret")).unwrap(),
            "(document)",
        ),
    ];
    for (name, text, named) in cases {
        create_secret(&config, name, &text).await;
        let source = SecretConfig::new(&config, name, Duration::from_secs(300)).unwrap();
        let error = source.current().await.unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, SecretConfigError::Invalid { .. }),
            "{name}: {message}"
        );
        assert!(message.contains(name), "{name}: {message}");
        assert!(message.contains(named), "{name}: {message}");
        assert!(!message.contains(WEBHOOK_CODE), "{name}: {message}");
        assert!(!message.contains("tok-s3cret"), "{name}: {message}");
        assert!(
            !format!("{error:?}").contains("tok-s3cret"),
            "{name}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_secret_is_served_once_the_interval_has_passed() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    create_secret(&config, "rotating", &document("tok-old")).await;
    let interval = Duration::from_secs(1);
    let source = SecretConfig::new(&config, "rotating", interval).unwrap();
    let first = source.current().await.unwrap();
    assert_eq!(tokens(&first), ["tok-old"]);

    // Re-read with the secret unchanged: the very same document, so what a function
    // derived from it (clients, connections) stays.
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    assert!(Arc::ptr_eq(&first, &source.current().await.unwrap()));

    put_secret(&config, "rotating", &document("tok-new")).await;
    // Within the interval the cached document is served without a read.
    assert_eq!(tokens(&source.current().await.unwrap()), ["tok-old"]);
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let rotated = source.current().await.unwrap();
    assert_eq!(tokens(&rotated), ["tok-new"]);
    assert!(!Arc::ptr_eq(&first, &rotated));
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_last_good_document() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    create_secret(&config, "doomed", &document("tok-good")).await;
    let interval = Duration::from_secs(1);
    let source = SecretConfig::new(&config, "doomed", interval).unwrap();
    assert_eq!(tokens(&source.current().await.unwrap()), ["tok-good"]);

    aws_sdk_secretsmanager::Client::new(&config)
        .delete_secret()
        .secret_id("doomed")
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete_secret on moto");
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let error = source.fetch().await.unwrap_err();
    assert!(
        matches!(error, SecretConfigError::Fetch { .. }) && error.to_string().contains("doomed"),
        "{error}"
    );
    assert_eq!(tokens(&source.current().await.unwrap()), ["tok-good"]);

    // An invalid new version is refused the same way: the good document stays.
    create_secret(&config, "doomed", r#"{"portals": {"acme": {}}}"#).await;
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    assert_eq!(tokens(&source.current().await.unwrap()), ["tok-good"]);

    // Without a good document the error reaches the caller.
    let fresh = SecretConfig::new(&config, "doomed", interval).unwrap();
    let error = fresh.current().await.unwrap_err();
    assert!(
        error.to_string().contains("portals.acme.webhook_url"),
        "{error}"
    );
}
