//! A forwarding route as plain data: which portal's deals go where and how their
//! fields are carried over. The configuration crate validates the document and
//! converts its routes into these; the rules both sides share live here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One route: a robot on the `source` portal hands its deal to the `target` portal.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardRoute {
    /// The route's configured name (the key under `routes.`).
    pub name: String,
    /// The configured name of the portal the robot runs on.
    pub source: String,
    /// The configured name of the portal that receives the deal.
    pub target: String,
    /// The secret the built-in Webhook robot's URL carries; `None` when only an
    /// application robot (authenticated by the application token) may call.
    pub secret: Option<RouteSecret>,
    /// The application robot's `CODE` (`bizproc.robot.add`); it names the route in
    /// the robot's calls.
    pub robot_code: String,
    pub plan: FieldPlan,
    pub copy_products: bool,
    /// Copy the deal's primary contact (`CONTACT_ID`) to the target: see
    /// [`crate::forward::parties`].
    pub copy_contacts: bool,
    /// Copy the deal's company (`COMPANY_ID`) to the target.
    pub copy_company: bool,
    pub reply: ReplyPlan,
}

/// A route's shared secret. `Debug` hides it; [`RouteSecret::expose`] gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteSecret(String);

impl RouteSecret {
    pub fn new(secret: String) -> RouteSecret {
        RouteSecret(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RouteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteSecret(***)")
    }
}

/// How the target deal's fields come from the source deal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldPlan {
    /// Source field code -> target field code.
    pub fields: BTreeMap<String, String>,
    /// Per target field (a target of `fields`): how its values translate.
    pub values: BTreeMap<String, ValueMap>,
    /// Target field -> the value it gets on every forward.
    pub constants: BTreeMap<String, Value>,
    pub stamp: Stamp,
    /// Source file fields (each also a key of `fields`, which names the target field)
    /// whose files are uploaded to the target with `fileData`.
    pub files: Vec<String>,
}

impl FieldPlan {
    /// Every target field the plan writes, with the route key that names it.
    pub fn written_fields(&self) -> impl Iterator<Item = (&str, String)> {
        let mapped = self
            .fields
            .iter()
            .map(|(source, target)| (target.as_str(), format!("fields.{source}")));
        let constants = self
            .constants
            .keys()
            .map(|target| (target.as_str(), format!("constants.{target}")));
        let stamps = self
            .stamp
            .fields()
            .map(|(key, target)| (target, format!("stamp.{key}")));
        mapped.chain(constants).chain(stamps)
    }

    /// `(source, target)` of every file field to upload.
    pub fn file_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().filter_map(|source| {
            self.fields
                .get(source)
                .map(|target| (source.as_str(), target.as_str()))
        })
    }
}

/// How the values of one target field translate from the source portal's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueMap {
    pub by: MatchBy,
    /// The target value for a source value the map does not cover.
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchBy {
    /// Source value (an ID such as `C3:NEW` or `79`) -> target value.
    Id(BTreeMap<String, String>),
    /// The target item whose label equals the source item's label (trimmed, without
    /// regard to case), looked up in both portals' field metadata or status lists.
    Label,
}

/// Target fields that receive where the deal came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Receives the source portal's configured name.
    pub source_portal_field: Option<String>,
    /// Receives the source deal's ID.
    pub source_deal_field: Option<String>,
    /// Receives the time of the forward (`YYYY-MM-DDThh:mm:ss+00:00`).
    pub transferred_at_field: Option<String>,
}

impl Stamp {
    /// `(key, target field)` of each stamp that is set.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("source_portal_field", &self.source_portal_field),
            ("source_deal_field", &self.source_deal_field),
            ("transferred_at_field", &self.transferred_at_field),
        ]
        .into_iter()
        .filter_map(|(key, field)| field.as_deref().map(|field| (key, field)))
    }
}

/// What the robot gets back through `bizproc.event.send`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyPlan {
    /// The application robot is registered to wait (`USE_SUBSCRIPTION` `Y`) and the
    /// forwarder answers it.
    pub wait_for_reply: bool,
    /// Return property name (`RETURN_PROPERTIES` key) -> what it receives.
    pub return_values: BTreeMap<String, ReturnValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnValue {
    /// The target deal's ID.
    TargetDealId,
    /// The target deal's page: `https://TARGET/crm/deal/details/ID/`.
    TargetDealUrl,
}

impl ReplyPlan {
    /// The `RETURN_VALUES` of `bizproc.event.send` for a forwarded deal.
    pub fn return_values(
        &self,
        target_deal_id: u64,
        target_deal_url: &str,
    ) -> serde_json::Map<String, Value> {
        self.return_values
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ReturnValue::TargetDealId => Value::from(target_deal_id.to_string()),
                    ReturnValue::TargetDealUrl => Value::from(target_deal_url),
                };
                (name.clone(), value)
            })
            .collect()
    }
}

/// The longest field code: user field names are at most 50 characters with `UF_CRM_`.
pub const MAX_FIELD_CODE_LEN: usize = 50;

/// A deal field code as `crm.deal.fields` names it: an upper-case letter, then
/// upper-case letters, digits and `_` (`TITLE`, `UF_CRM_1721244482250`, `PARENT_ID_1220`).
pub fn is_field_code(code: &str) -> bool {
    code.len() <= MAX_FIELD_CODE_LEN
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Fields the forwarder itself owns on the target deal: a route may not write them.
pub const RESERVED_TARGET_FIELDS: [&str; 3] = ["ID", "ORIGINATOR_ID", "ORIGIN_ID"];

/// A robot `CODE` as `bizproc.robot.add` accepts it: `a-z A-Z 0-9 . - _`.
pub fn is_robot_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A robot property key (`PROPERTIES` / `RETURN_PROPERTIES`): a letter, then letters,
/// digits and `_`.
pub fn is_property_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
