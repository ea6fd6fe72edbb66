//! Lambda: the deal forwarder. SQS batches of forward jobs (from the deal robot) in,
//! the IDs of the jobs that failed out (`ReportBatchItemFailures`).

use std::sync::Arc;

use b24_forward::ForwardService;
use b24_lambda::{ConfigSource, Derived};
use lambda_runtime::{Error, run, service_fn};

// One thread: the jobs of a batch are forwarded one after another.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let (service, max_receives) = b24_lambda::start_up(async {
        let migrate = b24_lambda::env_flag("B24SYNC_MIGRATE_ON_START")?;
        let max_receives = deal_forwarder::max_receives_from_env()?;
        let service = Derived::new(ConfigSource::from_env().await?, move |config| async move {
            Ok::<_, Error>(ForwardService::connect(Arc::unwrap_or_clone(config), migrate).await?)
        })
        .await?;
        Ok((service, max_receives))
    })
    .await?;
    run(service_fn(|event| async {
        deal_forwarder::handle(&*service.get().await?, max_receives, event).await
    }))
    .await
}
