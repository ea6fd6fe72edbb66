//! The portal's data: the four CRM tables, the smart processes, users, pipelines,
//! currencies, product rows, timeline comments, notifications and workflow replies,
//! with the write rules of the old API and of `crm.item.*`.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::generate::{self, Population, RowContext, SimRng, SmartSeed};
use crate::products::ProductRows;
use crate::reference::{self, Categories, Currency, stage_list_id, stages_of};
use crate::robots::Robots;
use crate::schema::{
    Change, Entity, Kind, UserFieldType, normalize_uf_code, smart_fields, standard_fields,
    user_field, user_fields,
};
use crate::smart::{SmartProcessConfig, SmartType};
use crate::stagehistory::{self, Position, StageHistory};
use crate::statuses::Statuses;
use crate::table::{Cell, Hiding, ID_COLUMN, Reader, Stored, Table, render_row};
use crate::values::PortalClock;

/// What the portal starts with.
#[derive(Clone, Debug, Default)]
pub(crate) struct SeedPlan {
    pub seed: u64,
    pub deals: usize,
    pub contacts: usize,
    pub leads: usize,
    pub companies: usize,
    pub user_fields: usize,
    /// Seeded records were modified at the latest at this moment.
    pub anchor: i64,
    /// Deal pipelines besides the general one; seeded deals spread over all of them.
    pub deal_categories: Vec<String>,
    /// Seeded deals get up to this many product rows each.
    pub product_rows: usize,
    pub smart_processes: Vec<SmartProcessConfig>,
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

/// `POST /_sim/userfields` for a smart process (or a classic entity by `entityTypeId`):
/// the field is named as the portal names them, `UF_CRM_<typeId>_<code or number>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemUserFieldRequest {
    pub entity_type_id: u32,
    #[serde(rename = "type")]
    pub field_type: UserFieldType,
    #[serde(default)]
    pub multiple: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
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

/// `POST /_sim/mutate` addressed by `entityTypeId` (a smart process, or 1..=4 for the
/// classic entities): seeded random adds, updates and deletes; every change fires its
/// event (`ONCRMDYNAMICITEM*` for a smart process).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMutateRequest {
    pub entity_type_id: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub adds: usize,
    #[serde(default)]
    pub updates: usize,
    #[serde(default)]
    pub deletes: usize,
    /// Share (0..1) of the updated items changed twice within one second.
    #[serde(default)]
    pub repeat_share: f64,
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

/// A random mutation of one table, however it was asked for.
#[derive(Clone, Debug)]
pub(crate) struct Mutation {
    pub kind: Kind,
    pub seed: u64,
    pub adds: usize,
    pub updates: usize,
    pub deletes: usize,
    pub repeat_share: f64,
}

impl From<&MutateBody> for Mutation {
    fn from(body: &MutateBody) -> Mutation {
        Mutation {
            kind: body.request.entity.into(),
            seed: body.request.seed,
            adds: body.request.adds,
            updates: body.request.updates,
            deletes: body.request.deletes,
            repeat_share: body.repeat_share,
        }
    }
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

/// Why a record cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    Missing,
    /// Hidden from the webhook's user.
    Hidden,
}

/// Which API writes: the old `crm.*` one (read-only and immutable fields are skipped
/// here, errors are the old ones) or `crm.item.*` (the caller decided which fields it
/// writes; `names` maps a column to the name the client used, for error messages).
#[derive(Clone, Copy)]
pub(crate) enum WriteMode<'a> {
    Classic,
    Item { names: &'a HashMap<String, String> },
}

impl WriteMode<'_> {
    fn value_error(&self, column: &str, problem: String) -> ApiError {
        match self {
            WriteMode::Classic => ApiError::crm(problem),
            WriteMode::Item { names } => {
                let name = names.get(column).map_or(column, String::as_str);
                let detail = problem
                    .split_once(": ")
                    .map_or(problem.as_str(), |(_, d)| d);
                ApiError::new(
                    400,
                    "CRM_FIELD_ERROR_VALUE_NOT_VALID",
                    format!("Invalid value for field \"{name}\": {detail}"),
                )
            }
        }
    }

    fn is_item(&self) -> bool {
        matches!(self, WriteMode::Item { .. })
    }
}

/// What an update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Updated {
    /// `false`: `crm.item.update` changed no value, so nothing was saved.
    pub saved: bool,
    /// The record moved to another pipeline.
    pub category_moved: bool,
}

/// A smart process: its type and its items.
pub(crate) struct SmartProcess {
    pub info: SmartType,
    /// Up to this many product rows for items `mutate` adds or changes.
    pub product_rows: usize,
    pub table: Table,
}

pub(crate) struct Portal {
    tables: Vec<Table>,
    pub smart: Vec<SmartProcess>,
    /// The portal's users (`user.get`).
    pub users: Table,
    pub categories: Categories,
    pub currencies: Vec<Currency>,
    pub products: ProductRows,
    /// Product rows per seeded or mutated deal (0: deals get none on their own).
    deal_product_rows: usize,
    pub comments: Vec<Value>,
    pub notifications: Vec<Value>,
    pub workflow_replies: Vec<Value>,
    /// Robot registrations and the event tokens issued to robot calls.
    pub robots: Robots,
    /// Reference lists (`crm.status.list`).
    pub statuses: Statuses,
    /// `crm.stagehistory.list`: creations, stage and pipeline moves of deals, leads and
    /// smart-process items (kept when a record is deleted).
    pub history: StageHistory,
    next_user_field_id: u64,
    /// For generated user field names and values.
    rng: SimRng,
    seed: u64,
}

