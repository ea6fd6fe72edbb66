//! The portal's data: the four CRM tables, product rows, timeline comments,
//! notifications and workflow replies, with the write rules of the old API.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::generate::{self, Population, RowContext, SimRng};
use crate::robots::Robots;
use crate::schema::{
    Change, Entity, UserFieldType, normalize_uf_code, standard_fields, user_field,
};
use crate::statuses::Statuses;
use crate::table::{Cell, Hiding, ID_COLUMN, Reader, Stored, Table, render_row};
use crate::values::PortalClock;

/// How many records of each entity the portal starts with.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeedPlan {
    pub seed: u64,
    pub deals: usize,
    pub contacts: usize,
    pub leads: usize,
    pub companies: usize,
    pub user_fields: usize,
    /// Seeded records were modified at the latest at this moment.
    pub anchor: i64,
}

impl SeedPlan {
    fn count(&self, entity: Entity) -> usize {
        match entity {
            Entity::Deal => self.deals,
            Entity::Contact => self.contacts,
            Entity::Lead => self.leads,
            Entity::Company => self.companies,
        }
    }

    fn population(&self) -> Population {
        Population {
            contacts: self.contacts as u64,
            companies: self.companies as u64,
        }
    }
}

/// A request to add a user field at runtime.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserFieldRequest {
    pub entity: Entity,
    #[serde(rename = "type")]
    pub field_type: UserFieldType,
    #[serde(default)]
    pub multiple: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Take `code` verbatim even when it is not a valid user field name.
    #[serde(default)]
    pub unchecked: bool,
}

/// A request for random changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MutateRequest {
    pub entity: Entity,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub adds: usize,
    #[serde(default)]
    pub updates: usize,
    #[serde(default)]
    pub deletes: usize,
}

/// The body of `POST /_sim/mutate`: a `MutateRequest` plus `repeat_share`, the
/// share (0..1) of the updated records changed a second time within the same
/// second, so both changes carry the same `DATE_MODIFY` (seeded draws).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MutateBody {
    #[serde(flatten)]
    pub request: MutateRequest,
    #[serde(default)]
    pub repeat_share: f64,
}

/// The IDs a mutation touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutateOutcome {
    pub added: Vec<u64>,
    pub updated: Vec<u64>,
    /// Updated records changed twice in the same second (each change fires an event).
    #[serde(default)]
    pub repeated: Vec<u64>,
    pub deleted: Vec<u64>,
}

/// A request to hide a seeded share of an entity's records from the webhook's
/// user, as a role change does; a share of 0 shows every record again.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HideRequest {
    pub entity: Entity,
    pub share: f64,
    #[serde(default)]
    pub seed: u64,
}

pub(crate) struct Portal {
    tables: Vec<Table>,
    product_rows: HashMap<u64, Vec<Value>>,
    next_product_row_id: u64,
    pub comments: Vec<Value>,
    pub notifications: Vec<Value>,
    pub workflow_replies: Vec<Value>,
    /// Robot registrations and the event tokens issued to robot calls.
    pub robots: Robots,
    /// Reference lists (`crm.status.list`).
    pub statuses: Statuses,
    next_user_field_id: u64,
    /// For generated user field names and values.
    rng: SimRng,
}

fn entity_index(entity: Entity) -> usize {
    Entity::ALL.iter().position(|e| *e == entity).unwrap_or(0)
}

