//! Seeded, reproducible records that look like a real portal's.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use serde_json::{Value, json};

use crate::schema::{Entity, FieldDef, UserFieldType, ValueType};
use crate::table::{IdCounters, Stored, Table};

pub(crate) type SimRng = Xoshiro256PlusPlus;

const FIRST_NAMES: &[&str] = &[
    "Anna", "Boris", "Chen", "Dmitry", "Elena", "Farid", "Greta", "Hugo", "Irina", "Jonas",
];
const LAST_NAMES: &[&str] = &[
    "Ivanova", "Smith", "Novak", "Garcia", "Kowalski", "Muller", "Rossi", "Tanaka", "Petrov",
    "Dubois",
];
const WORDS: &[&str] = &[
    "Annual",
    "Support",
    "License",
    "Website",
    "Audit",
    "Delivery",
    "Consulting",
    "Upgrade",
    "Training",
    "Hosting",
];
const DEAL_STAGES: &[&str] = &[
    "NEW",
    "PREPARATION",
    "PREPAYMENT_INVOICE",
    "EXECUTING",
    "FINAL_INVOICE",
    "WON",
    "LOSE",
];
const LEAD_STATUSES: &[&str] = &["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"];
const CURRENCIES: &[&str] = &["USD", "EUR", "RUB"];
const SOURCES: &[&str] = &[
    "CALL",
    "EMAIL",
    "WEB",
    "ADVERTISING",
    "PARTNER",
    "RECOMMENDATION",
    "CALLBACK",
];
const USERS: i64 = 20;
const DAY: i64 = 86_400;

fn pick<'a>(rng: &mut SimRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn text(s: impl Into<String>) -> Stored {
    Stored::Str(s.into().into_boxed_str())
}

/// What a generated record may point at.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Population {
    pub contacts: u64,
    pub companies: u64,
}

/// Context of one generated record.
pub(crate) struct RowContext {
    pub id: u64,
    pub created: i64,
    pub modified: i64,
}

impl RowContext {
    /// A record created and last modified at random moments up to three years before `anchor`.
    pub fn seeded(id: u64, anchor: i64, rng: &mut SimRng) -> RowContext {
        let created = anchor - rng.random_range(DAY..3 * 365 * DAY);
        let modified = rng.random_range(created..=anchor);
        RowContext {
            id,
            created,
            modified,
        }
    }
}

/// The values of one new record, aligned with the table's fields.
pub(crate) fn record(
    table: &mut Table,
    row: &RowContext,
    population: Population,
    rng: &mut SimRng,
) -> Vec<Stored> {
    let entity = table.entity;
    let (fields, ids) = table.fields_and_ids();
    let mut stage = "NEW";
    fields
        .iter()
        .map(|field| {
            if let Some(uf) = &field.user_field {
                user_field_value(ids, field, uf.user_type, rng)
            } else if field.value_type == ValueType::Multifield {
                multifield_value(ids, field, rng)
            } else if field.value_type == ValueType::File {
                if rng.random_bool(0.2) {
                    Stored::Int(ids.file())
                } else {
                    Stored::Null
                }
            } else {
                standard_value(entity, field, row, population, &mut stage, rng)
            }
        })
        .collect()
}

