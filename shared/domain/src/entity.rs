//! The CRM entities this product mirrors and the Bitrix24 method names that serve them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A CRM entity type reached through the classic `crm.<entity>.*` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Deal,
    Contact,
    Lead,
    Company,
}

impl Entity {
    pub const ALL: [Entity; 4] = [Entity::Deal, Entity::Contact, Entity::Lead, Entity::Company];

    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Deal => "deal",
            Entity::Contact => "contact",
            Entity::Lead => "lead",
            Entity::Company => "company",
        }
    }

    /// `crm.<entity>.<op>`, for example `Entity::Deal.method("list")` is `crm.deal.list`.
    pub fn method(self, op: &str) -> String {
        format!("crm.{}.{op}", self.as_str())
    }

    /// Multi-value communication fields. `select: ["*"]` leaves them out on a real
    /// portal, so they must be named explicitly; deals have none.
    pub fn multifields(self) -> &'static [&'static str] {
        match self {
            Entity::Deal => &[],
            Entity::Contact | Entity::Lead | Entity::Company => &["PHONE", "EMAIL", "WEB", "IM"],
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown entity {0:?}: expected one of deal, contact, lead, company")]
pub struct UnknownEntity(pub String);

impl FromStr for Entity {
    type Err = UnknownEntity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Entity::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownEntity(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively_and_rejects_others() {
        assert_eq!("Deal".parse::<Entity>(), Ok(Entity::Deal));
        assert_eq!(" company ".parse::<Entity>(), Ok(Entity::Company));
        let err = "invoice".parse::<Entity>().unwrap_err();
        assert!(err.to_string().contains("invoice"));
        assert!(err.to_string().contains("deal, contact, lead, company"));
    }

    #[test]
    fn builds_method_names() {
        assert_eq!(Entity::Lead.method("list"), "crm.lead.list");
        assert_eq!(Entity::Deal.multifields(), &[] as &[&str]);
        assert!(Entity::Contact.multifields().contains(&"PHONE"));
    }
}
