//! Lambda (function URL): Bitrix24 event POSTs in, change messages on the change queue
//! (`CHANGE_QUEUE_URL`) out. Configuration from the secret named by `B24SYNC_CONFIG_SECRET`, or `B24SYNC_CONFIG`.

use std::sync::Arc;

use b24_aws::SqsChangeQueue;
use lambda_http::{Error, run, service_fn};
use webhook_intake::{IntakeState, handle};

// One thread: an invocation parses a small body and makes one SQS call.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let config = b24_lambda::startup_config().await?;
    let queue = SqsChangeQueue::from_env().await?;
    let state = IntakeState::new(&config, Arc::new(queue));
    run(service_fn(|request| async {
        Ok::<_, Error>(handle(&state, request).await)
    }))
    .await
}
