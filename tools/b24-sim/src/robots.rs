//! Automation rules ("robots", reference sheet section 2): the installed application
//! whose access token gives the application context, robot registrations
//! (`bizproc.robot.*`), the event tokens the portal issues to robot calls and accepts
//! back in `bizproc.event.send`, and the form bodies of both robot styles.

use std::collections::HashMap;
use std::fmt;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::params::param;
use crate::values::scalar_text;

/// The one application installed on the simulated portal. Calls to `/rest/{method}`
/// with `auth=<access_token>` run in its context, the only context in which
/// `bizproc.robot.*` work.
#[derive(Clone, PartialEq, Eq)]
pub struct Application {
    /// What the application sends as `auth` (the OAuth access token).
    pub access_token: String,
    /// `auth[application_token]` of robot calls: the handler's proof of origin.
    pub application_token: String,
    /// The host the application is installed on: robot handlers must live there.
    pub handler_host: String,
}

impl Default for Application {
    fn default() -> Self {
        Application {
            access_token: "simaccesstoken0123456789abcdef01".to_string(),
            application_token: "simapptoken0123456789abcdef0123".to_string(),
            handler_host: "127.0.0.1".to_string(),
        }
    }
}

impl fmt::Debug for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Application")
            .field("access_token", &"***")
            .field("application_token", &"***")
            .field("handler_host", &self.handler_host)
            .finish()
    }
}

/// Who makes a REST call: an incoming webhook or the installed application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    Webhook,
    Application,
}

/// A robot the application registered with `bizproc.robot.add`.
#[derive(Clone, Debug)]
struct Robot {
    code: String,
    handler: String,
    auth_user_id: u64,
    /// As registered: `Y`, `N` or empty (empty waits for `bizproc.event.send`).
    use_subscription: String,
    name: Value,
    properties: Map<String, Value>,
    return_properties: Map<String, Value>,
}

/// A token handed to one application robot call.
#[derive(Clone, Debug)]
struct IssuedToken {
    code: String,
    workflow_id: String,
    document_id: String,
    /// The robot waits for `bizproc.event.send` (`use_subscription` Y).
    waits: bool,
    replied: bool,
    /// Registered return properties, to match `RETURN_VALUES` keys against.
    return_properties: Option<Vec<String>>,
}

/// Robot registrations and event tokens of the portal.
#[derive(Default)]
pub(crate) struct Robots {
    registered: Vec<Robot>,
    tokens: HashMap<String, IssuedToken>,
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", message)
}

/// `bizproc.robot.*` outside an application: the documented `ACCESS_DENIED`, with the
/// documented HTTP 400 (bizproc-robot-list.md shows exactly this error under 400).
pub(crate) fn require_application(caller: Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Application => Ok(()),
        Caller::Webhook => Err(ApiError::new(
            400,
            "ACCESS_DENIED",
            "Application context required",
        )),
    }
}

/// `CODE`: letters, digits, `.`, `-`, `_`.
fn validate_code(params: &Map<String, Value>) -> Result<String, ApiError> {
    let code = param(params, "CODE")
        .and_then(scalar_text)
        .unwrap_or_default();
    if code.is_empty() {
        return Err(validation("Empty activity code!"));
    }
    if !code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(validation("Wrong activity code!"));
    }
    Ok(code)
}

/// `HANDLER`: an http(s) URL on the application's host.
fn validate_handler(handler: &str, application: &Application) -> Result<(), ApiError> {
    let wrong = || ApiError::new(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL");
    let url = reqwest::Url::parse(handler.trim()).map_err(|_| wrong())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::new(
            400,
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ));
    }
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case(&application.handler_host) => Ok(()),
        _ => Err(wrong()),
    }
}

/// `NAME` (and `Name` of a property): a non-empty string or a non-empty language map.
fn non_empty_name(value: Option<&Value>) -> bool {
    match value {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(map)) => map.values().any(|v| non_empty_name(Some(v))),
        _ => false,
    }
}

/// `PROPERTIES` / `RETURN_PROPERTIES`: keys start with a letter and hold `[A-Za-z0-9_]`,
/// every property has a `Name`.
fn validate_properties(value: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Array(items)) if items.is_empty() => return Ok(Map::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(validation("Wrong properties array!")),
    };
    for (key, property) in map {
        let mut bytes = key.bytes();
        let key_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(validation(format!("Wrong property key {key}!")));
        }
        let name = property
            .as_object()
            .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case("Name")))
            .map(|(_, v)| v);
        if !non_empty_name(name) {
            return Err(validation(format!("Empty property NAME {key}!")));
        }
    }
    Ok(map.clone())
}

