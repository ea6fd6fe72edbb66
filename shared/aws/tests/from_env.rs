//! `SqsChangeQueue::from_env` reads `CHANGE_QUEUE_URL` and the SDK's own variables
//! (`AWS_ENDPOINT_URL_SQS` and the rest), as under `cargo lambda watch` against moto.
//! One test in its own binary, because it changes the process environment.

mod common;

use b24_aws::{QUEUE_URL_ENV, SetupError, SqsChangeQueue};
use b24_domain::ports::ChangeQueue;
use b24_testkit::moto::MotoServer;
use common::{changes, create_queue, receive_all, sdk_config, sorted};

#[tokio::test(flavor = "current_thread")]
async fn reads_the_queue_and_the_endpoint_from_the_environment() {
    // SAFETY: the only test of this binary, on one thread; nothing else reads or
    // writes the environment meanwhile.
    unsafe { std::env::remove_var(QUEUE_URL_ENV) };
    assert_eq!(
        SqsChangeQueue::from_env().await.err(),
        Some(SetupError::MissingQueueUrl)
    );
    let message = SetupError::MissingQueueUrl.to_string();
    assert!(message.contains(QUEUE_URL_ENV), "{message}");

    let moto = MotoServer::start();
    let config = sdk_config(moto.endpoint()).await;
    let queue_url = create_queue(&config, "from-env").await;
    for (name, value) in moto.sdk_env() {
        unsafe { std::env::set_var(name, value) };
    }
    unsafe { std::env::set_var(QUEUE_URL_ENV, &queue_url) };
    let queue = SqsChangeQueue::from_env().await.unwrap();
    let sent = changes(11);
    queue.send(&sent).await.unwrap();
    assert_eq!(sorted(receive_all(&config, &queue_url).await), sorted(sent));
}
