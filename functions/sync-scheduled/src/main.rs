//! Lambda: the scheduled sync of one portal's entities into PostgreSQL.
//! Input (EventBridge Scheduler): `{"portal":"acme","entities":["deal"],"mode":"incremental"}`.

use std::sync::Arc;

use b24_lambda::{ConfigSource, Derived};
use b24_sync::SyncService;
use lambda_runtime::{Error, run, service_fn};

// One thread: a sync is sequential, and a single thread keeps the allocator to one
// arena, which keeps a full sync well inside a 128 MB function.
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
        sync_scheduled::handle(&*service.get().await?, event).await
    }))
    .await
}
