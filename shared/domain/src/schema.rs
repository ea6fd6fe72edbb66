//! Field metadata from `crm.<entity>.fields` and the mirror columns it decides.
//!
//! Column names come from portal metadata, which an attacker may control (a user
//! field named with a quote or a semicolon), so every name is validated here and the
//! store additionally quotes it.

use serde_json::Value;

/// Columns every mirror table has, in this order (the cross-portal view has them
/// all); no Bitrix24 field may take their names.
pub const SYSTEM_COLUMNS: [&str; 6] = [
    "portal",
    "id",
    "raw",
    "date_modify",
    "synced_at",
    "deleted_at",
];

/// Bitrix24 fields stored in system columns rather than columns of their own.
pub const SYSTEM_FIELDS: [&str; 2] = ["ID", "DATE_MODIFY"];

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Suffix of the text column that keeps the currency of a money user field.
const CURRENCY_SUFFIX: &str = "_currency";

/// One item of an enumeration (list) user field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumItem {
    pub id: String,
    pub value: String,
}

/// One field descriptor from `crm.<entity>.fields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMeta {
    /// The key in rows: `TITLE`, `UF_CRM_1721244482250`.
    pub code: String,
    pub title: String,
    /// The human label of a user field (`listLabel`, else `formLabel`, else `filterLabel`);
    /// for user fields `title` is just the code again.
    pub label: Option<String>,
    pub bitrix_type: String,
    pub is_multiple: bool,
    /// True for user fields (`UF_CRM_*`).
    pub is_dynamic: bool,
    pub is_read_only: bool,
    pub items: Vec<EnumItem>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    #[error("field metadata must be a JSON object keyed by field code, got {0}")]
    NotAnObject(&'static str),
    #[error("field {field:?}: {reason}")]
    BadDescriptor { field: String, reason: String },
    #[error("field {field:?} cannot be a column: {reason}")]
    BadColumnName { field: String, reason: &'static str },
}

/// Parses the `result` object of `crm.<entity>.fields`.
pub fn parse_fields(result: &Value) -> Result<Vec<FieldMeta>, SchemaError> {
    let fields = result
        .as_object()
        .ok_or(SchemaError::NotAnObject(json_kind(result)))?;
    fields
        .iter()
        .map(|(code, descriptor)| parse_field(code, descriptor))
        .collect()
}

fn parse_field(code: &str, descriptor: &Value) -> Result<FieldMeta, SchemaError> {
    let bad = |reason: String| SchemaError::BadDescriptor {
        field: code.to_string(),
        reason,
    };
    let d = descriptor.as_object().ok_or_else(|| {
        bad(format!(
            "descriptor must be an object, got {}",
            json_kind(descriptor)
        ))
    })?;
    let bitrix_type = match d.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return Err(bad("descriptor has no string `type`".into())),
    };
    let flag = |key: &str| -> Result<bool, SchemaError> {
        match d.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => parse_flag(v).ok_or_else(|| bad(format!("`{key}` is not a boolean"))),
        }
    };
    let items = match d.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(parse_item)
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        Some(other) => {
            return Err(bad(format!(
                "`items` must be an array, got {}",
                json_kind(other)
            )));
        }
    };
    Ok(FieldMeta {
        code: code.to_string(),
        title: label_text(d.get("title")).unwrap_or_else(|| code.to_string()),
        label: ["listLabel", "formLabel", "filterLabel"]
            .iter()
            .find_map(|key| label_text(d.get(*key))),
        bitrix_type,
        is_multiple: flag("isMultiple")?,
        is_dynamic: flag("isDynamic")?,
        is_read_only: flag("isReadOnly")?,
        items,
    })
}

fn parse_flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "Y" | "y" | "1" | "true" => Some(true),
            "N" | "n" | "0" | "false" | "" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn parse_item(item: &Value) -> Result<EnumItem, String> {
    let scalar = |key: &str| match item.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match (scalar("ID"), scalar("VALUE")) {
        (Some(id), Some(value)) => Ok(EnumItem { id, value }),
        _ => Err("every enumeration item needs a scalar `ID` and `VALUE`".into()),
    }
}

/// A label is a string, or (in some methods) an object of per-language strings.
fn label_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Object(by_language) => by_language
            .get("en")
            .into_iter()
            .chain(by_language.values())
            .find_map(|v| {
                v.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
            }),
        _ => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The PostgreSQL type of a mirror column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    BigInt,
    Numeric,
    Boolean,
    Date,
    Timestamptz,
    Text,
    Jsonb,
}

impl ColumnType {
    pub const ALL: [ColumnType; 7] = [
        ColumnType::BigInt,
        ColumnType::Numeric,
        ColumnType::Boolean,
        ColumnType::Date,
        ColumnType::Timestamptz,
        ColumnType::Text,
        ColumnType::Jsonb,
    ];

