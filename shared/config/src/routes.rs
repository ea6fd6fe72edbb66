//! `[routes.NAME]`: deal-forwarding routes, validated into
//! [`b24_domain::forward::route::ForwardRoute`]s. Every rule names the key it refuses
//! and never repeats a secret.
//!
//! ```toml
//! [routes.partner-to-central]
//! source = "partner"
//! target = "central"
//! secret = "3f9c2e7a51d84b6e9a0c"      # the built-in Webhook robot's ?secret=
//! fields = { TITLE = "TITLE", OPPORTUNITY = "OPPORTUNITY", STAGE_ID = "STAGE_ID" }
//! constants = { CATEGORY_ID = 0, SOURCE_ID = "PARTNER" }
//! values.STAGE_ID = { by = "id", map = { "C3:NEW" = "NEW", "C3:WON" = "WON" }, default = "NEW" }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use b24_domain::forward::route::{
    FieldPlan, ForwardRoute, MatchBy, RESERVED_TARGET_FIELDS, ReplyPlan, ReturnValue, RouteSecret,
    Stamp, ValueMap, is_field_code, is_property_key, is_robot_code,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;

use crate::{ConfigError, PortalConfig, invalid, is_name};

/// The shortest route secret: it is all that proves a built-in Webhook robot's call.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    source: String,
    target: String,
    secret: Option<String>,
    robot_code: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    values: BTreeMap<String, RawValueMap>,
    #[serde(default)]
    constants: BTreeMap<String, Value>,
    #[serde(default)]
    stamp: RawStamp,
    copy_products: Option<bool>,
    #[serde(default)]
    copy_contacts: bool,
    #[serde(default)]
    copy_company: bool,
    #[serde(default)]
    copy_files: Vec<String>,
    #[serde(default)]
    wait_for_reply: bool,
    #[serde(default)]
    return_values: BTreeMap<String, ReturnValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValueMap {
    by: RawBy,
    map: Option<BTreeMap<String, Text>>,
    default: Option<Text>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawBy {
    Id,
    Label,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStamp {
    source_portal_field: Option<String>,
    source_deal_field: Option<String>,
    transferred_at_field: Option<String>,
}

/// A value written as text or as a whole number (`79` and `"79"` are the same ID).
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text or a whole number")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        Ok(Text(value.to_string()))
    }
}

/// Validates every route against the (validated) portals.
pub(crate) fn validate(
    raw: BTreeMap<String, RawRoute>,
    portals: &BTreeMap<String, PortalConfig>,
) -> Result<BTreeMap<String, ForwardRoute>, ConfigError> {
    let mut routes = BTreeMap::new();
    let mut robot_codes: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("routes.{name}");
        if !is_name(&name) {
            return Err(invalid(
                key,
                "route names may use only letters, digits, '_' and '-'",
            ));
        }
        let route = raw.validate(&name, &key, portals)?;
        if let Some(other) = robot_codes.insert(route.robot_code.clone(), name.clone()) {
            return Err(invalid(
                format!("{key}.robot_code"),
                format!("route {other} has the same robot code; each route needs its own"),
            ));
        }
        routes.insert(name, route);
    }
    Ok(routes)
}

impl RawRoute {
    fn validate(
        self,
        name: &str,
        key: &str,
        portals: &BTreeMap<String, PortalConfig>,
    ) -> Result<ForwardRoute, ConfigError> {
        let known = || portals.keys().cloned().collect::<Vec<_>>().join(", ");
        let source = portals.get(&self.source).ok_or_else(|| {
            invalid(
                format!("{key}.source"),
                format!(
                    "no portal of that name; configured portals are [{}]",
                    known()
                ),
            )
        })?;
        if !portals.contains_key(&self.target) {
            return Err(invalid(
                format!("{key}.target"),
                format!(
                    "no portal of that name; configured portals are [{}]",
                    known()
                ),
            ));
        }
        if self.target == self.source {
            return Err(invalid(
                format!("{key}.target"),
                "the target must be another portal than the source",
            ));
        }
        let has_app = !source.application_tokens.is_empty();
        let secret = match self.secret {
            Some(secret) => Some(validate_secret(&format!("{key}.secret"), secret)?),
            None if has_app => None,
            None => {
                return Err(invalid(
                    format!("{key}.secret"),
                    format!(
                        "required: portal {} has no application_tokens, so only the built-in Webhook robot can call this route and the secret is its proof",
                        self.source
                    ),
                ));
            }
        };
        let robot_code = self.robot_code.unwrap_or_else(|| name.to_string());
        if !is_robot_code(&robot_code) {
            return Err(invalid(
                format!("{key}.robot_code"),
                "expected letters, digits, '.', '-' and '_' (bizproc.robot.add's CODE)",
            ));
        }
        let plan = plan(
            key,
            self.fields,
            self.values,
            self.constants,
            self.stamp,
            self.copy_files,
        )?;
        if self.wait_for_reply && !has_app {
            return Err(invalid(
                format!("{key}.wait_for_reply"),
                format!(
                    "only an application robot can wait for a reply, and portal {} has no application_tokens",
                    self.source
                ),
            ));
        }
        if !self.wait_for_reply && !self.return_values.is_empty() {
            return Err(invalid(
                format!("{key}.return_values"),
                "return values are sent only to a robot that waits: set wait_for_reply = true",
            ));
        }
        if let Some(bad) = self.return_values.keys().find(|k| !is_property_key(k)) {
            return Err(invalid(
                format!("{key}.return_values.{bad}"),
                "expected a return property name: a letter, then letters, digits and '_'",
            ));
        }
        Ok(ForwardRoute {
            name: name.to_string(),
            source: self.source,
            target: self.target,
            secret,
            robot_code,
            plan,
            copy_products: self.copy_products.unwrap_or(true),
            copy_contacts: self.copy_contacts,
            copy_company: self.copy_company,
            reply: ReplyPlan {
                wait_for_reply: self.wait_for_reply,
                return_values: self.return_values,
            },
        })
    }
}

