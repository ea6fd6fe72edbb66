//! A Bitrix24 event POST, turned into a [`ChangeMessage`] or into a classified refusal
//! that names the HTTP answer. Pure: the caller hands over the request's parts, the
//! configured portals and the time it received the request.
//!
//! The body is a PHP-style form (`data[FIELDS][ID]=42&auth[application_token]=...`)
//! or JSON of the same shape, read into one structure, so every key path below means
//! the same in either. The shared secret may sit in several places; every copy found must agree, and it must equal one of the tokens
//! configured for the portal that `auth[domain]` or `auth[member_id]` names.
//!
//! No refusal and no `Debug` output carries a token: refusals name the problem only.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::change::{ChangeAction, ChangeMessage, MAX_RECORD_ID};
use crate::entity::Entity;
use crate::request_body::{
    BodyError, Conflict, Scalars, object, printable, read_body, single, single_ignoring_case,
};

/// Real events are under 2 KB; anything far larger is not an event.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the intake needs to know about one configured portal.
#[derive(Clone, PartialEq, Eq)]
pub struct PortalIdentity {
    /// The configured portal name, carried into the change message.
    pub name: String,
    /// The portal's host name (`auth[domain]`), compared without regard to case.
    pub domain: String,
    /// The portal's `member_id`, when configured.
    pub member_id: Option<String>,
    /// Every token accepted from this portal (several during a rotation).
    pub tokens: Vec<String>,
}

impl fmt::Debug for PortalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalIdentity")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("member_id", &self.member_id)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .finish()
    }
}

/// The parts of one HTTP request the intake reads. No `Debug`: the body and the
/// headers hold the token.
pub struct IntakeRequest<'a> {
    pub method: &'a str,
    /// Every header as `(name, value)`; names in any case, repeated names allowed.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// The body is base64 text standing for the real bytes (as a function URL sends
    /// every body it does not take for text).
    pub body_is_base64: bool,
}

/// Why an event was refused. Every variant maps to one HTTP status; the text names the
/// problem and never contains a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error(
        "unsupported content type ({found}): send application/x-www-form-urlencoded or application/json"
    )]
    UnsupportedMediaType { found: String },
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("not authenticated: {0}")]
    Unauthorized(AuthFailure),
    #[error(
        "event {event} is not handled: only ONCRM{{DEAL,CONTACT,LEAD,COMPANY,DYNAMICITEM}}{{ADD,UPDATE,DELETE}} and ONCRMDEALMOVETOCATEGORY are"
    )]
    UnsupportedEvent { event: String },
}

impl Rejection {
    /// The HTTP status that answers this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::MethodNotAllowed => 405,
            Rejection::UnsupportedMediaType { .. } => 415,
            Rejection::PayloadTooLarge { .. } => 413,
            Rejection::Malformed(_) => 400,
            Rejection::Unauthorized(_) => 401,
            Rejection::UnsupportedEvent { .. } => 422,
        }
    }

    /// A short, stable name of the refusal for metrics and alarms: never changes when
    /// the message does, and carries nothing from the request.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::UnsupportedMediaType { .. } => "unsupported_media_type",
            Rejection::PayloadTooLarge { .. } => "payload_too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::Unauthorized(failure) => failure.code(),
            Rejection::UnsupportedEvent { .. } => "unsupported_event",
        }
    }
}

impl From<BodyError> for Rejection {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::UnsupportedMediaType { found } => Rejection::UnsupportedMediaType { found },
            BodyError::PayloadTooLarge { limit } => Rejection::PayloadTooLarge { limit },
            BodyError::Malformed(reason) => Rejection::Malformed(reason),
        }
    }
}

