//! What a function builds from its configuration follows the Secrets Manager secret
//! (moto's) across warm invocations: built once, kept while the secret is unchanged,
//! rebuilt after a rotation, and kept when the new document cannot be built from.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::Credentials;
use b24_aws::SecretConfig;
use b24_lambda::{ConfigSource, Derived};
use b24_testkit::moto::MotoServer;

const INTERVAL: Duration = Duration::from_secs(1);

async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .endpoint_url(endpoint)
        .load()
        .await
}

fn document(token: &str) -> String {
    format!(
        r#"{{"portals": {{"acme": {{"webhook_url": "https://acme.bitrix24.com/rest/1/c0de/", "application_tokens": ["{token}"]}}}}}}"#
    )
}

async fn put(config: &SdkConfig, text: &str) {
    aws_sdk_secretsmanager::Client::new(config)
        .put_secret_value()
        .secret_id("b24sync/config")
        .secret_string(text)
        .send()
        .await
        .expect("put_secret_value on moto");
}

/// What the test derives: the portal's token, built by a builder that counts its builds
/// and refuses a document whose token is `refuse`.
async fn derived_tokens(source: ConfigSource, builds: Arc<AtomicUsize>) -> Derived<String> {
    Derived::new(source, move |config| {
        builds.fetch_add(1, Ordering::SeqCst);
        let token = config.portals["acme"].application_tokens.join(",");
        async move {
            match token.as_str() {
                "refuse" => Err(b24_lambda::FunctionError::Transient("database down".into())),
                _ => Ok(token),
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn rebuilds_after_a_rotation_and_only_then() {
    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("b24sync/config")
        .secret_string(document("tok-1"))
        .send()
        .await
        .expect("create_secret on moto");
    let source =
        ConfigSource::Secret(SecretConfig::new(&config, "b24sync/config", INTERVAL).unwrap());
    let builds = Arc::new(AtomicUsize::new(0));
    let derived = derived_tokens(source, Arc::clone(&builds)).await;
    let first = derived.get().await.unwrap();
    assert_eq!(*first, "tok-1");

    // The secret re-read but unchanged: the same instance, no rebuild.
    tokio::time::sleep(INTERVAL + Duration::from_millis(200)).await;
    assert!(Arc::ptr_eq(&first, &derived.get().await.unwrap()));
    assert_eq!(builds.load(Ordering::SeqCst), 1);

    // Rotated: the next invocation after the interval serves from the new document.
    put(&config, &document("tok-2")).await;
    tokio::time::sleep(INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(*derived.get().await.unwrap(), "tok-2");
    assert_eq!(builds.load(Ordering::SeqCst), 2);

    // A document that cannot be built from: the previous one keeps serving, and the
    // rebuild is tried again on later invocations until it works.
    put(&config, &document("refuse")).await;
    tokio::time::sleep(INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(*derived.get().await.unwrap(), "tok-2");
    assert_eq!(*derived.get().await.unwrap(), "tok-2");
    assert_eq!(builds.load(Ordering::SeqCst), 4);
    put(&config, &document("tok-3")).await;
    tokio::time::sleep(INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(*derived.get().await.unwrap(), "tok-3");
}

#[tokio::test]
async fn a_function_that_cannot_build_at_start_fails_its_init() {
    let local = b24_config::Config::from_json_str(&document("refuse")).unwrap();
    let source = ConfigSource::Local(Arc::new(local));
    let result = Derived::new(source, |_config| async {
        Err::<(), _>(b24_lambda::FunctionError::Transient("database down".into()))
    })
    .await;
    let error = result.err().expect("the build error");
    assert!(error.to_string().contains("database down"), "{error}");
}