impl Portal {
    /// The seeded state: the same plan always gives the same records.
    pub fn seeded(plan: &SeedPlan) -> Portal {
        let mut portal = Portal {
            tables: Entity::ALL
                .iter()
                .map(|&e| Table::new(e, standard_fields(e)))
                .collect(),
            product_rows: HashMap::new(),
            next_product_row_id: 1,
            comments: Vec::new(),
            notifications: Vec::new(),
            workflow_replies: Vec::new(),
            robots: Robots::default(),
            statuses: Statuses::default(),
            next_user_field_id: 101,
            rng: SimRng::seed_from_u64(plan.seed ^ 0x5eed_f1e1d),
        };
        for entity in Entity::ALL {
            for i in 0..plan.user_fields {
                let field_type = UserFieldType::ALL[i % UserFieldType::ALL.len()];
                // The first round of types is single-valued, every later round multiple
                // (booleans cannot be multiple on a real portal).
                let multiple =
                    i >= UserFieldType::ALL.len() && field_type != UserFieldType::Boolean;
                let code = format!("UF_CRM_{}", 1_721_244_482_000 + i as u64);
                let id = portal.take_user_field_id();
                portal
                    .table_mut(entity)
                    .add_field(user_field(id, code, field_type, multiple), |_| Stored::Null);
            }
            let mut rng = SimRng::seed_from_u64(
                plan.seed
                    .wrapping_mul(31)
                    .wrapping_add(entity_index(entity) as u64),
            );
            let table = portal.table_mut(entity);
            for id in 1..=plan.count(entity) as u64 {
                let row = RowContext::seeded(id, plan.anchor, &mut rng);
                let values = generate::record(table, &row, plan.population(), &mut rng);
                table.push(values);
                derive(table, table.rows() - 1, None);
            }
            table.next_id = plan.count(entity) as u64 + 1;
        }
        portal
    }

    pub fn table(&self, entity: Entity) -> &Table {
        &self.tables[entity_index(entity)]
    }

    fn table_mut(&mut self, entity: Entity) -> &mut Table {
        &mut self.tables[entity_index(entity)]
    }

    fn take_user_field_id(&mut self) -> u64 {
        let id = self.next_user_field_id;
        self.next_user_field_id += 1;
        id
    }

    /// The row of a record the webhook's user may read: `Not found` for a missing
    /// record, `Access denied.` for a hidden one, as the old API answers.
    fn readable_row(&self, entity: Entity, id: u64) -> Result<usize, ApiError> {
        let table = self.table(entity);
        let row = table.row_of(id).ok_or_else(ApiError::not_found)?;
        if table.is_hidden(row) {
            return Err(ApiError::access_denied());
        }
        Ok(row)
    }

    /// Every field of a record, as `crm.<entity>.get` returns it.
    pub fn get(
        &self,
        entity: Entity,
        id: u64,
        clock: &PortalClock,
    ) -> Result<Map<String, Value>, ApiError> {
        let row = self.readable_row(entity, id)?;
        let table = self.table(entity);
        let columns: Vec<usize> = (0..table.fields.len()).collect();
        Ok(render_row(table, row, &columns, clock, Reader::Get))
    }

    /// Every live record (hidden ones too), ordered by ID, as `get` shows it.
    pub fn dump(&self, entity: Entity, clock: &PortalClock) -> Vec<Value> {
        let table = self.table(entity);
        let columns: Vec<usize> = (0..table.fields.len()).collect();
        (0..table.rows())
            .filter(|&row| table.is_live(row))
            .map(|row| Value::Object(render_row(table, row, &columns, clock, Reader::Get)))
            .collect()
    }

    /// Hides a seeded share of the entity's records from the webhook's user (a
    /// share of 0 shows them all again); returns how many live records are hidden.
    pub fn hide(&mut self, request: &HideRequest) -> Result<usize, String> {
        if !(0.0..=1.0).contains(&request.share) {
            return Err(format!(
                "share must be between 0 and 1, got {}",
                request.share
            ));
        }
        let table = self.table_mut(request.entity);
        table.set_hiding((request.share > 0.0).then_some(Hiding {
            share: request.share,
            seed: request.seed,
        }));
        Ok(table.hidden_count())
    }

