//! Value formats of the old `crm.*` API: parsing what clients send and rendering
//! what the portal returns (numbers as strings, dates in the portal's offset).

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use serde_json::Value;

/// The portal's clock: real time, shown in the portal's UTC offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortalClock {
    pub offset: FixedOffset,
}

impl PortalClock {
    /// A clock at UTC (the portal's offset 0).
    pub fn utc() -> PortalClock {
        PortalClock { offset: Utc.fix() }
    }

    pub fn now_f64(&self) -> f64 {
        Utc::now().timestamp_micros() as f64 / 1e6
    }

    pub fn now_secs(&self) -> i64 {
        Utc::now().timestamp()
    }

    /// `2024-08-30T14:29:00+03:00` (formatted by hand: lists render millions of these).
    pub fn format_secs(&self, secs: i64) -> String {
        let local = secs + i64::from(self.offset.local_minus_utc());
        let date = day_to_date(local.div_euclid(86_400) as i32);
        let second_of_day = local.rem_euclid(86_400);
        let (sign, offset_minutes) = self.offset_parts();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            date.year(),
            date.month(),
            date.day(),
            second_of_day / 3600,
            second_of_day % 3600 / 60,
            second_of_day % 60,
            offset_minutes / 60,
            offset_minutes % 60
        )
    }

    /// A date as the portal returns it: midnight UTC of that date shown in the
    /// portal's offset (`2024-08-30T02:00:00+02:00`; at a negative offset the local
    /// date part is the previous day).
    pub fn format_day(&self, day: i32) -> String {
        self.format_secs(i64::from(day) * 86_400)
    }

    fn offset_parts(&self) -> (char, i32) {
        let seconds = self.offset.local_minus_utc();
        (if seconds < 0 { '-' } else { '+' }, seconds.abs() / 60)
    }

    pub fn today(&self) -> i32 {
        let local = Utc::now().with_timezone(&self.offset).date_naive();
        date_to_day(local)
    }

    fn local_to_secs(&self, local: NaiveDateTime) -> Option<i64> {
        self.offset
            .from_local_datetime(&local)
            .single()
            .map(|t| t.timestamp())
    }

    /// Parses a datetime as clients send it: ISO 8601 with or without offset,
    /// `YYYY-MM-DD` (local midnight), or the portal's `DD.MM.YYYY [HH:MM:SS]`.
    pub fn parse_datetime(&self, text: &str) -> Option<i64> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.timestamp());
        }
        for format in [
            "%Y-%m-%dT%H:%M:%S%z",
            "%Y-%m-%d %H:%M:%S%z",
            "%Y-%m-%dT%H:%M:%S%.f%:z",
        ] {
            if let Ok(t) = DateTime::parse_from_str(text, format) {
                return Some(t.timestamp());
            }
        }
        for format in [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%d.%m.%Y %H:%M:%S",
        ] {
            if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
                return self.local_to_secs(local);
            }
        }
        parse_date_only(text).and_then(|d| self.local_to_secs(d.and_time(NaiveTime::MIN)))
    }

    /// Parses a date: `YYYY-MM-DD`, `DD.MM.YYYY`, or a datetime, whose UTC date
    /// counts, so a date read back (`2024-08-30T02:00:00+02:00`) is the same date.
    pub fn parse_date(&self, text: &str) -> Option<i32> {
        if let Some(date) = parse_date_only(text.trim()) {
            return Some(date_to_day(date));
        }
        let secs = self.parse_datetime(text)?;
        i32::try_from(secs.div_euclid(86_400)).ok()
    }
}

fn parse_date_only(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%d.%m.%Y"))
        .ok()
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

pub(crate) fn date_to_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

pub(crate) fn day_to_date(day: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day + EPOCH_DAYS_FROM_CE).unwrap_or_default()
}

/// Hundredths to `"1000.00"`.
pub(crate) fn format_money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A JSON scalar as the text PHP would see (numbers and booleans stringified).
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

pub(crate) fn parse_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

pub(crate) fn parse_float(value: &Value) -> Option<f64> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    };
    parsed.filter(|f: &f64| f.is_finite())
}

