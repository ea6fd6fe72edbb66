//! A function's start-up (configuration, connections) with its failure reported to the
//! Lambda Runtime API as an init error, so the console and the `Runtime.InitError`
//! entry show why the function could not start, not only an exit code.

use std::future::Future;

use lambda_runtime::{Diagnostic, Error};
use lambda_runtime_api_client::{PooledClient, body::Body, build_request};

use crate::error::FunctionError;

/// Runs `start`; on failure, logs the error, posts it to
/// `/2018-06-01/runtime/init/error` and returns it (the process then exits). The
/// error's text must hold no secret: the configuration and AWS errors here never do.
pub async fn start_up<T>(start: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let error = match start.await {
        Ok(started) => return Ok(started),
        Err(error) => error,
    };
    let diagnostic = diagnostic_of(error.as_ref());
    tracing::error!(error_type = %diagnostic.error_type, error = %diagnostic.error_message,
        "the function could not start");
    if let Err(report_error) = report(&diagnostic).await {
        tracing::warn!(error = %report_error, "could not report the init error to the Runtime API");
    }
    Err(error)
}

/// `errorType` is the [`FunctionError`] class when the error is one, else `InitError`.
fn diagnostic_of(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Diagnostic {
    match error.downcast_ref::<FunctionError>() {
        Some(classified) => Diagnostic {
            error_type: classified.error_type().into(),
            error_message: classified.to_string(),
        },
        None => Diagnostic {
            error_type: "InitError".into(),
            error_message: error.to_string(),
        },
    }
}

async fn report(diagnostic: &Diagnostic) -> Result<(), Error> {
    let body = serde_json::to_vec(diagnostic)?;
    let request = build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .header("content-type", "application/json")
        .body(Body::from(body))?;
    let response = PooledClient::builder().build().call(request).await?;
    if !response.status().is_success() {
        return Err(format!("the Runtime API answered {}", response.status()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classified_errors_keep_their_class() {
        let error: Error =
            FunctionError::Configuration("portals.demo.entitys: unknown key".into()).into();
        let diagnostic = diagnostic_of(error.as_ref());
        assert_eq!(diagnostic.error_type, "Configuration");
        assert!(diagnostic.error_message.contains("entitys"));
        let error: Error = "database refused the connection".into();
        assert_eq!(diagnostic_of(error.as_ref()).error_type, "InitError");
    }
}