fn entity_index(entity: Entity) -> usize {
    Entity::ALL.iter().position(|e| *e == entity).unwrap_or(0)
}

/// The kind an `entityTypeId` names on a portal with these smart processes.
pub(crate) fn kind_of(smart: &[SmartProcess], entity_type_id: u32) -> Option<Kind> {
    if let Some(entity) = Entity::from_entity_type_id(entity_type_id) {
        return Some(Kind::Classic(entity));
    }
    smart
        .iter()
        .any(|s| s.info.entity_type_id == entity_type_id)
        .then_some(Kind::Smart(entity_type_id))
}

impl Portal {
    /// The seeded state: the same plan always gives the same records.
    pub fn seeded(plan: &SeedPlan) -> Portal {
        let mut portal = Portal {
            tables: Entity::ALL
                .iter()
                .map(|&e| Table::new(e, standard_fields(e)))
                .collect(),
            smart: Vec::new(),
            users: Table::new(Kind::Users, user_fields()),
            categories: Categories::default(),
            currencies: reference::seeded_currencies(plan.anchor),
            products: ProductRows::default(),
            deal_product_rows: plan.product_rows,
            comments: Vec::new(),
            notifications: Vec::new(),
            workflow_replies: Vec::new(),
            robots: Robots::default(),
            statuses: Statuses::default(),
            history: StageHistory::default(),
            next_user_field_id: 101,
            rng: SimRng::seed_from_u64(plan.seed ^ 0x5eed_f1e1d),
            seed: plan.seed,
        };
        for entity in Entity::ALL {
            for i in 0..plan.user_fields {
                let (field_type, multiple) = cycled_user_field(i);
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
                let values = generate::record(table, &row, plan.population(), None, &mut rng);
                table.push(values);
                derive(table, table.rows() - 1, None);
            }
            table.next_id = plan.count(entity) as u64 + 1;
        }
        portal.seed_deal_pipelines(plan);
        // One creation entry per seeded deal and lead, in ID order (deals after they
        // were spread over the pipelines).
        for entity in [Entity::Deal, Entity::Lead] {
            let table = &portal.tables[entity_index(entity)];
            portal.history.record_creations(table);
        }
        portal.seed_users(plan.anchor);
        for config in &plan.smart_processes {
            // Configurations were validated before the portal was built.
            if let Err(problem) = portal.add_smart_process(config, plan.anchor, plan.population()) {
                tracing::warn!(%problem, "smart process not created");
            }
        }
        portal
    }

    /// The extra deal pipelines with their stages; seeded deals spread over all of them
    /// by ID (deal N goes to pipeline N mod (pipelines + 1), 0 being the general one),
    /// and get product rows.
    fn seed_deal_pipelines(&mut self, plan: &SeedPlan) {
        let mut ids = vec![0];
        for name in &plan.deal_categories {
            let category = self.add_category(2, name, 200);
            ids.push(category.id);
        }
        let table = self.table_mut(Entity::Deal);
        if ids.len() > 1
            && let (Some(category), Some(stage)) = (table.roles.category, table.roles.stage)
        {
            for row in 0..table.rows() {
                let pipeline = ids[table.id_at(row) as usize % ids.len()];
                if pipeline == 0 {
                    continue;
                }
                let code = match table.cell(row, stage) {
                    Cell::Str(s) => s.to_string(),
                    _ => "NEW".to_string(),
                };
                table.set(row, category, Stored::Int(pipeline));
                table.set(
                    row,
                    stage,
                    Stored::Str(format!("C{pipeline}:{code}").into()),
                );
            }
        }
        if plan.product_rows > 0 {
            let mut rng = SimRng::seed_from_u64(plan.seed ^ 0x0070_7264_7277);
            let ids = self.table(Entity::Deal).live_ids();
            for id in ids {
                let rows = generate::product_rows(plan.product_rows, &mut rng);
                self.products.seed(Entity::Deal.into(), id, &rows);
            }
        }
    }

    fn seed_users(&mut self, anchor: i64) {
        let mut rng = SimRng::seed_from_u64(self.seed ^ 0x0075_7365_7273);
        for id in 1..=generate::USERS as u64 {
            let registered = anchor - rng.random_range(30..1_500) * 86_400;
            let values = generate::user_record(&self.users, id, registered, &mut rng);
            self.users.push(values);
        }
        self.users.next_id = generate::USERS as u64 + 1;
    }

    pub fn table(&self, entity: Entity) -> &Table {
        &self.tables[entity_index(entity)]
    }

    fn table_mut(&mut self, entity: Entity) -> &mut Table {
        &mut self.tables[entity_index(entity)]
    }

    /// The table of a kind (`None` for a smart process the portal does not have).
    pub fn table_of(&self, kind: Kind) -> Option<&Table> {
        match kind {
            Kind::Classic(entity) => Some(self.table(entity)),
            Kind::Smart(id) => self
                .smart
                .iter()
                .find(|s| s.info.entity_type_id == id)
                .map(|s| &s.table),
            Kind::Users => Some(&self.users),
        }
    }

