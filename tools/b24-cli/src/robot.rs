//! `b24sync robot-register`: what a route's robot needs on its source portal. It prints
//! the `bizproc.robot.add` parameters of the route's application robot (to POST with an
//! application's `auth` token) and, on request, the built-in Webhook robot's URL, which
//! carries the route's secret. With `--auth` it registers the robot itself (updating a
//! registration that exists), which is what to run on every install and update of the
//! application: Bitrix24 removes an application's robots when it is updated.

use std::time::Duration;

use b24_client::B24Error;
use b24_config::Config;
use b24_domain::forward::route::{ForwardRoute, ReturnValue};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::usage::UsageError;

#[derive(Args)]
#[command(
    after_help = "Bitrix24 removes an application's robots whenever the application \
is updated: run this with --auth on every install and update. --show-secret prints the \
route's secret (inside the Webhook robot's URL) to stdout and nowhere else."
)]
pub struct RobotArgs {
    /// The configured route (`routes.NAME`).
    #[arg(long, value_name = "NAME")]
    route: String,
    /// The deal robot's function URL: the application robot's HANDLER and the base of
    /// the Webhook robot's URL.
    #[arg(long, value_name = "URL", env = "B24SYNC_ROBOT_HANDLER")]
    handler: String,
    /// Also print the built-in Webhook robot's URL, `HANDLER?route=NAME&secret=SECRET`:
    /// it holds the route's secret, so it is printed (to stdout only) on request.
    #[arg(long)]
    show_secret: bool,
    /// Register the robot now with this application access token (an administrator's,
    /// in the application context). Prefer $B24SYNC_APP_AUTH: the command line is
    /// visible to other users.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "B24SYNC_APP_AUTH",
        hide_env_values = true
    )]
    auth: Option<String>,
    /// The source portal's REST endpoint (the application's `client_endpoint`).
    /// Default: https://DOMAIN/rest/ with the portal's configured domain.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

/// How long one registration request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(config_path: Option<&str>, args: RobotArgs) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let route = config.route(&args.route)?;
    let handler = check_handler(&args.handler)?;
    let params = robot_params(route, handler);
    let webhook_robot_url = match (args.show_secret, &route.secret) {
        (false, _) => Value::Null,
        (true, Some(secret)) => json!(webhook_robot_url(handler, &route.name, secret.expose())),
        (true, None) => {
            return Err(UsageError(format!(
                "route {} has no secret: only an application robot may call it",
                route.name
            ))
            .into());
        }
    };
    let registered = match &args.auth {
        None => Value::Null,
        Some(token) => {
            let endpoint = match &args.endpoint {
                Some(endpoint) => endpoint.clone(),
                None => format!("https://{}/rest/", config.portal(&route.source)?.domain),
            };
            json!(register(&endpoint, token, &params).await?)
        }
    };
    let line = json!({
        "route": route.name,
        "source_portal": route.source,
        "bizproc.robot.add": params,
        "webhook_robot_url": webhook_robot_url,
        "registered": registered,
    });
    println!("{line}");
    Ok(())
}

/// The handler URL, which Bitrix24 accepts only as http(s).
fn check_handler(handler: &str) -> Result<&str, UsageError> {
    let scheme_ok = ["https://", "http://"]
        .iter()
        .any(|scheme| handler.len() > scheme.len() && handler.starts_with(scheme));
    if scheme_ok && !handler.contains('#') {
        Ok(handler)
    } else {
        Err(UsageError(format!(
            "--handler {handler:?}: expected the deal robot's function URL, http(s)://HOST/... without a fragment"
        )))
    }
}

