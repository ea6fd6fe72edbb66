//! Lambda: back-sync. Input (EventBridge Scheduler, every minute): `{}` for every portal
//! with back-sync on, or `{"portal":"acme"}`; answer: what each portal entity's drain did.

use std::sync::Arc;

use b24_lambda::{ConfigSource, Derived};
use b24_sync::SyncService;
use lambda_runtime::{Error, run, service_fn};

// One thread: a drain is sequential.
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
        back_sync::handle(&*service.get().await?, event).await
    }))
    .await
}
