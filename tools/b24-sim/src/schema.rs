//! The portal's field metadata: the standard fields of each CRM entity as the old
//! `crm.*` API describes them, and the user fields (`UF_CRM_*`) added to them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The CRM entities the simulator serves through `crm.<entity>.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// `ENTITY_ID` of the entity's user fields (`CRM_DEAL`).
    pub(crate) fn uf_entity_id(self) -> String {
        format!("CRM_{}", self.as_str().to_ascii_uppercase())
    }

    /// The numeric CRM object type (`entityTypeId`): 1 lead, 2 deal, 3 contact, 4 company.
    pub fn entity_type_id(self) -> u32 {
        match self {
            Entity::Lead => 1,
            Entity::Deal => 2,
            Entity::Contact => 3,
            Entity::Company => 4,
        }
    }

    /// The classic entity of an `entityTypeId` (1..=4), `None` for any other.
    pub fn from_entity_type_id(entity_type_id: u32) -> Option<Entity> {
        Entity::ALL
            .into_iter()
            .find(|e| e.entity_type_id() == entity_type_id)
    }

    /// Event name for a change, e.g. `ONCRMDEALADD`.
    pub(crate) fn event_name(self, change: Change) -> String {
        let verb = match change {
            Change::Add => "ADD",
            Change::Update => "UPDATE",
            Change::Delete => "DELETE",
        };
        format!("ONCRM{}{verb}", self.as_str().to_ascii_uppercase())
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Entity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Entity::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown entity '{s}' (expected deal, contact, lead or company)")
            })
    }
}

/// What a table holds: a classic entity, a smart process (by `entityTypeId`) or the
/// portal's users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Classic(Entity),
    Smart(u32),
    Users,
}

impl From<Entity> for Kind {
    fn from(entity: Entity) -> Kind {
        Kind::Classic(entity)
    }
}

impl Kind {
    /// The `entityTypeId` (0 for users, which have none).
    pub fn entity_type_id(self) -> u32 {
        match self {
            Kind::Classic(entity) => entity.entity_type_id(),
            Kind::Smart(id) => id,
            Kind::Users => 0,
        }
    }

    /// Event name for a change: `ONCRMDEALUPDATE`, `ONCRMDYNAMICITEMADD`...
    pub fn event_name(self, change: Change) -> String {
        match self {
            Kind::Classic(entity) => entity.event_name(change),
            Kind::Smart(_) | Kind::Users => {
                let verb = match change {
                    Change::Add => "ADD",
                    Change::Update => "UPDATE",
                    Change::Delete => "DELETE",
                };
                format!("ONCRMDYNAMICITEM{verb}")
            }
        }
    }

    /// The short symbolic code of the type (`entityTypeAbbr`): `L`, `D`, `C`, `CO`, and
    /// `T` with the lower-case hexadecimal `entityTypeId` for a smart process (`T40e`).
    pub fn abbr(self) -> String {
        match self {
            Kind::Classic(Entity::Lead) => "L".into(),
            Kind::Classic(Entity::Deal) => "D".into(),
            Kind::Classic(Entity::Contact) => "C".into(),
            Kind::Classic(Entity::Company) => "CO".into(),
            Kind::Smart(id) => format!("T{id:x}"),
            Kind::Users => String::new(),
        }
    }
}

/// Whether an `entityTypeId` is one a smart process may have: 128..=191, or even and
/// at least 1030 (odd ones and 192..=255 belong to types in the recycle bin).
pub(crate) fn is_smart_entity_type_id(id: u32) -> bool {
    (128..=191).contains(&id) || (id >= 1030 && id.is_multiple_of(2))
}

/// A change to a record, as reported by outgoing events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Add,
    Update,
    Delete,
}