/// The `bizproc.robot.add` parameters of the route's application robot (without
/// `auth`). `USE_SUBSCRIPTION` is `N` unless the route waits: Bitrix24 reads an empty
/// value as "wait".
pub fn robot_params(route: &ForwardRoute, handler: &str) -> Map<String, Value> {
    let return_properties: Map<String, Value> = route
        .reply
        .return_values
        .iter()
        .map(|(name, value)| {
            let property = match value {
                ReturnValue::TargetDealId => json!({"Name": "Target deal ID", "Type": "int"}),
                ReturnValue::TargetDealUrl => {
                    json!({"Name": "Target deal URL", "Type": "string"})
                }
            };
            (name.clone(), property)
        })
        .collect();
    let mut params = Map::new();
    params.insert("CODE".into(), json!(route.robot_code));
    params.insert("HANDLER".into(), json!(handler));
    params.insert(
        "NAME".into(),
        json!(format!(
            "Forward the deal to {} (route {})",
            route.target, route.name
        )),
    );
    params.insert(
        "USE_SUBSCRIPTION".into(),
        json!(if route.reply.wait_for_reply { "Y" } else { "N" }),
    );
    params.insert("RETURN_PROPERTIES".into(), Value::Object(return_properties));
    params.insert(
        "DOCUMENT_TYPE".into(),
        json!(["crm", "CCrmDocumentDeal", "DEAL"]),
    );
    params
}

/// `HANDLER?route=NAME&secret=SECRET` (`&` when the handler has a query already).
pub fn webhook_robot_url(handler: &str, route: &str, secret: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("route", route)
        .append_pair("secret", secret)
        .finish();
    let separator = if handler.contains('?') { '&' } else { '?' };
    format!("{handler}{separator}{query}")
}

/// Registers the robot (`bizproc.robot.add`); one registered before is updated
/// (`bizproc.robot.update`) instead. Returns `added` or `updated`.
async fn register(
    endpoint: &str,
    token: &str,
    params: &Map<String, Value>,
) -> Result<&'static str, B24Error> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| B24Error::InvalidArgument(format!("HTTP client: {e}")))?;
    match call(&http, endpoint, "bizproc.robot.add", token, params.clone()).await {
        Ok(()) => Ok("added"),
        Err(B24Error::Api { code, .. }) if code == "ERROR_ACTIVITY_ALREADY_INSTALLED" => {
            let mut fields = params.clone();
            let code = fields.remove("CODE").unwrap_or_default();
            let update = Map::from_iter([
                ("CODE".to_string(), code),
                ("FIELDS".to_string(), Value::Object(fields)),
            ]);
            call(&http, endpoint, "bizproc.robot.update", token, update).await?;
            Ok("updated")
        }
        Err(error) => Err(error),
    }
}

/// One REST call in the application context: the token travels in the JSON body as
/// `auth`, never in the URL, so no error message can show it.
async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    method: &str,
    token: &str,
    mut params: Map<String, Value>,
) -> Result<(), B24Error> {
    params.insert("auth".into(), json!(token));
    let url = format!("{}/{method}", endpoint.trim_end_matches('/'));
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            return B24Error::Timeout {
                method: method.to_string(),
            };
        }
        // The URL holds no secret, but the causes say more than reqwest's summary.
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(inner) = cause {
            detail = format!("{detail}: {inner}");
            cause = inner.source();
        }
        B24Error::Network {
            method: method.to_string(),
            detail,
        }
    };
    let response = http
        .post(&url)
        .json(&params)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(transport)?;
    if let Some(code) = body.get("error").and_then(Value::as_str) {
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(B24Error::from_envelope(
            method,
            Some(status),
            code,
            description,
        ));
    }
    match body.get("result") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(B24Error::from_envelope(
            method,
            Some(status),
            "",
            "the portal did not answer result: true",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_robot_url_carries_route_and_secret() {
        assert_eq!(
            webhook_robot_url("https://robot.example.com/", "a-b", "S3cret-._~"),
            "https://robot.example.com/?route=a-b&secret=S3cret-._%7E"
        );
        assert_eq!(
            webhook_robot_url("https://robot.example.com/?x=1", "a", "s"),
            "https://robot.example.com/?x=1&route=a&secret=s"
        );
    }

    #[test]
    fn handlers_are_http_urls() {
        assert!(check_handler("https://abc.lambda-url.eu-central-1.on.aws/").is_ok());
        for wrong in [
            "ftp://x.example.com/",
            "https://",
            "robot.example.com",
            "https://x/#a",
        ] {
            assert!(check_handler(wrong).is_err(), "{wrong}");
        }
    }
}