/// The document types the docs list for `DOCUMENT_TYPE`.
fn validate_document_type(value: Option<&Value>) -> Result<(), ApiError> {
    let Some(value) = value.filter(|v| !crate::values::is_empty_input(v)) else {
        return Ok(());
    };
    let parts: Vec<String> = crate::table::list_items(value)
        .into_iter()
        .filter_map(scalar_text)
        .collect();
    let known = match parts.as_slice() {
        [module, class, kind] if module == "crm" => {
            matches!(
                (class.as_str(), kind.as_str()),
                ("CCrmDocumentLead", "LEAD")
                    | ("CCrmDocumentDeal", "DEAL")
                    | (
                        "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote",
                        "QUOTE"
                    )
                    | (
                        "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice",
                        "SMART_INVOICE"
                    )
            ) || (class == "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"
                && kind.starts_with("DYNAMIC_"))
        }
        _ => false,
    };
    if known {
        Ok(())
    } else {
        Err(validation("Wrong activity DOCUMENT_TYPE!"))
    }
}

/// `FILTER`: an object of `INCLUDE` / `EXCLUDE` rule arrays.
fn validate_filter(value: Option<&Value>) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map))
            if map.iter().all(|(k, v)| {
                matches!(k.to_ascii_uppercase().as_str(), "INCLUDE" | "EXCLUDE")
                    && matches!(v, Value::Array(_) | Value::Object(_))
            }) =>
        {
            Ok(())
        }
        Some(_) => Err(validation("Wrong activity FILTER!")),
    }
}

fn use_subscription_flag(value: Option<&Value>) -> String {
    value
        .and_then(scalar_text)
        .map(|s| s.trim().to_ascii_uppercase())
        .unwrap_or_default()
}

impl Robots {
    /// `bizproc.robot.add`.
    pub fn add(
        &mut self,
        params: &Map<String, Value>,
        application: &Application,
    ) -> Result<(), ApiError> {
        if params.is_empty() {
            return Err(validation("Empty data!"));
        }
        let code = validate_code(params)?;
        let handler = param(params, "HANDLER")
            .and_then(scalar_text)
            .unwrap_or_default();
        validate_handler(&handler, application)?;
        let name = param(params, "NAME").cloned();
        if !non_empty_name(name.as_ref()) {
            return Err(validation("Empty activity NAME!"));
        }
        let properties = validate_properties(param(params, "PROPERTIES"))?;
        let return_properties = validate_properties(param(params, "RETURN_PROPERTIES"))?;
        validate_document_type(param(params, "DOCUMENT_TYPE"))?;
        validate_filter(param(params, "FILTER"))?;
        if self.registered.iter().any(|r| r.code == code) {
            return Err(ApiError::new(
                400,
                "ERROR_ACTIVITY_ALREADY_INSTALLED",
                "Activity or Automation rule already installed!",
            ));
        }
        self.registered.push(Robot {
            code,
            handler,
            auth_user_id: param(params, "AUTH_USER_ID")
                .and_then(crate::values::parse_int)
                .and_then(|id| u64::try_from(id).ok())
                .unwrap_or(0),
            use_subscription: use_subscription_flag(param(params, "USE_SUBSCRIPTION")),
            name: name.unwrap_or(Value::Null),
            properties,
            return_properties,
        });
        Ok(())
    }