    /// `crm.<entity>.add`: defaults, then the client's writable fields.
    pub fn add(
        &mut self,
        entity: Entity,
        input: &Map<String, Value>,
        now: i64,
        user: i64,
        clock: &PortalClock,
    ) -> Result<u64, ApiError> {
        let table = self.table_mut(entity);
        let id = table.next_id;
        let mut merged = defaults(entity, id, user, clock);
        merged.extend(input.iter().map(|(k, v)| (k.clone(), v.clone())));
        let changes = parse_fields(table, None, &merged, clock)?;
        for field in table.fields.iter().filter(|f| f.required) {
            let given = changes
                .iter()
                .any(|(c, v)| table.fields[*c].name == field.name && *v != Stored::Null);
            if !given {
                return Err(ApiError::crm(format!(
                    "Required fields are not filled: {}",
                    field.title
                )));
            }
        }
        let changes = with_first_links(table, changes);
        let mut values = vec![Stored::Null; table.fields.len()];
        for (column, value) in changes {
            values[column] = value;
        }
        values[ID_COLUMN] = Stored::Int(id as i64);
        for (name, value) in [
            ("DATE_CREATE", Stored::Time(now)),
            ("DATE_MODIFY", Stored::Time(now)),
            ("CREATED_BY_ID", Stored::Int(user)),
            ("MODIFY_BY_ID", Stored::Int(user)),
            ("IS_NEW", Stored::Flag(true)),
        ] {
            if let Some(column) = table.column(name) {
                values[column] = value;
            }
        }
        table.push(values);
        table.next_id += 1;
        derive(table, table.rows() - 1, Some((now, user)));
        Ok(id)
    }

    /// `crm.<entity>.update`: only the given writable fields change; `DATE_MODIFY`
    /// moves to now, in whole seconds, so two updates within one second leave the
    /// same `DATE_MODIFY` (it never moves backwards).
    pub fn update(
        &mut self,
        entity: Entity,
        id: u64,
        input: &Map<String, Value>,
        now: i64,
        user: i64,
        clock: &PortalClock,
    ) -> Result<(), ApiError> {
        let row = self.readable_row(entity, id)?;
        self.update_row(entity, row, input, now, user, clock)
    }

    /// An update by anyone (the API's user, or other users through `mutate`).
    fn update_row(
        &mut self,
        entity: Entity,
        row: usize,
        input: &Map<String, Value>,
        now: i64,
        user: i64,
        clock: &PortalClock,
    ) -> Result<(), ApiError> {
        let table = self.table_mut(entity);
        let changes = parse_fields(table, Some(row), input, clock)?;
        let changes = with_first_links(table, changes);
        let stage_before = stage_of(table, row);
        for (column, value) in changes {
            table.set(row, column, value);
        }
        let stage_after = stage_of(table, row);
        if let Some(column) = table.column("DATE_MODIFY") {
            let previous = match table.cell(row, column) {
                Cell::Time(t) => t,
                _ => i64::MIN,
            };
            table.set(row, column, Stored::Time(now.max(previous)));
        }
        if let Some(column) = table.column("MODIFY_BY_ID") {
            table.set(row, column, Stored::Int(user));
        }
        let moved = (stage_before != stage_after).then_some((now, user));
        derive(table, row, moved);
        Ok(())
    }

    pub fn delete(&mut self, entity: Entity, id: u64) -> Result<(), ApiError> {
        let row = self.readable_row(entity, id)?;
        self.delete_row(entity, row, id);
        Ok(())
    }

    fn delete_row(&mut self, entity: Entity, row: usize, id: u64) {
        self.table_mut(entity).delete(row);
        if entity == Entity::Deal {
            self.product_rows.remove(&id);
        }
    }

    pub fn exists(&self, entity: Entity, id: u64) -> bool {
        self.table(entity).row_of(id).is_some()
    }

    /// `Ok` when the record exists and the webhook's user may read it.
    pub fn check_readable(&self, entity: Entity, id: u64) -> Result<(), ApiError> {
        self.readable_row(entity, id).map(drop)
    }

    /// Adds a user field; every existing record gets a value for it.
    pub fn add_user_field(&mut self, request: &UserFieldRequest) -> Result<String, String> {
        if request.multiple && request.field_type == UserFieldType::Boolean {
            return Err("boolean user fields cannot be multiple".to_string());
        }
        let id = self.take_user_field_id();
        let name = match &request.code {
            Some(code) if request.unchecked => code.clone(),
            Some(code) => normalize_uf_code(code)?,
            None => format!("UF_CRM_{}", 1_721_300_000_000 + id),
        };
        if name.is_empty() {
            return Err("the user field code is empty".to_string());
        }
        let table = &self.tables[entity_index(request.entity)];
        if table.fields.iter().any(|f| f.name == name) {
            return Err(format!("field {name} already exists on {}", request.entity));
        }
        let field = user_field(id, name.clone(), request.field_type, request.multiple);
        let mut rng = std::mem::replace(&mut self.rng, SimRng::seed_from_u64(0));
        let table = self.table_mut(request.entity);
        let mut values = Vec::with_capacity(table.rows());
        for _ in 0..table.rows() {
            values.push(generate::user_field_value(
                &mut table.ids,
                &field,
                request.field_type,
                &mut rng,
            ));
        }
        self.rng = rng;
        let mut values = values.into_iter();
        self.table_mut(request.entity)
            .add_field(field, |_| values.next().unwrap_or(Stored::Null));
        Ok(name)
    }