/// Secrets go into a URL the user types, so they are limited to characters that need
/// no encoding, and long enough not to be guessed.
pub(crate) fn validate_secret(key: &str, secret: String) -> Result<RouteSecret, ConfigError> {
    let url_safe = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if secret.len() < MIN_SECRET_LEN || !url_safe {
        return Err(invalid(
            key,
            format!(
                "expected at least {MIN_SECRET_LEN} characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
            ),
        ));
    }
    Ok(RouteSecret::new(secret))
}

const FIELD_CODE_RULE: &str =
    "expected a field code: an upper-case letter, then A-Z, 0-9 and '_', at most 50 characters";

/// A target field code that the route may write.
fn check_target(key: &str, code: &str) -> Result<(), ConfigError> {
    if !is_field_code(code) {
        return Err(invalid(key, FIELD_CODE_RULE));
    }
    if RESERVED_TARGET_FIELDS.contains(&code) {
        return Err(invalid(
            key,
            format!("{code} is set by the forwarder itself (ID, ORIGINATOR_ID, ORIGIN_ID are)"),
        ));
    }
    Ok(())
}

fn plan(
    key: &str,
    fields: BTreeMap<String, String>,
    raw_values: BTreeMap<String, RawValueMap>,
    raw_constants: BTreeMap<String, Value>,
    raw_stamp: RawStamp,
    files: Vec<String>,
) -> Result<FieldPlan, ConfigError> {
    // Which key first wrote each target field, to name both in a conflict.
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |target: &str, by: String| match written.get(target) {
        Some(first) => Err(invalid(
            by,
            format!("{target} is already written by {first}"),
        )),
        None => {
            written.insert(target.to_string(), by);
            Ok(())
        }
    };
    for (source, target) in &fields {
        let field_key = format!("{key}.fields.{source}");
        if !is_field_code(source) {
            return Err(invalid(field_key, format!("source {FIELD_CODE_RULE}")));
        }
        check_target(&field_key, target)?;
        claim(target, field_key)?;
    }
    let mut values = BTreeMap::new();
    for (target, raw) in raw_values {
        let value_key = format!("{key}.values.{target}");
        if !fields.values().any(|t| *t == target) {
            return Err(invalid(
                value_key,
                format!(
                    "{target} is not a target of {key}.fields, so it has no source value to map"
                ),
            ));
        }
        let by = match (raw.by, raw.map) {
            (RawBy::Id, Some(map)) if !map.is_empty() => {
                let mut ids = BTreeMap::new();
                for (from, Text(to)) in map {
                    if from.trim().is_empty() || to.trim().is_empty() {
                        return Err(invalid(
                            format!("{value_key}.map"),
                            "source and target values must not be empty",
                        ));
                    }
                    ids.insert(from, to);
                }
                MatchBy::Id(ids)
            }
            (RawBy::Id, _) => {
                return Err(invalid(
                    format!("{value_key}.map"),
                    "by = \"id\" needs a map of source value -> target value",
                ));
            }
            (RawBy::Label, None) => MatchBy::Label,
            (RawBy::Label, Some(_)) => {
                return Err(invalid(
                    format!("{value_key}.map"),
                    "by = \"label\" matches the labels on both portals and takes no map",
                ));
            }
        };
        let default = match raw.default {
            Some(Text(text)) if text.trim().is_empty() => {
                return Err(invalid(
                    format!("{value_key}.default"),
                    "must not be empty (leave the key out for no default)",
                ));
            }
            other => other.map(|Text(text)| text),
        };
        values.insert(target, ValueMap { by, default });
    }
    let mut constants = BTreeMap::new();
    for (target, value) in raw_constants {
        let constant_key = format!("{key}.constants.{target}");
        check_target(&constant_key, &target)?;
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_));
        let fits = match &value {
            Value::Array(items) => items.iter().all(scalar),
            one => scalar(one),
        };
        if !fits {
            return Err(invalid(
                constant_key,
                "expected text, a number or a list of them (write flags as \"Y\" / \"N\")",
            ));
        }
        claim(&target, constant_key)?;
        constants.insert(target, value);
    }
    let stamp = Stamp {
        source_portal_field: raw_stamp.source_portal_field,
        source_deal_field: raw_stamp.source_deal_field,
        transferred_at_field: raw_stamp.transferred_at_field,
    };
    for (name, target) in stamp.fields() {
        let stamp_key = format!("{key}.stamp.{name}");
        check_target(&stamp_key, target)?;
        claim(target, stamp_key)?;
    }
    let mut seen = BTreeSet::new();
    for (i, source) in files.iter().enumerate() {
        let file_key = format!("{key}.copy_files[{i}]");
        if !fields.contains_key(source) {
            return Err(invalid(
                file_key,
                "list a source field that is also in fields (which names its target field)",
            ));
        }
        if !seen.insert(source) {
            return Err(invalid(file_key, "listed twice"));
        }
        if values.contains_key(&fields[source]) {
            return Err(invalid(
                file_key,
                "a file field's files are uploaded, not mapped: remove its values entry",
            ));
        }
    }
    Ok(FieldPlan {
        fields,
        values,
        constants,
        stamp,
        files,
    })
}

#[cfg(test)]
mod tests;