/// Why the sender was not taken for the portal it claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("the event names no portal (auth[domain] or auth[member_id])")]
    NoPortal,
    #[error("the event's portal is not configured")]
    UnknownPortal,
    #[error("the event names its portal in conflicting ways (auth[domain], auth[member_id])")]
    ConflictingPortal,
    #[error("no token found")]
    MissingToken,
    #[error("the request carries different tokens")]
    ConflictingTokens,
    #[error("the token is wrong")]
    WrongToken,
    #[error("no token is configured for the portal")]
    NoTokenConfigured,
}

impl AuthFailure {
    /// The [`Rejection::code`] of an unauthenticated request: which check failed.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::NoPortal => "no_portal",
            AuthFailure::UnknownPortal => "unknown_portal",
            AuthFailure::ConflictingPortal => "conflicting_portal",
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::ConflictingTokens => "conflicting_tokens",
            AuthFailure::WrongToken => "bad_token",
            AuthFailure::NoTokenConfigured => "no_token_configured",
        }
    }
}

/// Accepts one event request or says why not. Checks run in the order of the
/// answers a sender can act on: method, content type, size, body syntax, the sender's
/// identity, and only then what the (authentic) event says.
pub fn accept(
    request: &IntakeRequest<'_>,
    portals: &[PortalIdentity],
    received_at: DateTime<Utc>,
) -> Result<ChangeMessage, Rejection> {
    if request.method != "POST" {
        return Err(Rejection::MethodNotAllowed);
    }
    let raw: RawEvent = read_body(request, MAX_BODY_BYTES)?;
    let portal = authenticate(&raw, request, portals).map_err(Rejection::Unauthorized)?;

    let event = single(&raw.event)
        .map_err(|_| Rejection::Malformed("the body has several different `event` values".into()))?
        .ok_or_else(|| Rejection::Malformed("the body has no `event`".into()))?;
    let (entity, action) = crm_change(event).ok_or_else(|| Rejection::UnsupportedEvent {
        event: printable(event),
    })?;
    let entity = match entity {
        Some(entity) => entity,
        None => smart_process(&raw)?,
    };
    let id = record_id(&raw)?;
    Ok(ChangeMessage {
        portal: portal.name.clone(),
        entity,
        id,
        action,
        event_time: event_time(&raw.ts),
        received_at,
    })
}

/// The entity and action of a CRM event this intake handles (`None` for the entity of
/// a smart-process event, which its `data[FIELDS][ENTITY_TYPE_ID]` names). Event codes
/// arrive in upper case; the docs spell them in camel case, so case does not matter.
fn crm_change(event: &str) -> Option<(Option<Entity>, ChangeAction)> {
    let event = event.to_ascii_uppercase();
    // A funnel change fires only this event, never ONCRMDEALUPDATE.
    if event == "ONCRMDEALMOVETOCATEGORY" {
        return Some((Some(Entity::Deal), ChangeAction::Update));
    }
    let rest = event.strip_prefix("ONCRM")?;
    let (entity, rest) = match rest.strip_prefix("DYNAMICITEM") {
        Some(rest) => (None, rest),
        None => Entity::ALL.iter().find_map(|&entity| {
            let rest = rest.strip_prefix(&entity.as_str().to_ascii_uppercase())?;
            Some((Some(entity), rest))
        })?,
    };
    let action = match rest {
        "ADD" => ChangeAction::Add,
        "UPDATE" => ChangeAction::Update,
        "DELETE" => ChangeAction::Delete,
        _ => return None,
    };
    Some((entity, action))
}

