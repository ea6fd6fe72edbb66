//! A Bitrix24 event POST, turned into a [`ChangeMessage`] or into a classified refusal
//! that names the HTTP answer. Pure: the caller hands over the request's parts, the
//! configured portals and the time it received the request.
//!
//! Bitrix24 sends `application/x-www-form-urlencoded` bodies built by PHP's
//! `http_build_query` (`data[FIELDS][ID]=42&auth[application_token]=...`); custom
//! on-premise hooks send JSON of the same shape. Both are read into one structure, so
//! every key path below means the same in either body. The shared secret may sit in
//! several places; every copy found must agree, and it must equal one of the tokens
//! configured for the portal that `auth[domain]` or `auth[member_id]` names.
//!
//! No refusal and no `Debug` output carries a token: refusals name the problem only.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use subtle::ConstantTimeEq;

use crate::change::{ChangeAction, ChangeMessage, MAX_RECORD_ID};
use crate::entity::Entity;

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
        "event {event} is not handled: only ONCRM{{DEAL,CONTACT,LEAD,COMPANY}}{{ADD,UPDATE,DELETE}} and ONCRMDEALMOVETOCATEGORY are"
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
    let format = body_format(request.headers)?;
    let decoded;
    let body = if request.body_is_base64 {
        // Base64 is 4 bytes per 3: refuse an oversized body before decoding it.
        if request.body.len() > MAX_BODY_BYTES / 3 * 4 + 4 {
            return Err(Rejection::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        use base64::Engine;
        decoded = base64::engine::general_purpose::STANDARD
            .decode(request.body)
            .map_err(|e| Rejection::Malformed(format!("the body is not valid base64 ({e})")))?;
        &decoded[..]
    } else {
        request.body
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let raw = format.decode(body)?;
    let portal = authenticate(&raw, request, portals).map_err(Rejection::Unauthorized)?;

    let event = single(&raw.event)
        .map_err(|_| Rejection::Malformed("the body has several different `event` values".into()))?
        .ok_or_else(|| Rejection::Malformed("the body has no `event`".into()))?;
    let (entity, action) = crm_change(event).ok_or_else(|| Rejection::UnsupportedEvent {
        event: printable(event),
    })?;
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

/// The entity and action of a CRM event this intake handles. Event codes arrive in
/// upper case; the docs spell them in camel case, so case does not matter.
fn crm_change(event: &str) -> Option<(Entity, ChangeAction)> {
    let event = event.to_ascii_uppercase();
    // A funnel change fires only this event, never ONCRMDEALUPDATE.
    if event == "ONCRMDEALMOVETOCATEGORY" {
        return Some((Entity::Deal, ChangeAction::Update));
    }
    let rest = event.strip_prefix("ONCRM")?;
    let (entity, rest) = Entity::ALL.iter().find_map(|&entity| {
        let rest = rest.strip_prefix(&entity.as_str().to_ascii_uppercase())?;
        Some((entity, rest))
    })?;
    let action = match rest {
        "ADD" => ChangeAction::Add,
        "UPDATE" => ChangeAction::Update,
        "DELETE" => ChangeAction::Delete,
        _ => return None,
    };
    Some((entity, action))
}

/// An input string fit to repeat in an answer: printable ASCII, at most 64 characters.
fn printable(input: &str) -> String {
    let mut shown: String = input
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if input.chars().count() > 64 {
        shown.push_str("...");
    }
    shown
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

#[derive(Clone, Copy)]
enum BodyFormat {
    Form,
    Json,
}

fn body_format(headers: &[(&str, &[u8])]) -> Result<BodyFormat, Rejection> {
    let mut content_types = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    let unsupported = |found: &str| Rejection::UnsupportedMediaType {
        found: found.into(),
    };
    let value = match (content_types.next(), content_types.next()) {
        (Some((_, value)), None) => value,
        (None, _) => return Err(unsupported("no Content-Type header")),
        (Some(_), Some(_)) => return Err(unsupported("several Content-Type headers")),
    };
    let media: mime::Mime = std::str::from_utf8(value)
        .ok()
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| unsupported("an unreadable Content-Type"))?;
    // Any charset parameter is fine: the keys and values read here are ASCII.
    if media.essence_str() == mime::APPLICATION_WWW_FORM_URLENCODED.essence_str() {
        Ok(BodyFormat::Form)
    } else if media.essence_str() == mime::APPLICATION_JSON.essence_str() {
        Ok(BodyFormat::Json)
    } else {
        Err(unsupported(&printable(media.essence_str())))
    }
}

impl BodyFormat {
    fn decode(self, body: &[u8]) -> Result<RawEvent, Rejection> {
        let (kind, result) = match self {
            BodyFormat::Form => {
                // Bitrix24 percent-encodes the brackets of nested keys (`data%5BFIELDS%5D`).
                let config = serde_qs::Config::new().use_form_encoding(true);
                let result = serde_qs::Deserializer::with_config(config, body)
                    .map_err(|e| e.to_string())
                    .and_then(|deserializer| {
                        deserialize_event(deserializer).map_err(|e| e.to_string())
                    });
                ("form", result)
            }
            BodyFormat::Json => {
                let mut deserializer = serde_json::Deserializer::from_slice(body);
                let result = deserialize_event(&mut deserializer)
                    .and_then(|raw| deserializer.end().map(|()| raw).map_err(Into::into))
                    .map_err(|e| e.to_string());
                ("JSON", result)
            }
        };
        result.map_err(|reason| Rejection::Malformed(format!("bad {kind} body: {reason}")))
    }
}

/// Reads the event through the object check (so a body that is not an object says
/// so without repeating itself) and names the key path of any error.
fn deserialize_event<'de, D>(deserializer: D) -> Result<RawEvent, PathError<D::Error>>
where
    D: Deserializer<'de>,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    match tracked.deserialize_any(ObjectVisitor::<RawEvent>(PhantomData)) {
        Ok(Some(raw)) => Ok(raw),
        Ok(None) => Err(PathError::NotAnObject),
        Err(inner) => Err(PathError::At {
            path: track.path().to_string(),
            inner,
        }),
    }
}

enum PathError<E> {
    NotAnObject,
    At { path: String, inner: E },
}

impl<E: fmt::Display> fmt::Display for PathError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAnObject => f.write_str("expected an object"),
            PathError::At { path, inner } if path == "." => write!(f, "{inner}"),
            PathError::At { path, inner } => write!(f, "at `{path}`: {inner}"),
        }
    }
}

