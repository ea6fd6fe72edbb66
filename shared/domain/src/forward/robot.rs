//! A robot call, turned into a [`ForwardJob`] or into a classified refusal that names
//! the HTTP answer. Pure: the caller hands over the request's parts, the configured
//! routes and portals and the time it received the call.
//!
//! A portal calls in one of two ways:
//! - the built-in **Webhook** robot posts a form carrying only `document_id[]`
//!   (`crm`, `CCrmDocumentDeal`, `DEAL_123`). Everything else is in the URL the user
//!   typed into the robot: `?route=NAME&secret=SECRET` ([`ROUTE_PARAM`],
//!   [`SECRET_PARAM`]). Only the route's secret proves the caller, so the call counts
//!   as coming from the route's source portal.
//! - an **application** robot (`bizproc.robot.add`) posts `workflow_id`, `code`,
//!   `document_id[]`, `document_type[]`, `event_token`, `properties[...]`,
//!   `use_subscription`, `ts` and `auth[...]`. The portal it names in `auth[domain]` /
//!   `auth[member_id]` must present one of its `auth[application_token]`s and must be
//!   the route's source. The route is the one `?route=` names, or else the one whose
//!   robot code is `code`. A `secret` in the URL, if any, must be right too.
//!
//! A body with an `auth` object is an application robot's; any other is the Webhook
//! robot's. No refusal and no `Debug` output carries a secret or token.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::change::MAX_RECORD_ID;
use crate::event::{AuthFailure, IntakeRequest, PortalIdentity, claimed_portal, is_one_of};
use crate::forward::job::ForwardJob;
use crate::forward::route::ForwardRoute;
use crate::request_body::{BodyError, Conflict, Scalars, object, printable, read_body, single};

/// Robot calls are a few KB (properties included); anything far larger is not one.
pub const MAX_ROBOT_BODY_BYTES: usize = 64 * 1024;

/// The URL query parameter naming the route.
pub const ROUTE_PARAM: &str = "route";
/// The URL query parameter carrying the route's secret.
pub const SECRET_PARAM: &str = "secret";

/// Why a robot call was refused. Every variant maps to one HTTP status; the text names
/// the problem and never contains a secret or token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RobotRefusal {
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error(
        "unsupported content type ({found}): send application/x-www-form-urlencoded or application/json"
    )]
    UnsupportedMediaType { found: String },
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("malformed robot call: {0}")]
    Malformed(String),
    #[error(
        "no configured route has the name given in ?{ROUTE_PARAM}= or the robot code given in `code`"
    )]
    UnknownRoute,
    #[error("not authenticated: {0}")]
    Unauthorized(RobotAuthFailure),
    #[error("the calling portal is not the source of route {route}")]
    PortalNotAllowed { route: String },
    #[error("the document is not a deal ({document}): the robot forwards deals only")]
    NotADeal { document: String },
    #[error(
        "the deal ID in document_id must be DEAL_ and a whole number from 1 to {MAX_RECORD_ID}"
    )]
    BadDealId,
}

impl RobotRefusal {
    /// The HTTP status that answers this refusal.
    pub fn status(&self) -> u16 {
        match self {
            RobotRefusal::MethodNotAllowed => 405,
            RobotRefusal::UnsupportedMediaType { .. } => 415,
            RobotRefusal::PayloadTooLarge { .. } => 413,
            RobotRefusal::Malformed(_)
            | RobotRefusal::NotADeal { .. }
            | RobotRefusal::BadDealId => 400,
            RobotRefusal::UnknownRoute => 404,
            RobotRefusal::Unauthorized(_) => 401,
            RobotRefusal::PortalNotAllowed { .. } => 403,
        }
    }

    /// A short, stable name of the refusal for metrics and alarms: never changes when
    /// the message does, and carries nothing from the request.
    pub fn code(&self) -> &'static str {
        match self {
            RobotRefusal::MethodNotAllowed => "method_not_allowed",
            RobotRefusal::UnsupportedMediaType { .. } => "unsupported_media_type",
            RobotRefusal::PayloadTooLarge { .. } => "payload_too_large",
            RobotRefusal::Malformed(_) => "malformed",
            RobotRefusal::UnknownRoute => "unknown_route",
            RobotRefusal::Unauthorized(failure) => failure.code(),
            RobotRefusal::PortalNotAllowed { .. } => "portal_not_allowed",
            RobotRefusal::NotADeal { .. } => "not_a_deal",
            RobotRefusal::BadDealId => "bad_deal_id",
        }
    }
}

impl From<BodyError> for RobotRefusal {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::UnsupportedMediaType { found } => {
                RobotRefusal::UnsupportedMediaType { found }
            }
            BodyError::PayloadTooLarge { limit } => RobotRefusal::PayloadTooLarge { limit },
            BodyError::Malformed(reason) => RobotRefusal::Malformed(reason),
        }
    }
}