/// How a field's value is parsed, stored, filtered and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueType {
    /// Integers and references (IDs, users, links): rendered as strings.
    Integer,
    /// Enumeration user field: the item ID, validated against the items.
    Enumeration,
    /// Money with two decimals (`"1000000.00"`), stored in hundredths.
    Money,
    /// Double user field.
    Double,
    /// `Y`/`N` flag.
    Char,
    /// Boolean user field, rendered `"1"`/`"0"`.
    Boolean,
    /// Code-like strings with few distinct values (statuses, currencies): interned.
    Code,
    /// Free text.
    Text,
    /// Money user field, `"300|RUB"`.
    MoneyUf,
    /// A calendar date, rendered as local midnight in the portal's offset.
    Date,
    /// An instant, rendered in the portal's offset.
    DateTime,
    /// File (`PHOTO`, `LOGO`, file user fields): stored as the file ID, rendered as
    /// `{id, showUrl, downloadUrl}`.
    File,
    /// `PHONE`/`EMAIL`/`WEB`/`IM`/`LINK`: an array of `{ID, VALUE_TYPE, VALUE, TYPE_ID}`.
    Multifield,
}

/// The user field types the simulator offers (`USER_TYPE_ID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserFieldType {
    String,
    Integer,
    Double,
    Boolean,
    Date,
    Datetime,
    Enumeration,
    Money,
    Employee,
    File,
}

impl UserFieldType {
    pub const ALL: [UserFieldType; 10] = [
        UserFieldType::String,
        UserFieldType::Integer,
        UserFieldType::Double,
        UserFieldType::Boolean,
        UserFieldType::Date,
        UserFieldType::Datetime,
        UserFieldType::Enumeration,
        UserFieldType::Money,
        UserFieldType::Employee,
        UserFieldType::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserFieldType::String => "string",
            UserFieldType::Integer => "integer",
            UserFieldType::Double => "double",
            UserFieldType::Boolean => "boolean",
            UserFieldType::Date => "date",
            UserFieldType::Datetime => "datetime",
            UserFieldType::Enumeration => "enumeration",
            UserFieldType::Money => "money",
            UserFieldType::Employee => "employee",
            UserFieldType::File => "file",
        }
    }

    pub(crate) fn value_type(self) -> ValueType {
        match self {
            UserFieldType::String => ValueType::Text,
            UserFieldType::Integer | UserFieldType::Employee => ValueType::Integer,
            UserFieldType::Double => ValueType::Double,
            UserFieldType::Boolean => ValueType::Boolean,
            UserFieldType::Date => ValueType::Date,
            UserFieldType::Datetime => ValueType::DateTime,
            UserFieldType::Enumeration => ValueType::Enumeration,
            UserFieldType::Money => ValueType::MoneyUf,
            UserFieldType::File => ValueType::File,
        }
    }
}