    /// `bizproc.robot.update {CODE, FIELDS}`: changes the given registration fields.
    pub fn update(
        &mut self,
        params: &Map<String, Value>,
        application: &Application,
    ) -> Result<(), ApiError> {
        let code = validate_code(params)?;
        let index = self.index_of(&code)?;
        let Some(Value::Object(fields)) = param(params, "FIELDS") else {
            return Err(validation("No fields to update"));
        };
        if fields.is_empty() {
            return Err(validation("No fields to update"));
        }
        let mut robot = self.registered[index].clone();
        if let Some(handler) = param(fields, "HANDLER") {
            let handler = scalar_text(handler).unwrap_or_default();
            validate_handler(&handler, application)?;
            robot.handler = handler;
        }
        if let Some(flag) = param(fields, "USE_SUBSCRIPTION") {
            robot.use_subscription = use_subscription_flag(Some(flag));
        }
        if let Some(name) = param(fields, "NAME").filter(|n| non_empty_name(Some(n))) {
            robot.name = name.clone();
        }
        if let Some(properties) = param(fields, "PROPERTIES") {
            robot.properties = validate_properties(Some(properties))?;
        }
        if let Some(properties) = param(fields, "RETURN_PROPERTIES") {
            robot.return_properties = validate_properties(Some(properties))?;
        }
        if let Some(user) = param(fields, "AUTH_USER_ID").and_then(crate::values::parse_int) {
            robot.auth_user_id = u64::try_from(user).unwrap_or(0);
        }
        validate_document_type(param(fields, "DOCUMENT_TYPE"))?;
        validate_filter(param(fields, "FILTER"))?;
        self.registered[index] = robot;
        Ok(())
    }

    /// `bizproc.robot.delete {CODE}`.
    pub fn delete(&mut self, params: &Map<String, Value>) -> Result<(), ApiError> {
        let code = validate_code(params)?;
        let index = self.index_of(&code)?;
        self.registered.remove(index);
        Ok(())
    }

    /// `bizproc.robot.list`: the codes, in registration order.
    pub fn codes(&self) -> Vec<String> {
        self.registered.iter().map(|r| r.code.clone()).collect()
    }

    /// Updating (or reinstalling) the application removes its robots.
    pub fn forget_registrations(&mut self) -> usize {
        std::mem::take(&mut self.registered).len()
    }

    /// The registrations as the control surface shows them.
    pub fn describe(&self) -> Vec<Value> {
        self.registered
            .iter()
            .map(|r| {
                json!({
                    "CODE": r.code,
                    "HANDLER": r.handler,
                    "AUTH_USER_ID": r.auth_user_id,
                    "USE_SUBSCRIPTION": r.use_subscription,
                    "NAME": r.name,
                    "PROPERTIES": r.properties,
                    "RETURN_PROPERTIES": r.return_properties,
                })
            })
            .collect()
    }

    fn index_of(&self, code: &str) -> Result<usize, ApiError> {
        self.registered
            .iter()
            .position(|r| r.code == code)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "ERROR_ACTIVITY_NOT_FOUND",
                    "Activity or Robot not found!",
                )
            })
    }

    /// Prepares one application robot call: resolves the handler URL and the
    /// subscription from the registration (when the code is registered), and issues
    /// the workflow ID and event token.
    pub fn issue(&mut self, call: &AppRobotCall, deal_id: u64) -> Result<IssuedCall, String> {
        let robot = self.registered.iter().find(|r| r.code == call.code);
        let url = match (&call.url, robot) {
            (Some(url), _) => url.clone(),
            (None, Some(robot)) => robot.handler.clone(),
            (None, None) => {
                return Err(format!(
                    "robot '{}' is not registered, so the call needs a url",
                    call.code
                ));
            }
        };
        // An empty registration flag waits, as only an explicit N does not.
        let waits = call
            .use_subscription
            .unwrap_or_else(|| robot.is_none_or(|r| r.use_subscription != "N"));
        let mut rng = rand::rng();
        let workflow_id = format!(
            "{:014x}.{:08}",
            rng.random::<u64>() >> 8,
            rng.random_range(0..100_000_000u32)
        );
        let activity = format!(
            "A{:05}_{:05}_{:05}_{:05}",
            rng.random_range(0..100_000u32),
            rng.random_range(0..100_000u32),
            rng.random_range(0..100_000u32),
            rng.random_range(0..100_000u32)
        );
        let signature: String = (0..32)
            .map(|_| {
                let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                alphabet[rng.random_range(0..alphabet.len())] as char
            })
            .collect();
        let digest = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            rng.random::<u64>(),
            rng.random::<u64>(),
            rng.random::<u64>(),
            rng.random::<u64>()
        );
        let event_token = format!("{workflow_id}|{activity}|{signature}.{digest}");
        let document_id = format!("DEAL_{deal_id}");
        self.tokens.insert(
            event_token.clone(),
            IssuedToken {
                code: call.code.clone(),
                workflow_id: workflow_id.clone(),
                document_id: document_id.clone(),
                waits,
                replied: false,
                return_properties: robot
                    .filter(|r| !r.return_properties.is_empty())
                    .map(|r| r.return_properties.keys().cloned().collect()),
            },
        );
        Ok(IssuedCall {
            url,
            workflow_id,
            event_token,
            waits,
            auth_user_id: robot.map_or(0, |r| r.auth_user_id),
        })
    }

    /// `bizproc.event.send`: a token this portal issued to a robot that waits, once.
    /// Returns the reply as `/_sim/workflow-replies` shows it.
    pub fn accept_reply(
        &mut self,
        token: &str,
        return_values: Option<&Value>,
        log_message: Option<String>,
    ) -> Result<Value, ApiError> {
        let denied = || ApiError::new(403, "ACCESS_DENIED", "Access denied!");
        let issued = self.tokens.get_mut(token).ok_or_else(denied)?;
        if !issued.waits || issued.replied {
            return Err(denied());
        }
        issued.replied = true;
        let values = match (return_values, &issued.return_properties) {
            (Some(Value::Object(values)), Some(known)) => {
                // Keys match the registered return properties case-insensitively;
                // others are dropped, as the activity does.
                let matched: Map<String, Value> = known
                    .iter()
                    .filter_map(|name| {
                        values
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| (name.clone(), v.clone()))
                    })
                    .collect();
                Value::Object(matched)
            }
            (Some(values), _) => values.clone(),
            (None, _) => Value::Null,
        };
        Ok(json!({
            "EVENT_TOKEN": token,
            "CODE": issued.code,
            "WORKFLOW_ID": issued.workflow_id,
            "DOCUMENT_ID": issued.document_id,
            "RETURN_VALUES": values,
            "LOG_MESSAGE": log_message,
        }))
    }
}

