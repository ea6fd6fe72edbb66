//! Reading the body of a POST that a portal (or a hook imitating one) sends: the
//! content type decides the format, a base64 body (as a function URL hands over any
//! body it does not take for text) is decoded, the size is capped, and the body is
//! read into a caller's structure. Shared by the event intake and the robot handler.
//!
//! Bitrix24 sends `application/x-www-form-urlencoded` bodies built by PHP's
//! `http_build_query` (`data[FIELDS][ID]=42&auth[application_token]=...`); custom
//! on-premise hooks send JSON of the same shape. Both are read into one structure, so
//! every key path means the same in either body. Errors name the kind of value found
//! and its key path, never the value (it may be a token).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use crate::event::IntakeRequest;

/// Why a body could not be read; each caller turns it into its own refusal.
#[derive(Debug)]
pub(crate) enum BodyError {
    UnsupportedMediaType { found: String },
    PayloadTooLarge { limit: usize },
    Malformed(String),
}

/// Reads the request's body into `T` after the content-type, base64 and size checks
/// (in that order, so the answer names the first thing the sender must fix).
pub(crate) fn read_body<T: DeserializeOwned>(
    request: &IntakeRequest<'_>,
    limit: usize,
) -> Result<T, BodyError> {
    let format = body_format(request.headers)?;
    let decoded;
    let body = if request.body_is_base64 {
        // Base64 is 4 bytes per 3: refuse an oversized body before decoding it.
        if request.body.len() > limit / 3 * 4 + 4 {
            return Err(BodyError::PayloadTooLarge { limit });
        }
        use base64::Engine;
        decoded = base64::engine::general_purpose::STANDARD
            .decode(request.body)
            .map_err(|e| BodyError::Malformed(format!("the body is not valid base64 ({e})")))?;
        &decoded[..]
    } else {
        request.body
    };
    if body.len() > limit {
        return Err(BodyError::PayloadTooLarge { limit });
    }
    format.decode(body)
}

/// An input string fit to repeat in an answer: printable ASCII, at most 64 characters.
pub(crate) fn printable(input: &str) -> String {
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

#[derive(Clone, Copy)]
enum BodyFormat {
    Form,
    Json,
}

fn body_format(headers: &[(&str, &[u8])]) -> Result<BodyFormat, BodyError> {
    let mut content_types = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    let unsupported = |found: &str| BodyError::UnsupportedMediaType {
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
    fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, BodyError> {
        let (kind, result) = match self {
            BodyFormat::Form => {
                // Bitrix24 percent-encodes the brackets of nested keys (`data%5BFIELDS%5D`).
                let config = serde_qs::Config::new().use_form_encoding(true);
                let result = serde_qs::Deserializer::with_config(config, body)
                    .map_err(|e| e.to_string())
                    .and_then(|deserializer| {
                        deserialize_object(deserializer).map_err(|e| e.to_string())
                    });
                ("form", result)
            }
            BodyFormat::Json => {
                let mut deserializer = serde_json::Deserializer::from_slice(body);
                let result = deserialize_object(&mut deserializer)
                    .and_then(|raw| deserializer.end().map(|()| raw).map_err(Into::into))
                    .map_err(|e| e.to_string());
                ("JSON", result)
            }
        };
        result.map_err(|reason| BodyError::Malformed(format!("bad {kind} body: {reason}")))
    }
}

/// Reads the body through the object check (so a body that is not an object says
/// so without repeating itself) and names the key path of any error.
fn deserialize_object<'de, D, T>(deserializer: D) -> Result<T, PathError<D::Error>>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    match tracked.deserialize_any(ObjectVisitor::<T>(PhantomData)) {
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

/// A value seen more than once with different contents.
pub(crate) struct Conflict;

/// The one distinct non-empty value, if any.
pub(crate) fn single(values: &Scalars) -> Result<Option<&str>, Conflict> {
    single_by(values, |a, b| a == b)
}

pub(crate) fn single_ignoring_case(values: &Scalars) -> Result<Option<&str>, Conflict> {
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

/// For `#[serde(deserialize_with = "object")]`: a nested object read through
/// [`ObjectVisitor`].
pub(crate) fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
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
pub(crate) struct Scalars(pub(crate) Vec<String>);

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