    /// Random adds, updates and deletes from a seed; updated and deleted records
    /// are distinct live records.
    pub fn mutate(
        &mut self,
        body: &MutateBody,
        now: i64,
        user: i64,
        clock: &PortalClock,
    ) -> Result<MutateOutcome, String> {
        let request = &body.request;
        if !(0.0..=1.0).contains(&body.repeat_share) {
            return Err(format!(
                "repeat_share must be between 0 and 1, got {}",
                body.repeat_share
            ));
        }
        let entity = request.entity;
        let live = self.table(entity).live_ids();
        if request.updates + request.deletes > live.len() {
            return Err(format!(
                "{} updates + {} deletes need that many live {entity} records, but there are {}",
                request.updates,
                request.deletes,
                live.len()
            ));
        }
        let mut rng = SimRng::seed_from_u64(request.seed);
        let chosen =
            rand::seq::index::sample(&mut rng, live.len(), request.updates + request.deletes);
        let chosen: Vec<u64> = chosen.iter().map(|i| live[i]).collect();
        let (updated, deleted) = chosen.split_at(request.updates);
        let mut outcome = MutateOutcome::default();
        let population = Population {
            contacts: self.table(Entity::Contact).next_id - 1,
            companies: self.table(Entity::Company).next_id - 1,
        };
        for _ in 0..request.adds {
            let table = self.table_mut(entity);
            let id = table.next_id;
            let row = RowContext {
                id,
                created: now,
                modified: now,
            };
            let values = generate::record(table, &row, population, &mut rng);
            table.push(values);
            table.next_id += 1;
            derive(table, table.rows() - 1, None);
            outcome.added.push(id);
        }
        let row_of = |portal: &Portal, id: u64| {
            portal
                .table(entity)
                .row_of(id)
                .ok_or_else(|| format!("{entity} {id} vanished during the mutation"))
        };
        for &id in updated {
            let row = row_of(self, id)?;
            let input = random_update(entity, id, &mut rng);
            self.update_row(entity, row, &input, now, user, clock)
                .map_err(|e| e.description)?;
            outcome.updated.push(id);
            // A second change within the same second: DATE_MODIFY stays the same.
            if body.repeat_share > 0.0 && rng.random_bool(body.repeat_share) {
                let input = random_update(entity, id, &mut rng);
                self.update_row(entity, row, &input, now, user, clock)
                    .map_err(|e| e.description)?;
                outcome.repeated.push(id);
            }
        }
        for &id in deleted {
            let row = row_of(self, id)?;
            self.delete_row(entity, row, id);
            outcome.deleted.push(id);
        }
        outcome.updated.sort_unstable();
        outcome.repeated.sort_unstable();
        outcome.deleted.sort_unstable();
        Ok(outcome)
    }

    /// The changes a mutation made, for outgoing events.
    pub fn mutation_changes(entity: Entity, outcome: &MutateOutcome) -> Vec<(Entity, Change, u64)> {
        let tagged = |ids: &[u64], change| {
            ids.iter()
                .map(move |&id| (entity, change, id))
                .collect::<Vec<_>>()
        };
        [
            tagged(&outcome.added, Change::Add),
            tagged(&outcome.updated, Change::Update),
            tagged(&outcome.repeated, Change::Update),
            tagged(&outcome.deleted, Change::Delete),
        ]
        .concat()
    }

    pub fn product_rows(&self, deal: u64) -> Vec<Value> {
        self.product_rows.get(&deal).cloned().unwrap_or_default()
    }