/// `POST /_sim/robot/app`: fire an application robot at a URL for a deal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRobotCall {
    /// Where to send it; defaults to the registered `HANDLER` of `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub deal_id: u64,
    /// The robot's `CODE`.
    pub code: String,
    /// The values the robot's properties have in this rule (`properties[NAME]`).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// Whether the robot waits for `bizproc.event.send`; defaults to the registration
    /// (waits unless registered with `N`), or true for an unregistered code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_subscription: Option<bool>,
}

/// `POST /_sim/robot/webhook`: fire the built-in "Webhook" robot at a URL for a deal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRobotCall {
    /// The handler URL as the user typed it (query included); `{=Document:ID}` and
    /// `{{ID}}` are replaced by the deal ID.
    pub url: String,
    pub deal_id: u64,
}

/// What the portal sent for a robot and how the handler answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobotDelivery {
    /// The URL the POST went to.
    pub url: String,
    /// The form fields in the order they were sent.
    pub sent: Map<String, Value>,
    /// The token the portal will accept in `bizproc.event.send` (application robots).
    #[serde(default)]
    pub event_token: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// The handler's HTTP status; `None` when it could not be reached.
    pub status: Option<u16>,
    /// Why the handler could not be reached.
    #[serde(default)]
    pub error: Option<String>,
}

/// An application robot call the portal is about to send.
pub(crate) struct IssuedCall {
    pub url: String,
    pub workflow_id: String,
    pub event_token: String,
    pub waits: bool,
    pub auth_user_id: u64,
}

/// The portal's identity and the application's tokens as robot calls carry them.
pub(crate) struct RobotAuth<'a> {
    pub application: &'a Application,
    pub refresh_token: &'a str,
    pub domain: &'a str,
    pub client_endpoint: &'a str,
    pub member_id: &'a str,
    pub user_id: u64,
    pub now: i64,
}

const DOCUMENT_ID: [&str; 2] = ["crm", "CCrmDocumentDeal"];

fn document_id_pairs(deal_id: u64) -> Vec<(String, String)> {
    vec![
        ("document_id[0]".into(), DOCUMENT_ID[0].into()),
        ("document_id[1]".into(), DOCUMENT_ID[1].into()),
        ("document_id[2]".into(), format!("DEAL_{deal_id}")),
    ]
}

/// The built-in "Webhook" robot's body: `document_id` only, no auth.
pub(crate) fn webhook_robot_form(deal_id: u64) -> Vec<(String, String)> {
    document_id_pairs(deal_id)
}