fn standard_value(
    entity: Entity,
    field: &FieldDef,
    row: &RowContext,
    population: Population,
    stage: &mut &'static str,
    rng: &mut SimRng,
) -> Stored {
    let id = row.id;
    let day = row.created / DAY;
    match field.name.as_str() {
        "ID" => Stored::Int(id as i64),
        "TITLE" => match entity {
            Entity::Company => text(format!(
                "{} {} Ltd",
                pick(rng, LAST_NAMES),
                pick(rng, WORDS)
            )),
            _ => text(format!(
                "{} #{id}: {} {}",
                capitalized(entity),
                pick(rng, WORDS),
                pick(rng, WORDS)
            )),
        },
        "NAME" => text(pick(rng, FIRST_NAMES)),
        "LAST_NAME" => text(pick(rng, LAST_NAMES)),
        "HONORIFIC" => text(pick(rng, &["HNR_EN_1", "HNR_EN_2", "HNR_EN_3"])),
        "TYPE_ID" => text(match entity {
            Entity::Deal => pick(rng, &["SALE", "COMPLEX", "GOODS", "SERVICES"]),
            _ => pick(rng, &["CLIENT", "SUPPLIER", "PARTNER"]),
        }),
        "COMPANY_TYPE" => text(pick(rng, &["CUSTOMER", "SUPPLIER", "PARTNER"])),
        "INDUSTRY" => text(pick(rng, &["IT", "MANUFACTURING", "BANKING", "DELIVERY"])),
        "EMPLOYEES" => text(pick(rng, &["EMPLOYEES_1", "EMPLOYEES_2", "EMPLOYEES_3"])),
        "CATEGORY_ID" => Stored::Int(0),
        "STAGE_ID" => {
            *stage = pick(rng, DEAL_STAGES);
            text(*stage)
        }
        "STATUS_ID" => {
            *stage = pick(rng, LEAD_STATUSES);
            text(*stage)
        }
        "STAGE_SEMANTIC_ID" | "STATUS_SEMANTIC_ID" => text(stage_semantic(stage)),
        "CLOSED" => Stored::Flag(stage_semantic(stage) != "P"),
        "PROBABILITY" => Stored::Int(rng.random_range(0..=10) * 10),
        "CURRENCY_ID" => text(pick(rng, CURRENCIES)),
        "OPPORTUNITY" | "REVENUE" => Stored::Int(rng.random_range(1_000..100_000_000)),
        "TAX_VALUE" => Stored::Int(0),
        "COMPANY_ID" if population.companies > 0 && rng.random_bool(0.7) => {
            Stored::Int(rng.random_range(1..=population.companies) as i64)
        }
        "CONTACT_ID" if population.contacts > 0 && rng.random_bool(0.8) => {
            Stored::Int(rng.random_range(1..=population.contacts) as i64)
        }
        "BEGINDATE" => Stored::Day(day as i32),
        "CLOSEDATE" => Stored::Day((day + rng.random_range(7..90)) as i32),
        "BIRTHDATE" if rng.random_bool(0.4) => Stored::Day(rng.random_range(-7_000..11_000)),
        "ADDRESS_CITY" if rng.random_bool(0.3) => {
            text(pick(rng, &["Berlin", "Warsaw", "Austin", "Osaka", "Lyon"]))
        }
        "REG_ADDRESS_COUNTRY" if rng.random_bool(0.3) => {
            text(pick(rng, &["Germany", "Poland", "USA", "Japan", "France"]))
        }
        "ASSIGNED_BY_ID" | "CREATED_BY_ID" | "MODIFY_BY_ID" | "MOVED_BY_ID"
        | "LAST_ACTIVITY_BY" => Stored::Int(rng.random_range(1..=USERS)),
        "DATE_CREATE" => Stored::Time(row.created),
        "DATE_MODIFY" | "MOVED_TIME" | "LAST_ACTIVITY_TIME" => Stored::Time(row.modified),
        "OPENED" | "EXPORT" => Stored::Flag(true),
        "IS_NEW" => Stored::Flag(*stage == "NEW"),
        "IS_MY_COMPANY" | "IS_RECURRING" | "IS_REPEATED_APPROACH" => Stored::Flag(false),
        "IS_RETURN_CUSTOMER" => Stored::Flag(rng.random_bool(0.2)),
        "IS_MANUAL_OPPORTUNITY" => Stored::Flag(rng.random_bool(0.5)),
        "SOURCE_ID" => text(pick(rng, SOURCES)),
        "POST" if rng.random_bool(0.5) => text(pick(
            rng,
            &["Manager", "Director", "Engineer", "Accountant"],
        )),
        "COMMENTS" if rng.random_bool(0.3) => {
            text(format!("[B]{}[/B] follow-up", pick(rng, WORDS)))
        }
        "UTM_SOURCE" if rng.random_bool(0.2) => {
            text(pick(rng, &["google", "newsletter", "partner"]))
        }
        "UTM_MEDIUM" if rng.random_bool(0.2) => text(pick(rng, &["CPC", "email", "referral"])),
        "HAS_PHONE" | "HAS_EMAIL" | "HAS_IMOL" => Stored::Flag(false),
        _ => Stored::Null,
    }
}