    /// `crm.deal.productrows.set`: the given rows replace all rows of the deal.
    pub fn set_product_rows(&mut self, deal: u64, rows: &[&Value]) -> Result<(), ApiError> {
        let mut stored = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let Some(row) = row.as_object() else {
                return Err(ApiError::crm(format!(
                    "Product row #{} must be an object of fields",
                    i + 1
                )));
            };
            let id = self.next_product_row_id + i as u64;
            stored.push(product_row(deal, id, i, row)?);
        }
        self.next_product_row_id += rows.len() as u64;
        self.product_rows.insert(deal, stored);
        Ok(())
    }

    /// The file `file_id` that the record's file field holds, for the file's URL.
    pub fn file(
        &self,
        entity: Entity,
        owner: u64,
        field_name: &str,
        file_id: i64,
    ) -> Option<crate::table::StoredFile> {
        let table = self.table(entity);
        let row = table.row_of(owner)?;
        table.file_in(row, field_name, file_id)
    }
}

/// What `add` fills in when the client leaves fields out.
fn defaults(entity: Entity, id: u64, user: i64, clock: &PortalClock) -> Map<String, Value> {
    let today = clock.today();
    let mut map = Map::new();
    let mut set = |k: &str, v: Value| {
        map.insert(k.to_string(), v);
    };
    set("ASSIGNED_BY_ID", json!(user));
    set("OPENED", json!("Y"));
    match entity {
        Entity::Deal => {
            set("TITLE", json!(format!("Deal #{id}")));
            set("TYPE_ID", json!("SALE"));
            set("CATEGORY_ID", json!(0));
            set("STAGE_ID", json!("NEW"));
            set("CURRENCY_ID", json!("USD"));
            set("OPPORTUNITY", json!(0));
            set("TAX_VALUE", json!(0));
            set("IS_MANUAL_OPPORTUNITY", json!("N"));
            set("IS_RECURRING", json!("N"));
            set("IS_RETURN_CUSTOMER", json!("N"));
            set("IS_REPEATED_APPROACH", json!("N"));
            set("SOURCE_ID", json!("CALL"));
            set(
                "BEGINDATE",
                json!(crate::values::day_to_date(today).to_string()),
            );
            set(
                "CLOSEDATE",
                json!(crate::values::day_to_date(today + 7).to_string()),
            );
        }
        Entity::Lead => {
            set("TITLE", json!(format!("Lead #{id}")));
            set("STATUS_ID", json!("NEW"));
            set("CURRENCY_ID", json!("USD"));
            set("OPPORTUNITY", json!(0));
            set("IS_MANUAL_OPPORTUNITY", json!("N"));
            set("SOURCE_ID", json!("CALL"));
        }
        Entity::Contact => {
            set("TYPE_ID", json!("CLIENT"));
            set("SOURCE_ID", json!("SELF"));
            set("EXPORT", json!("Y"));
        }
        Entity::Company => {
            set("COMPANY_TYPE", json!("CUSTOMER"));
            set("CURRENCY_ID", json!("USD"));
            set("IS_MY_COMPANY", json!("N"));
        }
    }
    map
}

/// Parses every writable field of the input; read-only and unknown fields are ignored.
fn parse_fields(
    table: &mut Table,
    row: Option<usize>,
    input: &Map<String, Value>,
    clock: &PortalClock,
) -> Result<Vec<(usize, Stored)>, ApiError> {
    let mut changes = Vec::new();
    for (name, value) in input {
        let Some(column) = table.writable_column(name) else {
            continue;
        };
        let field = &table.fields[column];
        if field.read_only || (row.is_some() && field.immutable) {
            continue;
        }
        let stored = table
            .parse_input(column, row, value, clock)
            .map_err(ApiError::crm)?;
        changes.retain(|(c, _)| *c != column);
        changes.push((column, stored));
    }
    Ok(changes)
}

/// The multiple link fields and the deprecated single links they drive.
const LINK_LISTS: [(&str, &str); 2] =
    [("CONTACT_IDS", "CONTACT_ID"), ("COMPANY_IDS", "COMPANY_ID")];

