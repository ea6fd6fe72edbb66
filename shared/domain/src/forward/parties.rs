//! The deal's contact and company on the target portal (`copy_contacts`,
//! `copy_company`).
//!
//! IDs of contacts and companies belong to their portal, so "copy" cannot mean
//! carrying `CONTACT_ID` over. It means: the source deal's primary contact
//! (`CONTACT_ID`) and its company (`COMPANY_ID`) are found on the target by the same
//! [`Origin`] key as the deal (`ORIGINATOR_ID` = the source portal, `ORIGIN_ID` = the
//! source record's ID) or else created there once with the fields below, and the
//! target deal is bound to them. A copy is not updated afterwards: re-sending
//! `PHONE`/`EMAIL` rows without their target IDs would add them a second time, and the
//! target's people may have edited the record since. Nothing is matched by e-mail or
//! phone: a partner's customer is never merged into an unrelated target record.

use serde_json::{Map, Value};

use crate::forward::mapping::{Origin, multifield_for_add};

/// A record bound to a deal that forwarding can copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    Contact,
    Company,
}

impl Party {
    /// The fields copied: the name and the ways to reach the record. Anything holding
    /// IDs of the source portal (responsible user, type, source) is left out.
    pub fn copied_fields(self) -> &'static [&'static str] {
        match self {
            Party::Contact => &[
                "NAME",
                "SECOND_NAME",
                "LAST_NAME",
                "POST",
                "BIRTHDATE",
                "COMMENTS",
                "PHONE",
                "EMAIL",
                "WEB",
                "IM",
            ],
            Party::Company => &["TITLE", "COMMENTS", "PHONE", "EMAIL", "WEB", "IM"],
        }
    }

    /// The deal field of the source deal that names this party.
    pub fn deal_field(self) -> &'static str {
        match self {
            Party::Contact => "CONTACT_ID",
            Party::Company => "COMPANY_ID",
        }
    }

    /// The API name of the entity (`crm.<entity>.add`).
    pub fn entity(self) -> &'static str {
        match self {
            Party::Contact => "contact",
            Party::Company => "company",
        }
    }

    /// The ID of this party in a source deal (`crm.deal.get`), when it has one.
    pub fn source_id(self, deal: &Map<String, Value>) -> Option<u64> {
        let id = match deal.get(self.deal_field())? {
            Value::String(text) => text.parse().ok()?,
            Value::Number(number) => number.as_u64()?,
            _ => return None,
        };
        (id > 0).then_some(id)
    }

    /// The `fields` of `crm.<entity>.add` on the target for the source record (a
    /// `crm.<entity>.get` result) of the portal with `source_domain`.
    pub fn fields_for_target(
        self,
        source_domain: &str,
        source_id: u64,
        record: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut fields: Map<String, Value> = self
            .copied_fields()
            .iter()
            .filter_map(|&code| {
                let value = record.get(code).filter(|v| !v.is_null())?;
                let value = match value {
                    Value::Array(_) => multifield_for_add(value),
                    other => other.clone(),
                };
                Some((code.to_string(), value))
            })
            .collect();
        Origin::new(source_domain, source_id).write_to(&mut fields);
        fields
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_contact_copy_keeps_names_and_channels_without_row_ids_and_records_its_origin() {
        let contact = object(json!({
            "ID": "84", "NAME": "Anna", "LAST_NAME": "Berg", "SECOND_NAME": null,
            "ASSIGNED_BY_ID": "7", "TYPE_ID": "CLIENT", "SOURCE_ID": "WEB",
            "PHONE": [{"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"}],
            "EMAIL": [{"ID": "157", "VALUE_TYPE": "HOME", "VALUE": "anna@example.com", "TYPE_ID": "EMAIL"}],
        }));
        let fields = Party::Contact.fields_for_target("Partner.Bitrix24.com", 84, &contact);
        assert_eq!(
            Value::Object(fields),
            json!({
                "NAME": "Anna", "LAST_NAME": "Berg",
                "PHONE": [{"VALUE_TYPE": "WORK", "VALUE": "+13333333555"}],
                "EMAIL": [{"VALUE_TYPE": "HOME", "VALUE": "anna@example.com"}],
                "ORIGINATOR_ID": "b24sync:partner.bitrix24.com", "ORIGIN_ID": "84",
            })
        );
    }

    #[test]
    fn a_company_copy_keeps_its_title_and_channels() {
        let company = object(json!({"ID": "9", "TITLE": "Acme", "INDUSTRY": "IT",
            "WEB": [{"ID": "3", "VALUE_TYPE": "WORK", "VALUE": "acme.example"}]}));
        let fields = Party::Company.fields_for_target("partner.bitrix24.com", 9, &company);
        assert_eq!(fields["TITLE"], "Acme");
        assert_eq!(
            fields["WEB"],
            json!([{"VALUE_TYPE": "WORK", "VALUE": "acme.example"}])
        );
        assert!(!fields.contains_key("INDUSTRY") && !fields.contains_key("ID"));
        assert_eq!(fields["ORIGIN_ID"], "9");
    }

    #[test]
    fn the_source_id_comes_from_the_deal_and_zero_or_empty_means_none() {
        let deal = object(json!({"CONTACT_ID": "84", "COMPANY_ID": "0"}));
        assert_eq!(Party::Contact.source_id(&deal), Some(84));
        assert_eq!(Party::Company.source_id(&deal), None);
        let deal = object(json!({"CONTACT_ID": null, "COMPANY_ID": 9}));
        assert_eq!(Party::Contact.source_id(&deal), None);
        assert_eq!(Party::Company.source_id(&deal), Some(9));
        assert_eq!(Party::Company.entity(), "company");
    }
}