/// The smart process of an ONCRMDYNAMICITEM* event, from `data[FIELDS][ENTITY_TYPE_ID]`.
fn smart_process(raw: &RawEvent) -> Result<Entity, Rejection> {
    let ids = raw
        .data
        .as_ref()
        .and_then(|data| data.fields.as_ref())
        .map(|fields| &fields.entity_type_id);
    let id = match ids.map(single) {
        Some(Ok(Some(id))) => id,
        Some(Err(Conflict)) => {
            return Err(Rejection::Malformed(
                "data[FIELDS][ENTITY_TYPE_ID] has several different values".into(),
            ));
        }
        Some(Ok(None)) | None => {
            return Err(Rejection::Malformed(
                "data[FIELDS][ENTITY_TYPE_ID] is missing (a smart-process event names its type)"
                    .into(),
            ));
        }
    };
    id.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| id.parse::<u32>().ok())
        .flatten()
        .and_then(Entity::smart)
        .ok_or_else(|| {
            Rejection::Malformed(format!(
                "data[FIELDS][ENTITY_TYPE_ID] must be a smart process's entity type ID, from {} to {}",
                Entity::FIRST_SMART_TYPE,
                Entity::LAST_SMART_TYPE
            ))
        })
}

fn record_id(raw: &RawEvent) -> Result<u64, Rejection> {
    let ids = raw
        .data
        .as_ref()
        .and_then(|data| data.fields.as_ref())
        .map(|fields| &fields.id);
    let id = match ids.map(single) {
        Some(Ok(Some(id))) => id,
        Some(Err(Conflict)) => {
            return Err(Rejection::Malformed(
                "data[FIELDS][ID] has several different values".into(),
            ));
        }
        Some(Ok(None)) | None => {
            return Err(Rejection::Malformed("data[FIELDS][ID] is missing".into()));
        }
    };
    // Digits only: `parse` would also take a leading `+`.
    let number = id
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| id.parse::<u64>().ok())
        .flatten();
    match number {
        Some(id) if (1..=MAX_RECORD_ID).contains(&id) => Ok(id),
        _ => Err(Rejection::Malformed(format!(
            "data[FIELDS][ID] must be a whole number from 1 to {MAX_RECORD_ID}"
        ))),
    }
}

/// `ts` is the unix time the portal's queue sent the event; a missing or odd value
/// leaves the event time unknown rather than refusing the event.
fn event_time(ts: &Scalars) -> Option<DateTime<Utc>> {
    let seconds: i64 = single(ts).ok()??.parse().ok()?;
    (seconds > 0)
        .then(|| DateTime::from_timestamp(seconds, 0))
        .flatten()
}

/// Finds the portal the event claims to come from and checks its token.
fn authenticate<'p>(
    raw: &RawEvent,
    request: &IntakeRequest<'_>,
    portals: &'p [PortalIdentity],
) -> Result<&'p PortalIdentity, AuthFailure> {
    let auth = raw.auth.as_ref();
    let portal = claimed_portal(auth.map(|a| &a.domain), auth.map(|a| &a.member_id), portals)?;
    let presented = presented_token(raw, request)?;
    if portal.tokens.is_empty() {
        return Err(AuthFailure::NoTokenConfigured);
    }
    if is_one_of(&portal.tokens, &presented) {
        Ok(portal)
    } else {
        Err(AuthFailure::WrongToken)
    }
}

/// The configured portal that `auth[domain]` and `auth[member_id]` name; both, when
/// given, must name the same one.
pub(crate) fn claimed_portal<'p>(
    domain: Option<&Scalars>,
    member_id: Option<&Scalars>,
    portals: &'p [PortalIdentity],
) -> Result<&'p PortalIdentity, AuthFailure> {
    let conflicting = |Conflict| AuthFailure::ConflictingPortal;
    let domain = domain
        .map(single_ignoring_case)
        .transpose()
        .map_err(conflicting)?
        .flatten();
    let member_id = member_id
        .map(single)
        .transpose()
        .map_err(conflicting)?
        .flatten();
    if domain.is_none() && member_id.is_none() {
        return Err(AuthFailure::NoPortal);
    }
    let by_domain = domain.and_then(|domain| {
        portals
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    });
    let by_member = member_id.and_then(|member| {
        portals
            .iter()
            .find(|p| p.member_id.as_deref() == Some(member))
    });
    let portal = match (by_domain, by_member) {
        (Some(a), Some(b)) if !std::ptr::eq(a, b) => {
            return Err(AuthFailure::ConflictingPortal);
        }
        (Some(portal), _) | (None, Some(portal)) => portal,
        (None, None) => return Err(AuthFailure::UnknownPortal),
    };
    // A portal may change its address but never its member_id: a different one is a
    // different portal.
    if let (Some(theirs), Some(ours)) = (member_id, portal.member_id.as_deref())
        && theirs != ours
    {
        return Err(AuthFailure::ConflictingPortal);
    }
    Ok(portal)
}