    /// The type as written in DDL and as `format_type()` reports it.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::BigInt => "bigint",
            ColumnType::Numeric => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamptz => "timestamp with time zone",
            ColumnType::Text => "text",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The inverse of [`ColumnType::sql`]; `None` for any other PostgreSQL type.
    pub fn from_sql(name: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.sql() == name)
    }
}

/// The column type a field's values are stored as.
pub fn column_type(field: &FieldMeta) -> ColumnType {
    if field.is_multiple {
        return ColumnType::Jsonb;
    }
    match field.bitrix_type.as_str() {
        "crm_multifield" | "file" => ColumnType::Jsonb,
        "integer" | "user" | "employee" | "crm_company" | "crm_contact" | "crm_lead"
        | "crm_deal" | "crm_quote" | "crm_category" | "crm_entity" | "enumeration"
        | "iblock_element" | "iblock_section" => ColumnType::BigInt,
        "double" | "money" => ColumnType::Numeric,
        "char" | "boolean" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        "datetime" => ColumnType::Timestamptz,
        _ => ColumnType::Text,
    }
}

/// Checks that `name` is a lower-case identifier safe in any SQL position: `[a-z0-9_]`,
/// starting with a letter, at most 63 bytes (longer names PostgreSQL would truncate).
pub fn check_identifier(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("only lower-case letters, digits and underscores are allowed");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("it must start with a letter");
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err("it is longer than 63 bytes");
    }
    Ok(())
}

/// The mirror column name for a field code: the code lower-cased, which must pass
/// [`check_identifier`] and not be a system column. Anything else is rejected rather
/// than rewritten, so two codes can never silently share a column.
pub fn column_name(code: &str) -> Result<String, SchemaError> {
    let reject = |reason| SchemaError::BadColumnName {
        field: code.to_string(),
        reason,
    };
    let name = code.to_ascii_lowercase();
    check_identifier(&name).map_err(reject)?;
    if SYSTEM_COLUMNS.contains(&name.as_str()) {
        return Err(reject("it is a reserved system column"));
    }
    Ok(name)
}

/// True for the fields kept in the system columns `id` and `date_modify`.
pub fn is_system_field(code: &str) -> bool {
    SYSTEM_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(code))
}

/// Which part of a field's value a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValuePart {
    Whole,
    /// The amount of a money user field `"300|RUB"`.
    MoneyAmount,
    /// The currency of a money user field `"300|RUB"`.
    MoneyCurrency,
    /// Every element of a multiple date field as its calendar date, in a jsonb array:
    /// the portal sends each as a datetime whose local date can be a day off.
    Dates,
}

/// One column derived from a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub column_type: ColumnType,
    pub part: ValuePart,
}

