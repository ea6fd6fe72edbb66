//! The CRM entities this product mirrors and the Bitrix24 method names that serve them:
//! the four classic entities (`crm.deal.*` and siblings, or `crm.item.*` with their
//! `entityTypeId`) and smart processes (custom CRM types, `crm.item.*` only).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CRM entity type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Deal,
    Contact,
    Lead,
    Company,
    /// A smart process by its `entityTypeId` (at least [`Entity::FIRST_SMART_TYPE`]).
    Smart(u32),
}

impl Entity {
    /// The classic entities, which also have their own `crm.<entity>.*` methods.
    pub const ALL: [Entity; 4] = [Entity::Deal, Entity::Contact, Entity::Lead, Entity::Company];

    /// The lowest `entityTypeId` Bitrix24 gives a smart process.
    pub const FIRST_SMART_TYPE: u32 = 128;

    /// The highest one this product accepts (Bitrix24 counts up from 128 in steps of
    /// a few; a bound keeps names and tables finite).
    pub const LAST_SMART_TYPE: u32 = 1_000_000;

    /// A smart process, if `entity_type_id` can be one.
    pub fn smart(entity_type_id: u32) -> Option<Entity> {
        (Self::FIRST_SMART_TYPE..=Self::LAST_SMART_TYPE)
            .contains(&entity_type_id)
            .then_some(Entity::Smart(entity_type_id))
    }

    /// The entity of an `entityTypeId`: 1 lead, 2 deal, 3 contact, 4 company, a smart
    /// process from 128 on; `None` for other CRM types (quotes, invoices...).
    pub fn from_type_id(entity_type_id: u32) -> Option<Entity> {
        match entity_type_id {
            1 => Some(Entity::Lead),
            2 => Some(Entity::Deal),
            3 => Some(Entity::Contact),
            4 => Some(Entity::Company),
            other => Entity::smart(other),
        }
    }

    /// The `entityTypeId` of `crm.item.*`.
    pub fn type_id(self) -> u32 {
        match self {
            Entity::Lead => 1,
            Entity::Deal => 2,
            Entity::Contact => 3,
            Entity::Company => 4,
            Entity::Smart(id) => id,
        }
    }

    /// Whether the entity has classic `crm.<entity>.*` methods.
    pub fn is_classic(self) -> bool {
        !matches!(self, Entity::Smart(_))
    }

    /// `deal`, `contact`, `lead`, `company`, or `sp_<entityTypeId>` for a smart process:
    /// the name in configuration, messages and table names.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Deal => "deal",
            Entity::Contact => "contact",
            Entity::Lead => "lead",
            Entity::Company => "company",
            Entity::Smart(id) => smart_name(id),
        }
    }

    /// The classic method `crm.<entity>.<op>` (`Entity::Deal.method("list")` is
    /// `crm.deal.list`); a smart process's is `crm.item.<op>`, which also needs its
    /// `entityTypeId` (the client's entity API adds it).
    pub fn method(self, op: &str) -> String {
        match self {
            Entity::Smart(_) => format!("crm.item.{op}"),
            classic => format!("crm.{}.{op}", classic.as_str()),
        }
    }

    /// Multi-value communication fields. `select: ["*"]` leaves them out on a real
    /// portal, so they must be named explicitly; deals and smart processes have none.
    pub fn multifields(self) -> &'static [&'static str] {
        match self {
            Entity::Deal | Entity::Smart(_) => &[],
            Entity::Contact | Entity::Lead | Entity::Company => &["PHONE", "EMAIL", "WEB", "IM"],
        }
    }
}

/// `sp_<id>`, made once per smart process and kept for the process's life: `as_str`
/// hands out `&'static str` everywhere (table names, SQL parameters), and a portal has
/// a handful of smart processes.
fn smart_name(id: u32) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<u32, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    names
        .entry(id)
        .or_insert_with(|| Box::leak(format!("sp_{id}").into_boxed_str()))
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown entity {0:?}: expected one of deal, contact, lead, company, or sp_<entityTypeId> for a smart process (sp_128 and above)"
)]
pub struct UnknownEntity(pub String);

impl FromStr for Entity {
    type Err = UnknownEntity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        if let Some(classic) = Entity::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(name))
        {
            return Ok(classic);
        }
        name.get(..3)
            .filter(|prefix| prefix.eq_ignore_ascii_case("sp_"))
            .and_then(|_| name[3..].parse::<u32>().ok())
            .filter(|_| name[3..].bytes().all(|b| b.is_ascii_digit()))
            .and_then(Entity::smart)
            .ok_or_else(|| UnknownEntity(s.to_string()))
    }
}

impl Serialize for Entity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Entity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively_and_rejects_others() {
        assert_eq!("Deal".parse::<Entity>(), Ok(Entity::Deal));
        assert_eq!(" company ".parse::<Entity>(), Ok(Entity::Company));
        assert_eq!("sp_1038".parse::<Entity>(), Ok(Entity::Smart(1038)));
        assert_eq!("SP_128".parse::<Entity>(), Ok(Entity::Smart(128)));
        for bad in [
            "invoice",
            "sp_127",
            "sp_",
            "sp_12a",
            "sp_+200",
            "sp_99999999999",
        ] {
            let err = bad.parse::<Entity>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert!(err.to_string().contains("deal, contact, lead, company"));
        }
    }

    #[test]
    fn builds_method_names_and_type_ids() {
        assert_eq!(Entity::Lead.method("list"), "crm.lead.list");
        assert_eq!(Entity::Smart(1038).method("list"), "crm.item.list");
        assert_eq!(Entity::Deal.multifields(), &[] as &[&str]);
        assert!(Entity::Contact.multifields().contains(&"PHONE"));
        for entity in Entity::ALL {
            assert_eq!(Entity::from_type_id(entity.type_id()), Some(entity));
            assert!(entity.is_classic());
        }
        assert_eq!(Entity::from_type_id(1038), Some(Entity::Smart(1038)));
        assert_eq!(
            Entity::from_type_id(31),
            None,
            "smart invoices are not mirrored"
        );
        assert!(!Entity::Smart(1038).is_classic());
    }

    #[test]
    fn names_round_trip_through_text_and_json() {
        for entity in [Entity::Deal, Entity::Smart(1038), Entity::Smart(130)] {
            assert_eq!(entity.to_string().parse::<Entity>(), Ok(entity));
            let json = serde_json::to_string(&entity).unwrap();
            assert_eq!(serde_json::from_str::<Entity>(&json).unwrap(), entity);
        }
        assert_eq!(serde_json::to_string(&Entity::Deal).unwrap(), "\"deal\"");
        assert_eq!(Entity::Smart(1038).as_str(), "sp_1038");
        // The same name every time, made once.
        assert!(std::ptr::eq(
            Entity::Smart(1038).as_str(),
            Entity::Smart(1038).as_str()
        ));
        assert!(serde_json::from_str::<Entity>("\"invoice\"").is_err());
    }
}
