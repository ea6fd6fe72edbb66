//! Lambda (function URL): Bitrix24 robot calls in, forward jobs on the forward queue
//! (`FORWARD_QUEUE_URL`) out. Configuration from the secret named by
//! `B24SYNC_CONFIG_SECRET` (re-read as it rotates), or `B24SYNC_CONFIG`.

use std::sync::Arc;

use b24_aws::SqsForwardQueue;
use b24_domain::forward::job::ForwardJob;
use b24_domain::ports::MessageQueue;
use b24_lambda::{ConfigSource, Derived, FunctionError};
use deal_robot::{RobotState, handle};
use lambda_http::{Error, run, service_fn};

// One thread: an invocation parses a small body and makes one SQS call.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let state = b24_lambda::start_up(async {
        let queue: Arc<dyn MessageQueue<ForwardJob>> = Arc::new(SqsForwardQueue::from_env().await?);
        let state = Derived::new(ConfigSource::from_env().await?, move |config| {
            let state = RobotState::new(&config, Arc::clone(&queue));
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
