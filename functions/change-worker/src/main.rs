//! Lambda: the change worker. SQS batches of change messages (from the webhook intake)
//! in, the IDs of the messages that failed out (`ReportBatchItemFailures`).

use b24_sync::SyncService;
use lambda_runtime::{Error, run, service_fn};

// One thread: groups are applied one after another, and one allocator arena keeps the
// function small.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let config = b24_lambda::startup_config().await?;
    let migrate = b24_lambda::env_flag("B24SYNC_MIGRATE_ON_START")?;
    let service = SyncService::connect(config, migrate).await?;
    run(service_fn(|event| change_worker::handle(&service, event))).await
}
