//! Bitrix24 JSON values -> the text PostgreSQL parses for a mirror column.
//!
//! The classic `crm.*` methods send almost everything as strings (`"OPPORTUNITY":
//! "1000000.00"`, `"OPENED": "Y"`), `crm.item.*` sends typed JSON; both are accepted.
//! Errors describe what was wrong without repeating the value, so they can be logged.

use std::borrow::Cow;

use chrono::DateTime;
use serde_json::{Map, Value};

use crate::schema::{ColumnType, ValuePart};

/// Why a value does not fit its column. Carries no part of the value itself.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("expected {expected}, got {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("not a decimal number")]
    NotANumber,
    #[error("not an integer within the 64-bit range")]
    NotAnInteger,
    #[error("not a Y/N, 1/0 or true/false flag")]
    NotAFlag,
    #[error("not an ISO-8601 date (YYYY-MM-DD) or datetime with offset")]
    NotADate,
    #[error("not an ISO-8601 datetime with offset (YYYY-MM-DDThh:mm:ss+hh:mm)")]
    NotADatetime,
}

/// Converts a value to the text PostgreSQL parses for `column_type`; `None` is NULL.
///
/// `null` is NULL for every type, and so is `""` for every type but text. NUL
/// characters, which PostgreSQL cannot store in text or jsonb, become U+FFFD.
pub fn to_copy_text(column_type: ColumnType, value: &Value) -> Result<Option<String>, ValueError> {
    if value.is_null() || (column_type != ColumnType::Text && is_empty(value)) {
        return Ok(None);
    }
    match column_type {
        ColumnType::BigInt => bigint(value).map(Some),
        ColumnType::Numeric => numeric(value).map(Some),
        ColumnType::Boolean => boolean(value).map(Some),
        ColumnType::Date => date(value).map(Some),
        ColumnType::Timestamptz => timestamptz(value).map(Some),
        ColumnType::Text => Ok(Some(text(value))),
        ColumnType::Jsonb => Ok(Some(json_text(value))),
    }
}

/// Converts the `part` of a value held by one column (see [`crate::schema::columns_for`]).
/// A money value without `|` is an amount in an unknown currency.
pub fn column_text(
    part: ValuePart,
    column_type: ColumnType,
    value: &Value,
) -> Result<Option<String>, ValueError> {
    let pick_amount = match part {
        ValuePart::Whole => return to_copy_text(column_type, value),
        ValuePart::Dates if is_empty(value) => return Ok(None),
        ValuePart::Dates => return date_list(value),
        ValuePart::MoneyAmount => true,
        ValuePart::MoneyCurrency => false,
    };
    let money = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(ValueError::WrongKind {
                expected: "a money string",
                found: kind(other),
            });
        }
    };
    let (amount, currency) = match money.split_once('|') {
        Some((amount, currency)) => (amount, Some(currency)),
        None => (money.as_str(), None),
    };
    match (pick_amount, currency) {
        (true, _) => to_copy_text(column_type, &Value::String(amount.trim().to_string())),
        (false, Some(currency)) if !currency.trim().is_empty() => {
            to_copy_text(column_type, &Value::String(currency.trim().to_string()))
        }
        (false, _) => Ok(None),
    }
}

/// Replaces NUL characters in every string (and key) of a JSON value, borrowing when
/// there are none: PostgreSQL's jsonb rejects `\u0000`.
pub fn without_nul(value: &Value) -> Cow<'_, Value> {
    if has_nul(value) {
        Cow::Owned(clean_nul(value))
    } else {
        Cow::Borrowed(value)
    }
}

/// [`without_nul`] for a whole record.
pub fn record_without_nul(record: &Map<String, Value>) -> Cow<'_, Map<String, Value>> {
    if record.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        Cow::Owned(clean_nul_map(record))
    } else {
        Cow::Borrowed(record)
    }
}

fn clean_nul(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(replace_nul(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(clean_nul).collect()),
        Value::Object(map) => Value::Object(clean_nul_map(map)),
        other => other.clone(),
    }
}

