//! Lambda (function URL): Bitrix24 event POSTs in, change messages on the change queue
//! (`CHANGE_QUEUE_URL`) out. Configuration from the secret named by
//! `B24SYNC_CONFIG_SECRET` (re-read as it rotates), or `B24SYNC_CONFIG`.

use std::sync::Arc;

use b24_aws::SqsChangeQueue;
use b24_domain::ports::ChangeQueue;
use b24_lambda::{ConfigSource, Derived, FunctionError};
use lambda_http::{Error, run, service_fn};
use webhook_intake::{IntakeState, handle};

// One thread: an invocation parses a small body and makes one SQS call.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let state = b24_lambda::start_up(async {
        let queue: Arc<dyn ChangeQueue> = Arc::new(SqsChangeQueue::from_env().await?);
        let state = Derived::new(ConfigSource::from_env().await?, move |config| {
            let state = IntakeState::new(&config, Arc::clone(&queue));
            async move { Ok::<_, FunctionError>(state) }
        })
        .await?;
        Ok(state)
    })
    .await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(handle(&*state.get().await?, request).await)
    }))
    .await
}