/// A link list given (`CONTACT_IDS`) also sets its deprecated single link
/// (`CONTACT_ID`) to the list's first item, as the portal does.
fn with_first_links(table: &Table, mut changes: Vec<(usize, Stored)>) -> Vec<(usize, Stored)> {
    for (list_name, single_name) in LINK_LISTS {
        let (Some(list), Some(single)) = (table.column(list_name), table.column(single_name))
        else {
            continue;
        };
        let first = changes.iter().find_map(|(column, value)| match value {
            Stored::List(items) if *column == list => {
                Some(items.first().cloned().unwrap_or(Stored::Null))
            }
            _ => None,
        });
        if let Some(first) = first {
            changes.retain(|(column, _)| *column != single);
            changes.push((single, first));
        }
    }
    changes
}

/// The deal stage or lead status of a record.
fn stage_of(table: &Table, row: usize) -> Option<String> {
    let column = table
        .column("STAGE_ID")
        .or_else(|| table.column("STATUS_ID"))?;
    match table.cell(row, column) {
        Cell::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Keeps derived fields consistent: stage semantics and `CLOSED`, `HAS_*` flags,
/// and who moved the stage when (`moved`).
fn derive(table: &mut Table, row: usize, moved: Option<(i64, i64)>) {
    if let Some(stage) = stage_of(table, row) {
        let semantic = generate::stage_semantic(&stage);
        for name in ["STAGE_SEMANTIC_ID", "STATUS_SEMANTIC_ID"] {
            if let Some(column) = table.column(name) {
                table.set(row, column, Stored::Str(semantic.into()));
            }
        }
        if table.entity == Entity::Deal
            && let Some(column) = table.column("CLOSED")
        {
            table.set(row, column, Stored::Flag(semantic != "P"));
        }
    }
    if let Some((now, user)) = moved {
        for (name, value) in [
            ("MOVED_TIME", Stored::Time(now)),
            ("MOVED_BY_ID", Stored::Int(user)),
        ] {
            if let Some(column) = table.column(name) {
                table.set(row, column, value);
            }
        }
    }
    let has = |table: &Table, code: &str, only: Option<&[&str]>| match table
        .column(code)
        .map(|c| table.cell(row, c))
    {
        Some(Cell::Json(Value::Array(items))) => items.iter().any(|item| {
            only.is_none_or(|types| {
                item["VALUE_TYPE"]
                    .as_str()
                    .is_some_and(|t| types.contains(&t))
            })
        }),
        _ => false,
    };
    // Deals carry neither the multi-fields nor the `HAS_*` flags: nothing to set.
    let flags = [
        ("HAS_PHONE", has(table, "PHONE", None)),
        ("HAS_EMAIL", has(table, "EMAIL", None)),
        ("HAS_IMOL", has(table, "IM", Some(&["IMOL", "OPENLINE"]))),
    ];
    for (name, value) in flags {
        if let Some(column) = table.column(name) {
            table.set(row, column, Stored::Flag(value));
        }
    }
}

fn random_update(entity: Entity, id: u64, rng: &mut SimRng) -> Map<String, Value> {
    use rand::RngExt;
    let n: u32 = rng.random_range(0..1_000_000);
    let mut input = Map::new();
    match entity {
        Entity::Deal => {
            input.insert("TITLE".into(), json!(format!("Deal #{id} (revision {n})")));
            input.insert("OPPORTUNITY".into(), json!(f64::from(n) / 10.0));
            let stages = ["NEW", "PREPARATION", "EXECUTING", "WON", "LOSE"];
            input.insert("STAGE_ID".into(), json!(stages[n as usize % stages.len()]));
        }
        Entity::Lead => {
            input.insert("TITLE".into(), json!(format!("Lead #{id} (revision {n})")));
            input.insert("OPPORTUNITY".into(), json!(f64::from(n) / 10.0));
        }
        Entity::Contact => {
            input.insert("POST".into(), json!(format!("Position {n}")));
            input.insert(
                "PHONE".into(),
                json!([{"VALUE": format!("+1555{n:07}"), "VALUE_TYPE": "MOBILE"}]),
            );
        }
        Entity::Company => {
            input.insert(
                "TITLE".into(),
                json!(format!("Company {id} (revision {n})")),
            );
            input.insert("REVENUE".into(), json!(n));
        }
    }
    input.insert(
        "COMMENTS".into(),
        json!(format!("Changed by the simulator, revision {n}")),
    );
    input
}

/// One product row as `crm.deal.productrows.get` returns it.
fn product_row(
    deal: u64,
    id: u64,
    index: usize,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    use crate::values::{parse_flag, parse_float, parse_int, scalar_text};
    let get = |key: &str| {
        input
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let number = |key: &str, default: f64| -> Result<f64, ApiError> {
        match get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => parse_float(v).ok_or_else(|| {
                ApiError::crm(format!(
                    "Product row #{}: {key} {v} is not a number",
                    index + 1
                ))
            }),
        }
    };
    let price = number("PRICE", 0.0)?;
    let quantity = number("QUANTITY", 1.0)?;
    let tax_rate = number("TAX_RATE", 0.0)?;
    let discount_type = get("DISCOUNT_TYPE_ID").and_then(parse_int).unwrap_or(2);
    if discount_type != 1 && discount_type != 2 {
        return Err(ApiError::crm(format!(
            "Product row #{}: DISCOUNT_TYPE_ID must be 1 (absolute) or 2 (percent)",
            index + 1
        )));
    }
    let tax_included = get("TAX_INCLUDED").and_then(parse_flag).unwrap_or(false);
    let (discount_rate, discount_sum) = if discount_type == 1 {
        let sum = number("DISCOUNT_SUM", 0.0)?;
        let before = price + sum;
        (
            if before == 0.0 {
                0.0
            } else {
                sum / before * 100.0
            },
            sum,
        )
    } else {
        let rate = number("DISCOUNT_RATE", 0.0)?;
        if rate >= 100.0 {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                "Discount Sum (DISCOUNT_SUM) is required if Percentage Discount Type (DISCOUNT_TYPE_ID) is defined and Discount Rate (DISCOUNT_RATE) is 100%<br>",
            ));
        }
        (rate, price / (1.0 - rate / 100.0) - price)
    };
    let exclusive = if tax_included {
        price / (1.0 + tax_rate / 100.0)
    } else {
        price
    };
    let product_id = get("PRODUCT_ID").and_then(parse_int).unwrap_or(0);
    let name = get("PRODUCT_NAME")
        .and_then(scalar_text)
        .unwrap_or_else(|| format!("[{product_id}]"));
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "ID": id.to_string(),
        "OWNER_ID": deal.to_string(),
        "OWNER_TYPE": "D",
        "PRODUCT_ID": product_id,
        "PRODUCT_NAME": name,
        "ORIGINAL_PRODUCT_NAME": name,
        "PRODUCT_DESCRIPTION": get("PRODUCT_DESCRIPTION").and_then(scalar_text),
        "PRICE": price,
        "PRICE_EXCLUSIVE": round(exclusive),
        "PRICE_NETTO": round(exclusive + discount_sum),
        "PRICE_BRUTTO": round((exclusive + discount_sum) * (1.0 + tax_rate / 100.0)),
        "PRICE_ACCOUNT": format!("{price:.2}"),
        "QUANTITY": quantity,
        "DISCOUNT_TYPE_ID": discount_type,
        "DISCOUNT_RATE": round(discount_rate),
        "DISCOUNT_SUM": round(discount_sum),
        "TAX_RATE": tax_rate,
        "TAX_INCLUDED": if tax_included { "Y" } else { "N" },
        "CUSTOMIZED": "Y",
        "MEASURE_CODE": get("MEASURE_CODE").and_then(parse_int).unwrap_or(796),
        "MEASURE_NAME": get("MEASURE_NAME").and_then(scalar_text).unwrap_or_else(|| "pcs".to_string()),
        "SORT": get("SORT").and_then(parse_int).unwrap_or((index as i64 + 1) * 10),
        "XML_ID": null,
        "TYPE": 1,
        "STORE_ID": null,
        "RESERVE_ID": null,
        "DATE_RESERVE_END": null,
        "RESERVE_QUANTITY": null,
    }))
}
