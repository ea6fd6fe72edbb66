//! Seeded, reproducible records that look like a real portal's.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use serde_json::{Value, json};

use crate::schema::{Entity, FieldDef, Kind, UserFieldType, ValueType};
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
/// Users the seeded records point at (`ASSIGNED_BY_ID` 1..=20); `user.get` lists them.
pub(crate) const USERS: i64 = 20;
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

/// What a generated smart-process item is made of: its type's title, whether it links
/// products, and its pipelines, each with its stage IDs in order.
pub(crate) struct SmartSeed<'a> {
    pub title: &'a str,
    pub with_products: bool,
    pub categories: &'a [(i64, Vec<String>)],
}

/// The pipeline and stage chosen for a smart-process item so far.
#[derive(Default)]
struct SmartChoice {
    category: Option<usize>,
}

/// The values of one new record, aligned with the table's fields (`smart` describes a
/// smart process's pipelines; the classic entities and users take `None`).
pub(crate) fn record(
    table: &mut Table,
    row: &RowContext,
    population: Population,
    smart: Option<&SmartSeed>,
    rng: &mut SimRng,
) -> Vec<Stored> {
    let kind = table.kind;
    let (fields, ids) = table.fields_and_ids();
    let mut stage = "NEW";
    let mut choice = SmartChoice::default();
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
                match (kind, smart) {
                    (Kind::Classic(entity), _) => {
                        standard_value(entity, field, row, population, &mut stage, rng)
                    }
                    (Kind::Smart(_), Some(seed)) => {
                        smart_value(field, row, population, seed, &mut choice, rng)
                    }
                    _ => Stored::Null,
                }
            }
        })
        .collect()
}

/// A standard field of a generated smart-process item.
fn smart_value(
    field: &FieldDef,
    row: &RowContext,
    population: Population,
    seed: &SmartSeed,
    choice: &mut SmartChoice,
    rng: &mut SimRng,
) -> Stored {
    let id = row.id;
    let day = row.created / DAY;
    let products = seed.with_products;
    match field.name.as_str() {
        "ID" => Stored::Int(id as i64),
        "TITLE" => text(format!(
            "{} #{id}: {} {}",
            seed.title,
            pick(rng, WORDS),
            pick(rng, WORDS)
        )),
        "CREATED_TIME" => Stored::Time(row.created),
        "UPDATED_TIME" | "MOVED_TIME" | "LAST_ACTIVITY_TIME" => Stored::Time(row.modified),
        "CREATED_BY" | "UPDATED_BY" | "MOVED_BY" | "ASSIGNED_BY_ID" | "LAST_ACTIVITY_BY" => {
            Stored::Int(rng.random_range(1..=USERS))
        }
        "OPENED" => Stored::Flag(true),
        "BEGINDATE" => Stored::Day(day as i32),
        "CLOSEDATE" => Stored::Day((day + rng.random_range(7..90)) as i32),
        "COMPANY_ID" if population.companies > 0 && rng.random_bool(0.7) => {
            Stored::Int(rng.random_range(1..=population.companies) as i64)
        }
        "CONTACT_ID" if population.contacts > 0 && rng.random_bool(0.8) => {
            Stored::Int(rng.random_range(1..=population.contacts) as i64)
        }
        "CATEGORY_ID" if !seed.categories.is_empty() => {
            // Most items sit in the first (default) pipeline.
            let index = if seed.categories.len() > 1 && rng.random_bool(0.3) {
                rng.random_range(1..seed.categories.len())
            } else {
                0
            };
            choice.category = Some(index);
            Stored::Int(seed.categories[index].0)
        }
        "STAGE_ID" => {
            let stages = choice
                .category
                .and_then(|i| seed.categories.get(i))
                .map(|(_, stages)| stages.as_slice())
                .unwrap_or_default();
            if stages.is_empty() {
                Stored::Null
            } else {
                text(stages[rng.random_range(0..stages.len())].clone())
            }
        }
        "SOURCE_ID" => text(pick(rng, SOURCES)),
        "CURRENCY_ID" if products => text(pick(rng, CURRENCIES)),
        "IS_MANUAL_OPPORTUNITY" if products => Stored::Flag(rng.random_bool(0.5)),
        "OPPORTUNITY" if products => Stored::Int(rng.random_range(1_000..100_000_000)),
        "TAX_VALUE" if products => Stored::Int(0),
        _ => Stored::Null,
    }
}

/// Product rows for a generated record: up to `max` rows (`PRODUCT_ID`, `PRODUCT_NAME`,
/// `PRICE`, `QUANTITY`... as `crm.deal.productrows.set` takes them).
pub(crate) fn product_rows(max: usize, rng: &mut SimRng) -> Vec<Value> {
    let count = rng.random_range(0..=max);
    (0..count)
        .map(|i| {
            let product = rng.random_range(1..=500);
            let discounted = rng.random_bool(0.3);
            let taxed = rng.random_bool(0.5);
            json!({
                "PRODUCT_ID": product,
                "PRODUCT_NAME": format!("{} {} #{product}", pick(rng, WORDS), pick(rng, &["kit", "plan", "unit", "pack"])),
                "PRICE": f64::from(rng.random_range(100..1_000_000)) / 100.0,
                "QUANTITY": rng.random_range(1..=20),
                "DISCOUNT_TYPE_ID": 2,
                "DISCOUNT_RATE": if discounted { rng.random_range(1..=30) } else { 0 },
                "TAX_RATE": if taxed { 20 } else { 0 },
                "TAX_INCLUDED": if taxed { "Y" } else { "N" },
                "SORT": (i + 1) * 10,
            })
        })
        .collect()
}

/// The seeded users: first and last names, e-mails and positions from the seed; user 1
/// is the webhook's own user; one in ten has left (`ACTIVE` false).
pub(crate) fn user_record(
    table: &Table,
    id: u64,
    registered: i64,
    rng: &mut SimRng,
) -> Vec<Stored> {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let position = pick(
        rng,
        &["Manager", "Director", "Engineer", "Accountant", "Sales"],
    );
    let active = id == 1 || !id.is_multiple_of(10);
    table
        .fields
        .iter()
        .map(|field| match field.name.as_str() {
            "ID" => Stored::Int(id as i64),
            "ACTIVE" => Stored::Flag(active),
            "NAME" => text(first),
            "LAST_NAME" => text(last),
            "EMAIL" => text(format!(
                "{}.{}{id}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            )),
            "DATE_REGISTER" => Stored::Time(registered),
            "LAST_LOGIN" if active => Stored::Time(registered + rng.random_range(0..30 * DAY)),
            "IS_ONLINE" => Stored::Flag(false),
            "WORK_POSITION" => text(position),
            "UF_DEPARTMENT" => {
                Stored::List(vec![Stored::Int(1 + (id as i64 - 1) % 3)].into_boxed_slice())
            }
            "USER_TYPE" => text("employee"),
            _ => Stored::Null,
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