impl FromStr for UserFieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserFieldType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = UserFieldType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown user field type '{s}' (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// What a user field adds to a field description.
#[derive(Clone, Debug)]
pub(crate) struct UserFieldInfo {
    pub id: u64,
    pub user_type: UserFieldType,
    pub label: String,
    /// Enumeration items: (ID, VALUE).
    pub items: Vec<(i64, String)>,
}

/// One field of an entity.
#[derive(Clone, Debug)]
pub(crate) struct FieldDef {
    pub name: String,
    pub value_type: ValueType,
    /// The `type` shown by `crm.*.fields` (`integer`, `crm_status`, `user`, ...).
    pub api_type: &'static str,
    pub title: String,
    pub read_only: bool,
    pub immutable: bool,
    pub required: bool,
    pub multiple: bool,
    /// Shown as `isDeprecated: true` by `fields`.
    pub deprecated: bool,
    /// `false`: described by `fields`, accepted by `add`/`update`, never returned by
    /// `get`/`list` (deals' `CONTACT_IDS`, contacts' `COMPANY_IDS`).
    pub readable: bool,
    pub status_type: Option<&'static str>,
    pub user_field: Option<UserFieldInfo>,
}

impl FieldDef {
    /// Whether `select: ["*"]` includes the field (standard, not multiple).
    pub fn in_star(&self) -> bool {
        self.user_field.is_none() && !self.multiple && self.readable
    }

    /// Whether `select: ["UF_*"]` includes the field (user field, not multiple).
    pub fn in_uf_star(&self) -> bool {
        self.user_field.is_some() && !self.multiple
    }
}

const RO: u8 = 1;
const IMM: u8 = 2;
const REQ: u8 = 4;
/// `isDeprecated: true` in the description.
const DEP: u8 = 8;
/// Multiple.
const MULT: u8 = 16;
/// Described by `fields` but never returned by `get` or `list`, even when selected.
const UNREAD: u8 = 32;

/// (name, api type, value type, flags, status type, title)
type Spec = (
    &'static str,
    &'static str,
    ValueType,
    u8,
    Option<&'static str>,
    &'static str,
);

use ValueType as V;

/// A run of fields in the order `fields` lists them. Runs that several entities share
/// are written once below; each entity's table strings runs together.
type Group = &'static [Spec];

const ID: Group = &[("ID", "integer", V::Integer, RO, None, "ID")];
const PERSON_NAME: Group = &[
    (
        "HONORIFIC",
        "crm_status",
        V::Code,
        0,
        Some("HONORIFIC"),
        "Salutation",
    ),
    ("NAME", "string", V::Text, 0, None, "First name"),
    ("SECOND_NAME", "string", V::Text, 0, None, "Second name"),
    ("LAST_NAME", "string", V::Text, 0, None, "Last name"),
];
const BIRTHDATE: Group = &[("BIRTHDATE", "date", V::Date, 0, None, "Date of birth")];
const SOURCE: Group = &[
    (
        "SOURCE_ID",
        "crm_status",
        V::Code,
        0,
        Some("SOURCE"),
        "Source",
    ),
    (
        "SOURCE_DESCRIPTION",
        "string",
        V::Text,
        0,
        None,
        "Source information",
    ),
];
const POST: Group = &[("POST", "string", V::Text, 0, None, "Position")];

/// The nine fields of a postal address under `$prefix` (`ADDRESS`, companies'
/// `REG_ADDRESS`), with the titles the portal gives them.
macro_rules! address_block {
    ($prefix:literal, [$line1:literal, $line2:literal, $city:literal, $postal_code:literal,
        $region:literal, $province:literal, $country:literal, $country_code:literal,
        $location:literal $(,)?]) => {
        &[
            ($prefix, "string", V::Text, 0, None, $line1),
            address_block!(@text $prefix, "_2", $line2),
            address_block!(@text $prefix, "_CITY", $city),
            address_block!(@text $prefix, "_POSTAL_CODE", $postal_code),
            address_block!(@text $prefix, "_REGION", $region),
            address_block!(@text $prefix, "_PROVINCE", $province),
            address_block!(@text $prefix, "_COUNTRY", $country),
            address_block!(@text $prefix, "_COUNTRY_CODE", $country_code),
            (concat!($prefix, "_LOC_ADDR_ID"), "integer", V::Integer, 0, None, $location),
        ]
    };
    (@text $prefix:literal, $suffix:literal, $title:literal) => {
        (concat!($prefix, $suffix), "string", V::Text, 0, None, $title)
    };
}

const ADDRESS: Group = address_block!(
    "ADDRESS",
    [
        "Address",
        "Address (line 2)",
        "City",
        "Postal Code",
        "Region",
        "Province",
        "Country",
        "Country Code",
        "Location Address ID",
    ]
);
const REG_ADDRESS: Group = address_block!(
    "REG_ADDRESS",
    [
        "Legal Address",
        "Legal Address (line 2)",
        "Legal Address City",
        "Legal Address Postal Code",
        "Legal Address Region",
        "Legal Address Province",
        "Legal Address Country",
        "Legal Address Country Code",
        "Legal Address Location ID",
    ]
);
const CURRENCY_ID: Group = &[("CURRENCY_ID", "crm_currency", V::Code, 0, None, "Currency")];
const OPPORTUNITY: Group = &[
    ("OPPORTUNITY", "double", V::Money, 0, None, "Amount"),
    (
        "IS_MANUAL_OPPORTUNITY",
        "char",
        V::Char,
        0,
        None,
        "Manual calculation mode",
    ),
];
const HAS_COMMUNICATIONS: Group = &[
    ("HAS_PHONE", "char", V::Char, RO, None, "Has phone"),
    ("HAS_EMAIL", "char", V::Char, RO, None, "Has email"),
    ("HAS_IMOL", "char", V::Char, RO, None, "Has Open Channel"),
];
const OPENED: Group = &[("OPENED", "char", V::Char, 0, None, "Available to everyone")];
const COMMENTS: Group = &[("COMMENTS", "string", V::Text, 0, None, "Comment")];
const PEOPLE: Group = &[
    (
        "ASSIGNED_BY_ID",
        "user",
        V::Integer,
        0,
        None,
        "Responsible person",
    ),
    ("CREATED_BY_ID", "user", V::Integer, RO, None, "Created by"),
    ("MODIFY_BY_ID", "user", V::Integer, RO, None, "Modified by"),
];
const DATES: Group = &[
    (
        "DATE_CREATE",
        "datetime",
        V::DateTime,
        RO,
        None,
        "Created on",
    ),
    (
        "DATE_MODIFY",
        "datetime",
        V::DateTime,
        RO,
        None,
        "Modified on",
    ),
];
const MOVED_BY_ID: Group = &[(
    "MOVED_BY_ID",
    "user",
    V::Integer,
    RO,
    None,
    "Stage changed by",
)];
const MOVED_TIME: Group = &[(
    "MOVED_TIME",
    "datetime",
    V::DateTime,
    RO,
    None,
    "Stage change date",
)];
/// Deals' and leads' links: one company, contacts (the single one deprecated).
const COMPANY_AND_CONTACTS: Group = &[
    ("COMPANY_ID", "crm_company", V::Integer, 0, None, "Company"),
    (
        "CONTACT_ID",
        "crm_contact",
        V::Integer,
        DEP,
        None,
        "Contact",
    ),
    (
        "CONTACT_IDS",
        "crm_contact",
        V::Integer,
        MULT | UNREAD,
        None,
        "CONTACT_IDS",
    ),
];
const LEAD_ID: Group = &[("LEAD_ID", "crm_lead", V::Integer, RO, None, "Lead")];
const ORIGIN: Group = &[
    (
        "ORIGINATOR_ID",
        "string",
        V::Text,
        0,
        None,
        "External source",
    ),
    (
        "ORIGIN_ID",
        "string",
        V::Text,
        0,
        None,
        "Item ID in data source",
    ),
];
const ORIGIN_VERSION: Group = &[(
    "ORIGIN_VERSION",
    "string",
    V::Text,
    0,
    None,
    "Original version",
)];
const UTM: Group = &[
    ("UTM_SOURCE", "string", V::Text, 0, None, "Ad system"),
    ("UTM_MEDIUM", "string", V::Text, 0, None, "Traffic type"),
    (
        "UTM_CAMPAIGN",
        "string",
        V::Text,
        0,
        None,
        "Ad campaign label",
    ),
    (
        "UTM_CONTENT",
        "string",
        V::Text,
        0,
        None,
        "Campaign contents",
    ),
    (
        "UTM_TERM",
        "string",
        V::Text,
        0,
        None,
        "Campaign search term",
    ),
];
const LAST_ACTIVITY: Group = &[
    (
        "LAST_ACTIVITY_BY",
        "user",
        V::Integer,
        RO,
        None,
        "Last activity by",
    ),
    (
        "LAST_ACTIVITY_TIME",
        "datetime",
        V::DateTime,
        RO,
        None,
        "Last activity",
    ),
];
/// `crm_multifield` fields: contacts, leads and companies list them last.
const MULTIFIELDS: Group = &[
    (
        "PHONE",
        "crm_multifield",
        V::Multifield,
        MULT,
        None,
        "Phone",
    ),
    (
        "EMAIL",
        "crm_multifield",
        V::Multifield,
        MULT,
        None,
        "E-mail",
    ),
    (
        "WEB",
        "crm_multifield",
        V::Multifield,
        MULT,
        None,
        "Website",
    ),
    (
        "IM",
        "crm_multifield",
        V::Multifield,
        MULT,
        None,
        "Messenger",
    ),
    ("LINK", "crm_multifield", V::Multifield, MULT, None, "LINK"),
];

const DEAL: &[Group] = &[
    ID,
    &[
        ("TITLE", "string", V::Text, 0, None, "Name"),
        (
            "TYPE_ID",
            "crm_status",
            V::Code,
            0,
            Some("DEAL_TYPE"),
            "Type",
        ),
        (
            "CATEGORY_ID",
            "crm_category",
            V::Integer,
            IMM,
            None,
            "Pipeline",
        ),
        (
            "STAGE_ID",
            "crm_status",
            V::Code,
            0,
            Some("DEAL_STAGE"),
            "Deal stage",
        ),
        (
            "STAGE_SEMANTIC_ID",
            "string",
            V::Code,
            RO,
            None,
            "Stage group",
        ),
        ("IS_NEW", "char", V::Char, RO, None, "New deal"),
        ("IS_RECURRING", "char", V::Char, 0, None, "Recurring deal"),
        (
            "IS_RETURN_CUSTOMER",
            "char",
            V::Char,
            0,
            None,
            "Repeat deal",
        ),
        (
            "IS_REPEATED_APPROACH",
            "char",
            V::Char,
            0,
            None,
            "Repeated inquiry",
        ),
        ("PROBABILITY", "integer", V::Integer, 0, None, "Probability"),
    ],
    CURRENCY_ID,
    OPPORTUNITY,
    &[("TAX_VALUE", "double", V::Money, 0, None, "Tax rate")],
    COMPANY_AND_CONTACTS,
    &[
        ("QUOTE_ID", "crm_quote", V::Integer, RO, None, "Estimate"),
        ("BEGINDATE", "date", V::Date, 0, None, "Start date"),
        (
            "CLOSEDATE",
            "date",
            V::Date,
            0,
            None,
            "Estimated close date",
        ),
    ],
    OPENED,
    &[("CLOSED", "char", V::Char, 0, None, "Closed")],
    COMMENTS,
    PEOPLE,
    DATES,
    SOURCE,
    LEAD_ID,
    &[
        (
            "ADDITIONAL_INFO",
            "string",
            V::Text,
            0,
            None,
            "Additional information",
        ),
        ("LOCATION_ID", "location", V::Integer, 0, None, "Location"),
    ],
    ORIGIN,
    UTM,
    MOVED_BY_ID,
    MOVED_TIME,
    LAST_ACTIVITY,
];

const CONTACT: &[Group] = &[
    ID,
    PERSON_NAME,
    &[("PHOTO", "file", V::File, 0, None, "Photo")],
    BIRTHDATE,
    &[(
        "TYPE_ID",
        "crm_status",
        V::Code,
        0,
        Some("CONTACT_TYPE"),
        "Contact type",
    )],
    SOURCE,
    POST,
    ADDRESS,
    COMMENTS,
    OPENED,
    &[("EXPORT", "char", V::Char, 0, None, "Included in export")],
    HAS_COMMUNICATIONS,
    PEOPLE,
    DATES,
    &[
        (
            "COMPANY_ID",
            "crm_company",
            V::Integer,
            DEP,
            None,
            "Company",
        ),
        (
            "COMPANY_IDS",
            "crm_company",
            V::Integer,
            MULT | UNREAD,
            None,
            "COMPANY_IDS",
        ),
    ],
    LEAD_ID,
    ORIGIN,
    ORIGIN_VERSION,
    UTM,
    LAST_ACTIVITY,
    MULTIFIELDS,
];

const LEAD: &[Group] = &[
    ID,
    &[("TITLE", "string", V::Text, 0, None, "Lead name")],
    PERSON_NAME,
    BIRTHDATE,
    &[("COMPANY_TITLE", "string", V::Text, 0, None, "Company name")],
    SOURCE,
    &[
        (
            "STATUS_ID",
            "crm_status",
            V::Code,
            0,
            Some("STATUS"),
            "Status",
        ),
        (
            "STATUS_DESCRIPTION",
            "string",
            V::Text,
            0,
            None,
            "Status information",
        ),
        (
            "STATUS_SEMANTIC_ID",
            "string",
            V::Code,
            RO,
            None,
            "Status group",
        ),
    ],
    POST,
    ADDRESS,
    CURRENCY_ID,
    OPPORTUNITY,
    HAS_COMMUNICATIONS,
    OPENED,
    COMMENTS,
    PEOPLE,
    MOVED_BY_ID,
    DATES,
    MOVED_TIME,
    COMPANY_AND_CONTACTS,
    &[
        (
            "IS_RETURN_CUSTOMER",
            "char",
            V::Char,
            RO,
            None,
            "Repeat lead",
        ),
        (
            "DATE_CLOSED",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Closed on",
        ),
    ],
    ORIGIN,
    UTM,
    LAST_ACTIVITY,
    MULTIFIELDS,
];

const COMPANY: &[Group] = &[
    ID,
    &[
        ("TITLE", "string", V::Text, REQ, None, "Company name"),
        (
            "COMPANY_TYPE",
            "crm_status",
            V::Code,
            0,
            Some("COMPANY_TYPE"),
            "Company type",
        ),
        ("LOGO", "file", V::File, 0, None, "Logo"),
    ],
    ADDRESS,
    &[("ADDRESS_LEGAL", "string", V::Text, 0, None, "Legal Address")],
    REG_ADDRESS,
    &[
        (
            "BANKING_DETAILS",
            "string",
            V::Text,
            0,
            None,
            "Banking Details",
        ),
        (
            "INDUSTRY",
            "crm_status",
            V::Code,
            0,
            Some("INDUSTRY"),
            "Industry",
        ),
        (
            "EMPLOYEES",
            "crm_status",
            V::Code,
            0,
            Some("EMPLOYEES"),
            "Employees",
        ),
    ],
    CURRENCY_ID,
    &[("REVENUE", "double", V::Money, 0, None, "Annual revenue")],
    OPENED,
    COMMENTS,
    HAS_COMMUNICATIONS,
    &[("IS_MY_COMPANY", "char", V::Char, 0, None, "My company")],
    PEOPLE,
    DATES,
    LEAD_ID,
    ORIGIN,
    ORIGIN_VERSION,
    UTM,
    LAST_ACTIVITY,
    MULTIFIELDS,
];

/// The standard fields of a smart process's items, under the names the portal stores
/// them (`CREATED_TIME`, `UPDATED_BY`, `MOVED_BY`...), in the order `crm.item.fields`
/// lists them; the `type` is the one `crm.item.fields` shows.
const SMART: &[Group] = &[
    ID,
    &[
        ("TITLE", "string", V::Text, 0, None, "Name"),
        ("XML_ID", "string", V::Text, 0, None, "External code"),
        (
            "CREATED_TIME",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Created at",
        ),
        (
            "UPDATED_TIME",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Updated at",
        ),
        ("CREATED_BY", "user", V::Integer, RO, None, "Created by"),
        ("UPDATED_BY", "user", V::Integer, RO, None, "Updated by"),
        ("ASSIGNED_BY_ID", "user", V::Integer, 0, None, "Assigned to"),
        (
            "OPENED",
            "boolean",
            V::Char,
            REQ,
            None,
            "Publicly available",
        ),
        (
            "WEBFORM_ID",
            "integer",
            V::Integer,
            0,
            None,
            "Created by CRM form",
        ),
        ("BEGINDATE", "date", V::Date, 0, None, "Start date"),
        ("CLOSEDATE", "date", V::Date, 0, None, "End date"),
        ("COMPANY_ID", "crm_company", V::Integer, 0, None, "Company"),
        (
            "CONTACT_ID",
            "crm_contact",
            V::Integer,
            DEP,
            None,
            "Contact",
        ),
        (
            "CONTACT_IDS",
            "crm_contact",
            V::Integer,
            MULT | UNREAD,
            None,
            "CONTACT_IDS",
        ),
        (
            "CATEGORY_ID",
            "crm_category",
            V::Integer,
            0,
            None,
            "Pipeline",
        ),
        ("MOVED_TIME", "datetime", V::DateTime, RO, None, "Moved at"),
        ("MOVED_BY", "user", V::Integer, RO, None, "Moved by"),
        ("STAGE_ID", "crm_status", V::Code, 0, None, "Stage"),
        (
            "PREVIOUS_STAGE_ID",
            "crm_status",
            V::Code,
            RO,
            None,
            "Previous stage",
        ),
        (
            "SOURCE_ID",
            "crm_status",
            V::Code,
            0,
            Some("SOURCE"),
            "Source",
        ),
        (
            "SOURCE_DESCRIPTION",
            "text",
            V::Text,
            0,
            None,
            "Additional source info",
        ),
        ("CURRENCY_ID", "crm_currency", V::Code, 0, None, "Currency"),
        (
            "IS_MANUAL_OPPORTUNITY",
            "boolean",
            V::Char,
            0,
            None,
            "Amount calculation mode",
        ),
        ("OPPORTUNITY", "double", V::Money, 0, None, "Amount"),
        ("TAX_VALUE", "double", V::Money, 0, None, "Tax amount"),
        (
            "MYCOMPANY_ID",
            "crm_company",
            V::Integer,
            0,
            None,
            "Your company details",
        ),
        (
            "LAST_ACTIVITY_BY",
            "user",
            V::Integer,
            RO,
            None,
            "Last activity in timeline by",
        ),
        (
            "LAST_ACTIVITY_TIME",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Last activity",
        ),
    ],
];

/// The portal's users as `user.get` shows them (a table, so `user.get` filters and pages
/// with the same engine as the CRM lists).
const USER: &[Group] = &[
    ID,
    &[
        ("ACTIVE", "char", V::Char, 0, None, "Active"),
        ("NAME", "string", V::Text, 0, None, "First name"),
        ("LAST_NAME", "string", V::Text, 0, None, "Last name"),
        ("SECOND_NAME", "string", V::Text, 0, None, "Second name"),
        ("EMAIL", "string", V::Text, 0, None, "E-mail"),
        (
            "LAST_LOGIN",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Last login",
        ),
        (
            "DATE_REGISTER",
            "datetime",
            V::DateTime,
            RO,
            None,
            "Registered",
        ),
        ("TIME_ZONE", "string", V::Text, 0, None, "Time zone"),
        ("IS_ONLINE", "char", V::Char, RO, None, "Online"),
        ("PERSONAL_GENDER", "string", V::Text, 0, None, "Gender"),
        ("PERSONAL_BIRTHDAY", "date", V::Date, 0, None, "Birthday"),
        ("PERSONAL_MOBILE", "string", V::Text, 0, None, "Mobile"),
        ("PERSONAL_CITY", "string", V::Text, 0, None, "City"),
        ("WORK_PHONE", "string", V::Text, 0, None, "Work phone"),
        ("WORK_POSITION", "string", V::Text, 0, None, "Position"),
        (
            "UF_EMPLOYMENT_DATE",
            "date",
            V::Date,
            0,
            None,
            "Employment date",
        ),
        (
            "UF_DEPARTMENT",
            "integer",
            V::Integer,
            MULT,
            None,
            "Departments",
        ),
        ("USER_TYPE", "string", V::Code, RO, None, "User type"),
    ],
];

/// The standard fields of a smart process's items.
pub(crate) fn smart_fields() -> Vec<FieldDef> {
    field_defs(SMART)
}

/// The fields `user.get` returns.
pub(crate) fn user_fields() -> Vec<FieldDef> {
    field_defs(USER)
}

/// The standard fields of an entity, in the order `crm.<entity>.fields` and `get`
/// list them, the multi-fields last.
pub(crate) fn standard_fields(entity: Entity) -> Vec<FieldDef> {
    let groups = match entity {
        Entity::Deal => DEAL,
        Entity::Contact => CONTACT,
        Entity::Lead => LEAD,
        Entity::Company => COMPANY,
    };
    field_defs(groups)
}

fn field_defs(groups: &[Group]) -> Vec<FieldDef> {
    groups
        .iter()
        .flat_map(|group| group.iter())
        .map(
            |&(name, api_type, value_type, flags, status_type, title)| FieldDef {
                name: name.to_string(),
                value_type,
                api_type,
                title: title.to_string(),
                read_only: flags & RO != 0,
                immutable: flags & IMM != 0,
                required: flags & REQ != 0,
                multiple: flags & MULT != 0,
                deprecated: flags & DEP != 0,
                readable: flags & UNREAD == 0,
                status_type,
                user_field: None,
            },
        )
        .collect()
}

/// A user field definition (`FieldDef` with its `UserFieldInfo`).
pub(crate) fn user_field(
    id: u64,
    name: String,
    user_type: UserFieldType,
    multiple: bool,
) -> FieldDef {
    let items = if user_type == UserFieldType::Enumeration {
        (0..4)
            .map(|i| (id as i64 * 10 + i, format!("List item #{}", i + 1)))
            .collect()
    } else {
        Vec::new()
    };
    let label = format!("Custom {} field {id}", user_type.as_str());
    FieldDef {
        title: name.clone(),
        name,
        value_type: user_type.value_type(),
        api_type: user_type.as_str(),
        read_only: false,
        immutable: false,
        required: false,
        multiple,
        deprecated: false,
        readable: true,
        status_type: None,
        user_field: Some(UserFieldInfo {
            id,
            user_type,
            label,
            items,
        }),
    }
}

/// Values the value types accept for `VALUE_TYPE` of each multi-field.
pub(crate) fn multifield_value_types(code: &str) -> &'static [&'static str] {
    match code {
        "PHONE" => &["WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"],
        "EMAIL" => &["WORK", "HOME", "MAILING", "OTHER"],
        "WEB" => &["WORK", "HOME", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"],
        // A service field; its value types are undocumented.
        "LINK" => &["USER", "WORK", "HOME", "OTHER"],
        _ => &[
            "TELEGRAM", "VK", "SKYPE", "VIBER", "BITRIX24", "OPENLINE", "IMOL", "ICQ", "MSN",
            "JABBER", "OTHER",
        ],
    }
}

/// Normalises a requested user field code the way `crm.*.userfield.add` does:
/// upper-case, `UF_CRM_` prefix, `A-Z0-9_` only, at most 50 characters.
pub(crate) fn normalize_uf_code(code: &str) -> Result<String, String> {
    let upper = code.trim().to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UF_CRM_")
        .or_else(|| upper.strip_prefix("UF_"))
        .unwrap_or(&upper);
    if rest.is_empty() {
        return Err("The 'FIELD_NAME' field is not found.".to_string());
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "Field name '{code}' may contain only A-Z, 0-9 and _."
        ));
    }
    let name = format!("UF_CRM_{rest}");
    if name.len() > 50 {
        return Err(format!(
            "Field name is too long: '{name}' has more than 50 characters."
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uf_codes_are_normalized_like_the_portal() {
        assert_eq!(
            normalize_uf_code("manager_note").unwrap(),
            "UF_CRM_MANAGER_NOTE"
        );
        assert_eq!(normalize_uf_code("UF_X").unwrap(), "UF_CRM_X");
        assert_eq!(normalize_uf_code("UF_CRM_ABC").unwrap(), "UF_CRM_ABC");
        assert!(normalize_uf_code("bad name").is_err());
        assert!(normalize_uf_code(&"A".repeat(50)).is_err());
        assert!(normalize_uf_code("").is_err());
    }

    /// One line per standard field: entity, code, `fields` type, value type, flags,
    /// status type and title, in the order `fields` and `get` list them.
    fn describe_standard_fields() -> String {
        let mut out = String::new();
        for entity in Entity::ALL {
            for f in standard_fields(entity) {
                let flags: Vec<&str> = [
                    (f.read_only, "ro"),
                    (f.immutable, "imm"),
                    (f.required, "req"),
                    (f.deprecated, "dep"),
                    (f.multiple, "mult"),
                    (!f.readable, "unread"),
                ]
                .into_iter()
                .filter_map(|(set, flag)| set.then_some(flag))
                .collect();
                out += &format!(
                    "{entity} {} {} {:?} [{}] {} {:?}\n",
                    f.name,
                    f.api_type,
                    f.value_type,
                    flags.join(" "),
                    f.status_type.unwrap_or("-"),
                    f.title
                );
            }
        }
        out
    }

    #[test]
    fn standard_fields_match_the_snapshot() {
        assert_eq!(
            describe_standard_fields(),
            include_str!("snapshots/standard_fields.txt")
        );
    }

    #[test]
    fn multifields_come_after_standard_fields() {
        let contact = standard_fields(Entity::Contact);
        assert_eq!(contact[0].name, "ID");
        assert_eq!(contact.last().unwrap().name, "LINK");
        assert!(
            standard_fields(Entity::Deal)
                .iter()
                .all(|f| f.value_type != ValueType::Multifield)
        );
    }

    #[test]
    fn entity_names_parse_case_insensitively() {
        assert_eq!("Deal".parse::<Entity>().unwrap(), Entity::Deal);
        assert!(
            "smart"
                .parse::<Entity>()
                .unwrap_err()
                .contains("deal, contact, lead or company")
        );
    }
}
