//! `ConfigSource::from_env` prefers the secret named by `B24SYNC_CONFIG_SECRET` over
//! `B24SYNC_CONFIG`. One test in its own binary, because it changes the process
//! environment.

use b24_aws::CONFIG_SECRET_ENV;
use b24_config::CONFIG_ENV;
use b24_lambda::ConfigSource;
use b24_testkit::moto::MotoServer;

#[tokio::test(flavor = "current_thread")]
async fn prefers_the_secret_and_falls_back_to_the_local_document() {
    let document =
        r#"{"portals": {"acme": {"webhook_url": "https://acme.bitrix24.com/rest/1/c0de/"}}}"#;
    // SAFETY: the only test of this binary, on one thread; nothing else reads or
    // writes the environment meanwhile.
    unsafe { std::env::remove_var(CONFIG_SECRET_ENV) };
    unsafe { std::env::set_var(CONFIG_ENV, document) };
    let source = ConfigSource::from_env().await.unwrap();
    assert!(matches!(source, ConfigSource::Local(_)));
    assert!(source.current().await.unwrap().portals.contains_key("acme"));

    // With the secret named, it is read even though B24SYNC_CONFIG holds a good
    // document; moto has no such secret, so the start fails naming it.
    let moto = MotoServer::start();
    for (name, value) in moto.sdk_env() {
        unsafe { std::env::set_var(name, value) };
    }
    unsafe { std::env::set_var("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint()) };
    unsafe { std::env::set_var(CONFIG_SECRET_ENV, "b24sync/missing") };
    let error = ConfigSource::from_env().await.err().unwrap();
    assert_eq!(error.error_type(), "Transient");
    assert!(error.to_string().contains("b24sync/missing"), "{error}");
    assert!(error.to_string().contains("ResourceNotFound"), "{error}");
    unsafe { std::env::remove_var(CONFIG_SECRET_ENV) };
    unsafe { std::env::remove_var(CONFIG_ENV) };
}