pub(crate) fn stage_semantic(stage: &str) -> &'static str {
    match stage.rsplit(':').next().unwrap_or(stage) {
        "WON" | "CONVERTED" => "S",
        "LOSE" | "APOLOGY" | "JUNK" => "F",
        _ => "P",
    }
}

fn capitalized(entity: Entity) -> String {
    let name = entity.as_str();
    name[..1].to_ascii_uppercase() + &name[1..]
}

fn multifield_value(ids: &mut IdCounters, field: &FieldDef, rng: &mut SimRng) -> Stored {
    let count = match field.name.as_str() {
        "LINK" => 0, // a service field the portal fills itself
        "PHONE" => rng.random_range(0..=2),
        "EMAIL" => rng.random_range(0..=1),
        _ => usize::from(rng.random_bool(0.1)),
    };
    let items: Vec<Value> = (0..count)
        .map(|_| {
            let (value_type, value) = match field.name.as_str() {
                "PHONE" => (pick(rng, &["WORK", "MOBILE", "HOME"]), format!("+1555{:07}", rng.random_range(0..10_000_000))),
                "EMAIL" => ("WORK", format!("{}{}@example.com", pick(rng, FIRST_NAMES).to_lowercase(), rng.random_range(0..10_000))),
                "WEB" => ("WORK", format!("https://example-{}.com", rng.random_range(0..10_000))),
                _ => ("TELEGRAM", format!("@user{}", rng.random_range(0..10_000))),
            };
            json!({"ID": ids.multifield().to_string(), "VALUE_TYPE": value_type, "VALUE": value, "TYPE_ID": field.name})
        })
        .collect();
    Stored::Json(Box::new(Value::Array(items)))
}

/// A value for a user field; existing records get one when a field is added.
pub(crate) fn user_field_value(
    ids: &mut IdCounters,
    field: &FieldDef,
    user_type: UserFieldType,
    rng: &mut SimRng,
) -> Stored {
    if field.multiple {
        let count = rng.random_range(0..=2);
        let items: Vec<Stored> = (0..count)
            .map(|_| single_user_value(ids, field, user_type, rng))
            .collect();
        return Stored::List(items.into_boxed_slice());
    }
    if rng.random_bool(0.2) {
        return Stored::Null;
    }
    single_user_value(ids, field, user_type, rng)
}

fn single_user_value(
    ids: &mut IdCounters,
    field: &FieldDef,
    user_type: UserFieldType,
    rng: &mut SimRng,
) -> Stored {
    let now_ish = 1_700_000_000 + rng.random_range(0..50_000_000);
    match user_type {
        UserFieldType::String => text(format!(
            "{} {}",
            pick(rng, WORDS),
            rng.random_range(0..100_000)
        )),
        UserFieldType::Integer => Stored::Int(rng.random_range(0..100_000)),
        UserFieldType::Double => Stored::Float(f64::from(rng.random_range(0..1_000_000)) / 100.0),
        UserFieldType::Boolean => Stored::Flag(rng.random_bool(0.5)),
        UserFieldType::Date => Stored::Day((now_ish / DAY) as i32),
        UserFieldType::Datetime => Stored::Time(now_ish),
        UserFieldType::Enumeration => {
            let items = field
                .user_field
                .as_ref()
                .map(|uf| uf.items.as_slice())
                .unwrap_or_default();
            if items.is_empty() {
                Stored::Null
            } else {
                Stored::Int(items[rng.random_range(0..items.len())].0)
            }
        }
        UserFieldType::Money => text(format!(
            "{}|{}",
            f64::from(rng.random_range(100..1_000_000)) / 100.0,
            pick(rng, CURRENCIES)
        )),
        UserFieldType::Employee => Stored::Int(rng.random_range(1..=USERS)),
        UserFieldType::File => Stored::Int(ids.file()),
    }
}