/// Why the caller was not taken for the route's source portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RobotAuthFailure {
    /// An application robot's portal or token did not check out.
    #[error("{0}")]
    Application(AuthFailure),
    #[error("no ?{SECRET_PARAM}= in the robot's URL")]
    MissingSecret,
    #[error("the URL carries different secrets")]
    ConflictingSecrets,
    #[error("the secret is wrong")]
    WrongSecret,
    #[error("the route has no secret: only an application robot may call it")]
    NoSecretConfigured,
}

impl RobotAuthFailure {
    /// The [`RobotRefusal::code`] of an unauthenticated call: which check failed.
    pub fn code(self) -> &'static str {
        match self {
            RobotAuthFailure::Application(failure) => failure.code(),
            RobotAuthFailure::MissingSecret => "missing_secret",
            RobotAuthFailure::ConflictingSecrets => "conflicting_secrets",
            RobotAuthFailure::WrongSecret => "bad_secret",
            RobotAuthFailure::NoSecretConfigured => "no_secret_configured",
        }
    }
}

/// Accepts one robot call or says why not. Checks run in the order of the answers a
/// caller can act on: method, content type, size, body syntax, the route, the caller's
/// identity, whether it may use the route, and only then the document it names.
pub fn accept_robot_call(
    request: &IntakeRequest<'_>,
    routes: &[ForwardRoute],
    portals: &[PortalIdentity],
    received_at: DateTime<Utc>,
) -> Result<ForwardJob, RobotRefusal> {
    if request.method != "POST" {
        return Err(RobotRefusal::MethodNotAllowed);
    }
    let raw: RawRobotCall = read_body(request, MAX_ROBOT_BODY_BYTES)?;
    let query = UrlParams::read(request.query)?;
    let route = find_route(&query, &raw, routes)?;
    let caller = match &raw.auth {
        Some(auth) => {
            let portal = application_portal(auth, portals).map_err(|failure| {
                RobotRefusal::Unauthorized(RobotAuthFailure::Application(failure))
            })?;
            if !query.secrets.is_empty() {
                check_secret(&query, route).map_err(RobotRefusal::Unauthorized)?;
            }
            portal.name.as_str()
        }
        None => {
            check_secret(&query, route).map_err(RobotRefusal::Unauthorized)?;
            route.source.as_str()
        }
    };
    if caller != route.source {
        return Err(RobotRefusal::PortalNotAllowed {
            route: route.name.clone(),
        });
    }
    let deal_id = deal_id(&raw)?;
    let event_token = single(&raw.event_token)
        .map_err(|Conflict| RobotRefusal::Malformed("several different event_token values".into()))?
        .map(str::to_string);
    let subscribed = single(&raw.use_subscription)
        .map_err(|Conflict| {
            RobotRefusal::Malformed("several different use_subscription values".into())
        })?
        .is_some_and(|flag| flag.eq_ignore_ascii_case("Y"));
    Ok(ForwardJob {
        route: route.name.clone(),
        source: route.source.clone(),
        deal_id,
        received_at,
        // Without a token there is nobody to answer, whatever the flag says.
        waits_for_reply: subscribed && event_token.is_some(),
        event_token,
        properties: raw.properties.unwrap_or_default(),
    })
}

/// What the URL query carries: the route name and the secret, each maybe repeated.
struct UrlParams {
    route: Option<String>,
    secrets: Vec<String>,
}

impl UrlParams {
    fn read(query: Option<&str>) -> Result<UrlParams, RobotRefusal> {
        let mut route: Option<String> = None;
        let mut secrets = Vec::new();
        for (key, value) in query
            .into_iter()
            .flat_map(|query| form_urlencoded::parse(query.as_bytes()))
        {
            if value.is_empty() {
                continue;
            }
            if key == ROUTE_PARAM {
                match &route {
                    Some(seen) if *seen != value => {
                        return Err(RobotRefusal::Malformed(format!(
                            "the URL names several routes in ?{ROUTE_PARAM}="
                        )));
                    }
                    _ => route = Some(value.into_owned()),
                }
            } else if key == SECRET_PARAM {
                secrets.push(value.into_owned());
            }
        }
        Ok(UrlParams { route, secrets })
    }
}

fn find_route<'r>(
    query: &UrlParams,
    raw: &RawRobotCall,
    routes: &'r [ForwardRoute],
) -> Result<&'r ForwardRoute, RobotRefusal> {
    if let Some(name) = &query.route {
        return routes
            .iter()
            .find(|route| route.name == *name)
            .ok_or(RobotRefusal::UnknownRoute);
    }
    let code = single(&raw.code)
        .map_err(|Conflict| RobotRefusal::Malformed("several different code values".into()))?
        .ok_or_else(|| {
            RobotRefusal::Malformed(format!(
                "no route named: add ?{ROUTE_PARAM}=NAME to the robot's URL"
            ))
        })?;
    routes
        .iter()
        .find(|route| route.robot_code == code)
        .ok_or(RobotRefusal::UnknownRoute)
}