/// Whether `presented` equals one of `accepted`. Compares with every one, so the time
/// taken says nothing about which one (or how much of one) matched.
pub fn is_one_of(accepted: &[String], presented: &[u8]) -> bool {
    let matched = accepted
        .iter()
        .fold(subtle::Choice::from(0), |matched, token| {
            matched | token.as_bytes().ct_eq(presented)
        });
    bool::from(matched)
}

/// The one token the request carries, wherever the sender put it; copies must agree.
fn presented_token<'r>(
    raw: &'r RawEvent,
    request: &IntakeRequest<'r>,
) -> Result<Cow<'r, [u8]>, AuthFailure> {
    let auth = raw.auth.as_ref();
    let data = raw.data.as_ref();
    let in_body = [
        auth.map(|a| &a.application_token),
        auth.map(|a| &a.token),
        Some(&raw.token),
        data.map(|d| &d.token),
        data.and_then(|d| d.auth.as_ref()).map(|a| &a.token),
    ]
    .into_iter()
    .flatten()
    .flat_map(|values| &values.0)
    .map(|token| Cow::Borrowed(token.as_bytes()));
    let in_headers = request.headers.iter().filter_map(|&(name, value)| {
        if name.eq_ignore_ascii_case("x-bitrix-token")
            || name.eq_ignore_ascii_case("x-webhook-token")
        {
            Some(Cow::Borrowed(value))
        } else if name.eq_ignore_ascii_case("authorization") {
            bearer_token(value).map(Cow::Borrowed)
        } else {
            None
        }
    });
    let in_query = request
        .query
        .into_iter()
        .flat_map(|query| form_urlencoded::parse(query.as_bytes()))
        .filter(|(key, _)| key == "token")
        .map(|(_, value)| match value {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        });

    let mut found: Option<Cow<'r, [u8]>> = None;
    for token in in_body.chain(in_headers).chain(in_query) {
        match &found {
            _ if token.is_empty() => {}
            Some(seen) if *seen != token => {
                return Err(AuthFailure::ConflictingTokens);
            }
            Some(_) => {}
            None => found = Some(token),
        }
    }
    found.ok_or(AuthFailure::MissingToken)
}

/// `Authorization: Bearer <token>`; the scheme name in any case.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ")).then(|| token.trim_ascii())
}

/// The keys of an event this intake reads; everything else is skipped. Every nested
/// object goes through [`ObjectVisitor`] and every leaf through [`Scalars`], whose
/// errors name the kind of value found but never the value (it may be a token).
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawEvent {
    event: Scalars,
    #[serde(deserialize_with = "object")]
    data: Option<RawData>,
    ts: Scalars,
    #[serde(deserialize_with = "object")]
    auth: Option<RawAuth>,
    token: Scalars,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawData {
    #[serde(rename = "FIELDS", deserialize_with = "object")]
    fields: Option<RawFields>,
    token: Scalars,
    #[serde(deserialize_with = "object")]
    auth: Option<RawDataAuth>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawFields {
    #[serde(rename = "ID")]
    id: Scalars,
    /// The smart process of an ONCRMDYNAMICITEM* event.
    #[serde(rename = "ENTITY_TYPE_ID")]
    entity_type_id: Scalars,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawAuth {
    domain: Scalars,
    member_id: Scalars,
    application_token: Scalars,
    token: Scalars,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawDataAuth {
    token: Scalars,
}

#[cfg(test)]
mod tests;