    fn table_of_mut(&mut self, kind: Kind) -> Option<&mut Table> {
        match kind {
            Kind::Classic(entity) => Some(self.table_mut(entity)),
            Kind::Smart(id) => self
                .smart
                .iter_mut()
                .find(|s| s.info.entity_type_id == id)
                .map(|s| &mut s.table),
            Kind::Users => Some(&mut self.users),
        }
    }

    pub fn smart_process(&self, entity_type_id: u32) -> Option<&SmartProcess> {
        self.smart
            .iter()
            .find(|s| s.info.entity_type_id == entity_type_id)
    }

    /// The kind an `entityTypeId` names here.
    pub fn kind(&self, entity_type_id: u32) -> Option<Kind> {
        kind_of(&self.smart, entity_type_id)
    }

    fn take_user_field_id(&mut self) -> u64 {
        let id = self.next_user_field_id;
        self.next_user_field_id += 1;
        id
    }

    /// The row of a record the webhook's user may read.
    pub fn row_for(&self, kind: Kind, id: u64) -> Result<usize, Unreadable> {
        let table = self.table_of(kind).ok_or(Unreadable::Missing)?;
        let row = table.row_of(id).ok_or(Unreadable::Missing)?;
        if table.is_hidden(row) {
            return Err(Unreadable::Hidden);
        }
        Ok(row)
    }