/// The handler URL of the built-in robot: http(s), a host with a dot, and the
/// document's ID substituted for `{=Document:ID}` / `{{ID}}`.
pub(crate) fn webhook_robot_url(template: &str, deal_id: u64) -> Result<String, String> {
    let url = template
        .trim()
        .replace("{=Document:ID}", &deal_id.to_string())
        .replace("{{ID}}", &deal_id.to_string());
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("url {url:?} is invalid: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("the Webhook robot sends only to http and https URLs".to_string());
    }
    if !parsed.host_str().is_some_and(|h| h.contains('.')) {
        return Err("the Webhook robot needs a host name with a dot".to_string());
    }
    Ok(url)
}

/// An application robot's body, in the order the portal's queue writes it.
pub(crate) fn app_robot_form(
    call: &AppRobotCall,
    issued: &IssuedCall,
    deal_id: u64,
    auth: &RobotAuth<'_>,
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("workflow_id".to_string(), issued.workflow_id.clone()),
        ("code".to_string(), call.code.clone()),
    ];
    pairs.extend(document_id_pairs(deal_id));
    pairs.extend([
        ("document_type[0]".to_string(), DOCUMENT_ID[0].to_string()),
        ("document_type[1]".to_string(), DOCUMENT_ID[1].to_string()),
        ("document_type[2]".to_string(), "DEAL".to_string()),
        ("event_token".to_string(), issued.event_token.clone()),
    ]);
    for (name, value) in &call.properties {
        flatten(&format!("properties[{name}]"), value, &mut pairs);
    }
    let user_id = if issued.auth_user_id > 0 {
        issued.auth_user_id
    } else {
        auth.user_id
    };
    let flag = if issued.waits { "Y" } else { "N" };
    pairs.extend(
        [
            ("use_subscription", flag.to_string()),
            ("timeout_duration", "0".to_string()),
            ("ts", auth.now.to_string()),
            ("auth[access_token]", auth.application.access_token.clone()),
            ("auth[expires]", (auth.now + 3600).to_string()),
            ("auth[expires_in]", "3600".to_string()),
            ("auth[scope]", "crm,bizproc,im".to_string()),
            ("auth[domain]", auth.domain.to_string()),
            (
                "auth[server_endpoint]",
                "https://oauth.bitrix.info/rest/".to_string(),
            ),
            ("auth[status]", "L".to_string()),
            ("auth[client_endpoint]", auth.client_endpoint.to_string()),
            ("auth[member_id]", auth.member_id.to_string()),
            ("auth[user_id]", user_id.to_string()),
            ("auth[refresh_token]", auth.refresh_token.to_string()),
            (
                "auth[application_token]",
                auth.application.application_token.clone(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    pairs
}

/// PHP-style keys for a JSON value: scalars as strings (`null` as `""`, booleans as
/// `Y`/`N`), arrays and objects as nested keys.
fn flatten(prefix: &str, value: &Value, pairs: &mut Vec<(String, String)>) {
    match value {
        Value::Null => pairs.push((prefix.to_string(), String::new())),
        Value::Bool(b) => pairs.push((prefix.to_string(), if *b { "Y" } else { "N" }.into())),
        Value::Number(n) => pairs.push((prefix.to_string(), n.to_string())),
        Value::String(s) => pairs.push((prefix.to_string(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, pairs);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                flatten(&format!("{prefix}[{key}]"), item, pairs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Application {
        Application {
            handler_host: "robots.example.com".into(),
            ..Application::default()
        }
    }

    fn registration(code: &str) -> Map<String, Value> {
        json!({
            "CODE": code,
            "HANDLER": "https://robots.example.com/robot",
            "NAME": {"en": "Forward"},
            "USE_SUBSCRIPTION": "Y",
            "PROPERTIES": {"route": {"Name": "Route", "Type": "string"}},
            "RETURN_PROPERTIES": {"targetDealId": {"Name": "Target deal", "Type": "int"}},
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn registration_rules_follow_the_docs() {
        let mut robots = Robots::default();
        let app = app();
        let error = |params: Value| {
            Robots::default()
                .add(params.as_object().unwrap(), &app)
                .unwrap_err()
                .description
        };
        assert_eq!(error(json!({})), "Empty data!");
        assert_eq!(error(json!({"NAME": "x"})), "Empty activity code!");
        assert_eq!(error(json!({"CODE": "a b"})), "Wrong activity code!");
        assert_eq!(
            error(json!({"CODE": "a", "HANDLER": "ftp://robots.example.com/"})),
            "Unsupported handler protocol"
        );
        assert_eq!(
            error(json!({"CODE": "a", "HANDLER": "https://evil.example.com/"})),
            "Wrong handler URL"
        );
        assert_eq!(
            error(json!({"CODE": "a", "HANDLER": "https://robots.example.com/"})),
            "Empty activity NAME!"
        );
        let base = json!({"CODE": "a", "HANDLER": "https://robots.example.com/", "NAME": "n"});
        let with = |key: &str, value: Value| {
            let mut params = base.clone();
            params[key] = value;
            error(params)
        };
        assert_eq!(with("PROPERTIES", json!("x")), "Wrong properties array!");
        assert_eq!(
            with("PROPERTIES", json!({"1abc": {"Name": "x"}})),
            "Wrong property key 1abc!"
        );
        assert_eq!(
            with("RETURN_PROPERTIES", json!({"abc": {"Type": "int"}})),
            "Empty property NAME abc!"
        );
        assert_eq!(
            with("DOCUMENT_TYPE", json!(["crm", "CCrmDocumentDeal", "LEAD"])),
            "Wrong activity DOCUMENT_TYPE!"
        );
        assert_eq!(with("FILTER", json!("b24")), "Wrong activity FILTER!");

        robots.add(&registration("forward"), &app).unwrap();
        let again = robots.add(&registration("forward"), &app).unwrap_err();
        assert_eq!(again.code, "ERROR_ACTIVITY_ALREADY_INSTALLED");
        assert_eq!(robots.codes(), vec!["forward"]);
        assert_eq!(robots.forget_registrations(), 1);
        assert!(robots.codes().is_empty());
    }

    #[test]
    fn tokens_are_accepted_once_and_only_when_the_robot_waits() {
        let mut robots = Robots::default();
        robots.add(&registration("forward"), &app()).unwrap();
        let call = AppRobotCall {
            url: None,
            deal_id: 7,
            code: "forward".into(),
            properties: Map::new(),
            use_subscription: None,
        };
        let issued = robots.issue(&call, 7).unwrap();
        assert_eq!(issued.url, "https://robots.example.com/robot");
        assert!(issued.waits);
        assert_eq!(issued.event_token.split('|').count(), 3);
        let reply = robots
            .accept_reply(
                &issued.event_token,
                Some(&json!({"TARGETDEALID": 5, "other": 1})),
                None,
            )
            .unwrap();
        assert_eq!(reply["RETURN_VALUES"], json!({"targetDealId": 5}));
        assert_eq!(reply["DOCUMENT_ID"], "DEAL_7");
        let twice = robots
            .accept_reply(&issued.event_token, None, None)
            .unwrap_err();
        assert_eq!((twice.status, twice.code.as_str()), (403, "ACCESS_DENIED"));
        let forged = format!("{}x", issued.event_token);
        assert!(robots.accept_reply(&forged, None, None).is_err());

        let no_wait = AppRobotCall {
            use_subscription: Some(false),
            ..call
        };
        let issued = robots.issue(&no_wait, 7).unwrap();
        assert!(
            robots
                .accept_reply(&issued.event_token, None, None)
                .is_err()
        );
    }

    #[test]
    fn properties_flatten_to_php_keys() {
        let mut pairs = Vec::new();
        flatten(
            "properties[x]",
            &json!({"a": [1, null], "b": true}),
            &mut pairs,
        );
        assert_eq!(
            pairs,
            vec![
                ("properties[x][a][0]".to_string(), "1".to_string()),
                ("properties[x][a][1]".to_string(), String::new()),
                ("properties[x][b]".to_string(), "Y".to_string()),
            ]
        );
    }

    #[test]
    fn webhook_robot_urls_keep_their_query_and_substitute_the_id() {
        assert_eq!(
            webhook_robot_url(
                "http://127.0.0.1:9/hook?route=a&secret=s&id={=Document:ID}",
                42
            )
            .unwrap(),
            "http://127.0.0.1:9/hook?route=a&secret=s&id=42"
        );
        assert!(webhook_robot_url("http://localhost/hook", 1).is_err());
        assert!(webhook_robot_url("ftp://a.b/hook", 1).is_err());
        let debug = format!("{:?}", Application::default());
        assert!(!debug.contains("simaccesstoken"), "{debug}");
    }
}