pub(crate) fn parse_money(value: &Value) -> Option<i64> {
    parse_float(value)
        .filter(|f| f.abs() < 9.0e15)
        .map(|f| (f * 100.0).round() as i64)
}

/// `Y`/`N`, `1`/`0`, `true`/`false`.
pub(crate) fn parse_flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().filter(|n| *n == 0 || *n == 1).map(|n| n == 1),
        Value::String(s) => match s.trim().to_ascii_uppercase().as_str() {
            "Y" | "1" | "TRUE" => Some(true),
            "N" | "0" | "FALSE" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a value means "no value" (`null` or an empty string).
pub(crate) fn is_empty_input(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// `"300|RUB"`: an amount and a three-letter currency.
pub(crate) fn parse_money_uf(text: &str) -> Option<String> {
    let (amount, currency) = text.split_once('|')?;
    let amount: f64 = amount.trim().parse().ok()?;
    let currency = currency.trim();
    (amount.is_finite() && currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| format!("{amount}|{}", currency.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> PortalClock {
        PortalClock {
            offset: FixedOffset::east_opt(3 * 3600).unwrap(),
        }
    }

    #[test]
    fn datetimes_parse_in_every_documented_form() {
        let c = clock();
        let iso = c.parse_datetime("2024-08-30T14:29:00+03:00").unwrap();
        assert_eq!(c.format_secs(iso), "2024-08-30T14:29:00+03:00");
        assert_eq!(c.parse_datetime("2024-08-30T11:29:00Z").unwrap(), iso);
        assert_eq!(c.parse_datetime("2024-08-30T14:29:00").unwrap(), iso);
        assert_eq!(c.parse_datetime("30.08.2024 14:29:00").unwrap(), iso);
        assert_eq!(
            c.format_secs(c.parse_datetime("2024-08-30").unwrap()),
            "2024-08-30T00:00:00+03:00"
        );
        assert!(c.parse_datetime("yesterday").is_none());
    }

    #[test]
    fn formatting_handles_negative_offsets_and_old_dates() {
        let west = PortalClock {
            offset: FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap(),
        };
        assert_eq!(west.format_secs(0), "1969-12-31T18:30:00-05:30");
        assert_eq!(west.format_day(-1), "1969-12-30T18:30:00-05:30");
        assert_eq!(
            clock().format_secs(1_724_984_000),
            "2024-08-30T05:13:20+03:00"
        );
    }

    #[test]
    fn dates_render_as_midnight_utc_in_the_portal_offset() {
        // Verbatim from crm-deal-get.md: BEGINDATE at +02:00.
        let east = PortalClock {
            offset: FixedOffset::east_opt(2 * 3600).unwrap(),
        };
        let day = east.parse_date("2024-08-30").unwrap();
        assert_eq!(east.format_day(day), "2024-08-30T02:00:00+02:00");
        let west = PortalClock {
            offset: FixedOffset::west_opt(5 * 3600).unwrap(),
        };
        assert_eq!(west.format_day(day), "2024-08-29T19:00:00-05:00");
        // What the portal renders reads back as the same date at either offset.
        for c in [east, west, clock()] {
            assert_eq!(c.parse_date(&c.format_day(day)), Some(day));
        }
        assert_eq!(clock().parse_date("2024-08-30T23:30:00+00:00"), Some(day));
    }

    #[test]
    fn money_round_trips_with_two_decimals() {
        assert_eq!(
            format_money(parse_money(&Value::from("19999.99")).unwrap()),
            "19999.99"
        );
        assert_eq!(
            format_money(parse_money(&Value::from(1_000_000)).unwrap()),
            "1000000.00"
        );
        assert_eq!(format_money(-5), "-0.05");
        assert!(parse_money(&Value::from("ten")).is_none());
        assert_eq!(parse_money_uf("300|rub").unwrap(), "300|RUB");
        assert!(parse_money_uf("300").is_none());
    }

    #[test]
    fn flags_accept_every_spelling() {
        for yes in [
            Value::from("Y"),
            Value::from("1"),
            Value::from(true),
            Value::from(1),
        ] {
            assert_eq!(parse_flag(&yes), Some(true));
        }
        assert_eq!(parse_flag(&Value::from("n")), Some(false));
        assert_eq!(parse_flag(&Value::from("maybe")), None);
    }
}