    /// The row of a record the webhook's user may read: `Not found` for a missing
    /// record, `Access denied.` for a hidden one, as the old API answers.
    fn readable_row(&self, entity: Entity, id: u64) -> Result<usize, ApiError> {
        self.row_for(entity.into(), id).map_err(|why| match why {
            Unreadable::Missing => ApiError::not_found(),
            Unreadable::Hidden => ApiError::access_denied(),
        })
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

    /// Hides a seeded share of a table's records from the webhook's user (a share of 0
    /// shows them all again); returns how many live records are hidden.
    pub fn hide(&mut self, kind: Kind, share: f64, seed: u64) -> Result<usize, String> {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("share must be between 0 and 1, got {share}"));
        }
        let table = self
            .table_of_mut(kind)
            .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?;
        table.set_hiding((share > 0.0).then_some(Hiding { share, seed }));
        Ok(table.hidden_count())
    }

    /// What `add` fills in when the client leaves fields out.
    fn defaults(
        &self,
        kind: Kind,
        id: u64,
        user: i64,
        clock: &PortalClock,
        item: bool,
    ) -> Map<String, Value> {
        let today = clock.today();
        let mut map = Map::new();
        let mut set = |k: &str, v: Value| {
            map.insert(k.to_string(), v);
        };
        set("ASSIGNED_BY_ID", json!(user));
        set("OPENED", json!("Y"));
        let day = |offset: i32| json!(crate::values::day_to_date(today + offset).to_string());
        match kind {
            Kind::Classic(Entity::Deal) => {
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
                set("BEGINDATE", day(0));
                set("CLOSEDATE", day(7));
            }
            Kind::Classic(Entity::Lead) => {
                set("TITLE", json!(format!("Lead #{id}")));
                set("STATUS_ID", json!("NEW"));
                set("CURRENCY_ID", json!("USD"));
                set("OPPORTUNITY", json!(0));
                set("IS_MANUAL_OPPORTUNITY", json!("N"));
                set("SOURCE_ID", json!("CALL"));
            }
            Kind::Classic(Entity::Contact) => {
                set("TYPE_ID", json!("CLIENT"));
                set("SOURCE_ID", json!("SELF"));
                set("EXPORT", json!("Y"));
                if item {
                    // crm.item.add names a contact in its last name.
                    set("LAST_NAME", json!(format!("Contact #{id}")));
                }
            }
            Kind::Classic(Entity::Company) => {
                set("COMPANY_TYPE", json!("CUSTOMER"));
                set("CURRENCY_ID", json!("USD"));
                set("IS_MY_COMPANY", json!("N"));
                if item {
                    // crm.item.* has no required standard field: the title is generated.
                    set("TITLE", json!(format!("Company #{id}")));
                }
            }
            Kind::Smart(entity_type_id) => {
                if let Some(smart) = self.smart_process(entity_type_id) {
                    set("TITLE", json!(format!("{} #{id}", smart.info.title)));
                    if smart.info.with_products {
                        set("CURRENCY_ID", json!("USD"));
                        set("OPPORTUNITY", json!(0));
                        set("TAX_VALUE", json!(0));
                        set("IS_MANUAL_OPPORTUNITY", json!("N"));
                    }
                }
                if let Some(category) = self.categories.default_of(entity_type_id) {
                    set("CATEGORY_ID", json!(category.id));
                    if let Some((stage, _)) = stages_of(entity_type_id, category.id).first() {
                        set("STAGE_ID", json!(stage));
                    }
                }
                set("SOURCE_ID", json!("CALL"));
                set("BEGINDATE", day(0));
                set("CLOSEDATE", day(7));
            }
            Kind::Users => {}
        }
        map
    }

    /// The first stage of a pipeline when the input names the pipeline but no stage.
    fn first_stage_of(&self, kind: Kind, input: &Map<String, Value>) -> Option<String> {
        let category = input
            .get("CATEGORY_ID")
            .and_then(crate::values::parse_int)?;
        if input.get("STAGE_ID").is_some_and(|s| !s.is_null()) {
            return None;
        }
        let entity_type_id = kind.entity_type_id();
        self.categories.get(entity_type_id, category)?;
        stages_of(entity_type_id, category)
            .into_iter()
            .next()
            .map(|(stage, _)| stage)
    }

    /// A pipeline named in item input that the type does not have.
    fn check_category(&self, kind: Kind, input: &Map<String, Value>) -> Result<(), ApiError> {
        let Some(value) = input.get("CATEGORY_ID").filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let known = crate::values::parse_int(value)
            .is_some_and(|id| self.categories.get(kind.entity_type_id(), id).is_some());
        if known {
            Ok(())
        } else {
            Err(ApiError::new(
                400,
                "CRM_FIELD_ERROR_VALUE_NOT_VALID",
                format!("Invalid value for field \"categoryId\": no pipeline {value}"),
            ))
        }
    }

    /// Adds a record (`crm.<entity>.add`, `crm.item.add`): defaults, then the client's
    /// fields.
    pub fn add(
        &mut self,
        kind: Kind,
        input: &Map<String, Value>,
        now: i64,
        user: i64,
        clock: &PortalClock,
        mode: WriteMode,
    ) -> Result<u64, ApiError> {
        let id = self
            .table_of(kind)
            .map(|t| t.next_id)
            .ok_or_else(|| smart_not_found(kind))?;
        if mode.is_item() {
            self.check_category(kind, input)?;
        }
        let mut merged = self.defaults(kind, id, user, clock, mode.is_item());
        merged.extend(input.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(stage) = self.first_stage_of(kind, &merged) {
            merged.insert("STAGE_ID".into(), json!(stage));
        }
        let table = self
            .table_of_mut(kind)
            .ok_or_else(|| smart_not_found(kind))?;
        let changes = parse_fields(table, None, &merged, clock, mode)?;
        if !mode.is_item() {
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
        }
        let changes = with_first_links(table, changes);
        let mut values = vec![Stored::Null; table.fields.len()];
        for (column, value) in changes {
            values[column] = value;
        }
        values[ID_COLUMN] = Stored::Int(id as i64);
        let roles = table.roles;
        for (column, value) in [
            (roles.created_time, Stored::Time(now)),
            (roles.updated_time, Stored::Time(now)),
            (roles.created_by, Stored::Int(user)),
            (roles.updated_by, Stored::Int(user)),
            (table.column("IS_NEW"), Stored::Flag(true)),
        ] {
            if let Some(column) = column {
                values[column] = value;
            }
        }
        table.push(values);
        table.next_id += 1;
        let row = table.rows() - 1;
        derive(table, row, Some((now, user)));
        let position = Position::of(table, row);
        self.history
            .record(kind, stagehistory::CREATED, &position, now);
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
        self.update_row(
            entity.into(),
            row,
            input,
            now,
            user,
            clock,
            WriteMode::Classic,
        )
        .map(drop)
    }

    /// An update by anyone (the API's user, or other users through `mutate`). In item
    /// mode an update that changes no value saves nothing (`DATE_MODIFY` stays), a
    /// pipeline may change (its first stage follows unless a stage is given), and
    /// `previousStageId` keeps the stage a smart-process item left.
    #[allow(clippy::too_many_arguments)]
    pub fn update_row(
        &mut self,
        kind: Kind,
        row: usize,
        input: &Map<String, Value>,
        now: i64,
        user: i64,
        clock: &PortalClock,
        mode: WriteMode,
    ) -> Result<Updated, ApiError> {
        let mut input = input.clone();
        if mode.is_item() {
            self.check_category(kind, &input)?;
            if let Some(stage) = self.first_stage_of(kind, &input) {
                input.insert("STAGE_ID".into(), json!(stage));
            }
        }
        let table = self
            .table_of_mut(kind)
            .ok_or_else(|| smart_not_found(kind))?;
        let changes = parse_fields(table, Some(row), &input, clock, mode)?;
        let changes = with_first_links(table, changes);
        if mode.is_item()
            && changes
                .iter()
                .all(|(column, value)| same_value(table.cell(row, *column), value))
        {
            return Ok(Updated::default());
        }
        let category_before = table.roles.category.map(|c| cell_text(table.cell(row, c)));
        let stage_before = stage_of(table, row);
        let position_before = Position::of(table, row);
        for (column, value) in changes {
            table.set(row, column, value);
        }
        let stage_after = stage_of(table, row);
        let category_after = table.roles.category.map(|c| cell_text(table.cell(row, c)));
        if let Some(column) = table.roles.updated_time {
            let previous = match table.cell(row, column) {
                Cell::Time(t) => t,
                _ => i64::MIN,
            };
            table.set(row, column, Stored::Time(now.max(previous)));
        }
        if let Some(column) = table.roles.updated_by {
            table.set(row, column, Stored::Int(user));
        }
        if stage_before != stage_after
            && let (Some(column), Some(before)) = (table.roles.previous_stage, &stage_before)
        {
            table.set(row, column, Stored::Str(before.as_str().into()));
        }
        let moved = (stage_before != stage_after).then_some((now, user));
        derive(table, row, moved);
        let position_after = Position::of(table, row);
        if let Some(type_id) = stagehistory::change_type(&position_before, &position_after) {
            self.history.record(kind, type_id, &position_after, now);
        }
        Ok(Updated {
            saved: true,
            category_moved: category_before != category_after,
        })
    }

    pub fn delete(&mut self, entity: Entity, id: u64) -> Result<(), ApiError> {
        let row = self.readable_row(entity, id)?;
        self.delete_row(entity.into(), row, id);
        Ok(())
    }

    /// Deletes a record and its product rows.
    pub fn delete_row(&mut self, kind: Kind, row: usize, id: u64) {
        if let Some(table) = self.table_of_mut(kind) {
            table.delete(row);
        }
        self.products.remove(kind, id);
    }

    pub fn exists(&self, entity: Entity, id: u64) -> bool {
        self.table(entity).row_of(id).is_some()
    }

    /// `Ok` when the record exists and the webhook's user may read it.
    pub fn check_readable(&self, entity: Entity, id: u64) -> Result<(), ApiError> {
        self.readable_row(entity, id).map(drop)
    }

    /// Adds a user field to a classic entity; every existing record gets a value for it.
    pub fn add_user_field(&mut self, request: &UserFieldRequest) -> Result<String, String> {
        let name = match &request.code {
            Some(code) if request.unchecked => Some(code.clone()),
            Some(code) => Some(normalize_uf_code(code)?),
            None => None,
        };
        self.add_user_field_to(
            request.entity.into(),
            request.field_type,
            request.multiple,
            name,
        )
    }

    /// Adds a user field named as the portal names them on the type (a smart process's
    /// `UF_CRM_<typeId>_<CODE>`, a classic entity's `UF_CRM_<CODE>`).
    pub fn add_item_user_field(
        &mut self,
        request: &ItemUserFieldRequest,
    ) -> Result<String, String> {
        let kind = self
            .kind(request.entity_type_id)
            .ok_or_else(|| format!("no smart process {}", request.entity_type_id))?;
        let name = match (&request.code, kind) {
            (None, _) => None,
            (Some(code), Kind::Smart(entity_type_id)) => {
                let type_id = self
                    .smart_process(entity_type_id)
                    .map_or(0, |s| s.info.type_id);
                let normalized = normalize_uf_code(code)?;
                let rest = normalized
                    .strip_prefix(&format!("UF_CRM_{type_id}_"))
                    .or_else(|| normalized.strip_prefix("UF_CRM_"))
                    .unwrap_or(&normalized)
                    .to_string();
                let name = format!("UF_CRM_{type_id}_{rest}");
                if name.len() > 50 {
                    return Err(format!(
                        "Field name is too long: '{name}' has more than 50 characters."
                    ));
                }
                Some(name)
            }
            (Some(code), _) => Some(normalize_uf_code(code)?),
        };
        self.add_user_field_to(kind, request.field_type, request.multiple, name)
    }

    /// Adds a user field to any table; existing records get generated values.
    fn add_user_field_to(
        &mut self,
        kind: Kind,
        field_type: UserFieldType,
        multiple: bool,
        name: Option<String>,
    ) -> Result<String, String> {
        if multiple && field_type == UserFieldType::Boolean {
            return Err("boolean user fields cannot be multiple".to_string());
        }
        let id = self.take_user_field_id();
        let name = match (name, kind) {
            (Some(name), _) => name,
            (None, Kind::Smart(entity_type_id)) => self
                .smart_process(entity_type_id)
                .map(|s| s.info.user_field_name(1_721_812_760_000 + id))
                .ok_or_else(|| format!("no smart process {entity_type_id}"))?,
            (None, _) => format!("UF_CRM_{}", 1_721_300_000_000 + id),
        };
        if name.is_empty() {
            return Err("the user field code is empty".to_string());
        }
        let table = self
            .table_of(kind)
            .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?;
        if table.fields.iter().any(|f| f.name == name) {
            return Err(format!(
                "field {name} already exists on {}",
                kind_label(kind)
            ));
        }
        let field = user_field(id, name.clone(), field_type, multiple);
        let mut rng = std::mem::replace(&mut self.rng, SimRng::seed_from_u64(0));
        let table = self
            .table_of_mut(kind)
            .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?;
        let mut values = Vec::with_capacity(table.rows());
        for _ in 0..table.rows() {
            values.push(generate::user_field_value(
                &mut table.ids,
                &field,
                field_type,
                &mut rng,
            ));
        }
        self.rng = rng;
        let mut values = values.into_iter();
        if let Some(table) = self.table_of_mut(kind) {
            table.add_field(field, |_| values.next().unwrap_or(Stored::Null));
        }
        Ok(name)
    }

    /// Adds a pipeline with its stage list.
    pub fn add_category(
        &mut self,
        entity_type_id: u32,
        name: &str,
        sort: i64,
    ) -> reference::Category {
        let category = self.categories.add(entity_type_id, name, sort);
        let stages = stages_of(entity_type_id, category.id);
        self.statuses.add_stage_list(
            &stage_list_id(entity_type_id, category.id),
            category.id,
            &stages,
        );
        category
    }

    /// Adds a smart process: its type, pipelines and stages, user fields and seeded items
    /// (created before `anchor`). Returns the type as `crm.type.list` shows it.
    pub fn add_smart_process(
        &mut self,
        config: &SmartProcessConfig,
        anchor: i64,
        population: Population,
    ) -> Result<SmartType, String> {
        config.validate()?;
        let entity_type_id = config.entity_type_id;
        if self.smart_process(entity_type_id).is_some() {
            return Err(format!("smart process {entity_type_id} already exists"));
        }
        let type_id = match config.type_id {
            Some(id) if self.smart.iter().any(|s| s.info.type_id == id) => {
                return Err(format!("a smart process with type id {id} already exists"));
            }
            Some(id) => id,
            None => self.smart.iter().map(|s| s.info.type_id).max().unwrap_or(0) + 1,
        };
        let info = SmartType {
            entity_type_id,
            type_id,
            title: config.title.trim().to_string(),
            code: config.code.clone(),
            with_products: config.with_products,
            created: anchor,
        };
        let mut pipelines = Vec::new();
        for (i, name) in std::iter::once("General")
            .chain(config.categories.iter().map(String::as_str))
            .enumerate()
        {
            let category = self.add_category(entity_type_id, name.trim(), 500 + i as i64 * 100);
            let stages = stages_of(entity_type_id, category.id)
                .into_iter()
                .map(|(stage, _)| stage)
                .collect();
            pipelines.push((category.id, stages));
        }
        let mut table = Table::new(Kind::Smart(entity_type_id), smart_fields());
        for i in 0..config.user_fields {
            let (field_type, multiple) = cycled_user_field(i);
            let id = self.take_user_field_id();
            let name = info.user_field_name(1_721_812_760_000 + i as u64);
            table.add_field(user_field(id, name, field_type, multiple), |_| Stored::Null);
        }
        let mut rng = SimRng::seed_from_u64(
            self.seed
                .wrapping_mul(131)
                .wrapping_add(u64::from(entity_type_id)),
        );
        let seed = SmartSeed {
            title: &info.title,
            with_products: info.with_products,
            categories: &pipelines,
        };
        for id in 1..=config.items as u64 {
            let row = RowContext::seeded(id, anchor, &mut rng);
            let values = generate::record(&mut table, &row, population, Some(&seed), &mut rng);
            table.push(values);
        }
        table.next_id = config.items as u64 + 1;
        let product_rows = if info.with_products {
            config.product_rows
        } else {
            0
        };
        if product_rows > 0 {
            let mut rng = SimRng::seed_from_u64(self.seed ^ u64::from(entity_type_id) << 20);
            for id in table.live_ids() {
                let rows = generate::product_rows(product_rows, &mut rng);
                self.products.seed(Kind::Smart(entity_type_id), id, &rows);
            }
        }
        self.history.record_creations(&table);
        self.smart.push(SmartProcess {
            info: info.clone(),
            product_rows,
            table,
        });
        Ok(info)
    }

    /// Whether a type has pipelines besides its default one.
    pub fn categories_enabled(&self, entity_type_id: u32) -> bool {
        self.categories.of(entity_type_id).len() > 1
    }

    /// Random adds, updates and deletes from a seed; updated and deleted records
    /// are distinct live records.
    pub fn mutate(
        &mut self,
        mutation: &Mutation,
        now: i64,
        user: i64,
        clock: &PortalClock,
    ) -> Result<MutateOutcome, String> {
        if !(0.0..=1.0).contains(&mutation.repeat_share) {
            return Err(format!(
                "repeat_share must be between 0 and 1, got {}",
                mutation.repeat_share
            ));
        }
        let kind = mutation.kind;
        let label = kind_label(kind);
        let live = self
            .table_of(kind)
            .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?
            .live_ids();
        if mutation.updates + mutation.deletes > live.len() {
            return Err(format!(
                "{} updates + {} deletes need that many live {label} records, but there are {}",
                mutation.updates,
                mutation.deletes,
                live.len()
            ));
        }
        let mut rng = SimRng::seed_from_u64(mutation.seed);
        // Product rows draw from their own stream, so the records' draws stay the same.
        let mut row_rng = SimRng::seed_from_u64(mutation.seed ^ 0x0070_7264_7277);
        let rows_per_record = match kind {
            Kind::Classic(Entity::Deal) => self.deal_product_rows,
            Kind::Smart(id) => self.smart_process(id).map_or(0, |s| s.product_rows),
            _ => 0,
        };
        let chosen =
            rand::seq::index::sample(&mut rng, live.len(), mutation.updates + mutation.deletes);
        let chosen: Vec<u64> = chosen.iter().map(|i| live[i]).collect();
        let (updated, deleted) = chosen.split_at(mutation.updates);
        let mut outcome = MutateOutcome::default();
        let population = Population {
            contacts: self.table(Entity::Contact).next_id - 1,
            companies: self.table(Entity::Company).next_id - 1,
        };
        let pipelines: Vec<(i64, Vec<String>)> = self
            .categories
            .of(kind.entity_type_id())
            .iter()
            .map(|c| {
                let stages = stages_of(kind.entity_type_id(), c.id)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                (c.id, stages)
            })
            .collect();
        let smart_info = match kind {
            Kind::Smart(id) => self.smart_process(id).map(|s| s.info.clone()),
            _ => None,
        };
        for _ in 0..mutation.adds {
            let seed = smart_info.as_ref().map(|info| SmartSeed {
                title: &info.title,
                with_products: info.with_products,
                categories: &pipelines,
            });
            let table = self
                .table_of_mut(kind)
                .ok_or_else(|| format!("no smart process {}", kind.entity_type_id()))?;
            let id = table.next_id;
            let row = RowContext {
                id,
                created: now,
                modified: now,
            };
            let values = generate::record(table, &row, population, seed.as_ref(), &mut rng);
            table.push(values);
            table.next_id += 1;
            let row = table.rows() - 1;
            derive(table, row, None);
            let position = Position::of(table, row);
            self.history
                .record(kind, stagehistory::CREATED, &position, now);
            if rows_per_record > 0 {
                let rows = generate::product_rows(rows_per_record, &mut row_rng);
                self.products.seed(kind, id, &rows);
            }
            outcome.added.push(id);
        }
        let row_of = |portal: &Portal, id: u64| {
            portal
                .table_of(kind)
                .and_then(|t| t.row_of(id))
                .ok_or_else(|| format!("{label} {id} vanished during the mutation"))
        };
        let amounts = smart_info.as_ref().is_some_and(|info| info.with_products);
        // The stages of the pipeline a record is in (none for the general deal pipeline,
        // whose stage codes have no prefix).
        let stages_at = |portal: &Portal, row: usize| -> Vec<String> {
            let Some(table) = portal.table_of(kind) else {
                return Vec::new();
            };
            let category = table.roles.category.and_then(|c| match table.cell(row, c) {
                Cell::Int(id) => Some(id),
                _ => None,
            });
            match (kind, category) {
                (Kind::Classic(Entity::Deal), Some(0) | None) => Vec::new(),
                (_, Some(category)) => pipelines
                    .iter()
                    .find(|(id, _)| *id == category)
                    .map(|(_, stages)| stages.clone())
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        for &id in updated {
            let row = row_of(self, id)?;
            let stages = stages_at(self, row);
            let input = random_update(kind, id, &stages, amounts, &mut rng);
            self.update_row(kind, row, &input, now, user, clock, WriteMode::Classic)
                .map_err(|e| e.description)?;
            if rows_per_record > 0 {
                let rows = generate::product_rows(rows_per_record, &mut row_rng);
                self.products.seed(kind, id, &rows);
            }
            outcome.updated.push(id);
            // A second change within the same second: DATE_MODIFY stays the same.
            if mutation.repeat_share > 0.0 && rng.random_bool(mutation.repeat_share) {
                let input = random_update(kind, id, &stages, amounts, &mut rng);
                self.update_row(kind, row, &input, now, user, clock, WriteMode::Classic)
                    .map_err(|e| e.description)?;
                outcome.repeated.push(id);
            }
        }
        for &id in deleted {
            let row = row_of(self, id)?;
            self.delete_row(kind, row, id);
            outcome.deleted.push(id);
        }
        outcome.updated.sort_unstable();
        outcome.repeated.sort_unstable();
        outcome.deleted.sort_unstable();
        Ok(outcome)
    }

    /// The changes a mutation made, for outgoing events.
    pub fn mutation_changes(kind: Kind, outcome: &MutateOutcome) -> Vec<(Kind, Change, u64)> {
        let tagged = |ids: &[u64], change| {
            ids.iter()
                .map(move |&id| (kind, change, id))
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

    /// A deal's product rows as `crm.deal.productrows.get` shows them.
    pub fn product_rows(&self, deal: u64) -> Vec<Value> {
        self.products
            .of(Entity::Deal.into(), deal)
            .iter()
            .map(|row| row.render_classic())
            .collect()
    }

    /// `crm.deal.productrows.set`: the given rows replace all rows of the deal.
    pub fn set_product_rows(&mut self, deal: u64, rows: &[&Value]) -> Result<(), ApiError> {
        self.products
            .set(Entity::Deal.into(), deal, rows, false)
            .map(drop)
    }

    /// The file `file_id` that the record's file field holds, for the file's URL.
    pub fn file(
        &self,
        kind: Kind,
        owner: u64,
        field_name: &str,
        file_id: i64,
    ) -> Option<crate::table::StoredFile> {
        let table = self.table_of(kind)?;
        let row = table.row_of(owner)?;
        table.file_in(row, field_name, file_id)
    }
}

/// The answer to an `entityTypeId` the portal has no type for.
pub(crate) fn smart_not_found(_kind: Kind) -> ApiError {
    ApiError::new(400, "NOT_FOUND", "Smart process not found")
}

/// `deal`, `contact`... or `smart process 1038` in messages.
fn kind_label(kind: Kind) -> String {
    match kind {
        Kind::Classic(entity) => entity.to_string(),
        Kind::Smart(id) => format!("smart process {id}"),
        Kind::Users => "user".to_string(),
    }
}

/// The type and multiplicity of the i-th generated user field: types cycle, the first
/// round is single-valued, every later round multiple (booleans cannot be multiple on a
/// real portal).
fn cycled_user_field(i: usize) -> (UserFieldType, bool) {
    let field_type = UserFieldType::ALL[i % UserFieldType::ALL.len()];
    let multiple = i >= UserFieldType::ALL.len() && field_type != UserFieldType::Boolean;
    (field_type, multiple)
}

/// Whether a column already holds a parsed value (an item update that changes nothing
/// is not saved).
fn same_value(cell: Cell<'_>, value: &Stored) -> bool {
    match (cell, value) {
        (Cell::List(items), Stored::List(new)) => items == &new[..],
        (Cell::Null, Stored::List(new)) => new.is_empty(),
        (Cell::Json(current), Stored::Json(new)) => current == new.as_ref(),
        (Cell::Null, Stored::Json(new)) => new.as_array().is_some_and(|a| a.is_empty()),
        (cell, value) => cell == value.cell(),
    }
}

fn cell_text(cell: Cell<'_>) -> String {
    match cell {
        Cell::Int(v) => v.to_string(),
        Cell::Str(s) => s.to_string(),
        _ => String::new(),
    }
}

/// Parses every field of the input the mode writes; unknown fields are ignored (and,
/// in the old API, read-only and immutable ones).
fn parse_fields(
    table: &mut Table,
    row: Option<usize>,
    input: &Map<String, Value>,
    clock: &PortalClock,
    mode: WriteMode,
) -> Result<Vec<(usize, Stored)>, ApiError> {
    let mut changes = Vec::new();
    for (name, value) in input {
        let Some(column) = table.writable_column(name) else {
            continue;
        };
        let field = &table.fields[column];
        if !mode.is_item() && (field.read_only || (row.is_some() && field.immutable)) {
            continue;
        }
        let column_name = field.name.clone();
        let stored = table
            .parse_input(column, row, value, clock)
            .map_err(|problem| mode.value_error(&column_name, problem))?;
        changes.retain(|(c, _)| *c != column);
        changes.push((column, stored));
    }
    Ok(changes)
}

/// The multiple link fields and the deprecated single links they drive.
const LINK_LISTS: [(&str, &str); 2] =
    [("CONTACT_IDS", "CONTACT_ID"), ("COMPANY_IDS", "COMPANY_ID")];

/// A link list given (`CONTACT_IDS`) also sets its deprecated single link
/// (`CONTACT_ID`) to the list's first item, as the portal does; a single link given
/// alone makes the list that one link (so `crm.item.*`, which shows the list, agrees).
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
        } else if let Some(value) = changes
            .iter()
            .find(|(column, _)| *column == single)
            .map(|(_, v)| v.clone())
        {
            let items = match value {
                Stored::Null => Vec::new(),
                other => vec![other],
            };
            changes.push((list, Stored::List(items.into_boxed_slice())));
        }
    }
    changes
}

/// The stage (deal, smart process) or lead status of a record.
fn stage_of(table: &Table, row: usize) -> Option<String> {
    let column = table.roles.stage?;
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
        if table.entity() == Some(Entity::Deal)
            && let Some(column) = table.column("CLOSED")
        {
            table.set(row, column, Stored::Flag(semantic != "P"));
        }
    }
    if let Some((now, user)) = moved {
        for (column, value) in [
            (table.roles.moved_time, Stored::Time(now)),
            (table.roles.moved_by, Stored::Int(user)),
        ] {
            if let Some(column) = column {
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

/// A random change of a record. `stages` are the stages of the pipeline the record is
/// in (smart processes pick one; deals of another pipeline get its prefix), `amounts`
/// whether a smart process has an amount.
fn random_update(
    kind: Kind,
    id: u64,
    stages: &[String],
    amounts: bool,
    rng: &mut SimRng,
) -> Map<String, Value> {
    let n: u32 = rng.random_range(0..1_000_000);
    let mut input = Map::new();
    match kind {
        Kind::Classic(Entity::Deal) => {
            input.insert("TITLE".into(), json!(format!("Deal #{id} (revision {n})")));
            input.insert("OPPORTUNITY".into(), json!(f64::from(n) / 10.0));
            let codes = ["NEW", "PREPARATION", "EXECUTING", "WON", "LOSE"];
            let code = codes[n as usize % codes.len()];
            // A deal in another pipeline moves to the same stage of its own pipeline.
            let prefix = stages
                .first()
                .and_then(|s| s.split_once(':'))
                .map_or(String::new(), |(p, _)| format!("{p}:"));
            input.insert("STAGE_ID".into(), json!(format!("{prefix}{code}")));
        }
        Kind::Classic(Entity::Lead) => {
            input.insert("TITLE".into(), json!(format!("Lead #{id} (revision {n})")));
            input.insert("OPPORTUNITY".into(), json!(f64::from(n) / 10.0));
        }
        Kind::Classic(Entity::Contact) => {
            input.insert("POST".into(), json!(format!("Position {n}")));
            input.insert(
                "PHONE".into(),
                json!([{"VALUE": format!("+1555{n:07}"), "VALUE_TYPE": "MOBILE"}]),
            );
        }
        Kind::Classic(Entity::Company) => {
            input.insert(
                "TITLE".into(),
                json!(format!("Company {id} (revision {n})")),
            );
            input.insert("REVENUE".into(), json!(n));
        }
        Kind::Smart(_) | Kind::Users => {
            input.insert("TITLE".into(), json!(format!("Item #{id} (revision {n})")));
            if amounts {
                input.insert("OPPORTUNITY".into(), json!(f64::from(n) / 10.0));
            }
            input.insert(
                "SOURCE_DESCRIPTION".into(),
                json!(format!("Changed by the simulator, revision {n}")),
            );
            if !stages.is_empty() {
                input.insert("STAGE_ID".into(), json!(stages[n as usize % stages.len()]));
            }
            return input;
        }
    }
    input.insert(
        "COMMENTS".into(),
        json!(format!("Changed by the simulator, revision {n}")),
    );
    input
}