impl From<serde_json::Error> for PathError<serde_json::Error> {
    fn from(inner: serde_json::Error) -> Self {
        PathError::At {
            path: ".".into(),
            inner,
        }
    }
}

/// Finds the portal the event claims to come from and checks its token.
fn authenticate<'p>(
    raw: &RawEvent,
    request: &IntakeRequest<'_>,
    portals: &'p [PortalIdentity],
) -> Result<&'p PortalIdentity, AuthFailure> {
    let auth = raw.auth.as_ref();
    let conflicting = |Conflict| AuthFailure::ConflictingPortal;
    let domain = auth
        .map(|a| single_ignoring_case(&a.domain))
        .transpose()
        .map_err(conflicting)?
        .flatten();
    let member_id = auth
        .map(|a| single(&a.member_id))
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

    let presented = presented_token(raw, request)?;
    if portal.tokens.is_empty() {
        return Err(AuthFailure::NoTokenConfigured);
    }
    // Compare with every configured token, so the time taken says nothing about which
    // one (or how much of one) matched.
    let matched = portal
        .tokens
        .iter()
        .fold(subtle::Choice::from(0), |matched, token| {
            matched | token.as_bytes().ct_eq(&presented)
        });
    if bool::from(matched) {
        Ok(portal)
    } else {
        Err(AuthFailure::WrongToken)
    }
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

/// A value seen more than once with different contents.
struct Conflict;

/// The one distinct non-empty value, if any.
fn single(values: &Scalars) -> Result<Option<&str>, Conflict> {
    single_by(values, |a, b| a == b)
}

fn single_ignoring_case(values: &Scalars) -> Result<Option<&str>, Conflict> {
    single_by(values, |a, b| a.eq_ignore_ascii_case(b))
}

fn single_by(
    values: &Scalars,
    same: impl Fn(&str, &str) -> bool,
) -> Result<Option<&str>, Conflict> {
    let mut found: Option<&str> = None;
    for value in values
        .0
        .iter()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
    {
        match found {
            Some(seen) if !same(seen, value) => return Err(Conflict),
            _ => found = Some(value),
        }
    }
    Ok(found)
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

fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    deserializer.deserialize_any(ObjectVisitor(PhantomData))
}

/// A nested object, or nothing for `null` and `[]` (PHP's `json_encode` of an empty
/// array). Any other value is refused by its kind, never by its contents.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        match seq.next_element::<de::IgnoredAny>()? {
            None => Ok(None),
            Some(_) => Err(de::Error::custom("expected an object, found a list")),
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom("expected an object, found text"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom("expected an object, found a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom("expected an object, found a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom("expected an object, found a number"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom("expected an object, found true or false"))
    }
}

/// Every value given for one key: forms repeat keys, JSON may give a list. Numbers
/// count as their decimal text (custom hooks send IDs as numbers).
#[derive(Default)]
struct Scalars(Vec<String>);

impl<'de> Deserialize<'de> for Scalars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarsVisitor)
    }
}

struct ScalarsVisitor;

impl<'de> Visitor<'de> for ScalarsVisitor {
    type Value = Scalars;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text or a whole number")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalars, E> {
        Ok(Scalars(vec![value.to_owned()]))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Scalars, E> {
        Ok(Scalars(vec![value]))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalars, E> {
        Ok(Scalars(vec![value.to_string()]))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalars, E> {
        Ok(Scalars(vec![value.to_string()]))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalars, E> {
        Err(E::custom(
            "expected text or a whole number, found a fraction or a number too large",
        ))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalars, E> {
        Err(E::custom(
            "expected text or a whole number, found true or false",
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalars, E> {
        Ok(Scalars::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalars, E> {
        Ok(Scalars::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalars, D::Error> {
        Scalars::deserialize(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalars, A::Error> {
        let mut all = Vec::new();
        while let Some(Scalars(values)) = seq.next_element()? {
            all.extend(values);
        }
        Ok(Scalars(all))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Scalars, A::Error> {
        Err(de::Error::custom(
            "expected text or a whole number, found an object",
        ))
    }
}

#[cfg(test)]
mod tests;