/// The route's secret, presented once (or repeated the same) in the URL.
fn check_secret(query: &UrlParams, route: &ForwardRoute) -> Result<(), RobotAuthFailure> {
    let secret = route
        .secret
        .as_ref()
        .ok_or(RobotAuthFailure::NoSecretConfigured)?;
    let presented = match query.secrets.split_first() {
        None => return Err(RobotAuthFailure::MissingSecret),
        Some((first, rest)) if rest.iter().any(|other| other != first) => {
            return Err(RobotAuthFailure::ConflictingSecrets);
        }
        Some((first, _)) => first,
    };
    if bool::from(secret.expose().as_bytes().ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(RobotAuthFailure::WrongSecret)
    }
}

/// The configured portal an application robot's `auth[...]` names, if its token is
/// one of that portal's application tokens.
fn application_portal<'p>(
    auth: &RawRobotAuth,
    portals: &'p [PortalIdentity],
) -> Result<&'p PortalIdentity, AuthFailure> {
    let portal = claimed_portal(Some(&auth.domain), Some(&auth.member_id), portals)?;
    let presented = single(&auth.application_token)
        .map_err(|Conflict| AuthFailure::ConflictingTokens)?
        .ok_or(AuthFailure::MissingToken)?;
    if portal.tokens.is_empty() {
        return Err(AuthFailure::NoTokenConfigured);
    }
    if is_one_of(&portal.tokens, presented.as_bytes()) {
        Ok(portal)
    } else {
        Err(AuthFailure::WrongToken)
    }
}

/// The deal ID of `document_id` (`crm`, `CCrmDocumentDeal`, `DEAL_<id>`); a
/// `document_type`, when sent, must be a deal's too.
fn deal_id(raw: &RawRobotCall) -> Result<u64, RobotRefusal> {
    if let Some(kind) = &raw.document_type
        && kind
            .iter()
            .map(String::as_str)
            .ne(["crm", "CCrmDocumentDeal", "DEAL"])
    {
        return Err(RobotRefusal::NotADeal {
            document: printable(&kind.join(",")),
        });
    }
    let document = raw
        .document_id
        .as_ref()
        .ok_or_else(|| RobotRefusal::Malformed("document_id is missing".into()))?;
    let [module, class, id] = document.as_slice() else {
        return Err(RobotRefusal::Malformed(format!(
            "document_id must have 3 parts, not {}",
            document.len()
        )));
    };
    let number = match id.strip_prefix("DEAL_") {
        Some(number) if module == "crm" && class == "CCrmDocumentDeal" => number,
        _ => {
            return Err(RobotRefusal::NotADeal {
                document: printable(&document.join(",")),
            });
        }
    };
    // Digits only: `parse` would also take a leading `+`.
    let id = number
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| number.parse::<u64>().ok())
        .flatten();
    match id {
        Some(id) if (1..=MAX_RECORD_ID).contains(&id) => Ok(id),
        _ => Err(RobotRefusal::BadDealId),
    }
}

/// The keys of a robot call read here; everything else (`workflow_id`, `ts`, the
/// OAuth tokens) is skipped, so no access token is ever kept.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawRobotCall {
    code: Scalars,
    document_id: Option<DocumentParts>,
    document_type: Option<DocumentParts>,
    event_token: Scalars,
    #[serde(deserialize_with = "object")]
    properties: Option<Map<String, Value>>,
    use_subscription: Scalars,
    #[serde(deserialize_with = "object")]
    auth: Option<RawRobotAuth>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawRobotAuth {
    domain: Scalars,
    member_id: Scalars,
    application_token: Scalars,
}

/// `document_id[0..2]`: a list in JSON; in a form, keys `[0]`, `[1]`, `[2]` (or `[]`
/// repeated), kept in index order.
struct DocumentParts(Vec<String>);

impl std::ops::Deref for DocumentParts {
    type Target = Vec<String>;

    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DocumentParts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentPartsVisitor)
    }
}

struct DocumentPartsVisitor;

impl<'de> Visitor<'de> for DocumentPartsVisitor {
    type Value = DocumentParts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of three texts")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<DocumentParts, A::Error> {
        let mut parts = Vec::new();
        while let Some(Scalars(values)) = seq.next_element()? {
            if parts.len() >= 3 {
                return Err(de::Error::custom(
                    "expected a list of three texts, found more",
                ));
            }
            parts.extend(values);
        }
        Ok(DocumentParts(parts))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<DocumentParts, A::Error> {
        let mut indexed: Vec<(usize, String)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let index = key
                .parse::<usize>()
                .ok()
                .filter(|&index| index < 3)
                .ok_or_else(|| de::Error::custom("expected the indexes 0, 1 and 2"))?;
            let Scalars(values) = map.next_value()?;
            let [value] = <[String; 1]>::try_from(values)
                .map_err(|_| de::Error::custom("expected one text per index"))?;
            if indexed.iter().any(|(seen, _)| *seen == index) {
                return Err(de::Error::custom("an index is given twice"));
            }
            indexed.push((index, value));
        }
        indexed.sort_by_key(|(index, _)| *index);
        Ok(DocumentParts(
            indexed.into_iter().map(|(_, value)| value).collect(),
        ))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<DocumentParts, E> {
        Err(E::custom("expected a list of three texts, found text"))
    }
}

#[cfg(test)]
mod tests;
