//! `SqsChangeQueue::from_env` reads `CHANGE_QUEUE_URL`, `SqsForwardQueue::from_env`
//! `FORWARD_QUEUE_URL`, both with the SDK's own variables (`AWS_ENDPOINT_URL_SQS` and
//! the rest), as under `cargo lambda watch` against moto. One test in its own binary,
//! because it changes the process environment.

mod common;

use b24_aws::{FORWARD_QUEUE_URL_ENV, QUEUE_URL_ENV, SetupError, SqsChangeQueue, SqsForwardQueue};
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::ChangeQueue;
use b24_testkit::moto::MotoServer;
use common::{changes, create_queue, forward_jobs, receive_all, sdk_config, sorted, sorted_jobs};

#[tokio::test(flavor = "current_thread")]
async fn reads_the_queue_and_the_endpoint_from_the_environment() {
    // SAFETY: the only test of this binary, on one thread; nothing else reads or
    // writes the environment meanwhile.
    unsafe { std::env::remove_var(QUEUE_URL_ENV) };
    unsafe { std::env::remove_var(FORWARD_QUEUE_URL_ENV) };
    let missing = SqsChangeQueue::from_env().await.err().unwrap();
    assert!(
        matches!(missing, SetupError::MissingQueueUrl { variable, .. } if variable == QUEUE_URL_ENV),
        "{missing}"
    );
    assert!(missing.to_string().contains(QUEUE_URL_ENV), "{missing}");
    let missing = SqsForwardQueue::from_env().await.err().unwrap();
    assert!(
        missing
            .to_string()
            .starts_with("FORWARD_QUEUE_URL is not set"),
        "{missing}"
    );

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

    // The forward queue has a variable of its own.
    let forward_url = create_queue(&config, "from-env-forwards").await;
    unsafe { std::env::set_var(FORWARD_QUEUE_URL_ENV, &forward_url) };
    let forwards = SqsForwardQueue::from_env().await.unwrap();
    let jobs = forward_jobs(3);
    forwards.send(&jobs).await.unwrap();
    let received: Vec<ForwardJob> = moto
        .receive_bodies(&forward_url)
        .await
        .iter()
        .map(|body| ForwardJob::from_json(body).unwrap())
        .collect();
    assert_eq!(sorted_jobs(received), sorted_jobs(jobs));
}
