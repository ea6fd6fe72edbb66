//! Lambda (function URL): the status page, `/status.json` and `/schema.md`.
//! Configuration from the secret named by `B24SYNC_CONFIG_SECRET` (re-read as it
//! rotates: new tokens and a new database role reach warm instances), or `B24SYNC_CONFIG`.

use b24_lambda::{ConfigSource, Derived, FunctionError};
use lambda_http::{Error, run, service_fn};
use status::{StatusState, handle};

// One thread: a request is a few queries on one connection and some formatting.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    b24_lambda::init_tracing();
    let state = b24_lambda::start_up(async {
        let state: Derived<StatusState> = Derived::<StatusState>::new::<_, _, FunctionError>(
            ConfigSource::from_env().await?,
            |config| async move { StatusState::connect(&config).await },
        )
        .await?;
        Ok(state)
    })
    .await?;
    run(service_fn(|request| async {
        Ok::<_, Error>(handle(&*state.get().await?, request).await)
    }))
    .await
}