/// The columns a (non-system) field is stored in: one, or two for a single money
/// user field (the amount as numeric plus `<column>_currency` as text). A multiple
/// date field's jsonb array holds calendar dates.
pub fn columns_for(field: &FieldMeta) -> Result<Vec<ColumnSpec>, SchemaError> {
    let name = column_name(&field.code)?;
    let column_type = column_type(field);
    if field.bitrix_type == "money" && !field.is_multiple {
        let currency = column_name(&format!("{}{}", field.code, CURRENCY_SUFFIX))?;
        return Ok(vec![
            ColumnSpec {
                name,
                column_type,
                part: ValuePart::MoneyAmount,
            },
            ColumnSpec {
                name: currency,
                column_type: ColumnType::Text,
                part: ValuePart::MoneyCurrency,
            },
        ]);
    }
    let part = if field.bitrix_type == "date" && field.is_multiple {
        ValuePart::Dates
    } else {
        ValuePart::Whole
    };
    Ok(vec![ColumnSpec {
        name,
        column_type,
        part,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(code: &str, bitrix_type: &str, is_multiple: bool) -> FieldMeta {
        FieldMeta {
            code: code.into(),
            title: code.into(),
            label: None,
            bitrix_type: bitrix_type.into(),
            is_multiple,
            is_dynamic: code.starts_with("UF_"),
            is_read_only: false,
            items: vec![],
        }
    }

    #[test]
    fn parses_standard_and_user_field_descriptors() {
        let result = json!({
            "ID": {"type": "integer", "isRequired": false, "isReadOnly": true, "isImmutable": false,
                   "isMultiple": false, "isDynamic": false, "title": "ID"},
            "PHONE": {"type": "crm_multifield", "isReadOnly": false, "isMultiple": true, "isDynamic": false, "title": "Phone"},
            "UF_CRM_44_1721812814433": {"type": "enumeration", "isRequired": false, "isReadOnly": false,
                "isImmutable": false, "isMultiple": false, "isDynamic": true,
                "items": [{"ID": "79", "VALUE": "List item #1"}, {"ID": 80, "VALUE": "List item #2"}],
                "title": "UF_CRM_44_1721812814433", "listLabel": "Custom field (list)",
                "formLabel": "Custom field (list)", "filterLabel": "Custom field (list)"},
            "UF_CRM_LANG": {"type": "string", "isDynamic": true, "title": "UF_CRM_LANG",
                "listLabel": {"de": "Feld", "en": "Field"}}
        });
        let fields = parse_fields(&result).unwrap();
        assert_eq!(
            fields.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(),
            ["ID", "PHONE", "UF_CRM_44_1721812814433", "UF_CRM_LANG"]
        );
        assert!(fields[0].is_read_only && !fields[0].is_multiple);
        assert!(fields[1].is_multiple);
        let list = &fields[2];
        assert_eq!(list.label.as_deref(), Some("Custom field (list)"));
        assert!(list.is_dynamic);
        assert_eq!(
            list.items,
            vec![
                EnumItem {
                    id: "79".into(),
                    value: "List item #1".into()
                },
                EnumItem {
                    id: "80".into(),
                    value: "List item #2".into()
                },
            ]
        );
        assert_eq!(fields[3].label.as_deref(), Some("Field"));
    }

    #[test]
    fn parses_the_standard_fields_a_real_portal_adds() {
        // As crm.deal.fields / crm.contact.fields / crm.company.fields describe them:
        // CONTACT_IDS is never returned by list or get, PHOTO and LOGO are files, and
        // some descriptors carry `isDeprecated`.
        let result = json!({
            "CONTACT_ID": {"type": "crm_contact", "isRequired": false, "isReadOnly": false,
                "isImmutable": false, "isMultiple": false, "isDynamic": false,
                "isDeprecated": true, "title": "Contact"},
            "CONTACT_IDS": {"type": "crm_contact", "isRequired": false, "isReadOnly": false,
                "isImmutable": false, "isMultiple": true, "isDynamic": false, "title": "Contacts"},
            "PHOTO": {"type": "file", "isRequired": false, "isReadOnly": false,
                "isImmutable": false, "isMultiple": false, "isDynamic": false, "title": "Photo"},
            "LOGO": {"type": "file", "isMultiple": false, "isDynamic": false,
                "isDeprecated": "N", "title": "Logo"},
            "ADDRESS_CITY": {"type": "string", "isMultiple": false, "title": "City"},
            "LINK": {"type": "crm_multifield", "isMultiple": true, "title": "Link"},
            "BIRTHDATE": {"type": "date", "isMultiple": false, "title": "Date of birth"}
        });
        let fields = parse_fields(&result).unwrap();
        let by_code = |code: &str| fields.iter().find(|f| f.code == code).unwrap();
        let column = |code: &str| columns_for(by_code(code)).unwrap();
        assert_eq!(by_code("CONTACT_ID").bitrix_type, "crm_contact");
        assert_eq!(column("CONTACT_ID")[0].column_type, ColumnType::BigInt);
        assert!(by_code("CONTACT_IDS").is_multiple);
        assert_eq!(column("CONTACT_IDS")[0].column_type, ColumnType::Jsonb);
        for file in ["PHOTO", "LOGO"] {
            assert_eq!(
                column(file),
                vec![ColumnSpec {
                    name: file.to_ascii_lowercase(),
                    column_type: ColumnType::Jsonb,
                    part: ValuePart::Whole
                }]
            );
        }
        assert_eq!(column("ADDRESS_CITY")[0].column_type, ColumnType::Text);
        assert_eq!(column("LINK")[0].column_type, ColumnType::Jsonb);
        assert_eq!(column("BIRTHDATE")[0].column_type, ColumnType::Date);
    }

    #[test]
    fn multiple_date_fields_hold_calendar_dates() {
        let many = field("UF_CRM_DATES", "date", true);
        assert_eq!(
            columns_for(&many).unwrap(),
            vec![ColumnSpec {
                name: "uf_crm_dates".into(),
                column_type: ColumnType::Jsonb,
                part: ValuePart::Dates
            }]
        );
        for (bitrix_type, multiple) in [("date", false), ("datetime", true), ("string", true)] {
            let spec = &columns_for(&field("UF_CRM_F", bitrix_type, multiple)).unwrap()[0];
            assert_eq!(spec.part, ValuePart::Whole, "{bitrix_type} {multiple}");
        }
    }

    #[test]
    fn rejects_malformed_metadata_naming_the_field() {
        assert_eq!(
            parse_fields(&json!([])),
            Err(SchemaError::NotAnObject("an array"))
        );
        let err = parse_fields(&json!({"TITLE": {"title": "Name"}})).unwrap_err();
        assert!(
            err.to_string().contains("TITLE") && err.to_string().contains("type"),
            "{err}"
        );
        let err =
            parse_fields(&json!({"UF_X": {"type": "enumeration", "items": [{"VALUE": "a"}]}}))
                .unwrap_err();
        assert!(err.to_string().contains("UF_X"), "{err}");
        let err =
            parse_fields(&json!({"UF_Y": {"type": "string", "isMultiple": "maybe"}})).unwrap_err();
        assert!(err.to_string().contains("isMultiple"), "{err}");
        let err = parse_fields(&json!({"UF_Z": 5})).unwrap_err();
        assert!(err.to_string().contains("UF_Z"), "{err}");
    }

    #[test]
    fn maps_bitrix_types_to_column_types() {
        let cases = [
            ("integer", ColumnType::BigInt),
            ("user", ColumnType::BigInt),
            ("employee", ColumnType::BigInt),
            ("crm_company", ColumnType::BigInt),
            ("crm_category", ColumnType::BigInt),
            ("enumeration", ColumnType::BigInt),
            ("double", ColumnType::Numeric),
            ("money", ColumnType::Numeric),
            ("char", ColumnType::Boolean),
            ("boolean", ColumnType::Boolean),
            ("date", ColumnType::Date),
            ("datetime", ColumnType::Timestamptz),
            ("crm_multifield", ColumnType::Jsonb),
            ("file", ColumnType::Jsonb),
            ("string", ColumnType::Text),
            ("crm_status", ColumnType::Text),
            ("crm_currency", ColumnType::Text),
            ("crm", ColumnType::Text),
            ("some_app_type", ColumnType::Text),
        ];
        for (bitrix_type, expected) in cases {
            assert_eq!(
                column_type(&field("F", bitrix_type, false)),
                expected,
                "{bitrix_type}"
            );
        }
        assert_eq!(
            column_type(&field("CONTACT_IDS", "crm_contact", true)),
            ColumnType::Jsonb
        );
        assert_eq!(
            column_type(&field("UF_CRM_TAGS", "string", true)),
            ColumnType::Jsonb
        );
        for t in ColumnType::ALL {
            assert_eq!(ColumnType::from_sql(t.sql()), Some(t));
        }
        assert_eq!(ColumnType::from_sql("character varying"), None);
    }

    #[test]
    fn column_names_are_lowercase_identifiers_or_rejected() {
        assert_eq!(column_name("TITLE").unwrap(), "title");
        assert_eq!(
            column_name("UF_CRM_1721244482250").unwrap(),
            "uf_crm_1721244482250"
        );
        let hostile = [
            "",
            "UF_CRM_X\"; DROP TABLE deal; --",
            "UF CRM",
            "UF-CRM",
            "1ABC",
            "_ABC",
            "UF_CRM_ÄÖ",
            "uf_crm_x\0",
            "ID",
            "RAW",
            "deleted_at",
            "Portal",
        ];
        for code in hostile {
            let err = column_name(code).unwrap_err();
            assert!(
                matches!(&err, SchemaError::BadColumnName { field, .. } if field == code),
                "{code:?}"
            );
        }
        assert!(column_name(&"A".repeat(63)).is_ok());
        assert!(column_name(&"A".repeat(64)).is_err());
    }

    #[test]
    fn money_user_fields_get_a_currency_column() {
        let money = field("UF_CRM_BUDGET", "money", false);
        assert_eq!(
            columns_for(&money).unwrap(),
            vec![
                ColumnSpec {
                    name: "uf_crm_budget".into(),
                    column_type: ColumnType::Numeric,
                    part: ValuePart::MoneyAmount
                },
                ColumnSpec {
                    name: "uf_crm_budget_currency".into(),
                    column_type: ColumnType::Text,
                    part: ValuePart::MoneyCurrency
                },
            ]
        );
        let many = field("UF_CRM_BUDGETS", "money", true);
        assert_eq!(
            columns_for(&many).unwrap(),
            vec![ColumnSpec {
                name: "uf_crm_budgets".into(),
                column_type: ColumnType::Jsonb,
                part: ValuePart::Whole
            }]
        );
        // The companion name must fit in an identifier too.
        assert!(columns_for(&field(&format!("U{}", "X".repeat(60)), "money", false)).is_err());
    }

    #[test]
    fn recognises_system_fields() {
        assert!(is_system_field("ID") && is_system_field("DATE_MODIFY"));
        assert!(!is_system_field("DATE_CREATE"));
    }
}