fn clean_nul_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (replace_nul(k).into_owned(), clean_nul(v)))
        .collect()
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn replace_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// How Bitrix24 writes "no value" outside text: `null` (lists) or a blank string (`get`).
fn is_empty(value: &Value) -> bool {
    value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bigint(value: &Value) -> Result<String, ValueError> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i.to_string())
            } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18) {
                Ok((f as i64).to_string())
            } else {
                Err(ValueError::NotAnInteger)
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|i| i.to_string())
            .map_err(|_| ValueError::NotAnInteger),
        other => Err(ValueError::WrongKind {
            expected: "an integer",
            found: kind(other),
        }),
    }
}

fn numeric(value: &Value) -> Result<String, ValueError> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if is_decimal(s.trim()) => Ok(s.trim().to_string()),
        Value::String(_) => Err(ValueError::NotANumber),
        other => Err(ValueError::WrongKind {
            expected: "a number",
            found: kind(other),
        }),
    }
}

/// `[+-]digits[.digits][e[+-]digits]`, with digits on at least one side of the point.
fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && digits(frac)
        && !(int.is_empty() && frac.is_empty())
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

fn boolean(value: &Value) -> Result<String, ValueError> {
    let flag = match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "1" | "true" => Some(true),
            "n" | "0" | "false" => Some(false),
            _ => None,
        },
        other => {
            return Err(ValueError::WrongKind {
                expected: "a flag",
                found: kind(other),
            });
        }
    };
    flag.map(|b| if b { "t" } else { "f" }.to_string())
        .ok_or(ValueError::NotAFlag)
}

/// Dates arrive as `YYYY-MM-DD` or, on read, as midnight UTC shown in the portal's
/// offset: `2024-08-30T02:00:00+02:00` and `2024-08-29T21:00:00-03:00` both mean
/// 2024-08-30. The calendar date is the UTC date of that instant; the local date part
/// would be a day early on every portal west of UTC.
fn date(value: &Value) -> Result<String, ValueError> {
    let s = value
        .as_str()
        .ok_or(ValueError::WrongKind {
            expected: "a date string",
            found: kind(value),
        })?
        .trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.format("%Y-%m-%d").to_string());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|dt| dt.naive_utc().date().format("%Y-%m-%d").to_string())
        .map_err(|_| ValueError::NotADate)
}

/// A multiple date field as a jsonb array of calendar dates (`["2024-08-30"]`), each
/// element read like a single date column; empty elements become `null`. A lone
/// value (the field was single before) is a list of one.
fn date_list(value: &Value) -> Result<Option<String>, ValueError> {
    let one = |element: &Value| -> Result<Value, ValueError> {
        Ok(to_copy_text(ColumnType::Date, element)?.map_or(Value::Null, Value::String))
    };
    let dates = match value {
        Value::Array(elements) => elements.iter().map(one).collect::<Result<_, _>>()?,
        single => vec![one(single)?],
    };
    Ok(Some(Value::Array(dates).to_string()))
}

/// Datetimes must carry their offset: a bare local time would be read in the
/// database session's zone, which is not the portal's.
fn timestamptz(value: &Value) -> Result<String, ValueError> {
    let s = value.as_str().ok_or(ValueError::WrongKind {
        expected: "a datetime string",
        found: kind(value),
    })?;
    DateTime::parse_from_rfc3339(s.trim())
        .map(|dt| dt.to_rfc3339())
        .map_err(|_| ValueError::NotADatetime)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => replace_nul(s).into_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => json_text(other),
    }
}

