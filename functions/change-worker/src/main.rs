//! Lambda: the change worker. SQS batches of change messages (from the webhook intake)
//! in, the IDs of the messages that failed out (`ReportBatchItemFailures`).

use std::sync::Arc;

use b24_lambda::{ConfigSource, Derived};
use b24_sync::SyncService;
use lambda_runtime::{Error, run, service_fn};

// One thread: groups are applied one after another, and one allocator arena keeps the
// function small.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let service = b24_lambda::start_up(async {
        let migrate = b24_lambda::env_flag("B24SYNC_MIGRATE_ON_START")?;
        Derived::new(ConfigSource::from_env().await?, move |config| async move {
            Ok::<_, Error>(SyncService::connect(Arc::unwrap_or_clone(config), migrate).await?)
        })
        .await
    })
    .await?;
    run(service_fn(|event| async {
        change_worker::handle(&*service.get().await?, event).await
    }))
    .await
}