fn json_text(value: &Value) -> String {
    without_nul(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(t: ColumnType, v: Value) -> Result<Option<String>, ValueError> {
        to_copy_text(t, &v)
    }

    fn some(s: &str) -> Result<Option<String>, ValueError> {
        Ok(Some(s.to_string()))
    }

    #[test]
    fn null_and_empty_strings_are_null_except_for_text() {
        for t in ColumnType::ALL {
            assert_eq!(conv(t, Value::Null), Ok(None), "{t:?}");
            if t != ColumnType::Text {
                assert_eq!(conv(t, json!("")), Ok(None), "{t:?}");
                assert_eq!(conv(t, json!("  ")), Ok(None), "{t:?}");
            }
        }
        assert_eq!(conv(ColumnType::Text, json!("")), some(""));
    }

    #[test]
    fn integers_from_strings_and_numbers() {
        assert_eq!(conv(ColumnType::BigInt, json!("410")), some("410"));
        assert_eq!(conv(ColumnType::BigInt, json!(" -7 ")), some("-7"));
        assert_eq!(conv(ColumnType::BigInt, json!(342)), some("342"));
        assert_eq!(conv(ColumnType::BigInt, json!(5.0)), some("5"));
        assert_eq!(
            conv(ColumnType::BigInt, json!(5.5)),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(
            conv(ColumnType::BigInt, json!("12.5")),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(
            conv(ColumnType::BigInt, json!("C_12")),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(
            conv(ColumnType::BigInt, json!("99999999999999999999")),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(
            conv(ColumnType::BigInt, json!(u64::MAX)),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(
            conv(ColumnType::BigInt, json!([1])),
            Err(ValueError::WrongKind {
                expected: "an integer",
                found: "an array"
            })
        );
    }

    #[test]
    fn decimals_keep_their_digits() {
        assert_eq!(
            conv(ColumnType::Numeric, json!("1000000.00")),
            some("1000000.00")
        );
        assert_eq!(
            conv(ColumnType::Numeric, json!("19999.99")),
            some("19999.99")
        );
        assert_eq!(conv(ColumnType::Numeric, json!(999.99)), some("999.99"));
        assert_eq!(conv(ColumnType::Numeric, json!(-3)), some("-3"));
        assert_eq!(conv(ColumnType::Numeric, json!(".5")), some(".5"));
        assert_eq!(conv(ColumnType::Numeric, json!("1.5e3")), some("1.5e3"));
        for bad in [
            "1,5", "NaN", "Infinity", "1e", ".", "-", "12abc", "300|RUB", "1 000",
        ] {
            assert_eq!(
                conv(ColumnType::Numeric, json!(bad)),
                Err(ValueError::NotANumber),
                "{bad}"
            );
        }
        assert!(conv(ColumnType::Numeric, json!(true)).is_err());
    }

    #[test]
    fn flags_accept_every_spelling_bitrix_uses() {
        for yes in [
            json!("Y"),
            json!("y"),
            json!("1"),
            json!(1),
            json!(true),
            json!("true"),
        ] {
            assert_eq!(conv(ColumnType::Boolean, yes), some("t"));
        }
        for no in [
            json!("N"),
            json!("0"),
            json!(0),
            json!(false),
            json!("false"),
        ] {
            assert_eq!(conv(ColumnType::Boolean, no), some("f"));
        }
        assert_eq!(
            conv(ColumnType::Boolean, json!("P")),
            Err(ValueError::NotAFlag)
        );
        assert_eq!(
            conv(ColumnType::Boolean, json!(2)),
            Err(ValueError::NotAFlag)
        );
    }

    /// How a portal at `offset_secs` renders the date field holding `date`.
    fn portal_rendering(date: &str, offset_secs: i32) -> String {
        let midnight_utc = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let offset = chrono::FixedOffset::east_opt(offset_secs).unwrap();
        midnight_utc
            .with_timezone(&offset)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    #[test]
    fn dates_are_the_utc_date_of_the_portal_rendering() {
        for (sent, date) in [
            // The documented example, and its mirror image west of UTC, where the
            // local date part is the previous day.
            ("2024-08-30T02:00:00+02:00", "2024-08-30"),
            ("2024-08-29T21:00:00-03:00", "2024-08-30"),
            ("2024-08-30T00:00:00+00:00", "2024-08-30"),
            ("2024-08-30T00:00:00Z", "2024-08-30"),
            (" 2024-08-30 ", "2024-08-30"),
            // Across a year boundary and at half-hour offsets.
            ("2023-12-31T21:00:00-03:00", "2024-01-01"),
            ("2024-08-29T14:30:00-09:30", "2024-08-30"),
        ] {
            assert_eq!(conv(ColumnType::Date, json!(sent)), some(date), "{sent}");
        }
        // Every offset a portal can have, east and west, quarter hours included.
        for date in ["2024-08-30", "2024-01-01", "2024-02-29", "2023-12-31"] {
            for quarter_hours in -12 * 4..=14 * 4 {
                let rendered = portal_rendering(date, quarter_hours * 15 * 60);
                assert_eq!(
                    conv(ColumnType::Date, json!(rendered)),
                    some(date),
                    "{rendered}"
                );
            }
        }
        // Not a date, no such day, a datetime without its offset, a number.
        for bad in ["30.08.2024", "2024-02-30", "2024-08-30T02:00:00"] {
            assert_eq!(
                conv(ColumnType::Date, json!(bad)),
                Err(ValueError::NotADate),
                "{bad}"
            );
        }
        assert!(conv(ColumnType::Date, json!(20240830)).is_err());
    }

    #[test]
    fn multiple_dates_hold_calendar_dates() {
        let dates = |v: Value, t: ColumnType| column_text(ValuePart::Dates, t, &v);
        let three = json!([
            "2024-08-30T02:00:00+02:00",
            "2024-08-29T21:00:00-03:00",
            "2024-09-09"
        ]);
        let expected = r#"["2024-08-30","2024-08-30","2024-09-09"]"#;
        assert_eq!(dates(three.clone(), ColumnType::Jsonb), some(expected));
        // A column widened to text after a type change holds the same array text.
        assert_eq!(dates(three, ColumnType::Text), some(expected));
        assert_eq!(
            dates(
                json!(["2024-08-29T21:00:00-03:00", "", null]),
                ColumnType::Jsonb
            ),
            some(r#"["2024-08-30",null,null]"#)
        );
        assert_eq!(
            dates(json!("2024-08-29T21:00:00-03:00"), ColumnType::Jsonb),
            some(r#"["2024-08-30"]"#)
        );
        assert_eq!(dates(json!([]), ColumnType::Jsonb), some("[]"));
        assert_eq!(dates(json!(""), ColumnType::Jsonb), Ok(None));
        assert_eq!(dates(Value::Null, ColumnType::Jsonb), Ok(None));
        assert_eq!(
            dates(json!(["2024-08-30", "soon"]), ColumnType::Jsonb),
            Err(ValueError::NotADate)
        );
    }

    fn field(bitrix_type: &str, is_multiple: bool) -> crate::schema::FieldMeta {
        crate::schema::FieldMeta {
            code: "UF_CRM_F".into(),
            title: "UF_CRM_F".into(),
            label: None,
            bitrix_type: bitrix_type.into(),
            is_multiple,
            is_dynamic: true,
            is_read_only: false,
            items: vec![],
        }
    }

    #[test]
    fn empty_values_are_null_in_every_typed_column() {
        // `get` sends an empty field as "", `list` as null: the mirror must not tell
        // the two reads apart.
        let kinds = [
            ("integer", false, ColumnType::BigInt),
            ("employee", false, ColumnType::BigInt),
            ("crm_company", false, ColumnType::BigInt),
            ("enumeration", false, ColumnType::BigInt),
            ("double", false, ColumnType::Numeric),
            ("money", false, ColumnType::Numeric),
            ("boolean", false, ColumnType::Boolean),
            ("char", false, ColumnType::Boolean),
            ("date", false, ColumnType::Date),
            ("datetime", false, ColumnType::Timestamptz),
            ("file", false, ColumnType::Jsonb),
            ("crm_multifield", true, ColumnType::Jsonb),
            ("enumeration", true, ColumnType::Jsonb),
            ("money", true, ColumnType::Jsonb),
            ("date", true, ColumnType::Jsonb),
            ("datetime", true, ColumnType::Jsonb),
            ("string", true, ColumnType::Jsonb),
        ];
        for (bitrix_type, multiple, column_type) in kinds {
            let columns = crate::schema::columns_for(&field(bitrix_type, multiple)).unwrap();
            assert_eq!(columns[0].column_type, column_type, "{bitrix_type}");
            for c in &columns {
                for empty in [json!(""), Value::Null] {
                    assert_eq!(
                        column_text(c.part, c.column_type, &empty),
                        Ok(None),
                        "{bitrix_type} (multiple: {multiple}) column {} from {empty}",
                        c.name
                    );
                }
            }
        }
        // Text keeps an empty string (it is a value there), and NULL stays NULL.
        let text = &crate::schema::columns_for(&field("string", false)).unwrap()[0];
        assert_eq!(
            column_text(text.part, text.column_type, &json!("")),
            some("")
        );
        assert_eq!(
            column_text(text.part, text.column_type, &Value::Null),
            Ok(None)
        );
    }

    #[test]
    fn datetimes_keep_their_offset() {
        assert_eq!(
            conv(ColumnType::Timestamptz, json!("2024-08-30T14:29:00+02:00")),
            some("2024-08-30T14:29:00+02:00")
        );
        assert_eq!(
            conv(ColumnType::Timestamptz, json!("2024-08-30T14:29:00Z")),
            some("2024-08-30T14:29:00+00:00")
        );
        assert_eq!(
            conv(ColumnType::Timestamptz, json!("2024-08-30T14:29:00")),
            Err(ValueError::NotADatetime)
        );
        assert_eq!(
            conv(ColumnType::Timestamptz, json!("yesterday")),
            Err(ValueError::NotADatetime)
        );
    }

    #[test]
    fn text_and_json_take_anything() {
        assert_eq!(
            conv(ColumnType::Text, json!("[B]Hi[/B]\ttab")),
            some("[B]Hi[/B]\ttab")
        );
        assert_eq!(conv(ColumnType::Text, json!(12.5)), some("12.5"));
        assert_eq!(conv(ColumnType::Text, json!(false)), some("false"));
        assert_eq!(
            conv(ColumnType::Text, json!(["C_1", "CO_2"])),
            some(r#"["C_1","CO_2"]"#)
        );
        let phone = json!([{"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"}]);
        assert_eq!(
            conv(ColumnType::Jsonb, phone.clone()),
            Ok(Some(phone.to_string()))
        );
        assert_eq!(conv(ColumnType::Jsonb, json!(false)), some("false"));
    }

    #[test]
    fn nul_characters_are_replaced_not_rejected() {
        assert_eq!(conv(ColumnType::Text, json!("a\0b")), some("a\u{FFFD}b"));
        let cleaned = conv(ColumnType::Jsonb, json!({"k\0": ["x\0"]}))
            .unwrap()
            .unwrap();
        assert_eq!(cleaned, json!({"k\u{FFFD}": ["x\u{FFFD}"]}).to_string());
        let clean = json!({"a": "b"});
        assert!(matches!(without_nul(&clean), Cow::Borrowed(_)));
        let record = json!({"ID": "1", "TITLE": "x\0y"});
        let record = record.as_object().unwrap();
        assert_eq!(record_without_nul(record)["TITLE"], json!("x\u{FFFD}y"));
        let clean = clean.as_object().unwrap();
        assert!(matches!(record_without_nul(clean), Cow::Borrowed(_)));
    }

    #[test]
    fn money_splits_into_amount_and_currency() {
        let v = json!("300.50|RUB");
        assert_eq!(
            column_text(ValuePart::MoneyAmount, ColumnType::Numeric, &v),
            some("300.50")
        );
        assert_eq!(
            column_text(ValuePart::MoneyCurrency, ColumnType::Text, &v),
            some("RUB")
        );
        assert_eq!(
            column_text(ValuePart::Whole, ColumnType::Text, &v),
            some("300.50|RUB")
        );
        assert_eq!(
            column_text(ValuePart::MoneyAmount, ColumnType::Numeric, &json!("")),
            Ok(None)
        );
        assert_eq!(
            column_text(ValuePart::MoneyCurrency, ColumnType::Text, &json!("")),
            Ok(None)
        );
        assert_eq!(
            column_text(ValuePart::MoneyAmount, ColumnType::Numeric, &json!(12)),
            some("12")
        );
        assert_eq!(
            column_text(ValuePart::MoneyCurrency, ColumnType::Text, &json!(12)),
            Ok(None)
        );
        assert_eq!(
            column_text(ValuePart::MoneyAmount, ColumnType::Numeric, &json!("300")),
            some("300")
        );
        assert_eq!(
            column_text(ValuePart::MoneyCurrency, ColumnType::Text, &json!("300")),
            Ok(None)
        );
        assert!(
            column_text(
                ValuePart::MoneyAmount,
                ColumnType::Numeric,
                &json!({"a": 1})
            )
            .is_err()
        );
        assert_eq!(
            column_text(
                ValuePart::MoneyAmount,
                ColumnType::Numeric,
                &json!("abc|RUB")
            ),
            Err(ValueError::NotANumber)
        );
    }

    #[test]
    fn errors_never_repeat_the_value() {
        let secret = "s3cr3t-value";
        for t in [
            ColumnType::BigInt,
            ColumnType::Numeric,
            ColumnType::Boolean,
            ColumnType::Date,
            ColumnType::Timestamptz,
        ] {
            let err = conv(t, json!(secret)).unwrap_err();
            assert!(!format!("{err} {err:?}").contains(secret));
        }
    }
}
